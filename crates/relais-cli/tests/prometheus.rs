//! A real Prometheus scrapes `relais serve --metrics-listen` while clients
//! join, talk and leave, and its query API sees what they did: the
//! exposition is read by the system it is meant for, over its own HTTP
//! client, with its own OpenMetrics parser.
//!
//! It needs Prometheus at /usr/bin/prometheus (or `PROMETHEUS`), and
//! promtool at /usr/bin/promtool (or `PROMTOOL`), which checks the README's
//! scrape job (`promtool check config`); `.ci/run`
//! installs Debian's `prometheus` package. Without it this test fails with
//! what to install: it never passes without having run Prometheus.
//!
//! There is no `promtool check metrics` here: promtool (Debian's 2.42;
//! upstream, prometheus/prometheus#8932 is open) reads only the older text
//! format, not OpenMetrics. On this exposition it stops at `# TYPE
//! relais_build info` ("unknown metric type"), and without that family it
//! lints each counter's `_total` samples as an untyped family of their own,
//! "no help text" (their `# HELP`/`# TYPE` name the family, without
//! `_total`, as OpenMetrics wants). What it would check, that every sample
//! is read with its family's type and unit, is checked against Prometheus.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{http_get, metrics_addr, serve_with, Proc};

/// The most any wait takes. Prometheus's first scrape comes 5 to 11 s after
/// its start (its discovery and scrape managers pass new targets on every
/// 5 s), the others every second.
const PATIENCE: Duration = Duration::from_secs(60);

/// Between two queries while waiting for a value.
const POLL: Duration = Duration::from_millis(100);

/// Clients in the room.
const K: usize = 3;

/// `s` as a URL query value: everything but unreserved characters
/// percent-encoded.
fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A Prometheus server of our own: a temporary configuration and TSDB,
/// loopback only, scraping `target` every second.
struct Prometheus {
    proc: Proc,
    /// Where its web UI and API listen.
    addr: String,
    /// Its configuration and TSDB; declared after `proc`, so removed once
    /// the process is killed.
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(binary: &str, target: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: relais\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let proc = Proc::spawn(
            "prometheus",
            Command::new(binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                // Port 0: it logs the address it bound ("Listening on").
                .arg("--web.listen-address=127.0.0.1:0"),
        );
        let line = proc.expect("stderr", "msg=\"Listening on\"");
        let addr = line
            .split(' ')
            .find_map(|field| field.strip_prefix("address="))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        proc.expect("stderr", "Server is ready to receive web requests");
        Self {
            proc,
            addr,
            _dir: dir,
        }
    }

    /// The `data` of the API's answer to `GET /api/v1/{path}`; `None` while
    /// it cannot answer. A refused query fails the test.
    fn api(&self, path: &str) -> Option<Value> {
        let (status, body) = http_get(&self.addr, &format!("/api/v1/{path}")).ok()?;
        let answer: Value = serde_json::from_str(&body).ok()?;
        assert!(
            status != 400 && status != 422,
            "Prometheus refused /api/v1/{path}: {body}"
        );
        (status == 200 && answer["status"] == "success").then(|| answer["data"].clone())
    }

    /// The value of the instant query `promql` if it gives one series.
    fn value(&self, promql: &str) -> Option<f64> {
        let data = self.api(&format!("query?query={}", query_value(promql)))?;
        match data["result"].as_array()?.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// Waits until `promql` gives `want`.
    fn wait_for(&self, promql: &str, want: f64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = self.value(promql);
            if got == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{promql} is {got:?} after {PATIENCE:?}, not {want}\ntargets: {}\n{}",
                self.api("targets").unwrap_or_default(),
                self.proc.log()
            );
            thread::sleep(POLL);
        }
    }
}

/// A program of Debian's `prometheus` package (`$var` overrides where),
/// or a failure saying what to install.
fn from_prometheus_package(var: &str, default: &str) -> String {
    let binary = std::env::var(var).unwrap_or_else(|_| default.into());
    assert!(
        Path::new(&binary).exists(),
        "this test needs {binary}: `apt-get install prometheus` \
         (Debian's package; .ci/run does it)"
    );
    binary
}

