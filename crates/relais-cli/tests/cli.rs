//! The `relais` binary as a user runs it: a server and two chat terminals.

use std::io::Write;
use std::process::Command;

mod common;
use common::{last_word, serve_at, serve_with, Proc, PATIENCE};

fn relais(args: &[&str]) -> Proc {
    Proc::relais(args, "warn")
}

/// `relais serve` on ephemeral ports with `extra` flags; its TCP address.
fn serve(extra: &[&str]) -> (Proc, String) {
    serve_with(extra, "warn")
}

#[test]
fn two_chat_terminals_talk_through_a_server() {
    let (mut server, addr) = serve(&[]);

    let mut alice = relais(&["chat", "--name", "alice", "--server", &addr]);
    alice.expect("stderr", "joined room");
    let mut bob = relais(&["chat", "--name", "bob", "--server", &addr]);
    bob.expect("stderr", "joined room");
    alice.expect("stdout", "* bob joined");

    alice.type_line("hello bob");
    assert_eq!(bob.expect("stdout", "hello"), "alice: hello bob");
    bob.type_line("hi alice");
    assert_eq!(alice.expect("stdout", "hi"), "bob: hi alice");

    // A taken name: the reason on stderr, a non-zero exit.
    let mut impostor = relais(&["chat", "--name", "alice", "--server", &addr]);
    impostor.expect("stderr", "name taken");
    assert!(!impostor.wait_exit().success());

    // The operator's view.
    let mut rooms = relais(&["rooms", "--server", &addr]);
    assert_eq!(rooms.expect("stdout", "lobby"), "lobby\t2");
    assert!(rooms.wait_exit().success());

    // bob hangs up (end of input): alice sees him leave.
    drop(bob.stdin.take());
    assert!(bob.wait_exit().success());
    alice.expect("stdout", "* bob left (left)");

    // SIGTERM: the server says goodbye and exits 0; alice reports why and
    // reconnects by itself once a server is back on the same address (a
    // new one, which does not know her seat: she joins again).
    terminate(&server);
    assert!(server.wait_exit().success());
    alice.expect("stderr", "server shutting down");
    let (server, _) = serve_at(&addr);
    alice.expect("stderr", "* reconnected (joined again)");
    let carol = relais(&["chat", "--name", "carol", "--server", &addr]);
    carol.expect("stderr", "members: alice, carol");
    alice.type_line("back");
    assert_eq!(carol.expect("stdout", "back"), "alice: back");

    // SIGTERM again, with nobody coming back: alice gives up after her
    // reconnect window (0.5 s here) and exits with the reason.
    drop(carol);
    let mut alice2 = relais(&[
        "chat",
        "--name",
        "alice2",
        "--server",
        &addr,
        "--reconnect",
        "0.5",
    ]);
    alice2.expect("stderr", "joined room");
    terminate(&server);
    alice2.expect("stderr", "reconnecting");
    alice2.expect("stderr", "disconnected");
    assert!(!alice2.wait_exit().success());
}

/// Sends SIGTERM to `proc`.
fn terminate(proc: &Proc) {
    proc.signal("TERM");
}

#[test]
fn the_watcher_prints_payloads_escaped_one_line_each() {
    let (server, addr) = serve(&[]);
    let mut watch = relais(&[
        "watch",
        "--name",
        "w",
        "--server",
        &addr,
        "--reconnect",
        "0",
    ]);
    watch.expect("stderr", "watching room");

    let spoofer = relais::Client::builder("spoofer")
        .connect(addr.as_str())
        .unwrap();
    watch.expect("stdout", "* spoofer joined");
    // Clear the screen, go back to the start of the line and pretend to be
    // someone else; a payload with a newline; one with a bidi override and
    // a literal backslash-n. One at a time: the relay keeps only a sender's
    // latest message waiting, so each is sent once the last one is printed.
    let cases = [
        (
            "\u{1b}[2J\rspoof: hi",
            "spoof: hi",
            "spoofer: \\u{1b}[2J\\rspoof: hi",
        ),
        (
            "line one\nline two",
            "line two",
            "spoofer: line one\\nline two",
        ),
        (
            "\u{202e}olleh \\n",
            "olleh",
            "spoofer: \\u{202e}olleh \\\\n",
        ),
    ];
    let mut printed = Vec::new();
    for (payload, needle, expected) in cases {
        spoofer.send(payload).unwrap();
        let lines = watch.lines_until("stdout", needle);
        assert_eq!(lines, [expected], "{payload:?}");
        printed.extend(lines);
    }

    spoofer.close();
    watch.expect("stdout", "* spoofer left (left)");
    terminate(&server);
    let rest = watch.rest("stdout");
    for line in printed.iter().chain(&rest) {
        assert!(!line.contains(['\u{1b}', '\r', '\u{202e}']), "{line:?}");
    }
    assert!(!watch.wait_exit().success());
}

