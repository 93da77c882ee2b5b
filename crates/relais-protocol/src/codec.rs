//! Length-prefixed framing.
//!
//! Every frame on the wire is a 4-byte big-endian length `L`, then `L` bytes of
//! body whose first byte is the frame type. The decoder reads the prefix,
//! refuses a length above its maximum before buffering the body, and returns
//! `Ok(None)` ("incomplete") until the whole body is there.

use bytes::{Buf, Bytes, BytesMut};

use crate::LENGTH_PREFIX_LEN;

/// A framing error: the byte stream cannot be split into frames any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more bytes than the current maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced body length.
        len: u64,
        /// The maximum in force.
        max: usize,
    },
    /// The length prefix announces an empty body (no type byte).
    #[error("empty frame")]
    Empty,
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// How many bytes of the unfinished frame had arrived.
        buffered: usize,
    },
}

/// Splits a byte stream into frame bodies.
///
/// Feed it the bytes read so far in a `BytesMut`; it consumes whole frames
/// only. The maximum body length can change over the life of a connection
/// (a server accepts only a `HELLO`-sized frame before the handshake).
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_len: usize,
}

impl FrameDecoder {
    /// A decoder refusing bodies longer than `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        Self { max_frame_len }
    }

    /// The maximum body length in force.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Changes the maximum body length (e.g. once the handshake is done).
    pub fn set_max_frame_len(&mut self, max_frame_len: usize) {
        self.max_frame_len = max_frame_len;
    }

    /// Takes the next whole frame body (type byte first) off the front of
    /// `buf`, or returns `Ok(None)` if more bytes are needed.
    ///
    /// When more bytes are needed, it reserves room for the rest of the
    /// current frame (bounded by the maximum, which was checked first).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if buf.len() < LENGTH_PREFIX_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > self.max_frame_len {
            return Err(FrameError::TooLarge {
                len: len as u64,
                max: self.max_frame_len,
            });
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        let total = LENGTH_PREFIX_LEN + len;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        buf.advance(LENGTH_PREFIX_LEN);
        Ok(Some(buf.split_to(len).freeze()))
    }

    /// Called when the stream has ended: `Ok(())` if it ended between frames
    /// (a clean end), an error if a frame was cut short.
    pub fn decode_eof(&mut self, buf: &BytesMut) -> Result<(), FrameError> {
        if buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated {
                buffered: buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_whole_frame() {
        let mut d = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 0x02, b'h'][..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"i");
        assert_eq!(d.decode(&mut buf), Ok(Some(Bytes::from_static(b"\x02hi"))));
        assert!(buf.is_empty());
        assert_eq!(d.decode_eof(&buf), Ok(()));
    }

    #[test]
    fn refuses_oversized_length_before_buffering() {
        let mut d = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(FrameError::TooLarge {
                len: u32::MAX as u64,
                max: 16
            })
        );
        assert!(buf.capacity() < 1024, "nothing was reserved for the body");
    }

    #[test]
    fn maximum_is_inclusive() {
        let mut d = FrameDecoder::new(4);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 4, 1, 2, 3, 4][..]);
        assert!(d.decode(&mut buf).unwrap().is_some());
        let mut buf = BytesMut::from(&[0u8, 0, 0, 5][..]);
        assert!(d.decode(&mut buf).is_err());
    }

    #[test]
    fn empty_frame_is_an_error() {
        let mut d = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert_eq!(d.decode(&mut buf), Err(FrameError::Empty));
    }

    #[test]
    fn eof_inside_a_frame_is_an_error() {
        let mut d = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 1][..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(
            d.decode_eof(&buf),
            Err(FrameError::Truncated { buffered: 5 })
        );
    }
}
