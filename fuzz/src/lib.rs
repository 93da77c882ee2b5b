//! Shared machinery of the relais fuzz targets.
//!
//! # Input format
//!
//! Every target reads its input as a split header followed by a byte stream:
//!
//! - byte 0, `h`: `n = h & 7` split bytes follow. If `n == 0`, the stream is
//!   cut into chunks of `1 + (h >> 3)` bytes (1 to 32). Otherwise the chunk
//!   sizes cycle through the `n` split bytes (0 is allowed: it calls the
//!   decoder again with nothing new; a cycle of zeros counts as size 1);
//! - the rest: the byte stream a peer would send.
//!
//! The stream is decoded twice, once in a single piece and once fed chunk by
//! chunk into one reused buffer (as a socket reader does); both runs must
//! yield the same frames and end the same way.
//!
//! The `token` target has a format of its own, see [`token`].

pub mod token;

use bytes::{Bytes, BytesMut};
use relais_protocol::frames::{encode_data, kind, FLAG_MORE};
use relais_protocol::{
    encode_message, name_key, normalize_name, normalize_room, ClientFrame, FrameDecoder,
    FrameError, ServerFrame, Welcome, FLAG_ECHO, FLAG_RESUME, FLAG_RESUMED, FLAG_TOKEN,
    LENGTH_PREFIX_LEN, MAX_FRAME_LEN, MAX_NAME_LEN, MAX_PAYLOAD,
};
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

/// Splits a fuzz input into chunk sizes and the byte stream.
pub fn parse(data: &[u8]) -> Option<(Vec<usize>, &[u8])> {
    let (&h, rest) = data.split_first()?;
    let n = usize::from(h & 7).min(rest.len());
    let (split, stream) = rest.split_at(n);
    let mut sizes: Vec<usize> = if n == 0 {
        vec![1 + usize::from(h >> 3)]
    } else {
        split.iter().map(|&b| usize::from(b)).collect()
    };
    if sizes.iter().all(|&s| s == 0) {
        sizes = vec![1];
    }
    Some((sizes, stream))
}

/// Cuts `stream` into consecutive chunks whose sizes cycle through `sizes`
/// (empty chunks included).
pub fn chunks<'a>(sizes: &[usize], mut stream: &'a [u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut i = 0;
    while !stream.is_empty() {
        let n = sizes[i % sizes.len()].min(stream.len());
        let (head, tail) = stream.split_at(n);
        out.push(head);
        stream = tail;
        i += 1;
    }
    out
}

/// What a session does after a frame.
pub enum Next {
    /// Keep reading, with this decoder maximum from now on.
    Continue(usize),
    /// Stop reading (the connection is closed).
    Stop,
}

/// How a decoding session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The input ran out; the result of `decode_eof`.
    Eof(Result<(), FrameError>),
    /// The decoder refused the stream.
    Error(FrameError),
    /// The session closed the connection on a frame.
    Stopped,
}

/// The frames a session saw and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Every frame body, in order.
    pub frames: Vec<Bytes>,
    /// How the session ended.
    pub end: End,
}

/// Feeds `chunks` one after the other into one buffer (initial capacity
/// `initial_capacity`) and a decoder starting at `initial_max`, taking every
/// whole frame after each chunk. `on_frame` sees each body and says what to
/// do next. Every decode call is checked with [`checked_decode`], the first
/// one to see each length prefix also on a fresh copy of that prefix.
pub fn drive(
    chunks: &[&[u8]],
    initial_max: usize,
    initial_capacity: usize,
    mut on_frame: impl FnMut(&Bytes) -> Next,
) -> Outcome {
    let mut decoder = FrameDecoder::new(initial_max);
    let mut buf = BytesMut::with_capacity(initial_capacity);
    let mut frames = Vec::new();
    let mut fed = initial_capacity;
    let mut prefix_checked = false;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            let fresh = !prefix_checked && buf.len() >= LENGTH_PREFIX_LEN;
            prefix_checked |= fresh;
            match checked_decode(&mut decoder, &mut buf, fed, fresh) {
                Ok(Some(body)) => {
                    prefix_checked = false;
                    let next = on_frame(&body);
                    frames.push(body);
                    match next {
                        Next::Continue(max) => decoder.set_max_frame_len(max),
                        Next::Stop => {
                            return Outcome {
                                frames,
                                end: End::Stopped,
                            }
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Outcome {
                        frames,
                        end: End::Error(e),
                    }
                }
            }
        }
    }
    Outcome {
        frames,
        end: End::Eof(decoder.decode_eof(&buf)),
    }
}

