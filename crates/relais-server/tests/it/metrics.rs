//! `/metrics`, `/healthz` and `/readyz` of a real server: scraped over HTTP
//! during a workload, parsed with a strict OpenMetrics parser, and checked
//! against what the workload did, count for count.

use std::net::SocketAddr;
use std::time::Duration;

use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use relais_protocol::{ClientFrame, CloseReason, RefuseReason, ServerFrame};
use relais_server::{Config, ServerContext};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{seq_of, seq_payload, unlimited, Raw, TestServer, PATIENCE};

/// A server that counts, and the address of its operations listener.
async fn metered(config: Config) -> (TestServer, SocketAddr) {
    let server = TestServer::with_context(ServerContext::new(config).with_metrics()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops = listener.local_addr().unwrap();
    let s = server.server.clone();
    tokio::spawn(async move { s.serve_ops(listener, std::future::pending()).await });
    (server, ops)
}

/// `GET path`: the status and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: relais\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response))
        .await
        .expect("an answer in time")
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a head");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// One parsed scrape.
struct Scrape(MetricsExposition<OpenMetricsType, OpenMetricsValue>);

async fn scrape(ops: SocketAddr) -> Scrape {
    let (status, body) = get(ops, "/metrics").await;
    assert_eq!(status, 200);
    let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&body)
        .unwrap_or_else(|e| panic!("not valid OpenMetrics ({e:?}):\n{body}"));
    Scrape(parsed)
}

impl Scrape {
    /// A counter's or gauge's value; `label`: the value of its one label.
    fn value(&self, family: &str, label: Option<&str>) -> f64 {
        let family = self.0.families.get(family).unwrap_or_else(|| {
            panic!("no metric family {family}");
        });
        let labels: Vec<String> = label.into_iter().map(str::to_string).collect();
        let sample = family
            .get_sample_by_label_values(&labels)
            .unwrap_or_else(|| panic!("no {family:?} sample {labels:?}"));
        match &sample.value {
            OpenMetricsValue::Counter(c) => c.value.as_f64(),
            OpenMetricsValue::Gauge(g) => g.as_f64(),
            other => panic!("{other:?} is not a counter or gauge"),
        }
    }

    /// A histogram's observation count.
    fn observations(&self, family: &str) -> u64 {
        let sample = self.0.families[family]
            .get_sample_by_label_values(&[])
            .unwrap();
        match &sample.value {
            OpenMetricsValue::Histogram(h) => h.count.unwrap(),
            other => panic!("{other:?} is not a histogram"),
        }
    }
}

/// How much each counter moved between two scrapes.
struct Delta<'a>(&'a Scrape, &'a Scrape);

impl Delta<'_> {
    fn of(&self, family: &str, label: Option<&str>) -> u64 {
        let d = self.1.value(family, label) - self.0.value(family, label);
        assert!(d >= 0.0 && d.fract() == 0.0, "{family} moved by {d}");
        d as u64
    }
}

