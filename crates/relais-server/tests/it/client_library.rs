//! The `relais` client library against the real server.

use std::time::Duration;

use relais::{Client, CloseReason, ConnectError, Disconnect, Event, RefuseReason};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(10);

/// Runs blocking client code off the async test runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

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
    let client = blocking(move || Client::connect(addr, "carol").unwrap()).await;
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
