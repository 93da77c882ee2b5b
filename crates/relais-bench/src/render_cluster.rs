//! The "Cluster" section of `BENCHMARKS.md`, from the runs of
//! `bench/cluster.sh` (labels `cluster-MEASURE-SETUP`, one run per round).
//!
//! Every number shown is the median over the runs of one setup (one
//! measurement, one N); ratios are medians of per-run or per-round ratios,
//! each taken between runs of one round (made minutes apart at most), never
//! between medians. A † marks a group in which some run had its generator at
//! ≥ 75 % of its core (as everywhere in the document); a ‡ one in which
//! other processes on the machine used ≥ 20 % of a core during some run.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::render::{dagger_if, fmt_opt, generator_bound, ROOM_DELIVERED, ROOM_P99_MS};
use crate::report::{Latency, Report};

/// Prefix of every cluster run's label.
pub const PREFIX: &str = "cluster-";
/// A run is marked ‡ when other processes used this share of a core.
const DISTURBED_CORES: f64 = 0.2;

/// What a set of runs measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Measure {
    /// The NATS hop's latency (small room).
    Latency,
    /// Server CPU per million deliveries.
    Cpu,
    /// The largest room held.
    Size,
}

/// Where the clients and servers were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Setup {
    /// One relais, no cluster: the reference.
    Single,
    /// A cluster of two nodes and NATS, every client on node A.
    OneNode,
    /// The same cluster, clients alternately on A and B; all servers on
    /// one core.
    Split,
    /// As `Split`, but node B on the generator's core.
    Spread,
}

impl Setup {
    const ALL: [Setup; 4] = [Setup::Single, Setup::OneNode, Setup::Split, Setup::Spread];

    fn name(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::OneNode => "one-node",
            Self::Split => "split",
            Self::Spread => "spread",
        }
    }

    /// How the setup reads in a table.
    fn describe(self, n: usize) -> String {
        let (a, b) = (n.div_ceil(2), n / 2);
        match self {
            Self::Single => "one relais, no cluster".into(),
            Self::OneNode => format!("cluster, all {n} on node A"),
            Self::Split => format!("cluster, {a} + {b} on A and B"),
            Self::Spread => format!("cluster, {a} + {b} on A and B, B on core 1"),
        }
    }
}

/// The measurement and setup of a label `cluster-MEASURE-SETUP`.
pub fn parse_label(label: &str) -> Option<(Measure, Setup)> {
    let rest = label.strip_prefix(PREFIX)?;
    let (measure, setup) = rest.split_once('-')?;
    let measure = match measure {
        "latency" => Measure::Latency,
        "cpu" => Measure::Cpu,
        "size" => Measure::Size,
        _ => return None,
    };
    let setup = Setup::ALL.into_iter().find(|s| s.name() == setup)?;
    Some((measure, setup))
}

/// Whether any cluster run is among `reports`.
pub fn has_cluster_runs(reports: &[Report]) -> bool {
    reports.iter().any(|r| parse_label(&r.label).is_some())
}

/// The median of `values` (the mean of the middle two for an even count);
/// `None` when there are none.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Whether other processes used at least [`DISTURBED_CORES`] of a core
/// during the run.
fn disturbed(r: &Report) -> bool {
    r.other_cpu_s
        .is_some_and(|o| r.cpu_wall_s > 0.0 && o >= DISTURBED_CORES * r.cpu_wall_s)
}

/// The runs of one setup of one measurement at one N.
struct Group<'a> {
    setup: Setup,
    runs: Vec<&'a Report>,
}

