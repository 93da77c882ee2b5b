//! Freshness-bounded sending: each recipient is written to at the pace its
//! connection really drains, so that what cannot go out yet waits in its
//! [`Outbox`](crate::outbox::Outbox), where a newer message replaces an older
//! one, instead of in the kernel, where it would age in a FIFO.
//!
//! The writer asks the [`Pacer`] before each batch. The pacer keeps the bytes
//! queued in the kernel for this connection (not yet sent, or sent and not yet
//! acknowledged: [`SendQueue::queued`]) under a **budget** of
//!
//! ```text
//! budget = max(FLOOR, goodput × (min_rtt + max(MARGIN, min_rtt)))
//! ```
//!
//! - `goodput` is what the peer really acknowledged per second (the growth of
//!   [`SendQueue::acked`]), the highest of the samples of the last second or
//!   so. On a link that is the bottleneck it is the link's rate.
//! - `min_rtt × goodput` is what must be in flight to keep the link busy, so a
//!   fast link with a long round trip is never capped; the extra
//!   `max(MARGIN, min_rtt)` lets the estimate grow (at least 2× per round trip
//!   on long links) when more becomes available, and covers the writer's wake-up
//!   delay. On a slow link with a short round trip this is `MARGIN` (20 ms) of
//!   data: the state a recipient receives is about that much older than the
//!   link's own delay, instead of seconds.
//!
//! Reading the kernel costs a system call, so the pacer only does it when the
//! queue *could* be over budget: it keeps an upper bound (the last reading
//! plus everything written since) and writes without asking while the bound
//! is under the budget, which on a fast link is nearly always.
//!
//! A connection that has data waiting, is over budget and sees nothing
//! acknowledged for the stall limit (`write_deadline`) is a slow consumer.

use std::time::Duration;

use tokio::time::Instant;

pub use crate::tcp_info::SendQueue;

/// The smallest budget: about one full-sized packet.
const FLOOR: u64 = 1500;
/// The least queueing the budget allows beyond one round trip.
const MARGIN: Duration = Duration::from_millis(20);
/// Goodput is sampled over at least this long (shorter samples are noise).
const MIN_SAMPLE: Duration = Duration::from_millis(10);
/// A goodput sample counts for between one and two of these.
const RATE_WINDOW: Duration = Duration::from_millis(500);
/// Bounds of a wait for the queue to drain.
const MIN_WAIT: Duration = Duration::from_millis(1);
const MAX_WAIT: Duration = Duration::from_millis(50);

/// What the writer should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Write everything waiting now.
    Write,
    /// The connection is over budget: ask again after this long.
    Wait(Duration),
    /// Over budget with nothing acknowledged for the whole stall limit.
    Stalled,
}

/// The pacing state of one connection (see the module docs).
#[derive(Debug)]
pub struct Pacer {
    stall_limit: Duration,
    /// Upper bound of the bytes in the kernel queue.
    queued_bound: u64,
    min_rtt: Duration,
    goodput: WindowedMax,
    /// The last goodput sample point: when, and the acknowledged total.
    sampled: Option<(Instant, u64)>,
    /// While over budget: when something was last acknowledged, and the
    /// acknowledged total then.
    waiting: Option<(Instant, u64)>,
}

impl Pacer {
    /// A pacer that reports [`Pace::Stalled`] after `stall_limit` over
    /// budget without progress.
    pub fn new(stall_limit: Duration) -> Self {
        Self {
            stall_limit,
            queued_bound: 0,
            min_rtt: Duration::ZERO,
            goodput: WindowedMax::default(),
            sampled: None,
            waiting: None,
        }
    }

    /// Records `bytes` handed to the connection.
    pub fn written(&mut self, bytes: usize) {
        self.queued_bound = self.queued_bound.saturating_add(bytes as u64);
    }

