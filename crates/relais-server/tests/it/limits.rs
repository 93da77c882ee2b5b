//! Limits a stranger on the internet meets: the memory budget, the
//! per-address limits, refusals that cost the server nothing, and room state
//! larger than one recipient's cap. Each was a defect found by trying it.

use std::time::Duration;

use relais_protocol::{ClientFrame, RefuseReason, ServerFrame, MAX_PAYLOAD};
use relais_server::Config;
use tokio::time::Instant;

use crate::support::{hello_frame, unlimited, Raw, TestServer};

/// This process's resident memory, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// 120 members each store a 64 KiB update; then 800 clients join and never
/// read. Before: each joiner's writer copied the whole 7.5 MiB snapshot into
/// a private buffer (6 GiB in all). Now the snapshot is pulled in chunks as
/// each connection takes it, and everything counts against the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_reading_joiners_stay_within_the_memory_budget() {
    let _ = rlimit::increase_nofile_limit(8192);
    // Non-readers are held for the whole write deadline: make it outlast
    // the test, the worst case for memory.
    let s = TestServer::with_config(Config {
        write_deadline: Duration::from_secs(120),
        ..unlimited()
    })
    .await;
    let budget = s.server.config().max_memory_bytes;
    // A witness that reads everything: when it has all 120 updates, the
    // room's state is complete.
    let (mut witness, _) = s.join("arena", "witness").await;
    let mut senders = Vec::new();
    for i in 0..120 {
        let (mut c, _) = s.join("arena", &format!("s{i}")).await;
        c.data(vec![i as u8; MAX_PAYLOAD]).await;
        // Senders read what they get (they are players, not the test).
        senders.push(tokio::spawn(async move { c.until_closed().await }));
    }
    let mut stored = std::collections::HashSet::new();
    while stored.len() < 120 {
        match witness.next().await {
            Some(ServerFrame::Message { sender, .. }) => {
                stored.insert(sender);
            }
            Some(_) => {}
            None => panic!("the witness was dropped"),
        }
    }
    let before = rss();

    let mut joiners = Vec::new();
    for i in 0..800 {
        let mut c = Raw::connect(s.addr, Some(4096)).await;
        c.send(hello_frame(&format!("j{i}"), "arena", false, None))
            .await;
        // Admitted (it reads its WELCOME, and nothing after).
        match c.next().await {
            Some(ServerFrame::Welcome(_)) => {}
            other => panic!("joiner {i}: expected WELCOME, got {other:?}"),
        }
        joiners.push(c);
    }
    let ctx = s.server.context();
    // Watch while the writers push what the connections take, until what
    // is charged has settled (unchanged for half a second).
    let mut peak_rss = rss();
    let mut most_members = 0;
    let (mut last, mut steady) = (usize::MAX, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while steady < 10 {
        assert!(Instant::now() < deadline, "the writers settle");
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak_rss = peak_rss.max(rss());
        most_members = most_members.max(ctx.relay.member_count());
        let used = ctx.budget.used();
        steady = if used == last { steady + 1 } else { 0 };
        last = used;
    }
    eprintln!(
        "members {most_members}, charged peak {} MiB, rss +{} MiB",
        ctx.budget.peak() >> 20,
        peak_rss.saturating_sub(before) >> 20
    );
    assert_eq!(most_members, 921, "all held at once");
    assert!(
        ctx.budget.peak() <= budget,
        "charged {} of {budget}",
        ctx.budget.peak()
    );
    let grew = peak_rss.saturating_sub(before);
    assert!(grew < 256 * 1024 * 1024, "grew by {} MiB", grew >> 20);
    // Those who read are still served.
    let (mut late, _) = s.join("arena", "late").await;
    late.data(&b"still here"[..]).await;
    loop {
        match witness.next().await {
            Some(ServerFrame::Message { sender, payload })
                if sender == "late" && &payload[..] == b"still here" =>
            {
                break
            }
            Some(_) => {}
            None => panic!("the witness was dropped"),
        }
    }
    drop(joiners);
    for t in senders {
        t.abort();
    }
}

