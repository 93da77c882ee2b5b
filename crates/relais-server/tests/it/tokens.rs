//! Join tokens end to end (TCP, WebSocket, the Rust client), read-only
//! members, and the WebSocket origin allow-list. The verifier's rules edge by
//! edge (leeway, claim types, malformed tokens) are unit tests in
//! `src/auth.rs`.

use std::net::SocketAddr;

use bytes::Bytes;
use relais::{ConnectError, MAX_TOKEN_LEN};
use relais_protocol::{
    ClientFrame, CloseReason, RefuseReason, ServerFrame, Welcome, LENGTH_PREFIX_LEN, MAX_HELLO_LEN,
};
use relais_server::auth::{unix_now, Claims, RoomScope, Signer, Verifier};
use relais_server::origins::AllowedOrigins;
use relais_server::ws::HttpPages;
use relais_server::{Server, ServerContext};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::*;
use crate::websocket::{start_server, Seen, Ws};

const SECRET: &[u8] = b"an integration-test secret of 40 bytes!!";
// TEST keys (tests/fixtures/README.md).
const ED_PUB: &[u8] = include_bytes!("../fixtures/test-ed25519.pub");
const ED_KEY: &[u8] = include_bytes!("../fixtures/test-ed25519.key");
const OTHER_ED_KEY: &[u8] = include_bytes!("../fixtures/other-ed25519.key");
const RSA_PUB: &[u8] = include_bytes!("../fixtures/test-rsa.pub");
const RSA_KEY: &[u8] = include_bytes!("../fixtures/test-rsa.key");
/// `{"alg":"none","typ":"JWT"}`, `{"sub":"alice","room":"arena","exp":4102444800}`,
/// no signature.
const ALG_NONE: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.\
    eyJzdWIiOiJhbGljZSIsInJvb20iOiJhcmVuYSIsImV4cCI6NDEwMjQ0NDgwMH0.";

/// Claims for `sub` in `scope`, valid for an hour.
fn claims(sub: &str, scope: RoomScope) -> Claims {
    Claims {
        sub: sub.into(),
        scope,
        exp: unix_now() + 3600,
        nbf: None,
        read_only: false,
    }
}

fn room(name: &str) -> RoomScope {
    RoomScope::Room(name.into())
}

fn sign(key: &Signer, claims: &Claims) -> String {
    key.sign(claims).unwrap()
}

fn hmac() -> Signer {
    Signer::hmac(SECRET).unwrap()
}

fn signer(pem: &[u8]) -> Signer {
    Signer::from_private_key_pem(pem).unwrap()
}

async fn server_with(verifier: Verifier) -> TestServer {
    TestServer::with_context(ServerContext::new(unlimited()).with_auth(verifier)).await
}

async fn hmac_server() -> TestServer {
    server_with(Verifier::hmac(SECRET).unwrap()).await
}

/// Sends a HELLO (echo off) with `token`; the welcome, or the refusal after
/// which the server must close.
async fn join_with(
    s: &TestServer,
    name: &str,
    room: &str,
    token: Option<&str>,
) -> Result<(Raw, Welcome), (RefuseReason, String)> {
    let mut c = s.raw().await;
    c.send(hello(name, room, token)).await;
    match c.next().await {
        Some(ServerFrame::Welcome(w)) => Ok((c, w)),
        Some(ServerFrame::Refused(reason, text)) => {
            assert_eq!(c.next().await, None, "closed after REFUSED");
            Err((reason, text))
        }
        other => panic!("expected WELCOME or REFUSED, got {other:?}"),
    }
}

/// A member of `room` with a token for it, signed with `key`.
async fn member(s: &TestServer, key: &Signer, name: &str, room_name: &str) -> Raw {
    let token = sign(key, &claims(name, room(room_name)));
    let (c, _) = join_with(s, name, room_name, Some(&token)).await.unwrap();
    c
}

/// [`join_with`] for a client that must be refused.
async fn refusal(
    s: &TestServer,
    name: &str,
    room: &str,
    token: Option<&str>,
) -> (RefuseReason, String) {
    match join_with(s, name, room, token).await {
        Err(refused) => refused,
        Ok((_, w)) => panic!("{name} was welcomed into {:?}", w.room),
    }
}

fn hello(name: &str, room: &str, token: Option<&str>) -> ClientFrame {
    hello_frame(name, room, false, token)
}

/// Proves nothing else is queued for `c`: a ping's pong comes next.
async fn nothing_pending(c: &mut Raw) {
    c.send(ClientFrame::Ping).await;
    assert_eq!(c.next().await, Some(ServerFrame::Pong));
}