#[test]
fn server_logs_quote_client_names_and_have_no_escape_bytes() {
    let (server, addr) = serve_with(&[], "info,relais_server=debug");
    // A name that would forge log fields if written unquoted.
    let forger = relais::Client::builder("evil room=admin} joined")
        .connect(addr.as_str())
        .unwrap();
    let joined = server.expect("stderr", "joined");
    assert!(
        joined.contains(r#"client="evil room=admin} joined""#),
        "{joined}"
    );

    // A name with ESC: the server refuses it as a control character.
    let answer = raw_hello(&addr, "x\u{1b}[31mred");
    assert_eq!(
        answer[4],
        relais_protocol::frames::kind::REFUSED,
        "{answer:?}"
    );
    assert_eq!(answer[5], relais_protocol::RefuseReason::InvalidName.code());
    let refused = server.expect("stderr", "refused");
    assert!(refused.contains(r#"client="x\u{1b}[31mred""#), "{refused}");

    forger.close();
    terminate(&server);
    let mut all = vec![joined, refused];
    all.extend(server.rest("stderr"));
    for line in &all {
        assert!(!line.contains('\u{1b}'), "an ESC byte in the log: {line:?}");
    }
}

/// A HELLO sent by hand (the Rust client refuses bad names before
/// sending): returns the server's answer, after which it closed.
fn raw_hello(addr: &str, name: &str) -> Vec<u8> {
    use std::io::Read;
    let hello = relais_protocol::ClientFrame::Hello(relais_protocol::Hello {
        version: relais_protocol::VERSION,
        name: name.into(),
        room: String::new(),
        echo: false,
        token: None,
        resume: None,
    });
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    raw.write_all(&hello.to_bytes()).unwrap();
    let mut answer = Vec::new();
    raw.read_to_end(&mut answer).unwrap();
    answer
}

#[test]
fn json_logs_are_one_object_a_line_and_names_cannot_forge_fields() {
    let (server, addr) = serve_with(&["--log-format", "json"], "info,relais_server=debug");
    // Quotes, `=`, braces: enough to close the string and the object and
    // start new keys, were the name pasted into JSON or key=value text.
    let name = r#"eve", "level":"ERROR"} {"x=1 }"#;
    let forger = relais::Client::builder(name)
        .room("lobby")
        .connect(addr.as_str())
        .unwrap();
    let joined = server.expect("stderr", "joined");
    // A newline (refused as a control character) in the refusal's log.
    let answer = raw_hello(&addr, "two\nlines");
    assert_eq!(answer[5], relais_protocol::RefuseReason::InvalidName.code());
    let refused = server.expect("stderr", "refused");
    forger.close();
    terminate(&server);
    let mut all = vec![joined.clone(), refused.clone()];
    all.extend(server.rest("stderr"));

    let parse = |line: &str| -> serde_json::Value {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    for line in &all {
        let object = parse(line);
        let keys: Vec<&str> = object
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        for key in &keys {
            assert!(
                ["timestamp", "level", "fields", "target", "span", "spans"].contains(key),
                "unexpected key {key:?} in {line}"
            );
        }
        assert_ne!(object["level"], "ERROR", "{line}");
    }
    let joined = parse(&joined);
    assert_eq!(joined["fields"]["message"], "joined");
    assert_eq!(joined["span"]["name"], "member");
    assert_eq!(joined["span"]["client"], name, "{joined}");
    assert_eq!(joined["span"]["room"], "lobby");
    let spans = joined["spans"].as_array().unwrap();
    assert_eq!(spans[0]["transport"], "tcp");
    assert!(spans[0]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(spans[1]["client"], name);
    let refused = parse(&refused);
    assert_eq!(refused["fields"]["client"], "two\nlines", "{refused}");
    assert_eq!(refused["fields"]["reason"], "invalid name");
}

#[test]
fn sighup_without_tls_is_logged_and_the_server_goes_on() {
    // `systemctl reload` sends SIGHUP whatever the configuration; its
    // default action would end the server.
    let (mut server, addr) = serve_with(&[], "info");
    server.expect("stderr", "listening (tcp)");
    server.signal("HUP");
    server.expect("stderr", "SIGHUP: no TLS certificate to reload");
    let mut rooms = relais(&["rooms", "--server", &addr]);
    rooms.expect("stdout", "no rooms");
    assert!(rooms.wait_exit().success());
    terminate(&server);
    assert!(
        server.wait_exit().success(),
        "SIGTERM still ends it cleanly"
    );
}

#[test]
fn a_failed_connection_says_why_and_exits_non_zero() {
    // Port 1 on loopback: nothing listens there.
    let mut watch = relais(&["watch", "--server", "127.0.0.1:1"]);
    watch.expect("stderr", "cannot join");
    assert!(!watch.wait_exit().success());
}

#[test]
fn connections_past_the_open_file_limit_are_refused() {
    // The server under an open-file limit of 64 (soft and hard).
    let server = Proc::spawn(
        "relais",
        Command::new("sh")
            .args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\""])
            .arg(env!("CARGO_BIN_EXE_relais"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--ws-listen",
                "127.0.0.1:0",
                // Every client here comes from 127.0.0.1.
                "--max-connections-per-ip",
                "0",
                "--max-joins-per-ip",
                "0",
            ])
            .env("RUST_LOG", "warn"),
    );
    let addr = last_word(&server.expect("stdout", "listening on")).to_string();
    let warning = server.expect("stderr", "open-file limit");
    assert!(warning.contains("64"), "{warning}");

    let connect = |name: &str| relais::Client::builder(name).connect(addr.as_str());
    let mut clients = Vec::new();
    let mut refused = 0;
    for i in 0..100 {
        match connect(&format!("p{i}")) {
            Ok(c) => clients.push(c),
            Err(relais::ConnectError::Refused { reason, .. }) => {
                assert_eq!(reason, relais::RefuseReason::ServerFull);
                refused += 1;
            }
            Err(e) => panic!("client {i}: expected a welcome or \"server full\", got {e}"),
        }
    }
    assert!(clients.len() >= 10, "{} admitted", clients.len());
    assert_eq!(clients.len() + refused, 100);

    // Those admitted are served.
    clients[0].send("still fine").unwrap();
    let got = clients[1].recv_timeout(PATIENCE).unwrap();
    assert_eq!(
        (got.sender.as_str(), &got.payload[..]),
        ("p0", &b"still fine"[..])
    );

    // Freed descriptors are reused: after ten leave, ten more get in. A
    // departure completes on the server just after the client closes, so
    // each newcomer may be refused a few times first (until a deadline).
    for c in clients.drain(..10) {
        c.close();
    }
    let deadline = std::time::Instant::now() + PATIENCE;
    for i in 0..10 {
        let newcomer = loop {
            match connect(&format!("new{i}")) {
                Ok(c) => break c,
                Err(relais::ConnectError::Refused { .. })
                    if std::time::Instant::now() < deadline =>
                {
                    continue
                }
                Err(e) => panic!("newcomer {i} never admitted: {e}"),
            }
        };
        clients.push(newcomer);
    }
}

#[test]
fn tls_settings_that_cannot_work_stop_the_start_with_the_reason() {
    let listen = ["--listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0"];
    let missing = [
        &["serve", "--tls-cert", "/nonexistent/cert.pem"][..],
        &["--tls-key", "/nonexistent/key.pem"],
        &listen,
    ]
    .concat();
    let mut server = relais(&missing);
    server.expect("stderr", "cannot read /nonexistent/cert.pem");
    assert!(!server.wait_exit().success());
    let mut half = relais(&[&["serve", "--tls-cert", "cert.pem"][..], &listen].concat());
    half.expect("stderr", "tls-cert needs tls-key");
    assert!(!half.wait_exit().success());
}

#[test]
fn tls_clients_against_a_plaintext_server_fail_clearly() {
    let (_server, addr) = serve(&[]);
    let mut rooms = relais(&["rooms", "--tls", "--server", &addr]);
    rooms.expect("stderr", "does not speak TLS");
    assert!(!rooms.wait_exit().success());
    // --ca implies --tls: the CA file is read first.
    let mut chat = relais(&[
        "chat",
        "--name",
        "a",
        "--ca",
        "/nonexistent/ca.pem",
        "--server",
        &addr,
    ]);
    chat.expect("stderr", "cannot read CA file /nonexistent/ca.pem");
    assert!(!chat.wait_exit().success());
}

/// A file in the system's temporary directory, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!("relais-cli-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A TEST key of `relais-server/tests/fixtures`.
fn fixture(name: &str) -> String {
    format!(
        "{}/../relais-server/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// `relais token ARGS`: the token it prints.
fn mint(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_relais"))
        .arg("token")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "relais token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");
    token
}

#[test]
fn minted_tokens_let_chat_and_watch_into_a_server_that_requires_them() {
    let secret = TempFile::new("secret", b"0123456789abcdef0123456789abcdef\n");
    let (_server, addr) = serve(&["--token-secret-file", secret.path()]);
    let key = ["--secret-file", secret.path()];
    let alice = mint(
        &[
            &key[..],
            &["--name", "alice", "--room", "arena", "--ttl", "1h"],
        ]
        .concat(),
    );
    let viewer = mint(
        &[
            &key[..],
            &[
                "--name",
                "viewer",
                "--room-prefix",
                "are",
                "--ttl",
                "90s",
                "--read-only",
            ],
        ]
        .concat(),
    );

    let target = ["--room", "arena", "--server", &addr];
    let chat = |name: &str, extra: &[&str]| {
        relais(&[&["chat", "--name", name][..], &target, extra].concat())
    };
    let mut alice_chat = chat("alice", &["--token", &alice]);
    alice_chat.expect("stderr", "joined room \"arena\"");
    let viewer_file = TempFile::new("viewer-token", format!("{viewer}\n").as_bytes());
    let watcher = relais(
        &[
            &["watch", "--name", "viewer"][..],
            &target,
            &["--token-file", viewer_file.path()],
        ]
        .concat(),
    );
    watcher.expect("stderr", "watching room \"arena\"");
    alice_chat.expect("stdout", "* viewer joined");
    alice_chat.type_line("hello viewers");
    assert_eq!(watcher.expect("stdout", "hello"), "alice: hello viewers");

    // No token, or someone else's: the reason on stderr, a non-zero exit.
    let mut nobody = chat("carol", &[]);
    nobody.expect("stderr", "token required");
    assert!(!nobody.wait_exit().success());
    let mut impostor = chat("mallory", &["--token", &alice]);
    let line = impostor.expect("stderr", "not allowed");
    assert!(line.contains("token is for name \"alice\""), "{line}");
    assert!(!line.contains(&alice), "the token is echoed: {line}");
    assert!(!impostor.wait_exit().success());
}

#[test]
fn public_key_tokens_and_start_up_errors() {
    let (_server, addr) = serve(&["--token-public-key", &fixture("test-ed25519.pub")]);
    let private = fixture("test-ed25519.key");
    let token = mint(&["--private-key", &private, "--name", "ed", "--room", "lobby"]);
    let mut ed = relais(&["chat", "--name", "ed", "--server", &addr, "--token", &token]);
    ed.expect("stderr", "joined room \"lobby\"");
    drop(ed.stdin.take());
    assert!(ed.wait_exit().success());

    let short = TempFile::new("short-secret", b"31 bytes, one short of enough!!\n");
    let both = TempFile::new(
        "both.toml",
        format!("token_public_key = {:?}\n", fixture("test-ed25519.pub")).as_bytes(),
    );
    for (args, error) in [
        (vec!["--token-secret-file", short.path()], "at least 32"),
        (vec!["--token-public-key", &private], "private key"),
        (
            vec!["--token-public-key", &fixture("test-p256.pub")],
            "Ed25519 or RSA",
        ),
        (
            vec!["--token-secret-file", "/nonexistent/secret"],
            "cannot read",
        ),
        (
            vec!["--config", both.path(), "--token-secret-file", short.path()],
            "both set",
        ),
        (
            vec!["--allowed-origins", "https://ok.example,game.example"],
            "game.example",
        ),
    ] {
        let mut server = relais(
            &[
                &[
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--ws-listen",
                    "127.0.0.1:0",
                ][..],
                &args,
            ]
            .concat(),
        );
        server.expect("stderr", error);
        assert!(!server.wait_exit().success(), "{args:?}");
    }
}
