//! What a running server counts, for Prometheus: connections, joins,
//! refusals and leaves by reason, rooms and members, messages in, deliveries
//! out, conflation, rate limiting, bytes, write batches, the age of state
//! when it is written, the memory budget and the process (CPU, memory,
//! descriptors). README.md ("Run it in production") lists every metric.
//!
//! **Off unless served.** [`Metrics::disabled`] (the default) records
//! nothing: every recording method returns at its first branch. A server
//! that serves `/metrics` ([`crate::ops`]) is built with
//! [`ServerContext::with_metrics`](crate::ServerContext::with_metrics).
//!
//! **Cost.** Nothing is recorded per recipient of a fan-out: a publish adds
//! its conflations once, and each writer counts what it writes (deliveries,
//! bytes, the state age of every message) in its own [`WriterTally`], plain
//! integers with no clock read of their own, which it adds to the shared
//! atomics at most every [`FLUSH_EVERY`].
//!
//! **Labels.** Only `transport` (`tcp`, `ws`) and `reason` (the refusal and
//! close reasons of PROTOCOL.md), so the number of series is fixed: no
//! per-room or per-name labels.
//!
//! The exposition (OpenMetrics text, which Prometheus reads) is written by
//! `prometheus-client`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};
use relais_protocol::{CloseReason, RefuseReason, LENGTH_PREFIX_LEN};

use crate::budget::MemoryBudget;
use crate::outbox::{NOT_A_MESSAGE, UNTIMED_MESSAGE};

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How a client is connected: the `transport` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The TCP port (with or without TLS).
    Tcp,
    /// The WebSocket port (with or without TLS).
    Ws,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Ws => "ws",
        }
    }
}

/// The `reason` label of `relais_refusals_total`, by wire code (index 0:
/// a code this server does not send).
const REFUSE_LABELS: [&str; 16] = [
    "other",
    "name_taken",
    "invalid_name",
    "invalid_room",
    "unsupported_version",
    "server_full",
    "room_full",
    "token_required",
    "token_invalid",
    "token_expired",
    "not_allowed",
    "overloaded",
    "too_many_connections",
    "too_many_joins",
    "resume_invalid",
    "cluster_unavailable",
];

/// The `reason` label of `relais_leaves_total`, by wire code (the last: a
/// code this server does not send).
const CLOSE_LABELS: [&str; 9] = [
    "normal",
    "server_shutdown",
    "slow_consumer",
    "timeout",
    "rate_limit",
    "protocol_error",
    "connection_lost",
    "read_only",
    "other",
];

/// Bucket bounds of `relais_state_age_seconds`, in nanoseconds: the powers
/// of two from 2^18 (262 µs) to 2^32 (4.3 s), so that a writer finds an
/// age's bucket with one instruction ([`age_bucket`]) for each message it
/// writes.
const AGE_BOUNDS_NS: [u64; 15] = {
    let mut bounds = [0; 15];
    let mut i = 0;
    while i < bounds.len() {
        bounds[i] = 1 << (AGE_SHIFT + i as u32);
        i += 1;
    }
    bounds
};

/// log2 of the first bound of [`AGE_BOUNDS_NS`].
const AGE_SHIFT: u32 = 18;

/// The bucket of [`AGE_BOUNDS_NS`] that `age` falls in (the same as
/// [`bucket`]'s, without a search): bucket `i` holds ages up to
/// 2^(18+i) ns.
fn age_bucket(age: u64) -> usize {
    let above = age.saturating_sub(1) >> AGE_SHIFT;
    ((u64::BITS - above.leading_zeros()) as usize).min(AGE_BOUNDS_NS.len())
}

/// The process's clock for publish stamps: nanoseconds since the first
/// call, plus 2, so that a stamp is never [`NOT_A_MESSAGE`] or
/// [`UNTIMED_MESSAGE`].
pub fn stamp_now() -> u64 {
    stamp_at(Instant::now())
}

/// The stamp of the instant `at` (a writer's, which has read the clock
/// for its own use already).
pub fn stamp_at(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| at);
    u64::try_from(at.saturating_duration_since(epoch).as_nanos())
        .unwrap_or(u64::MAX)
        .saturating_add(2)
}

