//! The relay core: rooms, their members, the latest message of each member,
//! and fan-out. It knows nothing of transports: a member is a name and an
//! [`Outbox`]; frames are encoded bytes.
//!
//! Locking: one mutex over the room registry, one per room. The registry
//! lock is taken briefly to find or create a room (a join, a resume) and to
//! remove one (taken before that room's lock, never inside it); publishing,
//! and leaving a room that keeps a local member, take only their room's
//! lock, so rooms never contend with each other. Fan-out happens under the
//! room lock, which makes "join + snapshot" and "publish" atomic with
//! respect to each other: a late joiner gets every member's latest message
//! exactly once, from the snapshot or live.
//!
//! Seats and connections: a member's seat can outlive its connection. A
//! member that joined with `FLAG_RESUME` and whose connection is lost is
//! *parked* ([`Relay::park`]): it keeps its place, name and latest message,
//! but has no outbox, so fan-out skips it and nobody is told. A later
//! connection with the seat's resume token ([`crate::resume`]) takes it back
//! ([`Relay::resume`]), parked or still attached to a connection not yet
//! seen to die. Every attachment of a seat has a number, and a
//! [`Membership`] is the seat *as one attachment holds it*: publishing,
//! parking and leaving with a membership whose attachment is no longer the
//! seat's do nothing. That check, made under the room lock, is what makes a
//! resume and the end of the grace period (or the old connection's end)
//! race-free: whichever takes the lock first decides.
//!
//! Clusters ([`crate::cluster`]): a member is *local* (it has or had a
//! connection to this node) or *remote* (a member of another node, known
//! by that node's id and its member id there: [`RemoteId`]). Remote members
//! have no outbox, like parked ones, and get a local id too, so the
//! outboxes' latest-wins slots work unchanged. A room exists on a node
//! while it has local members; each of its local events (`JOINED`, `LEFT`,
//! and a message while another node may listen) gets the next number of the
//! room's stream (its *epoch*, a number unique to this room on this node,
//! and a sequence number) and goes to the cluster [`Link`]. Each other
//! node's stream is applied in order ([`Relay::remote_event`]); a gap, or a
//! stream not yet seen, makes the room wait for that node's snapshot of its
//! members ([`Relay::remote_snapshot`]), holding what arrives meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use relais_protocol::{
    encode_message, name_key, CloseReason, RefuseReason, Resume, RoomInfo, ServerFrame, Welcome,
    MAX_PAYLOAD, MAX_ROOM_MEMBERS, VERSION,
};
use tokio_util::sync::CancellationToken;

use crate::budget::MemoryBudget;
use crate::cluster::wire::{self, RemoteEvent, RemoteSeat, RemoteSnapshot, Stamp};
use crate::cluster::Link;
use crate::metrics::Metrics;
use crate::outbox::{Outbox, ENTRY_COST, UNTIMED_MESSAGE};
use crate::resume::ResumeKey;

/// All rooms of one server.
#[derive(Debug)]
pub struct Relay {
    rooms: Mutex<HashMap<Arc<str>, Arc<Room>>>,
    /// Member ids and room epochs: unique, increasing.
    next_id: AtomicU64,
    budget: Arc<MemoryBudget>,
    metrics: Metrics,
    resume_key: ResumeKey,
    /// The cluster, if this server is a node of one.
    link: OnceLock<Arc<Link>>,
}

impl Default for Relay {
    fn default() -> Self {
        Self::new()
    }
}

/// The memory budget is spent: a message cannot be relayed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("server memory budget spent")]
pub struct Overloaded;

/// Why [`Relay::join_room`] did not register a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    /// Refused, with this reason.
    Refused(RefuseReason),
    /// The room was removed meanwhile (its last local member left): open
    /// it again.
    Closed,
}

#[derive(Debug)]
pub(crate) struct Room {
    pub(crate) name: Arc<str>,
    /// Unique to this room on this node: the epoch of its event stream.
    pub(crate) epoch: u64,
    state: Mutex<RoomState>,
    /// Cluster nodes: set once the other nodes' members are known (the
    /// first join waits for it).
    pub(crate) synced: tokio::sync::OnceCell<()>,
    /// Cancelled (under the room lock) when the room is removed from the
    /// registry: nothing joins it any more.
    pub(crate) removed: CancellationToken,
    /// Cluster nodes: the room's NATS subject, made once.
    subject: OnceLock<async_nats::Subject>,
    /// Signalled when a node's snapshot of this room has been applied.
    pub(crate) snapshot_applied: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct RoomState {
    /// In id order (ids are taken under this lock).
    members: Vec<Member>,
    /// The number of this room's last event sent to the cluster.
    seq: u64,
    /// Where each other node's event stream for this room stands.
    origins: HashMap<u64, Origin>,
    /// How many members are remote: while none, and no node has asked for
    /// this room lately, its messages are not published (no node listens).
    remote: usize,
    /// Until when messages are published after a node asked for this
    /// room's snapshot (its first member may join soon).
    asked_until: Option<Instant>,
}

impl Room {
    /// The room's subject on NATS ([`wire::room_subject`]).
    pub(crate) fn subject(&self) -> async_nats::Subject {
        self.subject
            .get_or_init(|| wire::room_subject(&self.name).into())
            .clone()
    }
}

/// A member of another node, as that node numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RemoteId {
    /// The node's id.
    pub node: u64,
    /// The member's id on that node.
    pub member: u64,
}

#[derive(Debug)]
struct Member {
    id: u64,
    name: Arc<str>,
    /// The name's comparison key ([`name_key`]): one name per key in a room.
    key: Box<str>,
    echo: bool,
    /// Where its frames go; `None` while parked (nothing is queued for it)
    /// and for remote members.
    outbox: Option<Arc<Outbox>>,
    /// The member's latest relayed message, encoded: the late-joiner snapshot.
    latest: Option<Bytes>,
    /// Joined with `FLAG_RESUME`: parked, not removed, when its connection
    /// is lost.
    resumable: bool,
    /// Its join token made it read-only; a resume keeps it so.
    read_only: bool,
    /// Which attachment holds the seat: 0 for the joining connection, one
    /// more for each resume.
    attachment: u64,
    /// Cancelled when the current attachment loses the seat to a resume.
    detached: CancellationToken,
    /// A member of another node.
    remote: Option<RemoteId>,
}

/// Where one other node's event stream for a room stands.
#[derive(Debug, Default)]
struct Origin {
    epoch: u64,
    /// The sequence number expected next.
    next: u64,
    /// Waiting for the node's snapshot: what arrived meanwhile.
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    since: Instant,
    events: Vec<(Stamp, RemoteEvent)>,
    /// The held events' size.
    bytes: usize,
}

/// Events held per node and room while its snapshot is awaited, and their
/// bytes at most; past either they are dropped (a gap found after the
/// snapshot asks for another).
const MAX_PENDING_EVENTS: usize = 4096;
const MAX_PENDING_BYTES: usize = 1 << 20;

/// How long a room's messages are published after another node asked for
/// its snapshot, with no remote member yet.
const ASKED_INTEREST: Duration = Duration::from_secs(10);

/// How a new member joins ([`Relay::join`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seat {
    /// It receives its own messages.
    pub echo: bool,
    /// It can resume (`FLAG_RESUME`): its `WELCOME` carries a resume token,
    /// and its seat is parked rather than freed when its connection is lost.
    pub resumable: bool,
    /// It may not send (its join token says so); kept across resumes.
    pub read_only: bool,
}

