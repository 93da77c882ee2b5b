//! The relay core: rooms, their members, the latest message of each member,
//! and fan-out. It knows nothing of transports: a member is a name and an
//! [`Outbox`]; frames are encoded bytes.
//!
//! Locking: one mutex over the room registry, one per room. Join and leave
//! take the registry then the room (rooms are created and removed under the
//! registry lock); publishing takes only its room's lock, so rooms never
//! contend with each other. Fan-out happens under the room lock, which makes
//! "join + snapshot" and "publish" atomic with respect to each other: a late
//! joiner gets every member's latest message exactly once, from the snapshot
//! or live.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use relais_protocol::{
    encode_message, CloseReason, RefuseReason, RoomInfo, ServerFrame, Welcome, MAX_PAYLOAD,
    MAX_ROOM_MEMBERS, VERSION,
};

use crate::outbox::Outbox;

/// All rooms of one server.
#[derive(Debug, Default)]
pub struct Relay {
    rooms: Mutex<HashMap<Arc<str>, Arc<Room>>>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct Room {
    name: Arc<str>,
    members: Mutex<Vec<Member>>,
}

#[derive(Debug)]
struct Member {
    id: u64,
    name: Arc<str>,
    echo: bool,
    outbox: Arc<Outbox>,
    /// The member's latest relayed message, encoded: the late-joiner snapshot.
    latest: Option<Bytes>,
}

/// A client's place in a room, returned by [`Relay::join`]. Give it back to
/// [`Relay::leave`] when the client goes.
#[derive(Debug)]
pub struct Membership {
    room: Arc<Room>,
    id: u64,
    name: Arc<str>,
}

impl Membership {
    /// The member's registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The room's name.
    pub fn room(&self) -> &str {
        &self.room.name
    }
}

impl Relay {
    /// An empty relay.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `name` in `room` (created if needed), with `outbox` as its
    /// way out. On success the outbox already holds the `WELCOME`, then the
    /// latest message of every other member; every other member's outbox
    /// holds a `JOINED`. Name and room must already be validated.
    pub fn join(
        &self,
        room: &str,
        name: &str,
        echo: bool,
        outbox: Arc<Outbox>,
    ) -> Result<Membership, RefuseReason> {
        let mut rooms = lock(&self.rooms);
        let room = match rooms.get(room) {
            Some(r) => r.clone(),
            None => {
                let name: Arc<str> = room.into();
                let r = Arc::new(Room {
                    name: name.clone(),
                    members: Mutex::new(Vec::new()),
                });
                rooms.insert(name, r.clone());
                r
            }
        };
        let mut members = lock(&room.members);
        let refusal = if members.iter().any(|m| &*m.name == name) {
            Some(RefuseReason::NameTaken)
        } else if members.len() >= MAX_ROOM_MEMBERS {
            Some(RefuseReason::RoomFull)
        } else {
            None
        };
        if let Some(reason) = refusal {
            if members.is_empty() {
                rooms.remove(&room.name);
            }
            return Err(reason);
        }

        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let name: Arc<str> = name.into();
        let joined = ServerFrame::Joined(name.to_string()).to_bytes();
        let mut names = Vec::with_capacity(members.len() + 1);
        for m in members.iter() {
            m.outbox.push_event(joined.clone());
            names.push(m.name.to_string());
        }
        names.push(name.to_string());
        outbox.push_event(
            ServerFrame::Welcome(Welcome {
                version: VERSION,
                max_payload: MAX_PAYLOAD as u32,
                room: room.name.to_string(),
                members: names,
            })
            .to_bytes(),
        );
        for m in members.iter() {
            if let Some(latest) = &m.latest {
                outbox.push_message(m.id, latest.clone());
            }
        }
        members.push(Member {
            id,
            name: name.clone(),
            echo,
            outbox,
            latest: None,
        });
        drop(members);
        Ok(Membership {
            room: room.clone(),
            id,
            name,
        })
    }

    /// Relays `payload` from `from` to every member of its room (the sender
    /// too if it asked for the echo), and keeps it as the sender's latest.
    /// The frame is encoded once; recipients share its bytes.
    pub fn publish(&self, from: &Membership, payload: &[u8]) {
        let frame = encode_message(&from.name, payload);
        let mut members = lock(&from.room.members);
        for m in members.iter_mut() {
            if m.id == from.id {
                m.latest = Some(frame.clone());
                if !m.echo {
                    continue;
                }
            }
            m.outbox.push_message(from.id, frame.clone());
        }
    }

    /// Removes a member, tells the rest of its room why it left, and removes
    /// the room with all its state if it is now empty. The member's name is
    /// free again when this returns.
    pub fn leave(&self, membership: Membership, reason: CloseReason) {
        let mut rooms = lock(&self.rooms);
        let room = &membership.room;
        let mut members = lock(&room.members);
        members.retain(|m| m.id != membership.id);
        if members.is_empty() {
            rooms.remove(&room.name);
            return;
        }
        let left = ServerFrame::Left(membership.name.to_string(), reason).to_bytes();
        for m in members.iter() {
            m.outbox.push_event(left.clone());
        }
    }

