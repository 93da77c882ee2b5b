//! Inbound rate policy: a token bucket whose excess is conflated (only the
//! newest over-rate message is kept, and sent as soon as a token frees up),
//! and a flood detector that drops a client who keeps sending far above the
//! rate. Time is an argument, so both are tested without a clock.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate.max(1)),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// The tokens there would be at `now`, without the cap at `burst`.
    fn tokens_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate
    }

    fn refill(&mut self, now: Instant) {
        self.tokens = self.tokens_at(now).min(self.burst);
        self.last = now;
    }

    /// Takes a token if one is available.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        // The tolerance absorbs float rounding, so that at `next_token_at()`
        // a token is always there (no busy loop one rounding error short).
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }

    /// Whether the bucket has saved up its whole burst by `now`.
    pub fn is_full(&self, now: Instant) -> bool {
        self.tokens_at(now) >= self.burst
    }

    /// When the next token will be available (rounded up to the nanosecond).
    pub fn next_token_at(&self) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        self.last + Duration::from_nanos((missing / self.rate * 1e9).ceil() as u64)
    }
}

/// Counts messages over a sliding window of `window` (in slots of
/// [`FloodDetector::SLOT`]): a client that sends more than `limit` messages
/// within any such window is flooding, however it spreads them (steadily, or
/// in bursts with pauses between them).
#[derive(Debug, Clone)]
pub struct FloodDetector {
    limit: u64,
    /// Messages per slot, oldest first; `slots[head]` is the current slot.
    slots: Box<[u64]>,
    head: usize,
    /// When the current slot started.
    slot_start: Instant,
    /// Sum of `slots`.
    total: u64,
}

impl FloodDetector {
    /// Resolution of the sliding window.
    pub const SLOT: Duration = Duration::from_millis(100);

    /// A detector allowing at most `limit` messages within any `window`.
    pub fn new(limit: u64, window: Duration, now: Instant) -> Self {
        let n = (window.as_millis() / Self::SLOT.as_millis()).max(1) as usize;
        Self {
            limit,
            slots: vec![0; n].into_boxed_slice(),
            head: 0,
            slot_start: now,
            total: 0,
        }
    }

    /// Records one message; returns true once the client counts as flooding.
    pub fn record(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.slot_start);
        if elapsed >= Self::SLOT {
            let steps = elapsed.as_nanos() / Self::SLOT.as_nanos();
            if steps >= self.slots.len() as u128 {
                // A pause as long as the window: everything is forgotten.
                self.slots.fill(0);
                self.total = 0;
                self.slot_start = now;
            } else {
                // Slots that slid out of the window are forgotten.
                for _ in 0..steps {
                    self.head = (self.head + 1) % self.slots.len();
                    self.total -= self.slots[self.head];
                    self.slots[self.head] = 0;
                }
                self.slot_start += Self::SLOT * steps as u32;
            }
        }
        self.slots[self.head] += 1;
        self.total += 1;
        self.total > self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3, t0);
        assert!(b.try_take(t0) && b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0));
        assert_eq!(b.next_token_at(), t0 + Duration::from_millis(100));
        assert!(!b.try_take(t0 + Duration::from_millis(99)));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        // Saving up stops at the burst.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.try_take(later)));
        assert!(!b.try_take(later));
        // At `next_token_at` a token is there, whatever the rounding.
        let mut b = TokenBucket::new(240, 1, t0);
        let mut now = t0;
        for _ in 0..10_000 {
            assert!(b.try_take(now));
            now = b.next_token_at();
        }
    }

    #[test]
    fn flooding_is_more_than_the_limit_within_any_window() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // 2,400 messages within 5 s at most: 200 a second for 12 s never
        // trips, 4,800 a second does at message 2,401.
        let mut f = FloodDetector::new(2400, Duration::from_secs(5), t0);
        assert!((0..2400u64).all(|i| !f.record(ms(i * 5))));
        let mut f = FloodDetector::new(2400, Duration::from_secs(5), t0);
        let first = (0..10_000u64).position(|i| f.record(t0 + Duration::from_micros(i * 208)));
        assert_eq!(first, Some(2400));
        // Exactly at the limit, steadily, forever: never.
        let mut f = FloodDetector::new(2400, Duration::from_secs(5), t0);
        assert!((0..100_000u64).all(|i| !f.record(t0 + Duration::from_micros(i * 2084))));
    }

    #[test]
    fn bursts_with_pauses_are_flooding_too() {
        let t0 = Instant::now();
        let mut f = FloodDetector::new(2400, Duration::from_secs(5), t0);
        // 1,000 at once, then 400 ms of silence, again and again: 2,000 a
        // second on average, so it trips within the third burst.
        let mut flagged = None;
        'bursts: for burst in 0..10u64 {
            for _ in 0..1000 {
                if f.record(t0 + Duration::from_millis(burst * 500)) {
                    flagged = Some(burst);
                    break 'bursts;
                }
            }
        }
        assert_eq!(flagged, Some(2));
        // A burst the size of the limit after a window of silence is fine.
        let later = t0 + Duration::from_secs(60);
        let mut f = FloodDetector::new(2400, Duration::from_secs(5), t0);
        assert!((0..2400).all(|_| !f.record(later)));
        assert!(f.record(later));
    }
}