/// A client's place in a room as one connection holds it, returned by
/// [`Relay::join`] and [`Relay::resume`]. Give it back to [`Relay::leave`]
/// when the client goes (or to [`Relay::park`] first).
#[derive(Debug)]
pub struct Membership {
    room: Arc<Room>,
    id: u64,
    name: Arc<str>,
    attachment: u64,
    detached: CancellationToken,
    resumable: bool,
    read_only: bool,
}

/// A room, held by a member's writer to pull its snapshot from
/// ([`Relay::fill_snapshot`]), or by a cluster node's subscription to it;
/// it outlives the membership harmlessly.
#[derive(Debug, Clone)]
pub struct RoomHandle(pub(crate) Arc<Room>);

impl RoomHandle {
    /// The room's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }
}

impl Membership {
    /// The member's room, for [`Relay::fill_snapshot`].
    pub fn room_handle(&self) -> RoomHandle {
        RoomHandle(self.room.clone())
    }

    /// The member's registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The room's name.
    pub fn room(&self) -> &str {
        &self.room.name
    }

    /// Whether the seat may be parked ([`Relay::park`]).
    pub fn resumable(&self) -> bool {
        self.resumable
    }

    /// Whether the member may only receive.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Completes when another connection has taken this seat
    /// ([`Relay::resume`]): this one is to end without a word.
    pub async fn taken_over(&self) {
        self.detached.cancelled().await;
    }

    /// Whether another connection has taken this seat.
    pub fn is_taken_over(&self) -> bool {
        self.detached.is_cancelled()
    }
}

impl Relay {
    /// An empty relay with no memory limit (for tests and tools).
    pub fn new() -> Self {
        Self::with_budget(Arc::new(MemoryBudget::new(usize::MAX)))
    }

    /// An empty relay charging room state (each member's latest message)
    /// and fan-out to `budget`.
    pub fn with_budget(budget: Arc<MemoryBudget>) -> Self {
        Self {
            rooms: Mutex::default(),
            next_id: AtomicU64::new(1),
            budget,
            metrics: Metrics::disabled(),
            resume_key: ResumeKey::random(),
            link: OnceLock::new(),
        }
    }

    /// Counts rooms, members, joins, leaves and conflation in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Sends this relay's room events to a cluster through `link` from now
    /// on (set once, before anyone joins).
    pub fn set_link(&self, link: Arc<Link>) {
        let _ = self.link.set(link);
    }

    /// The open room named `room`.
    pub fn room(&self, room: &str) -> Option<RoomHandle> {
        lock(&self.rooms).get(room).cloned().map(RoomHandle)
    }

    /// The key this relay's resume tokens are issued and checked with.
    pub fn resume_key(&self) -> &ResumeKey {
        &self.resume_key
    }

    /// The room named `room`, created (empty) if there is none. A room
    /// stays while it has local members: join it with
    /// [`join_room`](Self::join_room).
    pub fn open_room(&self, room: &str) -> RoomHandle {
        let mut rooms = lock(&self.rooms);
        if let Some(r) = rooms.get(room) {
            return RoomHandle(r.clone());
        }
        let name: Arc<str> = room.into();
        let r = Arc::new(Room {
            name: name.clone(),
            epoch: self.next_id.fetch_add(1, Ordering::Relaxed),
            state: Mutex::default(),
            synced: tokio::sync::OnceCell::new(),
            removed: CancellationToken::new(),
            subject: OnceLock::new(),
            snapshot_applied: tokio::sync::Notify::new(),
        });
        rooms.insert(name, r.clone());
        self.metrics.rooms_changed(1);
        RoomHandle(r)
    }

    /// Removes `room` from the registry if it has no local member (its
    /// remote members go with it, unannounced: nobody here is left to tell).
    pub fn close_if_unused(&self, room: &RoomHandle) {
        self.remove_if_unused(&room.0);
    }

    fn remove_if_unused(&self, room: &Arc<Room>) {
        let mut rooms = lock(&self.rooms);
        let mut st = lock(&room.state);
        if room.removed.is_cancelled() || local_count(&st) > 0 {
            return;
        }
        room.removed.cancel();
        let held: usize = st
            .members
            .iter()
            .filter_map(|m| m.latest.as_ref())
            .map(Bytes::len)
            .sum();
        st.members.clear();
        st.remote = 0;
        self.budget.release(held);
        if rooms.get(&room.name).is_some_and(|r| Arc::ptr_eq(r, room)) {
            rooms.remove(&room.name);
            self.metrics.rooms_changed(-1);
        }
    }

    /// Registers `name` in `room` (created if needed), with `outbox` as its
    /// way out, unless the room holds a name with the same comparison key
    /// ([`name_key`]: look-alikes are one name; a parked seat keeps its
    /// name). On success the outbox already holds the `WELCOME` (with a
    /// resume token if the seat is resumable) and owes the latest message
    /// of every other member (the snapshot, pulled with
    /// [`fill_snapshot`](Self::fill_snapshot)); every other attached
    /// member's outbox holds a `JOINED`. Name and room must already be
    /// validated.
    pub fn join(
        &self,
        room: &str,
        name: &str,
        seat: Seat,
        outbox: Arc<Outbox>,
    ) -> Result<Membership, RefuseReason> {
        loop {
            let handle = self.open_room(room);
            match self.join_room(&handle, name, seat, outbox.clone()) {
                Ok(m) => return Ok(m),
                Err(JoinError::Refused(reason)) => return Err(reason),
                Err(JoinError::Closed) => continue,
            }
        }
    }

    /// [`join`](Self::join) into a room already open ([`open_room`](Self::open_room)).
    /// A refused join into a room with no local member removes it.
    pub fn join_room(
        &self,
        room: &RoomHandle,
        name: &str,
        seat: Seat,
        outbox: Arc<Outbox>,
    ) -> Result<Membership, JoinError> {
        let room = &room.0;
        let mut st = lock(&room.state);
        if room.removed.is_cancelled() {
            return Err(JoinError::Closed);
        }
        let key: Box<str> = name_key(name).into();
        let refusal = if st.members.iter().any(|m| m.key == key) {
            Some(RefuseReason::NameTaken)
        } else if st.members.len() >= MAX_ROOM_MEMBERS {
            Some(RefuseReason::RoomFull)
        } else {
            None
        };
        if let Some(reason) = refusal {
            drop(st);
            self.remove_if_unused(room);
            return Err(JoinError::Refused(reason));
        }

        // Ids are taken under the room lock: members stay in id order.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let name: Arc<str> = name.into();
        let joined = ServerFrame::Joined(name.to_string()).to_bytes();
        let mut names = Vec::with_capacity(st.members.len() + 1);
        for m in st.members.iter() {
            if let Some(o) = &m.outbox {
                o.push_event(joined.clone());
            }
            names.push(m.name.to_string());
        }
        names.push(name.to_string());
        let resume = seat.resumable.then(|| Resume {
            resumed: false,
            token: self.resume_key.issue(&room.name, &name, id),
        });
        outbox.push_event(welcome(&room.name, names, resume));
        outbox.owe_snapshot(
            st.members
                .iter()
                .filter(|m| m.latest.is_some())
                .map(|m| m.id),
        );
        let detached = CancellationToken::new();
        st.members.push(Member {
            id,
            name: name.clone(),
            key,
            echo: seat.echo,
            outbox: Some(outbox),
            latest: None,
            resumable: seat.resumable,
            read_only: seat.read_only,
            attachment: 0,
            detached: detached.clone(),
            remote: None,
        });
        self.announce(room, &mut st, |stamp| wire::joined(stamp, id, &name));
        drop(st);
        self.metrics.joined();
        Ok(Membership {
            room: room.clone(),
            id,
            name,
            attachment: 0,
            detached,
            resumable: seat.resumable,
            read_only: seat.read_only,
        })
    }

