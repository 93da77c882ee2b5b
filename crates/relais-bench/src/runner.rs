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
use crate::payload::{self, Header};
use crate::report::{Latency, Report, StallReport};
use crate::workload::{System, Workload};

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

/// Runs `workload` against the `system` server at `addr`.
pub async fn run(system: System, addr: &str, workload: &Workload) -> anyhow::Result<Report> {
    workload.validate().map_err(anyhow::Error::msg)?;
    match system {
        System::Relais => run_with(RelaisAdapter::new(addr), system, addr, workload).await,
        System::Nats => run_with(NatsAdapter::new(addr), system, addr, workload).await,
        System::Redis => run_with(RedisAdapter::new(addr)?, system, addr, workload).await,
    }
}

/// The schedule every client follows, in ns on the common clock.
#[derive(Debug)]
struct Plan {
    epoch: Instant,
    clients: usize,
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
        self.epoch.elapsed().as_nanos() as u64
    }

    fn instant(&self, ns: u64) -> tokio::time::Instant {
        (self.epoch + Duration::from_nanos(ns)).into()
    }

    fn measured_start_ns(&self) -> u64 {
        self.start_ns + self.warmup_messages * self.period_ns
    }
}

async fn run_with<A: Adapter>(
    adapter: A,
    system: System,
    addr: &str,
    w: &Workload,
) -> anyhow::Result<Report> {
    let epoch = Instant::now();
    let n = w.clients;
    let adapter = Arc::new(adapter);
    let connected: Vec<anyhow::Result<(A::Pub, A::Sub)>> = stream::iter(0..n)
        .map(|i| {
            let (adapter, room) = (adapter.clone(), w.room.clone());
            async move {
                adapter
                    .connect(i, &room)
                    .await
                    .with_context(|| format!("client {i}"))
            }
        })
        .buffered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let connected = connected.into_iter().collect::<anyhow::Result<Vec<_>>>()?;

    let period_ns = w.period_ns();
    let start_ns = epoch.elapsed().as_nanos() as u64 + START_DELAY.as_nanos() as u64;
    let warmup_messages = w.warmup_messages();
    let total_messages = warmup_messages + w.measured_messages();
    let send_end_ns = start_ns + total_messages * period_ns;
    let plan = Arc::new(Plan {
        epoch,
        clients: n,
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

    let tasks: Vec<_> = connected
        .into_iter()
        .enumerate()
        .map(|(i, (publisher, subscriber))| {
            tokio::spawn(client_task(i, plan.clone(), publisher, subscriber))
        })
        .collect();

    tokio::time::sleep_until(plan.instant(plan.measured_start_ns())).await;
    let cpu_start = CpuSample::take(w.server_pid);
    let mut outcomes = Vec::with_capacity(n);
    for t in tasks {
        outcomes.push(t.await.context("a client task panicked")?);
    }
    let cpu_end = CpuSample::take(w.server_pid);

    Ok(summarize(
        system, addr, w, &plan, outcomes, cpu_start, cpu_end,
    ))
}

/// CPU times at one instant.
struct CpuSample {
    at: Instant,
    server_ticks: Option<u64>,
    own_ticks: Option<u64>,
}

impl CpuSample {
    fn take(server_pid: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            server_ticks: server_pid.and_then(cpu::process_ticks),
            own_ticks: cpu::own_ticks(),
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
    hist: Histogram<u64>,
    received: u64,
    bytes: u64,
    reordered: u64,
    /// Per sender: the sequence number expected next at the earliest.
    next_seq: Vec<u64>,
}

impl Recorder {
    fn new(clients: usize) -> Self {
        Self {
            hist: new_histogram(),
            received: 0,
            bytes: 0,
            reordered: 0,
            next_seq: vec![0; clients],
        }
    }

    /// Records one delivery received at `now_ns`; returns its header and
    /// latency if it belongs to the measured window.
    fn record(&mut self, p: &[u8], now_ns: u64, plan: &Plan) -> Option<(Header, u64)> {
        let h = payload::read(p)?;
        let sender = h.sender as usize;
        if h.seq < plan.warmup_messages || sender >= self.next_seq.len() {
            return None;
        }
        if h.seq < self.next_seq[sender] {
            self.reordered += 1;
        }
        self.next_seq[sender] = h.seq + 1;
        let latency = now_ns.saturating_sub(h.sent_ns);
        self.hist.saturating_record(latency.max(HIST_LOW_NS));
        self.received += 1;
        self.bytes += p.len() as u64;
        Some((h, latency))
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
    let mut rec = Recorder::new(plan.clients);
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
            let Some((h, latency)) = rec.record(&p, now, plan) else {
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

fn summarize(
    system: System,
    addr: &str,
    w: &Workload,
    plan: &Plan,
    outcomes: Vec<ClientOutcome>,
    cpu_start: CpuSample,
    cpu_end: CpuSample,
) -> Report {
    let mut others = new_histogram();
    let mut stalled = new_histogram();
    let (mut sent, mut received, mut bytes, mut reordered) = (0, 0, 0, 0);
    let mut errors = Vec::new();
    let mut failed_clients = 0;
    let mut stall_report = None;
    for o in outcomes {
        sent += o.sent_measured;
        received += o.rec.received;
        bytes += o.rec.bytes;
        reordered += o.rec.reordered;
        if let Some(e) = o.error {
            failed_clients += 1;
            if errors.len() < MAX_ERRORS {
                errors.push(e);
            }
        }
        let is_stalled = w.stall.as_ref().is_some_and(|s| s.client == o.index);
        let target = if is_stalled {
            &mut stalled
        } else {
            &mut others
        };
        target
            .add(&o.rec.hist)
            .expect("histograms share their bounds");
        if let (Some(s), Some(obs)) = (&w.stall, o.stall) {
            let mut ages: Vec<u64> = obs.first_age_ns.iter().flatten().copied().collect();
            ages.sort_unstable();
            let ms = |ns: u64| ns as f64 / 1e6;
            stall_report = Some(StallReport {
                client: s.client,
                at_s: s.at.as_secs_f64(),
                stall_s: s.duration.as_secs_f64(),
                stalled_latency_ms: Latency::from_histogram(&stalled.clone_correct(plan.period_ns)),
                stalled_received: o.rec.received,
                first_after_resume_age_ms_p50: ages.get(ages.len() / 2).map_or(0.0, |&a| ms(a)),
                first_after_resume_age_ms_max: ages.last().map_or(0.0, |&a| ms(a)),
                stale_after_resume: obs.stale,
                catch_up_ms: obs.catch_up_ns.map(ms),
            });
        }
    }

    let expected = w.expected_deliveries();
    let undelivered = expected.saturating_sub(received);
    let secs = w.duration.as_secs_f64();
    let clk_tck = cpu::clock_ticks_per_second();
    let cpu_secs = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / clk_tck as f64),
        _ => None,
    };
    let server_cpu_s = cpu_secs(cpu_start.server_ticks, cpu_end.server_ticks);
    Report {
        system: system.to_string(),
        label: w.label.clone(),
        addr: addr.to_owned(),
        clients: w.clients,
        rate_hz: w.rate_hz,
        payload_bytes: w.payload_bytes,
        duration_s: secs,
        warmup_s: w.warmup.as_secs_f64(),
        drain_ms: w.drain.as_millis() as u64,
        sent,
        expected,
        received,
        undelivered,
        conflated: if system.conflates() { undelivered } else { 0 },
        lost: if system.conflates() { 0 } else { undelivered },
        delivered_ratio: received as f64 / expected as f64,
        deliveries_per_s: received as f64 / secs,
        mb_per_s: bytes as f64 / secs / 1e6,
        latency_ms: Latency::from_histogram(&others.clone_correct(plan.period_ns)),
        latency_raw_ms: Latency::from_histogram(&others),
        server_cpu_s,
        server_cpu_s_per_million: server_cpu_s
            .filter(|_| received > 0)
            .map(|s| s / (received as f64 / 1e6)),
        generator_cpu_s: cpu_secs(cpu_start.own_ticks, cpu_end.own_ticks),
        cpu_wall_s: cpu_end.at.duration_since(cpu_start.at).as_secs_f64(),
        clk_tck,
        reordered,
        failed_clients,
        errors,
        stall: stall_report,
    }
}
