//! Writes the seed corpus from real encodings:
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus`.
//!
//! Each seed is a split header byte (see `src/lib.rs`) and a byte stream.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use relais_protocol::frames::encode_data;
use relais_protocol::{
    encode_message, ClientFrame, CloseReason, Hello, RefuseReason, RoomInfo, ServerFrame, Welcome,
    MAX_FRAME_LEN, MAX_HELLO_LEN, MAX_NAME_LEN, MAX_PAYLOAD, MAX_TOKEN_LEN, VERSION,
};

fn hello(name: &str, room: &str) -> Bytes {
    ClientFrame::Hello(Hello {
        version: VERSION,
        name: name.into(),
        room: room.into(),
        echo: true,
        token: None,
        resume: None,
    })
    .to_bytes()
}

fn hello_with_token(name: &str, room: &str, token: &str) -> Bytes {
    ClientFrame::Hello(Hello {
        version: VERSION,
        name: name.into(),
        room: room.into(),
        echo: false,
        token: Some(token.into()),
        resume: None,
    })
    .to_bytes()
}

fn data(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    encode_data(payload, &mut b);
    b.freeze()
}

fn cat(frames: &[Bytes]) -> Vec<u8> {
    frames.iter().flat_map(|f| f.iter().copied()).collect()
}

fn write(dir: &Path, name: &str, header: &[u8], stream: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut seed = header.to_vec();
    seed.extend_from_slice(stream);
    std::fs::write(dir.join(format!("seed-{name}")), seed).unwrap();
}

/// Seeds of the `token` target (input format in `src/token.rs`).
fn token_seeds(dir: &Path) {
    use relais_fuzz::token::{edit, harness};
    let [hmac, ed] = &harness().minted;
    let (ed, hmac) = (ed.as_bytes(), hmac.as_bytes());
    // Time byte for NOW (bits 2-7 = 20) with mode and key in bits 0-1.
    let at_now = 20 << 2;
    write(dir, "hmac-as-text", &[at_now], hmac);
    write(dir, "ed25519-as-text", &[at_now | 0b10], ed);
    write(dir, "hmac-unedited", &[at_now | 0b01], &[]);
    write(dir, "ed25519-unedited", &[at_now | 0b11], &[]);
    write(dir, "hmac-expired", &[63 << 2 | 0b01], &[]);
    let last = hmac.len() as u16 - 1;
    let dot = hmac.iter().position(|&b| b == b'.').unwrap() as u16;
    let edits = [
        ("signature-last-char", edit(last, b'B').to_vec()),
        ("signature-appended", edit(last + 1, b'A').to_vec()),
        ("header-first-char-deleted", edit(0, 0).to_vec()),
        ("first-dot-replaced", edit(dot, b'x').to_vec()),
        ("two-edits", [edit(5, b'Q'), edit(dot + 3, b'z')].concat()),
    ];
    for (name, edits) in &edits {
        write(dir, &format!("hmac-{name}"), &[at_now | 0b01], edits);
        write(dir, &format!("ed25519-{name}"), &[at_now | 0b11], edits);
    }
    let alg_none = b"eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.\
        eyJzdWIiOiJhbGljZSIsInJvb20iOiJhcmVuYSIsImV4cCI6NDEwMjQ0NDgwMH0.";
    write(dir, "alg-none", &[at_now], alg_none);
    write(dir, "not-a-jwt", &[at_now], b"not-a-jwt");
}

/// A seed without a split header (the `hello` target reads raw bytes).
fn write_raw(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

/// A JWT-shaped token of `len` ASCII bytes.
fn token(len: usize) -> String {
    let head = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.";
    let mut t: String = head.chars().take(len).collect();
    while t.len() < len {
        t.push('x');
    }
    t
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    token_seeds(&root.join("token"));
    let max_name = "n".repeat(MAX_NAME_LEN);
    let max_token = token(MAX_TOKEN_LEN);

    // Client frames.
    let client = [
        ("hello", hello("alice", "arena")),
        ("hello-default-room", hello("bob", "")),
        ("hello-max", hello(&max_name, &max_name)),
        ("hello-utf8", hello("élodie 🎮", "salle")),
        (
            "hello-token",
            hello_with_token("alice", "arena", &token(120)),
        ),
        ("data", data(b"x=1;y=2")),
        ("data-empty", data(b"")),
        ("data-1k", data(&[0xab; 1024])),
        ("list-rooms", ClientFrame::ListRooms.to_bytes()),
        ("ping", ClientFrame::Ping.to_bytes()),
        ("pong", ClientFrame::Pong.to_bytes()),
        (
            "goodbye",
            ClientFrame::Goodbye(CloseReason::Normal, "bye".into()).to_bytes(),
        ),
    ];
    // Server frames.
    let server = [
        (
            "welcome",
            ServerFrame::Welcome(Welcome {
                version: VERSION,
                max_payload: MAX_PAYLOAD as u32,
                room: "arena".into(),
                members: vec!["alice".into(), "bob".into(), "carol".into()],
                resume: None,
            })
            .to_bytes(),
        ),
        (
            "refused",
            ServerFrame::Refused(RefuseReason::NameTaken, "name taken".into()).to_bytes(),
        ),
        ("message", encode_message("alice", b"x=1;y=2")),
        ("joined", ServerFrame::Joined("carol".into()).to_bytes()),
        (
            "left",
            ServerFrame::Left("carol".into(), CloseReason::Timeout).to_bytes(),
        ),
        (
            "room-list",
            ServerFrame::RoomList {
                rooms: vec![
                    RoomInfo {
                        name: "lobby".into(),
                        members: 3,
                    },
                    RoomInfo {
                        name: "arena".into(),
                        members: 12,
                    },
                ],
                more: true,
            }
            .to_bytes(),
        ),
        ("server-ping", ServerFrame::Ping.to_bytes()),
        (
            "server-goodbye",
            ServerFrame::Goodbye(CloseReason::ServerShutdown, "server shutting down".into())
                .to_bytes(),
        ),
    ];
    // Framing edge cases.
    let edges: [(&str, Vec<u8>); 4] = [
        ("too-large", vec![0xff, 0xff, 0xff, 0xff]),
        ("empty-frame", vec![0, 0, 0, 0]),
        ("truncated", vec![0, 0, 0, 9, 0x01, 0, 1]),
        (
            "max-len-prefix-only",
            (MAX_FRAME_LEN as u32).to_be_bytes().to_vec(),
        ),
    ];

    // frame_decoder: every frame alone (fed byte by byte, whole, and with an
    // irregular split), then everything in one stream.
    let dir = root.join("frame_decoder");
    for (name, f) in client.iter().chain(server.iter()) {
        write(&dir, name, &[0x00], f);
        write(&dir, &format!("{name}-split"), &[0x03, 3, 0, 7], f);
    }
    for (name, e) in &edges {
        write(&dir, name, &[0xf8], e);
    }
    let all: Vec<Bytes> = client
        .iter()
        .chain(server.iter())
        .map(|(_, f)| f.clone())
        .collect();
    write(&dir, "stream", &[0x02, 5, 11], &cat(&all));

    // handshake: what a client sends from the start.
    let dir = root.join("handshake");
    let ping = ClientFrame::Ping.to_bytes();
    let pong = ClientFrame::Pong.to_bytes();
    let bye = ClientFrame::Goodbye(CloseReason::Normal, String::new()).to_bytes();
    let sessions: Vec<(&str, Vec<u8>)> = vec![
        (
            "join-and-play",
            cat(&[
                hello("alice", "arena"),
                data(b"x=1"),
                ping,
                data(b"x=2"),
                pong,
                bye.clone(),
            ]),
        ),
        ("join-default-room", cat(&[hello("bob", ""), data(b"hi")])),
        (
            "join-max-names",
            cat(&[hello(&max_name, &max_name), data(&[7; 300]), bye]),
        ),
        ("list-rooms", cat(&[ClientFrame::ListRooms.to_bytes()])),
        ("hello-only", cat(&[hello("alice", "arena")])),
        (
            "bad-version",
            cat(&[ClientFrame::Hello(Hello {
                version: 2,
                name: "a".into(),
                room: String::new(),
                echo: false,
                token: None,
                resume: None,
            })
            .to_bytes()]),
        ),
        ("empty-name", cat(&[hello("", "arena")])),
        ("control-name", cat(&[hello("a\nb", "arena")])),
        (
            "long-name",
            cat(&[hello(&"x".repeat(MAX_NAME_LEN + 1), "")]),
        ),
        (
            "bad-utf8-name",
            vec![0, 0, 0, 8, 0x01, 0, 1, 1, 2, 0xff, 0xfe, 0],
        ),
        ("data-first", cat(&[data(b"x=1")])),
        ("oversized-hello", {
            let mut v = (MAX_HELLO_LEN as u32 + 1).to_be_bytes().to_vec();
            v.extend_from_slice(&[0x01; MAX_HELLO_LEN + 1]);
            v
        }),
        ("huge-prefix", vec![0xff, 0xff, 0xff, 0xff]),
        (
            "join-with-token",
            cat(&[
                hello_with_token("alice", "arena", &token(300)),
                data(b"x=1"),
            ]),
        ),
        (
            "join-max-hello",
            cat(&[
                hello_with_token(&max_name, &max_name, &max_token),
                data(b"x"),
            ]),
        ),
        ("cyrillic-name", cat(&[hello("\u{430}lice", "arena")])),
        (
            "decomposed-name",
            cat(&[hello("e\u{301}lodie", "cafe\u{301}")]),
        ),
        ("invisible-name", cat(&[hello("alice\u{200b}", "arena")])),
        ("blank-name", cat(&[hello("\u{3164}", "")])),
    ];
    for (name, s) in &sessions {
        write(&dir, name, &[0x00], s);
        write(&dir, &format!("{name}-split"), &[0x02, 4, 1], s);
    }
    // hello: HELLO bodies without their type byte (the target adds it).
    let dir = root.join("hello");
    let long_token = "t".repeat(MAX_TOKEN_LEN + 1);
    let hellos: Vec<(&str, Bytes)> = vec![
        ("plain", hello("alice", "arena")),
        ("default-room", hello("bob", "")),
        ("max-names", hello(&max_name, &max_name)),
        ("token", hello_with_token("alice", "arena", &token(64))),
        ("max-token", hello_with_token("a", "", &max_token)),
        ("too-long-token", hello_with_token("a", "", &long_token)),
        ("empty-token", hello_with_token("a", "r", "")),
        ("utf8", hello("élodie 🎮", "salle")),
        ("cyrillic", hello("\u{430}lice", "\u{430}rena")),
        ("decomposed", hello("e\u{301}lodie", "cafe\u{301}")),
        ("qa", hello(&"\u{958}".repeat(11), "\u{958}")),
        ("hangul-jamo", hello("\u{1100}\u{1161}\u{11a8}", "")),
        ("invisible", hello("alice\u{200b}", "a\u{feff}")),
        ("bidi", hello("\u{202e}ecila", "\u{2066}r\u{2069}")),
        ("blank", hello("\u{3164}", "\u{2800}")),
        ("marks-only", hello("\u{301}\u{302}", " ")),
        (
            "emoji-zwj",
            hello("\u{1f468}\u{200d}\u{1f469}", "\u{2764}\u{fe0f}"),
        ),
        ("private-use", hello("\u{e000}", "\u{10fffd}")),
        ("spaces", hello(" alice", "arena ")),
        ("confusables", hello("\u{1d5ba}lice", "b0b")),
    ];
    for (name, f) in &hellos {
        // Without the length prefix and the type byte.
        write_raw(&dir, name, &f[5..]);
    }
    let mut flag_without_token = hello("alice", "arena")[5..].to_vec();
    flag_without_token[2] |= 0x02;
    write_raw(&dir, "flag-without-token", &flag_without_token);
    let mut reserved_flags = hello("alice", "arena")[5..].to_vec();
    reserved_flags[2] = 0xff;
    write_raw(&dir, "reserved-flags", &reserved_flags);
    println!("seeds written under {}", root.display());
}