#[tokio::test]
async fn a_valid_token_joins_and_a_missing_one_is_required() {
    let s = hmac_server().await;
    let token = sign(&hmac(), &claims("alice", room("arena")));
    let (mut alice, welcome) = join_with(&s, "alice", "arena", Some(&token)).await.unwrap();
    assert_eq!(
        (welcome.room.as_str(), &welcome.members[..]),
        ("arena", &["alice".to_string()][..])
    );

    let refused = refusal(&s, "bob", "arena", None).await;
    assert_eq!(
        refused,
        (
            RefuseReason::TokenRequired,
            "this server requires a join token".to_string()
        )
    );
    // A refused client never joined: alice saw nothing.
    nothing_pending(&mut alice).await;
    s.stop().await;
}

#[tokio::test]
async fn each_bad_token_gets_its_typed_refusal_and_the_room_sees_nothing() {
    let s = server_with(Verifier::from_public_key_pem(ED_PUB).unwrap()).await;
    let ed = signer(ED_KEY);
    let alice = claims("alice", room("arena"));
    let mut watcher = member(&s, &ed, "watcher", "arena").await;

    let expired = sign(
        &ed,
        &Claims {
            exp: unix_now() - 3600,
            ..alice.clone()
        },
    );
    let cases = [
        (
            "expired",
            "alice",
            "arena",
            expired,
            RefuseReason::TokenExpired,
            "token expired at",
        ),
        (
            "signed by another key",
            "alice",
            "arena",
            sign(&signer(OTHER_ED_KEY), &alice),
            RefuseReason::TokenInvalid,
            "signature does not verify",
        ),
        (
            "HS256 against an Ed25519 server",
            "alice",
            "arena",
            sign(&hmac(), &alice),
            RefuseReason::TokenInvalid,
            "algorithm \"HS256\" is not accepted",
        ),
        (
            "HS256 keyed with the server's public key",
            "alice",
            "arena",
            sign(&Signer::hmac(ED_PUB).unwrap(), &alice),
            RefuseReason::TokenInvalid,
            "algorithm \"HS256\" is not accepted",
        ),
        (
            "alg none",
            "alice",
            "arena",
            ALG_NONE.to_string(),
            RefuseReason::TokenInvalid,
            "algorithm \"none\" is not accepted",
        ),
        (
            "not a JWT",
            "alice",
            "arena",
            "not-a-jwt".to_string(),
            RefuseReason::TokenInvalid,
            "malformed token",
        ),
        (
            "someone else's token",
            "mallory",
            "arena",
            sign(&ed, &alice),
            RefuseReason::NotAllowed,
            "token is for name \"alice\"",
        ),
        (
            "another room",
            "alice",
            "vip",
            sign(&ed, &alice),
            RefuseReason::NotAllowed,
            "token is for room \"arena\"",
        ),
        (
            "outside the prefix",
            "alice",
            "arena",
            sign(&ed, &claims("alice", RoomScope::Prefix("arena-".into()))),
            RefuseReason::NotAllowed,
            "token is for rooms starting with \"arena-\"",
        ),
    ];
    for (case, name, room, token, reason, text) in cases {
        let (got, got_text) = refusal(&s, name, room, Some(&token)).await;
        assert_eq!(got, reason, "{case}: {got_text}");
        assert!(got_text.contains(text), "{case}: {got_text}");
        assert!(!got_text.contains(&token), "{case}: the token is echoed");
    }
    nothing_pending(&mut watcher).await;
    assert_eq!(s.server.relay().rooms().len(), 1, "only the watcher's room");
    s.stop().await;
}

#[tokio::test]
async fn room_prefixes_and_the_default_room() {
    let s = hmac_server().await;
    let key = hmac();
    let prefixed = sign(&key, &claims("alice", RoomScope::Prefix("arena-".into())));
    for room in ["arena-1", "arena-2"] {
        let (_, w) = join_with(&s, "alice", room, Some(&prefixed)).await.unwrap();
        assert_eq!(w.room, room);
    }
    // An empty HELLO room is the default room, and that is what is checked.
    let lobby = sign(&key, &claims("bob", room("lobby")));
    let (_, w) = join_with(&s, "bob", "", Some(&lobby)).await.unwrap();
    assert_eq!(w.room, "lobby");
    let arena = sign(&key, &claims("carol", room("arena")));
    let refused = refusal(&s, "carol", "", Some(&arena)).await;
    assert_eq!(refused.0, RefuseReason::NotAllowed);
    // The empty prefix: any room.
    let anywhere = sign(&key, &claims("dave", RoomScope::Prefix(String::new())));
    let (_, w) = join_with(&s, "dave", "", Some(&anywhere)).await.unwrap();
    assert_eq!(w.room, "lobby");
    let (_, w) = join_with(&s, "dave", "elsewhere", Some(&anywhere))
        .await
        .unwrap();
    assert_eq!(w.room, "elsewhere");
    s.stop().await;
}

