//! Reconnect with resume (PROTOCOL.md, section 17): parked seats, resume
//! tokens, takeover of a seat whose connection is not yet seen to die, and
//! the grace period's end, with raw frames over TCP (and over in-memory
//! pipes under a paused clock for the keepalive).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use relais_protocol::{
    ClientFrame, CloseReason, Hello, RefuseReason, ServerFrame, Welcome, FLAG_RESUME,
    LENGTH_PREFIX_LEN, VERSION,
};
use relais_server::auth::{unix_now, Claims, RoomScope, Signer, Verifier};
use relais_server::{Config, ServerContext};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::time::Instant;

use crate::support::*;

/// A `HELLO` with `FLAG_RESUME` and `resume` as the token (empty: a first
/// join).
fn resume_hello(name: &str, room: &str, echo: bool, resume: &str) -> ClientFrame {
    ClientFrame::Hello(Hello {
        version: VERSION,
        name: name.into(),
        room: room.into(),
        echo,
        token: None,
        resume: Some(resume.into()),
    })
}

/// The resume fields of a `WELCOME` that must have them: (resumed, token).
fn resume_of(w: &Welcome) -> (bool, String) {
    let r = w.resume.as_ref().expect("a WELCOME with resume fields");
    (r.resumed, r.token.clone())
}

/// Joins `room` as `name` with `FLAG_RESUME` (echo off); the client and the
/// seat's token.
async fn join_resumable(s: &TestServer, room: &str, name: &str) -> (Raw, String) {
    let mut c = s.raw().await;
    let w = c
        .handshake(resume_hello(name, room, false, ""))
        .await
        .expect("welcome");
    let (resumed, token) = resume_of(&w);
    assert!(!resumed, "a first join resumes nothing");
    (c, token)
}

/// Joins `room` as `name` without `FLAG_RESUME`, echo off.
async fn join_plain(s: &TestServer, room: &str, name: &str) -> Raw {
    let mut c = s.raw().await;
    let w = c.hello(name, room, false).await.expect("welcome");
    assert_eq!(w.resume, None);
    c
}

/// Presents `token` for `name` in `room` on a new connection: the welcome,
/// or the refusal after which the server must close.
async fn present(
    s: &TestServer,
    room: &str,
    name: &str,
    token: &str,
) -> Result<(Raw, Welcome), (RefuseReason, String)> {
    let mut c = s.raw().await;
    match c.handshake(resume_hello(name, room, false, token)).await {
        Ok(w) => Ok((c, w)),
        Err(refused) => {
            assert_eq!(c.next().await, None, "closed after REFUSED");
            Err(refused)
        }
    }
}

/// Proves nothing else is queued for `c`: a ping's pong comes next.
async fn nothing_pending<S: AsyncRead + AsyncWrite + Unpin>(c: &mut Raw<S>) {
    c.send(ClientFrame::Ping).await;
    match c.next().await {
        Some(ServerFrame::Pong) => {}
        Some(ServerFrame::Message { sender, payload }) => {
            panic!(
                "a message from {sender} ({} bytes) was pending",
                payload.len()
            )
        }
        other => panic!("{other:?} was pending"),
    }
}

fn msg(sender: &str, payload: &'static str) -> Option<ServerFrame> {
    Some(ServerFrame::Message {
        sender: sender.into(),
        payload: Bytes::from_static(payload.as_bytes()),
    })
}

/// Polls (bounded) until the server holds `n` connections: the way to know
/// that it has seen a connection end, which no client can observe.
async fn until_connections(s: &TestServer, n: usize) {
    until(&format!("the server holds {n} connections"), || {
        s.server.connection_count() == n
    })
    .await;
}

/// Drops `member`'s connection without a GOODBYE and waits for `witness` to
/// see `name` leave, "connection lost"; how long that took.
async fn lost(member: Raw, name: &str, witness: &mut Raw) -> Duration {
    let dropped = Instant::now();
    member.drop_abruptly();
    assert_eq!(
        witness.next().await,
        Some(ServerFrame::Left(name.into(), CloseReason::ConnectionLost))
    );
    dropped.elapsed()
}