/// One `decode` call, with its invariants asserted:
///
/// - an error consumes nothing and reserves nothing (the length is checked
///   before any allocation);
/// - "incomplete" consumes nothing, and only when the announced length is
///   within `1..=max` and not all there yet;
/// - a frame is exactly the `len` bytes after the prefix, `1..=max` of them,
///   and the rest of the buffer is left in place;
/// - if `fresh`, the same call on an exactly-sized copy of the bare prefix
///   gives the same verdict and grows that copy to less than twice the
///   announced frame (the decoder reserves at most what was announced, and
///   only once the announcement was checked);
/// - the buffer's capacity stays at most `2 × (prefix + max + fed)`, where
///   `fed` is every byte appended so far (`BytesMut` may double, and keeps
///   consumed bytes in front until it reclaims them).
pub fn checked_decode(
    decoder: &mut FrameDecoder,
    buf: &mut BytesMut,
    fed: usize,
    fresh: bool,
) -> Result<Option<Bytes>, FrameError> {
    let max = decoder.max_frame_len();
    let len_before = buf.len();
    let cap_before = buf.capacity();
    let announced = (len_before >= LENGTH_PREFIX_LEN)
        .then(|| u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize);
    // What a frame would be, copied only when it is all there (so copying
    // stays linear in the input).
    let expected = announced
        .filter(|&len| (1..=max).contains(&len) && len_before >= LENGTH_PREFIX_LEN + len)
        .map(|len| {
            let end = (LENGTH_PREFIX_LEN + len + 16).min(len_before);
            Bytes::copy_from_slice(&buf[..end])
        });

    let verdict = if fresh {
        let len = announced.expect("fresh is set once a prefix is in");
        let mut copy = BytesMut::from(&buf[..LENGTH_PREFIX_LEN]);
        let verdict = decoder.clone().decode(&mut copy);
        match &verdict {
            Err(_) => assert_eq!(
                copy.capacity(),
                LENGTH_PREFIX_LEN,
                "reserved before refusing"
            ),
            Ok(None) => assert!(
                copy.capacity() < 2 * (LENGTH_PREFIX_LEN + len).max(8),
                "reserved {} bytes for a frame of {len}",
                copy.capacity()
            ),
            Ok(Some(_)) => panic!("a bare prefix decoded to a frame"),
        }
        Some(verdict)
    } else {
        None
    };

    let result = decoder.decode(buf);
    match (&verdict, &result) {
        (None, _) | (Some(Ok(None)), Ok(_)) => {}
        (Some(Err(a)), Err(b)) => assert_eq!(a, b),
        _ => panic!("the bare prefix gave {verdict:?}, the buffer {result:?}"),
    }

    match &result {
        Err(e) => {
            let len = announced.expect("an error needs a whole prefix");
            match e {
                FrameError::TooLarge { len: l, max: m } => {
                    assert_eq!((*l, *m), (len as u64, max));
                    assert!(len > max);
                }
                FrameError::Empty => assert_eq!(len, 0),
                FrameError::Truncated { .. } => panic!("decode reported Truncated"),
            }
            let _ = e.to_string();
            assert_eq!(buf.len(), len_before, "an error consumed bytes");
            assert_eq!(
                announced,
                Some(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize)
            );
            assert_eq!(buf.capacity(), cap_before, "an error reserved memory");
        }
        Ok(None) => {
            assert!(expected.is_none(), "a whole frame was left in the buffer");
            assert_eq!(buf.len(), len_before, "incomplete consumed bytes");
            if let Some(len) = announced {
                assert!((1..=max).contains(&len));
                assert_eq!(
                    announced,
                    Some(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize)
                );
            }
        }
        Ok(Some(body)) => {
            let len = announced.expect("a frame needs a whole prefix");
            let expected = expected.expect("a frame decoded from an incomplete buffer");
            assert_eq!(body.len(), len);
            assert_eq!(
                &body[..],
                &expected[LENGTH_PREFIX_LEN..LENGTH_PREFIX_LEN + len]
            );
            assert_eq!(buf.len(), len_before - LENGTH_PREFIX_LEN - len);
            let tail = &expected[LENGTH_PREFIX_LEN + len..];
            assert_eq!(&buf[..tail.len()], tail, "the rest of the buffer moved");
        }
    }
    assert!(
        buf.capacity() <= 2 * (LENGTH_PREFIX_LEN + max + fed),
        "buffer capacity {} after feeding {fed} bytes with a maximum of {max}",
        buf.capacity()
    );
    result
}

