//! Timeouts, keepalive and the rate policy, deterministically: sessions run
//! over in-memory pipes under a paused clock, so "ten seconds" takes none.

use std::time::Duration;

use relais_protocol::{ClientFrame, CloseReason, ServerFrame};
use relais_server::Config;
use tokio::io::DuplexStream;
use tokio::time::Instant;

use crate::support::*;

/// Reads frames, answering pings, until `stop` accepts one; returns it.
async fn until(
    c: &mut Raw<DuplexStream>,
    mut stop: impl FnMut(&ServerFrame) -> bool,
) -> ServerFrame {
    loop {
        match c.next_within(Duration::from_secs(600)).await {
            Some(ServerFrame::Ping) => c.send(ClientFrame::Pong).await,
            Some(f) if stop(&f) => return f,
            Some(_) => {}
            None => panic!("connection closed"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn idle_and_trickling_handshakes_are_closed_in_time() {
    let sim = Sim::new(Config::default());
    let start = Instant::now();
    let mut clients = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..1000 {
        let (c, s) = sim.connect();
        clients.push(c);
        sessions.push(s);
    }
    let mut tricklers = Vec::new();
    for i in 0..1000 {
        let (mut c, s) = sim.connect();
        sessions.push(s);
        tricklers.push(tokio::spawn(async move {
            let hello = hello_frame(&format!("slow{i}"), "", true, None).to_bytes();
            for byte in hello.iter() {
                if !c.try_send_raw(&[*byte]).await {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            c
        }));
    }
    // A normal client is served meanwhile.
    let mut normal = sim.join("normal", true).await;
    normal.data("hello").await;
    assert_eq!(normal.message().await.1, "hello");

    for s in sessions {
        s.await.unwrap();
    }
    let took = start.elapsed();
    assert!(
        took <= sim.config.handshake_timeout + Duration::from_secs(1),
        "the last pending handshake ended after {took:?}"
    );
    assert_eq!(sim.relay.member_count(), 1, "none reached the registry");
    for mut c in clients {
        assert!(matches!(
            c.until_closed().await,
            Some(ServerFrame::Goodbye(CloseReason::Timeout, _))
        ));
    }
    for t in tricklers {
        t.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_dropped_within_the_keepalive_window() {
    let sim = Sim::new(Config::default());
    let mut watcher = sim.join("watcher", true).await;
    let (mut silent, session) = sim.connect();
    silent.hello("silent", "", true).await.unwrap();
    let start = Instant::now();
    // The watcher answers pings; the silent peer does not.
    let left = until(&mut watcher, |f| matches!(f, ServerFrame::Left(..))).await;
    assert_eq!(
        left,
        ServerFrame::Left("silent".into(), CloseReason::Timeout)
    );
    let took = start.elapsed();
    let window = sim.config.keepalive_interval * 3;
    assert!(
        took >= window && took <= window + Duration::from_secs(1),
        "{took:?}"
    );
    session.await.unwrap();
    assert_eq!(
        silent.until_closed().await,
        Some(ServerFrame::Goodbye(CloseReason::Timeout, String::new()))
    );
    // The name is free; the watcher, who answered, is still there.
    let _again = sim.join("silent", true).await;
    assert_eq!(sim.relay.member_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_flooder_is_conflated_then_dropped_and_nobody_notices() {
    let sim = Sim::new(Config::default());
    let rate = sim.config.max_message_rate;
    let mut watcher = sim.join("watcher", false).await;
    let mut steady = sim.join("steady", false).await;
    let mut flooder = sim.join("flooder", false).await;
    let start = Instant::now();

    // Ten times the rate limit, until the server hangs up.
    let flood = tokio::spawn(async move {
        let interval = Duration::from_secs(1) / (rate * 10);
        let mut seq = 0;
        while flooder.try_data(seq_payload(seq, 16)).await {
            seq += 1;
            tokio::time::sleep(interval).await;
        }
        seq
    });
    // A well-behaved player at 60 Hz for ten seconds.
    let play = tokio::spawn(async move {
        for seq in 0..600 {
            steady.data(seq_payload(seq, 16)).await;
            tokio::time::sleep(Duration::from_secs(1) / 60).await;
        }
        steady
    });

    let mut from_flooder = 0u32;
    let mut steady_seqs = Vec::new();
    let dropped_after = loop {
        match until(&mut watcher, |_| true).await {
            ServerFrame::Message { sender, payload } if sender == "steady" => {
                steady_seqs.push(seq_of(&payload))
            }
            ServerFrame::Message { .. } => from_flooder += 1,
            ServerFrame::Joined(_) => {}
            ServerFrame::Left(name, reason) => {
                assert_eq!((name.as_str(), reason), ("flooder", CloseReason::RateLimit));
                break start.elapsed();
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    let sent = flood.await.unwrap();
    // Dropped once it has sent more than factor × rate × seconds within the
    // window: at ten times the rate, after factor × seconds / 10 seconds.
    let c = &sim.config;
    let expected = Duration::from_secs((c.flood_factor * c.flood_seconds).into()) / 10;
    assert!(
        dropped_after >= expected && dropped_after <= expected + Duration::from_millis(500),
        "dropped after {dropped_after:?}, expected {expected:?}"
    );
    // Excess conflated: at most the burst plus the rate was relayed.
    let allowed = sim.config.message_burst + rate * (dropped_after.as_secs() as u32 + 1);
    assert!(
        from_flooder <= allowed && sent > 4 * allowed,
        "relayed {from_flooder} of {sent}"
    );
    // The steady player lost nothing.
    let _steady = play.await.unwrap();
    loop {
        match until(&mut watcher, |_| true).await {
            ServerFrame::Message { payload, .. } => steady_seqs.push(seq_of(&payload)),
            other => panic!("unexpected {other:?}"),
        }
        if steady_seqs.last() == Some(&599) {
            break;
        }
    }
    assert_eq!(steady_seqs, (0..600).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_client_over_the_rate_is_conflated_and_its_newest_update_arrives() {
    let sim = Sim::new(Config::default());
    let mut watcher = sim.join("watcher", false).await;
    let mut fast = sim.join("fast", false).await;
    // Twice the rate for three seconds: over the limit, not a flood.
    let total = sim.config.max_message_rate * 2 * 3;
    for seq in 0..total {
        fast.data(seq_payload(seq, 16)).await;
        tokio::time::sleep(Duration::from_secs(1) / (sim.config.max_message_rate * 2)).await;
    }
    let mut seqs = Vec::new();
    while seqs.last() != Some(&(total - 1)) {
        match until(&mut watcher, |_| true).await {
            ServerFrame::Message { payload, .. } => seqs.push(seq_of(&payload)),
            ServerFrame::Joined(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert!(
        (seqs.len() as u32) < total,
        "{} of {total} relayed",
        seqs.len()
    );
    assert_eq!(sim.relay.member_count(), 2, "not dropped");
}

#[tokio::test(start_paused = true)]
async fn a_flooder_in_bursts_with_pauses_is_dropped() {
    let sim = Sim::new(Config::default());
    let mut watcher = sim.join("watcher", false).await;
    let mut flooder = sim.join("flooder", false).await;
    // 1,000 messages at once, then a pause, over and over: never five
    // seconds in a row over the rate, but 2,000 a second on average.
    let flood = tokio::spawn(async move {
        let mut sent = 0u32;
        'bursts: for _ in 0..20 {
            for _ in 0..1000 {
                if !flooder.try_data(seq_payload(sent, 16)).await {
                    break 'bursts;
                }
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        sent
    });
    let start = Instant::now();
    let dropped_after = loop {
        match until(&mut watcher, |_| true).await {
            ServerFrame::Left(name, reason) => {
                assert_eq!((name.as_str(), reason), ("flooder", CloseReason::RateLimit));
                break start.elapsed();
            }
            ServerFrame::Message { .. } | ServerFrame::Joined(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    // Before the sliding window, this pattern was never dropped.
    assert!(
        dropped_after < Duration::from_secs(2),
        "after {dropped_after:?}"
    );
    let sent = flood.await.unwrap();
    assert!(sent < 20_000, "the flooder was cut off ({sent} sent)");
}
