//! The payload every simulated client sends.
//!
//! | bytes   | field                                                     |
//! |---------|-----------------------------------------------------------|
//! | 0..4    | sender index, `u32` big-endian                            |
//! | 4..12   | sequence number, `u64` big-endian, from 0                 |
//! | 12..20  | send time, ns on the common [`Clock`], `u64` big-endian   |
//! | 20..P   | zero padding                                              |
//!
//! The sender index (not the sender's name as relayed) identifies the sender,
//! so the same parser serves every system.
//!
//! # The clock
//!
//! Send and receive times are nanoseconds since the UNIX epoch, read from a
//! [`Clock`]: the process's monotonic clock (`Instant`), anchored once to the
//! real-time clock (`SystemTime`) when the clock is made. So:
//!
//! - within one process, a latency is a difference of two monotonic
//!   readings, exactly as precise as `Instant` and immune to steps of the
//!   wall clock during a run;
//! - two processes on the same host (e.g. the senders on one side of a
//!   throttled link and a reader in a network namespace on the other, see
//!   `bench/slowlink.sh`) stamp and read on the same time line: their anchors
//!   differ only by the time between reading `Instant` and `SystemTime`
//!   (well under a microsecond), unless the wall clock is stepped (not
//!   slewed: NTP slewing moves both clocks alike) between the two processes'
//!   starts.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes taken by the header; the smallest payload.
pub const HEADER_LEN: usize = 20;

/// The clock payloads are stamped and read with: nanoseconds since the UNIX
/// epoch, advancing with the monotonic clock (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
    epoch_unix_ns: u64,
}

impl Clock {
    /// A clock anchored to the wall clock now.
    pub fn new() -> Self {
        let epoch = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the system clock is after 1970");
        Self {
            epoch,
            epoch_unix_ns: unix.as_nanos() as u64,
        }
    }

    /// Now, in ns since the UNIX epoch.
    pub fn now_ns(&self) -> u64 {
        self.epoch_unix_ns + self.epoch.elapsed().as_nanos() as u64
    }

    /// The instant of `ns` (ns since the UNIX epoch); times before the
    /// clock's anchor map to the anchor.
    pub fn instant(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns.saturating_sub(self.epoch_unix_ns))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The header of one payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Index of the sending client.
    pub sender: u32,
    /// The sender's sequence number (warm-up messages included).
    pub seq: u64,
    /// When the sender handed it to its client library, ns since the UNIX
    /// epoch on the common [`Clock`].
    pub sent_ns: u64,
}

/// Writes `h` and padding into `buf`, which must be at least
/// [`HEADER_LEN`] bytes (its length is the payload size).
pub fn write(buf: &mut [u8], h: Header) {
    buf[0..4].copy_from_slice(&h.sender.to_be_bytes());
    buf[4..12].copy_from_slice(&h.seq.to_be_bytes());
    buf[12..20].copy_from_slice(&h.sent_ns.to_be_bytes());
}

/// Reads the header of a payload, or `None` if it is too short to be ours.
pub fn read(p: &[u8]) -> Option<Header> {
    if p.len() < HEADER_LEN {
        return None;
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&p[i..i + 8]);
        u64::from_be_bytes(b)
    };
    Some(Header {
        sender: u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
        seq: u64_at(4),
        sent_ns: u64_at(12),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        let mut buf = vec![0xffu8; 64];
        buf[HEADER_LEN..].fill(0);
        let h = Header {
            sender: 7,
            seq: 1 << 40,
            sent_ns: 123_456_789,
        };
        write(&mut buf, h);
        assert_eq!(read(&buf), Some(h));
        assert!(buf[HEADER_LEN..].iter().all(|&b| b == 0));
        assert_eq!(read(&buf[..HEADER_LEN - 1]), None);
    }

    #[test]
    fn clocks_of_one_host_agree() {
        let a = Clock::new();
        std::thread::sleep(Duration::from_millis(20));
        let b = Clock::new();
        let (ta, tb) = (a.now_ns(), b.now_ns());
        // Two anchors taken 20 ms apart read the same time line.
        assert!(ta.abs_diff(tb) < 2_000_000, "{ta} vs {tb}");
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        assert!(wall.abs_diff(tb) < 50_000_000, "{wall} vs {tb}");
        let later = a.now_ns() + 5_000_000;
        assert_eq!(
            a.instant(later) - a.epoch,
            Duration::from_nanos(later - a.epoch_unix_ns)
        );
        assert_eq!(a.instant(0), a.epoch);
    }
}
