//! Smoke test: a tiny run of the generator against an in-process relais
//! server. It checks that the generator works end to end, never how fast
//! anything is (benchmarks are programs, not tests).

use std::time::Duration;

use relais_bench::{Role, System, Workload};
use relais_server::{Config, Server};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// An in-process relais server on 127.0.0.1:0: its address, and a future
/// that shuts it down and waits until it has.
async fn serve() -> (String, impl std::future::Future<Output = ()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Every client comes from 127.0.0.1: no per-address limits.
    let server = Server::new(Config {
        max_connections_per_ip: 0,
        max_joins_per_ip: 0,
        ..Config::default()
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        server
            .serve_tcp(listener, async {
                let _ = stopped.await;
            })
            .await
    });
    (addr, async move {
        stop.send(()).unwrap();
        serving.await.unwrap();
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_for_one_second_against_relais() {
    let (addr, stop) = serve().await;

    let workload = Workload {
        clients: 3,
        rate_hz: 20,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        drain: Duration::from_millis(300),
        server_pids: vec![std::process::id()],
        ..Workload::default()
    };
    let report = relais_bench::run(System::Relais, &addr, &workload)
        .await
        .unwrap();

    assert_eq!(report.expected, 3 * 3 * 20);
    assert!(report.received > 0, "{report}");
    assert!(report.received <= report.expected, "{report}");
    assert_eq!(report.failed_clients, 0, "{report}");
    assert_eq!(report.reordered, 0, "{report}");
    assert!(report.latency_ms.samples > 0, "{report}");
    assert!(report.latency_ms.max > 0.0, "{report}");
    assert!(report.server_cpu_s.is_some(), "{report}");
    let json = serde_json::to_string(&report).unwrap();
    let back: relais_bench::Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);

    stop.await;
}

/// The slow-link roles on loopback (no namespace, no throttling): a senders
/// run and a reader run, as two `run`s given one start time, against one
/// in-process relais server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_and_senders_share_a_schedule() {
    let (addr, stop) = serve().await;

    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let senders = Workload {
        clients: 3,
        rate_hz: 20,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        drain: Duration::from_millis(300),
        start_at_unix_ns: Some(now_ns + 500_000_000),
        label: "slowlink".into(),
        link_kbit: Some(500),
        ..Workload::default()
    };
    let reader = Workload {
        role: Role::Reader,
        window: Some(Duration::from_millis(600)),
        ..senders.clone()
    };
    let (s, r) = tokio::join!(
        relais_bench::run(System::Relais, &addr, &senders),
        relais_bench::run(System::Relais, &addr, &reader)
    );
    let (s, r) = (s.unwrap(), r.unwrap());

    // The senders' run is a normal run that knows nothing of the reader.
    assert!(s.reader.is_none(), "{s}");
    assert_eq!(s.expected, 3 * 3 * 20);
    assert!(s.received > 0, "{s}");
    assert_eq!(s.failed_clients, 0, "{s}");
    assert_eq!(s.link_kbit, Some(500));

    let x = r.reader.as_ref().expect("a reader report");
    assert_eq!(r.expected, 3 * 20, "{r}");
    assert_eq!(r.sent, 0, "{r}");
    assert_eq!(r.failed_clients, 0, "{r}");
    assert_eq!(r.reordered, 0, "{r}");
    assert!(r.received > 0 && r.received <= r.expected, "{r}");
    assert_eq!(x.sent_in_window, 3 * 20 * 6 / 10);
    assert!(x.received_in_window > 0, "{r}");
    assert_eq!(x.received_per_sender.len(), 3);
    assert!(x.received_per_sender.iter().all(|&c| c > 0), "{r}");
    assert_eq!(
        x.received_per_sender.iter().sum::<u64>(),
        x.received_in_window
    );
    // On loopback, with one schedule on one clock, updates are fresh: a
    // wrong clock (or schedules out of step) would show seconds here.
    assert!(x.state_age_ms.samples > 0, "{r}");
    assert!(x.state_age_ms.p50 < 500.0, "{r}");
    assert!(r.to_table().contains("state age"));

    let json = serde_json::to_string(&r).unwrap();
    let back: relais_bench::Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    // Reports without the slow-link fields serialize as before.
    let plain = serde_json::to_string(&relais_bench::Report::default()).unwrap();
    assert!(!plain.contains("reader") && !plain.contains("link_kbit"));

    stop.await;
}

/// Clients spread over two addresses, round-robin: here two independent
/// servers (no cluster), so every delivery stays on its server and the
/// report's cross-node half stays empty, while the same-node half holds
/// every delivery. Checks the assignment and the split, not any speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_spread_over_two_servers_are_split_by_pair() {
    let (a, stop_a) = serve().await;
    let (b, stop_b) = serve().await;

    let workload = Workload {
        clients: 4,
        rate_hz: 20,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        drain: Duration::from_millis(300),
        server_pids: vec![std::process::id(), std::process::id()],
        nats_pid: Some(std::process::id()),
        round: Some(2),
        ..Workload::default()
    };
    let servers = [a.clone(), b.clone()];
    let report = relais_bench::run_on(System::Relais, &servers, &workload)
        .await
        .unwrap();

    assert_eq!(report.failed_clients, 0, "{report}");
    assert_eq!(report.addr, format!("{a},{b}"));
    assert_eq!(report.round, Some(2));
    let c = report.cluster.as_ref().expect("a cluster part");
    assert_eq!(c.servers, servers);
    assert_eq!(c.clients_per_server, [2, 2]);
    // Clients 0 and 2 on a, 1 and 3 on b: 2² + 2² of the 16 pairs share a
    // server, 20 messages each in the window.
    assert_eq!(c.same_node.expected, 8 * 20);
    assert_eq!(c.cross_node.expected, 8 * 20);
    assert_eq!(c.cross_node.received, 0, "{report}");
    assert_eq!(c.same_node.received, report.received, "{report}");
    assert!(report.received > 0, "{report}");
    assert!(c.same_node.latency_ms.samples > 0, "{report}");
    assert_eq!(c.cross_node.latency_ms.samples, 0, "{report}");
    assert_eq!(c.server_cpu_each_s.len(), 2);
    assert!(c.nats_cpu_s.is_some(), "{report}");
    assert!(report.other_cpu_s.is_some(), "{report}");
    assert!(report.to_table().contains("cross-node pairs"));
    let json = serde_json::to_string(&report).unwrap();
    let back: relais_bench::Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);

    stop_a.await;
    stop_b.await;
}