/// Decodes `body` as a client frame; if it decodes, checks that it
/// re-encodes canonically (see [`check_reencoding`]) and returns it.
pub fn check_client(body: &Bytes) -> Option<ClientFrame> {
    match ClientFrame::decode(body.clone()) {
        Ok(frame) => {
            let wire = frame.to_bytes();
            let again = ClientFrame::decode(check_reencoding(body, &wire))
                .unwrap_or_else(|e| panic!("{frame:?} re-encoded to {wire:?}: {e}"));
            assert_eq!(again, frame);
            assert_eq!(again.to_bytes(), wire, "encoding is not deterministic");
            if let ClientFrame::Data(payload) = &frame {
                assert!(payload.len() <= MAX_PAYLOAD);
                let mut fast = BytesMut::new();
                encode_data(payload, &mut fast);
                assert_eq!(fast, wire, "encode_data differs from ClientFrame::encode");
            }
            let _ = format!("{frame:?}");
            Some(frame)
        }
        Err(e) => {
            let _ = e.to_string();
            None
        }
    }
}

/// Decodes `body` as a server frame; if it decodes, checks that it
/// re-encodes canonically (see [`check_reencoding`]) and returns it.
pub fn check_server(body: &Bytes) -> Option<ServerFrame> {
    match ServerFrame::decode(body.clone()) {
        Ok(frame) => {
            let wire = frame.to_bytes();
            let again = ServerFrame::decode(check_reencoding(body, &wire))
                .unwrap_or_else(|e| panic!("{frame:?} re-encoded to {wire:?}: {e}"));
            assert_eq!(again, frame);
            assert_eq!(again.to_bytes(), wire, "encoding is not deterministic");
            if let ServerFrame::Message { sender, payload } = &frame {
                assert!(payload.len() <= MAX_PAYLOAD);
                assert_eq!(
                    encode_message(sender, payload),
                    wire,
                    "encode_message differs from ServerFrame::encode"
                );
            }
            let _ = format!("{frame:?}");
            Some(frame)
        }
        Err(e) => {
            let _ = e.to_string();
            None
        }
    }
}

