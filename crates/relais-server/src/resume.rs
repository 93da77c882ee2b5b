//! Resume tokens: what a member presents after a lost connection to take its
//! seat back (PROTOCOL.md, section 17).
//!
//! A token is base64url without padding of the seat's member id (`u64`, big
//! endian) followed by the first 16 bytes of HMAC-SHA256 under a key drawn
//! at random when the relay is created, over `"relais-resume-v1"`, the room
//! and the name (each with a `u8` length before it) and the id: 24 bytes,
//! 32 characters. The server keeps no table of tokens: it recomputes the MAC.
//!
//! - It cannot be guessed (a 128-bit MAC) or moved to another name or room
//!   (both are under the MAC).
//! - It dies with its seat: member ids are never reused, so once the seat
//!   has left, its token names nobody.
//! - A restarted server draws a new key and forgets every token it issued.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// What the MAC is computed over first, so that the key can never produce
/// a MAC that means something elsewhere.
const CONTEXT: &[u8] = b"relais-resume-v1";

/// Bytes of the member id in a token.
const ID_LEN: usize = 8;

/// Bytes of the (truncated) MAC in a token.
const MAC_LEN: usize = 16;

/// Characters of every token this server issues: base64url of 24 bytes.
pub const TOKEN_LEN: usize = (ID_LEN + MAC_LEN) * 4 / 3;

/// The key resume tokens are issued and checked with.
pub struct ResumeKey(hmac::Key);

impl fmt::Debug for ResumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeKey(..)")
    }
}

impl ResumeKey {
    /// A key of 32 random bytes from the operating system.
    ///
    /// # Panics
    ///
    /// If the operating system has no random bytes to give (then no token
    /// could be trusted; on Linux `getrandom` does not fail once booted).
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .expect("the operating system's random number generator failed");
        Self(hmac::Key::new(hmac::HMAC_SHA256, &key))
    }

    /// The token of seat `id`, held by `name` in `room` (both as
    /// registered: NFC, the default room by its name).
    pub fn issue(&self, room: &str, name: &str, id: u64) -> String {
        let mut raw = [0u8; ID_LEN + MAC_LEN];
        raw[..ID_LEN].copy_from_slice(&id.to_be_bytes());
        raw[ID_LEN..].copy_from_slice(&self.mac(room, name, id));
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The seat `token` names, if this key issued it for `name` in `room`.
    pub fn verify(&self, token: &str, room: &str, name: &str) -> Option<u64> {
        if token.len() != TOKEN_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        let (id, mac) = raw.split_at_checked(ID_LEN)?;
        let id = u64::from_be_bytes(id.try_into().ok()?);
        constant_time_eq(mac, &self.mac(room, name, id)).then_some(id)
    }

    fn mac(&self, room: &str, name: &str, id: u64) -> [u8; MAC_LEN] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(CONTEXT);
        for field in [room, name] {
            // Names and rooms are at most 64 bytes (MAX_NAME_LEN).
            ctx.update(&[u8::try_from(field.len()).unwrap_or(u8::MAX)]);
            ctx.update(field.as_bytes());
        }
        ctx.update(&id.to_be_bytes());
        let tag = ctx.sign();
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(&tag.as_ref()[..MAC_LEN]);
        mac
    }
}

/// Whether `a` and `b` are equal, in a time that does not depend on where
/// they differ (ring's own comparison is deprecated, and `hmac::verify`
/// wants the whole tag, not the 16 bytes a token carries).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_seat_for_its_name_and_room_only() {
        let key = ResumeKey::random();
        let token = key.issue("arena", "alice", 42);
        assert_eq!(token.len(), TOKEN_LEN);
        assert_eq!(TOKEN_LEN, 32);
        assert!(token.is_ascii() && token.len() <= relais_protocol::MAX_RESUME_TOKEN_LEN);
        assert_eq!(key.verify(&token, "arena", "alice"), Some(42));
        assert_eq!(key.verify(&token, "arena", "bob"), None);
        assert_eq!(key.verify(&token, "lobby", "alice"), None);
        // Length-prefixed fields: moving a byte from room to name fails.
        let t = key.issue("ab", "c", 1);
        assert_eq!(key.verify(&t, "a", "bc"), None);
        // Another server's key.
        assert_eq!(ResumeKey::random().verify(&token, "arena", "alice"), None);
    }

    #[test]
    fn forged_and_malformed_tokens_verify_as_nothing() {
        let key = ResumeKey::random();
        let token = key.issue("r", "al", 7);
        // Another id with the same MAC.
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        raw[7] ^= 1;
        assert_eq!(key.verify(&URL_SAFE_NO_PAD.encode(&raw), "r", "al"), None);
        // A flipped MAC bit.
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        raw[23] ^= 0x80;
        assert_eq!(key.verify(&URL_SAFE_NO_PAD.encode(&raw), "r", "al"), None);
        for bad in [
            "",
            "x",
            "not base64 at all, but 32 chars!",
            &token[..31],
            &format!("{token}A"),
            &format!("{token}="),
            &token.replace(|c: char| c.is_ascii_alphanumeric(), "+"),
        ] {
            assert_eq!(key.verify(bad, "r", "al"), None, "{bad:?}");
        }
    }

    #[test]
    fn debug_output_shows_no_key() {
        assert_eq!(format!("{:?}", ResumeKey::random()), "ResumeKey(..)");
    }
}
