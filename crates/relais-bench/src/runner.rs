//! Runs a workload against one system: connects every client, runs each
//! client's send and receive loops as one tokio task, samples CPU times, and
//! merges what the clients measured into a [`Report`].
//!
//! # Timeline
//!
//! ```text
//! connect all ─▶ start ── warm-up ──▶ measured window (D) ──▶ send end ── drain ──▶ deadline
//!                                     └ CPU sample             (no sends after)      └ CPU sample, count
//! ```
//!
//! All times are ns since the UNIX epoch on the common
//! [`Clock`](crate::payload::Clock), so that a second generator process
//! given the same `start_at_unix_ns` follows the same schedule: the senders
//! and the reader of a slow-link run ([`Role::Reader`]).
//!
//! # The reader
//!
//! A reader run connects one client (index N, so its name differs from the
//! senders' `c0`…`c{N-1}` in the relais room), never publishes (its publisher
//! half only keeps the connection open) and reads until the deadline. Every
//! update it receives between `send end − window` and `send end` is one
//! state-age sample (receive time − send time, raw), whatever its sequence
//! number: a warm-up update read late is stale state all the same.
//!
//! Client `i` sends message `k` at `start + i·T/N + k·T` (T = 1/R): the
//! clients are spread over the period as real players are, not all
//! synchronized on one tick. Every loop is bounded: senders stop at the end
//! of the window even if they fell behind, receivers stop at the deadline.
//!
//! # Latency and coordinated omission
//!
//! Each delivery records `receive time − send time` (ns) in the receiving
//! client's histogram. The send time is stamped when the payload is handed
//! to the client library. Where a stall in the system delays a stream of
//! deliveries, a plain histogram would under-count the slow samples (the
//! messages that "would have" been measured during the stall are missing),
//! so the reported percentiles come from `Histogram::clone_correct` with the
//! expected interval between two messages of one sender to one recipient,
//! 1/R. That is exactly what calling `record_correct(value, 1/R)` for each
//! sample would give (the correction is applied per recorded value), done
//! once after the run so the receive path stays cheap. The uncorrected
//! percentiles are reported too.
//!
//! # Several servers
//!
//! [`run_on`] spreads the clients over several addresses, the nodes of a
//! relais cluster: client `i` connects to address `i mod k`
//! ([`crate::nodes`]). Each client keeps two histograms, one for senders on
//! its own node and one for the others (the deliveries that crossed NATS),
//! chosen by the sender index in the payload; the report's overall latency
//! is their sum. Server CPU is summed over every `--server-pid`; the NATS
//! server's (`--nats-pid`) is reported apart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use hdrhistogram::Histogram;

use crate::adapters::{
    Adapter, NatsAdapter, Publisher, RedisAdapter, RelaisAdapter, Subscriber, MAX_BATCH,
};
use crate::cpu;
use crate::nodes;
use crate::payload::{self, Clock, Header};
use crate::report::{ClusterReport, Latency, PairReport, ReaderReport, Report, StallReport};
use crate::workload::{Role, System, Workload};

/// Lowest latency the histograms resolve: 1 µs.
const HIST_LOW_NS: u64 = 1_000;
/// Highest latency the histograms hold (larger values are clamped): 60 s.
const HIST_HIGH_NS: u64 = 60_000_000_000;
/// How many clients connect at once.
const CONNECT_CONCURRENCY: usize = 64;
/// Time between the last connection and the first send.
const START_DELAY: Duration = Duration::from_millis(100);
/// At most this many error messages are kept in a report.
const MAX_ERRORS: usize = 5;
/// relais drops a client silent for three keepalive intervals (30 s by
/// default); the relais adapter answers `PING`s only along with a `DATA`,
/// which a reader never sends. Reader runs longer than this get a warning.
const RELAIS_READER_MAX: Duration = Duration::from_secs(27);

/// Runs `workload` against the `system` server at `addr`.
pub async fn run(system: System, addr: &str, workload: &Workload) -> anyhow::Result<Report> {
    run_on(system, &[addr.to_owned()], workload).await
}

