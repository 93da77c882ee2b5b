//! Rooms, presence events and the late-joiner snapshot.

use bytes::Bytes;
use relais_protocol::{ClientFrame, CloseReason, RefuseReason, RoomInfo, ServerFrame};

use crate::support::*;

#[tokio::test]
async fn rooms_with_the_same_names_never_mix() {
    let s = TestServer::start().await;
    let (mut a1, _) = s.join("one", "a").await;
    let (mut b1, _) = s.join("one", "b").await;
    let (mut a2, _) = s.join("two", "a").await;
    let (mut b2, w) = s.join("two", "b").await;
    assert_eq!(w.members, ["a", "b"], "only room two's members");
    assert_eq!(a1.next().await, Some(ServerFrame::Joined("b".into())));
    assert_eq!(a2.next().await, Some(ServerFrame::Joined("b".into())));

    a1.data("in one").await;
    a2.data("in two").await;
    assert_eq!(b1.message().await, ("a".into(), Bytes::from("in one")));
    assert_eq!(b2.message().await, ("a".into(), Bytes::from("in two")));
    // Nothing else crossed over: a ping round trip shows nothing is queued.
    for c in [&mut b1, &mut b2] {
        c.send(ClientFrame::Ping).await;
        assert_eq!(c.next().await, Some(ServerFrame::Pong));
    }
    s.stop().await;
}

#[tokio::test]
async fn presence_events_keep_their_order_with_messages() {
    let s = TestServer::start().await;
    let (mut w, _) = s.join("r", "watcher").await;

    // Clean leave: the last message, then LEFT(normal).
    let (mut a, _) = s.join("r", "a").await;
    a.data("a's last").await;
    a.send(ClientFrame::Goodbye(CloseReason::Normal, String::new()))
        .await;
    // a is gone (the server answered its goodbye) before b arrives.
    a.until_closed().await;
    // Abrupt close: LEFT(connection lost).
    let (mut b, _) = s.join("r", "b").await;
    b.data("b's last").await;
    // Make sure b's data was relayed before the socket goes.
    b.send(ClientFrame::Ping).await;
    while b.next().await != Some(ServerFrame::Pong) {}
    b.drop_abruptly();

    let expected = [
        ServerFrame::Joined("a".into()),
        ServerFrame::Message {
            sender: "a".into(),
            payload: Bytes::from("a's last"),
        },
        ServerFrame::Left("a".into(), CloseReason::Normal),
        ServerFrame::Joined("b".into()),
        ServerFrame::Message {
            sender: "b".into(),
            payload: Bytes::from("b's last"),
        },
        ServerFrame::Left("b".into(), CloseReason::ConnectionLost),
    ];
    for e in expected {
        assert_eq!(w.next().await, Some(e));
    }
    s.stop().await;
}

#[tokio::test]
async fn late_joiner_gets_latest_of_each_present_member_before_live_traffic() {
    let s = TestServer::start().await;
    let (mut a, _) = s.join("r", "a").await;
    let (mut b, _) = s.join("r", "b").await;
    let (mut gone, _) = s.join("r", "gone").await;
    for i in 0..10 {
        a.data(format!("a{i}")).await;
        b.data(format!("b{i}")).await;
        gone.data(format!("gone{i}")).await;
    }
    gone.send(ClientFrame::Goodbye(CloseReason::Normal, String::new()))
        .await;
    gone.until_closed().await;
    // a's and b's last data are relayed once their pings are answered (the
    // server handles a connection's frames in order).
    for c in [&mut a, &mut b] {
        c.send(ClientFrame::Ping).await;
        while c.next().await != Some(ServerFrame::Pong) {}
    }

    let (mut late, w) = s.join("r", "late").await;
    assert_eq!(w.members, ["a", "b", "late"]);
    let mut snapshot = vec![late.message().await, late.message().await];
    snapshot.sort();
    assert_eq!(
        snapshot,
        [
            ("a".into(), Bytes::from("a9")),
            ("b".into(), Bytes::from("b9"))
        ]
    );
    a.data("live").await;
    assert_eq!(late.message().await, ("a".into(), Bytes::from("live")));
    s.stop().await;
}

#[tokio::test]
async fn room_listing_counts_members() {
    let s = TestServer::start().await;
    let (_a, _) = s.join("alpha", "a").await;
    let (_b, _) = s.join("alpha", "b").await;
    let (_c, _) = s.join("beta", "c").await;
    let mut admin = s.raw().await;
    admin.send(ClientFrame::ListRooms).await;
    assert_eq!(
        admin.next().await,
        Some(ServerFrame::RoomList {
            rooms: vec![
                RoomInfo {
                    name: "alpha".into(),
                    members: 2
                },
                RoomInfo {
                    name: "beta".into(),
                    members: 1
                }
            ],
            more: false
        })
    );
    assert_eq!(admin.next().await, None);
    s.stop().await;
}

/// Names that look alike are one player: before, `alice`, `alice` + U+200B,
/// Cyrillic `аlice` and composed/decomposed `é` were four different members,
/// and a name of invisible characters read the room while showing blank.
#[tokio::test]
async fn look_alike_names_are_one_name_and_invisible_ones_are_refused() {
    let s = TestServer::start().await;
    let (_alice, _) = s.join("r", "alice").await;
    for (look_alike, expected) in [
        ("Alice", RefuseReason::NameTaken),
        ("\u{0430}lice", RefuseReason::NameTaken), // Cyrillic а
        ("alice\u{200B}", RefuseReason::InvalidName),
        ("\u{200B}\u{200B}", RefuseReason::InvalidName),
        ("al\u{202E}ice", RefuseReason::InvalidName),
        (" alice", RefuseReason::InvalidName),
    ] {
        let mut c = s.raw().await;
        let refused = c.hello(look_alike, "r", true).await.unwrap_err();
        assert_eq!(refused.0, expected, "{look_alike:?}: {}", refused.1);
    }
    // The decomposed form registers as the composed one, which it then is.
    let (_e, welcome) = s.join("r", "e\u{301}lodie").await;
    assert!(welcome.members.contains(&"\u{e9}lodie".to_string()));
    let mut again = s.raw().await;
    let refused = again.hello("\u{e9}lodie", "r", true).await.unwrap_err();
    assert_eq!(refused.0, RefuseReason::NameTaken);
    // Rooms are compared in NFC too: the same room either way.
    let (_x, w1) = s.join("caf\u{e9}", "x").await;
    let (_y, w2) = s.join("cafe\u{301}", "y").await;
    assert_eq!(w1.room, w2.room);
    assert_eq!(w2.members, ["x", "y"]);
    assert_eq!(s.server.relay().member_count(), 4);
}
