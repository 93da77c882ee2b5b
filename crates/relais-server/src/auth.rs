//! Join tokens: a server with a token key admits a client only if its `HELLO`
//! carries a token, signed by the game's backend, that names the player and
//! the room (PROTOCOL.md, "Join tokens", is the reference for backends).
//!
//! A token is a JWT in compact form (`header.payload.signature`, each part
//! base64url without padding). The server holds one key and accepts exactly
//! the algorithm that key is for: an HMAC secret → `HS256`, an Ed25519 public
//! key → `EdDSA`, an RSA public key → `RS256`. `alg: none`, any other
//! algorithm, and an algorithm of another key family (the classic "HS256
//! signed with the RSA public key" confusion) are refused from the header,
//! before any signature is computed.
//!
//! Claims ([`Claims`]): `sub` (the player's name), exactly one of `room` and
//! `room_prefix`, `exp` (required), `nbf` (optional), `read_only` (optional).
//! Other claims (`iat`, `iss`, `aud`, `jti`, ...) are ignored. No claim is
//! read before the signature has been verified.
//!
//! [`Verifier::verify`] takes the time as an argument (seconds since the
//! epoch), so every rule is tested without a clock; [`Signer`] mints tokens
//! (`relais token`, the tests).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use relais_protocol::{normalize_name, normalize_room, Hello, RefuseReason, DEFAULT_ROOM};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Clock skew tolerated on `exp` and `nbf`, in seconds: a token is accepted
/// until `exp + LEEWAY_SECS` (inclusive) and from `nbf - LEEWAY_SECS`.
pub const LEEWAY_SECS: u64 = 30;

/// Shortest HMAC secret accepted, in bytes (the size of an HS256 digest; a
/// shorter secret is guessable offline from any one token).
pub const MIN_SECRET_LEN: usize = 32;

/// Longest claim value quoted in a refusal text, in bytes.
const QUOTE_MAX: usize = 64;

/// The kind of key a server verifies with, which fixes the one algorithm it
/// accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// A shared secret: `HS256` (HMAC-SHA-256).
    Hmac,
    /// An Ed25519 key: `EdDSA`.
    Ed25519,
    /// An RSA key: `RS256` (RSASSA-PKCS1-v1_5 with SHA-256).
    Rsa,
}

impl KeyKind {
    /// The JWT `alg` this kind of key signs and verifies.
    pub fn algorithm_name(self) -> &'static str {
        match self {
            Self::Hmac => "HS256",
            Self::Ed25519 => "EdDSA",
            Self::Rsa => "RS256",
        }
    }

    fn algorithm(self) -> Algorithm {
        match self {
            Self::Hmac => Algorithm::HS256,
            Self::Ed25519 => Algorithm::EdDSA,
            Self::Rsa => Algorithm::RS256,
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.algorithm_name())
    }
}

/// Why a key could not be loaded (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HMAC secret is shorter than [`MIN_SECRET_LEN`].
    #[error(
        "the token secret is {len} bytes; at least {MIN_SECRET_LEN} are required \
         (e.g. `openssl rand -hex 32 > secret`)"
    )]
    SecretTooShort {
        /// Its length (after the trailing newline was trimmed).
        len: usize,
    },
    /// A private key was given where the public key is needed.
    #[error(
        "this is a private key: the server verifies with the public key \
         (`openssl pkey -in KEY -pubout`)"
    )]
    PrivateKey,
    /// A public key was given where the private key is needed.
    #[error("this is a public key: signing needs the private key")]
    PublicKey,
    /// Not a PEM key of a supported kind.
    #[error("not a PEM-encoded Ed25519 or RSA key (EC and other kinds are not supported)")]
    Unsupported,
    /// The key parsed but cannot sign (e.g. a malformed RSA key).
    #[error("the key cannot sign: {0}")]
    Unusable(String),
}

/// Why a token does not admit a client. [`refuse_reason`](Self::refuse_reason)
/// gives the `REFUSED` code; the `Display` text is the `REFUSED` text, which
/// may quote a claim (cut at 64 bytes) but never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The server requires a token and the `HELLO` carried none.
    #[error("this server requires a join token")]
    Missing,
    /// Not a well-formed JWT (parts, base64url, JSON header).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header names another algorithm than the server's key is for
    /// (`none` included).
    #[error(
        "token algorithm {} is not accepted: this server verifies {expected} only",
        Quoted(got)
    )]
    WrongAlgorithm {
        /// The server's key kind.
        expected: KeyKind,
        /// The header's `alg`.
        got: String,
    },
    /// The signature does not verify with the server's key.
    #[error("token signature does not verify")]
    BadSignature,
    /// The signature verifies but the claims break the rules (a claim
    /// missing or of the wrong type, both or neither of `room` and
    /// `room_prefix`).
    #[error("token claims: {0}")]
    BadClaims(&'static str),
    /// `nbf` is more than [`LEEWAY_SECS`] in the future.
    #[error("token not valid before {nbf} (server time {now})")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: u64,
        /// The server's time.
        now: u64,
    },
    /// `exp` is more than [`LEEWAY_SECS`] in the past.
    #[error("token expired at {exp} (server time {now})")]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The server's time.
        now: u64,
    },
    /// The token is for another player name.
    #[error("token is for name {}", Quoted(sub))]
    NameNotAllowed {
        /// The token's `sub`.
        sub: String,
    },
    /// The token is for another room.
    #[error("token is for {scope}")]
    RoomNotAllowed {
        /// The rooms the token allows.
        scope: RoomScope,
    },
}