/// Runs `workload` against `system` servers at `servers` (the nodes of a
/// cluster), client `i` on `servers[i mod k]`.
pub async fn run_on(
    system: System,
    servers: &[String],
    workload: &Workload,
) -> anyhow::Result<Report> {
    workload.validate().map_err(anyhow::Error::msg)?;
    anyhow::ensure!(!servers.is_empty(), "no server address");
    let s = servers;
    match system {
        System::Relais => {
            let adapters = s.iter().map(RelaisAdapter::new).collect();
            run_with(adapters, system, s, workload).await
        }
        System::Nats => {
            let adapters = s.iter().map(NatsAdapter::new).collect();
            run_with(adapters, system, s, workload).await
        }
        System::Redis => {
            let adapters = s
                .iter()
                .map(|a| RedisAdapter::new(a))
                .collect::<anyhow::Result<_>>()?;
            run_with(adapters, system, s, workload).await
        }
    }
}

/// The schedule every client follows, in ns since the UNIX epoch on the
/// common clock.
#[derive(Debug)]
struct Plan {
    clock: Clock,
    clients: usize,
    /// Server addresses the clients are spread over.
    nodes: usize,
    payload_bytes: usize,
    period_ns: u64,
    /// When message 0 of client 0 is due.
    start_ns: u64,
    /// Messages per client before the measured window.
    warmup_messages: u64,
    /// Messages per client in all (warm-up + measured).
    total_messages: u64,
    /// No sends from here on.
    send_end_ns: u64,
    /// Receivers stop and count here.
    deadline_ns: u64,
    stall: Option<StallPlan>,
}

#[derive(Debug, Clone, Copy)]
struct StallPlan {
    client: usize,
    from_ns: u64,
    until_ns: u64,
}

impl Plan {
    fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    fn instant(&self, ns: u64) -> tokio::time::Instant {
        self.clock.instant(ns).into()
    }

    fn measured_start_ns(&self) -> u64 {
        self.start_ns + self.warmup_messages * self.period_ns
    }
}

