//! What cluster nodes say to each other over NATS: the subjects and the
//! payloads, binary and big-endian (ARCHITECTURE.md, "Cluster", shows each).

use base64::Engine as _;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use relais_protocol::frames::kind;
use relais_protocol::{CloseReason, LENGTH_PREFIX_LEN};

/// Heartbeats: every node publishes here and listens here.
pub const NODE_SUBJECT: &str = "relais.node";
/// Asks for the cluster's rooms and member counts; each node answers.
pub const ROOMS_SUBJECT: &str = "relais.rooms";
/// The KV bucket that holds name claims.
pub const NAMES_BUCKET: &str = "relais-names";

/// A room's events: `relais.room.<room>`, the room's name in unpadded
/// base64url (any name fits a NATS subject token that way).
pub fn room_subject(room: &str) -> String {
    format!("relais.room.{}", token(room.as_bytes()))
}

/// Requests for nodes' snapshots of a room: `relais.sync.<room>`.
pub fn sync_subject(room: &str) -> String {
    format!("relais.sync.{}", token(room.as_bytes()))
}

/// What every node subscribes to for snapshot requests.
pub const SYNC_SUBJECTS: &str = "relais.sync.*";

/// Where snapshots for node `node` go: `relais.snap.<node>`, 16 hex digits.
pub fn snap_subject(node: u64) -> String {
    format!("relais.snap.{node:016x}")
}

/// The KV key of a name claim: `<room>.<name key>`, both unpadded base64url.
pub fn claim_key(room: &str, name_key: &str) -> String {
    format!("{}.{}", token(room.as_bytes()), token(name_key.as_bytes()))
}

/// The room and the name key a [`claim_key`] is made of.
pub fn parse_claim_key(key: &str) -> Option<(String, String)> {
    let (room, name) = key.split_once('.')?;
    let decode = |t: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
    };
    Some((decode(room)?, decode(name)?))
}

/// A claim's value: the holding node's id, 16 hex digits.
pub fn claim_value(node: u64) -> Bytes {
    Bytes::from(format!("{node:016x}"))
}

/// The node a claim's value names.
pub fn claim_holder(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
}

fn token(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Where an event stands in its node's stream for a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The node that sent it.
    pub node: u64,
    /// Its room's epoch there: a new number each time the room is created.
    pub epoch: u64,
    /// Its place in the room's stream: 1 for the first event of an epoch.
    pub seq: u64,
}

/// A room event of another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteEvent {
    /// Its member `member` joined, as `name`.
    Joined {
        /// The member's id on its node.
        member: u64,
        /// Its registered name.
        name: String,
    },
    /// Its member left.
    Left {
        /// The member's id on its node.
        member: u64,
        /// Why.
        reason: CloseReason,
    },
    /// Its member sent a message.
    Message {
        /// The member's id on its node.
        member: u64,
        /// The `MESSAGE` frame to relay, length prefix included, as the
        /// sender's node encoded it (stamped with the sender's name).
        frame: Bytes,
    },
}

impl RemoteEvent {
    /// About the memory it holds.
    pub fn size(&self) -> usize {
        64 + match self {
            Self::Joined { name, .. } => name.len(),
            Self::Left { .. } => 0,
            Self::Message { frame, .. } => frame.len(),
        }
    }
}

const JOINED: u8 = 1;
const LEFT: u8 = 2;
const MESSAGE: u8 = 3;
const EVENT_HEADER: usize = 1 + 8 * 4;

fn event(kind: u8, stamp: Stamp, member: u64, body: usize) -> BytesMut {
    let mut b = BytesMut::with_capacity(EVENT_HEADER + body);
    b.put_u8(kind);
    b.put_u64(stamp.node);
    b.put_u64(stamp.epoch);
    b.put_u64(stamp.seq);
    b.put_u64(member);
    b
}

/// `member` joined as `name`.
pub fn joined(stamp: Stamp, member: u64, name: &str) -> Bytes {
    let mut b = event(JOINED, stamp, member, name.len());
    b.put_slice(name.as_bytes());
    b.freeze()
}

