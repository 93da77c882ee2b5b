//! The frame decoder at the post-handshake limit, on arbitrary bytes
//! arbitrarily split; every frame body decoded as a client and as a server
//! frame. See `src/lib.rs` for the input format and the invariants.

#![no_main]

use libfuzzer_sys::fuzz_target;
use relais_fuzz::{check_client, check_server, chunks, drive, parse, Next};
use relais_protocol::MAX_FRAME_LEN;

fuzz_target!(|data: &[u8]| {
    let Some((sizes, stream)) = parse(data) else {
        return;
    };
    let whole = drive(&[stream], MAX_FRAME_LEN, 0, |_| {
        Next::Continue(MAX_FRAME_LEN)
    });
    let split = drive(&chunks(&sizes, stream), MAX_FRAME_LEN, 0, |body| {
        check_client(body);
        check_server(body);
        Next::Continue(MAX_FRAME_LEN)
    });
    assert_eq!(
        whole, split,
        "splitting the stream changed what was decoded"
    );
});
