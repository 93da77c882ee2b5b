//! The relay semantics (PRODUCT.md "Semantics" 1–6) over real TCP.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use relais_protocol::{ClientFrame, CloseReason, RefuseReason, ServerFrame};
use relais_server::Config;

use crate::support::*;

#[tokio::test]
async fn two_clients_exchange_messages() {
    let s = TestServer::start().await;
    let (mut a, _) = s.join("", "alice").await;
    let (mut b, wb) = s.join("", "bob").await;
    assert_eq!(wb.room, relais_protocol::DEFAULT_ROOM);
    assert_eq!(wb.members, ["alice", "bob"]);
    assert_eq!(a.next().await, Some(ServerFrame::Joined("bob".into())));

    a.data("hello bob").await;
    assert_eq!(
        b.message().await,
        ("alice".into(), Bytes::from("hello bob"))
    );
    assert_eq!(
        a.message().await,
        ("alice".into(), Bytes::from("hello bob"))
    );
    b.data("hi alice").await;
    assert_eq!(a.message().await, ("bob".into(), Bytes::from("hi alice")));
    s.stop().await;
}

#[tokio::test]
async fn duplicate_name_is_refused_and_the_holder_keeps_working() {
    let s = TestServer::start().await;
    let (mut a, _) = s.join("", "alice").await;
    let mut impostor = s.raw().await;
    let refusal = impostor.hello("alice", "", true).await.unwrap_err();
    assert_eq!(refusal.0, RefuseReason::NameTaken);
    assert_eq!(
        impostor.next().await,
        None,
        "refused connections are closed"
    );

    a.data("still here").await;
    assert_eq!(
        a.message().await,
        ("alice".into(), Bytes::from("still here"))
    );
    assert_eq!(s.server.relay().member_count(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_hundred_concurrent_registrations_of_one_name_give_one_success() {
    let s = TestServer::start().await;
    let attempts = (0..100).map(|_| {
        let addr = s.addr;
        tokio::spawn(async move {
            let mut c = Raw::connect(addr, None).await;
            let answer = c.hello("highlander", "", true).await;
            (c, answer)
        })
    });
    let mut winners = Vec::new();
    let mut refused = 0;
    for a in attempts {
        match a.await.unwrap() {
            (c, Ok(_)) => winners.push(c),
            (_, Err((RefuseReason::NameTaken, _))) => refused += 1,
            (_, Err(other)) => panic!("unexpected refusal {other:?}"),
        }
    }
    assert_eq!((winners.len(), refused), (1, 99));
    assert_eq!(s.server.relay().member_count(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_client_cannot_speak_as_someone_else() {
    let s = TestServer::start().await;
    let (mut alice, _) = s.join("", "alice").await;
    let (mut mallory, _) = s.join("", "mallory").await;
    assert_eq!(
        alice.next().await,
        Some(ServerFrame::Joined("mallory".into()))
    );

    // The payload may say anything; the stamp is the registered name.
    mallory.data("alice: give me your sword").await;
    assert_eq!(alice.message().await.0, "mallory");

    // A second HELLO cannot re-register under another name.
    mallory.send(hello_frame("alice", "", true, None)).await;
    assert_eq!(
        alice.next().await,
        Some(ServerFrame::Left(
            "mallory".into(),
            CloseReason::ProtocolError
        ))
    );
    assert_eq!(s.server.relay().member_count(), 1);
    s.stop().await;
}

#[tokio::test]
async fn echo_on_and_off() {
    let s = TestServer::start().await;
    let mut quiet = s.raw().await;
    quiet.hello("quiet", "", false).await.unwrap();
    let (mut loud, _) = s.join("", "loud").await;
    assert_eq!(quiet.next().await, Some(ServerFrame::Joined("loud".into())));

    quiet.data("q1").await;
    loud.data("l1").await;
    // loud (echo on) sees both; quiet (echo off) sees only loud's.
    let mut seen = vec![loud.message().await, loud.message().await];
    seen.sort();
    assert_eq!(
        seen,
        [
            ("loud".into(), Bytes::from("l1")),
            ("quiet".into(), Bytes::from("q1"))
        ]
    );
    assert_eq!(quiet.message().await, ("loud".into(), Bytes::from("l1")));
    // Nothing else is waiting for quiet: a ping round trip proves it.
    quiet.send(ClientFrame::Ping).await;
    assert_eq!(quiet.next().await, Some(ServerFrame::Pong));
    s.stop().await;
}

#[tokio::test]
async fn per_sender_order_holds_under_load() {
    const SENDERS: usize = 5;
    const PER_SENDER: u32 = 2000;
    let s = TestServer::start().await;
    let (mut watcher, _) = s.join("load", "watcher").await;
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        let mut c = s.raw().await;
        c.hello(&format!("s{i}"), "load", false).await.unwrap();
        senders.push(c);
    }
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                for seq in 0..PER_SENDER {
                    c.data(seq_payload(seq, 64)).await;
                }
                c
            })
        })
        .collect();
    let mut last = [None::<u32>; SENDERS];
    while last.iter().any(|l| *l != Some(PER_SENDER - 1)) {
        match watcher.next().await.expect("connection stays up") {
            ServerFrame::Message { sender, payload } => {
                let i: usize = sender[1..].parse().unwrap();
                let seq = seq_of(&payload);
                assert!(
                    last[i].is_none_or(|l| seq > l),
                    "{sender}: {seq} after {:?}",
                    last[i]
                );
                last[i] = Some(seq);
            }
            ServerFrame::Joined(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    s.stop().await;
}

#[tokio::test]
async fn a_paused_recipient_gets_the_newest_message_not_a_backlog() {
    const COUNT: u32 = 3000;
    const SIZE: usize = 8 * 1024;
    let s = TestServer::start().await;
    // A small receive buffer so the backlog cannot hide in the kernel.
    let mut paused = Raw::connect(s.addr, Some(4096)).await;
    paused.hello("paused", "", true).await.unwrap();
    let mut sender = s.raw().await;
    sender.hello("sender", "", false).await.unwrap();

    // 24 MB while `paused` reads nothing: far more than socket buffers hold.
    for seq in 0..COUNT {
        sender.data(seq_payload(seq, SIZE)).await;
    }
    // The sender's own ping is answered after all its data was relayed.
    sender.send(ClientFrame::Ping).await;
    assert_eq!(sender.next().await, Some(ServerFrame::Pong));

    // Now `paused` resumes.
    assert_eq!(
        paused.next().await,
        Some(ServerFrame::Joined("sender".into()))
    );
    let mut seqs = Vec::new();
    while seqs.last() != Some(&(COUNT - 1)) {
        let (from, payload) = paused.message().await;
        assert_eq!(from, "sender");
        seqs.push(seq_of(&payload));
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates"
    );
    assert!(
        seqs.len() < COUNT as usize / 2,
        "conflated: received {} of {COUNT}",
        seqs.len()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_does_not_delay_others_and_is_dropped() {
    const DEADLINE: Duration = Duration::from_secs(1);
    let s = TestServer::with_config(Config {
        write_deadline: DEADLINE,
        ..unlimited()
    })
    .await;
    let mut stalled = Raw::connect(s.addr, Some(4096)).await;
    stalled.hello("stalled", "", true).await.unwrap();
    let (mut healthy, _) = s.join("", "healthy").await;
    let mut sender = s.raw().await;
    sender.hello("sender", "", false).await.unwrap();
    assert_eq!(
        healthy.next().await,
        Some(ServerFrame::Joined("sender".into()))
    );

    // The sender streams timestamped updates until the stalled reader is
    // dropped (bounded, in case it never is).
    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let send = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut seq = 0u32;
            while !stop.load(Ordering::Relaxed) && seq < 200_000 {
                let mut p = seq_payload(seq, 16 * 1024).to_vec();
                p[4..12].copy_from_slice(&(base.elapsed().as_micros() as u64).to_be_bytes());
                sender.data(p).await;
                seq += 1;
            }
            sender
        }
    });
    let mut last = None;
    let mut worst = Duration::ZERO;
    loop {
        match healthy.next().await.expect("healthy stays connected") {
            ServerFrame::Message { payload, .. } => {
                let seq = seq_of(&payload);
                assert!(last.is_none_or(|l| seq > l));
                last = Some(seq);
                let sent = u64::from_be_bytes(payload[4..12].try_into().unwrap());
                worst = worst.max(base.elapsed() - Duration::from_micros(sent));
            }
            ServerFrame::Left(name, reason) => {
                assert_eq!(name, "stalled");
                assert_eq!(reason, CloseReason::SlowConsumer);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    // Had the stalled reader held the others up, some update would have
    // waited for its write deadline.
    assert!(
        worst < DEADLINE,
        "an update took {worst:?} to reach the healthy reader"
    );
    let _sender = send.await.unwrap();
    // The name is free again at once.
    let mut again = s.raw().await;
    again.hello("stalled", "", true).await.unwrap();
    drop(stalled);
    s.stop().await;
}

#[tokio::test]
async fn clean_leave_frees_the_name_and_is_announced() {
    let s = TestServer::start().await;
    let (mut a, _) = s.join("", "a").await;
    let (mut b, _) = s.join("", "b").await;
    assert_eq!(a.next().await, Some(ServerFrame::Joined("b".into())));
    b.send(ClientFrame::Goodbye(CloseReason::Normal, String::new()))
        .await;
    assert_eq!(
        b.until_closed().await,
        Some(ServerFrame::Goodbye(CloseReason::Normal, String::new()))
    );
    assert_eq!(
        a.next().await,
        Some(ServerFrame::Left("b".into(), CloseReason::Normal))
    );
    let (_b2, w) = s.join("", "b").await;
    assert_eq!(w.members, ["a", "b"]);
    s.stop().await;
}

#[tokio::test]
async fn server_shutdown_says_goodbye_to_everyone() {
    let s = TestServer::start().await;
    let mut clients = Vec::new();
    for i in 0..100 {
        let (c, _) = s.join("", &format!("c{i}")).await;
        clients.push(c);
    }
    let addr = s.addr;
    s.stop().await;
    for mut c in clients {
        assert_eq!(
            c.until_closed().await,
            Some(ServerFrame::Goodbye(
                CloseReason::ServerShutdown,
                String::new()
            ))
        );
    }
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn bad_input_gets_a_typed_goodbye() {
    let s = TestServer::start().await;
    // A length prefix announcing 4 GiB before the handshake.
    let mut c = s.raw().await;
    c.send_raw(&[0xff, 0xff, 0xff, 0xff]).await;
    assert!(matches!(
        c.until_closed().await,
        Some(ServerFrame::Goodbye(CloseReason::ProtocolError, _))
    ));
    // Something other than HELLO first.
    let mut c = s.raw().await;
    c.data("who am I").await;
    assert!(matches!(
        c.until_closed().await,
        Some(ServerFrame::Goodbye(CloseReason::ProtocolError, _))
    ));
    // An unknown frame type after the handshake.
    let (mut c, _) = s.join("", "x").await;
    c.send_raw(&[0, 0, 0, 1, 0x7f]).await;
    assert!(matches!(
        c.until_closed().await,
        Some(ServerFrame::Goodbye(CloseReason::ProtocolError, _))
    ));
    // Invalid names and versions get typed refusals.
    let mut c = s.raw().await;
    assert_eq!(
        c.hello("bad\nname", "", true).await.unwrap_err().0,
        RefuseReason::InvalidName
    );
    let mut c = s.raw().await;
    c.send_raw(b"\x00\x00\x00\x09\x01\x00\x01\x01\x02\xff\xfe\x01r")
        .await;
    assert!(matches!(
        c.next().await,
        Some(ServerFrame::Refused(RefuseReason::InvalidName, _))
    ));
    let mut c = s.raw().await;
    c.send(ClientFrame::Hello(relais_protocol::Hello {
        version: 99,
        name: "v".into(),
        room: String::new(),
        echo: true,
        token: None,
        resume: None,
    }))
    .await;
    assert!(matches!(
        c.next().await,
        Some(ServerFrame::Refused(RefuseReason::UnsupportedVersion, _))
    ));
    assert_eq!(s.server.relay().member_count(), 0, "x left after its error");
    s.stop().await;
}

#[tokio::test]
async fn a_first_frame_other_than_hello_is_named_in_the_goodbye() {
    let s = TestServer::start().await;
    for (frame, name) in [
        (ClientFrame::Data(Bytes::from_static(b"hi")), "DATA"),
        (ClientFrame::Ping, "PING"),
        (ClientFrame::Pong, "PONG"),
        (
            ClientFrame::Goodbye(CloseReason::Normal, "bye".into()),
            "GOODBYE",
        ),
    ] {
        let mut c = s.raw().await;
        c.send(frame).await;
        assert_eq!(
            c.until_closed().await,
            Some(ServerFrame::Goodbye(
                CloseReason::ProtocolError,
                format!("expected HELLO, got {name}")
            ))
        );
    }
    s.stop().await;
}