impl TokenError {
    /// The refusal code the server answers with.
    pub fn refuse_reason(&self) -> RefuseReason {
        match self {
            Self::Missing => RefuseReason::TokenRequired,
            Self::Malformed(_)
            | Self::WrongAlgorithm { .. }
            | Self::BadSignature
            | Self::BadClaims(_)
            | Self::NotYetValid { .. } => RefuseReason::TokenInvalid,
            Self::Expired { .. } => RefuseReason::TokenExpired,
            Self::NameNotAllowed { .. } | Self::RoomNotAllowed { .. } => RefuseReason::NotAllowed,
        }
    }
}

/// The rooms a token lets its holder join: the `room` or `room_prefix` claim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum RoomScope {
    /// `room`: exactly this room.
    #[serde(rename = "room")]
    Room(String),
    /// `room_prefix`: every room whose name starts with this (byte-wise);
    /// the empty prefix allows every room.
    #[serde(rename = "room_prefix")]
    Prefix(String),
}

impl fmt::Display for RoomScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Room(room) => write!(f, "room {}", Quoted(room)),
            Self::Prefix(prefix) if prefix.is_empty() => f.write_str("any room"),
            Self::Prefix(prefix) => write!(f, "rooms starting with {}", Quoted(prefix)),
        }
    }
}

/// Whether a token whose `sub` is `sub` lets a client register as `name`:
/// equal once both are in the form the server registers (Unicode NFC, see
/// `relais_protocol::normalize_name`). A name the rules refuse is compared
/// as it is (the join is refused for it anyway).
pub fn token_allows_name(sub: &str, name: &str) -> bool {
    nfc(sub, normalize_name) == nfc(name, normalize_name)
}

/// Whether a token with `scope` lets a client join `room` (the room actually
/// joined: never empty), comparing NFC forms like [`token_allows_name`].
pub fn token_allows_room(scope: &RoomScope, room: &str) -> bool {
    let room = nfc(room, normalize_room);
    match scope {
        RoomScope::Room(allowed) => nfc(allowed, normalize_room) == room,
        RoomScope::Prefix(prefix) => room.starts_with(&*nfc(prefix, normalize_room)),
    }
}

/// `s` normalised by `normalize`, or `s` itself if the rules refuse it.
fn nfc<'a>(
    s: &'a str,
    normalize: fn(&str) -> Result<String, relais_protocol::NameError>,
) -> std::borrow::Cow<'a, str> {
    normalize(s).map_or(std::borrow::Cow::Borrowed(s), std::borrow::Cow::Owned)
}

/// The claims of a join token (what a backend signs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    /// The player name the token is for.
    pub sub: String,
    /// The room, or the room prefix, it is for.
    #[serde(flatten)]
    pub scope: RoomScope,
    /// Expiry, in seconds since 1970-01-01 UTC.
    pub exp: u64,
    /// Not before, in seconds since 1970-01-01 UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The holder may watch but not send.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// What an accepted token grants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grant {
    /// The member may receive but not send: a `DATA` from it ends its
    /// connection with `GOODBYE` reason "read only".
    pub read_only: bool,
}

/// Checks join tokens with the server's key.
pub struct Verifier {
    kind: KeyKind,
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_key(f, "Verifier", self.kind)
    }
}

/// `Name { algorithm: "HS256", .. }`: never the key, which may be a secret.
fn debug_key(f: &mut fmt::Formatter<'_>, name: &str, kind: KeyKind) -> fmt::Result {
    f.debug_struct(name)
        .field("algorithm", &kind.algorithm_name())
        .finish_non_exhaustive()
}

impl Verifier {
    /// A verifier of `HS256` tokens with a shared secret (at least
    /// [`MIN_SECRET_LEN`] bytes, used as they are).
    pub fn hmac(secret: &[u8]) -> Result<Self, KeyError> {
        check_secret(secret)?;
        Ok(Self::new(KeyKind::Hmac, DecodingKey::from_secret(secret)))
    }

