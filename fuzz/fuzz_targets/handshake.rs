//! The server's side of a connection, as `relais-server` reads it: a decoder
//! limited to `MAX_HELLO_LEN` until a valid `HELLO` is in, then raised to
//! `MAX_FRAME_LEN`; every frame decoded as a client frame; the names of a
//! `HELLO` put through the naming rule (`check_name`). Arbitrary bytes,
//! arbitrarily split (see `src/lib.rs`).

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use relais_fuzz::{check_client, check_name, chunks, drive, parse, Next, Outcome};
use relais_protocol::{ClientFrame, Hello, MAX_FRAME_LEN, MAX_HELLO_LEN, MAX_TOKEN_LEN, VERSION};

/// The server's input buffer starts with this capacity (`tcp.rs`).
const INITIAL_CAPACITY: usize = 512;

/// Whether the server admits this handshake (short of the registry's own
/// checks: name taken, room or server full, and the token's verification).
fn admissible(hello: &Hello) -> bool {
    // Accepted names are within the rules (asserted by check_name)...
    let name = check_name(&hello.name, false);
    let room = if hello.room.is_empty() {
        Some(String::new())
    } else {
        check_name(&hello.room, true)
    };
    if let Some(token) = &hello.token {
        assert!(token.len() <= MAX_TOKEN_LEN && token.is_ascii());
    }
    let (Some(name), Some(room)) = (name, room) else {
        return false;
    };
    // ...and the HELLO the server would register, with the normalised names
    // (never longer than MAX_NAME_LEN), fits the pre-handshake limit.
    let registered = Hello {
        name,
        room,
        ..hello.clone()
    };
    let wire = ClientFrame::Hello(registered).to_bytes();
    assert!(wire.len() - 4 <= MAX_HELLO_LEN);
    hello.version == VERSION
}

fn session(chunks: &[&[u8]]) -> Outcome {
    let mut joined = false;
    drive(chunks, MAX_HELLO_LEN, INITIAL_CAPACITY, |body: &Bytes| {
        let frame = check_client(body);
        if joined {
            // A member: any client frame is fine, a malformed one closes.
            return match frame {
                Some(_) => Next::Continue(MAX_FRAME_LEN),
                None => Next::Stop,
            };
        }
        assert!(
            body.len() <= MAX_HELLO_LEN,
            "a big frame before the handshake"
        );
        match frame {
            Some(ClientFrame::Hello(hello)) if admissible(&hello) => {
                joined = true;
                Next::Continue(MAX_FRAME_LEN)
            }
            // Refused, a room list, or a protocol error: the server closes.
            _ => Next::Stop,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((sizes, stream)) = parse(data) else {
        return;
    };
    let whole = session(&[stream]);
    let split = session(&chunks(&sizes, stream));
    assert_eq!(
        whole, split,
        "splitting the stream changed what was decoded"
    );
});