#[test]
fn the_readmes_scrape_job_passes_promtool() {
    let promtool = from_prometheus_package("PROMTOOL", "/usr/bin/promtool");
    let readme = include_str!("../../../README.md");
    let job = readme
        .split("A Prometheus scrape job for it")
        .nth(1)
        .and_then(|rest| rest.split("```yaml\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("README.md has the scrape job");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, job).expect("write prometheus.yml");
    let out = Command::new(promtool)
        .args(["check", "config"])
        .arg(&config)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check config:\n{}{}\n{job}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_scrapes_the_metrics_and_sees_clients_come_and_go() {
    let binary = from_prometheus_package("PROMETHEUS", "/usr/bin/prometheus");
    let started = Instant::now();

    let (serve, server) = serve_with(&["--metrics-listen", "127.0.0.1:0"], "warn");
    let metrics = metrics_addr(&serve);

    // Started before the clients join, so that its first scrape, 5 to 11 s
    // away, waits while they do.
    let prometheus = Prometheus::start(&binary, &metrics);

    let mut clients: Vec<relais::Client> = (0..K)
        .map(|i| {
            relais::Client::builder(&format!("player{i}"))
                .room("prom")
                .connect(server.as_str())
                .unwrap_or_else(|e| panic!("player{i} cannot join: {e}\n{}", serve.log()))
        })
        .collect();
    // Each sends one message once all have joined; each gets every one,
    // its own echoed: K messages in, K × K deliveries.
    for (i, client) in clients.iter().enumerate() {
        client.send(format!("hello from {i}")).unwrap();
    }
    for client in &clients {
        let mut senders: Vec<String> = (0..K)
            .map(|_| client.recv_timeout(PATIENCE).unwrap().sender)
            .collect();
        senders.sort();
        assert_eq!(senders, ["player0", "player1", "player2"]);
    }

    // A scrape of our own, while the clients are connected.
    let (status, exposition) = http_get(&metrics, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{exposition}");
    assert!(exposition.ends_with("# EOF\n"), "{exposition}");
    let samples = exposition
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();

    let k = K as f64;
    prometheus.wait_for("sum(relais_connections)", k);
    let first_scrape = started.elapsed();
    prometheus.wait_for("relais_members", k);
    prometheus.wait_for(r#"up{job="relais"}"#, 1.0);
    prometheus.wait_for("relais_joins_total", k);
    prometheus.wait_for("relais_messages_received_total", k);
    prometheus.wait_for("relais_deliveries_total", k * k);
    prometheus.wait_for("relais_state_age_seconds_count", k * k);

    // Prometheus's OpenMetrics parser took every sample of the exposition
    // (a scrape it cannot parse is all lost: `up` 0 and the error in the
    // target), with each family's type and unit.
    prometheus.wait_for(r#"scrape_samples_scraped{job="relais"}"#, samples as f64);
    let targets = prometheus.api("targets?state=active").expect("targets");
    let target = &targets["activeTargets"][0];
    assert_eq!(target["health"], "up", "{targets}");
    assert_eq!(target["lastError"], "", "{targets}");
    let metadata = prometheus
        .api(&format!(
            "targets/metadata?match_target={}",
            query_value(r#"{job="relais"}"#)
        ))
        .expect("metadata");
    let kinds: Vec<(&str, &str, &str)> = metadata
        .as_array()
        .expect("a list")
        .iter()
        .map(|m| {
            let field = |key: &str| m[key].as_str().unwrap_or("");
            (field("metric"), field("type"), field("unit"))
        })
        .collect();
    for family in [
        ("relais_connections", "gauge", ""),
        ("relais_joins", "counter", ""),
        ("relais_received_bytes", "counter", "bytes"),
        // Histograms carry their unit in the name only (metrics.rs).
        ("relais_state_age_seconds", "histogram", ""),
        ("relais_build", "info", ""),
        ("process_cpu_seconds", "counter", "seconds"),
    ] {
        assert!(kinds.contains(&family), "no {family:?} in {kinds:?}");
    }

    // One leaves: Prometheus sees the room shrink.
    drop(clients.pop());
    prometheus.wait_for("sum(relais_connections)", k - 1.0);
    prometheus.wait_for("relais_members", k - 1.0);
    prometheus.wait_for(r#"relais_leaves_total{reason="normal"}"#, 1.0);
    prometheus.wait_for(r#"up{job="relais"}"#, 1.0);
    eprintln!(
        "first scrape seen {first_scrape:.1?} after the start, done after {:.1?}",
        started.elapsed()
    );
}
