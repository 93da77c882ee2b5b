//! Turns a directory of JSON reports into `BENCHMARKS.md` and a PNG plot.
//!
//! Runs are told apart by their label: `matrix` (N varies, R = 60 Hz,
//! P = 64 B), `overload` and `slow-consumer` (all from `bench/compare.sh`),
//! and `slowlink` (from `bench/slowlink.sh`: per link rate and system, one
//! reader report and one senders report), and `cluster-*` (from
//! `bench/cluster.sh`, rendered by [`crate::render_cluster`]). Whatever the runs show, the
//! targets are evaluated from them and stated as measured. Sections whose
//! runs are missing are left out, so either script's results alone render.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::report::Report;

/// Label of the runs of the N × system matrix.
pub const MATRIX: &str = "matrix";
/// Label of the overload runs.
pub const OVERLOAD: &str = "overload";
/// Label of the slow-consumer runs.
pub const SLOW_CONSUMER: &str = "slow-consumer";
/// Label of the slow-link runs (`bench/slowlink.sh`).
pub const SLOWLINK: &str = "slowlink";

/// The systems in the order they are listed.
const SYSTEMS: [&str; 3] = ["relais", "nats", "redis"];

/// p99 bound of the "largest room" target, in ms.
pub(crate) const ROOM_P99_MS: f64 = 20.0;
/// Delivery ratio bound of the "largest room" target.
pub(crate) const ROOM_DELIVERED: f64 = 0.99;
/// Overload latency bound: two frames at 60 Hz, in ms.
const OVERLOAD_P99_MS: f64 = 33.3;
/// Slow-link target: relais's state age p99 at the reference rate, in ms.
const SLOWLINK_P99_MS: f64 = 100.0;
/// The slow link's reference rate, kbit/s.
const SLOWLINK_REFERENCE_KBIT: u64 = 500;

/// Reads every `*.json` file of `dir`; each line of a file is one report.
/// Files are read in name order.
pub fn load_reports(dir: &Path) -> anyhow::Result<Vec<Report>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut reports = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            reports.push(
                serde_json::from_str(line)
                    .with_context(|| format!("parsing a report in {}", path.display()))?,
            );
        }
    }
    Ok(reports)
}

fn find<'a>(reports: &'a [Report], label: &str, system: &str, n: usize) -> Option<&'a Report> {
    reports
        .iter()
        .find(|r| r.label == label && r.system == system && r.clients == n)
}

fn matrix_sizes(reports: &[Report]) -> Vec<usize> {
    let set: BTreeSet<usize> = reports
        .iter()
        .filter(|r| r.label == MATRIX)
        .map(|r| r.clients)
        .collect();
    set.into_iter().collect()
}

/// `v` with `digits` decimals, "–" for none.
pub(crate) fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

/// Whether the run's generator was at ≥ 75 % of its core (marked †).
pub(crate) fn generator_bound(r: &Report) -> bool {
    r.generator_cpu_s
        .is_some_and(|g| r.cpu_wall_s > 0.0 && g >= 0.75 * r.cpu_wall_s)
}

/// " †" after a generator-bound run, "" otherwise.
pub(crate) fn dagger_if(bound: bool) -> &'static str {
    if bound {
        " †"
    } else {
        ""
    }
}

/// The range of a log axis over `values`, widened by `pad` on both sides,
/// or `empty` when there are none.
fn log_range(values: impl Iterator<Item = f64>, pad: f64, empty: (f64, f64)) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo <= hi {
        (lo / pad, hi * pad)
    } else {
        empty
    }
}

/// The best (lowest) value among the peers, with the peer's name.
fn best_peer(
    reports: &[Report],
    label: &str,
    n: usize,
    metric: impl Fn(&Report) -> Option<f64>,
) -> Option<(f64, &'static str)> {
    SYSTEMS[1..]
        .iter()
        .filter_map(|s| {
            find(reports, label, s, n)
                .and_then(&metric)
                .map(|v| (v, *s))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
}

/// Largest matrix N at which `system` kept p99 under 20 ms with ≥ 99 % of
/// the expected deliveries.
fn largest_room(reports: &[Report], system: &str) -> Option<usize> {
    reports
        .iter()
        .filter(|r| r.label == MATRIX && r.system == system)
        .filter(|r| {
            r.latency_ms.p99 < ROOM_P99_MS
                && r.delivered_ratio >= ROOM_DELIVERED
                && r.failed_clients == 0
        })
        .map(|r| r.clients)
        .max()
}

/// " †" when the matrix run of `a` or `b` at `n` was generator-bound.
fn dagger(reports: &[Report], n: usize, a: &str, b: &str) -> &'static str {
    dagger_if(
        [a, b]
            .iter()
            .filter_map(|s| find(reports, MATRIX, s, n))
            .any(generator_bound),
    )
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "missed"
    }
}