async fn run_with<A: Adapter>(
    adapters: Vec<A>,
    system: System,
    servers: &[String],
    w: &Workload,
) -> anyhow::Result<Report> {
    let nodes = adapters.len();
    let clock = Clock::new();
    let n = w.clients;
    if w.role == Role::Reader && system == System::Relais {
        let life = w.warmup + w.duration + w.drain;
        if life > RELAIS_READER_MAX {
            eprintln!(
                "warning: a relais reader silent for {life:?} may be dropped by the server's \
                 keepalive (three intervals, 30 s by default): keep warm-up + duration + drain \
                 under {RELAIS_READER_MAX:?}"
            );
        }
    }
    // A reader is one client, numbered after the senders.
    let indices = match w.role {
        Role::All => 0..n,
        Role::Reader => n..n + 1,
    };
    let adapters = Arc::new(adapters);
    let connected: Vec<anyhow::Result<(A::Pub, A::Sub)>> = stream::iter(indices)
        .map(|i| {
            let (adapters, room) = (adapters.clone(), w.room.clone());
            async move {
                let node = nodes::node_of(i, nodes);
                adapters[node]
                    .connect(i, &room)
                    .await
                    .with_context(|| format!("client {i} (server {node})"))
            }
        })
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let connected = connected.into_iter().collect::<anyhow::Result<Vec<_>>>()?;

    let period_ns = w.period_ns();
    let soonest = clock.now_ns() + START_DELAY.as_nanos() as u64;
    let start_ns = match w.start_at_unix_ns {
        None => soonest,
        Some(at) if at >= clock.now_ns() => at,
        Some(at) => {
            eprintln!(
                "warning: the start time passed {:.0} ms before the clients were connected; \
                 starting now (a second process given the same start time is out of step)",
                clock.now_ns().saturating_sub(at) as f64 / 1e6
            );
            soonest
        }
    };
    let warmup_messages = w.warmup_messages();
    let total_messages = warmup_messages + w.measured_messages();
    let send_end_ns = start_ns + total_messages * period_ns;
    let plan = Arc::new(Plan {
        clock,
        clients: n,
        nodes,
        payload_bytes: w.payload_bytes,
        period_ns,
        start_ns,
        warmup_messages,
        total_messages,
        send_end_ns,
        deadline_ns: send_end_ns + w.drain.as_nanos() as u64,
        stall: w.stall.as_ref().map(|s| {
            let from_ns = start_ns + warmup_messages * period_ns + s.at.as_nanos() as u64;
            StallPlan {
                client: s.client,
                from_ns,
                until_ns: from_ns + s.duration.as_nanos() as u64,
            }
        }),
    });

    if w.role == Role::Reader {
        let (publisher, subscriber) = connected.into_iter().next().context("no reader")?;
        let window_start_ns = send_end_ns.saturating_sub(w.reader_window().as_nanos() as u64);
        let task = tokio::spawn(reader_task(
            plan.clone(),
            n,
            window_start_ns,
            publisher,
            subscriber,
        ));
        tokio::time::sleep_until(plan.instant(plan.measured_start_ns())).await;
        let cpu_start = CpuSample::take(w);
        let outcome = task.await.context("the reader task panicked")?;
        let cpu_end = CpuSample::take(w);
        return Ok(summarize_reader(
            system, servers, w, &plan, outcome, cpu_start, cpu_end,
        ));
    }

    let tasks: Vec<_> = connected
        .into_iter()
        .enumerate()
        .map(|(i, (publisher, subscriber))| {
            tokio::spawn(client_task(i, plan.clone(), publisher, subscriber))
        })
        .collect();

    tokio::time::sleep_until(plan.instant(plan.measured_start_ns())).await;
    let cpu_start = CpuSample::take(w);
    let mut outcomes = Vec::with_capacity(n);
    for t in tasks {
        outcomes.push(t.await.context("a client task panicked")?);
    }
    let cpu_end = CpuSample::take(w);

    Ok(summarize(
        system, servers, w, &plan, outcomes, cpu_start, cpu_end,
    ))
}

/// CPU times at one instant.
struct CpuSample {
    at: Instant,
    /// Per server process, in the order given.
    server_ticks: Vec<Option<u64>>,
    nats_ticks: Option<u64>,
    own_ticks: Option<u64>,
    machine_ticks: Option<u64>,
}

impl CpuSample {
    fn take(w: &Workload) -> Self {
        Self {
            at: Instant::now(),
            server_ticks: w
                .server_pids
                .iter()
                .map(|&pid| cpu::process_ticks(pid))
                .collect(),
            nats_ticks: w.nats_pid.and_then(cpu::process_ticks),
            own_ticks: cpu::own_ticks(),
            machine_ticks: cpu::machine_ticks(),
        }
    }
}

/// What one client measured.
struct ClientOutcome {
    index: usize,
    sent_measured: u64,
    rec: Recorder,
    stall: Option<StallObservation>,
    error: Option<String>,
}

/// Deliveries to one client.
struct Recorder {
    /// Latency of deliveries from senders on this client's node
    /// ([`SAME`]) and from the other nodes ([`CROSS`]; unused with one
    /// server).
    hists: [Histogram<u64>; 2],
    /// Deliveries received, by the same split.
    received_by: [u64; 2],
    bytes: u64,
    reordered: u64,
    /// Per sender: the sequence number expected next at the earliest.
    next_seq: Vec<u64>,
    /// Per sender: the half of `hists` its deliveries go to ([`SAME`] or
    /// [`CROSS`]), worked out once rather than per delivery.
    pair_of: Vec<u8>,
}

/// Index of the same-node half of [`Recorder::hists`].
const SAME: usize = 0;
/// Index of the cross-node half of [`Recorder::hists`].
const CROSS: usize = 1;

