//! The result of one run: what was expected, what arrived, how late, at
//! what CPU cost. Serialized as one JSON object per run (`--json`), or shown
//! as a table.

use std::fmt::{self, Write as _};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// How many samples (deliveries, plus the synthetic samples the
    /// coordinated-omission correction added, where it applies).
    pub samples: u64,
}

impl Latency {
    /// Percentiles of a histogram of nanoseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let ms = |ns: u64| ns as f64 / 1e6;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            samples: h.len(),
        }
    }
}

/// The slow-consumer part of a report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StallReport {
    /// Index of the client that stopped reading.
    pub client: usize,
    /// When it stopped, in seconds from the start of the measured window.
    pub at_s: f64,
    /// How long it read nothing, in seconds.
    pub stall_s: f64,
    /// Latency seen by the stalled client over the whole window (corrected).
    pub stalled_latency_ms: Latency,
    /// Deliveries the stalled client received (measured window).
    pub stalled_received: u64,
    /// For each sender, the age of the first of its messages the stalled
    /// client received after resuming: median over senders, in ms. Small
    /// means it got fresh state at once; large means it was served a
    /// backlog.
    pub first_after_resume_age_ms_p50: f64,
    /// The same, largest over senders, in ms.
    pub first_after_resume_age_ms_max: f64,
    /// Messages received after resuming that had been sent before the
    /// resume: the backlog it had to read through.
    pub stale_after_resume: u64,
    /// Time from resuming until the first message younger than two send
    /// periods arrived, in ms (`None`: it never caught up).
    pub catch_up_ms: Option<f64>,
}

/// What the one client of a reader run (`--role reader`) saw: the
/// constrained client of a slow-link run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReaderReport {
    /// Length of the state-age window, in seconds: the last part of the
    /// measured window.
    pub window_s: f64,
    /// State age of every update received in the window: receive time −
    /// send time, both on the common clock (ns since the UNIX epoch, see
    /// [`crate::payload::Clock`]), in ms. Raw: no coordinated-omission
    /// correction (an update not delivered is not a late sample; it is
    /// counted in `received_in_window`).
    pub state_age_ms: Latency,
    /// Updates received in the window, from any sender and whenever sent
    /// (warm-up included).
    pub received_in_window: u64,
    /// Updates the N senders send in a span as long as the window:
    /// N × R × window. What a link without limits would deliver.
    pub sent_in_window: u64,
    /// Per sender (by index): updates received in the window.
    pub received_per_sender: Vec<u64>,
    /// Payload bytes received in the window, per second.
    pub payload_bytes_per_s: f64,
}

/// Deliveries between one kind of (sender, recipient) pair of a cluster
/// run: both on the same node, or on two nodes (across NATS).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PairReport {
    /// Deliveries expected between such pairs: pairs × R × D.
    pub expected: u64,
    /// Of them, received (measured window).
    pub received: u64,
    /// Latency of those deliveries (clients that did not stall), with the
    /// coordinated-omission correction (expected interval 1/R).
    pub latency_ms: Latency,
    /// The same without the correction.
    pub latency_raw_ms: Latency,
}

/// The cluster part of a report: a run whose clients were spread over
/// several server addresses (`--servers`), or given the NATS server's
/// process (`--nats-pid`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterReport {
    /// The addresses, in order: client `i` connected to `servers[i mod k]`.
    pub servers: Vec<String>,
    /// Clients on each address.
    pub clients_per_server: Vec<usize>,
    /// CPU seconds of each server process given, in order (their sum is
    /// the report's `server_cpu_s`); empty if one could not be read.
    pub server_cpu_each_s: Vec<f64>,
    /// CPU seconds of the NATS server over the same span.
    pub nats_cpu_s: Option<f64>,
    /// nats_cpu_s per million deliveries received.
    pub nats_cpu_s_per_million: Option<f64>,
    /// Sender and recipient connected to the same address (the echo, a
    /// client's own messages, included).
    pub same_node: PairReport,
    /// Sender and recipient on different addresses: through NATS.
    pub cross_node: PairReport,
}