/// What `BENCHMARKS.md` shows besides the runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Doc<'a> {
    /// The setup of the `bench/compare.sh` runs (machine, versions), shown
    /// verbatim.
    pub meta: &'a str,
    /// Analysis written by hand, appended once at the end.
    pub notes: &'a str,
    /// The matrix plot's path relative to the Markdown file.
    pub plot: &'a str,
    /// The setup of the slow-link runs, shown verbatim in their section.
    pub slowlink_meta: &'a str,
    /// The slow-link plot's path relative to the Markdown file.
    pub slowlink_plot: &'a str,
    /// The setup of the cluster runs (`cluster-meta.txt`), shown verbatim
    /// in their section.
    pub cluster_meta: &'a str,
}

/// Whether any run of `bench/compare.sh` is among `reports`.
pub fn has_compare_runs(reports: &[Report]) -> bool {
    reports
        .iter()
        .any(|r| [MATRIX, OVERLOAD, SLOW_CONSUMER].contains(&r.label.as_str()))
}

/// Whether any slow-link run is among `reports`.
pub fn has_slowlink_runs(reports: &[Report]) -> bool {
    reports.iter().any(|r| r.label == SLOWLINK)
}

/// The text of `BENCHMARKS.md` (`meta` shown verbatim as the setup, `notes`
/// appended, `plot` the plot's path relative to the Markdown file): the
/// same as [`markdown_doc`] without slow-link setup and plot.
pub fn markdown(reports: &[Report], meta: &str, notes: &str, plot: &str) -> String {
    markdown_doc(
        reports,
        &Doc {
            meta,
            notes,
            plot,
            ..Doc::default()
        },
    )
}

/// The text of `BENCHMARKS.md`.
pub fn markdown_doc(reports: &[Report], doc: &Doc<'_>) -> String {
    let (meta, notes, plot) = (doc.meta, doc.notes, doc.plot);
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# Benchmarks: relais vs NATS vs Redis pub/sub\n");
    let _ = writeln!(
        w,
        "Generated by `bench/compare.sh`, `bench/slowlink.sh` and `bench/cluster.sh` (do not edit by hand: \
         edit `bench/NOTES.md` or the renderer `relais-bench-report`). Raw results: \
         `bench/results/*.json`, one JSON object per run.\n"
    );
    let _ = writeln!(w, "## Setup\n\n```text\n{}\n```\n", meta.trim());
    let _ = writeln!(
        w,
        "**Workload.** N clients in one room (NATS: one subject; Redis: one channel), each \
         sending a P-byte payload at R Hz and reading everything. The echo is on (a client \
         receives its own messages, as a NATS or Redis subscriber of its own subject does), \
         so the expected deliveries are **N × N × R × D**. Clients are spread evenly over \
         the send period. 1 s of warm-up is not measured; after the D-second window the \
         receivers drain for 500 ms, then count.\n\n\
         **Measures.** Latency = receive time − send time on one clock (one process), in a \
         per-client HdrHistogram, reported with the coordinated-omission correction \
         (expected interval 1/R; raw values in the JSON). *Delivered* = received / expected: \
         for relais the rest was conflated (latest wins, by design); for the peers it was lost \
         or still queued at the end of the drain. Server CPU = utime + stime from \
         `/proc/PID/stat` over the window and the drain, per million deliveries received. \
         The server runs on core 0 and the generator on core 1 (`taskset`). A run marked † had \
         its generator at ≥ 75 % of its core: there the generator, not the server, may be \
         the bottleneck.\n"
    );

    let sizes = matrix_sizes(reports);
    if has_compare_runs(reports) {
        write_targets(w, reports, &sizes);
    } else {
        let _ = writeln!(
            w,
            "No `bench/compare.sh` results in `bench/results/`: run it for the matrix, \
             overload and slow-consumer sections.\n"
        );
    }
    if !sizes.is_empty() {
        let _ = writeln!(
            w,
            "## Plot\n\n![p99 latency and server CPU per million deliveries vs N]({plot})\n"
        );
    }
    write_matrix(w, reports, &sizes);
    write_overload(w, reports);
    write_slow_consumer(w, reports);
    write_slowlink(w, reports, doc.slowlink_meta, doc.slowlink_plot);
    crate::render_cluster::write_cluster(w, reports, doc.cluster_meta);
    if !notes.trim().is_empty() {
        let _ = writeln!(w, "{}\n", notes.trim());
    }
    md
}