/// `member` left for `reason`.
pub fn left(stamp: Stamp, member: u64, reason: CloseReason) -> Bytes {
    let mut b = event(LEFT, stamp, member, 1);
    b.put_u8(reason.code());
    b.freeze()
}

/// `member` sent the message `frame` (an encoded `MESSAGE` frame).
pub fn message(stamp: Stamp, member: u64, frame: &[u8]) -> Bytes {
    let mut b = event(MESSAGE, stamp, member, frame.len());
    b.put_slice(frame);
    b.freeze()
}

/// A cluster payload that does not parse: dropped and logged (nodes of one
/// cluster run the same version; a stranger on the subjects is not one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed cluster payload: {0}")]
pub struct WireError(&'static str);

/// Reads a room event.
pub fn decode_event(mut b: Bytes) -> Result<(Stamp, RemoteEvent), WireError> {
    if b.len() < EVENT_HEADER {
        return Err(WireError("short event"));
    }
    let kind = b.get_u8();
    let stamp = Stamp {
        node: b.get_u64(),
        epoch: b.get_u64(),
        seq: b.get_u64(),
    };
    let member = b.get_u64();
    let event = match kind {
        JOINED => RemoteEvent::Joined {
            member,
            name: String::from_utf8(b.to_vec()).map_err(|_| WireError("name not UTF-8"))?,
        },
        LEFT if b.len() == 1 => RemoteEvent::Left {
            member,
            reason: CloseReason::from_code(b[0]),
        },
        MESSAGE if is_message_frame(&b) => RemoteEvent::Message { member, frame: b },
        _ => return Err(WireError("unknown event")),
    };
    Ok((stamp, event))
}

/// Whether `frame` is one whole `MESSAGE` frame, as clients are sent.
fn is_message_frame(frame: &[u8]) -> bool {
    frame.len() > LENGTH_PREFIX_LEN + 1
        && u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize
            == frame.len() - LENGTH_PREFIX_LEN
        && frame[LENGTH_PREFIX_LEN] == kind::MESSAGE
}

/// One node's members of a room and where its stream stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSnapshot {
    /// The node.
    pub node: u64,
    /// Its room's epoch (0: it has no such room).
    pub epoch: u64,
    /// The number of the room's last event it sent.
    pub seq: u64,
    /// Its members of the room.
    pub members: Vec<RemoteSeat>,
}

/// A member in a [`RemoteSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSeat {
    /// Its id on its node.
    pub member: u64,
    /// Its name.
    pub name: String,
    /// Its latest message, an encoded `MESSAGE` frame.
    pub latest: Option<Bytes>,
}

/// Snapshot chunks are cut at about this size (NATS's default payload
/// limit is 1 MiB).
pub const SNAPSHOT_CHUNK: usize = 256 * 1024;

/// A request for snapshots of `room`: from node `target` only, or from
/// every node (0), to be sent to `requester`'s snapshot subject.
pub fn sync_request(target: u64, requester: u64, room: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(16 + room.len());
    b.put_u64(target);
    b.put_u64(requester);
    b.put_slice(room.as_bytes());
    b.freeze()
}

/// Reads a snapshot request: (target, requester, room).
pub fn decode_sync_request(mut b: Bytes) -> Result<(u64, u64, String), WireError> {
    if b.len() < 16 {
        return Err(WireError("short sync request"));
    }
    let target = b.get_u64();
    let requester = b.get_u64();
    let room = String::from_utf8(b.to_vec()).map_err(|_| WireError("room not UTF-8"))?;
    Ok((target, requester, room))
}