    /// Every room with its member count, sorted by name.
    pub fn rooms(&self) -> Vec<RoomInfo> {
        let rooms: Vec<Arc<Room>> = lock(&self.rooms).values().cloned().collect();
        let mut list: Vec<RoomInfo> = rooms
            .iter()
            .map(|r| RoomInfo {
                name: r.name.to_string(),
                members: lock(&r.members).len() as u32,
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// How many rooms exist.
    pub fn room_count(&self) -> usize {
        lock(&self.rooms).len()
    }

    /// How many clients are registered, over all rooms.
    pub fn member_count(&self) -> usize {
        let rooms: Vec<Arc<Room>> = lock(&self.rooms).values().cloned().collect();
        rooms.iter().map(|r| lock(&r.members).len()).sum()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent at every await-free step, so a
    // poisoned lock (a panic elsewhere) is safe to keep using.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use relais_protocol::FrameDecoder;

    fn outbox() -> Arc<Outbox> {
        Arc::new(Outbox::new(1 << 20))
    }

    fn frames(o: &Outbox) -> Vec<ServerFrame> {
        let mut raw = Vec::new();
        o.drain(&mut raw);
        let mut buf = BytesMut::new();
        for f in raw {
            buf.extend_from_slice(&f);
        }
        let mut d = FrameDecoder::new(relais_protocol::MAX_FRAME_LEN);
        let mut out = Vec::new();
        while let Some(body) = d.decode(&mut buf).unwrap() {
            out.push(ServerFrame::decode(body).unwrap());
        }
        out
    }

    fn msg(sender: &str, payload: &'static [u8]) -> ServerFrame {
        ServerFrame::Message {
            sender: sender.into(),
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn late_joiner_gets_welcome_then_latest_of_each_member() {
        let relay = Relay::new();
        let (a, b) = (outbox(), outbox());
        let ma = relay.join("r", "a", true, a.clone()).unwrap();
        relay.publish(&ma, b"1");
        relay.publish(&ma, b"2");
        let _mb = relay.join("r", "b", true, b.clone()).unwrap();
        let got = frames(&b);
        assert!(matches!(&got[0], ServerFrame::Welcome(w) if w.members == ["a", "b"]));
        assert_eq!(got[1..], [msg("a", b"2")]);
        assert_eq!(
            frames(&a)[1..],
            [msg("a", b"2"), ServerFrame::Joined("b".into())]
        );
    }

    #[test]
    fn names_are_unique_per_room_and_free_after_leave() {
        let relay = Relay::new();
        let m = relay.join("r", "a", true, outbox()).unwrap();
        assert_eq!(
            relay.join("r", "a", true, outbox()).unwrap_err(),
            RefuseReason::NameTaken
        );
        assert!(relay.join("other", "a", true, outbox()).is_ok());
        relay.leave(m, CloseReason::Normal);
        assert!(relay.join("r", "a", true, outbox()).is_ok());
    }

    #[test]
    fn echo_off_skips_the_sender_but_keeps_its_snapshot() {
        let relay = Relay::new();
        let a = outbox();
        let ma = relay.join("r", "a", false, a.clone()).unwrap();
        relay.publish(&ma, b"x");
        assert_eq!(frames(&a).len(), 1, "only the welcome");
        let b = outbox();
        relay.join("r", "b", true, b.clone()).unwrap();
        assert_eq!(frames(&b)[1..], [msg("a", b"x")]);
    }

    #[test]
    fn leave_announces_and_empty_rooms_vanish() {
        let relay = Relay::new();
        let (a, b) = (outbox(), outbox());
        let ma = relay.join("r", "a", true, a.clone()).unwrap();
        let mb = relay.join("r", "b", true, b.clone()).unwrap();
        relay.publish(&ma, b"bye");
        relay.leave(ma, CloseReason::SlowConsumer);
        assert_eq!(
            frames(&b)[1..],
            [
                msg("a", b"bye"),
                ServerFrame::Left("a".into(), CloseReason::SlowConsumer)
            ]
        );
        assert_eq!(relay.room_count(), 1);
        relay.leave(mb, CloseReason::Normal);
        assert_eq!(relay.room_count(), 0);
        assert_eq!(relay.member_count(), 0);
    }

    #[test]
    fn refused_join_does_not_leave_an_empty_room_behind() {
        let relay = Relay::new();
        let m = relay.join("r", "a", true, outbox()).unwrap();
        relay.leave(m, CloseReason::Normal);
        assert_eq!(relay.room_count(), 0);
        let m = relay.join("r", "a", true, outbox()).unwrap();
        assert!(relay.join("r", "a", true, outbox()).is_err());
        relay.leave(m, CloseReason::Normal);
        assert_eq!(relay.room_count(), 0);
        assert!(relay.rooms().is_empty());
    }
}