fn write_targets(w: &mut String, reports: &[Report], sizes: &[usize]) {
    let _ = writeln!(
        w,
        "## Targets (issues 4 and 9), as measured\n\n\
         A † after a verdict: one of the runs compared had its generator at ≥ 75 % of its \
         core, so the generator, not the server, may have set the number.\n"
    );
    let _ = writeln!(w, "| target | measured | verdict |\n|---|---|---|");
    for n in [100, 400] {
        let cpu = |r: &Report| r.server_cpu_s_per_million;
        let ours = find(reports, MATRIX, "relais", n).and_then(cpu);
        let peer = best_peer(reports, MATRIX, n, cpu);
        let line = match (ours, peer) {
            (Some(o), Some((p, name))) => format!(
                "relais {o:.3} vs {name} {p:.3} s/M: **{:.2}×** | {}{} |",
                o / p,
                verdict(o <= 0.5 * p),
                dagger(reports, n, "relais", name)
            ),
            _ => "not measured | – |".into(),
        };
        let _ = writeln!(
            w,
            "| server CPU per million deliveries at N={n} ≤ 0.5× best peer | {line}"
        );
    }
    for &n in sizes {
        let p99 = |r: &Report| Some(p99_or_inf(r));
        let ours = find(reports, MATRIX, "relais", n).map(p99_or_inf);
        let line = match (ours, best_peer(reports, MATRIX, n, p99)) {
            (Some(o), Some((p, name))) => format!(
                "relais {o:.2} ms vs {name} {p:.2} ms ({:.2}×) | {}{} |",
                o / p,
                verdict(o <= p),
                dagger(reports, n, "relais", name)
            ),
            _ => "not measured | – |".into(),
        };
        let _ = writeln!(w, "| p99 at N={n} ≤ best peer | {line}");
    }
    let overload: Vec<&Report> = reports.iter().filter(|r| r.label == OVERLOAD).collect();
    if let Some(ours) = overload.iter().find(|r| r.system == "relais") {
        let peers: Vec<String> = overload
            .iter()
            .filter(|r| r.system != "relais")
            .map(|r| {
                if r.latency_ms.samples == 0 {
                    format!(
                        "{}: no measured message delivered within D + drain ({} of {} sent)",
                        r.system,
                        r.sent,
                        r.expected / r.clients.max(1) as u64
                    )
                } else {
                    format!("{} {:.1} ms", r.system, r.latency_ms.p99)
                }
            })
            .collect();
        let _ = writeln!(
            w,
            "| overload (N={}, R={} Hz): relais p99 < {OVERLOAD_P99_MS} ms, bounded where peers queue up | relais {:.2} ms; {} | {}{} |",
            ours.clients,
            ours.rate_hz,
            ours.latency_ms.p99,
            peers.join(", "),
            verdict(p99_or_inf(ours) < OVERLOAD_P99_MS),
            dagger_if(overload.iter().any(|r| generator_bound(r)))
        );
    }
    let ours = largest_room(reports, "relais");
    let peer = SYSTEMS[1..]
        .iter()
        .filter_map(|s| largest_room(reports, s).map(|n| (n, *s)))
        .max();
    let show = |v: Option<usize>| v.map_or_else(|| "none".into(), |n| n.to_string());
    let (ratio, ok) = match (ours, peer) {
        (Some(o), Some((p, _))) => (format!("{:.2}×", o as f64 / p as f64), o * 2 >= p * 3),
        (Some(_), None) => ("∞".into(), true),
        _ => ("–".into(), false),
    };
    let _ = writeln!(
        w,
        "| largest room with p99 < {ROOM_P99_MS} ms and ≥ 99% delivered ≥ 1.5× best peer (sizes tried: {}) | relais {}, best peer {} ({}): {ratio} | {}{} |\n",
        sizes
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        show(ours),
        show(peer.map(|p| p.0)),
        peer.map_or("–", |p| p.1),
        verdict(ok),
        dagger_if(
            [ours.map(|n| ("relais", n)), peer.map(|(n, s)| (s, n))]
                .into_iter()
                .flatten()
                .filter_map(|(s, n)| find(reports, MATRIX, s, n))
                .any(generator_bound)
        )
    );
    let _ = writeln!(
        w,
        "Caveat: the largest matrix size is an upper bound on what can be shown; a system \
         that holds the largest size tried may hold more.\n"
    );
}

/// A latency cell: "–" when no measured message arrived at all (every one
/// took longer than the window plus the drain, or was never sent).
fn ms_cell(r: &Report, v: f64) -> String {
    if r.latency_ms.samples == 0 {
        "–".into()
    } else {
        format!("{v:.2}")
    }
}