    /// The current budget, in bytes queued in the kernel.
    pub fn budget(&self, now: Instant) -> u64 {
        let horizon = self.min_rtt + self.min_rtt.max(MARGIN);
        let rate = self.goodput.get(now);
        let bytes = u128::from(rate) * horizon.as_micros() / 1_000_000;
        FLOOR.max(u64::try_from(bytes).unwrap_or(u64::MAX))
    }

    /// Decides whether to write now. `probe` reads the kernel's queue; it is
    /// called only when the queue may be over budget, and `None` (a
    /// transport that cannot tell) means "write".
    pub fn pace(&mut self, now: Instant, probe: impl FnOnce() -> Option<SendQueue>) -> Pace {
        if self.queued_bound <= self.budget(now) {
            self.waiting = None;
            return Pace::Write;
        }
        let Some(q) = probe() else {
            self.queued_bound = 0;
            self.waiting = None;
            return Pace::Write;
        };
        self.queued_bound = q.queued;
        self.min_rtt = q.min_rtt;
        match self.sampled {
            Some((at, acked)) if now.duration_since(at) >= MIN_SAMPLE => {
                let dt = now.duration_since(at).as_micros().max(1);
                let bytes = u128::from(q.acked.saturating_sub(acked));
                let rate = u64::try_from(bytes * 1_000_000 / dt).unwrap_or(u64::MAX);
                self.goodput.record(now, rate);
                self.sampled = Some((now, q.acked));
            }
            Some(_) => {}
            None => self.sampled = Some((now, q.acked)),
        }
        let budget = self.budget(now);
        if q.queued <= budget {
            self.waiting = None;
            return Pace::Write;
        }
        match self.waiting {
            Some((_, acked)) if q.acked != acked => self.waiting = Some((now, q.acked)),
            Some((since, _)) if now.duration_since(since) >= self.stall_limit => {
                return Pace::Stalled
            }
            Some(_) => {}
            None => self.waiting = Some((now, q.acked)),
        }
        let excess = (q.queued - budget).saturating_mul(1_000_000);
        let wait = match excess.checked_div(self.goodput.get(now)) {
            Some(micros) => Duration::from_micros(micros),
            None => MIN_WAIT * 5,
        };
        Pace::Wait(wait.clamp(MIN_WAIT, MAX_WAIT))
    }
}

/// The highest value recorded in the last one to two [`RATE_WINDOW`]s: values
/// go into back-to-back windows, and a window's maximum counts until two
/// window lengths after its start.
#[derive(Debug, Default)]
struct WindowedMax {
    /// The window in progress: its start, its maximum.
    current: Option<(Instant, u64)>,
    /// The window before it, if it was the one just before.
    previous: Option<(Instant, u64)>,
}

impl WindowedMax {
    fn roll(&mut self, now: Instant) {
        if let Some((start, max)) = self.current {
            if now >= start + RATE_WINDOW * 2 {
                self.current = None;
                self.previous = None;
            } else if now >= start + RATE_WINDOW {
                self.previous = Some((start, max));
                self.current = Some((start + RATE_WINDOW, 0));
            }
        }
    }

    fn record(&mut self, now: Instant, value: u64) {
        self.roll(now);
        match &mut self.current {
            Some((_, max)) => *max = (*max).max(value),
            None => self.current = Some((now, value)),
        }
    }