fn with_grace(grace: Duration) -> Config {
    Config {
        resume_grace: grace,
        ..unlimited()
    }
}

#[tokio::test]
async fn a_lost_member_resumes_within_the_grace_and_nobody_sees_it_go() {
    let s = TestServer::start().await;
    let (mut alice, token) = join_resumable(&s, "r", "alice").await;
    assert_eq!(token.len(), 32);
    let mut bob = join_plain(&s, "r", "bob").await;
    assert_eq!(alice.next().await, Some(ServerFrame::Joined("bob".into())));
    alice.data("a1").await;
    assert_eq!(bob.next().await, msg("alice", "a1"));
    bob.data("b1").await;
    assert_eq!(alice.next().await, msg("bob", "b1"));

    // alice's connection dies without a GOODBYE; the server sees it end.
    alice.drop_abruptly();
    until_connections(&s, 1).await;
    assert_eq!(s.server.relay().member_count(), 2, "alice's seat is kept");

    // Meanwhile carol joins: alice is in her member list and snapshot.
    let mut carol = s.raw().await;
    let w = carol.hello("carol", "r", false).await.unwrap();
    assert_eq!(w.members, ["alice", "bob", "carol"]);
    assert_eq!(carol.next().await, msg("alice", "a1"));
    assert_eq!(carol.next().await, msg("bob", "b1"));
    assert_eq!(bob.next().await, Some(ServerFrame::Joined("carol".into())));
    // Messages sent while alice is parked.
    bob.data("b2").await;
    assert_eq!(carol.next().await, msg("bob", "b2"));
    carol.data("c1").await;
    assert_eq!(bob.next().await, msg("carol", "c1"));

    // alice comes back with her token: her seat, the room as it is now,
    // and the latest message of every other member.
    let (mut alice, w) = present(&s, "r", "alice", &token).await.unwrap();
    assert_eq!(resume_of(&w), (true, token.clone()));
    assert_eq!(w.room, "r");
    assert_eq!(w.members, ["alice", "bob", "carol"]);
    assert_eq!(alice.next().await, msg("bob", "b2"));
    assert_eq!(alice.next().await, msg("carol", "c1"));
    nothing_pending(&mut alice).await;

    // Live traffic both ways; the others saw neither a LEFT nor a JOINED:
    // alice's next message is the next frame they get.
    alice.data("a2").await;
    assert_eq!(bob.next().await, msg("alice", "a2"));
    assert_eq!(carol.next().await, msg("alice", "a2"));
    nothing_pending(&mut bob).await;
    nothing_pending(&mut carol).await;
    bob.data("b3").await;
    assert_eq!(alice.next().await, msg("bob", "b3"));
    assert_eq!(s.server.relay().member_count(), 3);
    s.stop().await;
}

#[tokio::test]
async fn after_the_grace_the_member_leaves_and_its_token_joins_afresh() {
    const GRACE: Duration = Duration::from_millis(200);
    let s = TestServer::with_config(with_grace(GRACE)).await;
    let (mut alice, token) = join_resumable(&s, "r", "alice").await;
    let mut bob = join_plain(&s, "r", "bob").await;
    assert_eq!(alice.next().await, Some(ServerFrame::Joined("bob".into())));

    let took = lost(alice, "alice", &mut bob).await;
    assert!(took >= GRACE, "LEFT after {took:?}");
    assert_eq!(s.server.relay().member_count(), 1);

    // The token names a seat that is gone: a fresh join, a new token.
    let (_alice, w) = present(&s, "r", "alice", &token).await.unwrap();
    let (resumed, new_token) = resume_of(&w);
    assert!(!resumed);
    assert_ne!(new_token, token);
    assert_eq!(w.members, ["bob", "alice"]);
    assert_eq!(bob.next().await, Some(ServerFrame::Joined("alice".into())));
    s.stop().await;
}