/// The p99 of a run for comparisons: a run in which no measured message
/// arrived counts as infinitely late.
fn p99_or_inf(r: &Report) -> f64 {
    if r.latency_ms.samples == 0 {
        f64::INFINITY
    } else {
        r.latency_ms.p99
    }
}

fn run_row(r: &Report) -> String {
    format!(
        "| {} | {}{} | {} | {} | {} | {:.2}% | {:.0} | {:.2} | {} | {} | {} | {} | {} |",
        r.clients,
        r.system,
        dagger_if(generator_bound(r)),
        r.expected,
        r.sent,
        r.received,
        r.delivered_ratio * 100.0,
        r.deliveries_per_s,
        r.mb_per_s,
        ms_cell(r, r.latency_ms.p50),
        ms_cell(r, r.latency_ms.p99),
        ms_cell(r, r.latency_ms.p999),
        ms_cell(r, r.latency_ms.max),
        fmt_opt(r.server_cpu_s_per_million, 3),
    )
}

const RUN_HEADER: &str = "| N | system | expected | sent | received | delivered | deliveries/s | MB/s | p50 ms | p99 ms | p99.9 ms | max ms | server CPU s / M deliveries |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

fn write_matrix(w: &mut String, reports: &[Report], sizes: &[usize]) {
    let any = reports.iter().find(|r| r.label == MATRIX);
    let Some(any) = any else { return };
    let _ = writeln!(
        w,
        "## Matrix: R = {} Hz, P = {} B, D = {} s\n\n{RUN_HEADER}",
        any.rate_hz, any.payload_bytes, any.duration_s
    );
    for &n in sizes {
        for s in SYSTEMS {
            if let Some(r) = find(reports, MATRIX, s, n) {
                let _ = writeln!(w, "{}", run_row(r));
            }
        }
    }
    let _ = writeln!(w);
}

fn write_overload(w: &mut String, reports: &[Report]) {
    let runs: Vec<&Report> = reports.iter().filter(|r| r.label == OVERLOAD).collect();
    let Some(any) = runs.first() else { return };
    let _ = writeln!(
        w,
        "## Overload: N = {}, R = {} Hz, P = {} B, D = {} s\n\n\
         The relais server also applies its per-client rate limit here (default 120 \
         messages/s, over-rate messages conflated at the sender), so at most half of the \
         expected deliveries can arrive by design. *sent* counts the measured messages the \
         clients managed to write before the window closed: a server that falls behind \
         holds its publishers back (Redis answers each `PUBLISH`; NATS and relais only by \
         TCP backpressure), and \"–\" latencies mean no measured message \
         arrived before the end of the drain.\n\n{RUN_HEADER}",
        any.clients, any.rate_hz, any.payload_bytes, any.duration_s
    );
    for r in runs {
        let _ = writeln!(w, "{}", run_row(r));
    }
    let _ = writeln!(w);
}

fn write_slow_consumer(w: &mut String, reports: &[Report]) {
    let runs: Vec<&Report> = reports
        .iter()
        .filter(|r| r.label == SLOW_CONSUMER && r.stall.is_some())
        .collect();
    let Some(any) = runs.first() else { return };
    let stall = any.stall.as_ref().expect("filtered");
    let _ = writeln!(
        w,
        "## Slow consumer: N = {}, R = {} Hz, client {} stops reading for {} s at +{} s\n\n\
         *Others' p99* is over every client but the stalled one (compare with the matrix run \
         at the same N). *First msg age* is, for each sender, the age of the first of its \
         messages the stalled client read after resuming (median / max over senders): the \
         staleness of the state it resumes with. *Stale read* counts messages it read after \
         resuming that were sent before; *caught up* is when it first read a message younger \
         than two periods. † as in the matrix.\n\n\
         | system | others' p99 ms | same N, no stall: p99 ms | first msg age median / max ms | stale read | caught up after ms | stalled client received | failed clients |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|",
        any.clients, any.rate_hz, stall.client, stall.stall_s, stall.at_s
    );
    for r in runs {
        let s = r.stall.as_ref().expect("filtered");
        let baseline = find(reports, MATRIX, &r.system, r.clients).map(|b| b.latency_ms.p99);
        let _ = writeln!(
            w,
            "| {}{} | {:.2} | {} | {:.1} / {:.1} | {} | {} | {} | {} |",
            r.system,
            dagger_if(generator_bound(r)),
            r.latency_ms.p99,
            fmt_opt(baseline, 2),
            s.first_after_resume_age_ms_p50,
            s.first_after_resume_age_ms_max,
            s.stale_after_resume,
            fmt_opt(s.catch_up_ms, 1),
            s.stalled_received,
            r.failed_clients,
        );
    }
    let _ = writeln!(w);
}

