//! Jittered exponential backoff between reconnect attempts.

use std::time::Duration;

/// Delays between reconnect attempts: `initial`, doubling up to `max`, each
/// drawn uniformly from its upper half (`[d/2, d]`), so clients dropped
/// together by one server restart do not all come back at the same instant.
///
/// The randomness is a seeded generator (xorshift64*), not a clock or the
/// operating system's: the driver seeds it, tests get the same delays every
/// run.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    state: u64,
}

impl Backoff {
    /// First delay about `initial`, growing to at most `max`, jitter drawn
    /// from `seed`.
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
            next: initial,
            // Spread nearby seeds; xorshift must not start at 0.
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        }
    }

    /// The delay before the next attempt; the one after doubles.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        let half = d / 2;
        // Uniform in [0, 1): 53 random bits.
        let unit = (self.random() >> 11) as f64 / (1u64 << 53) as f64;
        half + half.mul_f64(unit)
    }

    /// Starts again from the initial delay (after a successful connection).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    fn random(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_max_and_stay_in_their_upper_half() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000), 7);
        let bounds = [100, 200, 400, 800, 1000, 1000];
        for upper in bounds {
            let d = b.next_delay();
            assert!(d >= ms(upper) / 2 && d <= ms(upper), "{d:?} for {upper}");
        }
        b.reset();
        assert!(b.next_delay() <= ms(100));
        // Different seeds spread the same step.
        let spread: std::collections::HashSet<_> = (0..20)
            .map(|seed| Backoff::new(ms(100), ms(1000), seed).next_delay())
            .collect();
        assert!(spread.len() > 10, "{spread:?}");
    }
}