#[tokio::test]
async fn a_read_only_member_receives_and_is_dropped_when_it_sends() {
    let s = server_with(Verifier::from_public_key_pem(RSA_PUB).unwrap()).await;
    let rsa = signer(RSA_KEY);
    let mut host = member(&s, &rsa, "host", "stage").await;
    let viewer = Claims {
        read_only: true,
        ..claims("viewer", room("stage"))
    };
    let (mut viewer, w) = join_with(&s, "viewer", "stage", Some(&sign(&rsa, &viewer)))
        .await
        .unwrap();
    assert_eq!(w.members, ["host", "viewer"]);
    assert_eq!(
        host.next().await,
        Some(ServerFrame::Joined("viewer".into()))
    );

    // It receives like anyone...
    host.data("the show").await;
    assert_eq!(
        viewer.message().await,
        ("host".into(), Bytes::from("the show"))
    );
    nothing_pending(&mut viewer).await;
    // ...but its first DATA ends it, and nobody receives that DATA.
    viewer.data("heckle").await;
    assert_eq!(
        viewer.next().await,
        Some(ServerFrame::Goodbye(CloseReason::ReadOnly, String::new()))
    );
    assert_eq!(viewer.next().await, None);
    assert_eq!(
        host.next().await,
        Some(ServerFrame::Left("viewer".into(), CloseReason::ReadOnly))
    );
    nothing_pending(&mut host).await;
    s.stop().await;
}

#[tokio::test]
async fn a_server_without_a_key_ignores_tokens() {
    let s = TestServer::start().await;
    let (_, w) = join_with(&s, "alice", "arena", Some("anything at all"))
        .await
        .unwrap();
    assert_eq!(w.members, ["alice"]);
    join_with(&s, "bob", "arena", None).await.unwrap();
    s.stop().await;
}