/// The slow-link runs at one rate of one system: the reader's report and
/// the senders'.
struct SlowlinkRun<'a> {
    link_kbit: u64,
    system: &'static str,
    reader: Option<&'a Report>,
    senders: Option<&'a Report>,
}

/// Every slow-link (rate, system) pair with a report, by rate, then system.
fn slowlink_runs(reports: &[Report]) -> Vec<SlowlinkRun<'_>> {
    let rates: BTreeSet<u64> = reports
        .iter()
        .filter(|r| r.label == SLOWLINK)
        .filter_map(|r| r.link_kbit)
        .collect();
    let mut runs = Vec::new();
    for k in rates {
        for system in SYSTEMS {
            let of = |reader: bool| {
                reports.iter().find(|r| {
                    r.label == SLOWLINK
                        && r.system == system
                        && r.link_kbit == Some(k)
                        && r.reader.is_some() == reader
                })
            };
            let (reader, senders) = (of(true), of(false));
            if reader.is_some() || senders.is_some() {
                runs.push(SlowlinkRun {
                    link_kbit: k,
                    system,
                    reader,
                    senders,
                });
            }
        }
    }
    runs
}

/// Seconds with at most one decimal: `12`, `1.8`.
fn secs_text(s: f64) -> String {
    let t = format!("{s:.1}");
    t.strip_suffix(".0")
        .map_or_else(|| t.clone(), str::to_owned)
}

/// A link rate for people: `250 kbit/s`, `1 Mbit/s`, `1.5 Mbit/s`.
fn fmt_rate(kbit: u64) -> String {
    if kbit >= 1000 {
        // f64's Display: 1 → "1", 1.5 → "1.5".
        format!("{} Mbit/s", kbit as f64 / 1000.0)
    } else {
        format!("{kbit} kbit/s")
    }
}

/// A state-age cell: "–" when the reader got no update in the window.
fn age_cell(r: &Report, v: f64) -> String {
    match &r.reader {
        Some(x) if x.state_age_ms.samples > 0 => format!("{v:.1}"),
        _ => "–".into(),
    }
}