impl Recorder {
    /// The recorder of client `index` of `plan`.
    fn new(index: usize, plan: &Plan) -> Self {
        let node = nodes::node_of(index, plan.nodes);
        let pair_of = (0..plan.clients)
            .map(|sender| {
                let pair = if nodes::node_of(sender, plan.nodes) == node {
                    SAME
                } else {
                    CROSS
                };
                pair as u8
            })
            .collect();
        Self {
            hists: [new_histogram(), new_histogram()],
            received_by: [0; 2],
            bytes: 0,
            reordered: 0,
            next_seq: vec![0; plan.clients],
            pair_of,
        }
    }

    /// Deliveries received (measured window), both halves.
    fn received(&self) -> u64 {
        self.received_by[SAME] + self.received_by[CROSS]
    }

    /// Senders on this client's node (itself included).
    fn same_node_senders(&self) -> u64 {
        self.pair_of
            .iter()
            .filter(|&&p| usize::from(p) == SAME)
            .count() as u64
    }

    /// Records one delivery (header `h`, `len` bytes) received at `now_ns`;
    /// returns its latency if it belongs to the measured window.
    fn record(&mut self, h: Header, len: usize, now_ns: u64, plan: &Plan) -> Option<u64> {
        let sender = h.sender as usize;
        if h.seq < plan.warmup_messages || sender >= self.next_seq.len() {
            return None;
        }
        if h.seq < self.next_seq[sender] {
            self.reordered += 1;
        }
        self.next_seq[sender] = h.seq + 1;
        let latency = now_ns.saturating_sub(h.sent_ns);
        let pair = usize::from(self.pair_of[sender]);
        self.hists[pair].saturating_record(latency.max(HIST_LOW_NS));
        self.received_by[pair] += 1;
        self.bytes += len as u64;
        Some(latency)
    }

    /// Every delivery's latency, same-node and cross-node together.
    fn all(&self) -> Histogram<u64> {
        let mut all = self.hists[SAME].clone();
        all.add(&self.hists[CROSS])
            .expect("histograms share their bounds");
        all
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, 3).expect("valid histogram bounds")
}

/// What the stalled client saw after resuming.
struct StallObservation {
    resumed_ns: Option<u64>,
    /// Per sender: age of its first message received after the resume.
    first_age_ns: Vec<Option<u64>>,
    stale: u64,
    catch_up_ns: Option<u64>,
}

async fn client_task<P: Publisher, S: Subscriber>(
    index: usize,
    plan: Arc<Plan>,
    mut publisher: P,
    subscriber: S,
) -> ClientOutcome {
    // Both loops share the task; the publisher lives until both are done so
    // the connection stays open through the drain.
    let (sent, received) = tokio::join!(
        send_loop(index, &plan, &mut publisher),
        receive_loop(index, &plan, subscriber)
    );
    let (sent_measured, send_error) = sent;
    let (rec, stall, recv_error) = received;
    ClientOutcome {
        index,
        sent_measured,
        rec,
        stall,
        error: send_error
            .map(|e| format!("client {index} send: {e:#}"))
            .or(recv_error.map(|e| format!("client {index} receive: {e:#}"))),
    }
}

/// Sends on schedule until the end of the window. Returns how many measured
/// messages were sent, and the error that stopped it early, if any.
async fn send_loop<P: Publisher>(
    index: usize,
    plan: &Plan,
    publisher: &mut P,
) -> (u64, Option<anyhow::Error>) {
    let offset = plan.period_ns * index as u64 / plan.clients as u64;
    let mut buf = vec![0u8; plan.payload_bytes];
    let mut sent_measured = 0;
    let send_end = plan.instant(plan.send_end_ns);
    for seq in 0..plan.total_messages {
        tokio::time::sleep_until(plan.instant(plan.start_ns + offset + seq * plan.period_ns)).await;
        let now = plan.now_ns();
        if now >= plan.send_end_ns {
            break; // fell behind: the window is over all the same
        }
        payload::write(
            &mut buf,
            Header {
                sender: index as u32,
                seq,
                sent_ns: now,
            },
        );
        let payload = Bytes::copy_from_slice(&buf);
        match tokio::time::timeout_at(send_end, publisher.publish(payload)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return (sent_measured, Some(e)),
            Err(_) => break, // a publish blocked past the window
        }
        if seq >= plan.warmup_messages {
            sent_measured += 1;
        }
    }
    (sent_measured, None)
}

