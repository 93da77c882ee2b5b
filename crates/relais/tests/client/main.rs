//! The client against a scripted fake server: handshake, messages,
//! presence, keepalive, and every way a connection ends.

mod fake_server;

use std::net::TcpListener;
use std::time::Duration;

use bytes::Bytes;
use fake_server::{message, Script, PATIENCE};
use relais::{
    Client, CloseReason, ConnectError, Disconnect, Event, Message, NameError, ReceiveMode,
    RecvError, RefuseReason, SendError, DEFAULT_ROOM, MAX_PAYLOAD,
};
use relais_protocol::{ClientFrame, ServerFrame};

fn msg(sender: &str, payload: &'static str) -> Message {
    Message {
        sender: sender.into(),
        payload: Bytes::from_static(payload.as_bytes()),
    }
}

fn data(payload: &'static str) -> ClientFrame {
    ClientFrame::Data(Bytes::from_static(payload.as_bytes()))
}

fn goodbye() -> ClientFrame {
    ClientFrame::Goodbye(CloseReason::Normal, String::new())
}

#[test]
fn handshake_then_send_and_receive() {
    let server = Script::start(|conn| {
        let hello = conn.welcome(&["alice"], &[]);
        assert_eq!(
            (hello.name.as_str(), hello.room.as_str(), hello.echo),
            ("alice", "", true)
        );
        conn.expect(data("hi"));
        conn.send(&[message("alice", "hi")]);
        conn.expect(goodbye());
        conn.expect_eof();
    });
    let client = Client::connect(server.addr(), "alice").unwrap();
    assert_eq!(client.name(), "alice");
    assert_eq!(client.room(), DEFAULT_ROOM);
    assert_eq!(client.members(), ["alice"]);
    assert_eq!(client.max_payload(), MAX_PAYLOAD);
    assert_eq!(client.status(), None);

    client.send("hi").unwrap();
    assert_eq!(client.recv_timeout(PATIENCE), Ok(msg("alice", "hi")));
    assert_eq!(client.recv(), None);
    assert_eq!(
        client.send(vec![0u8; MAX_PAYLOAD + 1]),
        Err(SendError::TooLarge {
            len: MAX_PAYLOAD + 1,
            max: MAX_PAYLOAD
        })
    );

    client.close();
    let stats = client.stats();
    assert_eq!((stats.sent, stats.received), (1, 1));
    server.finish();
}

#[test]
fn builder_options_reach_the_hello() {
    let server = Script::start(|conn| {
        let hello = conn.welcome(&["bob"], &[]);
        assert_eq!(
            (hello.name.as_str(), hello.room.as_str(), hello.echo),
            ("bob", "arena", false)
        );
        conn.expect(goodbye());
        conn.expect_eof();
    });
    let client = Client::builder("bob")
        .room("arena")
        .echo(false)
        .connect(server.addr())
        .unwrap();
    drop(client); // Drop closes like close().
    server.finish();
}

#[test]
fn refusal_is_typed() {
    let server = Script::start(|conn| {
        conn.expect_hello();
        conn.send(&[ServerFrame::Refused(
            RefuseReason::NameTaken,
            "alice is here".into(),
        )]);
    });
    match Client::connect(server.addr(), "alice") {
        Err(ConnectError::Refused { reason, message }) => {
            assert_eq!(reason, RefuseReason::NameTaken);
            assert_eq!(message, "alice is here");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    server.finish();
}

#[test]
fn invalid_names_fail_before_connecting() {
    // Nothing ever accepts on this listener: a connect attempt would time out.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    assert!(matches!(
        Client::connect(addr, ""),
        Err(ConnectError::InvalidName(NameError::Empty))
    ));
    assert!(matches!(
        Client::builder("ok").room("a\nb").connect(addr),
        Err(ConnectError::InvalidRoom(NameError::ControlCharacter('\n')))
    ));
    assert!(matches!(
        Client::connect(addr, "alice\u{200b}"),
        Err(ConnectError::InvalidName(NameError::Invisible('\u{200b}')))
    ));
    assert!(matches!(
        Client::connect(addr, " alice"),
        Err(ConnectError::InvalidName(NameError::SurroundingWhitespace))
    ));
}