    /// A verifier with a PEM public key: Ed25519 (`PUBLIC KEY`, SPKI) for
    /// `EdDSA`, RSA (`PUBLIC KEY` or `RSA PUBLIC KEY`) for `RS256`.
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Self, KeyError> {
        if pem_label(pem).is_some_and(|label| label.contains("PRIVATE KEY")) {
            return Err(KeyError::PrivateKey);
        }
        if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            return Ok(Self::new(KeyKind::Ed25519, key));
        }
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::new(KeyKind::Rsa, key));
        }
        Err(KeyError::Unsupported)
    }

    /// [`hmac`](Self::hmac) with the bytes of a file, one trailing newline
    /// (`\n` or `\r\n`) trimmed.
    pub fn from_secret_file(path: &Path) -> Result<Self, KeyError> {
        Self::hmac(trim_newline(&read(path)?))
    }

    /// [`from_public_key_pem`](Self::from_public_key_pem) with a file.
    pub fn from_public_key_file(path: &Path) -> Result<Self, KeyError> {
        Self::from_public_key_pem(&read(path)?)
    }

    fn new(kind: KeyKind, key: DecodingKey) -> Self {
        let mut validation = Validation::new(kind.algorithm());
        // The time claims are checked by `verify` against the time it is
        // given; `aud` and `iss` are not relais's business.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        Self {
            kind,
            key,
            validation,
        }
    }

    /// The kind of key, hence the one algorithm accepted.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Checks `token` for a client registering as `name` in `room` (empty:
    /// the default room, [`DEFAULT_ROOM`]) at `now` (seconds since the
    /// epoch). In order: the form, the algorithm, the signature, the claims,
    /// the time, the name, the room.
    pub fn verify(
        &self,
        token: &str,
        name: &str,
        room: &str,
        now: u64,
    ) -> Result<Grant, TokenError> {
        let claims = self.verified_claims(token)?;
        if let Some(nbf) = claims.nbf {
            if nbf > now.saturating_add(LEEWAY_SECS) {
                return Err(TokenError::NotYetValid { nbf, now });
            }
        }
        if claims.exp.saturating_add(LEEWAY_SECS) < now {
            return Err(TokenError::Expired {
                exp: claims.exp,
                now,
            });
        }
        if !token_allows_name(&claims.sub, name) {
            return Err(TokenError::NameNotAllowed { sub: claims.sub });
        }
        let room = if room.is_empty() { DEFAULT_ROOM } else { room };
        if !token_allows_room(&claims.scope, room) {
            return Err(TokenError::RoomNotAllowed {
                scope: claims.scope,
            });
        }
        Ok(Grant {
            read_only: claims.read_only,
        })
    }

    /// The claims of a token whose form, algorithm and signature are right.
    fn verified_claims(&self, token: &str) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed(
                "not a JWT (header.payload.signature)",
            ));
        };
        let alg = header_alg(header)?;
        if alg != self.kind.algorithm_name() {
            return Err(TokenError::WrongAlgorithm {
                expected: self.kind,
                got: alg,
            });
        }
        let data =
            jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::Base64(_) => TokenError::Malformed("a part is not base64url"),
                    ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                        TokenError::Malformed("the header or the claims are not the expected JSON")
                    }
                    // The header was checked above: only a key that cannot
                    // verify this signature gets here (e.g. an RSA key under
                    // 2048 bits).
                    _ => TokenError::BadSignature,
                }
            })?;
        data.claims.validate()
    }
}

/// The claims as they come, checked by [`RawClaims::validate`] (JSON `null`
/// counts as absent).
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Value,
    #[serde(default)]
    room: Value,
    #[serde(default)]
    room_prefix: Value,
    #[serde(default)]
    exp: Value,
    #[serde(default)]
    nbf: Value,
    #[serde(default)]
    read_only: Value,
}

impl RawClaims {
    fn validate(self) -> Result<Claims, TokenError> {
        let bad = TokenError::BadClaims;
        let sub = match self.sub {
            Value::String(sub) if !sub.is_empty() => sub,
            Value::Null => return Err(bad("no `sub` (the player's name)")),
            _ => return Err(bad("`sub` must be a non-empty string")),
        };
        let scope = match (self.room, self.room_prefix) {
            (Value::String(room), Value::Null) if !room.is_empty() => RoomScope::Room(room),
            (Value::Null, Value::String(prefix)) => RoomScope::Prefix(prefix),
            (Value::Null, Value::Null) => {
                return Err(bad("no `room` or `room_prefix`: a token names its room"))
            }
            (Value::Null, _) => return Err(bad("`room_prefix` must be a string")),
            (_, Value::Null) => return Err(bad("`room` must be a non-empty string")),
            _ => return Err(bad("both `room` and `room_prefix`: give one")),
        };
        let exp = numeric_date(self.exp, "`exp` must be a number of seconds since 1970")?
            .ok_or(bad("no `exp` (expiry, in seconds since 1970)"))?;
        let nbf = numeric_date(self.nbf, "`nbf` must be a number of seconds since 1970")?;
        let read_only = match self.read_only {
            Value::Null => false,
            Value::Bool(read_only) => read_only,
            _ => return Err(bad("`read_only` must be true or false")),
        };
        Ok(Claims {
            sub,
            scope,
            exp,
            nbf,
            read_only,
        })
    }
}