/// Reads until the deadline (stopping for the stall if this is the stalled
/// client) and records every delivery.
async fn receive_loop<S: Subscriber>(
    index: usize,
    plan: &Plan,
    mut subscriber: S,
) -> (Recorder, Option<StallObservation>, Option<anyhow::Error>) {
    let mut rec = Recorder::new(index, plan);
    let stall = plan.stall.filter(|s| s.client == index);
    let mut obs = stall.map(|_| StallObservation {
        resumed_ns: None,
        first_age_ns: vec![None; plan.clients],
        stale: 0,
        catch_up_ns: None,
    });
    let deadline = plan.instant(plan.deadline_ns);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut error = None;
    loop {
        let mut wake = deadline;
        if let (Some(s), Some(o)) = (&stall, &mut obs) {
            if o.resumed_ns.is_none() {
                if plan.now_ns() >= s.from_ns {
                    // The stall: read nothing, let the system deal with it.
                    tokio::time::sleep_until(plan.instant(s.until_ns)).await;
                    o.resumed_ns = Some(plan.now_ns());
                    continue;
                }
                wake = plan.instant(s.from_ns);
            }
        }
        tokio::select! {
            r = subscriber.recv_batch(&mut batch) => match r {
                Ok(true) => {}
                Ok(false) => {
                    error = Some(anyhow::anyhow!("connection closed by the server"));
                    break;
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            },
            () = tokio::time::sleep_until(wake) => {
                if wake == deadline {
                    break;
                }
                continue;
            }
        }
        let now = plan.now_ns();
        for p in batch.drain(..) {
            let Some(h) = payload::read(&p) else {
                continue;
            };
            let Some(latency) = rec.record(h, p.len(), now, plan) else {
                continue;
            };
            if let Some(o) = &mut obs {
                if let Some(resumed) = o.resumed_ns {
                    let first = &mut o.first_age_ns[h.sender as usize];
                    if first.is_none() {
                        *first = Some(latency);
                    }
                    if h.sent_ns < resumed {
                        o.stale += 1;
                    }
                    if o.catch_up_ns.is_none() && latency < 2 * plan.period_ns {
                        o.catch_up_ns = Some(now.saturating_sub(resumed));
                    }
                }
            }
        }
    }
    (rec, obs, error)
}

/// What the reader measured.
struct ReaderOutcome {
    rec: Recorder,
    /// State age of the updates received in the window (raw).
    state_age: Histogram<u64>,
    in_window: u64,
    bytes_in_window: u64,
    per_sender: Vec<u64>,
    error: Option<String>,
}

/// The reader: reads until the deadline, never sends. `publisher` is only
/// held so that its connection stays open (a relais client whose write half
/// is shut down leaves the room).
async fn reader_task<P: Publisher, S: Subscriber>(
    plan: Arc<Plan>,
    index: usize,
    window_start_ns: u64,
    publisher: P,
    mut subscriber: S,
) -> ReaderOutcome {
    let _publisher = publisher;
    let mut out = ReaderOutcome {
        rec: Recorder::new(index, &plan),
        state_age: new_histogram(),
        in_window: 0,
        bytes_in_window: 0,
        per_sender: vec![0; plan.clients],
        error: None,
    };
    let deadline = plan.instant(plan.deadline_ns);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            r = subscriber.recv_batch(&mut batch) => match r {
                Ok(true) => {}
                Ok(false) => {
                    out.error = Some("reader: connection closed by the server".into());
                    break;
                }
                Err(e) => {
                    out.error = Some(format!("reader: {e:#}"));
                    break;
                }
            },
            () = tokio::time::sleep_until(deadline) => break,
        }
        let now = plan.now_ns();
        let in_window = (window_start_ns..=plan.send_end_ns).contains(&now);
        for p in batch.drain(..) {
            let Some(h) = payload::read(&p) else {
                continue;
            };
            let sender = h.sender as usize;
            if sender >= plan.clients {
                continue;
            }
            if in_window {
                let age = now.saturating_sub(h.sent_ns);
                out.state_age.saturating_record(age.max(HIST_LOW_NS));
                out.in_window += 1;
                out.bytes_in_window += p.len() as u64;
                out.per_sender[sender] += 1;
            }
            out.rec.record(h, p.len(), now, &plan);
        }
    }
    out
}