#[test]
fn names_are_sent_in_nfc() {
    let server = Script::start(|conn| {
        let hello = conn.welcome(&["\u{e9}lodie"], &[]);
        assert_eq!(
            (hello.name.as_str(), hello.room.as_str()),
            ("\u{e9}lodie", "caf\u{e9}")
        );
        conn.expect(goodbye());
        conn.expect_eof();
    });
    // Decomposed: e + U+0301 COMBINING ACUTE ACCENT.
    let client = Client::builder("e\u{301}lodie")
        .room("cafe\u{301}")
        .connect(server.addr())
        .unwrap();
    assert_eq!(client.name(), "\u{e9}lodie");
    drop(client);
    server.finish();
}

#[test]
fn silent_server_times_out_the_handshake() {
    // The kernel completes the TCP handshake; nobody ever answers HELLO.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let result = Client::builder("alice")
        .connect_timeout(Duration::from_millis(100))
        .connect(listener.local_addr().unwrap());
    assert!(matches!(result, Err(ConnectError::Timeout)), "{result:?}");
}

#[test]
fn server_goodbye_ends_the_connection_after_queued_messages() {
    let server = Script::start(|conn| {
        conn.welcome(&["alice"], &[]);
        conn.send(&[
            message("bob", "one"),
            message("bob", "two"),
            ServerFrame::Goodbye(CloseReason::ServerShutdown, "maintenance".into()),
        ]);
        // The client records the goodbye before shutting its socket, so once
        // this returns its status is set.
        conn.expect_eof();
    });
    // A server shutting down is a restart to a reconnecting client: this
    // one does not reconnect.
    let client = Client::builder("alice")
        .reconnect_window(Duration::ZERO)
        .connect(server.addr())
        .unwrap();
    server.finish();

    let reason = Disconnect::Goodbye {
        reason: CloseReason::ServerShutdown,
        message: "maintenance".into(),
    };
    assert_eq!(client.status(), Some(reason.clone()));
    assert_eq!(client.recv(), Some(msg("bob", "one")));
    assert_eq!(client.recv_blocking(), Ok(msg("bob", "two")));
    assert_eq!(
        client.recv_blocking(),
        Err(RecvError::Disconnected(reason.clone()))
    );
    assert_eq!(
        client.recv_event_timeout(PATIENCE),
        Err(RecvError::Disconnected(reason.clone()))
    );
    assert_eq!(client.iter().count(), 0);
    assert_eq!(client.send("late"), Err(SendError::Closed(reason)));
}

#[test]
fn eof_without_goodbye_is_a_lost_connection() {
    let server = Script::start(|conn| {
        conn.welcome(&["alice"], &[message("bob", "last words")]);
    });
    let client = Client::builder("alice")
        .reconnect_window(Duration::ZERO)
        .connect(server.addr())
        .unwrap();
    server.finish();
    let received: Vec<Message> = client.iter().collect();
    assert_eq!(received, [msg("bob", "last words")]);
    assert!(
        matches!(client.status(), Some(Disconnect::ConnectionLost(_))),
        "{:?}",
        client.status()
    );
}

#[test]
fn server_ping_is_answered_with_pong() {
    let server = Script::start(|conn| {
        conn.welcome(&["alice"], &[ServerFrame::Ping]);
        conn.expect(ClientFrame::Pong);
        conn.send(&[message("server", "got it")]);
        conn.expect(goodbye());
        conn.expect_eof();
    });
    let client = Client::connect(server.addr(), "alice").unwrap();
    assert_eq!(client.recv_timeout(PATIENCE), Ok(msg("server", "got it")));
    drop(client);
    server.finish();
}