/// Bucket bounds of `relais_outbox_pending_bytes`.
const BYTES_BOUNDS: [u64; 10] = [
    64, 256, 1_024, 4_096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216,
];

/// Bucket bounds of `relais_write_batch_messages`.
const COUNT_BOUNDS: [u64; 11] = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 1024];

/// A server's metrics, or nothing ([`Metrics::disabled`]). Cloning gives
/// another handle on the same counts.
#[derive(Debug, Clone, Default)]
pub struct Metrics(Option<Arc<Inner>>);

#[derive(Debug)]
struct Inner {
    registry: Registry,
    /// By [`Transport`] (its index).
    connections: Vec<Gauge>,
    accepted: Vec<Counter>,
    /// By wire code ([`REFUSE_LABELS`], [`CLOSE_LABELS`]).
    joins: Counter,
    refusals: Vec<Counter>,
    leaves: Vec<Counter>,
    rooms: Gauge,
    members: Gauge,
    messages_in: Counter,
    deliveries: Counter,
    conflated: Counter,
    rate_limited: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    batch_bytes: Histogram,
    batch_messages: Histogram,
    state_age: Histogram,
}

impl Metrics {
    /// Metrics that record nothing (a server without a metrics listener).
    pub fn disabled() -> Self {
        Self(None)
    }