#[tokio::test]
async fn forged_foreign_and_malformed_tokens_are_refused_and_disturb_nobody() {
    let s = TestServer::start().await;
    let (mut alice, token) = join_resumable(&s, "r", "alice").await;
    let mut bob = join_plain(&s, "r", "bob").await;
    assert_eq!(alice.next().await, Some(ServerFrame::Joined("bob".into())));
    let (_elsewhere, _) = join_resumable(&s, "other", "alice").await;
    // Another server's token for the very same seat coordinates.
    let other = TestServer::start().await;
    let (_twin, foreign) = join_resumable(&other, "r", "alice").await;

    let random: String = (0..32)
        .map(|i| char::from(b"AZaz09-_"[(i * 7 + 3) % 8]))
        .collect();
    for (name, room, presented) in [
        ("alice", "r", random.as_str()),
        ("alice", "r", "garbage"),
        ("alice", "r", &"x".repeat(64)),
        ("alice", "r", &token[..31]),
        ("alice", "r", &foreign),
        // A valid token under another name, and in another room.
        ("mallory", "r", &token),
        ("alice", "other", &token),
        ("alice", "", &token),
    ] {
        let Err(refused) = present(&s, room, name, presented).await else {
            panic!("{name} in {room:?} with {presented:?} was welcomed");
        };
        assert_eq!(
            refused,
            (
                RefuseReason::ResumeInvalid,
                "resume token invalid".to_string()
            ),
            "{name} in {room:?} with {presented:?}"
        );
    }
    // A resume token of 65 bytes, or not ASCII, does not decode.
    for (len, byte) in [(65u8, b'a'), (2, 0xc3)] {
        let mut c = s.raw().await;
        let mut body = vec![0x01, 0x00, 0x01, FLAG_RESUME, 1, b'z', 1, b'r', len];
        body.extend(std::iter::repeat_n(byte, usize::from(len)));
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        assert_eq!(frame.len(), LENGTH_PREFIX_LEN);
        frame.extend(body);
        c.send_raw(&frame).await;
        assert!(
            matches!(
                c.until_closed().await,
                Some(ServerFrame::Goodbye(CloseReason::ProtocolError, _))
            ),
            "resume token of {len} bytes of {byte:#x}"
        );
    }

    // The holder and the room saw nothing and carry on.
    nothing_pending(&mut alice).await;
    nothing_pending(&mut bob).await;
    alice.data("still here").await;
    assert_eq!(bob.next().await, msg("alice", "still here"));
    assert_eq!(s.server.relay().member_count(), 3);
    other.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn a_resume_takes_over_a_connection_not_yet_seen_to_die() {
    let s = TestServer::start().await;
    let (mut old, token) = join_resumable(&s, "r", "alice").await;
    let mut bob = join_plain(&s, "r", "bob").await;
    assert_eq!(old.next().await, Some(ServerFrame::Joined("bob".into())));
    bob.data("b1").await;
    assert_eq!(old.next().await, msg("bob", "b1"));

    // The old socket stays open: to the server, alice is still there.
    let (mut alice, w) = present(&s, "r", "alice", &token).await.unwrap();
    assert_eq!(resume_of(&w), (true, token));
    assert_eq!(w.members, ["alice", "bob"]);
    assert_eq!(alice.next().await, msg("bob", "b1"));
    // The old connection ends without a GOODBYE, or anything else.
    assert_eq!(old.until_closed().await, None);
    drop(old);
    until_connections(&s, 2).await;

    alice.data("a1").await;
    assert_eq!(bob.next().await, msg("alice", "a1"));
    nothing_pending(&mut bob).await;
    nothing_pending(&mut alice).await;
    assert_eq!(s.server.relay().member_count(), 2);
    s.stop().await;
}

#[tokio::test]
async fn a_client_without_resume_gets_the_old_welcome_and_leaves_at_once() {
    let s = TestServer::start().await;
    let grace = s.server.config().resume_grace;
    let mut alice = s.raw().await;
    alice.send(hello_frame("alice", "r", false, None)).await;
    // Byte for byte the WELCOME of old: no resume fields after the members.
    let welcome = [
        0, 0, 0, 0x11, 0x81, 0, 1, 0, 1, 0, 0, 1, b'r', 0, 1, 5, b'a', b'l', b'i', b'c', b'e',
    ];
    let mut got = vec![0; welcome.len()];
    alice.read_exact(&mut got).await;
    assert_eq!(got, welcome);
    let mut bob = join_plain(&s, "r", "bob").await;
    assert_eq!(alice.next().await, Some(ServerFrame::Joined("bob".into())));

    let took = lost(alice, "alice", &mut bob).await;
    assert!(took < grace, "not parked: LEFT at once");
    s.stop().await;
}

#[tokio::test]
async fn a_grace_of_zero_never_parks() {
    let s = TestServer::with_config(with_grace(Duration::ZERO)).await;
    let (mut alice, token) = join_resumable(&s, "r", "alice").await;
    let mut bob = join_plain(&s, "r", "bob").await;
    assert_eq!(alice.next().await, Some(ServerFrame::Joined("bob".into())));
    lost(alice, "alice", &mut bob).await;
    let (_alice, w) = present(&s, "r", "alice", &token).await.unwrap();
    assert!(!resume_of(&w).0, "nothing to take back");
    assert_eq!(bob.next().await, Some(ServerFrame::Joined("alice".into())));
    s.stop().await;
}

#[tokio::test]
async fn a_resumed_seat_skips_the_join_token_and_stays_read_only() {
    const SECRET: &[u8] = b"an integration-test secret of 40 bytes!!";
    let ctx = ServerContext::new(unlimited()).with_auth(Verifier::hmac(SECRET).unwrap());
    let s = TestServer::with_context(ctx).await;
    let claims = |sub: &str, read_only| Claims {
        sub: sub.into(),
        scope: RoomScope::Room("r".into()),
        exp: unix_now() + 3600,
        nbf: None,
        read_only,
    };
    let signer = Signer::hmac(SECRET).unwrap();
    let hello = |name: &str, read_only| {
        let jwt = signer.sign(&claims(name, read_only)).unwrap();
        ClientFrame::Hello(Hello {
            version: VERSION,
            name: name.into(),
            room: "r".into(),
            echo: false,
            token: Some(jwt),
            resume: Some(String::new()),
        })
    };
    let mut host = s.raw().await;
    host.handshake(hello("host", false)).await.unwrap();
    let mut viewer = s.raw().await;
    let w = viewer.handshake(hello("viewer", true)).await.unwrap();
    let (_, token) = resume_of(&w);
    assert_eq!(
        host.next().await,
        Some(ServerFrame::Joined("viewer".into()))
    );

    viewer.drop_abruptly();
    until_connections(&s, 1).await;
    // No join token at all: the resume token is the credential.
    let (mut viewer, w) = present(&s, "r", "viewer", &token).await.unwrap();
    assert!(resume_of(&w).0);
    viewer.data("not allowed").await;
    assert_eq!(
        viewer.until_closed().await,
        Some(ServerFrame::Goodbye(CloseReason::ReadOnly, String::new()))
    );
    assert_eq!(
        host.next().await,
        Some(ServerFrame::Left("viewer".into(), CloseReason::ReadOnly))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_parked_and_can_resume() {
    let s = TestServer::with_config(Config {
        write_deadline: Duration::from_millis(500),
        ..unlimited()
    })
    .await;
    let mut stalled = Raw::connect(s.addr, Some(4096)).await;
    let w = stalled
        .handshake(resume_hello("stalled", "", false, ""))
        .await
        .unwrap();
    let (_, token) = resume_of(&w);
    let mut healthy = join_plain(&s, "", "healthy").await;
    let mut sender = join_plain(&s, "", "sender").await;
    assert_eq!(
        healthy.next().await,
        Some(ServerFrame::Joined("sender".into()))
    );

    // The sender streams until the stalled reader's connection is gone
    // (bounded, in case it never is).
    let stop = Arc::new(AtomicBool::new(false));
    let send = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut seq = 0u32;
            while !stop.load(Ordering::Relaxed) && seq < 200_000 {
                sender.data(seq_payload(seq, 16 * 1024)).await;
                seq += 1;
            }
            sender
        }
    });
    // healthy reads meanwhile; told to finish, it proves nothing but
    // messages came (a pong after everything queued before it).
    let (finish, finished) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        tokio::pin!(finished);
        let mut pinged = false;
        loop {
            let frame = tokio::select! {
                frame = healthy.next() => frame,
                _ = &mut finished, if !pinged => {
                    pinged = true;
                    healthy.send(ClientFrame::Ping).await;
                    continue;
                }
            };
            match frame {
                Some(ServerFrame::Message { .. }) => {}
                Some(ServerFrame::Pong) if pinged => return healthy,
                other => panic!("healthy saw {other:?}"),
            }
        }
    });
    until_connections(&s, 2).await;
    stop.store(true, Ordering::Relaxed);
    let mut sender = send.await.unwrap();
    // A pong after all of the sender's data was relayed.
    sender.send(ClientFrame::Ping).await;
    assert_eq!(sender.next().await, Some(ServerFrame::Pong));
    // Its seat is kept, and nobody was told.
    assert_eq!(s.server.relay().member_count(), 3);
    finish.send(()).unwrap();
    let _healthy = reader.await.unwrap();

    let (mut back, w) = present(&s, "", "stalled", &token).await.unwrap();
    assert!(resume_of(&w).0);
    assert_eq!(w.members, ["stalled", "healthy", "sender"]);
    assert!(matches!(
        back.next().await,
        Some(ServerFrame::Message { sender, .. }) if sender == "sender"
    ));
    nothing_pending(&mut back).await;
    drop(stalled);
    s.stop().await;
}