/// `snapshot` of `room` in chunks of about [`SNAPSHOT_CHUNK`] bytes, the
/// last one marked; at least one.
pub fn snapshot_chunks(room: &str, snapshot: &RemoteSnapshot) -> Vec<Bytes> {
    let head = |b: &mut BytesMut| {
        b.put_u16(room.len() as u16);
        b.put_slice(room.as_bytes());
        b.put_u64(snapshot.node);
        b.put_u64(snapshot.epoch);
        b.put_u64(snapshot.seq);
        b.put_u8(0); // the "last" mark, set below
    };
    let mark_at = 2 + room.len() + 24;
    let mut chunks = Vec::new();
    let mut b = BytesMut::new();
    head(&mut b);
    for seat in &snapshot.members {
        if b.len() > SNAPSHOT_CHUNK {
            chunks.push(std::mem::take(&mut b));
            head(&mut b);
        }
        b.put_u64(seat.member);
        b.put_u8(seat.name.len() as u8);
        b.put_slice(seat.name.as_bytes());
        let latest = seat.latest.as_deref().unwrap_or_default();
        b.put_u32(latest.len() as u32);
        b.put_slice(latest);
    }
    b[mark_at] = 1;
    chunks.push(b);
    chunks.into_iter().map(BytesMut::freeze).collect()
}

/// One chunk of a snapshot: its room, whether it is the last, and the
/// snapshot so far (members of this chunk only).
pub fn decode_snapshot_chunk(mut b: Bytes) -> Result<(String, bool, RemoteSnapshot), WireError> {
    let short = WireError("short snapshot");
    if b.len() < 2 {
        return Err(short);
    }
    let room_len = b.get_u16() as usize;
    if b.len() < room_len + 25 {
        return Err(short);
    }
    let room = String::from_utf8(b.split_to(room_len).to_vec())
        .map_err(|_| WireError("room not UTF-8"))?;
    let (node, epoch, seq) = (b.get_u64(), b.get_u64(), b.get_u64());
    let last = b.get_u8() == 1;
    let mut members = Vec::new();
    while b.has_remaining() {
        if b.len() < 9 {
            return Err(short);
        }
        let member = b.get_u64();
        let name_len = b.get_u8() as usize;
        if b.len() < name_len + 4 {
            return Err(short);
        }
        let name = String::from_utf8(b.split_to(name_len).to_vec())
            .map_err(|_| WireError("name not UTF-8"))?;
        let latest_len = b.get_u32() as usize;
        if b.len() < latest_len {
            return Err(short);
        }
        let latest = b.split_to(latest_len);
        if !latest.is_empty() && !is_message_frame(&latest) {
            return Err(WireError("latest is not a MESSAGE frame"));
        }
        members.push(RemoteSeat {
            member,
            name,
            latest: (!latest.is_empty()).then_some(latest),
        });
    }
    let snapshot = RemoteSnapshot {
        node,
        epoch,
        seq,
        members,
    };
    Ok((room, last, snapshot))
}

/// A heartbeat: `node` is up (`true`) or leaving.
pub fn heartbeat(node: u64, up: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(9);
    b.put_u64(node);
    b.put_u8(if up { 1 } else { 2 });
    b.freeze()
}

/// Reads a heartbeat: (node, up).
pub fn decode_heartbeat(mut b: Bytes) -> Result<(u64, bool), WireError> {
    if b.len() != 9 {
        return Err(WireError("bad heartbeat"));
    }
    Ok((b.get_u64(), b.get_u8() == 1))
}

/// A node's answer to [`ROOMS_SUBJECT`]: its rooms and local member counts.
pub fn rooms_answer(rooms: &[relais_protocol::RoomInfo]) -> Bytes {
    let mut b = BytesMut::new();
    for r in rooms {
        b.put_u16(r.name.len() as u16);
        b.put_slice(r.name.as_bytes());
        b.put_u32(r.members);
    }
    b.freeze()
}