    /// Metrics that record, with the memory budget (`budget`) and the
    /// process's own figures read at each scrape.
    pub fn enabled(budget: Arc<MemoryBudget>) -> Self {
        let mut registry = Registry::default();
        let transports = [Transport::Tcp, Transport::Ws].map(Transport::label);
        let connections: Vec<Gauge> = labelled(
            &mut registry,
            "relais_connections",
            "Connections open now (in their handshake or members), by transport",
            "transport",
            &transports,
        );
        let accepted: Vec<Counter> = labelled(
            &mut registry,
            "relais_connections_accepted",
            "Connections accepted (admitted past the connection, per-address and memory limits), by transport",
            "transport",
            &transports,
        );
        let refusals = labelled(
            &mut registry,
            "relais_refusals",
            "Connections and handshakes refused, by reason (REFUSED codes, PROTOCOL.md)",
            "reason",
            &REFUSE_LABELS,
        );
        let leaves = labelled(
            &mut registry,
            "relais_leaves",
            "Members that left their room, by reason (slow_consumer and timeout are drops; timeout: unanswered keepalive pings)",
            "reason",
            &CLOSE_LABELS,
        );
        let counter = |registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>| {
            let c = Counter::default();
            match unit {
                Some(unit) => registry.register_with_unit(name, help, unit, c.clone()),
                None => registry.register(name, help, c.clone()),
            }
            c
        };
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let joins = counter(
            &mut registry,
            "relais_joins",
            "Clients that joined a room",
            None,
        );
        let rooms = gauge(&mut registry, "relais_rooms", "Rooms that exist now");
        let members = gauge(&mut registry, "relais_members", "Members of all rooms now");
        let messages_in = counter(
            &mut registry,
            "relais_messages_received",
            "Messages (DATA frames) received from members",
            None,
        );
        let deliveries = counter(
            &mut registry,
            "relais_deliveries",
            "Relayed messages written to recipients' connections (live and late-joiner snapshot)",
            None,
        );
        let conflated = counter(
            &mut registry,
            "relais_messages_conflated",
            "Relayed messages replaced in a recipient's outbox by a newer one from the same sender before they were written",
            None,
        );
        let rate_limited = counter(
            &mut registry,
            "relais_messages_rate_limited",
            "Messages a member sent over its rate (or while the memory budget was spent) that its next message replaced before they were relayed",
            None,
        );
        let bytes_in = counter(
            &mut registry,
            "relais_received",
            "Bytes of DATA frames received from members (length prefix included; not TLS or WebSocket framing)",
            Some(Unit::Bytes),
        );
        let bytes_out = counter(
            &mut registry,
            "relais_sent",
            "Protocol frame bytes written to members (length prefix included; not TLS or WebSocket framing)",
            Some(Unit::Bytes),
        );
        let batch_bytes = Histogram::new(&BYTES_BOUNDS, 1.0);
        // Histograms carry their unit in the name only: a `# UNIT` line on
        // a histogram, though valid OpenMetrics, trips some parsers.
        registry.register(
            "relais_outbox_pending_bytes",
            "Bytes waiting in a recipient's outbox when its writer took them (one observation per write batch)",
            batch_bytes.clone(),
        );
        let batch_messages = Histogram::new(&COUNT_BOUNDS, 1.0);
        registry.register(
            "relais_write_batch_messages",
            "Relayed messages per write batch",
            batch_messages.clone(),
        );
        let state_age = Histogram::new(&AGE_BOUNDS_NS, 1e-9);
        registry.register(
            "relais_state_age_seconds",
            "Time from a message's publish to its write to a recipient's connection (live messages; the server's share of staleness)",
            state_age.clone(),
        );
        registry.register(
            "relais_build",
            "The relais version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(BudgetCollector(budget)));
        registry.register_collector(Box::new(ProcessCollector));
        Self(Some(Arc::new(Inner {
            registry,
            connections,
            accepted,
            joins,
            refusals,
            leaves,
            rooms,
            members,
            messages_in,
            deliveries,
            conflated,
            rate_limited,
            bytes_in,
            bytes_out,
            batch_bytes,
            batch_messages,
            state_age,
        })))
    }

    /// Whether this records anything.
    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Every metric, in the OpenMetrics text format ([`CONTENT_TYPE`]);
    /// empty if disabled.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Some(m) = &self.0 {
            // Writing to a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut out, &m.registry);
        }
        out
    }

    /// A connection was admitted: counted open until the guard is dropped.
    pub fn connection_opened(&self, transport: Transport) -> OpenConnection {
        OpenConnection(self.0.as_ref().map(|m| {
            let i = transport as usize;
            m.accepted[i].inc();
            m.connections[i].inc();
            m.connections[i].clone()
        }))
    }

    /// A client joined a room.
    pub fn joined(&self) {
        if let Some(m) = &self.0 {
            m.joins.inc();
            m.members.inc();
        }
    }

    /// A member left its room.
    pub fn left(&self, reason: CloseReason) {
        if let Some(m) = &self.0 {
            m.members.dec();
            let i = usize::from(reason.code()).min(CLOSE_LABELS.len() - 1);
            m.leaves[i].inc();
        }
    }

    /// A connection or handshake was refused.
    pub fn refused(&self, reason: RefuseReason) {
        if let Some(m) = &self.0 {
            let code = usize::from(reason.code());
            m.refusals[if code < REFUSE_LABELS.len() { code } else { 0 }].inc();
        }
    }

    /// A room was created (`1`) or removed (`-1`).
    pub fn rooms_changed(&self, by: i64) {
        if let Some(m) = &self.0 {
            m.rooms.inc_by(by);
        }
    }

    /// A member sent a `DATA` frame of `len` bytes (body).
    pub fn message_received(&self, len: usize) {
        if let Some(m) = &self.0 {
            m.messages_in.inc();
            m.bytes_in.inc_by((len + LENGTH_PREFIX_LEN) as u64);
        }
    }

    /// A member's held message (over its rate) was replaced by its next.
    pub fn rate_limited(&self) {
        if let Some(m) = &self.0 {
            m.rate_limited.inc();
        }
    }

    /// `n` waiting messages were replaced by newer ones in outboxes.
    pub fn conflated(&self, n: u64) {
        if let Some(m) = &self.0 {
            if n > 0 {
                m.conflated.inc_by(n);
            }
        }
    }

    /// A writer's tally of what it wrote, added to these metrics at most
    /// every [`FLUSH_EVERY`] and when it is dropped.
    pub fn writer(&self) -> WriterTally {
        WriterTally {
            metrics: self.0.clone(),
            tally: WriteTally::default(),
            due: None,
        }
    }
}

/// How long a writer may keep what it wrote uncounted: what it counted
/// shows in `/metrics` at most this late.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// What one recipient's writer wrote, counted locally (no atomic operation,
/// no shared cache line per batch: at N = 100 there are ~36,000 batches a
/// second) and added to the server's metrics at most every [`FLUSH_EVERY`]
/// ([`WriterTally::batch_written`] once due, a timer on [`WriterTally::due`]
/// when idle) and when dropped.
#[derive(Debug)]
pub struct WriterTally {
    metrics: Option<Arc<Inner>>,
    tally: WriteTally,
    /// When what is counted must be added, if anything is.
    due: Option<tokio::time::Instant>,
}

