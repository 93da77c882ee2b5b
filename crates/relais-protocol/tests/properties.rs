//! Property tests: every frame round-trips, and any split of a byte stream
//! decodes to the same frames as the whole stream.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use relais_protocol::*;

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 éß🎮_-]{1,16}".prop_filter("fits a name", |s| s.len() <= MAX_NAME_LEN)
}

fn payload() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..512).prop_map(Bytes::from)
}

fn close_reason() -> impl Strategy<Value = CloseReason> {
    any::<u8>().prop_map(CloseReason::from_code)
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        (
            any::<u16>(),
            name(),
            prop_oneof![Just(String::new()), name()],
            any::<bool>(),
            proptest::option::of("[ -~]{0,300}"),
            proptest::option::of("[ -~]{0,64}")
        )
            .prop_map(
                |(version, name, room, echo, token, resume)| ClientFrame::Hello(Hello {
                    version,
                    name,
                    room,
                    echo,
                    token,
                    resume,
                })
            ),
        payload().prop_map(ClientFrame::Data),
        Just(ClientFrame::ListRooms),
        Just(ClientFrame::Ping),
        Just(ClientFrame::Pong),
        (close_reason(), ".{0,40}").prop_map(|(r, t)| ClientFrame::Goodbye(r, t)),
    ]
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u32>(),
            name(),
            proptest::collection::vec(name(), 0..20),
            proptest::option::of((any::<bool>(), "[ -~]{1,64}"))
        )
            .prop_map(
                |(version, max_payload, room, members, resume)| ServerFrame::Welcome(Welcome {
                    version,
                    max_payload,
                    room,
                    members,
                    resume: resume
                        .map(|(resumed, token)| relais_protocol::Resume { resumed, token }),
                })
            ),
        (any::<u8>(), ".{0,40}")
            .prop_map(|(c, t)| ServerFrame::Refused(RefuseReason::from_code(c), t)),
        (name(), payload()).prop_map(|(sender, payload)| ServerFrame::Message { sender, payload }),
        name().prop_map(ServerFrame::Joined),
        (name(), close_reason()).prop_map(|(n, r)| ServerFrame::Left(n, r)),
        (
            proptest::collection::vec(
                (name(), any::<u32>()).prop_map(|(name, members)| RoomInfo { name, members }),
                0..20
            ),
            any::<bool>()
        )
            .prop_map(|(rooms, more)| ServerFrame::RoomList { rooms, more }),
        Just(ServerFrame::Ping),
        Just(ServerFrame::Pong),
        (close_reason(), ".{0,40}").prop_map(|(r, t)| ServerFrame::Goodbye(r, t)),
    ]
}

/// Decodes every frame of `chunks` fed one after the other.
fn decode_chunks<F>(chunks: &[&[u8]], parse: impl Fn(Bytes) -> F) -> Vec<F> {
    let mut decoder = FrameDecoder::new(MAX_FRAME_LEN);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(body) = decoder.decode(&mut buf).expect("valid stream") {
            out.push(parse(body));
        }
    }
    decoder
        .decode_eof(&buf)
        .expect("stream ends between frames");
    out
}

/// Cuts `bytes` at the given (sorted, deduplicated) positions.
fn split_at<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut parts = Vec::new();
    let mut start = 0;
    for p in points {
        parts.push(&bytes[start..p]);
        start = p;
    }
    parts.push(&bytes[start..]);
    parts
}

proptest! {
    #[test]
    fn client_frames_round_trip(frame in client_frame()) {
        let decoded = decode_chunks(&[&frame.to_bytes()], |b| ClientFrame::decode(b).unwrap());
        prop_assert_eq!(decoded, vec![frame]);
    }

    #[test]
    fn server_frames_round_trip(frame in server_frame()) {
        let decoded = decode_chunks(&[&frame.to_bytes()], |b| ServerFrame::decode(b).unwrap());
        prop_assert_eq!(decoded, vec![frame]);
    }

    #[test]
    fn encode_message_matches_the_generic_encoder(sender in name(), payload in payload()) {
        let generic = ServerFrame::Message { sender: sender.clone(), payload: payload.clone() }.to_bytes();
        prop_assert_eq!(encode_message(&sender, &payload), generic);
    }

    #[test]
    fn any_split_decodes_like_the_whole(
        frames in proptest::collection::vec(client_frame(), 1..10),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut stream = BytesMut::new();
        for f in &frames {
            f.encode(&mut stream);
        }
        let whole = decode_chunks(&[&stream], |b| ClientFrame::decode(b).unwrap());
        let parts = split_at(&stream, &cuts);
        let split = decode_chunks(&parts, |b| ClientFrame::decode(b).unwrap());
        prop_assert_eq!(&whole, &frames);
        prop_assert_eq!(split, whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut decoder = FrameDecoder::new(MAX_HELLO_LEN);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(body)) = decoder.decode(&mut buf) {
            let _ = ClientFrame::decode(body.clone());
            let _ = ServerFrame::decode(body);
        }
    }
}