fn summarize_reader(
    system: System,
    servers: &[String],
    w: &Workload,
    plan: &Plan,
    o: ReaderOutcome,
    cpu_start: CpuSample,
    cpu_end: CpuSample,
) -> Report {
    let expected = w.reader_expected();
    let received = o.rec.received();
    let window = w.reader_window().as_secs_f64();
    let reader = ReaderReport {
        window_s: window,
        state_age_ms: Latency::from_histogram(&o.state_age),
        received_in_window: o.in_window,
        sent_in_window: (w.clients as f64 * f64::from(w.rate_hz) * window).round() as u64,
        received_per_sender: o.per_sender,
        payload_bytes_per_s: o.bytes_in_window as f64 / window,
    };
    let mut r = base_report(
        system,
        servers,
        w,
        &cpu_start,
        &cpu_end,
        received,
        o.rec.bytes,
    );
    if let Some(c) = &mut r.cluster {
        // The one reader's pairs: each sender with the reader.
        let same = o.rec.same_node_senders();
        let per_pair = w.measured_messages();
        fill_pairs(
            c,
            plan,
            &o.rec.hists,
            o.rec.received_by,
            [same * per_pair, (w.clients as u64 - same) * per_pair],
        );
    }
    let all = o.rec.all();
    r.expected = expected;
    r.undelivered = expected.saturating_sub(received);
    r.conflated = if system.conflates() { r.undelivered } else { 0 };
    r.lost = if system.conflates() { 0 } else { r.undelivered };
    r.delivered_ratio = received as f64 / expected as f64;
    r.latency_ms = Latency::from_histogram(&all.clone_correct(plan.period_ns));
    r.latency_raw_ms = Latency::from_histogram(&all);
    r.reordered = o.rec.reordered;
    r.failed_clients = usize::from(o.error.is_some());
    r.errors = o.error.into_iter().collect();
    r.reader = Some(reader);
    r
}

/// Fills the same-node and cross-node halves of a cluster report from the
/// two histograms (`hists`: same, cross), the deliveries received and
/// expected by the same split.
fn fill_pairs(
    c: &mut ClusterReport,
    plan: &Plan,
    hists: &[Histogram<u64>; 2],
    received: [u64; 2],
    expected: [u64; 2],
) {
    let pair = |i: usize| PairReport {
        expected: expected[i],
        received: received[i],
        latency_ms: Latency::from_histogram(&hists[i].clone_correct(plan.period_ns)),
        latency_raw_ms: Latency::from_histogram(&hists[i]),
    };
    c.same_node = pair(SAME);
    c.cross_node = pair(CROSS);
}

