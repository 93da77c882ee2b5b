//! The `token` target's harness: the server's keys, the one token minted
//! with each, and how a fuzz input becomes a token to verify.
//!
//! # Input format
//!
//! - byte 0, `m`: bit 0 picks the mode, bit 1 the key, bits 2–7 the time;
//!   - mode 0: the rest of the input is the token (as UTF-8, invalid
//!     sequences replaced: the server only ever passes ASCII, the verifier
//!     takes any `&str`);
//!   - mode 1: the rest is a list of edits to the token minted with the key:
//!     3 bytes each, a `u16` position (modulo the token's length + 1) and a
//!     byte: at the end the byte is appended, elsewhere `0` deletes the
//!     byte there and anything else overwrites it;
//!   - key 0: `HS256` with [`SECRET`]; key 1: `EdDSA` with the TEST
//!     Ed25519 key of `crates/relais-server/tests/fixtures`;
//!   - time: `now = NOW - 60 + 3 * (m >> 2)`, from before the minted
//!     tokens' `nbf` to after their `exp` (with the leeway).

use std::sync::OnceLock;

use relais_server::auth::{Claims, RoomScope, Signer, Verifier};

/// The time the minted tokens are made for (seconds since the epoch).
pub const NOW: u64 = 1_800_000_000;
/// The HMAC key.
pub const SECRET: &[u8] = b"the relais fuzzing secret, 40 bytes long";
/// The name and room every token is verified for.
pub const NAME: &str = "alice";
/// See [`NAME`].
pub const ROOM: &str = "arena";
/// The minted tokens' `nbf` and `exp`.
pub const NBF: u64 = NOW - 30;
/// See [`NBF`].
pub const EXP: u64 = NOW + 60;

const ED_KEY: &[u8] = include_bytes!("../../crates/relais-server/tests/fixtures/test-ed25519.key");
const ED_PUB: &[u8] = include_bytes!("../../crates/relais-server/tests/fixtures/test-ed25519.pub");

/// The verifiers, and the one token each accepts (for [`NAME`] in [`ROOM`],
/// from `NBF` to `EXP`).
pub struct Harness {
    /// HS256, EdDSA.
    pub verifiers: [Verifier; 2],
    /// The token minted for each verifier.
    pub minted: [String; 2],
}

/// The harness, built once.
pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let claims = Claims {
            sub: NAME.into(),
            scope: RoomScope::Room(ROOM.into()),
            exp: EXP,
            nbf: Some(NBF),
            read_only: false,
        };
        let signers = [
            Signer::hmac(SECRET).unwrap(),
            Signer::from_private_key_pem(ED_KEY).unwrap(),
        ];
        Harness {
            verifiers: [
                Verifier::hmac(SECRET).unwrap(),
                Verifier::from_public_key_pem(ED_PUB).unwrap(),
            ],
            minted: signers.map(|s| s.sign(&claims).unwrap()),
        }
    })
}

/// One verification to make.
#[derive(Debug)]
pub struct Case {
    /// Which verifier (index into [`Harness::verifiers`]).
    pub key: usize,
    /// The token.
    pub token: String,
    /// The server's time.
    pub now: u64,
}

/// The case an input stands for (see the module docs).
pub fn case(data: &[u8]) -> Option<Case> {
    let (&m, rest) = data.split_first()?;
    let key = usize::from(m >> 1 & 1);
    let now = NOW - 60 + 3 * u64::from(m >> 2);
    let token = if m & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let mut token = harness().minted[key].clone().into_bytes();
        for edit in rest.chunks_exact(3) {
            let at = usize::from(u16::from_be_bytes([edit[0], edit[1]])) % (token.len() + 1);
            match edit[2] {
                byte if at == token.len() => token.push(byte),
                0 => {
                    token.remove(at);
                }
                byte => token[at] = byte,
            }
        }
        String::from_utf8_lossy(&token).into_owned()
    };
    Some(Case { key, token, now })
}

/// The input bytes of one edit (for seeds).
pub fn edit(at: u16, byte: u8) -> [u8; 3] {
    let [hi, lo] = at.to_be_bytes();
    [hi, lo, byte]
}