impl Group<'_> {
    fn median(&self, f: impl Fn(&Report) -> Option<f64>) -> Option<f64> {
        median(self.runs.iter().filter_map(|r| f(r)))
    }

    /// `median (min–max)` of `f` over the runs, with `digits` decimals.
    fn spread(&self, digits: usize, f: impl Fn(&Report) -> Option<f64>) -> String {
        let v: Vec<f64> = self.runs.iter().filter_map(|r| f(r)).collect();
        let (Some(m), Some(lo), Some(hi)) = (
            median(v.iter().copied()),
            v.iter().copied().reduce(f64::min),
            v.iter().copied().reduce(f64::max),
        ) else {
            return "–".into();
        };
        // One run, or all alike at the precision shown: no range.
        if format!("{lo:.digits$}") == format!("{hi:.digits$}") {
            format!("{m:.digits$}")
        } else {
            format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
        }
    }

    /// " †" and/or " ‡" as the group's runs deserve.
    fn marks(&self) -> String {
        let mut m = dagger_if(self.runs.iter().any(|r| generator_bound(r))).to_owned();
        if self.runs.iter().any(|r| disturbed(r)) {
            m.push_str(" ‡");
        }
        m
    }

    fn round(&self, round: Option<u32>) -> Option<&Report> {
        self.runs
            .iter()
            .copied()
            .find(|r| round.is_some() && r.round == round)
    }

    /// Median of the per-round ratios `f(self) / f(other)` over the rounds
    /// both have, with how many rounds there were.
    fn round_ratio(
        &self,
        other: &Group<'_>,
        f: impl Fn(&Report) -> Option<f64>,
    ) -> Option<(f64, usize)> {
        let ratios: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|r| {
                let o = other.round(r.round)?;
                let (a, b) = (f(r)?, f(o)?);
                (b > 0.0).then(|| a / b)
            })
            .collect();
        let count = ratios.len();
        median(ratios).map(|m| (m, count))
    }

    /// Whether the group held its room: median p99 under 20 ms, median
    /// delivered ≥ 99 %, no client failed in any run.
    fn holds(&self) -> bool {
        self.median(|r| Some(p99(r)))
            .is_some_and(|p| p < ROOM_P99_MS)
            && self
                .median(|r| Some(r.delivered_ratio))
                .is_some_and(|d| d >= ROOM_DELIVERED)
            && self.runs.iter().all(|r| r.failed_clients == 0)
    }
}

/// A run's p99, infinite when no measured message arrived.
fn p99(r: &Report) -> f64 {
    if r.latency_ms.samples == 0 {
        f64::INFINITY
    } else {
        r.latency_ms.p99
    }
}

/// The groups of `measure` at `n`, in setup order.
fn groups<'a>(reports: &'a [Report], measure: Measure, n: usize) -> Vec<Group<'a>> {
    Setup::ALL
        .into_iter()
        .filter_map(|setup| {
            let runs: Vec<&Report> = reports
                .iter()
                .filter(|r| r.clients == n && parse_label(&r.label) == Some((measure, setup)))
                .collect();
            (!runs.is_empty()).then_some(Group { setup, runs })
        })
        .collect()
}

fn sizes(reports: &[Report], measure: Measure) -> Vec<usize> {
    let set: BTreeSet<usize> = reports
        .iter()
        .filter(|r| parse_label(&r.label).is_some_and(|(m, _)| m == measure))
        .map(|r| r.clients)
        .collect();
    set.into_iter().collect()
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{:.2}%", v * 100.0))
}

/// A share of one core, in whole percent.
fn share(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{:.0} %", v * 100.0))
}

fn generator_share(r: &Report) -> Option<f64> {
    r.generator_cpu_s
        .filter(|_| r.cpu_wall_s > 0.0)
        .map(|g| g / r.cpu_wall_s)
}

/// Latency of `which` pairs of a run: all of them, same-node or
/// cross-node.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pairs {
    All,
    Same,
    Cross,
}

fn pairs(r: &Report, which: Pairs) -> Option<(Latency, f64)> {
    match which {
        Pairs::All => Some((r.latency_ms, r.delivered_ratio)),
        Pairs::Same | Pairs::Cross => {
            let c = r.cluster.as_ref()?;
            let p = if which == Pairs::Same {
                &c.same_node
            } else {
                &c.cross_node
            };
            (p.expected > 0).then(|| (p.latency_ms, p.received as f64 / p.expected as f64))
        }
    }
}

