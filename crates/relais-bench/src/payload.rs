//! The payload every simulated client sends.
//!
//! | bytes   | field                                                     |
//! |---------|-----------------------------------------------------------|
//! | 0..4    | sender index, `u32` big-endian                            |
//! | 4..12   | sequence number, `u64` big-endian, from 0                 |
//! | 12..20  | send time, ns on the run's common clock, `u64` big-endian |
//! | 20..P   | zero padding                                              |
//!
//! The sender index (not the sender's name as relayed) identifies the sender,
//! so the same parser serves every system.

/// Bytes taken by the header; the smallest payload.
pub const HEADER_LEN: usize = 20;

/// The header of one payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Index of the sending client.
    pub sender: u32,
    /// The sender's sequence number (warm-up messages included).
    pub seq: u64,
    /// When the sender handed it to its client library, ns on the common clock.
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
}
