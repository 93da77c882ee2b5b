//! The per-recipient outbox: where frames wait for a recipient's writer, with
//! latest-wins conflation per sender.
//!
//! Relayed messages are keyed by their sender's member id: for each
//! (recipient, sender) pair at most one message waits, and a newer one takes
//! the older one's place in the queue (so per-sender order holds and memory is
//! bounded by the number of senders). Presence events and control frames are
//! never conflated; they keep their place relative to messages, so a `LEFT`
//! always follows the last message of the member that left.
//!
//! The writer takes everything that is waiting in one go ([`Outbox::drain`])
//! and writes it as one batch. Each frame carries a [stamp](Batch::stamps)
//! for the metrics ([`crate::metrics`]): whether it is a relayed message,
//! and when it was published.
//!
//! **Memory.** Every waiting frame is charged to the server's
//! [`MemoryBudget`] and to the recipient's `max_pending_bytes` from the
//! moment it is queued until the batch it went out in has been written
//! ([`Outbox::written`]). Relayed messages are charged by the relay before
//! fan-out ([`Outbox::push_reserved`]); control frames unconditionally.
//!
//! **Late-joiner snapshot.** A joiner's snapshot is not copied in: the
//! outbox keeps the *ids* of the members whose latest message it still
//! owes ([`Outbox::owe_snapshot`]), and the writer pulls them from the room a
//! chunk at a time as the connection takes them. A live message from such a
//! member settles its debt (the live one is newer).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use relais_protocol::CloseReason;
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::Notify;

use crate::budget::MemoryBudget;

/// What one waiting frame costs besides its bytes (its handle in the queue
/// and its stamp): 40 bytes on 64-bit systems. Counted against
/// `max_pending_bytes`, so many tiny frames cannot exceed the memory cap
/// either.
pub const ENTRY_COST: usize = std::mem::size_of::<Bytes>() + std::mem::size_of::<u64>();

/// The stamp of a frame that is not a relayed message (presence, control,
/// `PONG`).
pub const NOT_A_MESSAGE: u64 = 0;

/// The stamp of a relayed message without a publish time (a late-joiner
/// snapshot message, or any message while metrics are off). Larger stamps
/// are publish times ([`crate::metrics::stamp_now`]).
pub const UNTIMED_MESSAGE: u64 = 1;

/// Slot key for the recipient's own `PONG`: at most one waits, however many
/// `PING`s it sends. Member ids count up from 0 and never reach it.
pub const PONG_SLOT: u64 = u64::MAX;

/// Frames waiting for one recipient. Shared between the relay (producers) and
/// the recipient's writer (the only consumer).
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    wake: Notify,
    max_pending_bytes: usize,
    budget: Arc<MemoryBudget>,
    /// Bytes charged for frames drained but not yet [`Outbox::written`]
    /// (outside the lock: the writer releases them without taking it).
    in_flight: AtomicUsize,
    /// Whether `State::owed` is non-empty (written under the lock).
    owing: AtomicBool,
}

/// Frames taken from an outbox to be written together.
#[derive(Debug, Default)]
pub struct Batch {
    /// Encoded frames (length prefix included), oldest first.
    pub frames: Vec<Bytes>,
    /// For each frame, [`NOT_A_MESSAGE`], [`UNTIMED_MESSAGE`], or the
    /// publish time of a live message (one `u64`, so that the writer's
    /// metrics walk a plain array).
    pub stamps: Vec<u64>,
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Empties it, keeping its capacity.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.stamps.clear();
    }
}