/// The fields every report fills the same way (the cluster part but its
/// pair split, which [`fill_pairs`] adds).
fn base_report(
    system: System,
    servers: &[String],
    w: &Workload,
    cpu_start: &CpuSample,
    cpu_end: &CpuSample,
    received: u64,
    bytes: u64,
) -> Report {
    let secs = w.duration.as_secs_f64();
    let clk_tck = cpu::clock_ticks_per_second();
    let cpu_secs = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / clk_tck as f64),
        _ => None,
    };
    let per_million = |s: Option<f64>| {
        s.filter(|_| received > 0)
            .map(|s| s / (received as f64 / 1e6))
    };
    // Every server process's CPU, or none if one could not be read.
    let each: Option<Vec<f64>> = cpu_start
        .server_ticks
        .iter()
        .zip(&cpu_end.server_ticks)
        .map(|(&a, &b)| cpu_secs(a, b))
        .collect();
    let each = each.unwrap_or_default();
    let server_cpu_s = (!each.is_empty()).then(|| each.iter().sum::<f64>());
    let nats_cpu_s = cpu_secs(cpu_start.nats_ticks, cpu_end.nats_ticks);
    let cluster = (servers.len() > 1 || w.nats_pid.is_some()).then(|| {
        ClusterReport {
            servers: servers.to_vec(),
            clients_per_server: match w.role {
                Role::All => nodes::clients_per_node(w.clients, servers.len()),
                // The one reader, numbered after the senders.
                Role::Reader => (0..servers.len())
                    .map(|j| usize::from(nodes::node_of(w.clients, servers.len()) == j))
                    .collect(),
            },
            server_cpu_each_s: each.clone(),
            nats_cpu_s,
            nats_cpu_s_per_million: per_million(nats_cpu_s),
            ..ClusterReport::default()
        }
    });
    let generator_cpu_s = cpu_secs(cpu_start.own_ticks, cpu_end.own_ticks);
    // The machine's CPU time less every process measured: what the rest of
    // the machine did meanwhile (only where every process was measured).
    let nats = match w.nats_pid {
        Some(_) => nats_cpu_s,
        None => Some(0.0),
    };
    let other_cpu_s = match (
        cpu_secs(cpu_start.machine_ticks, cpu_end.machine_ticks),
        server_cpu_s,
        nats,
        generator_cpu_s,
    ) {
        (Some(all), Some(s), Some(n), Some(g)) => Some((all - s - n - g).max(0.0)),
        _ => None,
    };
    Report {
        system: system.to_string(),
        label: w.label.clone(),
        addr: servers.join(","),
        clients: w.clients,
        rate_hz: w.rate_hz,
        payload_bytes: w.payload_bytes,
        duration_s: secs,
        warmup_s: w.warmup.as_secs_f64(),
        drain_ms: w.drain.as_millis() as u64,
        received,
        deliveries_per_s: received as f64 / secs,
        mb_per_s: bytes as f64 / secs / 1e6,
        server_cpu_s,
        server_cpu_s_per_million: per_million(server_cpu_s),
        generator_cpu_s,
        other_cpu_s,
        cpu_wall_s: cpu_end.at.duration_since(cpu_start.at).as_secs_f64(),
        clk_tck,
        link_kbit: w.link_kbit,
        round: w.round,
        cluster,
        ..Report::default()
    }
}