/// Everything measured in one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `relais`, `nats` or `redis`.
    pub system: String,
    /// Free-form tag of the run (`matrix`, `overload`, `slow-consumer`).
    pub label: String,
    /// The server's address.
    pub addr: String,
    /// Simulated clients (N).
    pub clients: usize,
    /// Sends per second per client (R).
    pub rate_hz: u32,
    /// Payload size in bytes (P).
    pub payload_bytes: usize,
    /// Measured window in seconds (D).
    pub duration_s: f64,
    /// Unmeasured warm-up before it, in seconds.
    pub warmup_s: f64,
    /// Drain after the last send, in ms.
    pub drain_ms: u64,
    /// Messages sent in the measured window, all clients (N × R × D when
    /// every client ran to the end).
    pub sent: u64,
    /// Deliveries expected: N × N × R × D (echo on).
    pub expected: u64,
    /// Deliveries received of messages sent in the measured window.
    pub received: u64,
    /// expected − received.
    pub undelivered: u64,
    /// For relais, `undelivered`: superseded by a newer message of the same
    /// sender before it could be written (latest wins). 0 for the peers.
    pub conflated: u64,
    /// For the peers, `undelivered`: dropped, or still queued when the drain
    /// ended. 0 for relais.
    pub lost: u64,
    /// received / expected.
    pub delivered_ratio: f64,
    /// received / D.
    pub deliveries_per_s: f64,
    /// Payload megabytes (10^6 bytes) delivered per second.
    pub mb_per_s: f64,
    /// Latency of every delivery to the clients that did not stall, with
    /// the coordinated-omission correction (expected interval 1/R).
    pub latency_ms: Latency,
    /// The same without the correction.
    pub latency_raw_ms: Latency,
    /// Server CPU seconds (user + system) over the measured window and the
    /// drain, if `--server-pid` was given.
    pub server_cpu_s: Option<f64>,
    /// server_cpu_s per million deliveries received.
    pub server_cpu_s_per_million: Option<f64>,
    /// The generator's own CPU seconds over the same span: near the wall
    /// time means the generator, not the server, was the bottleneck.
    pub generator_cpu_s: Option<f64>,
    /// CPU seconds every other process on the machine used over the same
    /// span (`/proc/stat` user + nice + system, less the server's, NATS's
    /// and the generator's): other work competing for the cores. Only with
    /// `--server-pid`; absent from older reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_cpu_s: Option<f64>,
    /// Wall-clock seconds over which CPU was measured.
    pub cpu_wall_s: f64,
    /// Clock ticks per second used to read `/proc/PID/stat`.
    pub clk_tck: u64,
    /// Deliveries whose sequence number was not above the previous one from
    /// the same sender (reordered or duplicated). Should be 0 everywhere.
    pub reordered: u64,
    /// Clients whose connection failed or ended before the drain finished.
    pub failed_clients: usize,
    /// The first few failure messages.
    pub errors: Vec<String>,
    /// The slow-consumer results, for a run with a stalled client.
    pub stall: Option<StallReport>,
    /// The constrained link's rate in kbit/s as given by `--link-kbit`
    /// (slow-link runs only; absent from other runs' JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_kbit: Option<u64>,
    /// The reader's results, for a reader run (`--role reader`; absent from
    /// other runs' JSON). Its `clients` is then the number of senders it
    /// expects, `expected` N × R × D, and the latencies are its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader: Option<ReaderReport>,
    /// The round of the run, as given by `--round` (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
    /// The cluster part, for a run over several addresses or with
    /// `--nats-pid` (absent from other runs' JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterReport>,
}