fn write_slowlink(w: &mut String, reports: &[Report], meta: &str, plot: &str) {
    let runs = slowlink_runs(reports);
    let Some(any) = runs.iter().find_map(|r| r.reader.or(r.senders)) else {
        return;
    };
    let window = runs
        .iter()
        .find_map(|r| r.reader.and_then(|x| x.reader.as_ref()))
        .map_or_else(|| "–".into(), |x| secs_text(x.window_s));
    let _ = writeln!(
        w,
        "## Slow link: one reader behind a throttled link, N = {} senders at {} Hz, P = {} B, D = {} s\n\n\
         Generated by `bench/slowlink.sh`. Two network namespaces made for the run, joined by a \
         veth pair; the server and the N senders (which also read everything) in one, one client \
         that only reads in the other. The server's side of the veth has a `tbf` qdisc (the given \
         rate, burst 16 kb, latency 200 ms): it throttles only the direction server → reader. \
         The N × R updates per second the reader is sent (64 B of payload plus each protocol's \
         framing, ≈ 0.7 Mbit/s with TCP/IP headers) are more than 250 and 500 kbit/s carry.\n\n\
         *State age* = receive time − send time of every update the reader read in the last {window} s \
         of the window (senders and reader are two processes stamping on one clock: the wall \
         clock, read through the monotonic clock; no coordinated-omission correction). \
         *Received* counts those updates, against the N × R × {window} s the senders sent in as \
         long a span: relais conflates (latest update per sender wins), NATS and Redis queue. \
         *Others' p99* and *others' delivered* are the senders' own latency (CO-corrected, as \
         in the matrix) and share of the N × N × R × D deliveries among them: what the slow \
         reader costs everyone else. A † marks a senders process at ≥ 75 % of its core.\n",
        any.clients, any.rate_hz, any.payload_bytes, any.duration_s
    );
    if !meta.trim().is_empty() {
        let _ = writeln!(w, "```text\n{}\n```\n", meta.trim());
    }
    if let Some(r) = runs
        .iter()
        .find(|r| r.system == "relais" && r.link_kbit == SLOWLINK_REFERENCE_KBIT)
    {
        let p99 = r
            .reader
            .and_then(|x| x.reader.as_ref())
            .filter(|x| x.state_age_ms.samples > 0)
            .map(|x| x.state_age_ms.p99);
        let _ = writeln!(
            w,
            "Target: relais state age p99 ≤ {SLOWLINK_P99_MS} ms at {}, the other clients' p99 \
             unchanged. Measured: {}; others' p99 {} ms (compare with the unconstrained rates \
             below). {}\n",
            fmt_rate(SLOWLINK_REFERENCE_KBIT),
            p99.map_or_else(|| "no update read".into(), |v| format!("{v:.1} ms")),
            fmt_opt(r.senders.map(|s| s.latency_ms.p99), 2),
            verdict(p99.is_some_and(|v| v <= SLOWLINK_P99_MS))
        );
    }
    if !plot.is_empty() {
        let _ = writeln!(w, "![state age p99 at the reader vs link rate]({plot})\n");
    }
    let _ = writeln!(
        w,
        "| link | system | state age p50 ms | p99 ms | max ms | received (of sent) | received / s | others' p99 ms | others' delivered | failed clients |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for run in &runs {
        let (p50, p99, max, received, per_s) = match run.reader {
            Some(r) => {
                let x = r.reader.as_ref().expect("filtered");
                (
                    age_cell(r, x.state_age_ms.p50),
                    age_cell(r, x.state_age_ms.p99),
                    age_cell(r, x.state_age_ms.max),
                    format!(
                        "{} ({:.0}%)",
                        x.received_in_window,
                        if x.sent_in_window == 0 {
                            0.0
                        } else {
                            100.0 * x.received_in_window as f64 / x.sent_in_window as f64
                        }
                    ),
                    format!("{:.0}", x.received_in_window as f64 / x.window_s),
                )
            }
            None => {
                let dash = || "–".to_owned();
                (dash(), dash(), dash(), dash(), dash())
            }
        };
        let failed = run.reader.map_or(0, |r| r.failed_clients)
            + run.senders.map_or(0, |r| r.failed_clients);
        let _ = writeln!(
            w,
            "| {} | {}{} | {p50} | {p99} | {max} | {received} | {per_s} | {} | {} | {failed} |",
            fmt_rate(run.link_kbit),
            run.system,
            dagger_if(run.senders.is_some_and(generator_bound)),
            match run.senders {
                Some(s) => ms_cell(s, s.latency_ms.p99),
                None => "–".into(),
            },
            run.senders.map_or_else(
                || "–".into(),
                |s| format!("{:.2}%", s.delivered_ratio * 100.0)
            ),
        );
    }
    let _ = writeln!(w);
}

/// Colour of a system's line.
fn colour(system: &str) -> RGBColor {
    match system {
        "relais" => RGBColor(0xd6, 0x27, 0x28),
        "nats" => RGBColor(0x1f, 0x77, 0xb4),
        _ => RGBColor(0x2c, 0xa0, 0x2c),
    }
}

/// Registers the TTF file `font` as "sans-serif" for plotters.
fn register_font(font: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(font).with_context(|| format!("reading font {}", font.display()))?;
    // Fonts must live for the whole program in plotters' registry.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a usable TTF font", font.display()))
}