/// A JWT NumericDate: a non-negative number of seconds, fractions cut.
fn numeric_date(value: Value, wrong: &'static str) -> Result<Option<u64>, TokenError> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(secs), _) => Ok(Some(secs)),
            // `as` saturates: a date past u64 seconds is "never".
            (None, Some(secs)) if secs >= 0.0 => Ok(Some(secs as u64)),
            _ => Err(TokenError::BadClaims(wrong)),
        },
        _ => Err(TokenError::BadClaims(wrong)),
    }
}

/// The `alg` of a token's header part.
fn header_alg(header: &str) -> Result<String, TokenError> {
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed("the header is not base64url"))?;
    let Ok(Value::Object(header)) = serde_json::from_slice::<Value>(&json) else {
        return Err(TokenError::Malformed("the header is not a JSON object"));
    };
    // RFC 7515: extensions listed as critical must be understood; relais
    // understands none.
    if header.contains_key("crit") {
        return Err(TokenError::Malformed(
            "the header has critical extensions (`crit`)",
        ));
    }
    match header.get("alg") {
        Some(Value::String(alg)) => Ok(alg.clone()),
        _ => Err(TokenError::Malformed("the header has no `alg`")),
    }
}

/// Signs join tokens: what a game backend does, for `relais token` and the
/// tests.
pub struct Signer {
    kind: KeyKind,
    key: EncodingKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_key(f, "Signer", self.kind)
    }
}

impl Signer {
    /// A signer of `HS256` tokens with a shared secret (at least
    /// [`MIN_SECRET_LEN`] bytes).
    pub fn hmac(secret: &[u8]) -> Result<Self, KeyError> {
        check_secret(secret)?;
        Ok(Self {
            kind: KeyKind::Hmac,
            key: EncodingKey::from_secret(secret),
        })
    }

    /// A signer with a PEM private key (`PRIVATE KEY`, PKCS#8, or `RSA
    /// PRIVATE KEY`): Ed25519 signs `EdDSA`, RSA signs `RS256`.
    pub fn from_private_key_pem(pem: &[u8]) -> Result<Self, KeyError> {
        match pem_label(pem) {
            Some(label) if label.contains("PRIVATE KEY") => {}
            Some(label) if label.contains("PUBLIC KEY") => return Err(KeyError::PublicKey),
            _ => return Err(KeyError::Unsupported),
        }
        let signer = if let Ok(key) = EncodingKey::from_ed_pem(pem) {
            Self {
                kind: KeyKind::Ed25519,
                key,
            }
        } else if let Ok(key) = EncodingKey::from_rsa_pem(pem) {
            Self {
                kind: KeyKind::Rsa,
                key,
            }
        } else {
            return Err(KeyError::Unsupported);
        };
        // The key is only parsed when it signs: find out now.
        signer.sign(&Claims {
            sub: "probe".into(),
            scope: RoomScope::Prefix(String::new()),
            exp: 0,
            nbf: None,
            read_only: false,
        })?;
        Ok(signer)
    }

    /// [`hmac`](Self::hmac) with the bytes of a file, one trailing newline
    /// trimmed.
    pub fn from_secret_file(path: &Path) -> Result<Self, KeyError> {
        Self::hmac(trim_newline(&read(path)?))
    }

    /// [`from_private_key_pem`](Self::from_private_key_pem) with a file.
    pub fn from_private_key_file(path: &Path) -> Result<Self, KeyError> {
        Self::from_private_key_pem(&read(path)?)
    }

    /// The kind of key, hence the algorithm it signs with.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The token for `claims`, in compact form.
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        jsonwebtoken::encode(&Header::new(self.kind.algorithm()), claims, &self.key)
            .map_err(|e| KeyError::Unusable(e.to_string()))
    }
}

/// What a `HELLO`'s token grants, checked against the room it joins (the
/// default room for an empty one) at `now`. Without a verifier every client
/// has full access and a token it sends is ignored.
pub fn check_hello(
    verifier: Option<&Verifier>,
    hello: &Hello,
    now: u64,
) -> Result<Grant, TokenError> {
    let Some(verifier) = verifier else {
        return Ok(Grant::default());
    };
    let token = hello.token.as_deref().ok_or(TokenError::Missing)?;
    verifier.verify(token, &hello.name, &hello.room, now)
}

/// The system time in seconds since the epoch (0 before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn check_secret(secret: &[u8]) -> Result<(), KeyError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(KeyError::SecretTooShort { len: secret.len() });
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })
}

/// `bytes` without one trailing `\n` or `\r\n` (editors add one).
fn trim_newline(bytes: &[u8]) -> &[u8] {
    match bytes.strip_suffix(b"\n") {
        Some(rest) => rest.strip_suffix(b"\r").unwrap_or(rest),
        None => bytes,
    }
}

/// The label of a PEM block (`PUBLIC KEY` in `-----BEGIN PUBLIC KEY-----`).
fn pem_label(pem: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let len = text[start..].find("-----")?;
    Some(&text[start..start + len])
}

