//! The client's side of a connection, as every Rust client reads it: the
//! client core (`relais-client-core`) joined as "al" in "r", then fed
//! arbitrary server bytes, arbitrarily split (see `src/lib.rs`), then end of
//! stream. It must not panic, must see the same events and end in the same
//! state whatever the split, and must never write anything but whole client
//! frames (which frames depends on when writes happen, so that is not
//! compared).

#![no_main]

use std::time::Instant;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use relais_client_core::{Core, Options};
use relais_fuzz::{check_client, chunks, drive, parse, Next};
use relais_protocol::MAX_FRAME_LEN;

/// WELCOME v1, 65536, room "r", members ["al"], resume token "RT".
const WELCOME: &[u8] = b"\x00\x00\x00\x12\x81\x00\x01\x00\x01\x00\x00\x01r\x00\x01\x02al\x00\x02RT";

fn session(chunks: &[&[u8]]) -> (String, String, Vec<u8>) {
    let t0 = Instant::now();
    let mut options = Options::new("al");
    options.room = "r".into();
    let mut core = Core::new(options, t0).expect("valid name");
    core.handle_timeout(t0);
    core.poll_action();
    core.connected(t0);
    let mut out = BytesMut::new();
    core.poll_transmit(&mut out);
    core.handle_input(WELCOME, t0);
    for chunk in chunks {
        core.handle_input(chunk, t0);
        core.poll_transmit(&mut out);
    }
    core.handle_eof(t0);
    core.poll_transmit(&mut out);
    let events: Vec<String> = std::iter::from_fn(|| core.poll_event())
        .map(|u| format!("{u:?}"))
        .collect();
    (
        events.join("\n"),
        format!("{:?}", core.state()),
        out.to_vec(),
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((sizes, stream)) = parse(data) else {
        return;
    };
    let whole = session(&[stream]);
    let split = session(&chunks(&sizes, stream));
    // What the client writes depends on when it gets to write (a PONG due
    // when the stream turns out corrupt goes out only if a write came in
    // between), so the two runs compare by what they saw and where they
    // ended; what each wrote must be whole, valid client frames.
    assert_eq!(
        (&whole.0, &whole.1),
        (&split.0, &split.1),
        "splitting the stream changed the outcome"
    );
    for (_, _, written) in [&whole, &split] {
        drive(&[written], MAX_FRAME_LEN, 64, |body| {
            assert!(check_client(body).is_some(), "the client wrote a bad frame");
            Next::Continue(MAX_FRAME_LEN)
        });
    }
});
