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
//! and writes it as one batch.

use std::sync::Mutex;

use bytes::Bytes;
use relais_protocol::CloseReason;
use rustc_hash::FxHashMap;
use tokio::sync::Notify;

/// What one waiting frame costs besides its bytes (its handle in the queue).
/// Counted against `max_pending_bytes`, so many tiny frames cannot exceed the
/// memory cap either.
const ENTRY_COST: usize = std::mem::size_of::<Bytes>();

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
}

#[derive(Debug, Default)]
struct State {
    /// Encoded frames (length prefix included), oldest first.
    frames: Vec<Bytes>,
    /// Sender member id → index in `frames` of its waiting message.
    slots: FxHashMap<u64, usize>,
    /// Total bytes in `frames`.
    bytes: usize,
    /// Set once the recipient must be closed, with the reason.
    closed: Option<CloseReason>,
}

impl Outbox {
    /// An empty outbox. If more than `max_pending_bytes` bytes wait at once,
    /// the recipient is closed as a slow consumer.
    pub fn new(max_pending_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            max_pending_bytes,
        }
    }

    /// Queues a relayed message from member `sender`, replacing that sender's
    /// waiting message if there is one.
    pub fn push_message(&self, sender: u64, frame: Bytes) {
        let mut st = self.lock();
        if st.closed.is_some() {
            return;
        }
        let was_empty = st.frames.is_empty();
        st.bytes += frame.len() + ENTRY_COST;
        match st.slots.get(&sender).copied() {
            Some(i) => {
                let old = std::mem::replace(&mut st.frames[i], frame);
                st.bytes -= old.len() + ENTRY_COST;
            }
            None => {
                let i = st.frames.len();
                st.frames.push(frame);
                st.slots.insert(sender, i);
            }
        }
        self.after_push(st, was_empty);
    }

    /// Queues a frame that is never conflated (presence, keepalive, welcome).
    pub fn push_event(&self, frame: Bytes) {
        let mut st = self.lock();
        if st.closed.is_some() {
            return;
        }
        let was_empty = st.frames.is_empty();
        st.bytes += frame.len() + ENTRY_COST;
        st.frames.push(frame);
        self.after_push(st, was_empty);
    }

    fn after_push(&self, mut st: std::sync::MutexGuard<'_, State>, was_empty: bool) {
        if st.bytes > self.max_pending_bytes {
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
    /// close reason if the outbox was closed.
    pub fn drain(&self, into: &mut Vec<Bytes>) -> Option<CloseReason> {
        let mut st = self.lock();
        into.append(&mut st.frames);
        st.slots.clear();
        st.bytes = 0;
        st.closed
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

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(o: &Outbox) -> (Vec<Bytes>, Option<CloseReason>) {
        let mut v = Vec::new();
        let closed = o.drain(&mut v);
        (v, closed)
    }

    #[test]
    fn newest_message_of_a_sender_replaces_the_waiting_one_in_place() {
        let o = Outbox::new(1 << 20);
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
        let o = Outbox::new(4 + ENTRY_COST);
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
        let o = Outbox::new(6 + ENTRY_COST);
        for _ in 0..100 {
            o.push_message(7, Bytes::from_static(b"12345"));
        }
        let (frames, closed) = drained(&o);
        assert_eq!((frames.len(), closed), (1, None));
    }

    #[test]
    fn first_close_reason_wins() {
        let o = Outbox::new(64);
        o.close(CloseReason::ServerShutdown);
        o.close(CloseReason::Timeout);
        assert_eq!(drained(&o).1, Some(CloseReason::ServerShutdown));
    }

    #[tokio::test]
    async fn wait_returns_for_a_push_made_before_waiting() {
        let o = Outbox::new(64);
        o.push_event(Bytes::from_static(b"x"));
        o.wait().await;
        assert_eq!(drained(&o).0.len(), 1);
    }
}