    /// Sends one of `room`'s events to the cluster, numbered next in its
    /// stream. Under the room lock, so the stream is in the order the room
    /// saw.
    fn announce(&self, room: &Room, st: &mut RoomState, event: impl FnOnce(Stamp) -> Bytes) {
        if let Some(link) = self.link.get() {
            st.seq += 1;
            let stamp = Stamp {
                node: link.node(),
                epoch: room.epoch,
                seq: st.seq,
            };
            link.publish_room_event(room.subject(), event(stamp));
        }
    }

    /// Gives seat `id`, held by `name` in `room` (as its resume token says),
    /// to a new connection with `outbox` as its way out, whether the seat is
    /// parked or still attached to another connection (which is told to end
    /// silently: [`Membership::taken_over`]). Nobody else is told. The
    /// outbox then holds a `WELCOME` with `RESUMED` set, the current member
    /// list and `token`, and owes the latest message of every other member.
    /// `echo` is the new connection's choice. `None`: the seat is gone.
    pub fn resume(
        &self,
        room: &str,
        name: &str,
        id: u64,
        echo: bool,
        token: String,
        outbox: Arc<Outbox>,
    ) -> Option<Membership> {
        let room = lock(&self.rooms).get(room)?.clone();
        let mut st = lock(&room.state);
        let members = &mut st.members;
        // Members are in join order, so in id order.
        let i = members.binary_search_by_key(&id, |m| m.id).ok()?;
        if *members[i].name != *name || members[i].remote.is_some() {
            return None; // Not what the token was issued for.
        }
        let names = members.iter().map(|m| m.name.to_string()).collect();
        let resume = Some(Resume {
            resumed: true,
            token,
        });
        outbox.push_event(welcome(&room.name, names, resume));
        outbox.owe_snapshot(
            members
                .iter()
                .filter(|m| m.id != id && m.latest.is_some())
                .map(|m| m.id),
        );
        let seat = &mut members[i];
        seat.detached.cancel();
        seat.detached = CancellationToken::new();
        seat.attachment += 1;
        seat.outbox = Some(outbox);
        seat.echo = echo;
        let membership = Membership {
            room: room.clone(),
            id,
            name: seat.name.clone(),
            attachment: seat.attachment,
            detached: seat.detached.clone(),
            resumable: seat.resumable,
            read_only: seat.read_only,
        };
        Some(membership)
    }

    /// Detaches a resumable member's seat from its connection: it stays in
    /// the room (name, place, latest message), nothing is queued for it, and
    /// nobody is told, until it is resumed or [`leave`](Self::leave)s.
    /// Returns `false`, doing nothing, if the seat is not resumable or this
    /// membership no longer holds it.
    pub fn park(&self, membership: &Membership) -> bool {
        if !membership.resumable {
            return false;
        }
        let mut st = lock(&membership.room.state);
        match current(&st.members, membership) {
            Some(i) => {
                st.members[i].outbox = None;
                true
            }
            None => false,
        }
    }

    /// Relays `payload` from `from` to every member of its room (the sender
    /// too if it asked for the echo), and keeps it as the sender's latest.
    /// The frame is encoded once; recipients share its bytes. Each copy
    /// waiting in an outbox, and the kept latest, are charged to the memory
    /// budget first; if it cannot take them all, nothing is relayed.
    pub fn publish(&self, from: &Membership, payload: &[u8]) -> Result<(), Overloaded> {
        let frame = encode_message(&from.name, payload);
        let mut st = lock(&from.room.state);
        // Members are in join order, so in id order.
        let Ok(sender) = st.members.binary_search_by_key(&from.id, |m| m.id) else {
            return Ok(()); // Already gone.
        };
        if st.members[sender].attachment != from.attachment {
            return Ok(()); // Taken over: this connection speaks for nobody.
        }
        self.fan_out(&mut st.members, sender, frame.clone())?;
        if self.link.get().is_some() && self.remote_interest(&mut st) {
            self.announce(&from.room, &mut st, |stamp| {
                wire::message(stamp, from.id, &frame)
            });
        }
        Ok(())
    }