/// Scrapes until `done` holds (bounded by PATIENCE): the server counts a
/// write once it has returned, which can be just after the client read it.
async fn scrape_until(ops: SocketAddr, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let s = scrape(ops).await;
        if done(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the metrics never got there"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads relayed messages until the one with sequence number `last`;
/// returns how many messages arrived.
async fn read_until(c: &mut Raw, last: u32) -> u64 {
    let mut got = 0;
    loop {
        match c.next().await {
            Some(ServerFrame::Message { payload, .. }) => {
                got += 1;
                if seq_of(&payload) == last {
                    return got;
                }
            }
            Some(_) => {}
            None => panic!("closed before message {last}"),
        }
    }
}

/// `n` messages from `from`, sequence numbers `first..first + n`, of
/// `size` bytes, in one write.
async fn burst(from: &mut Raw, first: u32, n: u32, size: usize) {
    let mut bytes = Vec::new();
    for seq in first..first + n {
        bytes.extend_from_slice(&ClientFrame::Data(seq_payload(seq, size)).to_bytes());
    }
    from.send_raw(&bytes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_what_the_workload_did() {
    const SIZE: usize = 16 * 1024;
    const N: u32 = 100;
    let config = Config {
        // Tiny socket buffers: a client that stops reading stalls its
        // writer after a few messages, and the rest conflate.
        send_buffer_bytes: 4096,
        write_deadline: Duration::from_secs(2),
        ..unlimited()
    };
    let (server, ops) = metered(config).await;
    let before = scrape(ops).await;

    // Three members; two refusals.
    let mut a = server.raw().await;
    a.hello("a", "r", false).await.unwrap();
    let mut b = server.raw().await;
    b.hello("b", "r", false).await.unwrap();
    let mut s = Raw::connect(server.addr, Some(4096)).await;
    s.hello("s", "r", false).await.unwrap();
    let mut taken = server.raw().await;
    assert_eq!(
        taken.hello("B", "r", false).await.unwrap_err().0,
        RefuseReason::NameTaken
    );
    let mut invalid = server.raw().await;
    assert_eq!(
        invalid.hello("bad\u{7}", "r", false).await.unwrap_err().0,
        RefuseReason::InvalidName
    );

    // 100 messages of 16 KiB from a: b reads all the time, s only once b
    // has them all, so most of what waits for s is replaced by newer.
    burst(&mut a, 0, N, SIZE).await;
    let to_b = read_until(&mut b, N - 1).await;
    let to_s = read_until(&mut s, N - 1).await;
    let fanned_out = 2 * u64::from(N);
    let after = scrape_until(ops, |now| {
        let d = Delta(&before, now);
        d.of("relais_deliveries", None) + d.of("relais_messages_conflated", None) >= fanned_out
    })
    .await;
    let d = Delta(&before, &after);
    assert_eq!(d.of("relais_joins", None), 3);
    assert_eq!(d.of("relais_refusals", Some("name_taken")), 1);
    assert_eq!(d.of("relais_refusals", Some("invalid_name")), 1);
    assert_eq!(d.of("relais_refusals", Some("server_full")), 0);
    assert_eq!(d.of("relais_messages_received", None), u64::from(N));
    assert_eq!(
        d.of("relais_received_bytes", None),
        u64::from(N) * (4 + 1 + SIZE as u64),
        "each DATA frame: length prefix, type, payload"
    );
    assert_eq!(d.of("relais_deliveries", None), to_b + to_s);
    let conflated = d.of("relais_messages_conflated", None);
    assert_eq!(conflated, fanned_out - to_b - to_s);
    assert!(conflated > 0, "s stalled, so its backlog conflated");
    assert_eq!(d.of("relais_messages_rate_limited", None), 0);
    assert_eq!(after.value("relais_members", None), 3.0);
    assert_eq!(after.value("relais_rooms", None), 1.0);
    // Every live message written has its state age observed, once.
    assert_eq!(
        after.observations("relais_state_age_seconds")
            - before.observations("relais_state_age_seconds"),
        to_b + to_s
    );
    assert!(after.observations("relais_write_batch_messages") > 0);

    // Drops: t stops reading while a sends again (b and s keep reading):
    // after the write deadline, t is dropped as a slow consumer.
    let mut t = Raw::connect(server.addr, Some(4096)).await;
    t.hello("t", "r", false).await.unwrap();
    let readers = tokio::spawn(async move {
        let got = (
            read_until(&mut b, 2 * N - 1).await,
            read_until(&mut s, 2 * N - 1).await,
        );
        (b, s, got)
    });
    burst(&mut a, N, N, SIZE).await;
    let (b, mut s, _) = readers.await.unwrap();
    scrape_until(ops, |now| {
        Delta(&before, now).of("relais_leaves", Some("slow_consumer")) == 1
    })
    .await;
    // b vanishes, s says goodbye, a breaks the protocol.
    b.drop_abruptly();
    s.send(ClientFrame::Goodbye(CloseReason::Normal, String::new()))
        .await;
    a.send_raw(&[0, 0, 0, 1, 0xEE]).await;
    let end = scrape_until(ops, |now| {
        now.value("relais_members", None) == 0.0
            && now.value("relais_connections", Some("tcp")) == 0.0
    })
    .await;
    let d = Delta(&before, &end);
    assert_eq!(d.of("relais_joins", None), 4);
    assert_eq!(d.of("relais_leaves", Some("slow_consumer")), 1);
    assert_eq!(d.of("relais_leaves", Some("connection_lost")), 1);
    assert_eq!(d.of("relais_leaves", Some("normal")), 1);
    assert_eq!(d.of("relais_leaves", Some("protocol_error")), 1);
    assert_eq!(d.of("relais_leaves", Some("timeout")), 0);
    assert_eq!(end.value("relais_rooms", None), 0.0);
    assert_eq!(d.of("relais_connections_accepted", Some("tcp")), 6);
    assert_eq!(d.of("relais_connections_accepted", Some("ws")), 0);
    drop((t, taken, invalid));
    server.stop().await;
}

#[tokio::test]
async fn messages_over_the_rate_that_a_newer_one_replaced_are_counted() {
    let config = Config {
        max_message_rate: 1,
        message_burst: 1,
        ..unlimited()
    };
    let (server, ops) = metered(config).await;
    let before = scrape(ops).await;
    // Ten messages in one write at one a second: the first is relayed, the
    // next eight are each replaced by the one after, the tenth waits for
    // the next token.
    let mut sender = server.raw().await;
    sender.hello("sender", "r", false).await.unwrap();
    let (mut reader, _) = server.join("r", "reader").await;
    burst(&mut sender, 0, 10, 8).await;
    assert_eq!(seq_of(&reader.message().await.1), 0);
    assert_eq!(seq_of(&reader.message().await.1), 9);
    let after = scrape_until(ops, |now| {
        Delta(&before, now).of("relais_deliveries", None) == 2
    })
    .await;
    let d = Delta(&before, &after);
    assert_eq!(d.of("relais_messages_received", None), 10);
    assert_eq!(d.of("relais_messages_rate_limited", None), 8);
    assert_eq!(d.of("relais_messages_conflated", None), 0);
    drop((sender, reader));
    server.stop().await;
}

#[tokio::test]
async fn keepalive_drops_are_counted_as_timeouts() {
    let config = Config {
        keepalive_interval: Duration::from_millis(100),
        ..unlimited()
    };
    let (server, ops) = metered(config).await;
    let before = scrape(ops).await;
    // A member that answers no ping is dropped after two unanswered ones.
    let mut silent = server.raw().await;
    silent.hello("silent", "r", false).await.unwrap();
    let mut pings = 0;
    let last = loop {
        match silent.next().await {
            Some(ServerFrame::Ping) => pings += 1,
            other => break other,
        }
    };
    assert_eq!(pings, 2);
    assert!(
        matches!(last, Some(ServerFrame::Goodbye(CloseReason::Timeout, _))),
        "{last:?}"
    );
    let end = scrape_until(ops, |now| now.value("relais_members", None) == 0.0).await;
    let d = Delta(&before, &end);
    assert_eq!(d.of("relais_leaves", Some("timeout")), 1);
    assert_eq!(d.of("relais_leaves", Some("slow_consumer")), 0);
    drop(silent);
    server.stop().await;
}

#[tokio::test]
async fn readyz_turns_503_when_shutdown_starts_and_healthz_stays_200() {
    let (server, ops) = metered(unlimited()).await;
    assert_eq!(get(ops, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(get(ops, "/readyz").await, (200, "ready\n".into()));
    assert_eq!(get(ops, "/nope").await.0, 404);
    let (mut client, _) = server.join("r", "c").await;
    let stopping = server.server.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown().await });
    // The goodbye comes after the server stopped being ready: the shutdown
    // is in its grace period (this client has not closed yet).
    loop {
        match client.next().await {
            Some(ServerFrame::Goodbye(reason, _)) => {
                assert_eq!(reason, CloseReason::ServerShutdown);
                break;
            }
            Some(_) => {}
            None => panic!("closed without a goodbye"),
        }
    }
    assert!(!shutdown.is_finished(), "still in its grace period");
    assert_eq!(get(ops, "/readyz").await, (503, "shutting down\n".into()));
    assert_eq!(get(ops, "/healthz").await.0, 200);
    drop(client);
    tokio::time::timeout(PATIENCE, shutdown)
        .await
        .expect("shutdown finishes")
        .unwrap();
    assert_eq!(get(ops, "/readyz").await.0, 503);
}

#[tokio::test]
async fn the_operations_listener_serves_at_most_its_limit_at_once() {
    use relais_server::ops::MAX_OPS_CONNECTIONS;
    let (server, ops) = metered(unlimited()).await;
    // Connections that send nothing hold their slots (until their head
    // times out).
    let mut idle = Vec::new();
    for _ in 0..MAX_OPS_CONNECTIONS {
        idle.push(tokio::net::TcpStream::connect(ops).await.unwrap());
    }
    // Accepted after them (the kernel queues connections in order): closed
    // unanswered.
    let mut over = tokio::net::TcpStream::connect(ops).await.unwrap();
    let _ = over.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, over.read_to_end(&mut answer))
        .await
        .expect("closed in time");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // One idle connection goes: its slot is free again (once its task has
    // seen it go).
    drop(idle.pop());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut c = tokio::net::TcpStream::connect(ops).await.unwrap();
        let _ = c.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await;
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no slot came free");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(idle);
    server.stop().await;
}