#[derive(Debug, Default)]
struct WriteTally {
    deliveries: u64,
    bytes: u64,
    batch_messages: Tally,
    batch_bytes: Tally,
    ages: Tally,
}

impl WriterTally {
    /// A write batch of `bytes` bytes went out just now; `stamps` are its
    /// frames' [stamps](crate::outbox::Batch::stamps). The loop over the
    /// frames is integer work on one array: no clock read per frame, no
    /// frame bytes touched, power-of-two age buckets.
    /// Written at `at`, which is also when the tally is added if it is
    /// due (no clock read of its own).
    pub fn batch_written(&mut self, stamps: &[u64], bytes: usize, at: tokio::time::Instant) {
        if self.metrics.is_some() {
            self.record(stamps, bytes, stamp_at(at.into_std()), at);
            self.flush_if_due(at);
        }
    }

    /// Counts a batch written at `now` (its stamp) or `at` (the same
    /// instant on tokio's clock, which schedules the flush).
    fn record(&mut self, stamps: &[u64], bytes: usize, now: u64, at: tokio::time::Instant) {
        let t = &mut self.tally;
        let mut messages = 0u64;
        for &stamp in stamps {
            messages += u64::from(stamp != NOT_A_MESSAGE);
            if stamp > UNTIMED_MESSAGE {
                t.ages.observe_age(now.saturating_sub(stamp));
            }
        }
        t.deliveries += messages;
        t.bytes += bytes as u64;
        t.batch_messages.observe(&COUNT_BOUNDS, messages);
        t.batch_bytes.observe(&BYTES_BOUNDS, bytes as u64);
        if self.due.is_none() {
            self.due = Some(at + FLUSH_EVERY);
        }
    }

    /// When [`flush`](Self::flush) must run, if something is counted.
    pub fn due(&self) -> Option<tokio::time::Instant> {
        self.due
    }

    /// Adds what is counted to the server's metrics if it is due.
    fn flush_if_due(&mut self, now: tokio::time::Instant) {
        if self.due.is_some_and(|due| due <= now) {
            self.flush();
        }
    }

    /// Adds what is counted to the server's metrics.
    pub fn flush(&mut self) {
        self.due = None;
        let Some(m) = &self.metrics else { return };
        let t = std::mem::take(&mut self.tally);
        m.deliveries.inc_by(t.deliveries);
        m.bytes_out.inc_by(t.bytes);
        m.batch_messages.add(&t.batch_messages);
        m.batch_bytes.add(&t.batch_bytes);
        m.state_age.add(&t.ages);
    }
}

impl Drop for WriterTally {
    fn drop(&mut self) {
        if self.due.is_some() {
            self.flush();
        }
    }
}

/// Registers a family of `M` with one label, `key`, created up front for
/// each of `values` (so each is exported from the start, at 0), and returns
/// their handles in that order.
fn labelled<M>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    key: &'static str,
    values: &[&'static str],
) -> Vec<M>
where
    M: EncodeMetric + TypedMetric + Default + Clone + fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<Vec<(&'static str, &'static str)>, M>::default();
    let handles = values
        .iter()
        .map(|&value| family.get_or_create(&vec![(key, value)]).clone())
        .collect();
    registry.register(name, help, family);
    handles
}

/// Counts a connection as open until dropped.
#[derive(Debug)]
pub struct OpenConnection(Option<Gauge>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(gauge) = &self.0 {
            gauge.dec();
        }
    }
}

/// A histogram over integer observations (nanoseconds, bytes, counts) with
/// fixed bounds, written `scale` times its unit. Lock-free: one atomic
/// counter per bucket, plus the sum; the count is the buckets' total.
/// Cloning gives another handle on the same counts.
#[derive(Debug, Clone)]
struct Histogram(Arc<Buckets>);

#[derive(Debug)]
struct Buckets {
    bounds: &'static [u64],
    scale: f64,
    /// One per bound, and the last for everything above.
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
}

