//! TLS on both ports: the Rust client over TCP+TLS, a WebSocket client over
//! `wss://`, `https://` pages, certificate errors, the handshake timeout and
//! certificate reload. Certificates come from test CAs made with rcgen.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use relais::{Client, ConnectError, Event, Message, TlsOptions};
use relais_protocol::{ClientFrame, ServerFrame};
use relais_server::session::FrameSink;
use relais_server::tls::{TlsConfig, TlsError};
use relais_server::ws::HttpPages;
use relais_server::{Config, Server, ServerContext};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::support::*;
use crate::websocket::{http_over, start_server, Seen, Ws};

/// A test certificate authority.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// Issues a certificate for `localhost` and 127.0.0.1 and writes it and
    /// its key to `dir`/cert.pem and `dir`/key.pem (replacing them).
    fn issue_into(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    /// Client options trusting only this CA.
    fn client(&self) -> TlsOptions {
        TlsOptions::new().ca_pem(self.pem.clone())
    }

    /// A tokio-rustls connector trusting only this CA.
    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    /// A TLS connection to `addr`, verified as `localhost`.
    async fn connect(&self, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        self.connector().connect(name, tcp).await
    }
}

/// A server certificate from `ca` in a fresh directory, loaded.
fn tls_from(ca: &Ca) -> (tempfile::TempDir, TlsConfig) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.issue_into(dir.path());
    let tls = TlsConfig::from_pem_files(cert, key).expect("a valid certificate and key");
    (dir, tls)
}

/// A server with TLS on both ports: the server, its WebSocket address.
async fn start_tls(config: Config, tls: &TlsConfig) -> (TestServer, SocketAddr) {
    start_server(Server::new(config).with_tls(tls.clone()), HttpPages::Demo).await
}

/// Connects the Rust client over TLS to `localhost:PORT` (echo off).
fn join(addr: SocketAddr, name: &str, tls: TlsOptions) -> Result<Client, ConnectError> {
    Client::builder(name)
        .room("tls")
        .echo(false)
        .tls(tls)
        .connect_timeout(PATIENCE)
        .connect(format!("localhost:{}", addr.port()))
}

/// Asserts that `result` is a TLS error whose message contains `needle`.
fn assert_tls_error(result: Result<Client, ConnectError>, needle: &str) {
    match result {
        Err(ConnectError::Tls(message)) => assert!(message.contains(needle), "{message}"),
        other => panic!("expected a TLS error about {needle:?}, got {other:?}"),
    }
}

/// The next message `client` receives, skipping presence events.
fn next_message(client: &Client) -> Message {
    client.recv_timeout(PATIENCE).expect("a message")
}