    fn get(&self, now: Instant) -> u64 {
        let live = |w: Option<(Instant, u64)>| match w {
            Some((start, max)) if now < start + RATE_WINDOW * 2 => max,
            _ => 0,
        };
        live(self.current).max(live(self.previous))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(queued: u64, acked: u64) -> Option<SendQueue> {
        Some(SendQueue {
            queued,
            acked,
            min_rtt: Duration::from_millis(1),
        })
    }

    #[test]
    fn writes_without_asking_the_kernel_while_surely_under_budget() {
        let mut p = Pacer::new(Duration::from_secs(5));
        let now = Instant::now();
        p.written(1000);
        assert_eq!(p.pace(now, || panic!("no need to ask")), Pace::Write);
        p.written(1000);
        // 2000 bytes may be queued: over the floor, so it asks.
        assert_eq!(p.pace(now, || queue(0, 2000)), Pace::Write);
        // The reading replaced the bound.
        assert_eq!(p.pace(now, || panic!("no need to ask")), Pace::Write);
    }

    #[test]
    fn a_transport_without_a_probe_is_not_paced() {
        let mut p = Pacer::new(Duration::from_secs(5));
        p.written(1 << 20);
        assert_eq!(p.pace(Instant::now(), || None), Pace::Write);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_follows_what_the_link_carries() {
        let mut p = Pacer::new(Duration::from_secs(5));
        let start = Instant::now();
        // A link carrying 100,000 bytes/s, with 10 KB queued throughout.
        let mut acked = 0;
        p.written(10_000);
        assert!(matches!(
            p.pace(start, || queue(10_000, acked)),
            Pace::Wait(_)
        ));
        for ms in (20..=200).step_by(20) {
            acked += 2_000;
            p.written(2_000);
            let now = start + Duration::from_millis(ms);
            let _ = p.pace(now, || queue(10_000, acked));
        }
        let now = start + Duration::from_millis(200);
        // 100 kB/s × (1 ms + 20 ms) = 2,100 bytes.
        assert_eq!(p.budget(now), 2_100);
        // 10 kB queued: the excess needs (10,000 - 2,100) / 100 kB/s = 79 ms
        // to drain; one wait is at most MAX_WAIT (50 ms).
        p.written(1);
        assert_eq!(p.pace(now, || queue(10_000, acked)), Pace::Wait(MAX_WAIT));
        assert_eq!(p.pace(now, || queue(2_000, acked)), Pace::Write);
    }

    #[tokio::test(start_paused = true)]
    async fn no_progress_for_the_stall_limit_is_a_stall() {
        let mut p = Pacer::new(Duration::from_secs(5));
        let start = Instant::now();
        p.written(100_000);
        assert!(matches!(p.pace(start, || queue(100_000, 0)), Pace::Wait(_)));
        let later = start + Duration::from_secs(4);
        assert!(matches!(p.pace(later, || queue(100_000, 0)), Pace::Wait(_)));
        // Progress restarts the clock.
        let progress = start + Duration::from_millis(4500);
        assert!(matches!(
            p.pace(progress, || queue(99_000, 1000)),
            Pace::Wait(_)
        ));
        let t = start + Duration::from_millis(9400);
        assert!(matches!(p.pace(t, || queue(99_000, 1000)), Pace::Wait(_)));
        let t = start + Duration::from_millis(9500);
        assert_eq!(p.pace(t, || queue(99_000, 1000)), Pace::Stalled);
    }

    #[tokio::test(start_paused = true)]
    async fn old_goodput_samples_expire() {
        let mut m = WindowedMax::default();
        let t0 = Instant::now();
        m.record(t0, 1000);
        assert_eq!(m.get(t0 + RATE_WINDOW / 2), 1000);
        m.record(t0 + RATE_WINDOW, 10);
        assert_eq!(m.get(t0 + RATE_WINDOW), 1000);
        assert_eq!(m.get(t0 + RATE_WINDOW * 2), 10);
        assert_eq!(m.get(t0 + RATE_WINDOW * 4), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peak_lasts_at_most_two_windows_whatever_the_gaps() {
        let mut m = WindowedMax::default();
        let t0 = Instant::now();
        m.record(t0, 1000);
        m.record(t0 + RATE_WINDOW * 19 / 10, 10);
        assert_eq!(m.get(t0 + RATE_WINDOW * 19 / 10), 1000);
        assert_eq!(m.get(t0 + RATE_WINDOW * 2), 10);
        assert_eq!(m.get(t0 + RATE_WINDOW * 285 / 100), 10);
    }
}