#[test]
fn close_flushes_queued_payloads_then_says_goodbye() {
    let server = Script::start(|conn| {
        conn.welcome(&["alice"], &[]);
        conn.expect(data("a"));
        conn.expect(data("b"));
        conn.expect(goodbye());
        conn.expect_eof();
    });
    let client = Client::connect(server.addr(), "alice").unwrap();
    client.send("a").unwrap();
    client.send("b").unwrap();
    client.close();
    client.close(); // idempotent
    server.finish();

    assert_eq!(client.status(), Some(Disconnect::Closed));
    assert_eq!(client.send("c"), Err(SendError::Closed(Disconnect::Closed)));
    assert_eq!(
        client.recv_blocking(),
        Err(RecvError::Disconnected(Disconnect::Closed))
    );
    assert_eq!(client.stats().sent, 2);
}

#[test]
fn presence_updates_members_and_events() {
    let server = Script::start(|conn| {
        // Frames in the same write as WELCOME must not be lost.
        conn.welcome(&["alice", "bob"], &[ServerFrame::Joined("carol".into())]);
        conn.send(&[
            ServerFrame::Left("bob".into(), CloseReason::Timeout),
            message("carol", "hi"),
            ServerFrame::Joined("dave".into()),
            message("dave", "yo"),
        ]);
        conn.expect(goodbye());
        conn.expect_eof();
    });
    let client = Client::connect(server.addr(), "alice").unwrap();
    assert_eq!(
        client.recv_event_timeout(PATIENCE),
        Ok(Event::Joined("carol".into()))
    );
    // The list is updated before the event is queued.
    assert!(client.members().contains(&"carol".to_string()));
    assert_eq!(
        client.recv_event_timeout(PATIENCE),
        Ok(Event::Left {
            name: "bob".into(),
            reason: CloseReason::Timeout
        })
    );
    assert_eq!(
        client.recv_event_timeout(PATIENCE),
        Ok(Event::Message(msg("carol", "hi")))
    );
    // recv() passes over the JOINED(dave) before the message and drops it...
    assert_eq!(client.recv_timeout(PATIENCE), Ok(msg("dave", "yo")));
    assert_eq!(client.recv_event(), None);
    // ...but the member list saw it.
    assert_eq!(client.members(), ["alice", "carol", "dave"]);
    drop(client);
    server.finish();
}

#[test]
fn silent_server_is_declared_dead_after_two_unanswered_pings() {
    let server = Script::start(|conn| {
        conn.welcome(&["alice"], &[]);
        conn.expect(ClientFrame::Ping);
        conn.expect(ClientFrame::Ping);
        conn.expect_eof();
    });
    let client = Client::builder("alice")
        .keepalive(Duration::from_millis(50))
        .reconnect_window(Duration::ZERO)
        .connect(server.addr())
        .unwrap();
    assert_eq!(
        client.recv_blocking(),
        Err(RecvError::Disconnected(Disconnect::Timeout))
    );
    assert_eq!(client.status(), Some(Disconnect::Timeout));
    server.finish();
}

#[test]
fn full_inbound_queue_drops_the_oldest() {
    let server = Script::start(|conn| {
        conn.welcome(&["alice"], &[]);
        conn.send(&[
            message("bob", "1"),
            message("bob", "2"),
            message("bob", "3"),
            message("bob", "4"),
            message("bob", "5"),
            ServerFrame::Ping,
        ]);
        // The reader handles frames in order: a PONG means all five
        // messages went through the queue.
        conn.expect(ClientFrame::Pong);
    });
    // The script then hangs up: no reconnect, whose notice would take a
    // place in the queue.
    let client = Client::builder("alice")
        .inbound_capacity(2)
        .reconnect_window(Duration::ZERO)
        .connect(server.addr())
        .unwrap();
    server.finish();
    assert_eq!(client.recv(), Some(msg("bob", "4")));
    assert_eq!(client.recv(), Some(msg("bob", "5")));
    let stats = client.stats();
    assert_eq!((stats.received, stats.dropped_inbound), (5, 3));
}

