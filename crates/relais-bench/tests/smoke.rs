//! Smoke test: a tiny run of the generator against an in-process relais
//! server. It checks that the generator works end to end, never how fast
//! anything is (benchmarks are programs, not tests).

use std::time::Duration;

use relais_bench::{System, Workload};
use relais_server::{Config, Server};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_for_one_second_against_relais() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = Server::new(Config::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn({
        let server = server.clone();
        async move {
            server
                .serve_tcp(listener, async {
                    let _ = stopped.await;
                })
                .await
        }
    });

    let workload = Workload {
        clients: 3,
        rate_hz: 20,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        drain: Duration::from_millis(300),
        server_pid: Some(std::process::id()),
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

    stop.send(()).unwrap();
    serving.await.unwrap();
}