/// Observations summed locally, to add to a [`Histogram`] at once.
#[derive(Debug, Default)]
struct Tally {
    /// Enough for the longest bounds, plus the overflow bucket.
    buckets: [u64; 16],
    sum: u64,
}

impl Tally {
    fn observe(&mut self, bounds: &[u64], v: u64) {
        self.buckets[bucket(bounds, v)] += 1;
        self.sum = self.sum.saturating_add(v);
    }

    /// [`observe`](Self::observe) on [`AGE_BOUNDS_NS`], without a search.
    fn observe_age(&mut self, age: u64) {
        self.buckets[age_bucket(age)] += 1;
        self.sum = self.sum.saturating_add(age);
    }
}

/// The bucket `v` falls in: the first bound at or above it, or the last.
fn bucket(bounds: &[u64], v: u64) -> usize {
    bounds.partition_point(|&b| b < v)
}

impl Histogram {
    fn new(bounds: &'static [u64], scale: f64) -> Self {
        debug_assert!(bounds.len() < Tally::default().buckets.len());
        Self(Arc::new(Buckets {
            bounds,
            scale,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }))
    }

    fn add(&self, tally: &Tally) {
        let h = &self.0;
        let mut any = false;
        for (bucket, &n) in h.buckets.iter().zip(&tally.buckets) {
            if n > 0 {
                bucket.fetch_add(n, Ordering::Relaxed);
                any = true;
            }
        }
        if any {
            h.sum.fetch_add(tally.sum, Ordering::Relaxed);
        }
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let h = &self.0;
        let mut count = 0;
        let buckets: Vec<(f64, u64)> = h
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let n = b.load(Ordering::Relaxed);
                count += n;
                let upper = h
                    .bounds
                    .get(i)
                    .map_or(f64::INFINITY, |&b| b as f64 * h.scale);
                (upper, n)
            })
            .collect();
        let sum = h.sum.load(Ordering::Relaxed) as f64 * h.scale;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The memory budget, read at each scrape. (Help texts written by
/// collectors end with a period as the registry's do: it adds one.)
#[derive(Debug)]
struct BudgetCollector(Arc<MemoryBudget>);

impl Collector for BudgetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let gauges = [
            (
                "relais_memory_budget_used",
                "Bytes of buffers charged to the server's memory budget now.",
                self.0.used(),
            ),
            (
                "relais_memory_budget_limit",
                "The server's memory budget (max_memory_bytes).",
                self.0.limit(),
            ),
        ];
        for (name, help, value) in gauges {
            let value = i64::try_from(value).unwrap_or(i64::MAX);
            let metric = ConstGauge::new(value);
            metric.encode(encoder.encode_descriptor(
                name,
                help,
                Some(&Unit::Bytes),
                metric.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// The process's CPU time, memory and descriptors, read from `/proc` at
/// each scrape (the names every Prometheus client library uses). Nothing
/// on systems without `/proc`.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    #[cfg(target_os = "linux")]
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Ok(me) = procfs::process::Process::myself() else {
            return Ok(());
        };
        let mut gauge = |name: &str, help: &str, unit: Option<Unit>, value: f64| {
            let metric = ConstGauge::new(value);
            metric.encode(encoder.encode_descriptor(
                name,
                help,
                unit.as_ref(),
                metric.metric_type(),
            )?)
        };
        let ticks = procfs::ticks_per_second() as f64;
        let page = procfs::page_size() as f64;
        if let Ok(stat) = me.stat() {
            gauge(
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(Unit::Bytes),
                stat.rss as f64 * page,
            )?;
            gauge(
                "process_virtual_memory",
                "Virtual memory size in bytes.",
                Some(Unit::Bytes),
                stat.vsize as f64,
            )?;
            gauge(
                "process_threads",
                "Threads of the process.",
                None,
                stat.num_threads as f64,
            )?;
            if let Ok(boot) = procfs::boot_time_secs() {
                gauge(
                    "process_start_time",
                    "Start time of the process since the Unix epoch in seconds.",
                    Some(Unit::Seconds),
                    boot as f64 + stat.starttime as f64 / ticks,
                )?;
            }
        }
        if let Ok(n) = me.fd_count() {
            gauge("process_open_fds", "Open file descriptors.", None, n as f64)?;
        }
        if let Ok(limits) = me.limits() {
            if let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit {
                gauge(
                    "process_max_fds",
                    "Most open file descriptors allowed (the soft limit).",
                    None,
                    max as f64,
                )?;
            }
        }
        if let Ok(stat) = me.stat() {
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent in seconds.",
                Some(&Unit::Seconds),
                cpu.metric_type(),
            )?)?;
        }
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn encode(&self, _encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_registry_records_and_encodes_nothing() {
        let m = Metrics::disabled();
        m.joined();
        m.refused(RefuseReason::NameTaken);
        let _open = m.connection_opened(Transport::Tcp);
        assert_eq!(m.encode(), "");
    }

    #[test]
    fn age_buckets_are_found_without_a_search_and_agree_with_one() {
        let mut ages = vec![0, 1, u64::MAX, u64::MAX - 1];
        for &b in &AGE_BOUNDS_NS {
            ages.extend([b - 1, b, b + 1, b / 2 * 3]);
        }
        for age in ages {
            assert_eq!(age_bucket(age), bucket(&AGE_BOUNDS_NS, age), "{age}");
        }
        assert_eq!(AGE_BOUNDS_NS[0], 262_144);
        assert_eq!(AGE_BOUNDS_NS[14], 1 << 32);
    }

    #[test]
    fn stamps_are_never_the_reserved_values_and_do_not_go_back() {
        let a = stamp_now();
        let b = stamp_now();
        assert!(a > UNTIMED_MESSAGE && b >= a);
    }

    #[test]
    fn buckets_take_values_up_to_their_bound() {
        assert_eq!(bucket(&COUNT_BOUNDS, 0), 0);
        assert_eq!(bucket(&COUNT_BOUNDS, 1), 1);
        assert_eq!(bucket(&COUNT_BOUNDS, 3), 3);
        assert_eq!(bucket(&COUNT_BOUNDS, 4), 3);
        assert_eq!(bucket(&COUNT_BOUNDS, 1024), 10);
        assert_eq!(bucket(&COUNT_BOUNDS, 1025), 11);
    }

    #[test]
    fn the_exposition_carries_every_series_with_bounded_labels() {
        let m = Metrics::enabled(Arc::new(MemoryBudget::new(1 << 20)));
        let open = m.connection_opened(Transport::Ws);
        m.joined();
        m.refused(RefuseReason::TooManyJoins);
        m.left(CloseReason::SlowConsumer);
        // A live message published 3 ms ago, a snapshot one, a presence
        // frame.
        let now = 10_000_000_000;
        let mut writer = m.writer();
        let stamps = [now - 3_000_000, UNTIMED_MESSAGE, NOT_A_MESSAGE];
        writer.record(&stamps, 100, now, tokio::time::Instant::now());
        let due = writer.due().expect("something to add");
        writer.flush_if_due(due - FLUSH_EVERY / 2);
        assert!(m.encode().contains("relais_deliveries_total 0"), "not yet");
        drop(writer); // A writer that ends adds what it counted.
        let text = m.encode();
        for line in [
            "relais_connections{transport=\"ws\"} 1",
            "relais_connections{transport=\"tcp\"} 0",
            "relais_connections_accepted_total{transport=\"ws\"} 1",
            "relais_joins_total 1",
            "relais_refusals_total{reason=\"too_many_joins\"} 1",
            "relais_refusals_total{reason=\"name_taken\"} 0",
            "relais_leaves_total{reason=\"slow_consumer\"} 1",
            "relais_members 0",
            "relais_deliveries_total 2",
            "relais_write_batch_messages_count 1",
            "relais_state_age_seconds_bucket{le=\"0.002097152\"} 0",
            "relais_state_age_seconds_bucket{le=\"0.004194304\"} 1",
            "relais_state_age_seconds_sum 0.003",
            "relais_sent_bytes_total 100",
            "relais_state_age_seconds_count 1",
            "relais_memory_budget_limit_bytes 1048576",
            "relais_build_info{version=",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        #[cfg(target_os = "linux")]
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "no {name:?} in\n{text}");
        }
        drop(open);
        assert!(m
            .encode()
            .contains("relais_connections{transport=\"ws\"} 0"));
    }
}