#[test]
fn latest_per_sender_replaces_in_place_and_requeues_after_a_take() {
    let server = Script::start(|conn| {
        conn.welcome(&["alice", "bob"], &[]);
        conn.send(&[
            message("bob", "b1"),
            ServerFrame::Joined("carol".into()),
            message("carol", "c1"),
            message("bob", "b2"),
            message("carol", "c2"),
            ServerFrame::Left("carol".into(), CloseReason::Timeout),
            // carol's next session: queued after her LEFT and JOINED.
            ServerFrame::Joined("carol".into()),
            message("carol", "c3"),
            message("bob", "b3"),
            message("carol", "c4"),
            // The client waits for dave in its member list: frames are
            // handled in order, so everything above is queued by then.
            ServerFrame::Joined("dave".into()),
        ]);
        conn.expect(data("more"));
        conn.send(&[message("bob", "b4"), message("carol", "c5")]);
        conn.expect(goodbye());
        conn.expect_eof();
    });
    let client = Client::builder("alice")
        .receive_mode(ReceiveMode::LatestPerSender)
        .connect(server.addr())
        .unwrap();
    // A reader that does not read: wait (bounded) until every frame is in.
    let deadline = std::time::Instant::now() + PATIENCE;
    while !client.members().contains(&"dave".to_string()) {
        assert!(std::time::Instant::now() < deadline, "{:?}", client.stats());
        std::thread::sleep(Duration::from_millis(1));
    }
    let left = Event::Left {
        name: "carol".into(),
        reason: CloseReason::Timeout,
    };
    assert_eq!(
        client.recv_event_timeout(PATIENCE),
        Ok(Event::Message(msg("bob", "b3")))
    );
    assert_eq!(client.recv_event(), Some(Event::Joined("carol".into())));
    assert_eq!(
        client.recv_event(),
        Some(Event::Message(msg("carol", "c2")))
    );
    assert_eq!(client.recv_event(), Some(left));
    assert_eq!(client.recv_event(), Some(Event::Joined("carol".into())));
    // recv() takes carol's newest message.
    assert_eq!(client.recv(), Some(msg("carol", "c4")));
    assert_eq!(client.recv_event(), Some(Event::Joined("dave".into())));
    assert_eq!(client.recv_event(), None);
    let stats = client.stats();
    // b1, b2 replaced by b3; c1 by c2; c3 by c4.
    assert_eq!(
        (stats.received, stats.recv_conflated, stats.dropped_inbound),
        (7, 4, 0)
    );
    // Once taken, a sender's next message queues afresh.
    client.send("more").unwrap();
    assert_eq!(client.recv_timeout(PATIENCE), Ok(msg("bob", "b4")));
    assert_eq!(client.recv_timeout(PATIENCE), Ok(msg("carol", "c5")));
    drop(client);
    server.finish();
}

/// Messages per sender in the pause scenario.
const K: usize = 50;

fn message_owned(sender: &str, payload: String) -> ServerFrame {
    ServerFrame::Message {
        sender: sender.into(),
        payload: payload.into(),
    }
}

fn event_message(sender: &str, payload: String) -> Event {
    Event::Message(Message {
        sender: sender.into(),
        payload: payload.into(),
    })
}

/// While the client does not read: four senders send `K` messages each, a
/// visitor comes, sends and goes, `s1` drops out and rejoins, `s1` and `s2`
/// send `K` more each; then `sentinel` joins, the last frame. Sent in many
/// small writes, as a server's batches would be.
fn pause_script(conn: &mut fake_server::Conn) {
    conn.welcome(&["alice", "s0", "s1", "s2", "s3"], &[]);
    let mut frames = Vec::new();
    for k in 0..K {
        for s in ["s0", "s1", "s2", "s3"] {
            frames.push(message_owned(s, format!("{s}:{k}")));
        }
    }
    frames.push(ServerFrame::Joined("visitor".into()));
    frames.extend((0..K).map(|k| message_owned("visitor", format!("visitor:{k}"))));
    frames.push(ServerFrame::Left("visitor".into(), CloseReason::Normal));
    frames.push(ServerFrame::Left("s1".into(), CloseReason::Timeout));
    frames.push(ServerFrame::Joined("s1".into()));
    for k in 0..K {
        frames.push(message_owned("s1", format!("s1-again:{k}")));
        frames.push(message_owned("s2", format!("s2-again:{k}")));
    }
    frames.push(ServerFrame::Joined("sentinel".into()));
    for batch in frames.chunks(7) {
        conn.send(batch);
    }
    conn.expect(goodbye());
    conn.expect_eof();
}