fn summarize(
    system: System,
    servers: &[String],
    w: &Workload,
    plan: &Plan,
    outcomes: Vec<ClientOutcome>,
    cpu_start: CpuSample,
    cpu_end: CpuSample,
) -> Report {
    let mut stalled = new_histogram();
    // The clients that did not stall, split by pair (same, cross node).
    let mut split = [new_histogram(), new_histogram()];
    let mut received_by = [0; 2];
    let (mut sent, mut received, mut bytes, mut reordered) = (0, 0, 0, 0);
    let mut errors = Vec::new();
    let mut failed_clients = 0;
    let mut stall_report = None;
    for o in outcomes {
        sent += o.sent_measured;
        received += o.rec.received();
        bytes += o.rec.bytes;
        reordered += o.rec.reordered;
        if let Some(e) = o.error {
            failed_clients += 1;
            if errors.len() < MAX_ERRORS {
                errors.push(e);
            }
        }
        received_by[SAME] += o.rec.received_by[SAME];
        received_by[CROSS] += o.rec.received_by[CROSS];
        let is_stalled = w.stall.as_ref().is_some_and(|s| s.client == o.index);
        for (pair, from) in o.rec.hists.iter().enumerate() {
            let into = if is_stalled {
                &mut stalled
            } else {
                &mut split[pair]
            };
            into.add(from).expect("histograms share their bounds");
        }
        if let (Some(s), Some(obs)) = (&w.stall, o.stall) {
            let mut ages: Vec<u64> = obs.first_age_ns.iter().flatten().copied().collect();
            ages.sort_unstable();
            let ms = |ns: u64| ns as f64 / 1e6;
            stall_report = Some(StallReport {
                client: s.client,
                at_s: s.at.as_secs_f64(),
                stall_s: s.duration.as_secs_f64(),
                stalled_latency_ms: Latency::from_histogram(&stalled.clone_correct(plan.period_ns)),
                stalled_received: o.rec.received(),
                first_after_resume_age_ms_p50: ages.get(ages.len() / 2).map_or(0.0, |&a| ms(a)),
                first_after_resume_age_ms_max: ages.last().map_or(0.0, |&a| ms(a)),
                stale_after_resume: obs.stale,
                catch_up_ms: obs.catch_up_ns.map(ms),
            });
        }
    }

    // The clients that did not stall, both pairs together.
    let mut others = split[SAME].clone();
    others
        .add(&split[CROSS])
        .expect("histograms share their bounds");
    let expected = w.expected_deliveries();
    let undelivered = expected.saturating_sub(received);
    let mut base = base_report(system, servers, w, &cpu_start, &cpu_end, received, bytes);
    if let Some(c) = &mut base.cluster {
        let same = nodes::same_node_pairs(w.clients, servers.len()) * w.measured_messages();
        fill_pairs(c, plan, &split, received_by, [same, expected - same]);
    }
    Report {
        sent,
        expected,
        undelivered,
        conflated: if system.conflates() { undelivered } else { 0 },
        lost: if system.conflates() { 0 } else { undelivered },
        delivered_ratio: received as f64 / expected as f64,
        latency_ms: Latency::from_histogram(&others.clone_correct(plan.period_ns)),
        latency_raw_ms: Latency::from_histogram(&others),
        reordered,
        failed_clients,
        errors,
        stall: stall_report,
        ..base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(clients: usize, nodes: usize) -> Plan {
        Plan {
            clock: Clock::new(),
            clients,
            nodes,
            payload_bytes: 64,
            period_ns: 1_000_000,
            start_ns: 0,
            warmup_messages: 1,
            total_messages: 10,
            send_end_ns: 0,
            deadline_ns: 0,
            stall: None,
        }
    }

    /// Every sender's measured message to `rec` once (sequence number 1).
    fn one_from_each(rec: &mut Recorder, plan: &Plan) {
        for sender in 0..plan.clients as u32 {
            let h = Header {
                sender,
                seq: 1,
                sent_ns: 0,
            };
            assert!(rec.record(h, 64, 1_000, plan).is_some());
        }
    }

    #[test]
    fn deliveries_split_by_the_senders_node() {
        // 5 clients on 2 nodes: client 1 shares node 1 with client 3.
        let two = plan(5, 2);
        let mut rec = Recorder::new(1, &two);
        one_from_each(&mut rec, &two);
        // Warm-up messages and unknown senders are not recorded.
        let warm_up = Header {
            sender: 0,
            seq: 0,
            sent_ns: 0,
        };
        assert!(rec.record(warm_up, 64, 1_000, &two).is_none());
        let stranger = Header {
            sender: 9,
            seq: 1,
            sent_ns: 0,
        };
        assert!(rec.record(stranger, 64, 1_000, &two).is_none());
        assert_eq!(rec.received_by, [2, 3]);
        assert_eq!(rec.received(), 5);
        assert_eq!(rec.same_node_senders(), 2);
        assert_eq!(rec.hists[SAME].len(), 2);
        assert_eq!(rec.hists[CROSS].len(), 3);

        // One server: every delivery is same-node.
        let one = plan(5, 1);
        let mut rec = Recorder::new(3, &one);
        one_from_each(&mut rec, &one);
        assert_eq!(rec.received_by, [5, 0]);
        assert_eq!(rec.same_node_senders(), 5);
    }
}