#[tokio::test]
async fn a_token_at_the_length_limit_is_decoded_and_one_over_is_a_protocol_error() {
    let s = hmac_server().await;
    // The largest HELLO there is: maximal name, room, join token and
    // resume token.
    let (name, room, token) = ("n".repeat(64), "r".repeat(64), "x".repeat(MAX_TOKEN_LEN));
    let ClientFrame::Hello(mut largest) = hello(&name, &room, Some(&token)) else {
        unreachable!()
    };
    largest.resume = Some("r".repeat(relais_protocol::MAX_RESUME_TOKEN_LEN));
    let largest = ClientFrame::Hello(largest);
    assert_eq!(largest.to_bytes().len() - LENGTH_PREFIX_LEN, MAX_HELLO_LEN);
    let refused = refusal(&s, &name, &room, Some(&token)).await;
    assert_eq!(refused.0, RefuseReason::TokenInvalid, "{}", refused.1);
    assert!(refused.1.contains("malformed"), "{}", refused.1);

    let mut c = s.raw().await;
    c.send(hello("n", "r", Some(&"x".repeat(MAX_TOKEN_LEN + 1))))
        .await;
    match c.next().await {
        Some(ServerFrame::Goodbye(CloseReason::ProtocolError, text)) => {
            assert!(text.contains("token of 2049 bytes"), "{text}")
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert_eq!(c.next().await, None);

    // A token that is not ASCII cannot be a JWT.
    let refused = refusal(&s, "n", "r", Some("tökén")).await;
    assert_eq!(refused.0, RefuseReason::TokenInvalid);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_presents_its_token() {
    let s = hmac_server().await;
    let addr = s.addr;
    let token = sign(&hmac(), &claims("alice", room("arena")));
    tokio::task::spawn_blocking(move || {
        let builder = || relais::Client::builder("alice").room("arena");
        let with_token = builder().token(token.clone());
        let debug = format!("{with_token:?}");
        assert!(
            !debug.contains(&token) && debug.contains("bytes>"),
            "{debug}"
        );
        let client = with_token.connect(addr).unwrap();
        assert_eq!(client.members(), ["alice"]);
        client.close();

        match builder().connect(addr) {
            Err(ConnectError::Refused { reason, .. }) => {
                assert_eq!(reason, RefuseReason::TokenRequired)
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // The longest token is sent (and refused by the verifier)...
        match builder().token("x".repeat(MAX_TOKEN_LEN)).connect(addr) {
            Err(ConnectError::Refused { reason, .. }) => {
                assert_eq!(reason, RefuseReason::TokenInvalid)
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // ...one byte more is refused before connecting: port 1 has no
        // server, so anything but this error means the client tried.
        assert!(matches!(
            builder()
                .token("x".repeat(MAX_TOKEN_LEN + 1))
                .connect("127.0.0.1:1"),
            Err(ConnectError::TokenTooLong {
                len: 2049,
                max: 2048
            })
        ));
        assert!(matches!(
            builder().token("tökén").connect("127.0.0.1:1"),
            Err(ConnectError::TokenNotAscii)
        ));
    })
    .await
    .unwrap();
    s.stop().await;
}

/// A test server with a WebSocket listener too.
async fn with_ws(ctx: ServerContext) -> (TestServer, SocketAddr) {
    start_server(Server::with_context(ctx), HttpPages::None).await
}

/// Sends a WebSocket upgrade request with this `Origin` (none: `None`);
/// returns the response head.
async fn upgrade(addr: SocketAddr, origin: Option<&str>) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: relais.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        // The whole answer if the server closes (403), the head if it
        // upgrades (101, and the socket stays open).
        while !answer.ends_with(b"\r\n\r\n") || answer.starts_with(b"HTTP/1.1 403") {
            if stream.read_buf(&mut answer).await.unwrap() == 0 {
                break;
            }
        }
    })
    .await
    .expect("an answer in time");
    String::from_utf8(answer).unwrap()
}

#[tokio::test]
async fn websocket_upgrades_from_origins_outside_the_list_get_403() {
    let allowed = AllowedOrigins::new(["https://game.example", "http://localhost:8080"]).unwrap();
    let (s, addr) = with_ws(ServerContext::new(unlimited()).with_allowed_origins(allowed)).await;
    for origin in [
        "https://game.example",
        "HTTPS://Game.Example:443",
        "http://localhost:8080",
    ] {
        let answer = upgrade(addr, Some(origin)).await;
        assert!(answer.starts_with("HTTP/1.1 101 "), "{origin}: {answer}");
    }
    for origin in ["https://evil.example", "http://game.example", "null"] {
        let answer = upgrade(addr, Some(origin)).await;
        assert!(
            answer.starts_with("HTTP/1.1 403 Forbidden"),
            "{origin}: {answer}"
        );
        assert!(
            answer.ends_with("relais: this page's origin may not open a WebSocket here\n"),
            "{answer}"
        );
        assert!(answer.contains("Connection: close"), "{answer}");
    }
    let answer = upgrade(addr, None).await;
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden"), "{answer}");
    assert!(answer.contains("requires an Origin header"), "{answer}");
    s.stop().await;

    // Without a list, any page (and no Origin at all) may upgrade.
    let (s, addr) = with_ws(ServerContext::new(unlimited())).await;
    for origin in [Some("https://evil.example"), None] {
        let answer = upgrade(addr, origin).await;
        assert!(answer.starts_with("HTTP/1.1 101 "), "{origin:?}: {answer}");
    }
    s.stop().await;
}

#[tokio::test]
async fn websocket_clients_present_tokens_and_read_only_ends_with_1008() {
    let ctx = ServerContext::new(unlimited()).with_auth(Verifier::hmac(SECRET).unwrap());
    let (s, addr) = with_ws(ctx).await;
    let mut refused = Ws::connect(addr).await;
    refused.send(hello("web", "arena", None)).await;
    assert!(matches!(
        refused.next().await,
        Seen::Frame(ServerFrame::Refused(RefuseReason::TokenRequired, _))
    ));

    let viewer = Claims {
        read_only: true,
        ..claims("web", room("arena"))
    };
    let mut ws = Ws::connect(addr).await;
    ws.send(hello("web", "arena", Some(&sign(&hmac(), &viewer))))
        .await;
    assert!(matches!(
        ws.next().await,
        Seen::Frame(ServerFrame::Welcome(_))
    ));
    ws.send(ClientFrame::Data(Bytes::from("no"))).await;
    assert_eq!(
        ws.next().await,
        Seen::Frame(ServerFrame::Goodbye(CloseReason::ReadOnly, String::new()))
    );
    assert_eq!(ws.next().await, Seen::Close(Some(CloseCode::Policy)));
    s.stop().await;
}