/// What a latest-per-sender client holds after [`pause_script`]: one
/// message per sender (per stay in the room), its newest, and every
/// presence event, in order. `s2` never left, so its newest message sits in
/// its first message's place.
fn pause_expected() -> Vec<Event> {
    let last = K - 1;
    vec![
        event_message("s0", format!("s0:{last}")),
        event_message("s1", format!("s1:{last}")),
        event_message("s2", format!("s2-again:{last}")),
        event_message("s3", format!("s3:{last}")),
        Event::Joined("visitor".into()),
        event_message("visitor", format!("visitor:{last}")),
        Event::Left {
            name: "visitor".into(),
            reason: CloseReason::Normal,
        },
        Event::Left {
            name: "s1".into(),
            reason: CloseReason::Timeout,
        },
        Event::Joined("s1".into()),
        event_message("s1", format!("s1-again:{last}")),
        Event::Joined("sentinel".into()),
    ]
}

/// Connects in latest-per-sender mode to [`pause_script`] and, without
/// reading, waits until every frame is in: the last one is `sentinel`'s
/// JOINED, and the reader puts it in the member list only after queueing
/// everything before it.
fn pause(server: &Script) -> Client {
    let client = Client::builder("alice")
        .receive_mode(ReceiveMode::LatestPerSender)
        .connect(server.addr())
        .unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while !client.members().iter().any(|m| m == "sentinel") {
        assert!(std::time::Instant::now() < deadline, "{:?}", client.stats());
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = client.stats();
    let (received, kept) = (7 * K as u64, 6);
    assert_eq!(
        (stats.received, stats.recv_conflated, stats.dropped_inbound),
        (received, received - kept, 0)
    );
    client
}

#[test]
fn latest_per_sender_reader_that_pauses_gets_each_senders_newest_and_every_presence_event() {
    let server = Script::start(pause_script);
    let client = pause(&server);
    let events: Vec<Event> = std::iter::from_fn(|| client.recv_event()).collect();
    assert_eq!(events, pause_expected());
    drop(client);
    server.finish();
}

#[test]
fn latest_per_sender_recv_takes_each_senders_newest_in_order() {
    let server = Script::start(pause_script);
    let client = pause(&server);
    let messages: Vec<Event> = std::iter::from_fn(|| client.recv().map(Event::Message)).collect();
    let expected: Vec<Event> = pause_expected()
        .into_iter()
        .filter(|e| matches!(e, Event::Message(_)))
        .collect();
    assert_eq!(messages, expected);
    assert_eq!(client.recv_event(), None);
    drop(client);
    server.finish();
}

#[test]
fn queue_mode_is_the_default_and_keeps_every_message() {
    let server = Script::start(|conn| {
        conn.welcome(&["alice"], &[]);
        conn.send(&[message("bob", "1"), message("bob", "2")]);
        conn.expect(goodbye());
        conn.expect_eof();
    });
    let client = Client::connect(server.addr(), "alice").unwrap();
    assert_eq!(client.recv_timeout(PATIENCE), Ok(msg("bob", "1")));
    assert_eq!(client.recv_timeout(PATIENCE), Ok(msg("bob", "2")));
    assert_eq!(client.stats().recv_conflated, 0);
    drop(client);
    server.finish();
}

#[test]
fn client_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Client>();
}
