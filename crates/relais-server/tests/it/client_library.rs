//! The `relais` client library against the real server.

use std::time::Duration;

use relais::{
    Client, CloseReason, ConnectError, Disconnect, Event, Message, ReceiveMode, RefuseReason,
};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_library_clients_talk_and_see_each_other() {
    let s = TestServer::start().await;
    let addr = s.addr;
    blocking(move || {
        let alice = Client::builder("alice").room("game").connect(addr).unwrap();
        let bob = Client::builder("bob")
            .room("game")
            .echo(false)
            .connect(addr)
            .unwrap();
        assert_eq!(bob.members(), ["alice", "bob"]);
        assert_eq!(
            alice.recv_event_timeout(WAIT).unwrap(),
            Event::Joined("bob".into())
        );
        alice.send("pos 1,2").unwrap();
        let m = bob.recv_timeout(WAIT).unwrap();
        assert_eq!(
            (m.sender.as_str(), &m.payload[..]),
            ("alice", &b"pos 1,2"[..])
        );
        // Echo on for alice: she gets her own message back.
        assert_eq!(alice.recv_timeout(WAIT).unwrap().sender, "alice");

        // A duplicate name is a typed refusal; alice is untouched.
        match Client::builder("alice").room("game").connect(addr) {
            Err(ConnectError::Refused { reason, .. }) => {
                assert_eq!(reason, RefuseReason::NameTaken)
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        bob.send("still there?").unwrap();
        assert_eq!(alice.recv_timeout(WAIT).unwrap().payload, "still there?");

        bob.close();
        assert_eq!(
            alice.recv_event_timeout(WAIT).unwrap(),
            Event::Left {
                name: "bob".into(),
                reason: CloseReason::Normal
            }
        );
        assert_eq!(alice.members(), ["alice"]);
        // The name is free again.
        let _bob2 = Client::builder("bob").room("game").connect(addr).unwrap();
        let rooms = relais::list_rooms(addr).unwrap();
        assert_eq!(
            rooms,
            [relais::RoomInfo {
                name: "game".into(),
                members: 2
            }]
        );
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_reaches_the_library_as_a_typed_reason() {
    let s = TestServer::start().await;
    let addr = s.addr;
    let client = blocking(move || {
        Client::builder("carol")
            .reconnect_window(Duration::ZERO)
            .connect(addr)
            .unwrap()
    })
    .await;
    s.stop().await;
    blocking(move || {
        assert!(client.recv_blocking().is_err());
        assert_eq!(
            client.status(),
            Some(Disconnect::Goodbye {
                reason: CloseReason::ServerShutdown,
                message: String::new()
            })
        );
    })
    .await;
}

/// Waits until `done()` holds, failing after [`PATIENCE`].
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sends `count` payloads `prefix:0`, `prefix:1`, ... one at a time, each
/// after the server has echoed the previous one back (so the receivers get
/// them one by one rather than conflated by the server). Returns the last.
fn send_paced(client: &Client, prefix: &str, count: usize) -> String {
    let mut last = String::new();
    for i in 0..count {
        last = format!("{prefix}:{i}");
        client.send(last.clone()).unwrap();
        loop {
            let m = client.recv_timeout(PATIENCE).expect("my own echo");
            if m.sender == client.name() && m.payload == last.as_bytes() {
                break;
            }
        }
    }
    last
}

fn message(sender: &str, payload: &str) -> Event {
    Event::Message(Message {
        sender: sender.into(),
        payload: payload.to_owned().into(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn latest_per_sender_reader_that_pauses_gets_each_senders_newest_and_all_presence() {
    let server = TestServer::with_config(unlimited()).await;
    let addr = server.addr;
    blocking(move || latest_per_sender_pause(addr)).await;
    server.stop().await;
}

/// A receiver in `ReceiveMode::LatestPerSender` stops reading while others
/// send, join and leave; nothing here sleeps to synchronise: each step waits
/// (bounded) for a condition that proves the previous one happened.
fn latest_per_sender_pause(addr: std::net::SocketAddr) {
    const SENDERS: usize = 4;
    const PER_SENDER: usize = 40;
    let join = |room: &str, name: &str| Client::builder(name).room(room).connect(addr).unwrap();
    let room = "latest";
    let watch = |name: &str| {
        Client::builder(name)
            .room(room)
            .echo(false)
            .receive_mode(ReceiveMode::LatestPerSender)
            .connect(addr)
            .unwrap()
    };
    // Two receivers that read nothing until the end: one will take events,
    // the other messages only.
    let events = watch("events");
    let messages = watch("messages");
    let both_see = |name: &str, present: bool| {
        wait_until(
            &format!("the receivers see {name} present={present}"),
            || {
                [&events, &messages]
                    .iter()
                    .all(|c| c.members().iter().any(|m| m == name) == present)
            },
        )
    };
    both_see("messages", true);

    let mut expected = vec![Event::Joined("messages".into())];
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        let name = format!("s{i}");
        senders.push(join(room, &name));
        both_see(&name, true);
        expected.push(Event::Joined(name));
    }
    for sender in &senders {
        let last = send_paced(sender, sender.name(), PER_SENDER);
        expected.push(message(sender.name(), &last));
    }
    // A visit during the pause.
    let visitor = join(room, "visitor");
    both_see("visitor", true);
    visitor.close();
    both_see("visitor", false);
    expected.push(Event::Joined("visitor".into()));
    expected.push(Event::Left {
        name: "visitor".into(),
        reason: CloseReason::Normal,
    });
    // s1 leaves and comes back: its new messages queue after its LEFT and
    // JOINED, while its message from before stays before them.
    senders.remove(1).close();
    both_see("s1", false);
    let s1 = join(room, "s1");
    both_see("s1", true);
    let last = send_paced(&s1, "s1-again", PER_SENDER);
    expected.push(Event::Left {
        name: "s1".into(),
        reason: CloseReason::Normal,
    });
    expected.push(Event::Joined("s1".into()));
    expected.push(message("s1", &last));
    // The last frame the receivers get; once it is in their member lists,
    // everything before it is in their queues.
    let _sentinel = join(room, "sentinel");
    both_see("sentinel", true);
    expected.push(Event::Joined("sentinel".into()));

    // The pause ends: at most one message per sender (per stay in the room),
    // each its newest, and every presence event, in order.
    let got: Vec<Event> = std::iter::from_fn(|| events.recv_event()).collect();
    assert_eq!(got, expected);
    let got: Vec<Event> = std::iter::from_fn(|| messages.recv().map(Event::Message)).collect();
    let expected_messages: Vec<Event> = expected
        .iter()
        .filter(|e| matches!(e, Event::Message(_)))
        .cloned()
        .collect();
    assert_eq!(got, expected_messages);

    for client in [&events, &messages] {
        let stats = client.stats();
        let taken = expected_messages.len() as u64;
        assert_eq!(stats.dropped_inbound, 0, "{stats:?}");
        // Every message received and not taken was replaced by a newer one.
        assert_eq!(stats.received, taken + stats.recv_conflated, "{stats:?}");
        assert!(stats.recv_conflated > 0, "{stats:?}");
        assert!(stats.received <= (SENDERS + 1) as u64 * PER_SENDER as u64);
    }
}