    /// Whether another node may be listening to this room: it has members
    /// here, or asked for the room lately. (A message not published takes
    /// no number: the stream has no gap.)
    fn remote_interest(&self, st: &mut RoomState) -> bool {
        if st.remote > 0 {
            return true;
        }
        match st.asked_until {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                st.asked_until = None;
                false
            }
            None => false,
        }
    }

    /// Keeps `frame` as the latest of `members[sender]` and queues it for
    /// every attached member (the sender too if it asked for the echo).
    fn fan_out(
        &self,
        members: &mut [Member],
        sender: usize,
        frame: Bytes,
    ) -> Result<(), Overloaded> {
        // For the state-age metric only: no clock read if nobody counts.
        let stamp = if self.metrics.is_enabled() {
            crate::metrics::stamp_now()
        } else {
            UNTIMED_MESSAGE
        };
        // Parked and remote members are charged too, and given back in the
        // loop: no second pass to count them.
        let recipients = members.len() - usize::from(!members[sender].echo);
        let cost = (frame.len() + ENTRY_COST) * recipients + frame.len();
        if !self.budget.try_data(cost) {
            return Err(Overloaded);
        }
        let from = members[sender].id;
        let old = members[sender].latest.replace(frame.clone());
        let mut freed = old.map_or(0, |f| f.len());
        let mut conflated = 0;
        for m in members.iter() {
            if m.id != from || m.echo {
                match &m.outbox {
                    Some(o) => {
                        let pushed = o.push_reserved(from, frame.clone(), stamp);
                        freed += pushed.release;
                        conflated += u64::from(pushed.replaced);
                    }
                    None => freed += frame.len() + ENTRY_COST,
                }
            }
        }
        self.budget.release(freed);
        self.metrics.conflated(conflated);
        Ok(())
    }

    /// Moves owed snapshot messages (see [`Outbox::owe_snapshot`]) into the
    /// member's outbox until about `max_bytes` are in, each charged to the
    /// memory budget, and never past the recipient's `max_pending_bytes`
    /// (so the snapshot never makes a reader a slow consumer; an outbox
    /// with nothing charged always takes one). Returns whether the budget
    /// stopped it: then try again later; a stop at the recipient's cap
    /// resumes once what is waiting has been written. A member that has
    /// left is skipped: its `LEFT` is already on the way.
    pub fn fill_snapshot(&self, room: &RoomHandle, outbox: &Outbox, max_bytes: usize) -> bool {
        let st = lock(&room.0.state);
        let members = &st.members;
        let mut filled = 0;
        while filled < max_bytes {
            let Some(id) = outbox.next_owed() else {
                return false;
            };
            // Members are in join order, so in id order.
            let Some(frame) = members
                .binary_search_by_key(&id, |m| m.id)
                .ok()
                .and_then(|i| members[i].latest.clone())
            else {
                continue;
            };
            let cost = frame.len() + ENTRY_COST;
            if !outbox.has_room_for(cost) {
                outbox.owe_first(id);
                return false;
            }
            if !self.budget.try_data(cost) {
                outbox.owe_first(id);
                return true;
            }
            let pushed = outbox.push_reserved(id, frame, UNTIMED_MESSAGE);
            self.budget.release(pushed.release);
            filled += cost;
        }
        false
    }

    /// Removes a member (attached or parked), tells the rest of its room why
    /// it left, and removes the room with all its state if it now has no
    /// local member. The member's name is free again when this returns.
    /// Returns `false`, doing nothing, if the seat is gone or another
    /// connection has taken it ([`resume`](Self::resume)): then nobody is
    /// told anything.
    pub fn leave(&self, membership: Membership, reason: CloseReason) -> bool {
        let room = &membership.room;
        let st = lock(&room.state);
        let Some(i) = current(&st.members, &membership) else {
            return false;
        };
        self.remove_local(room, st, i, reason);
        true
    }

    /// Removes local member `i` of `room` for `reason`: its state and its
    /// name go, the room (and the cluster) is told, and the room is removed
    /// if no local member is left (the registry lock only then, unless a
    /// join came in meanwhile).
    fn remove_local(
        &self,
        room: &Arc<Room>,
        mut st: MutexGuard<'_, RoomState>,
        i: usize,
        reason: CloseReason,
    ) -> Member {
        // `remove`, not `swap_remove`: members stay in join order, which is
        // id order (see `fill_snapshot`).
        let gone = st.members.remove(i);
        self.budget
            .release(gone.latest.as_ref().map_or(0, Bytes::len));
        self.metrics.left(reason);
        if let Some(link) = self.link.get() {
            link.release_name(&room.name, &gone.key);
        }
        self.announce(room, &mut st, |stamp| wire::left(stamp, gone.id, reason));
        tell_left(&st.members, &gone.name, reason);
        let unused = local_count(&st) == 0;
        drop(st);
        if unused {
            self.remove_if_unused(room);
        }
        gone
    }

    /// Removes this node's member of `room` whose name has comparison key
    /// `key` (a cluster gave the name to a member of another node): the
    /// room is told it left for `reason`, and its connection is closed with
    /// a `GOODBYE` of that reason. Returns whether there was one.
    pub fn evict(&self, room: &str, key: &str, reason: CloseReason) -> bool {
        let Some(room) = self.room(room) else {
            return false;
        };
        let room = &room.0;
        let st = lock(&room.state);
        let Some(i) = st
            .members
            .iter()
            .position(|m| m.remote.is_none() && &*m.key == key)
        else {
            return false;
        };
        let gone = self.remove_local(room, st, i, reason);
        // Its writer sends what is waiting, then the GOODBYE. (A parked
        // seat's session finds the seat gone when its grace ends.)
        if let Some(outbox) = &gone.outbox {
            outbox.close(reason);
        }
        true
    }

    /// Applies one event of another node's stream for `room`. Returns
    /// whether that node's snapshot of the room must be asked for (the
    /// stream was not known, or has a gap); the room holds that node's
    /// events until it comes.
    pub fn remote_event(&self, room: &RoomHandle, stamp: Stamp, event: RemoteEvent) -> bool {
        let mut st = lock(&room.0.state);
        if room.0.removed.is_cancelled() {
            return false;
        }
        self.accept(&mut st, stamp, event)
    }

    fn accept(&self, st: &mut RoomState, stamp: Stamp, event: RemoteEvent) -> bool {
        let origin = st.origins.entry(stamp.node).or_default();
        if let Some(pending) = &mut origin.pending {
            let size = event.size();
            if pending.events.len() < MAX_PENDING_EVENTS
                && pending.bytes + size <= MAX_PENDING_BYTES
            {
                pending.bytes += size;
                pending.events.push((stamp, event));
            }
            return false;
        }
        let hold = |origin: &mut Origin, stamp, event: RemoteEvent| {
            origin.pending = Some(Pending {
                since: Instant::now(),
                bytes: event.size(),
                events: vec![(stamp, event)],
            });
            true
        };
        if origin.next == 0 {
            // A stream never seen: where it stands is unknown.
            return hold(origin, stamp, event);
        }
        if stamp.epoch < origin.epoch || (stamp.epoch == origin.epoch && stamp.seq < origin.next) {
            return false; // Already applied, or from a room since removed.
        }
        let restarted = if stamp.epoch == origin.epoch && stamp.seq == origin.next {
            origin.next += 1;
            false
        } else if stamp.epoch > origin.epoch && stamp.seq == 1 {
            // The node's room was removed and created again.
            origin.epoch = stamp.epoch;
            origin.next = 2;
            true
        } else {
            // A gap: events were lost.
            return hold(origin, stamp, event);
        };
        if restarted {
            // Whatever is still here of the node's old room is gone.
            self.drop_remote(st, |r| r.node == stamp.node, CloseReason::ConnectionLost);
        }
        self.apply(st, stamp.node, event);
        false
    }

    fn apply(&self, st: &mut RoomState, node: u64, event: RemoteEvent) {
        match event {
            RemoteEvent::Joined { member, name } => {
                let remote = RemoteId { node, member };
                if st.members.iter().any(|m| m.remote == Some(remote)) {
                    return;
                }
                self.add_remote(st, remote, name);
            }
            RemoteEvent::Left { member, reason } => {
                let remote = RemoteId { node, member };
                self.drop_remote(st, |r| r == remote, reason);
            }
            RemoteEvent::Message { member, frame } => {
                let remote = Some(RemoteId { node, member });
                if let Some(i) = st.members.iter().position(|m| m.remote == remote) {
                    // At most once, like the rest of the cluster's traffic:
                    // past the budget the message is dropped.
                    let _ = self.fan_out(&mut st.members, i, frame);
                }
            }
        }
    }

    fn add_remote(&self, st: &mut RoomState, remote: RemoteId, name: String) -> usize {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let name: Arc<str> = name.into();
        let joined = ServerFrame::Joined(name.to_string()).to_bytes();
        for o in st.members.iter().filter_map(|m| m.outbox.as_ref()) {
            o.push_event(joined.clone());
        }
        st.members.push(Member {
            id,
            key: name_key(&name).into(),
            name,
            echo: false,
            outbox: None,
            latest: None,
            resumable: false,
            read_only: false,
            attachment: 0,
            detached: CancellationToken::new(),
            remote: Some(remote),
        });
        st.remote += 1;
        st.members.len() - 1
    }

    /// Removes the remote members `which` picks, telling the local ones.
    fn drop_remote(
        &self,
        st: &mut RoomState,
        which: impl Fn(RemoteId) -> bool,
        reason: CloseReason,
    ) {
        let mut i = 0;
        while i < st.members.len() {
            if st.members[i].remote.is_some_and(&which) {
                let gone = st.members.remove(i);
                st.remote -= 1;
                self.budget.release(gone.latest.map_or(0, |f| f.len()));
                tell_left(&st.members, &gone.name, reason);
            } else {
                i += 1;
            }
        }
    }

    /// Applies another node's snapshot of its members in `room`, if this
    /// room is waiting for it: members it no longer has leave ("connection
    /// lost": their `LEFT` was missed), new ones join, and a latest message
    /// that changed is relayed; then the events held meanwhile are applied.
    /// Returns whether another snapshot must be asked for (the held events
    /// have a gap).
    pub fn remote_snapshot(&self, room: &RoomHandle, snapshot: RemoteSnapshot) -> bool {
        let mut st = lock(&room.0.state);
        if room.0.removed.is_cancelled() {
            return false;
        }
        let node = snapshot.node;
        let origin = st.origins.entry(node).or_default();
        if origin.next != 0 && (snapshot.epoch, snapshot.seq + 1) < (origin.epoch, origin.next) {
            // Older than what has been applied: an answer to an earlier
            // request. Still waiting for a newer one.
            return false;
        }
        let held = match origin.pending.take() {
            Some(pending) => pending.events,
            // A stream never seen: the snapshot tells where it stands.
            None if origin.next == 0 => Vec::new(),
            None => return false, // Not waited for (a duplicate answer).
        };
        origin.epoch = snapshot.epoch;
        origin.next = snapshot.seq + 1;
        let RemoteSnapshot { members, .. } = snapshot;
        let keep: std::collections::HashSet<u64> = members.iter().map(|s| s.member).collect();
        self.drop_remote(
            &mut st,
            |r| r.node == node && !keep.contains(&r.member),
            CloseReason::ConnectionLost,
        );
        for RemoteSeat {
            member,
            name,
            latest,
        } in members
        {
            let remote = Some(RemoteId { node, member });
            let i = match st.members.iter().position(|m| m.remote == remote) {
                Some(i) => i,
                None => self.add_remote(&mut st, RemoteId { node, member }, name),
            };
            if let Some(frame) = latest {
                if st.members[i].latest.as_ref() != Some(&frame) {
                    let _ = self.fan_out(&mut st.members, i, frame);
                }
            }
        }
        let mut resync = false;
        for (stamp, event) in held {
            resync |= self.accept(&mut st, stamp, event);
        }
        drop(st);
        room.0.snapshot_applied.notify_waiters();
        resync
    }

    /// Makes `room` wait for `node`'s snapshot (to be asked for): its
    /// events are held until it comes.
    pub fn expect_snapshot(&self, room: &RoomHandle, node: u64) {
        let mut st = lock(&room.0.state);
        let origin = st.origins.entry(node).or_default();
        if origin.pending.is_none() {
            origin.pending = Some(Pending {
                since: Instant::now(),
                events: Vec::new(),
                bytes: 0,
            });
        }
    }

    /// Whether `room` waits for a snapshot from any of `nodes`.
    pub fn awaits_snapshot(&self, room: &RoomHandle, nodes: &[u64]) -> bool {
        let st = lock(&room.0.state);
        nodes
            .iter()
            .any(|n| st.origins.get(n).is_some_and(|o| o.pending.is_some()))
    }

    /// The snapshots waited for longer than `age`, as (room, node); each is
    /// counted as asked for again from now.
    pub fn overdue_snapshots(&self, age: Duration) -> Vec<(RoomHandle, u64)> {
        let now = Instant::now();
        let mut overdue = Vec::new();
        for room in self.room_handles() {
            let mut st = lock(&room.0.state);
            for (node, origin) in st.origins.iter_mut() {
                if let Some(p) = &mut origin.pending {
                    if now.duration_since(p.since) >= age {
                        p.since = now;
                        overdue.push((room.clone(), *node));
                    }
                }
            }
        }
        overdue
    }

    /// A node is gone (dead, or out of reach): its members leave every
    /// room with "connection lost", and its streams are forgotten.
    pub fn node_gone(&self, node: u64) {
        for room in self.room_handles() {
            let mut st = lock(&room.0.state);
            st.origins.remove(&node);
            self.drop_remote(&mut st, |r| r.node == node, CloseReason::ConnectionLost);
        }
    }

    /// This node's own members of `room` with their latest messages, and
    /// where its stream stands: what another node needs to catch up.
    /// `node` is this node's id.
    pub fn local_snapshot(&self, room: &str, node: u64) -> RemoteSnapshot {
        let Some(room) = lock(&self.rooms).get(room).cloned() else {
            return RemoteSnapshot {
                node,
                epoch: 0,
                seq: 0,
                members: Vec::new(),
            };
        };
        let mut st = lock(&room.state);
        // The asker may be about to join: publish messages for a while.
        st.asked_until = Some(Instant::now() + ASKED_INTEREST);
        RemoteSnapshot {
            node,
            epoch: room.epoch,
            seq: st.seq,
            members: st
                .members
                .iter()
                .filter(|m| m.remote.is_none())
                .map(|m| RemoteSeat {
                    member: m.id,
                    name: m.name.to_string(),
                    latest: m.latest.clone(),
                })
                .collect(),
        }
    }

    /// Every room, open now.
    pub fn room_handles(&self) -> Vec<RoomHandle> {
        lock(&self.rooms)
            .values()
            .cloned()
            .map(RoomHandle)
            .collect()
    }

    /// Every room with its count of local members (this node's; all of them
    /// on a single server), sorted by name. Rooms with none are left out.
    pub fn rooms(&self) -> Vec<RoomInfo> {
        let rooms: Vec<Arc<Room>> = lock(&self.rooms).values().cloned().collect();
        let mut list: Vec<RoomInfo> = rooms
            .iter()
            .map(|r| RoomInfo {
                name: r.name.to_string(),
                members: local_count(&lock(&r.state)) as u32,
            })
            .filter(|r| r.members > 0)
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// How many rooms exist.
    pub fn room_count(&self) -> usize {
        lock(&self.rooms).len()
    }

    /// How many clients are registered here, over all rooms (remote
    /// members not counted).
    pub fn member_count(&self) -> usize {
        let rooms: Vec<Arc<Room>> = lock(&self.rooms).values().cloned().collect();
        rooms.iter().map(|r| local_count(&lock(&r.state))).sum()
    }
}