/// A claim quoted in a refusal text: escaped, at most [`QUOTE_MAX`] bytes.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut end = self.0.len().min(QUOTE_MAX);
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        let cut = if end < self.0.len() { "…" } else { "" };
        write!(f, "{:?}{cut}", &self.0[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;
    const ED_PUB: &[u8] = include_bytes!("../tests/fixtures/test-ed25519.pub");
    const ED_KEY: &[u8] = include_bytes!("../tests/fixtures/test-ed25519.key");
    const OTHER_ED_KEY: &[u8] = include_bytes!("../tests/fixtures/other-ed25519.key");
    const RSA_PUB: &[u8] = include_bytes!("../tests/fixtures/test-rsa.pub");
    const RSA_KEY: &[u8] = include_bytes!("../tests/fixtures/test-rsa.key");
    const P256_PUB: &[u8] = include_bytes!("../tests/fixtures/test-p256.pub");
    const P256_KEY: &[u8] = include_bytes!("../tests/fixtures/test-p256.key");

    fn claims(sub: &str, scope: RoomScope) -> Claims {
        Claims {
            sub: sub.into(),
            scope,
            exp: NOW + 60,
            nbf: None,
            read_only: false,
        }
    }

    fn arena(sub: &str) -> Claims {
        claims(sub, RoomScope::Room("arena".into()))
    }

    fn hmac_token(claims: &Claims) -> String {
        Signer::hmac(SECRET).unwrap().sign(claims).unwrap()
    }

    /// A token with any header and payload JSON, signed with `SECRET`.
    fn raw_hmac_token(header: &str, payload: &str) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let key = EncodingKey::from_secret(SECRET);
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{message}.{signature}")
    }

    fn verify_hmac(token: &str, name: &str, room: &str, now: u64) -> Result<Grant, TokenError> {
        Verifier::hmac(SECRET)
            .unwrap()
            .verify(token, name, room, now)
    }

    #[test]
    fn a_good_token_admits_its_player_to_its_room() {
        let token = hmac_token(&arena("alice"));
        assert_eq!(
            verify_hmac(&token, "alice", "arena", NOW),
            Ok(Grant { read_only: false })
        );
        let read_only = hmac_token(&Claims {
            read_only: true,
            ..arena("alice")
        });
        assert_eq!(
            verify_hmac(&read_only, "alice", "arena", NOW),
            Ok(Grant { read_only: true })
        );
    }

    #[test]
    fn claims_are_serialised_as_documented() {
        let json = |c: &Claims| {
            let payload = hmac_token(c).split('.').nth(1).unwrap().to_string();
            String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
        };
        assert_eq!(
            json(&arena("alice")),
            format!(r#"{{"sub":"alice","room":"arena","exp":{}}}"#, NOW + 60)
        );
        let all = Claims {
            nbf: Some(NOW),
            read_only: true,
            ..claims("bob", RoomScope::Prefix("arena-".into()))
        };
        assert_eq!(
            json(&all),
            format!(
                r#"{{"sub":"bob","room_prefix":"arena-","exp":{},"nbf":{NOW},"read_only":true}}"#,
                NOW + 60
            )
        );
        let header = hmac_token(&all).split('.').next().unwrap().to_string();
        let header = String::from_utf8(URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        assert_eq!(header, r#"{"typ":"JWT","alg":"HS256"}"#);
    }

    #[test]
    fn expiry_and_not_before_hold_to_the_second_with_the_leeway() {
        let exp = NOW + 60;
        let token = hmac_token(&arena("alice"));
        assert!(verify_hmac(&token, "alice", "arena", exp + LEEWAY_SECS).is_ok());
        let late = verify_hmac(&token, "alice", "arena", exp + LEEWAY_SECS + 1);
        assert_eq!(
            late,
            Err(TokenError::Expired {
                exp,
                now: exp + LEEWAY_SECS + 1
            })
        );
        assert_eq!(
            late.unwrap_err().refuse_reason(),
            RefuseReason::TokenExpired
        );

        let nbf = NOW + 10;
        let early = hmac_token(&Claims {
            nbf: Some(nbf),
            ..arena("alice")
        });
        assert!(verify_hmac(&early, "alice", "arena", nbf - LEEWAY_SECS).is_ok());
        let too_early = verify_hmac(&early, "alice", "arena", nbf - LEEWAY_SECS - 1);
        assert_eq!(
            too_early,
            Err(TokenError::NotYetValid {
                nbf,
                now: nbf - LEEWAY_SECS - 1
            })
        );
        assert_eq!(
            too_early.unwrap_err().refuse_reason(),
            RefuseReason::TokenInvalid
        );
        // Fractional dates (RFC 7519 allows them) are cut to the second.
        let fractional = raw_hmac_token(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"sub":"a","room":"r","exp":{}.9}}"#, NOW),
        );
        assert!(verify_hmac(&fractional, "a", "r", NOW + LEEWAY_SECS).is_ok());
        assert!(verify_hmac(&fractional, "a", "r", NOW + LEEWAY_SECS + 1).is_err());
    }

    #[test]
    fn names_and_rooms_are_compared_in_nfc() {
        // A backend that writes "élodie" composed admits the client that
        // sends it decomposed, as the server registers the composed form.
        assert!(token_allows_name("\u{e9}lodie", "e\u{301}lodie"));
        assert!(token_allows_name("e\u{301}lodie", "\u{e9}lodie"));
        assert!(!token_allows_name("elodie", "\u{e9}lodie"));
        let room = RoomScope::Room("caf\u{e9}".into());
        assert!(token_allows_room(&room, "cafe\u{301}"));
        let prefix = RoomScope::Prefix("caf\u{e9}-".into());
        assert!(token_allows_room(&prefix, "cafe\u{301}-7"));
        assert!(token_allows_room(&RoomScope::Prefix(String::new()), "any"));
    }

    #[test]
    fn names_and_rooms_must_match_the_claims() {
        let token = hmac_token(&arena("alice"));
        let wrong_name = verify_hmac(&token, "bob", "arena", NOW).unwrap_err();
        assert_eq!(wrong_name.to_string(), "token is for name \"alice\"");
        assert_eq!(wrong_name.refuse_reason(), RefuseReason::NotAllowed);
        let wrong_room = verify_hmac(&token, "alice", "arena2", NOW).unwrap_err();
        assert_eq!(wrong_room.to_string(), "token is for room \"arena\"");
        assert_eq!(wrong_room.refuse_reason(), RefuseReason::NotAllowed);
        // Exact, case and all.
        assert!(verify_hmac(&token, "Alice", "arena", NOW).is_err());
        assert!(verify_hmac(&token, "alice", "Arena", NOW).is_err());

        let prefix = hmac_token(&claims("alice", RoomScope::Prefix("arena-".into())));
        assert!(verify_hmac(&prefix, "alice", "arena-", NOW).is_ok());
        assert!(verify_hmac(&prefix, "alice", "arena-7", NOW).is_ok());
        let outside = verify_hmac(&prefix, "alice", "arena", NOW).unwrap_err();
        assert_eq!(
            outside.to_string(),
            "token is for rooms starting with \"arena-\""
        );

        // The empty room is the default room.
        let lobby = hmac_token(&claims("alice", RoomScope::Room(DEFAULT_ROOM.into())));
        assert!(verify_hmac(&lobby, "alice", "", NOW).is_ok());
        assert!(verify_hmac(&token, "alice", "", NOW).is_err());
        // The empty prefix is every room.
        let any = hmac_token(&claims("alice", RoomScope::Prefix(String::new())));
        assert!(verify_hmac(&any, "alice", "", NOW).is_ok());
        assert!(verify_hmac(&any, "alice", "anything", NOW).is_ok());
    }

    #[test]
    fn long_claims_are_quoted_cut() {
        let sub = "é".repeat(40); // 80 bytes
        let text = TokenError::NameNotAllowed { sub: sub.clone() }.to_string();
        assert_eq!(text, format!("token is for name \"{}\"…", "é".repeat(32)));
    }

    #[test]
    fn claims_that_break_the_rules_are_invalid() {
        let exp = NOW + 60;
        for (payload, why) in [
            (format!(r#"{{"room":"r","exp":{exp}}}"#), "no `sub`"),
            (
                format!(r#"{{"sub":"","room":"r","exp":{exp}}}"#),
                "`sub` must",
            ),
            (
                format!(r#"{{"sub":7,"room":"r","exp":{exp}}}"#),
                "`sub` must",
            ),
            (format!(r#"{{"sub":"a","exp":{exp}}}"#), "no `room`"),
            (
                format!(r#"{{"sub":"a","room":"r","room_prefix":"r","exp":{exp}}}"#),
                "both",
            ),
            (
                format!(r#"{{"sub":"a","room":"","exp":{exp}}}"#),
                "`room` must",
            ),
            (
                format!(r#"{{"sub":"a","room_prefix":3,"exp":{exp}}}"#),
                "`room_prefix` must",
            ),
            (r#"{"sub":"a","room":"r"}"#.to_string(), "no `exp`"),
            (
                r#"{"sub":"a","room":"r","exp":"soon"}"#.to_string(),
                "`exp` must",
            ),
            (
                r#"{"sub":"a","room":"r","exp":-1}"#.to_string(),
                "`exp` must",
            ),
            (
                format!(r#"{{"sub":"a","room":"r","exp":{exp},"nbf":true}}"#),
                "`nbf` must",
            ),
            (
                format!(r#"{{"sub":"a","room":"r","exp":{exp},"read_only":"yes"}}"#),
                "`read_only` must",
            ),
        ] {
            let token = raw_hmac_token(r#"{"alg":"HS256"}"#, &payload);
            let err = verify_hmac(&token, "a", "r", NOW).unwrap_err();
            assert!(
                matches!(err, TokenError::BadClaims(text) if text.contains(why)),
                "{payload}: {err}"
            );
            assert_eq!(err.refuse_reason(), RefuseReason::TokenInvalid);
        }
        // null is absent; unknown claims are ignored.
        let token = raw_hmac_token(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &format!(
                r#"{{"sub":"a","room":null,"room_prefix":"r","exp":{exp},"nbf":null,"iss":"x","aud":["y"],"read_only":null}}"#
            ),
        );
        assert_eq!(
            verify_hmac(&token, "a", "r", NOW),
            Ok(Grant { read_only: false })
        );
    }

    #[test]
    fn malformed_tokens_are_invalid_and_never_quoted() {
        let good = hmac_token(&arena("alice"));
        let cases = [
            String::new(),
            "abc".into(),
            "a.b".into(),
            format!("{good}.x"),
            format!("!!!.{}", good.split_once('.').unwrap().1),
            raw_hmac_token("[1]", "{}"),
            raw_hmac_token(r#"{"typ":"JWT"}"#, "{}"),
            raw_hmac_token(r#"{"alg":"HS256","crit":["b64"],"b64":false}"#, "{}"),
            raw_hmac_token(r#"{"alg":"HS256"}"#, "[]"),
            raw_hmac_token(r#"{"alg":"HS256"}"#, "not json"),
        ];
        for token in &cases {
            let err = verify_hmac(token, "alice", "arena", NOW).unwrap_err();
            assert!(
                matches!(err, TokenError::Malformed(_)),
                "{token:?}: {err:?}"
            );
            assert_eq!(err.refuse_reason(), RefuseReason::TokenInvalid);
            assert!(token.len() < 8 || !err.to_string().contains(token.as_str()));
        }
    }

    #[test]
    fn a_wrong_signature_is_invalid() {
        let token = hmac_token(&arena("alice"));
        let other = Verifier::hmac(b"another secret, also 32 bytes ok").unwrap();
        assert_eq!(
            other.verify(&token, "alice", "arena", NOW),
            Err(TokenError::BadSignature)
        );
        // Claims edited after signing (another room) no longer verify.
        let (header, rest) = token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let edited = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"sub":"alice","room":"vip","exp":{}}}"#,
            NOW + 60
        ));
        let forged = format!("{header}.{edited}.{signature}");
        let err = verify_hmac(&forged, "alice", "vip", NOW).unwrap_err();
        assert_eq!(err, TokenError::BadSignature);
        assert_eq!(err.refuse_reason(), RefuseReason::TokenInvalid);
        assert!(!err.to_string().contains(signature));
        // A signature that is not base64url, or is cut, does not verify either.
        for bad in [format!("{token}!"), token[..token.len() - 1].to_string()] {
            assert_eq!(
                verify_hmac(&bad, "alice", "arena", NOW),
                Err(TokenError::BadSignature)
            );
        }
    }

    #[test]
    fn only_the_keys_algorithm_is_accepted() {
        // alg "none", unsigned: refused whatever the key.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(format!(
                r#"{{"sub":"alice","room":"arena","exp":{}}}"#,
                NOW + 60
            ))
        );
        let ed = Verifier::from_public_key_pem(ED_PUB).unwrap();
        let rsa = Verifier::from_public_key_pem(RSA_PUB).unwrap();
        let hmac = Verifier::hmac(SECRET).unwrap();
        for verifier in [&ed, &rsa, &hmac] {
            let err = verifier.verify(&none, "alice", "arena", NOW).unwrap_err();
            assert_eq!(
                err,
                TokenError::WrongAlgorithm {
                    expected: verifier.kind(),
                    got: "none".into()
                }
            );
            assert_eq!(err.refuse_reason(), RefuseReason::TokenInvalid);
        }
        assert_eq!(
            ed.verify(&none, "alice", "arena", NOW)
                .unwrap_err()
                .to_string(),
            "token algorithm \"none\" is not accepted: this server verifies EdDSA only"
        );

        // HS256 against public-key servers, even signed with the public key
        // bytes as the secret (the algorithm-confusion attack).
        let hs = hmac_token(&arena("alice"));
        let confused = |public: &[u8]| {
            let key = EncodingKey::from_secret(public);
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &arena("alice"), &key).unwrap()
        };
        for (verifier, public) in [(&ed, ED_PUB), (&rsa, RSA_PUB)] {
            for token in [&hs, &confused(public)] {
                assert!(matches!(
                    verifier.verify(token, "alice", "arena", NOW),
                    Err(TokenError::WrongAlgorithm { .. })
                ));
            }
        }
        // And the other way round, and across public-key kinds.
        let ed_token = Signer::from_private_key_pem(ED_KEY)
            .unwrap()
            .sign(&arena("alice"))
            .unwrap();
        let rsa_token = Signer::from_private_key_pem(RSA_KEY)
            .unwrap()
            .sign(&arena("alice"))
            .unwrap();
        for (verifier, token) in [
            (&hmac, &ed_token),
            (&hmac, &rsa_token),
            (&rsa, &ed_token),
            (&ed, &rsa_token),
        ] {
            assert!(matches!(
                verifier.verify(token, "alice", "arena", NOW),
                Err(TokenError::WrongAlgorithm { .. })
            ));
        }
    }

    #[test]
    fn public_keys_verify_their_own_signatures_only() {
        let ed = Verifier::from_public_key_pem(ED_PUB).unwrap();
        assert_eq!(ed.kind(), KeyKind::Ed25519);
        let rsa = Verifier::from_public_key_pem(RSA_PUB).unwrap();
        assert_eq!(rsa.kind(), KeyKind::Rsa);
        let sign = |key: &[u8]| {
            let signer = Signer::from_private_key_pem(key).unwrap();
            signer.sign(&arena("alice")).unwrap()
        };
        assert!(ed.verify(&sign(ED_KEY), "alice", "arena", NOW).is_ok());
        assert!(rsa.verify(&sign(RSA_KEY), "alice", "arena", NOW).is_ok());
        assert_eq!(
            ed.verify(&sign(OTHER_ED_KEY), "alice", "arena", NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn keys_of_the_wrong_kind_are_start_up_errors() {
        assert!(matches!(
            Verifier::from_public_key_pem(ED_KEY),
            Err(KeyError::PrivateKey)
        ));
        assert!(matches!(
            Verifier::from_public_key_pem(RSA_KEY),
            Err(KeyError::PrivateKey)
        ));
        assert!(matches!(
            Verifier::from_public_key_pem(P256_PUB),
            Err(KeyError::Unsupported)
        ));
        assert!(matches!(
            Verifier::from_public_key_pem(b"not a key"),
            Err(KeyError::Unsupported)
        ));
        assert!(matches!(
            Signer::from_private_key_pem(ED_PUB),
            Err(KeyError::PublicKey)
        ));
        assert!(matches!(
            Signer::from_private_key_pem(P256_KEY),
            Err(KeyError::Unsupported)
        ));
        let secret = SECRET;
        assert!(Verifier::hmac(secret).is_ok());
        assert!(matches!(
            Verifier::hmac(&secret[..MIN_SECRET_LEN - 1]),
            Err(KeyError::SecretTooShort { len: 31 })
        ));
        assert!(matches!(
            Signer::hmac(&secret[..MIN_SECRET_LEN - 1]),
            Err(KeyError::SecretTooShort { len: 31 })
        ));
    }

    #[test]
    fn secret_files_lose_one_trailing_newline() {
        assert_eq!(trim_newline(b"secret\n"), b"secret");
        assert_eq!(trim_newline(b"secret\r\n"), b"secret");
        assert_eq!(trim_newline(b"secret\n\n"), b"secret\n");
        assert_eq!(trim_newline(b"secret"), b"secret");
        let path = std::env::temp_dir().join(format!("relais-auth-test-{}", std::process::id()));
        std::fs::write(&path, [SECRET, b"\n"].concat()).unwrap();
        let from_file = Verifier::from_secret_file(&path);
        std::fs::write(&path, [&SECRET[1..], b"\n"].concat()).unwrap();
        let short = Verifier::from_secret_file(&path);
        std::fs::remove_file(&path).unwrap();
        let token = hmac_token(&arena("alice"));
        assert!(from_file
            .unwrap()
            .verify(&token, "alice", "arena", NOW)
            .is_ok());
        assert!(matches!(short, Err(KeyError::SecretTooShort { len: 31 })));
        assert!(matches!(
            Verifier::from_secret_file(Path::new("/nonexistent/relais-secret")),
            Err(KeyError::Read { .. })
        ));
    }

    #[test]
    fn a_server_without_a_key_ignores_tokens_and_one_with_a_key_requires_them() {
        let hello = |token: Option<&str>| Hello {
            version: relais_protocol::VERSION,
            name: "alice".into(),
            room: "arena".into(),
            echo: false,
            token: token.map(str::to_string),
            resume: None,
        };
        assert_eq!(check_hello(None, &hello(None), NOW), Ok(Grant::default()));
        assert_eq!(
            check_hello(None, &hello(Some("garbage")), NOW),
            Ok(Grant::default())
        );
        let verifier = Verifier::hmac(SECRET).unwrap();
        let missing = check_hello(Some(&verifier), &hello(None), NOW).unwrap_err();
        assert_eq!(missing.refuse_reason(), RefuseReason::TokenRequired);
        let token = hmac_token(&arena("alice"));
        assert!(check_hello(Some(&verifier), &hello(Some(&token)), NOW).is_ok());
    }

    #[test]
    fn debug_output_shows_no_key() {
        let text = format!("{:?}", Verifier::hmac(SECRET).unwrap());
        assert_eq!(text, "Verifier { algorithm: \"HS256\", .. }");
        let text = format!("{:?}", Signer::hmac(SECRET).unwrap());
        assert!(!text.contains("0123"), "{text}");
    }
}