/// Draws the reader's state age (p99: thick line; p50: thin line) against
/// the link rate, one colour per system, both axes logarithmic, with the
/// relais target as a grey line, into a PNG at `out`. `font` as for
/// [`plot`].
pub fn slowlink_plot(reports: &[Report], out: &Path, font: &Path) -> anyhow::Result<()> {
    register_font(font)?;
    let runs = slowlink_runs(reports);
    let age = |r: &SlowlinkRun<'_>, p99: bool| {
        r.reader
            .and_then(|x| x.reader.as_ref())
            .filter(|x| x.state_age_ms.samples > 0)
            .map(|x| {
                if p99 {
                    x.state_age_ms.p99
                } else {
                    x.state_age_ms.p50
                }
            })
            .filter(|v| *v > 0.0)
    };
    // (system, p99 rather than p50, points)
    type Series = (&'static str, bool, Vec<(f64, f64)>);
    let series: Vec<Series> = SYSTEMS
        .iter()
        .flat_map(|&s| [(s, true), (s, false)])
        .map(|(s, p99)| {
            let pts = runs
                .iter()
                .filter(|r| r.system == s)
                .filter_map(|r| age(r, p99).map(|v| (r.link_kbit as f64, v)))
                .collect();
            (s, p99, pts)
        })
        .collect();
    let rates: Vec<f64> = runs
        .iter()
        .map(|r| r.link_kbit)
        .collect::<BTreeSet<u64>>()
        .into_iter()
        .map(|k| k as f64)
        .collect();
    let (x_lo, x_hi) = log_range(rates.iter().copied(), 1.3, (100.0, 10_000.0));
    let ys = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|&(_, v)| v))
        .chain([SLOWLINK_P99_MS]);
    // Never empty: the target is in it.
    let (y_lo, y_hi) = log_range(ys, 1.5, (SLOWLINK_P99_MS, SLOWLINK_P99_MS));

    let root = BitMapBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "State age at the throttled reader (ms, log scale)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            // Ticks at the rates measured, nowhere else.
            (x_lo..x_hi).log_scale().with_key_points(rates),
            (y_lo..y_hi).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("link rate, server → reader (kbit/s, log scale)")
        .y_desc("state age ms")
        .x_label_formatter(&|&x| fmt_rate(x.round() as u64))
        .label_style(("sans-serif", 15))
        .draw()?;
    // The target, dashed: every other of 60 steps, evenly spaced on the log axis.
    let step = (x_hi / x_lo).powf(1.0 / 60.0);
    chart
        .draw_series((0..60).step_by(2).map(|i| {
            let a = x_lo * step.powi(i);
            PathElement::new(
                [(a, SLOWLINK_P99_MS), (a * step, SLOWLINK_P99_MS)],
                BLACK.stroke_width(2),
            )
        }))?
        .label(format!("target: relais p99 ≤ {SLOWLINK_P99_MS} ms"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 8, y)], BLACK.stroke_width(2)));
    for (system, p99, pts) in series {
        let c = colour(system);
        let (width, radius) = if p99 { (3, 5) } else { (1, 3) };
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(width)))?
            .label(format!("{system} {}", if p99 { "p99" } else { "p50" }))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(width)));
        chart.draw_series(
            pts.iter()
                .map(|&(x, y)| Circle::new((x, y), radius, c.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Draws p99 latency and server CPU per million deliveries against N, one
/// line per system, into a PNG at `out`. `font` is a TTF file (registered
/// as "sans-serif"; plotters draws text with ab_glyph, no system font
/// lookup).
pub fn plot(reports: &[Report], out: &Path, font: &Path) -> anyhow::Result<()> {
    register_font(font)?;

    let sizes = matrix_sizes(reports);
    let max_n = sizes.last().copied().unwrap_or(10) as f64 * 1.05;
    let root = BitMapBackend::new(out, (1400, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(700);
    type Metric = fn(&Report) -> Option<f64>;
    let panels: [(_, &str, &str, Metric); 2] = [
        (left, "p99 latency (ms, log scale)", "ms", |r| {
            Some(r.latency_ms.p99)
        }),
        (
            right,
            "server CPU s per million deliveries (log scale)",
            "CPU s / M",
            |r| r.server_cpu_s_per_million,
        ),
    ];
    for (area, title, y_desc, metric) in panels {
        let series: Vec<(&str, Vec<(f64, f64)>)> = SYSTEMS
            .iter()
            .map(|s| {
                let pts = sizes
                    .iter()
                    .filter_map(|&n| {
                        find(reports, MATRIX, s, n)
                            .and_then(metric)
                            .filter(|v| *v > 0.0)
                            .map(|v| (n as f64, v))
                    })
                    .collect();
                (*s, pts)
            })
            .collect();
        let values = series.iter().flat_map(|(_, p)| p.iter().map(|&(_, v)| v));
        let (lo, hi) = log_range(values, 1.5, (0.01, 1.0));
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..max_n, (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("clients in the room (N), R = 60 Hz, P = 64 B")
            .y_desc(y_desc)
            .label_style(("sans-serif", 15))
            .draw()?;
        for (system, pts) in series {
            let c = colour(system);
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(3)))?
                .label(system)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(3)));
            chart.draw_series(pts.iter().map(|&(x, y)| Circle::new((x, y), 5, c.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Latency, ReaderReport};

    fn run(label: &str, system: &str, n: usize) -> Report {
        Report {
            system: system.into(),
            label: label.into(),
            clients: n,
            rate_hz: 60,
            payload_bytes: 64,
            duration_s: 20.0,
            expected: 100,
            received: 100,
            delivered_ratio: 1.0,
            latency_ms: Latency {
                p50: 1.0,
                p99: 3.0,
                p999: 4.0,
                max: 5.0,
                samples: 100,
            },
            ..Report::default()
        }
    }

    fn slowlink(system: &str, kbit: u64, p99: f64) -> [Report; 2] {
        let mut reader = run(SLOWLINK, system, 20);
        reader.link_kbit = Some(kbit);
        reader.reader = Some(ReaderReport {
            window_s: 12.0,
            state_age_ms: Latency {
                p50: p99 / 2.0,
                p99,
                p999: p99,
                max: p99 * 1.2,
                samples: 9000,
            },
            received_in_window: 9000,
            sent_in_window: 14400,
            received_per_sender: vec![450; 20],
            payload_bytes_per_s: 48000.0,
        });
        let mut senders = run(SLOWLINK, system, 20);
        senders.link_kbit = Some(kbit);
        [reader, senders]
    }

    const NOTES: &str = "## Reading these numbers (hand-written)\n\n- a note";

    fn doc<'a>() -> Doc<'a> {
        Doc {
            meta: "date: today",
            notes: NOTES,
            plot: "bench/benchmarks.png",
            slowlink_meta: "link: veth",
            slowlink_plot: "bench/slowlink.png",
            cluster_meta: "",
        }
    }

    #[test]
    fn compare_runs_alone_have_no_slow_link_section() {
        let reports = vec![run(MATRIX, "relais", 10), run(MATRIX, "nats", 10)];
        let md = markdown_doc(&reports, &doc());
        assert!(md.contains("## Matrix"));
        assert!(md.contains("## Targets"));
        assert!(!md.contains("## Slow link"));
        assert!(!md.contains("slowlink.png"));
        assert_eq!(md.matches("## Reading these numbers").count(), 1);
        // The short form renders the same document.
        assert_eq!(
            markdown(&reports, doc().meta, NOTES, doc().plot),
            markdown_doc(
                &reports,
                &Doc {
                    slowlink_meta: "",
                    slowlink_plot: "",
                    ..doc()
                }
            )
        );
    }

    #[test]
    fn slow_link_runs_get_a_section_with_or_without_the_rest() {
        let mut reports: Vec<Report> = [
            slowlink("redis", 500, 6400.0),
            slowlink("relais", 500, 80.0),
            slowlink("relais", 10_000, 2.0),
            slowlink("nats", 1000, 900.0),
        ]
        .into_iter()
        .flatten()
        .collect();
        for with_compare in [false, true] {
            if with_compare {
                reports.push(run(MATRIX, "relais", 10));
            }
            let md = markdown_doc(&reports, &doc());
            assert_eq!(md.contains("## Matrix"), with_compare, "{md}");
            assert_eq!(md.contains("## Targets"), with_compare, "{md}");
            assert_eq!(md.contains("## Plot"), with_compare, "{md}");
            assert!(md.contains("## Slow link"), "{md}");
            assert!(md.contains("![state age p99 at the reader vs link rate](bench/slowlink.png)"));
            assert!(md.contains("link: veth"));
            assert!(md.contains("Measured: 80.0 ms"), "{md}");
            assert!(md.contains("**met**"), "{md}");
            // Ordered by rate, then relais, NATS, Redis.
            let rows: Vec<&str> = md
                .lines()
                .filter(|l| l.starts_with("| ") && l.contains("bit/s |"))
                .collect();
            assert_eq!(rows.len(), 4, "{md}");
            assert!(
                rows[0].starts_with(
                    "| 500 kbit/s | relais | 40.0 | 80.0 | 96.0 | 9000 (62%) | 750 | 3.00 | 100.00% | 0 |"
                ),
                "{}",
                rows[0]
            );
            assert!(rows[1].starts_with("| 500 kbit/s | redis |"));
            assert!(rows[2].starts_with("| 1 Mbit/s | nats |"));
            assert!(rows[3].starts_with("| 10 Mbit/s | relais |"));
            // The notes come once, last.
            assert_eq!(md.matches("## Reading these numbers").count(), 1);
            assert!(md.trim_end().ends_with("- a note"));
        }
    }

    #[test]
    fn rates_read_well() {
        assert_eq!(fmt_rate(250), "250 kbit/s");
        assert_eq!(fmt_rate(1000), "1 Mbit/s");
        assert_eq!(fmt_rate(1500), "1.5 Mbit/s");
        assert_eq!(fmt_rate(10_000), "10 Mbit/s");
    }

    #[test]
    fn slow_link_plot_is_drawn() {
        let font = Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
        if !font.exists() {
            eprintln!("skipped: no {}", font.display());
            return;
        }
        let reports: Vec<Report> = [
            slowlink("relais", 250, 120.0),
            slowlink("nats", 250, 9000.0),
        ]
        .into_iter()
        .flatten()
        .collect();
        let out = std::env::temp_dir().join(format!("slowlink-test-{}.png", std::process::id()));
        slowlink_plot(&reports, &out, font).unwrap();
        let png = std::fs::read(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        assert!(png.starts_with(b"\x89PNG"));
    }
}
