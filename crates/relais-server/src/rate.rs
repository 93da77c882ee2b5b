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

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
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

    /// When the next token will be available (rounded up to the nanosecond).
    pub fn next_token_at(&self) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        self.last + Duration::from_nanos((missing / self.rate * 1e9).ceil() as u64)
    }
}

/// Counts messages per one-second window; a client over `limit` messages in
/// `windows` consecutive windows is flooding.
#[derive(Debug, Clone)]
pub struct FloodDetector {
    limit: u64,
    windows: u32,
    window_start: Instant,
    count: u64,
    strikes: u32,
}

impl FloodDetector {
    /// A detector allowing `limit` messages a second, `windows` seconds in a row.
    pub fn new(limit: u64, windows: u32, now: Instant) -> Self {
        Self {
            limit,
            windows: windows.max(1),
            window_start: now,
            count: 0,
            strikes: 0,
        }
    }

    /// Records one message; returns true once the client counts as flooding.
    pub fn record(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= Duration::from_secs(1) {
            let over = self.count > self.limit;
            // A window or more without messages clears the record.
            let idle = elapsed >= Duration::from_secs(2);
            self.strikes = if over && !idle { self.strikes + 1 } else { 0 };
            self.window_start = now;
            self.count = 0;
        }
        self.count += 1;
        self.strikes >= self.windows
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
    fn flooding_is_detected_only_when_it_persists() {
        let t0 = Instant::now();
        let mut f = FloodDetector::new(100, 3, t0);
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // 200 messages a second for 3 full windows: flagged when the third
        // window closes.
        let mut flagged_at = None;
        for i in 0..800u64 {
            if f.record(ms(i * 5)) && flagged_at.is_none() {
                flagged_at = Some(i * 5);
            }
        }
        assert_eq!(flagged_at, Some(3000));

        // Bursty but not persistent: one heavy second, then normal seconds.
        let mut f = FloodDetector::new(100, 3, t0);
        for i in 0..200u64 {
            assert!(!f.record(ms(i * 5)));
        }
        for i in 0..300u64 {
            assert!(!f.record(ms(1000 + i * 20)));
        }
    }
}