/// What [`Outbox::push_reserved`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the released bytes must be given back to the budget"]
pub struct Pushed {
    /// Bytes whose charge the caller must release: the replaced message's,
    /// or this one's if the outbox is closed.
    pub release: usize,
    /// Whether it replaced a waiting message of the same sender.
    pub replaced: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Encoded frames (length prefix included), oldest first, with their
    /// stamps.
    batch: Batch,
    /// Sender member id → index in `batch` of its waiting message.
    slots: FxHashMap<u64, usize>,
    /// Bytes charged for `batch` (each frame plus [`ENTRY_COST`]).
    bytes: usize,
    /// Members whose latest message the joiner is still owed, in order.
    snapshot: VecDeque<u64>,
    /// The same ids, for settling a debt when a live message comes.
    owed: FxHashSet<u64>,
    /// Set once the recipient must be closed, with the reason.
    closed: Option<CloseReason>,
}

impl Outbox {
    /// An empty outbox charging `budget`. If more than `max_pending_bytes`
    /// bytes wait or are being written at once, the recipient is closed as
    /// a slow consumer.
    pub fn new(max_pending_bytes: usize, budget: Arc<MemoryBudget>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            max_pending_bytes,
            budget,
            in_flight: AtomicUsize::new(0),
            owing: AtomicBool::new(false),
        }
    }

    /// Queues a relayed message from member `sender`, with its `stamp`
    /// (its publish time, or [`UNTIMED_MESSAGE`]), replacing that sender's
    /// waiting message if there is one. `frame.len() + ENTRY_COST` bytes
    /// must already be charged to the budget for it (the relay does so for
    /// a whole fan-out at once); they now belong to this outbox. Says which
    /// bytes the caller must release (a fan-out releases them all at once,
    /// one atomic operation instead of one per recipient).
    pub fn push_reserved(&self, sender: u64, frame: Bytes, stamp: u64) -> Pushed {
        let cost = frame.len() + ENTRY_COST;
        let mut st = self.lock();
        if st.closed.is_some() {
            return Pushed {
                release: cost,
                replaced: false,
            };
        }
        if !st.owed.is_empty() && st.owed.remove(&sender) && st.owed.is_empty() {
            self.owing.store(false, Ordering::Relaxed);
        }
        let was_empty = st.batch.is_empty();
        st.bytes += cost;
        let pushed = match st.slots.get(&sender).copied() {
            Some(i) => {
                let old = std::mem::replace(&mut st.batch.frames[i], frame);
                st.batch.stamps[i] = stamp;
                st.bytes -= old.len() + ENTRY_COST;
                Pushed {
                    release: old.len() + ENTRY_COST,
                    replaced: true,
                }
            }
            None => {
                let i = st.batch.frames.len();
                st.batch.frames.push(frame);
                st.batch.stamps.push(stamp);
                st.slots.insert(sender, i);
                Pushed {
                    release: 0,
                    replaced: false,
                }
            }
        };
        self.after_push(st, was_empty);
        pushed
    }

    /// Queues a frame that a newer one from the same `sender` slot
    /// replaces, such as the one `PONG` ([`PONG_SLOT`]), charging it
    /// unconditionally. Not counted as a relayed message (the relay's
    /// fan-out uses [`push_reserved`](Self::push_reserved)).
    pub fn push_message(&self, sender: u64, frame: Bytes) {
        self.budget.force(frame.len() + ENTRY_COST);
        let pushed = self.push_reserved(sender, frame, NOT_A_MESSAGE);
        self.budget.release(pushed.release);
    }

    /// Queues a frame that is never conflated (presence, keepalive, welcome),
    /// charging it unconditionally.
    pub fn push_event(&self, frame: Bytes) {
        let cost = frame.len() + ENTRY_COST;
        let mut st = self.lock();
        if st.closed.is_some() {
            return;
        }
        self.budget.force(cost);
        let was_empty = st.batch.is_empty();
        st.bytes += cost;
        st.batch.frames.push(frame);
        st.batch.stamps.push(NOT_A_MESSAGE);
        self.after_push(st, was_empty);
    }

    /// Records that the recipient is owed the latest message of each of
    /// `members` (the late-joiner snapshot), to be pulled by its writer.
    pub fn owe_snapshot(&self, members: impl IntoIterator<Item = u64>) {
        let mut st = self.lock();
        for id in members {
            if st.owed.insert(id) {
                st.snapshot.push_back(id);
            }
        }
        let wake = !st.snapshot.is_empty();
        self.owing.store(!st.owed.is_empty(), Ordering::Relaxed);
        drop(st);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Puts `id` back at the head of what is owed (a pull that could not
    /// be taken now), without waking the writer: it is the writer that
    /// pulls, and waking it for this would make it spin.
    pub fn owe_first(&self, id: u64) {
        let mut st = self.lock();
        if st.owed.insert(id) {
            st.snapshot.push_front(id);
        }
        self.owing.store(true, Ordering::Relaxed);
    }

    /// Whether `cost` more bytes fit under `max_pending_bytes` (always, if
    /// nothing is charged: one frame of any size is let through, as a live
    /// message would be).
    pub fn has_room_for(&self, cost: usize) -> bool {
        let charged = self.charged();
        charged == 0 || charged + cost <= self.max_pending_bytes
    }

    /// Whether some of the snapshot is still owed (without taking the lock:
    /// the writer asks before every batch).
    pub fn owes_snapshot(&self) -> bool {
        self.owing.load(Ordering::Relaxed)
    }

    /// The next member whose latest message is owed, settling that debt.
    /// Call under the room's lock, so that no live message from that member
    /// can come in between.
    pub fn next_owed(&self) -> Option<u64> {
        let mut st = self.lock();
        let mut next = None;
        while let Some(id) = st.snapshot.pop_front() {
            if st.owed.remove(&id) {
                next = Some(id);
                break;
            }
        }
        self.owing.store(!st.owed.is_empty(), Ordering::Relaxed);
        next
    }

    fn after_push(&self, mut st: std::sync::MutexGuard<'_, State>, was_empty: bool) {
        if st.bytes + self.in_flight.load(Ordering::Relaxed) > self.max_pending_bytes {
            st.closed = Some(CloseReason::SlowConsumer);
            drop(st);
            self.wake.notify_one();
        } else if was_empty {
            drop(st);
            self.wake.notify_one();
        }
    }

    /// Asks the writer to finish: it writes what is waiting, then a goodbye
    /// with `reason`. The first reason given wins; later pushes are ignored.
    pub fn close(&self, reason: CloseReason) {
        let mut st = self.lock();
        if st.closed.is_none() {
            st.closed = Some(reason);
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Moves every waiting frame into `into` (oldest first) and returns the
    /// close reason if the outbox was closed. The frames stay charged until
    /// [`written`](Self::written).
    pub fn drain(&self, into: &mut Batch) -> Option<CloseReason> {
        let mut st = self.lock();
        into.frames.append(&mut st.batch.frames);
        into.stamps.append(&mut st.batch.stamps);
        st.slots.clear();
        let drained = std::mem::take(&mut st.bytes);
        self.in_flight.fetch_add(drained, Ordering::Relaxed);
        st.closed
    }

    /// Everything drained so far has been written: its charge is released.
    pub fn written(&self) {
        let done = self.in_flight.swap(0, Ordering::Relaxed);
        if done > 0 {
            self.budget.release(done);
        }
    }

    /// Bytes charged to this outbox (waiting and being written).
    pub fn charged(&self) -> usize {
        self.lock().bytes + self.in_flight.load(Ordering::Relaxed)
    }

    /// Why the outbox was closed, if it was.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.lock().closed
    }

    /// Waits until something was pushed or the outbox was closed since the
    /// last [`drain`](Self::drain). Returns at once if that already happened
    /// while nobody was waiting.
    pub async fn wait(&self) {
        self.wake.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; carrying
        // on with it is safe.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let waiting = self
            .state
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .bytes;
        self.budget.release(waiting + *self.in_flight.get_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget::new(1 << 30))
    }

    /// Drains and writes.
    fn drained(o: &Outbox) -> (Vec<Bytes>, Option<CloseReason>) {
        let mut batch = Batch::default();
        let closed = o.drain(&mut batch);
        o.written();
        (batch.frames, closed)
    }

    #[test]
    fn frames_stay_charged_until_written_and_the_budget_balances() {
        let b = budget();
        let o = Outbox::new(2 * (4 + ENTRY_COST), b.clone());
        o.push_event(Bytes::from_static(b"1234"));
        o.push_message(1, Bytes::from_static(b"abcd"));
        o.push_message(1, Bytes::from_static(b"efgh")); // replaces
        assert_eq!(b.used(), 2 * (4 + ENTRY_COST));
        let mut batch = Batch::default();
        o.drain(&mut batch);
        // Being written still counts against the recipient's cap.
        assert_eq!(o.charged(), 2 * (4 + ENTRY_COST));
        o.push_event(Bytes::from_static(b"x"));
        assert_eq!(o.close_reason(), Some(CloseReason::SlowConsumer));
        o.written();
        drop(o);
        assert_eq!(b.used(), 0, "everything given back");
    }

    #[test]
    fn a_live_message_settles_the_snapshot_debt() {
        let o = Outbox::new(1 << 20, budget());
        o.owe_snapshot([1, 2, 3]);
        assert!(o.owes_snapshot());
        o.push_message(2, Bytes::from_static(b"live"));
        assert_eq!(o.next_owed(), Some(1));
        assert_eq!(o.next_owed(), Some(3));
        assert_eq!(o.next_owed(), None);
        assert!(!o.owes_snapshot());
    }

    #[test]
    fn newest_message_of_a_sender_replaces_the_waiting_one_in_place() {
        let o = Outbox::new(1 << 20, budget());
        o.push_message(1, Bytes::from_static(b"a1"));
        o.push_message(2, Bytes::from_static(b"b1"));
        o.push_event(Bytes::from_static(b"left b"));
        o.push_message(1, Bytes::from_static(b"a2"));
        o.push_message(3, Bytes::from_static(b"c1"));
        let (frames, closed) = drained(&o);
        assert_eq!(frames, vec!["a2", "b1", "left b", "c1"]);
        assert_eq!(closed, None);
        // After a drain, a sender's next message queues anew.
        o.push_message(1, Bytes::from_static(b"a3"));
        assert_eq!(drained(&o).0, vec!["a3"]);
    }

    #[test]
    fn too_many_pending_bytes_close_as_slow_consumer() {
        let o = Outbox::new(4 + ENTRY_COST, budget());
        o.push_event(Bytes::from_static(b"1234"));
        assert_eq!(drained(&o).1, None);
        o.push_event(Bytes::from_static(b"1234"));
        o.push_event(Bytes::from_static(b"5"));
        let (frames, closed) = drained(&o);
        assert_eq!(closed, Some(CloseReason::SlowConsumer));
        assert_eq!(frames.len(), 2);
        // Closed: further pushes are ignored.
        o.push_event(Bytes::from_static(b"x"));
        assert!(drained(&o).0.is_empty());
    }

    #[test]
    fn replacing_keeps_the_byte_count_right() {
        let o = Outbox::new(6 + ENTRY_COST, budget());
        for _ in 0..100 {
            o.push_message(7, Bytes::from_static(b"12345"));
        }
        let (frames, closed) = drained(&o);
        assert_eq!((frames.len(), closed), (1, None));
    }

    #[test]
    fn first_close_reason_wins() {
        let o = Outbox::new(64, budget());
        o.close(CloseReason::ServerShutdown);
        o.close(CloseReason::Timeout);
        assert_eq!(drained(&o).1, Some(CloseReason::ServerShutdown));
    }

    #[tokio::test]
    async fn wait_returns_for_a_push_made_before_waiting() {
        let o = Outbox::new(64, budget());
        o.push_event(Bytes::from_static(b"x"));
        o.wait().await;
        assert_eq!(drained(&o).0.len(), 1);
    }
}