/// Reads a [`rooms_answer`].
pub fn decode_rooms_answer(mut b: Bytes) -> Result<Vec<relais_protocol::RoomInfo>, WireError> {
    let mut rooms = Vec::new();
    while b.has_remaining() {
        if b.len() < 2 {
            return Err(WireError("short rooms answer"));
        }
        let len = b.get_u16() as usize;
        if b.len() < len + 4 {
            return Err(WireError("short rooms answer"));
        }
        let name =
            String::from_utf8(b.split_to(len).to_vec()).map_err(|_| WireError("room not UTF-8"))?;
        rooms.push(relais_protocol::RoomInfo {
            name,
            members: b.get_u32(),
        });
    }
    Ok(rooms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use relais_protocol::encode_message;

    const STAMP: Stamp = Stamp {
        node: 0x0102_0304_0506_0708,
        epoch: 9,
        seq: 10,
    };

    #[test]
    fn events_round_trip() {
        let frame = encode_message("ana", b"hi");
        for (bytes, event) in [
            (
                joined(STAMP, 7, "ana"),
                RemoteEvent::Joined {
                    member: 7,
                    name: "ana".into(),
                },
            ),
            (
                left(STAMP, 7, CloseReason::Timeout),
                RemoteEvent::Left {
                    member: 7,
                    reason: CloseReason::Timeout,
                },
            ),
            (
                message(STAMP, 7, &frame),
                RemoteEvent::Message {
                    member: 7,
                    frame: frame.clone(),
                },
            ),
        ] {
            assert_eq!(decode_event(bytes).unwrap(), (STAMP, event));
        }
        // The message event is the header and the frame, nothing else.
        assert_eq!(message(STAMP, 7, &frame).len(), EVENT_HEADER + frame.len());
        assert!(decode_event(message(STAMP, 7, b"not a frame")).is_err());
        assert!(decode_event(Bytes::from_static(&[1; 10])).is_err());
    }

    #[test]
    fn snapshots_split_into_chunks_and_join_again() {
        let latest = encode_message("m", &[5; 1000]);
        let snapshot = RemoteSnapshot {
            node: 3,
            epoch: 4,
            seq: 5,
            members: (0..600)
                .map(|i| RemoteSeat {
                    member: i,
                    name: format!("m{i}"),
                    latest: (i % 2 == 0).then(|| latest.clone()),
                })
                .collect(),
        };
        let chunks = snapshot_chunks("röom", &snapshot);
        assert!(chunks.len() > 1);
        let mut members = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            assert!(c.len() < SNAPSHOT_CHUNK + 2_000);
            let (room, last, part) = decode_snapshot_chunk(c.clone()).unwrap();
            assert_eq!(room, "röom");
            assert_eq!(last, i == chunks.len() - 1);
            assert_eq!((part.node, part.epoch, part.seq), (3, 4, 5));
            members.extend(part.members);
        }
        assert_eq!(members, snapshot.members);
        let empty = RemoteSnapshot {
            members: Vec::new(),
            ..snapshot
        };
        let chunks = snapshot_chunks("r", &empty);
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            decode_snapshot_chunk(chunks[0].clone()).unwrap(),
            ("r".into(), true, empty)
        );
    }

    #[test]
    fn subjects_and_keys_take_any_name() {
        assert_eq!(room_subject("lobby"), "relais.room.bG9iYnk");
        assert_eq!(sync_subject("a.b c>*"), "relais.sync.YS5iIGM-Kg");
        assert_eq!(snap_subject(255), "relais.snap.00000000000000ff");
        assert_eq!(claim_key("lobby", "ana"), "bG9iYnk.YW5h");
        assert_eq!(
            parse_claim_key(&claim_key("a.b", "é")),
            Some(("a.b".into(), "é".into()))
        );
        assert_eq!(claim_holder(&claim_value(u64::MAX)), Some(u64::MAX));
        let (t, r, room) = decode_sync_request(sync_request(1, 2, "x")).unwrap();
        assert_eq!((t, r, room.as_str()), (1, 2, "x"));
        assert_eq!(decode_heartbeat(heartbeat(5, false)).unwrap(), (5, false));
        let rooms = vec![relais_protocol::RoomInfo {
            name: "x".into(),
            members: 3,
        }];
        assert_eq!(decode_rooms_answer(rooms_answer(&rooms)).unwrap(), rooms);
    }
}