/// Checks the encoding `wire` (length prefix included) of a frame decoded
/// from `body`, and returns the re-encoded body:
///
/// - it is the original body byte for byte, except that a flags byte keeps
///   only the bits the frame type defines (`HELLO`: echo, token and resume;
///   `ROOM_LIST`: more; `WELCOME`'s resume flags: resumed);
/// - its prefix is right: a decoder at [`MAX_FRAME_LEN`] reads it back as
///   exactly one frame.
pub fn check_reencoding(body: &Bytes, wire: &Bytes) -> Bytes {
    assert_eq!(
        wire.len(),
        LENGTH_PREFIX_LEN + body.len(),
        "re-encoded size"
    );
    let (flags_at, defined) = match body[0] {
        kind::HELLO => (Some(3), FLAG_ECHO | FLAG_TOKEN | FLAG_RESUME),
        kind::ROOM_LIST => (Some(1), FLAG_MORE),
        // A WELCOME's resume flags come just before its resume token, the
        // last field.
        kind::WELCOME => match ServerFrame::decode(body.clone()) {
            Ok(ServerFrame::Welcome(Welcome {
                resume: Some(r), ..
            })) => (Some(body.len() - r.token.len() - 2), FLAG_RESUMED),
            _ => (None, 0),
        },
        _ => (None, 0),
    };
    let re = wire.slice(LENGTH_PREFIX_LEN..);
    for (i, (&a, &b)) in body.iter().zip(re.iter()).enumerate() {
        if Some(i) == flags_at {
            assert_eq!(b, a & defined, "flags byte re-encoded wrongly");
        } else {
            assert_eq!(a, b, "byte {i} differs: {body:?} re-encoded as {re:?}");
        }
    }
    let mut buf = BytesMut::from(&wire[..]);
    let mut decoder = FrameDecoder::new(MAX_FRAME_LEN);
    assert_eq!(decoder.decode(&mut buf), Ok(Some(re.clone())));
    assert!(buf.is_empty());
    assert_eq!(decoder.decode_eof(&buf), Ok(()));
    re
}

/// Runs a client name (or, with `room`, a room name) through the naming
/// rule and returns the accepted NFC form. Asserts, with checks that do not
/// reuse `relais-protocol`'s own tables:
///
/// - the accepted form is NFC, at most [`MAX_NAME_LEN`] bytes, and
///   canonically equivalent to the input;
/// - normalising it again gives it back unchanged;
/// - it has no control character, nothing `unicode-security`'s skeleton
///   drops as default-ignorable, a character that is neither whitespace nor
///   a combining mark, and no whitespace at either end;
/// - [`name_key`] is its own key and the same for the NFD spelling.
pub fn check_name(raw: &str, room: bool) -> Option<String> {
    let normalize = if room { normalize_room } else { normalize_name };
    let name = match normalize(raw) {
        Ok(name) => name,
        Err(e) => {
            let _ = e.to_string();
            return None;
        }
    };
    assert!(name.len() <= MAX_NAME_LEN, "{name:?} is too long");
    assert!(
        unicode_normalization::is_nfc(&name),
        "{name:?} is not in NFC"
    );
    assert!(raw.nfc().eq(name.chars()), "{raw:?} became {name:?}");
    assert_eq!(
        normalize(&name).as_deref(),
        Ok(name.as_str()),
        "not idempotent"
    );
    let mut buf = [0; 4];
    for c in name.chars() {
        assert!(!c.is_control(), "{name:?} has a control character");
        assert!(
            unicode_security::skeleton(c.encode_utf8(&mut buf))
                .next()
                .is_some(),
            "{name:?} has a default-ignorable U+{:04X}",
            u32::from(c)
        );
    }
    assert!(
        name.chars()
            .any(|c| !c.is_whitespace() && c.general_category_group() != GeneralCategoryGroup::Mark),
        "{name:?} has nothing visible"
    );
    assert!(!name.starts_with(char::is_whitespace) && !name.ends_with(char::is_whitespace));
    if !room {
        let key = name_key(&name);
        assert_eq!(
            name_key(&key),
            key,
            "the key of {name:?} is not its own key"
        );
        let nfd: String = name.nfd().collect();
        assert_eq!(name_key(&nfd), key, "NFD changed the key of {name:?}");
    }
    Some(name)
}