/// Writes the "Cluster" section (nothing without cluster runs). `meta` is
/// `cluster-meta.txt`, shown verbatim.
pub fn write_cluster(w: &mut String, reports: &[Report], meta: &str) {
    if !has_cluster_runs(reports) {
        return;
    }
    let _ = writeln!(
        w,
        "## Cluster: relais nodes joined through NATS (issue 13)\n\n\
         Generated by `bench/cluster.sh`. Each run starts its servers afresh on loopback: one \
         relais (*single*), or a `nats-server -js` and two relais nodes with `--cluster` \
         (*one-node*: every client on node A, B idle; *split*: client i on node A when i is \
         even, on B when odd). The generator is the matrix's (same workload, same measures; \
         one process, core 1), given several addresses (`--servers A,B`). As each payload \
         carries its sender's index, it tells a delivery between two clients of one node \
         (*same-node*, a client's own echo included) from one that crossed NATS \
         (*cross-node*) in the same run. *Nodes' CPU* is both relais nodes' utime + stime \
         summed; NATS's is shown apart.\n\n\
         **Pinning (3 servers, 2 cores).** The single node on core 0; in a cluster run NATS \
         and both nodes on core 0 too. The generator always has core 1 to itself. So a \
         cluster gets exactly the one core a single node gets: CPU per delivery compares \
         directly, and the generator is never competed with. *spread* (measurement 3 only) \
         moves node B to core 1, beside the generator: both nodes then have a core, at the \
         generator's expense.\n\n\
         Every number is the **median of the runs** of its row (one per round; *runs* says \
         how many); ratios are medians of ratios taken within one run (cross- vs same-node \
         pairs) or one round (setups run back to back, the order alternating by round). † a \
         run of the row had its generator at ≥ 75 % of its core: the generator, not the \
         servers, may have set that row's numbers; ‡ other processes on the \
         machine used ≥ 20 % of a core during a run of the row (the script waits for a \
         quiet machine and repeats such a run once).\n"
    );
    if !meta.trim().is_empty() {
        let _ = writeln!(w, "```text\n{}\n```\n", meta.trim());
    }
    write_hop(w, reports);
    write_cpu(w, reports);
    write_size(w, reports);
    let _ = writeln!(
        w,
        "**What these runs do not show.** This machine has 2 cores for NATS, two nodes \
         and the generator. A node on a machine of its own, NATS on another and a real \
         network between them are not measured: the NATS hop here is two loopback TCP \
         hops through processes sharing one core (no network latency, but every hop \
         waits for that core); and scale-out, two nodes serving together a room one \
         node's core cannot, is not shown either: packed, the cluster has one core like \
         the single node; spread, node B takes the generator's core, which is what a run \
         of this size needs for itself (the † rule exists for that). What the runs do \
         show is what crossing NATS costs in latency, what a cluster costs per delivery \
         on the same core, and what the largest room is on this machine either way.\n"
    );
}

/// Per N of `measure`: N, its groups, and one of its runs (for the
/// workload's parameters).
fn by_size<'a>(
    reports: &'a [Report],
    measure: Measure,
) -> Vec<(usize, Vec<Group<'a>>, &'a Report)> {
    sizes(reports, measure)
        .into_iter()
        .filter_map(|n| {
            let gs = groups(reports, measure, n);
            let any = *gs.first()?.runs.first()?;
            Some((n, gs, any))
        })
        .collect()
}

fn write_hop(w: &mut String, reports: &[Report]) {
    for (n, gs, any) in by_size(reports, Measure::Latency) {
        let _ = writeln!(
            w,
            "### 1. What a hop through NATS adds: N = {n}, R = {} Hz, P = {} B, D = {} s\n\n\
             | setup | pairs | runs | delivered | p50 ms | p99 ms (min–max) | p99.9 ms | max ms | generator core |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|",
            any.rate_hz, any.payload_bytes, any.duration_s
        );
        for g in &gs {
            let kinds: &[(Pairs, &str)] = match g.setup {
                Setup::Single => &[(Pairs::All, "all")],
                Setup::OneNode => &[(Pairs::All, "all (same node)")],
                Setup::Split | Setup::Spread => &[
                    (Pairs::Same, "same node"),
                    (Pairs::Cross, "cross node (through NATS)"),
                    (Pairs::All, "all"),
                ],
            };
            for &(kind, name) in kinds {
                let lat =
                    |f: fn(&Latency) -> f64| move |r: &Report| pairs(r, kind).map(|p| f(&p.0));
                let _ = writeln!(
                    w,
                    "| {}{} | {name} | {} | {} | {} | {} | {} | {} | {} |",
                    g.setup.describe(n),
                    g.marks(),
                    g.runs.len(),
                    pct(g.median(|r| pairs(r, kind).map(|p| p.1))),
                    fmt_opt(g.median(lat(|l| l.p50)), 3),
                    g.spread(3, lat(|l| l.p99)),
                    fmt_opt(g.median(lat(|l| l.p999)), 3),
                    fmt_opt(g.median(lat(|l| l.max)), 3),
                    share(g.median(generator_share)),
                );
            }
        }
        let _ = writeln!(w);
        write_hop_ratios(w, &gs);
    }
}

