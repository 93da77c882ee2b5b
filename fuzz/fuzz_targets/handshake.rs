//! The server's side of a connection, as `relais-server` reads it: a decoder
//! limited to `MAX_HELLO_LEN` until a valid `HELLO` is in, then raised to
//! `MAX_FRAME_LEN`; every frame decoded as a client frame; the names of a
//! `HELLO` validated. Arbitrary bytes, arbitrarily split (see `src/lib.rs`).

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use relais_fuzz::{check_client, chunks, drive, parse, Next, Outcome};
use relais_protocol::{
    validate_name, validate_room, ClientFrame, Hello, MAX_FRAME_LEN, MAX_HELLO_LEN, MAX_NAME_LEN,
    VERSION,
};

/// The server's input buffer starts with this capacity (`tcp.rs`).
const INITIAL_CAPACITY: usize = 512;

/// Whether the server admits this handshake (short of the registry's own
/// checks: name taken, room or server full).
fn admissible(hello: &Hello) -> bool {
    let name_ok = validate_name(&hello.name).is_ok();
    let room_ok = hello.room.is_empty() || validate_room(&hello.room).is_ok();
    for (field, ok) in [(&hello.name, name_ok), (&hello.room, room_ok)] {
        // An accepted name is within the rules...
        if ok && !field.is_empty() {
            assert!(field.len() <= MAX_NAME_LEN);
            assert!(!field.chars().any(char::is_control));
        }
    }
    if let Err(e) = validate_name(&hello.name) {
        let _ = e.to_string();
    }
    // ...and the largest acceptable HELLO fits the pre-handshake limit.
    if name_ok && room_ok {
        let wire = ClientFrame::Hello(hello.clone()).to_bytes();
        assert!(wire.len() - 4 <= MAX_HELLO_LEN);
    }
    hello.version == VERSION && name_ok && room_ok
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