impl Report {
    /// The report as a human-readable table.
    pub fn to_table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
        row("system", format!("{} @ {}", self.system, self.addr));
        if !self.label.is_empty() {
            row("label", self.label.clone());
        }
        row(
            "workload",
            format!(
                "{}N={} clients, R={} Hz, P={} B, D={} s (+{} s warm-up, {} ms drain)",
                if self.reader.is_some() {
                    "one reader; senders elsewhere: "
                } else {
                    ""
                },
                self.clients,
                self.rate_hz,
                self.payload_bytes,
                self.duration_s,
                self.warmup_s,
                self.drain_ms
            ),
        );
        if let Some(k) = self.link_kbit {
            row("link", format!("{k} kbit/s"));
        }
        let formula = if self.reader.is_some() {
            "N×R×D: one reader, N senders elsewhere"
        } else {
            "N×N×R×D"
        };
        row(
            "deliveries expected",
            format!("{} ({formula})", self.expected),
        );
        row(
            "deliveries received",
            format!("{} ({:.2}%)", self.received, self.delivered_ratio * 100.0),
        );
        if self.conflated > 0 || self.lost == 0 {
            row("conflated", self.conflated.to_string());
        }
        if self.lost > 0 || self.conflated == 0 {
            row("lost/undelivered", self.lost.to_string());
        }
        row("deliveries/s", format!("{:.0}", self.deliveries_per_s));
        row("payload MB/s", format!("{:.2}", self.mb_per_s));
        let lat = |l: &Latency| {
            format!(
                "p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                l.p50, l.p99, l.p999, l.max
            )
        };
        row("latency ms (CO-corrected)", lat(&self.latency_ms));
        row("latency ms (raw)", lat(&self.latency_raw_ms));
        row(
            "server CPU",
            match (self.server_cpu_s, self.server_cpu_s_per_million) {
                (Some(s), Some(m)) => format!("{s:.2} s = {m:.3} s per million deliveries"),
                (Some(s), None) => format!("{s:.2} s"),
                _ => "not measured (no --server-pid)".into(),
            },
        );
        if let Some(g) = self.generator_cpu_s {
            row(
                "generator CPU",
                format!("{g:.2} s over {:.2} s wall", self.cpu_wall_s),
            );
        }
        if let Some(o) = self.other_cpu_s {
            row("other processes' CPU", format!("{o:.2} s"));
        }
        if self.reordered > 0 {
            row("reordered/duplicated", self.reordered.to_string());
        }
        if self.failed_clients > 0 {
            row(
                "failed clients",
                format!("{} ({})", self.failed_clients, self.errors.join("; ")),
            );
        }
        if let Some(s) = &self.stall {
            row(
                "stall",
                format!(
                    "client {} stopped reading {:.1} s at +{:.1} s",
                    s.client, s.stall_s, s.at_s
                ),
            );
            row("others' p99 ms", format!("{:.3}", self.latency_ms.p99));
            row("stalled client latency ms", lat(&s.stalled_latency_ms));
            row(
                "age of first msg/sender after resume",
                format!(
                    "median {:.1} ms, max {:.1} ms",
                    s.first_after_resume_age_ms_p50, s.first_after_resume_age_ms_max
                ),
            );
            row(
                "stale msgs read after resume",
                s.stale_after_resume.to_string(),
            );
            row(
                "caught up after",
                s.catch_up_ms
                    .map_or_else(|| "never".into(), |ms| format!("{ms:.1} ms")),
            );
        }
        if let Some(c) = &self.cluster {
            row(
                "servers",
                c.servers
                    .iter()
                    .zip(&c.clients_per_server)
                    .map(|(s, n)| format!("{s} ({n} clients)"))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            for (what, p) in [("same-node", &c.same_node), ("cross-node", &c.cross_node)] {
                if p.expected > 0 {
                    row(
                        &format!("{what} pairs"),
                        format!(
                            "{} of {} ({:.2}%), ms p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                            p.received,
                            p.expected,
                            ratio(p.received, p.expected) * 100.0,
                            p.latency_ms.p50,
                            p.latency_ms.p99,
                            p.latency_ms.p999,
                            p.latency_ms.max
                        ),
                    );
                }
            }
            if !c.server_cpu_each_s.is_empty() {
                row(
                    "server CPU each",
                    c.server_cpu_each_s
                        .iter()
                        .map(|s| format!("{s:.2} s"))
                        .collect::<Vec<_>>()
                        .join(", "),
                );
            }
            if let Some(s) = c.nats_cpu_s {
                row(
                    "NATS CPU",
                    format!(
                        "{s:.2} s = {} s per million deliveries",
                        c.nats_cpu_s_per_million
                            .map_or_else(|| "–".into(), |m| format!("{m:.3}"))
                    ),
                );
            }
        }
        if let Some(r) = &self.reader {
            row(
                "state age ms (reader)",
                format!(
                    "p50 {:.1}  p99 {:.1}  max {:.1}  over the last {:.1} s",
                    r.state_age_ms.p50, r.state_age_ms.p99, r.state_age_ms.max, r.window_s
                ),
            );
            row(
                "received in window",
                format!(
                    "{} of {} sent ({:.1}%), {:.0} payload B/s",
                    r.received_in_window,
                    r.sent_in_window,
                    ratio(r.received_in_window, r.sent_in_window) * 100.0,
                    r.payload_bytes_per_s
                ),
            );
            let (lo, hi) = r
                .received_per_sender
                .iter()
                .fold((u64::MAX, 0), |(lo, hi), &c| (lo.min(c), hi.max(c)));
            if hi > 0 {
                row("received per sender", format!("min {lo}, max {hi}"));
            }
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }
}

/// `a / b`, 0 when `b` is 0.
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_table())
    }
}