/// Reads frames, answering pings, until one that is not a ping; returns it.
async fn next_answering_pings(c: &mut Raw<DuplexStream>) -> Option<ServerFrame> {
    loop {
        match c.next_within(Duration::from_secs(600)).await {
            Some(ServerFrame::Ping) => c.send(ClientFrame::Pong).await,
            other => return other,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_keepalive_timeout_parks_and_the_grace_ends_with_left_timeout() {
    let sim = Sim::new(Config::default());
    let (grace, interval) = (sim.config.resume_grace, sim.config.keepalive_interval);
    let (mut silent, first_session) = sim.connect();
    let w = silent
        .handshake(resume_hello("silent", "", false, ""))
        .await
        .unwrap();
    let (_, token) = resume_of(&w);
    // Two unanswered pings, then the keepalive drop, as always.
    assert_eq!(
        silent.next_within(interval * 2).await,
        Some(ServerFrame::Ping)
    );
    assert_eq!(
        silent.next_within(interval * 2).await,
        Some(ServerFrame::Ping)
    );
    assert_eq!(
        silent.until_closed().await,
        Some(ServerFrame::Goodbye(CloseReason::Timeout, String::new()))
    );
    drop(silent);
    // The seat is still there: a newcomer sees it.
    let (mut watcher, _) = sim.connect();
    let w = watcher.hello("watcher", "", false).await.unwrap();
    assert_eq!(w.members, ["silent", "watcher"]);

    // Taken back within the grace: the watcher sees nothing.
    let (mut silent, _second_session) = sim.connect();
    let w = silent
        .handshake(resume_hello("silent", "", false, &token))
        .await
        .unwrap();
    let resumed = Instant::now();
    assert_eq!(resume_of(&w), (true, token));
    first_session.await.unwrap();
    nothing_pending(&mut watcher).await;

    // Silent again: parked again, and this time the grace runs out. The
    // watcher (answering its pings) gets the LEFT with the reason of the
    // drop, one keepalive window plus the grace after the resume.
    let left = next_answering_pings(&mut watcher).await;
    assert_eq!(
        left,
        Some(ServerFrame::Left("silent".into(), CloseReason::Timeout))
    );
    let took = resumed.elapsed();
    let expected = interval * 3 + grace;
    assert!(
        took >= expected && took <= expected + Duration::from_secs(1),
        "{took:?}"
    );
    assert_eq!(sim.relay.member_count(), 1);
    drop(silent);
}