/// 130 members × 64 KiB of stored state is more than one recipient's
/// `max_pending_bytes` (8 MiB). Before, every newcomer was dropped as a slow
/// consumer before its WELCOME; now it reads the whole snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_state_larger_than_a_recipients_cap_does_not_lock_readers_out() {
    let s = TestServer::start().await;
    assert!(130 * MAX_PAYLOAD > s.server.config().max_pending_bytes);
    let (mut witness, _) = s.join("big", "witness").await;
    let mut members = Vec::new();
    for i in 0..130 {
        let (mut c, _) = s.join("big", &format!("m{i}")).await;
        c.data(vec![1; MAX_PAYLOAD]).await;
        members.push(tokio::spawn(async move { c.until_closed().await }));
    }
    let mut stored = 0;
    while stored < 130 {
        match witness.next().await {
            Some(ServerFrame::Message { .. }) => stored += 1,
            Some(_) => {}
            None => panic!("the witness was dropped"),
        }
    }

    let (mut reader, welcome) = s.join("big", "reader").await;
    assert_eq!(welcome.members.len(), 132);
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 130 {
        let (from, payload) = reader.message().await;
        assert_eq!(payload.len(), MAX_PAYLOAD);
        assert!(seen.insert(from), "each member's state once");
    }
    assert_eq!(s.server.relay().member_count(), 132, "nobody dropped");
}

