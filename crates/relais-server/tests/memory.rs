//! Memory stays bounded: its own test binary (a process of its own), with its
//! tests one at a time, so nothing else moves the resident size it measures.

#[path = "it/support.rs"]
#[allow(dead_code)] // shared with the `it` binary, which uses all of it
mod support;

use relais_protocol::{ClientFrame, CloseReason, ServerFrame};
use support::*;

/// Tests here measure the whole process: one at a time.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_vanish_with_their_last_member_and_memory_returns() {
    let _alone = ALONE.lock().await;
    let s = TestServer::start().await;
    let cycle = |round: usize| {
        let addr = s.addr;
        async move {
            // 10,000 connect → join → send → leave cycles over 1,000 rooms.
            let tasks: Vec<_> = (0..50)
                .map(|t| {
                    tokio::spawn(async move {
                        for i in 0..200 {
                            let n = t * 200 + i;
                            let mut c = Raw::connect(addr, None).await;
                            c.hello(&format!("p{n}"), &format!("room{}", n % 1000), false)
                                .await
                                .unwrap();
                            c.data(vec![round as u8; 256]).await;
                            c.send(ClientFrame::Goodbye(CloseReason::Normal, String::new()))
                                .await;
                            c.until_closed().await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    cycle(0).await; // warm-up: allocator pools, task slabs
    let baseline = resident_bytes();
    cycle(1).await;
    assert_eq!(s.server.relay().room_count(), 0);
    assert_eq!(s.server.relay().member_count(), 0);
    let after = resident_bytes();
    assert!(
        after < baseline + 4 * 1024 * 1024,
        "memory grew from {baseline} to {after} bytes over 10,000 cycles"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcing_4_gib_frames_costs_nothing() {
    let _alone = ALONE.lock().await;
    let s = TestServer::start().await;
    // Warm up the paths a connection takes, before and after a join: the
    // first run of code pages it in, and the resident size counts those
    // pages of the executable too.
    for i in 0..10 {
        let mut c = s.raw().await;
        if i % 2 == 1 {
            c.hello(&format!("warm{i}"), "", true).await.unwrap();
        }
        c.send_raw(&[0xff, 0xff, 0xff, 0xff]).await;
        c.until_closed().await;
    }
    let baseline = resident_bytes();
    // Before and after the handshake, 100 connections each announce a
    // 4 GiB frame and then stall.
    let mut stalled = Vec::new();
    for i in 0..100 {
        let mut c = s.raw().await;
        if i % 2 == 1 {
            c.hello(&format!("big{i}"), "", true).await.unwrap();
        }
        c.send_raw(&[0xff, 0xff, 0xff, 0xff]).await;
        stalled.push(c);
    }
    for c in &mut stalled {
        let last = c.until_closed().await;
        assert!(
            matches!(
                last,
                Some(ServerFrame::Goodbye(CloseReason::ProtocolError, _))
            ),
            "{last:?}"
        );
    }
    let after = resident_bytes();
    assert!(
        after < baseline + 1024 * 1024,
        "memory grew from {baseline} to {after} bytes"
    );
    assert_eq!(s.server.relay().member_count(), 0);
    s.stop().await;
}
