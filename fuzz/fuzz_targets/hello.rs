//! One `HELLO` body, decoded from arbitrary bytes, and the naming rule on its
//! names and on the whole input read as a name.
//!
//! The input is the body after its type byte (`0x01` is put in front), so
//! every input is a `HELLO` attempt: version, flags, name, room, and a token
//! when the flags say so. Asserted, besides "never panics":
//!
//! - a `HELLO` decodes with a token exactly when `FLAG_TOKEN` is set, of at
//!   most `MAX_TOKEN_LEN` ASCII bytes;
//! - it re-encodes to the same bytes, flags reduced to the defined bits
//!   (`check_client`), and anything after the last field is refused;
//! - for its name and room and for the input as UTF-8 text: an accepted name
//!   is NFC, fits `MAX_NAME_LEN`, normalises to itself, has something
//!   visible, and its `name_key` is its own key (`check_name`).

#![no_main]

use bytes::{BufMut, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use relais_fuzz::{check_client, check_name};
use relais_protocol::frames::kind;
use relais_protocol::{ClientFrame, DecodeError, FLAG_TOKEN, MAX_TOKEN_LEN};

fuzz_target!(|data: &[u8]| {
    let mut body = BytesMut::with_capacity(1 + data.len());
    body.put_u8(kind::HELLO);
    body.put_slice(data);
    let body: Bytes = body.freeze();
    let flags = data.get(2).copied().unwrap_or(0);
    match check_client(&body) {
        Some(ClientFrame::Hello(hello)) => {
            assert_eq!(hello.token.is_some(), flags & FLAG_TOKEN != 0);
            if let Some(token) = &hello.token {
                assert!(token.len() <= MAX_TOKEN_LEN && token.is_ascii());
            }
            check_name(&hello.name, false);
            if !hello.room.is_empty() {
                check_name(&hello.room, true);
            }
        }
        Some(other) => panic!("a HELLO body decoded as {other:?}"),
        None => {
            // A body with its token cut off is truncated in that field,
            // never read as a token-less HELLO.
            if let Err(DecodeError::TokenTooLong(len)) = ClientFrame::decode(body.clone()) {
                assert!(len > MAX_TOKEN_LEN);
                assert_ne!(flags & FLAG_TOKEN, 0);
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        check_name(text, false);
        check_name(text, true);
    }
});