/// Joins room "r" as `name`, retrying (for at most 5 s) while the address
/// is refused "too many connections": the server frees a slot just after a
/// client goes.
async fn join_when_free(s: &TestServer, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = s.raw().await;
        match c.hello(name, "r", true).await {
            Ok(_) => break,
            Err((RefuseReason::TooManyConnections, _)) if Instant::now() < deadline => {}
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// A server with the given per-address limits (everything else lifted).
async fn server_with(f: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = unlimited();
    f(&mut config);
    TestServer::with_config(config).await
}

#[tokio::test]
async fn connections_per_address_stop_at_the_limit_and_are_refused_at_once() {
    let s = server_with(|c| c.max_connections_per_ip = 5).await;
    let mut held = Vec::new();
    for i in 0..5 {
        let (c, _) = s.join("r", &format!("p{i}")).await;
        held.push(c);
    }
    // The sixth is told why before it says anything, and closed promptly.
    let mut sixth = s.raw().await;
    let start = Instant::now();
    match sixth.next().await {
        Some(ServerFrame::Refused(RefuseReason::TooManyConnections, _)) => {}
        other => panic!("expected REFUSED too many connections, got {other:?}"),
    }
    assert_eq!(sixth.until_closed().await, None);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // One leaves: one more gets in.
    drop(held.pop());
    join_when_free(&s, "again").await;
}

#[tokio::test]
async fn handshakes_in_progress_per_address_stop_at_the_limit() {
    let s = server_with(|c| c.max_handshakes_per_ip = 3).await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(s.raw().await);
    }
    let mut fourth = s.raw().await;
    match fourth.next().await {
        Some(ServerFrame::Refused(RefuseReason::TooManyConnections, _)) => {}
        other => panic!("expected REFUSED too many connections, got {other:?}"),
    }
    // One finishes its handshake: its slot frees up for a newcomer.
    silent[0].hello("done", "r", true).await.unwrap();
    join_when_free(&s, "next").await;
}

/// One client joining and closing in a loop: before, 11,742 cycles in 2 s,
/// and a member that did not read piled up 23,468 presence frames.
#[tokio::test]
async fn join_leave_churn_is_limited_per_address() {
    let s = server_with(|c| {
        c.max_joins_per_ip = 10;
        c.join_burst_per_ip = 30;
    })
    .await;
    let (_watcher, _) = s.join("r", "watcher").await;
    let start = Instant::now();
    let (mut joined, mut refused) = (0u32, 0u32);
    while start.elapsed() < Duration::from_secs(2) {
        let mut c = s.raw().await;
        match c.hello("churn", "r", true).await {
            Ok(_) => joined += 1,
            Err((RefuseReason::TooManyJoins, _)) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
        // Wait for the server to finish the departure, so the name is free.
        c.send(ClientFrame::Goodbye(
            relais_protocol::CloseReason::Normal,
            String::new(),
        ))
        .await;
        c.until_closed().await;
    }
    // The watcher's join took one token; 2 s refill about 20 more.
    let elapsed = start.elapsed().as_secs_f64();
    let allowed = 30 + (10.0 * elapsed).ceil() as u32;
    assert!(joined <= allowed, "{joined} joins in {elapsed:.1} s");
    assert!(refused > 0, "the limit was reached");
}

#[tokio::test]
async fn a_full_server_refuses_at_once_without_waiting_for_hello() {
    let s = server_with(|c| c.max_connections = 2).await;
    let _a = s.join("r", "a").await;
    let _b = s.join("r", "b").await;
    let start = Instant::now();
    let mut refused = Vec::new();
    for _ in 0..50 {
        refused.push(s.raw().await);
    }
    for c in &mut refused {
        match c.next().await {
            Some(ServerFrame::Refused(RefuseReason::ServerFull, _)) => {}
            other => panic!("expected REFUSED server full, got {other:?}"),
        }
        assert_eq!(c.until_closed().await, None);
    }
    // Refusals hold nothing for seconds (before: 5 s each, waiting for HELLO).
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(s.server.connection_count(), 2);
}

#[tokio::test]
async fn past_the_memory_budget_new_connections_are_refused_overloaded() {
    // 1 MiB: admission stops at 7/8, 28 connections of 32 KiB.
    let s = server_with(|c| c.max_memory_bytes = 1024 * 1024).await;
    let mut held = Vec::new();
    let refusal = loop {
        let mut c = s.raw().await;
        match c.hello(&format!("p{}", held.len()), "r", false).await {
            Ok(_) => held.push(c),
            Err(refusal) => break refusal,
        }
        assert!(held.len() < 100, "the budget never refused");
    };
    assert_eq!(refusal.0, RefuseReason::Overloaded);
    let ctx = s.server.context();
    assert!(ctx.budget.peak() <= ctx.budget.limit());
    // Those in are still served.
    held[0].data(&b"hi"[..]).await;
    loop {
        match held[1].next().await {
            Some(ServerFrame::Message { sender, .. }) => break assert_eq!(sender, "p0"),
            Some(_) => {}
            None => panic!("dropped"),
        }
    }
}

/// Everything charged is given back: after a busy room empties (messages,
/// snapshots, presence, a room list, a refusal), the budget is back to zero.
#[tokio::test]
async fn the_budget_is_back_to_zero_when_everyone_has_gone() {
    let s = server_with(|c| c.max_connections = 12).await;
    let mut clients = Vec::new();
    for i in 0..10 {
        let (mut c, _) = s.join("r", &format!("p{i}")).await;
        c.data(vec![i as u8; 1000]).await;
        clients.push(c);
    }
    let (_late, _) = s.join("r", "late").await; // gets a snapshot
    let mut lister = s.raw().await;
    lister.send(ClientFrame::ListRooms).await;
    assert!(matches!(
        lister.next().await,
        Some(ServerFrame::RoomList { .. })
    ));
    let mut refused = s.raw().await; // the 13th connection
    assert!(matches!(
        refused.next().await,
        Some(ServerFrame::Refused(RefuseReason::ServerFull, _))
    ));
    drop((clients, _late, lister, refused));
    let ctx = s.server.context();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.server.connection_count() > 0 {
        assert!(Instant::now() < deadline, "connections end in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ctx.budget.peak() > 10 * 1000, "things were charged");
    assert_eq!(ctx.budget.used(), 0, "and all given back");
}