fn local_count(st: &RoomState) -> usize {
    st.members.len() - st.remote
}

/// Queues `LEFT` for `name` to every attached member.
fn tell_left(members: &[Member], name: &str, reason: CloseReason) {
    if members.iter().all(|m| m.outbox.is_none()) {
        return;
    }
    let left = ServerFrame::Left(name.to_string(), reason).to_bytes();
    for o in members.iter().filter_map(|m| m.outbox.as_ref()) {
        o.push_event(left.clone());
    }
}

/// Where the seat `membership` names is in `members`, if that membership
/// still holds it (the seat is there and no resume has taken it since).
fn current(members: &[Member], membership: &Membership) -> Option<usize> {
    // Members are in join order, so in id order.
    let i = members
        .binary_search_by_key(&membership.id, |m| m.id)
        .ok()?;
    (members[i].attachment == membership.attachment).then_some(i)
}

/// An encoded `WELCOME` to `room` with `members`.
fn welcome(room: &str, members: Vec<String>, resume: Option<Resume>) -> Bytes {
    ServerFrame::Welcome(Welcome {
        version: VERSION,
        max_payload: MAX_PAYLOAD as u32,
        room: room.to_string(),
        members,
        resume,
    })
    .to_bytes()
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent at every await-free step, so a
    // poisoned lock (a panic elsewhere) is safe to keep using.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use relais_protocol::FrameDecoder;

    fn seat(echo: bool) -> Seat {
        Seat {
            echo,
            ..Seat::default()
        }
    }

    fn outbox(relay: &Relay) -> Arc<Outbox> {
        Arc::new(Outbox::new(1 << 20, relay.budget.clone()))
    }

    fn frames(o: &Outbox) -> Vec<ServerFrame> {
        let mut raw = crate::outbox::Batch::default();
        o.drain(&mut raw);
        o.written();
        let mut buf = BytesMut::new();
        for f in raw.frames {
            buf.extend_from_slice(&f);
        }
        let mut d = FrameDecoder::new(relais_protocol::MAX_FRAME_LEN);
        let mut out = Vec::new();
        while let Some(body) = d.decode(&mut buf).unwrap() {
            out.push(ServerFrame::decode(body).unwrap());
        }
        out
    }

    /// `n` members of room "r", `m0`…, each with `payload` as its latest.
    fn room_with_state(relay: &Relay, n: usize, payload: &[u8]) -> Vec<Membership> {
        let members: Vec<_> = (0..n)
            .map(|i| {
                relay
                    .join("r", &format!("m{i}"), seat(true), outbox(relay))
                    .unwrap()
            })
            .collect();
        for m in &members {
            relay.publish(m, payload).unwrap();
        }
        members
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
        let (a, b) = (outbox(&relay), outbox(&relay));
        let ma = relay.join("r", "a", seat(true), a.clone()).unwrap();
        relay.publish(&ma, b"1").unwrap();
        relay.publish(&ma, b"2").unwrap();
        let mb = relay.join("r", "b", seat(true), b.clone()).unwrap();
        assert!(!relay.fill_snapshot(&mb.room_handle(), &b, usize::MAX));
        let got = frames(&b);
        assert!(matches!(&got[0], ServerFrame::Welcome(w) if w.members == ["a", "b"]));
        assert_eq!(got[1..], [msg("a", b"2")]);
        assert_eq!(
            frames(&a)[1..],
            [msg("a", b"2"), ServerFrame::Joined("b".into())]
        );
    }

    fn resumable() -> Seat {
        Seat {
            resumable: true,
            ..Seat::default()
        }
    }

    /// The resume fields of the first frame, a `WELCOME`, and its members.
    fn welcome_of(frames: &[ServerFrame]) -> (Option<Resume>, Vec<String>) {
        match &frames[0] {
            ServerFrame::Welcome(w) => (w.resume.clone(), w.members.clone()),
            other => panic!("expected a WELCOME, got {other:?}"),
        }
    }

    #[test]
    fn a_parked_seat_is_skipped_kept_and_taken_back_unseen() {
        let relay = Relay::new();
        let (a, b) = (outbox(&relay), outbox(&relay));
        let ma = relay.join("r", "a", resumable(), a.clone()).unwrap();
        let (resume, _) = welcome_of(&frames(&a));
        let token = resume.expect("a resumable seat gets a token").token;
        assert_eq!(relay.resume_key().verify(&token, "r", "a"), Some(ma.id));
        let mb = relay.join("r", "b", seat(false), b.clone()).unwrap();
        relay.publish(&ma, b"a1").unwrap();
        assert!(relay.park(&ma));
        // Nothing is queued for a parked seat; its name and state stay.
        relay.publish(&mb, b"b1").unwrap();
        let c = outbox(&relay);
        let mc = relay.join("r", "c", seat(false), c.clone()).unwrap();
        assert_eq!(
            relay
                .join("r", "A", seat(false), outbox(&relay))
                .unwrap_err(),
            RefuseReason::NameTaken
        );
        relay.fill_snapshot(&mc.room_handle(), &c, usize::MAX);
        let got = frames(&c);
        assert_eq!(welcome_of(&got).1, ["a", "b", "c"]);
        assert_eq!(got[1..], [msg("a", b"a1"), msg("b", b"b1")]);
        assert_eq!(frames(&a), [ServerFrame::Joined("b".into())]);
        assert_eq!(relay.member_count(), 3);

        let a2 = outbox(&relay);
        let token2 = relay.resume_key().issue("r", "a", ma.id);
        let ra = relay
            .resume("r", "a", ma.id, true, token2.clone(), a2.clone())
            .unwrap();
        relay.fill_snapshot(&ra.room_handle(), &a2, usize::MAX);
        let got = frames(&a2);
        let (resume, members) = welcome_of(&got);
        assert_eq!(
            resume,
            Some(Resume {
                resumed: true,
                token: token2
            })
        );
        assert_eq!(members, ["a", "b", "c"]);
        assert_eq!(
            got[1..],
            [msg("b", b"b1")],
            "the others' state, not its own"
        );
        assert_eq!(
            frames(&b)[1..],
            [msg("a", b"a1"), ServerFrame::Joined("c".into())]
        );
        // Echo now on, as the new connection asked.
        relay.publish(&ra, b"a2").unwrap();
        assert_eq!(frames(&a2), [msg("a", b"a2")]);
        assert_eq!(frames(&c), [msg("a", b"a2")]);
        assert_eq!(frames(&b), [msg("a", b"a2")]);

        // The old attachment speaks for nobody and cannot end the seat.
        relay.publish(&ma, b"ghost").unwrap();
        assert!(!relay.park(&ma));
        assert!(!relay.leave(ma, CloseReason::ConnectionLost));
        assert!(frames(&b).is_empty() && frames(&c).is_empty());
        assert_eq!(relay.member_count(), 3);
        assert!(relay.leave(ra, CloseReason::Normal));
        assert_eq!(
            frames(&b),
            [ServerFrame::Left("a".into(), CloseReason::Normal)]
        );
    }

    #[test]
    fn a_parked_seat_that_leaves_tells_the_room_why_and_cannot_come_back() {
        let relay = Relay::new();
        let b = outbox(&relay);
        let ma = relay.join("r", "a", resumable(), outbox(&relay)).unwrap();
        let _mb = relay.join("r", "b", seat(false), b.clone()).unwrap();
        let id = ma.id;
        assert!(relay.park(&ma));
        assert!(relay.leave(ma, CloseReason::ConnectionLost));
        assert_eq!(
            frames(&b)[1..],
            [ServerFrame::Left("a".into(), CloseReason::ConnectionLost)]
        );
        let token = relay.resume_key().issue("r", "a", id);
        assert!(relay
            .resume("r", "a", id, false, token, outbox(&relay))
            .is_none());
        assert!(relay.join("r", "a", seat(false), outbox(&relay)).is_ok());
    }

    #[test]
    fn a_resume_takes_an_attached_seat_and_tells_its_old_connection() {
        let relay = Relay::new();
        let old = relay.join("r", "a", resumable(), outbox(&relay)).unwrap();
        let plain = relay.join("r", "p", seat(true), outbox(&relay)).unwrap();
        assert!(!relay.park(&plain), "joined without FLAG_RESUME");
        assert!(!old.is_taken_over());
        let token = relay.resume_key().issue("r", "a", old.id);
        // Another name's seat is not taken.
        assert!(relay
            .resume("r", "p", old.id, true, token.clone(), outbox(&relay))
            .is_none());
        let new = relay
            .resume("r", "a", old.id, true, token, outbox(&relay))
            .unwrap();
        assert!(old.is_taken_over());
        assert!(!new.is_taken_over());
        assert!(new.resumable());
    }

    #[test]
    fn names_are_unique_per_room_and_free_after_leave() {
        let relay = Relay::new();
        let m = relay.join("r", "a", seat(true), outbox(&relay)).unwrap();
        assert_eq!(
            relay
                .join("r", "a", seat(true), outbox(&relay))
                .unwrap_err(),
            RefuseReason::NameTaken
        );
        assert!(relay.join("other", "a", seat(true), outbox(&relay)).is_ok());
        relay.leave(m, CloseReason::Normal);
        assert!(relay.join("r", "a", seat(true), outbox(&relay)).is_ok());
    }

    #[test]
    fn echo_off_skips_the_sender_but_keeps_its_snapshot() {
        let relay = Relay::new();
        let a = outbox(&relay);
        let ma = relay.join("r", "a", seat(false), a.clone()).unwrap();
        relay.publish(&ma, b"x").unwrap();
        assert_eq!(frames(&a).len(), 1, "only the welcome");
        let b = outbox(&relay);
        let mb = relay.join("r", "b", seat(true), b.clone()).unwrap();
        relay.fill_snapshot(&mb.room_handle(), &b, usize::MAX);
        assert_eq!(frames(&b)[1..], [msg("a", b"x")]);
    }

    #[test]
    fn leave_announces_and_empty_rooms_vanish() {
        let relay = Relay::new();
        let (a, b) = (outbox(&relay), outbox(&relay));
        let ma = relay.join("r", "a", seat(true), a.clone()).unwrap();
        let mb = relay.join("r", "b", seat(true), b.clone()).unwrap();
        relay.publish(&ma, b"bye").unwrap();
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
        let m = relay.join("r", "a", seat(true), outbox(&relay)).unwrap();
        relay.leave(m, CloseReason::Normal);
        assert_eq!(relay.room_count(), 0);
        let m = relay.join("r", "a", seat(true), outbox(&relay)).unwrap();
        assert!(relay.join("r", "a", seat(true), outbox(&relay)).is_err());
        relay.leave(m, CloseReason::Normal);
        assert_eq!(relay.room_count(), 0);
        assert!(relay.rooms().is_empty());
    }

    #[test]
    fn the_snapshot_is_pulled_in_chunks_and_live_messages_settle_it() {
        let relay = Relay::new();
        let members = room_with_state(&relay, 10, &[7; 100]);
        let j = outbox(&relay);
        let mj = relay.join("r", "joiner", seat(true), j.clone()).unwrap();
        assert_eq!(frames(&j).len(), 1, "only the welcome: nothing copied in");
        // A live message from m3 replaces what the snapshot owed for it.
        relay.publish(&members[3], b"live").unwrap();
        let mut got = frames(&j);
        assert_eq!(got, [msg("m3", b"live")]);
        // Each pull stops once about 250 bytes are in: 2 frames of ~140.
        while j.owes_snapshot() {
            assert!(!relay.fill_snapshot(&mj.room_handle(), &j, 250));
            let chunk = frames(&j);
            assert!(chunk.len() <= 2, "{} frames in one chunk", chunk.len());
            got.extend(chunk);
        }
        assert!(frames(&j).is_empty());
        assert_eq!(got.len(), 10, "each member exactly once");
        assert!(got.contains(&msg("m3", b"live")));
    }

    #[test]
    fn publishing_past_the_budget_relays_nothing_and_state_is_given_back() {
        let budget = Arc::new(MemoryBudget::new(2_000));
        let relay = Relay::with_budget(budget.clone());
        let ob = |b: &Arc<MemoryBudget>| Arc::new(Outbox::new(1 << 20, b.clone()));
        let (a, b) = (ob(&budget), ob(&budget));
        let ma = relay.join("r", "a", seat(false), a.clone()).unwrap();
        let mb = relay.join("r", "b", seat(false), b.clone()).unwrap();
        let base = budget.used();
        // One recipient plus the kept latest: 2 × 500-ish bytes fit once.
        relay.publish(&ma, &[1; 500]).unwrap();
        assert_eq!(relay.publish(&mb, &[2; 900]), Err(Overloaded));
        assert_eq!(frames(&b).len(), 2, "welcome and a's message");
        // Written: only a's kept latest stays charged.
        assert!(budget.used() - base < 600);
        relay.publish(&mb, &[2; 600]).unwrap();
        relay.leave(ma, CloseReason::Normal);
        relay.leave(mb, CloseReason::Normal);
        drop((a, b));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_snapshot_never_pushes_a_reader_past_its_cap() {
        let relay = Relay::new();
        let _members = room_with_state(&relay, 6, &[1; 1000]);
        // Room for two stored messages at a time, not six.
        let cap = 2 * (1000 + 16 + ENTRY_COST);
        let j = Arc::new(Outbox::new(cap, relay.budget.clone()));
        let mj = relay.join("r", "joiner", seat(true), j.clone()).unwrap();
        frames(&j); // the welcome
        let mut got = 0;
        while j.owes_snapshot() {
            assert!(!relay.fill_snapshot(&mj.room_handle(), &j, usize::MAX));
            assert!(j.charged() <= cap);
            let chunk = frames(&j);
            assert!(!chunk.is_empty(), "progress every round");
            got += chunk.len();
        }
        assert_eq!(got, 6);
        assert_eq!(j.close_reason(), None, "never a slow consumer");
    }

    #[tokio::test]
    async fn a_snapshot_stalled_by_the_budget_does_not_wake_its_writer() {
        use futures_util::FutureExt;
        let budget = Arc::new(MemoryBudget::new(4_000));
        let relay = Relay::with_budget(budget.clone());
        let a = Arc::new(Outbox::new(1 << 20, budget.clone()));
        let ma = relay.join("r", "a", seat(false), a.clone()).unwrap();
        relay.publish(&ma, &[1; 1500]).unwrap();
        let j = Arc::new(Outbox::new(1 << 20, budget.clone()));
        let mj = relay.join("r", "j", seat(true), j.clone()).unwrap();
        j.wait().await; // the join's wake-up
        frames(&j);
        // Spend the budget: the pull stalls and leaves the debt in place.
        let hog = crate::budget::Charge::data(&budget, 4_000 - budget.used()).unwrap();
        assert!(relay.fill_snapshot(&mj.room_handle(), &j, usize::MAX));
        assert!(j.owes_snapshot());
        assert!(
            j.wait().now_or_never().is_none(),
            "no wake-up: it would spin"
        );
        drop(hog);
        assert!(!relay.fill_snapshot(&mj.room_handle(), &j, usize::MAX));
        assert_eq!(frames(&j), [msg("a", &[1; 1500])]);
    }

    fn stamp(epoch: u64, seq: u64) -> Stamp {
        Stamp {
            node: 7,
            epoch,
            seq,
        }
    }

    fn remote_joined(member: u64, name: &str) -> RemoteEvent {
        RemoteEvent::Joined {
            member,
            name: name.into(),
        }
    }

    fn remote_message(member: u64, sender: &str, payload: &[u8]) -> RemoteEvent {
        RemoteEvent::Message {
            member,
            frame: encode_message(sender, payload),
        }
    }

    fn snapshot(epoch: u64, seq: u64, members: &[(u64, &str, Option<&[u8]>)]) -> RemoteSnapshot {
        RemoteSnapshot {
            node: 7,
            epoch,
            seq,
            members: members
                .iter()
                .map(|&(member, name, latest)| RemoteSeat {
                    member,
                    name: name.into(),
                    latest: latest.map(|p| encode_message(name, p)),
                })
                .collect(),
        }
    }

    #[test]
    fn a_remote_stream_applies_in_order_and_a_gap_waits_for_a_snapshot() {
        let relay = Relay::new();
        let a = outbox(&relay);
        let ma = relay.join("r", "a", seat(false), a.clone()).unwrap();
        let room = ma.room_handle();
        frames(&a);
        // A stream never seen: held until the node's snapshot says where
        // it stands.
        assert!(relay.remote_event(&room, stamp(5, 1), remote_joined(1, "bob")));
        assert!(frames(&a).is_empty());
        assert!(!relay.remote_snapshot(&room, snapshot(5, 0, &[])));
        assert_eq!(frames(&a), [ServerFrame::Joined("bob".into())]);
        assert!(!relay.remote_event(&room, stamp(5, 2), remote_message(1, "bob", b"x")));
        // A duplicate is dropped.
        assert!(!relay.remote_event(&room, stamp(5, 2), remote_message(1, "bob", b"x")));
        assert_eq!(frames(&a), [msg("bob", b"x")]);
        // Event 3 is lost: 4 waits for a snapshot, which carries what 3 did.
        assert!(relay.remote_event(&room, stamp(5, 4), remote_message(1, "bob", b"z")));
        assert!(!relay.remote_event(&room, stamp(5, 5), remote_message(1, "bob", b"w")));
        assert!(frames(&a).is_empty(), "held");
        let snap = snapshot(5, 4, &[(1, "bob", Some(b"z")), (2, "carl", Some(b"c"))]);
        assert!(!relay.remote_snapshot(&room, snap.clone()));
        assert_eq!(
            frames(&a),
            [
                msg("bob", b"w"),
                ServerFrame::Joined("carl".into()),
                msg("carl", b"c"),
            ],
            "bob's z then w conflate to w; 4 was in the snapshot, 5 applies"
        );
        // A duplicate answer changes nothing.
        assert!(!relay.remote_snapshot(&room, snap));
        assert!(frames(&a).is_empty());
        // A late joiner sees remote members and their latest.
        let j = outbox(&relay);
        let mj = relay.join("r", "j", seat(false), j.clone()).unwrap();
        relay.fill_snapshot(&mj.room_handle(), &j, usize::MAX);
        let got = frames(&j);
        assert_eq!(welcome_of(&got).1, ["a", "bob", "carl", "j"]);
        assert_eq!(got[1..], [msg("bob", b"w"), msg("carl", b"c")]);
        // Remote names are taken here too.
        assert_eq!(
            relay
                .join("r", "Bob", seat(false), outbox(&relay))
                .unwrap_err(),
            RefuseReason::NameTaken
        );
        // The node goes: its members leave with "connection lost".
        frames(&a);
        relay.node_gone(7);
        assert_eq!(
            frames(&a),
            [
                ServerFrame::Left("bob".into(), CloseReason::ConnectionLost),
                ServerFrame::Left("carl".into(), CloseReason::ConnectionLost),
            ]
        );
        assert_eq!(relay.member_count(), 2, "remote members are not counted");
    }

    #[test]
    fn a_remote_room_created_again_replaces_the_old_one_and_stale_events_are_dropped() {
        let relay = Relay::new();
        let a = outbox(&relay);
        let ma = relay.join("r", "a", seat(false), a.clone()).unwrap();
        let room = ma.room_handle();
        relay.expect_snapshot(&room, 7);
        assert!(!relay.remote_snapshot(&room, snapshot(5, 3, &[(1, "bob", None)])));
        frames(&a);
        // Event 1 of a newer epoch: the node's room was removed and made
        // again; bob's LEFT was missed.
        assert!(!relay.remote_event(&room, stamp(6, 1), remote_joined(4, "dan")));
        assert!(!relay.remote_event(&room, stamp(5, 9), remote_joined(5, "old")));
        assert_eq!(
            frames(&a),
            [
                ServerFrame::Left("bob".into(), CloseReason::ConnectionLost),
                ServerFrame::Joined("dan".into()),
            ]
        );
        // A leave in order.
        assert!(!relay.remote_event(
            &room,
            stamp(6, 2),
            RemoteEvent::Left {
                member: 4,
                reason: CloseReason::Normal
            }
        ));
        assert_eq!(
            frames(&a),
            [ServerFrame::Left("dan".into(), CloseReason::Normal)]
        );
    }

    #[test]
    fn remote_messages_conflate_per_sender_for_a_slow_reader() {
        let relay = Relay::new();
        let a = outbox(&relay);
        let ma = relay.join("r", "a", seat(false), a.clone()).unwrap();
        let room = ma.room_handle();
        relay.expect_snapshot(&room, 7);
        relay.remote_snapshot(
            &room,
            snapshot(5, 0, &[(1, "bob", None), (2, "carl", None)]),
        );
        frames(&a);
        for (seq, payload) in [(1, b"1"), (2, b"2"), (3, b"3")] {
            relay.remote_event(&room, stamp(5, seq), remote_message(1, "bob", payload));
        }
        relay.remote_event(&room, stamp(5, 4), remote_message(2, "carl", b"c"));
        assert_eq!(frames(&a), [msg("bob", b"3"), msg("carl", b"c")]);
    }

    #[test]
    fn a_room_lasts_while_it_has_local_members_and_lists_only_them() {
        let relay = Relay::new();
        let room = relay.open_room("r");
        relay.expect_snapshot(&room, 7);
        relay.remote_snapshot(&room, snapshot(5, 0, &[(1, "bob", Some(b"b"))]));
        assert!(relay.rooms().is_empty(), "no member of this node");
        let ma = relay.join("r", "a", seat(false), outbox(&relay)).unwrap();
        assert_eq!(
            relay.rooms(),
            [RoomInfo {
                name: "r".into(),
                members: 1
            }]
        );
        let snapshot = relay.local_snapshot("r", 3);
        assert_eq!((snapshot.node, snapshot.members.len()), (3, 1));
        assert_eq!(snapshot.members[0].name, "a");
        relay.leave(ma, CloseReason::Normal);
        assert_eq!(relay.room_count(), 0, "remote members alone keep no room");
        assert!(room.0.removed.is_cancelled());
        assert_eq!(relay.local_snapshot("r", 3).epoch, 0);
        let used = relay.budget.used();
        assert_eq!(used, 0, "bob's latest was given back");
    }

    #[test]
    fn an_answer_older_than_the_applied_stream_is_not_taken() {
        let relay = Relay::new();
        let a = outbox(&relay);
        let ma = relay.join("r", "a", seat(false), a.clone()).unwrap();
        let room = ma.room_handle();
        relay.expect_snapshot(&room, 7);
        let old = snapshot(5, 1, &[(1, "bob", Some(b"1"))]);
        assert!(!relay.remote_snapshot(&room, old.clone()));
        relay.remote_event(&room, stamp(5, 2), remote_joined(2, "carl"));
        relay.remote_event(&room, stamp(5, 3), remote_message(1, "bob", b"2"));
        // A gap: a snapshot is awaited again; the first answer to an
        // earlier request arrives late and must not rewind anything.
        assert!(relay.remote_event(&room, stamp(5, 5), remote_message(1, "bob", b"4")));
        frames(&a);
        assert!(!relay.remote_snapshot(&room, old));
        assert!(frames(&a).is_empty(), "no LEFT carl, no bob 1");
        let new = snapshot(5, 4, &[(1, "bob", Some(b"3")), (2, "carl", None)]);
        assert!(!relay.remote_snapshot(&room, new));
        assert_eq!(
            frames(&a),
            [msg("bob", b"4")],
            "3 then the held 4, conflated"
        );
    }

    #[test]
    fn an_evicted_member_leaves_the_room_and_gets_a_goodbye() {
        let relay = Relay::new();
        let (a, b) = (outbox(&relay), outbox(&relay));
        let _ma = relay.join("r", "a", seat(false), a.clone()).unwrap();
        let mb = relay.join("r", "b", seat(false), b.clone()).unwrap();
        frames(&a);
        assert!(relay.evict("r", &name_key("B"), CloseReason::ConnectionLost));
        assert_eq!(
            frames(&a),
            [ServerFrame::Left("b".into(), CloseReason::ConnectionLost)]
        );
        assert_eq!(b.close_reason(), Some(CloseReason::ConnectionLost));
        assert!(!relay.leave(mb, CloseReason::Normal), "already gone");
        assert!(!relay.evict("r", "b", CloseReason::ConnectionLost));
        assert!(relay.join("r", "b", seat(false), outbox(&relay)).is_ok());
    }

    #[test]
    fn messages_go_to_the_cluster_only_while_another_node_may_listen() {
        let (link, mut out) = crate::cluster::Link::for_tests(3);
        let relay = Relay::new();
        relay.set_link(link);
        let ma = relay.join("r", "a", seat(false), outbox(&relay)).unwrap();
        let room = ma.room_handle();
        let mut published = || std::iter::from_fn(|| out.try_recv().ok()).count();
        assert_eq!(published(), 1, "the JOINED, always");
        relay.publish(&ma, b"1").unwrap();
        assert_eq!(published(), 0, "nobody listens: not published");
        // Another node asks for the room: its member may join soon.
        relay.local_snapshot("r", 3);
        relay.publish(&ma, b"2").unwrap();
        assert_eq!(published(), 1);
        // Numbers have no gap: the skipped message took none.
        assert_eq!(relay.local_snapshot("r", 3).seq, 2);
        relay.expect_snapshot(&room, 7);
        relay.remote_snapshot(&room, snapshot(5, 0, &[(1, "bob", None)]));
        relay.publish(&ma, b"3").unwrap();
        assert_eq!(published(), 1, "a remote member listens");
        relay.node_gone(7);
        relay.leave(ma, CloseReason::Normal);
        assert_eq!(published(), 1, "the LEFT");
    }
}