fn message(sender: &str, payload: &str) -> Message {
    Message {
        sender: sender.into(),
        payload: Bytes::from(payload.to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_clients_talk_over_tls_and_list_rooms() {
    let ca = Ca::new("relais test CA");
    let (_dir, tls) = tls_from(&ca);
    let (s, _) = start_tls(unlimited(), &tls).await;
    let addr = s.addr;
    let options = ca.client();
    blocking(move || {
        let alice = join(addr, "alice", options.clone()).expect("alice joins over TLS");
        let bob = join(addr, "bob", options.clone()).expect("bob joins over TLS");
        assert_eq!(
            alice.recv_event_timeout(PATIENCE).unwrap(),
            Event::Joined("bob".into())
        );
        alice.send("hello over TLS").unwrap();
        bob.send("hi alice").unwrap();
        assert_eq!(next_message(&bob), message("alice", "hello over TLS"));
        // A large payload spans several TLS records. (Sent after the first
        // arrived: the server keeps only a sender's newest waiting message.)
        let big = "x".repeat(60_000);
        alice.send(big.clone()).unwrap();
        let got = next_message(&bob);
        assert!(
            got.sender == "alice" && got.payload == big.as_bytes(),
            "the large payload"
        );
        assert_eq!(next_message(&alice), message("bob", "hi alice"));
        // An explicit server name, connecting by IP address.
        let by_ip = Client::builder("carol")
            .room("tls")
            .tls(options.clone().server_name("localhost"))
            .connect(addr)
            .expect("carol joins");
        let rooms = relais::list_rooms_tls(format!("localhost:{}", addr.port()), &options)
            .expect("rooms over TLS");
        assert_eq!(rooms.len(), 1);
        assert_eq!((rooms[0].name.as_str(), rooms[0].members), ("tls", 3));
        // A clean close over TLS: the room sees a normal leave.
        by_ip.close();
        loop {
            match bob.recv_event_timeout(PATIENCE).unwrap() {
                Event::Left { name, reason } if name == "carol" => {
                    assert_eq!(reason, relais::CloseReason::Normal);
                    break;
                }
                _ => {}
            }
        }
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_that_do_not_verify_are_typed_tls_errors() {
    let (ca, other) = (Ca::new("the server's CA"), Ca::new("another CA"));
    let (_dir, tls) = tls_from(&ca);
    let (s, _) = start_tls(unlimited(), &tls).await;
    let addr = s.addr;
    let (wrong_ca, right_ca) = (other.client(), ca.client());
    blocking(move || {
        assert_tls_error(join(addr, "mallory", wrong_ca), "not trusted");
        // The right CA, the wrong name.
        let wrong_name = Client::builder("eve")
            .tls(right_ca.server_name("relais.example.org"))
            .connect(addr);
        assert_tls_error(wrong_name, "not trusted");
        // An unreadable CA file.
        let missing = Client::builder("eve")
            .tls(TlsOptions::new().ca_file("/nonexistent/ca.pem"))
            .connect(addr);
        assert_tls_error(missing, "cannot read CA file /nonexistent/ca.pem");
    })
    .await;
    assert_eq!(s.server.relay().member_count(), 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_tls_mixed_up_fail_clearly() {
    let ca = Ca::new("relais test CA");
    let (_dir, tls) = tls_from(&ca);
    let (tls_server, _) = start_tls(unlimited(), &tls).await;
    let plain_server = TestServer::start().await;
    let (tls_addr, plain_addr) = (tls_server.addr, plain_server.addr);
    let options = ca.client();
    blocking(move || {
        // A plaintext client on the TLS port: the server's TLS alert, read
        // as what it is, well within the connect timeout.
        let started = Instant::now();
        let plain = Client::builder("plain")
            .connect_timeout(PATIENCE)
            .connect(tls_addr);
        match plain {
            Err(ConnectError::Protocol(message)) => {
                assert!(message.contains("expects TLS"), "{message}")
            }
            other => panic!("expected a clear refusal, got {other:?}"),
        }
        assert!(started.elapsed() < PATIENCE / 2, "answered, not timed out");
        // A TLS client on the plaintext port.
        assert_tls_error(join(plain_addr, "tls", options), "does not speak TLS");
    })
    .await;
    tls_server.stop().await;
    plain_server.stop().await;
}

#[tokio::test]
async fn websocket_clients_join_over_wss_and_pages_come_over_https() {
    let ca = Ca::new("relais test CA");
    let (_dir, tls) = tls_from(&ca);
    let (s, ws_addr) = start_tls(unlimited(), &tls).await;
    // A native client over TLS in the same room.
    let mut native = Raw::over(ca.connect(s.addr).await.unwrap());
    native.hello("native", "web", true).await.unwrap();

    let mut web = Ws::upgrade(
        ca.connect(ws_addr).await.unwrap(),
        &format!("wss://localhost:{}/ws", ws_addr.port()),
    )
    .await;
    let welcome = web.hello("browser", "web").await;
    assert_eq!(welcome.members, ["native", "browser"]);
    assert_eq!(
        native.next().await,
        Some(ServerFrame::Joined("browser".into()))
    );
    web.send(ClientFrame::Data(Bytes::from("over wss"))).await;
    assert_eq!(
        native.message().await,
        ("browser".into(), Bytes::from("over wss"))
    );
    native.data("over tls").await;
    for payload in ["over wss", "over tls"] {
        let Seen::Frame(ServerFrame::Message { payload: got, .. }) = web.next().await else {
            panic!("expected a message")
        };
        assert_eq!(got, payload);
    }

    // The demo page over https, and a clean end of the TLS stream after it.
    let page = http_over(
        ca.connect(ws_addr).await.unwrap(),
        "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("relais live demo"));
    // Plain HTTP on the TLS port gets no page.
    let mut plain = TcpStream::connect(ws_addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut plain, b"GET / HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, plain.read_to_end(&mut answer))
        .await
        .expect("closed");
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "no page in plaintext");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_serves_new_handshakes_the_new_certificate_and_keeps_everyone() {
    let (ca1, ca2) = (Ca::new("first CA"), Ca::new("second CA"));
    let (dir, tls) = tls_from(&ca1);
    let (s, _) = start_tls(unlimited(), &tls).await;
    let addr = s.addr;
    let (old_trust, new_trust) = (ca1.client(), ca2.client());

    let before = {
        let old_trust = old_trust.clone();
        blocking(move || join(addr, "before", old_trust).expect("joins with the first cert")).await
    };
    // The files are renewed, then the server is told (SIGHUP in the CLI).
    ca2.issue_into(dir.path());
    tls.reload().expect("the new files load");

    blocking(move || {
        let after = join(addr, "after", new_trust).expect("verifies against the second CA");
        // The first CA no longer verifies.
        assert_tls_error(join(addr, "stale", old_trust), "not trusted");
        // The connection from before the reload goes on, both ways.
        before.send("still here").unwrap();
        after.send("welcome back").unwrap();
        assert_eq!(next_message(&after), message("before", "still here"));
        assert_eq!(next_message(&before), message("after", "welcome back"));
        assert_eq!(before.status(), None);
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_keeps_the_certificate_in_use() {
    let ca = Ca::new("relais test CA");
    let (dir, tls) = tls_from(&ca);
    let (s, _) = start_tls(unlimited(), &tls).await;
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    assert!(matches!(tls.reload(), Err(TlsError::NoKey(_))));
    let addr = s.addr;
    let trust = ca.client();
    blocking(move || join(addr, "still", trust).expect("the old certificate still serves")).await;
    s.stop().await;
}

#[test]
fn bad_certificate_files_are_typed_errors_at_load() {
    let ca = Ca::new("relais test CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.issue_into(dir.path());
    let missing = dir.path().join("missing.pem");
    assert!(matches!(
        TlsConfig::from_pem_files(&missing, &key),
        Err(TlsError::Read { path, .. }) if path == missing
    ));
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    assert!(matches!(
        TlsConfig::from_pem_files(&empty, &key),
        Err(TlsError::NoCertificate(_))
    ));
    assert!(matches!(
        TlsConfig::from_pem_files(&cert, &empty),
        Err(TlsError::NoKey(_))
    ));
    let broken = dir.path().join("broken.pem");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    assert!(matches!(
        TlsConfig::from_pem_files(&broken, &key),
        Err(TlsError::Pem { .. })
    ));
    // Another certificate's key.
    let other = tempfile::tempdir().unwrap();
    let (_, other_key) = ca.issue_into(other.path());
    let mismatch = TlsConfig::from_pem_files(&cert, &other_key).unwrap_err();
    assert!(
        matches!(mismatch, TlsError::KeyMismatch { .. }),
        "{mismatch}"
    );
    assert!(mismatch.to_string().contains("does not match"));
}

#[tokio::test]
async fn a_connection_that_never_starts_tls_is_closed_after_the_handshake_timeout() {
    let ca = Ca::new("relais test CA");
    let (_dir, tls) = tls_from(&ca);
    let config = Config {
        handshake_timeout: Duration::from_millis(300),
        ..unlimited()
    };
    let (s, ws_addr) = start_tls(config.clone(), &tls).await;
    for addr in [s.addr, ws_addr] {
        let started = Instant::now();
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(PATIENCE, idle.read_to_end(&mut rest))
            .await
            .expect("the server closes the idle connection")
            .unwrap();
        let took = started.elapsed();
        assert!(rest.is_empty(), "no ClientHello, no answer");
        assert!(took >= config.handshake_timeout, "closed after {took:?}");
    }
    // Meanwhile nothing was stuck: a real client still gets through.
    let mut c = Raw::over(ca.connect(s.addr).await.unwrap());
    c.hello("after", "", true).await.unwrap();
    drop(c);
    s.stop().await;
}

#[tokio::test]
async fn shutdown_does_not_wait_for_pending_tls_handshakes() {
    let ca = Ca::new("relais test CA");
    let (_dir, tls) = tls_from(&ca);
    let (s, _) = start_tls(unlimited(), &tls).await;
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    // The server has taken it (and is waiting for its TLS handshake).
    let deadline = Instant::now() + PATIENCE;
    while s.server.connection_count() == 0 {
        assert!(Instant::now() < deadline, "the connection was accepted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    s.stop().await;
    assert!(started.elapsed() < Config::default().handshake_timeout);
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, idle.read_to_end(&mut rest))
        .await
        .expect("closed");
}

#[tokio::test]
async fn tls_connections_are_paced() {
    let ca = Ca::new("relais test CA");
    let (_dir, tls) = tls_from(&ca);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move { ca.connect(addr).await.unwrap() });
    let (socket, peer) = listener.accept().await.unwrap();
    let ctx = ServerContext::new(Config::default());
    let timeout = ctx.config.handshake_timeout;
    let (_source, sink) = relais_server::tls::split_tcp(socket, Some(&tls), &ctx, peer, timeout)
        .await
        .expect("handshake");
    let _client = client.await.unwrap();
    // The sink reads the kernel's send queue under TLS too (Linux).
    assert_eq!(sink.send_queue().is_some(), cfg!(target_os = "linux"));
}