/// The hop in numbers: cross- vs same-node pairs within each split run,
/// and the setups against each other round by round.
fn write_hop_ratios(w: &mut String, gs: &[Group<'_>]) {
    let find = |s: Setup| gs.iter().find(|g| g.setup == s);
    let mut lines = Vec::new();
    if let Some(split) = find(Setup::Split) {
        let within = |f: fn(&Latency) -> f64| {
            let diffs: Vec<(f64, f64)> = split
                .runs
                .iter()
                .filter_map(|r| {
                    let (same, cross) = (pairs(r, Pairs::Same)?.0, pairs(r, Pairs::Cross)?.0);
                    let (a, b) = (f(&cross), f(&same));
                    (b > 0.0).then_some((a - b, a / b))
                })
                .collect();
            (
                median(diffs.iter().map(|d| d.0)),
                median(diffs.iter().map(|d| d.1)),
            )
        };
        let (d50, r50) = within(|l| l.p50);
        let (d99, r99) = within(|l| l.p99);
        if let (Some(d50), Some(r50), Some(d99), Some(r99)) = (d50, r50, d99, r99) {
            lines.push(format!(
                "**The hop**, cross-node against same-node pairs of the same split run (median \
                 over {} runs): p50 {d50:+.3} ms ({r50:.2}×), p99 {d99:+.3} ms ({r99:.2}×){}.",
                split.runs.len(),
                split.marks()
            ));
        }
    }
    let p50 = |r: &Report| Some(r.latency_ms.p50);
    let p99 = |r: &Report| Some(r.latency_ms.p99);
    let pairs_of = [
        (Setup::Split, Setup::OneNode, "split against all on node A"),
        (
            Setup::OneNode,
            Setup::Single,
            "all on node A against one relais without cluster",
        ),
    ];
    for (a, b, what) in pairs_of {
        if let (Some(ga), Some(gb)) = (find(a), find(b)) {
            if let (Some((r50, k)), Some((r99, _))) =
                (ga.round_ratio(gb, p50), ga.round_ratio(gb, p99))
            {
                lines.push(format!(
                    "All pairs, {what} (same round, median over {k} rounds): p50 {r50:.2}×, \
                     p99 {r99:.2}×."
                ));
            }
        }
    }
    for l in lines {
        let _ = writeln!(w, "- {l}");
    }
    let _ = writeln!(w);
}

fn write_cpu(w: &mut String, reports: &[Report]) {
    for (n, gs, any) in by_size(reports, Measure::Cpu) {
        let _ = writeln!(
            w,
            "### 2. Server CPU per million deliveries: N = {n}, R = {} Hz, P = {} B, D = {} s\n\n\
             | setup | runs | delivered | nodes' CPU s / M (min–max) | node A / node B s / M | NATS s / M | nodes + NATS s / M | p50 ms | p99 ms | same / cross-node p99 ms | generator core |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            any.rate_hz, any.payload_bytes, any.duration_s
        );
        let per_m = |s: f64, r: &Report| (r.received > 0).then(|| s / (r.received as f64 / 1e6));
        for g in &gs {
            let each = |i: usize| {
                g.median(|r| {
                    let c = r.cluster.as_ref()?;
                    per_m(*c.server_cpu_each_s.get(i)?, r)
                })
            };
            let nats = g.median(|r| r.cluster.as_ref()?.nats_cpu_s_per_million);
            let total = g.median(total_cpu);
            let split_p99 = |kind| g.median(|r| pairs(r, kind).map(|p| p.0.p99));
            let _ = writeln!(
                w,
                "| {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                g.setup.describe(n),
                g.marks(),
                g.runs.len(),
                pct(g.median(|r| Some(r.delivered_ratio))),
                g.spread(3, |r| r.server_cpu_s_per_million),
                match (each(0), each(1)) {
                    (Some(a), Some(b)) => format!("{a:.3} / {b:.3}"),
                    _ => "–".into(),
                },
                fmt_opt(nats, 3),
                fmt_opt(total, 3),
                fmt_opt(g.median(|r| Some(r.latency_ms.p50)), 2),
                fmt_opt(g.median(|r| Some(r.latency_ms.p99)), 2),
                match (split_p99(Pairs::Same), split_p99(Pairs::Cross)) {
                    (Some(a), Some(b)) if g.setup != Setup::OneNode => format!("{a:.2} / {b:.2}"),
                    _ => "–".into(),
                },
                share(g.median(generator_share)),
            );
        }
        let _ = writeln!(w);
        let find = |s: Setup| gs.iter().find(|g| g.setup == s);
        if let Some(single) = find(Setup::Single) {
            for g in gs.iter().filter(|g| g.setup != Setup::Single) {
                let nodes = g.round_ratio(single, |r| r.server_cpu_s_per_million);
                let with_nats = g.round_ratio(single, total_cpu);
                if let (Some((a, k)), Some((b, _))) = (nodes, with_nats) {
                    let _ = writeln!(
                        w,
                        "- {} against one relais (same round, median over {k} rounds): \
                         nodes' CPU per delivery **{a:.2}×**, nodes + NATS **{b:.2}×**{}.",
                        g.setup.describe(n),
                        dagger_if(
                            g.runs
                                .iter()
                                .chain(&single.runs)
                                .any(|r| generator_bound(r))
                        )
                    );
                }
            }
            let _ = writeln!(w);
        }
    }
}

/// Nodes' and NATS's CPU per million deliveries together (the nodes'
/// alone for a run without NATS).
fn total_cpu(r: &Report) -> Option<f64> {
    let nodes = r.server_cpu_s_per_million?;
    match &r.cluster {
        Some(c) => Some(nodes + c.nats_cpu_s_per_million?),
        None => Some(nodes),
    }
}

fn write_size(w: &mut String, reports: &[Report]) {
    // The size runs, and the CPU runs of the same setups (same workload).
    let mut ns: BTreeSet<usize> = sizes(reports, Measure::Size).into_iter().collect();
    if ns.is_empty() {
        return;
    }
    let shown = |s: Setup| matches!(s, Setup::Single | Setup::Split | Setup::Spread);
    ns.extend(sizes(reports, Measure::Cpu));
    // Per setup: the largest N held, and that row's marks.
    let mut held: Vec<(Setup, Option<usize>, String)> = Vec::new();
    let _ = writeln!(
        w,
        "### 3. The largest room: one relais against two nodes, R = 60 Hz, P = 64 B\n\n\
         A room is held with median p99 < {ROOM_P99_MS} ms, median delivered ≥ 99 % and no \
         client failed. Rows at an N of measurement 2 are its runs.\n\n\
         | N | setup | runs | delivered | p50 ms | p99 ms (min–max) | nodes' CPU s / M | against one relais, same round | NATS s / M | generator core | other processes | held |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for &n in &ns {
        let mut gs: Vec<Group<'_>> = groups(reports, Measure::Size, n);
        if gs.is_empty() {
            gs = groups(reports, Measure::Cpu, n);
        }
        let single = gs.iter().find(|g| g.setup == Setup::Single);
        for g in gs.iter().filter(|g| shown(g.setup)) {
            let holds = g.holds();
            let against = match single {
                Some(single) if g.setup != Setup::Single => g
                    .round_ratio(single, |r| r.server_cpu_s_per_million)
                    .map_or_else(|| "–".into(), |(x, _)| format!("{x:.2}×")),
                _ => "–".into(),
            };
            let entry = match held.iter_mut().find(|h| h.0 == g.setup) {
                Some(e) => e,
                None => {
                    held.push((g.setup, None, String::new()));
                    held.last_mut().expect("just pushed")
                }
            };
            if holds && entry.1.is_none_or(|m| m < n) {
                entry.1 = Some(n);
                entry.2 = g.marks();
            }
            let _ = writeln!(
                w,
                "| {n} | {}{} | {} | {} | {} | {} | {} | {against} | {} | {} | {} | {} |",
                g.setup.describe(n),
                g.marks(),
                g.runs.len(),
                pct(g.median(|r| Some(r.delivered_ratio))),
                fmt_opt(g.median(|r| Some(r.latency_ms.p50)), 2),
                g.spread(2, |r| Some(p99(r))),
                fmt_opt(g.median(|r| r.server_cpu_s_per_million), 3),
                fmt_opt(g.median(|r| r.cluster.as_ref()?.nats_cpu_s_per_million), 3),
                share(g.median(generator_share)),
                share(g.median(|r| r.other_cpu_s.map(|o| o / r.cpu_wall_s.max(1e-9)))),
                if holds { "yes" } else { "no" },
            );
        }
    }
    let tried = ns
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(w);
    let largest: Vec<String> = held
        .iter()
        .map(|(s, n, marks)| {
            let what = match s {
                Setup::Single => "one relais",
                Setup::Split => "two nodes on core 0",
                Setup::Spread => "two nodes, B on core 1",
                Setup::OneNode => "all on node A",
            };
            match n {
                Some(n) => format!("{what} **{n}**{marks}"),
                None => format!("{what} **none**"),
            }
        })
        .collect();
    let _ = writeln!(
        w,
        "Largest room held (sizes tried: {tried}): {}. The largest size tried bounds \
         what can be shown: a setup that holds it may hold more.\n",
        largest.join(", ")
    );
    if held.iter().any(|h| h.0 == Setup::Spread) {
        let _ = writeln!(
            w,
            "In the *B on core 1* rows the generator shares its core with node B: it is \
             starved rather than busy, so its core share reads low and no † shows, but its \
             clients read and send late (the latency and the deliveries conflated away are \
             then partly its own). Those rows say what this machine allows with a node per \
             core, not what the nodes would.\n"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ClusterReport, PairReport};

    #[test]
    fn labels_parse() {
        assert_eq!(
            parse_label("cluster-latency-split"),
            Some((Measure::Latency, Setup::Split))
        );
        assert_eq!(
            parse_label("cluster-size-one-node"),
            Some((Measure::Size, Setup::OneNode))
        );
        assert_eq!(
            parse_label("cluster-cpu-spread"),
            Some((Measure::Cpu, Setup::Spread))
        );
        assert_eq!(parse_label("cluster-cpu-other"), None);
        assert_eq!(parse_label("matrix"), None);
        assert_eq!(parse_label("cluster-foo-split"), None);
    }

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median([]), None);
        assert_eq!(median([f64::NAN, 5.0]), Some(5.0));
    }

    fn lat(p50: f64, p99: f64) -> Latency {
        Latency {
            p50,
            p99,
            p999: p99,
            max: p99,
            samples: 100,
        }
    }

    fn run(measure: &str, setup: &str, n: usize, round: u32, p99: f64, cpu: f64) -> Report {
        let split = setup == "split" || setup == "spread";
        Report {
            system: "relais".into(),
            label: format!("cluster-{measure}-{setup}"),
            clients: n,
            rate_hz: 60,
            payload_bytes: 64,
            duration_s: 5.0,
            expected: 1000,
            received: 1000,
            delivered_ratio: 1.0,
            latency_ms: lat(p99 / 2.0, p99),
            server_cpu_s: Some(cpu / 1000.0),
            server_cpu_s_per_million: Some(cpu),
            generator_cpu_s: Some(1.0),
            other_cpu_s: Some(0.0),
            cpu_wall_s: 5.5,
            round: Some(round),
            cluster: (setup != "single").then(|| ClusterReport {
                servers: vec!["a:1".into(), "b:2".into()],
                clients_per_server: vec![n / 2, n - n / 2],
                server_cpu_each_s: vec![cpu / 2000.0, cpu / 2000.0],
                nats_cpu_s: Some(0.0001),
                nats_cpu_s_per_million: Some(0.1),
                same_node: PairReport {
                    expected: 500,
                    received: 500,
                    latency_ms: lat(0.1, p99 * 0.8),
                    latency_raw_ms: lat(0.1, p99 * 0.8),
                },
                cross_node: if split {
                    PairReport {
                        expected: 500,
                        received: 490,
                        latency_ms: lat(0.3, p99),
                        latency_raw_ms: lat(0.3, p99),
                    }
                } else {
                    PairReport::default()
                },
            }),
            ..Report::default()
        }
    }

    #[test]
    fn renders_the_three_measurements_with_medians_and_ratios() {
        let mut reports = Vec::new();
        for round in 1..=3 {
            let k = f64::from(round);
            reports.push(run("latency", "single", 10, round, 0.2, 10.0));
            reports.push(run("latency", "one-node", 10, round, 0.3, 20.0));
            reports.push(run("latency", "split", 10, round, 0.5 * k, 20.0));
            reports.push(run("cpu", "single", 100, round, 3.0, 0.8));
            reports.push(run("cpu", "split", 100, round, 4.0, 1.0 + 0.1 * k));
            reports.push(run("size", "single", 200, round, 10.0, 0.4));
            reports.push(run("size", "split", 200, round, 30.0, 0.5));
            reports.push(run("size", "spread", 200, round, 15.0, 0.5));
        }
        // One disturbed, generator-bound run.
        reports[0].other_cpu_s = Some(2.0);
        reports[0].generator_cpu_s = Some(5.0);
        // The single node at 200 generator-bound in one round.
        reports[5].generator_cpu_s = Some(5.0);
        let mut md = String::new();
        write_cluster(&mut md, &reports, "date: today");
        assert!(md.contains("## Cluster"), "{md}");
        assert!(md.contains("date: today"));
        // Medians: the split's cross-node p99 is 0.5, 1.0, 1.5 -> 1.0.
        assert!(
            md.contains("| cluster, 5 + 5 on A and B | cross node (through NATS) | 3 | 98.00% | 0.300 | 1.000 (0.500–1.500) |"),
            "{md}"
        );
        assert!(
            md.contains("| one relais, no cluster † ‡ | all | 3 |"),
            "{md}"
        );
        // Within-run hop: cross p99 = 1.25 × same p99 in every run.
        assert!(md.contains("p99 +0.200 ms (1.25×)"), "{md}");
        // CPU: split / single per round = 1.1/0.8, 1.2/0.8, 1.3/0.8 -> 1.5.
        assert!(md.contains("nodes' CPU per delivery **1.50×**"), "{md}");
        // With NATS (0.1 s/M): 1.2/0.8, 1.3/0.8, 1.4/0.8 -> 1.625.
        assert!(md.contains("nodes + NATS **1.62×**"), "{md}");
        assert!(md.contains("| 18 % |"), "{md}");
        // Size: single and spread hold 200 (and 100, from the cpu runs),
        // the split on one core holds 100 only.
        assert!(md.contains("one relais **200** †"), "{md}");
        assert!(md.contains("two nodes on core 0 **100**"), "{md}");
        assert!(md.contains("two nodes, B on core 1 **200**"), "{md}");
        assert!(md.contains("sizes tried: 100, 200"), "{md}");
        // Nodes' CPU against one relais of the same round: 0.5 / 0.4.
        assert!(
            md.contains("| 200 | cluster, 100 + 100 on A and B | 3 | 100.00% | 15.00 | 30.00 | 0.500 | 1.25× |"),
            "{md}"
        );
        assert!(md.contains("In the *B on core 1* rows"), "{md}");
        assert!(md.contains("What these runs do not show"));
    }

    #[test]
    fn nothing_without_cluster_runs() {
        let mut md = String::new();
        write_cluster(&mut md, &[Report::default()], "meta");
        assert!(md.is_empty());
    }
}
