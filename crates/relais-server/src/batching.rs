//! When a writer writes: at once, or after gathering for a flush interval.
//!
//! A write is a system call and a trip through the kernel's TCP stack, which
//! is most of the server's CPU in a busy room, so a recipient that receives
//! many messages a second is written to at most once per `flush_interval`
//! (1 ms): what arrives meanwhile joins the next batch. A recipient that
//! receives few is written to at once: its writes cost little, and waiting
//! would only add latency. The line is [`BUSY_RATE`] frames a second, about
//! four per interval: a room of 60 clients at 60 Hz is below it (each message
//! written at once), a room of 100 above (about six per write).

use std::time::Duration;

use tokio::time::Instant;

/// Frames a second to one recipient above which its writes are gathered.
pub const BUSY_RATE: u64 = 4_000;
/// The rate is measured over windows of this length.
const WINDOW: Duration = Duration::from_millis(10);

/// The write-gathering state of one recipient.
#[derive(Debug)]
pub struct Batching {
    interval: Duration,
    window_start: Instant,
    window_frames: u64,
    busy: bool,
    last_write: Option<Instant>,
}

impl Batching {
    /// Gathers for `interval` while busy (zero: never).
    pub fn new(interval: Duration, now: Instant) -> Self {
        Self {
            interval,
            window_start: now,
            window_frames: 0,
            busy: false,
            last_write: None,
        }
    }

    /// When the next write may happen: `None` for now.
    pub fn next_write(&self) -> Option<Instant> {
        match self.last_write {
            Some(t) if self.busy && !self.interval.is_zero() => Some(t + self.interval),
            _ => None,
        }
    }

    /// Records a write of `frames` frames at `now`.
    pub fn wrote(&mut self, now: Instant, frames: usize) {
        self.last_write = Some(now);
        self.window_frames += frames as u64;
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= WINDOW {
            let rate = u128::from(self.window_frames) * 1_000_000 / elapsed.as_micros();
            self.busy = rate >= u128::from(BUSY_RATE);
            self.window_start = now;
            self.window_frames = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_quiet_recipient_is_written_at_once_a_busy_one_gathers() {
        let start = Instant::now();
        let mut b = Batching::new(Duration::from_millis(1), start);
        // 3 frames a millisecond (3,000/s) for 20 ms: never gathered.
        for ms in 1..=20 {
            b.wrote(start + Duration::from_millis(ms), 3);
            assert_eq!(b.next_write(), None);
        }
        // 6 a millisecond: gathered from the end of the next window on.
        for ms in 21..=40 {
            b.wrote(start + Duration::from_millis(ms), 6);
        }
        let t = start + Duration::from_millis(40);
        assert_eq!(b.next_write(), Some(t + Duration::from_millis(1)));
        // Quiet again: back to writing at once after a window.
        for ms in 41..=60 {
            b.wrote(start + Duration::from_millis(ms), 1);
        }
        assert_eq!(b.next_write(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_interval_never_gathers() {
        let start = Instant::now();
        let mut b = Batching::new(Duration::ZERO, start);
        for ms in 1..=30 {
            b.wrote(start + Duration::from_millis(ms), 100);
        }
        assert_eq!(b.next_write(), None);
    }
}
