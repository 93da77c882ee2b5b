//! The bounded queues behind both directions of a connection.
//!
//! A real-time relay cares about the newest state, so when a queue is full it
//! makes room by dropping its *oldest* item, never by refusing the new one or
//! by blocking the caller. [`DropOldestQueue`] is a plain FIFO (the send
//! queue, and the receive queue in [`ReceiveMode::Queue`]);
//! [`LatestPerSenderQueue`] is the receive queue of
//! [`ReceiveMode::LatestPerSender`].
//!
//! [`ReceiveMode::Queue`]: crate::ReceiveMode::Queue
//! [`ReceiveMode::LatestPerSender`]: crate::ReceiveMode::LatestPerSender

use std::collections::{HashMap, VecDeque};

use crate::Event;

/// A FIFO of at most `capacity` items that drops its oldest item to make room.
#[derive(Debug)]
pub(crate) struct DropOldestQueue<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T> DropOldestQueue<T> {
    /// An empty queue holding at most `capacity` items (at least one: a zero
    /// capacity would drop everything, which no caller means).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            // Grown on demand: most connections never fill their queues.
            items: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Appends `item`. If the queue was full, removes the oldest item to make
    /// room and returns it so the caller can count the drop.
    pub(crate) fn push(&mut self, item: T) -> Option<T> {
        let dropped = if self.items.len() >= self.capacity {
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(item);
        dropped
    }

    /// Removes and returns the oldest item.
    pub(crate) fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }
}

/// What pushing an event onto a receive queue did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// The event was appended; nothing was lost.
    Added,
    /// The event was a message that replaced this older waiting message from
    /// the same sender, in place.
    Replaced(Event),
    /// The event was appended after this older event was dropped to make
    /// room (the queue was full).
    Dropped(Event),
}

/// A FIFO of events that keeps at most one waiting message per sender *slot*.
///
/// - A message from a sender with a waiting message replaces it **in place**
///   (same queue position): per-sender order holds, nothing is duplicated.
/// - Presence events (`Joined`, `Left`) are never replaced. A presence event
///   about `X` ends `X`'s slot: `X`'s message queued before it stays before
///   it, and `X`'s next message is appended after it.
/// - At most `capacity` events wait. When a new entry does not fit, the
///   oldest waiting *message* is dropped; only if nothing but presence events
///   wait is the oldest presence event dropped.
///
/// Every item carries a sequence number, strictly increasing from front to
/// back, and `slots` maps each sender with a replaceable message to that
/// message's number, so finding it is a binary search. Invariant: `slots[X]
/// == n` exactly when the item numbered `n` is a waiting message from `X` and
/// no presence event about `X` was queued after it.
#[derive(Debug)]
pub(crate) struct LatestPerSenderQueue {
    items: VecDeque<(u64, Event)>,
    slots: HashMap<String, u64>,
    next_seq: u64,
    capacity: usize,
}

impl LatestPerSenderQueue {
    /// An empty queue holding at most `capacity` events (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            items: VecDeque::new(),
            slots: HashMap::new(),
            next_seq: 0,
            capacity: capacity.max(1),
        }
    }

    /// Queues `event` (see the type's docs for what replaces what).
    pub(crate) fn push(&mut self, event: Event) -> Pushed {
        match &event {
            Event::Message(msg) => {
                let waiting = self.slots.get(&msg.sender).and_then(|&n| self.position(n));
                if let Some(i) = waiting {
                    return Pushed::Replaced(std::mem::replace(&mut self.items[i].1, event));
                }
            }
            Event::Joined(name) | Event::Left { name, .. } => {
                self.slots.remove(name);
            }
            _ => {}
        }
        let dropped = if self.items.len() >= self.capacity {
            let oldest_message = self
                .items
                .iter()
                .position(|(_, e)| matches!(e, Event::Message(_)));
            self.remove(oldest_message.unwrap_or(0))
        } else {
            None
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Event::Message(msg) = &event {
            self.slots.insert(msg.sender.clone(), seq);
        }
        self.items.push_back((seq, event));
        dropped.map_or(Pushed::Added, Pushed::Dropped)
    }

    /// Removes and returns the oldest event.
    pub(crate) fn pop(&mut self) -> Option<Event> {
        self.remove(0)
    }

    /// Removes the event at index `i`, ending its sender's slot if it held it.
    fn remove(&mut self, i: usize) -> Option<Event> {
        let (seq, event) = self.items.remove(i)?;
        if let Event::Message(msg) = &event {
            if self.slots.get(&msg.sender) == Some(&seq) {
                self.slots.remove(&msg.sender);
            }
        }
        Some(event)
    }

    /// The index of the item numbered `seq` (by the invariant, a slot's
    /// number is always found).
    fn position(&self, seq: u64) -> Option<usize> {
        self.items.binary_search_by_key(&seq, |&(n, _)| n).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(q: &mut DropOldestQueue<u32>) -> Vec<u32> {
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn keeps_everything_below_capacity_in_order() {
        let mut q = DropOldestQueue::new(3);
        assert_eq!(q.push(1), None);
        assert_eq!(q.push(2), None);
        assert_eq!(q.push(3), None);
        assert_eq!(contents(&mut q), [1, 2, 3]);
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn full_queue_drops_the_oldest_and_keeps_the_newest() {
        let mut q = DropOldestQueue::new(3);
        for i in 1..=3 {
            q.push(i);
        }
        assert_eq!(q.push(4), Some(1));
        assert_eq!(q.push(5), Some(2));
        assert_eq!(contents(&mut q), [3, 4, 5]);
    }

    #[test]
    fn popping_makes_room_again() {
        let mut q = DropOldestQueue::new(2);
        q.push(1);
        q.push(2);
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.push(3), None);
        assert_eq!(contents(&mut q), [2, 3]);
    }

    #[test]
    fn zero_capacity_holds_one_item() {
        let mut q = DropOldestQueue::new(0);
        assert_eq!(q.push(1), None);
        assert_eq!(q.push(2), Some(1));
        assert_eq!(contents(&mut q), [2]);
    }

    // ---- LatestPerSenderQueue ----

    use crate::Message;
    use relais_protocol::CloseReason;

    fn m(sender: &str, payload: &'static str) -> Event {
        Event::Message(Message {
            sender: sender.into(),
            payload: bytes::Bytes::from_static(payload.as_bytes()),
        })
    }

    fn joined(name: &str) -> Event {
        Event::Joined(name.into())
    }

    fn left(name: &str) -> Event {
        Event::Left {
            name: name.into(),
            reason: CloseReason::Normal,
        }
    }

    fn drain(q: &mut LatestPerSenderQueue) -> Vec<Event> {
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn latest_replaces_in_place_and_keeps_order_across_senders() {
        let mut q = LatestPerSenderQueue::new(16);
        assert_eq!(q.push(m("a", "a1")), Pushed::Added);
        assert_eq!(q.push(m("b", "b1")), Pushed::Added);
        assert_eq!(q.push(m("c", "c1")), Pushed::Added);
        assert_eq!(q.push(m("a", "a2")), Pushed::Replaced(m("a", "a1")));
        assert_eq!(q.push(m("c", "c2")), Pushed::Replaced(m("c", "c1")));
        assert_eq!(q.push(m("a", "a3")), Pushed::Replaced(m("a", "a2")));
        // a keeps the first position, with its newest payload.
        assert_eq!(drain(&mut q), [m("a", "a3"), m("b", "b1"), m("c", "c2")]);
    }

    #[test]
    fn latest_taking_a_message_frees_its_sender_slot() {
        let mut q = LatestPerSenderQueue::new(16);
        q.push(m("a", "a1"));
        q.push(m("b", "b1"));
        assert_eq!(q.pop(), Some(m("a", "a1")));
        // a's next message is new, so it queues behind b's.
        assert_eq!(q.push(m("a", "a2")), Pushed::Added);
        assert_eq!(q.push(m("b", "b2")), Pushed::Replaced(m("b", "b1")));
        assert_eq!(drain(&mut q), [m("b", "b2"), m("a", "a2")]);
        assert!(q.slots.is_empty());
    }

    #[test]
    fn latest_never_replaces_or_reorders_presence() {
        let mut q = LatestPerSenderQueue::new(16);
        q.push(joined("a"));
        q.push(m("b", "b1"));
        q.push(joined("c"));
        q.push(left("a"));
        q.push(m("b", "b2"));
        q.push(joined("a"));
        assert_eq!(
            drain(&mut q),
            [
                joined("a"),
                m("b", "b2"),
                joined("c"),
                left("a"),
                joined("a")
            ]
        );
    }

    #[test]
    fn latest_message_after_a_presence_event_of_its_sender_queues_after_it() {
        let mut q = LatestPerSenderQueue::new(16);
        q.push(m("a", "a1"));
        q.push(m("b", "b1"));
        q.push(left("a"));
        // a's slot ended with its LEFT: a1 stays before it, and nothing
        // from a's next session may jump ahead of it.
        assert_eq!(q.push(joined("a")), Pushed::Added);
        assert_eq!(q.push(m("a", "a2")), Pushed::Added);
        assert_eq!(q.push(m("a", "a3")), Pushed::Replaced(m("a", "a2")));
        assert_eq!(q.push(m("b", "b2")), Pushed::Replaced(m("b", "b1")));
        assert_eq!(
            drain(&mut q),
            [
                m("a", "a1"),
                m("b", "b2"),
                left("a"),
                joined("a"),
                m("a", "a3")
            ]
        );
    }

    #[test]
    fn latest_presence_about_one_member_leaves_other_slots_alone() {
        let mut q = LatestPerSenderQueue::new(16);
        q.push(m("a", "a1"));
        q.push(joined("b"));
        assert_eq!(q.push(m("a", "a2")), Pushed::Replaced(m("a", "a1")));
        assert_eq!(drain(&mut q), [m("a", "a2"), joined("b")]);
    }

    #[test]
    fn latest_is_bounded_by_senders_not_by_messages() {
        let mut q = LatestPerSenderQueue::new(4);
        for i in 0..10_000 {
            let sender = ["a", "b", "c"][i % 3];
            q.push(m(sender, if i % 2 == 0 { "even" } else { "odd" }));
        }
        assert_eq!(q.items.len(), 3);
        assert_eq!(q.slots.len(), 3);
    }

    #[test]
    fn latest_full_queue_drops_the_oldest_message_before_any_presence() {
        let mut q = LatestPerSenderQueue::new(3);
        q.push(joined("a"));
        q.push(m("a", "a1"));
        q.push(m("b", "b1"));
        // Full: a new sender's message drops the oldest message, not JOINED.
        assert_eq!(q.push(m("c", "c1")), Pushed::Dropped(m("a", "a1")));
        // A replacement needs no room.
        assert_eq!(q.push(m("b", "b2")), Pushed::Replaced(m("b", "b1")));
        // Presence also makes room by dropping the oldest message.
        assert_eq!(q.push(left("a")), Pushed::Dropped(m("b", "b2")));
        // The dropped message's sender has no slot left: b starts a new one.
        assert_eq!(q.push(m("b", "b3")), Pushed::Dropped(m("c", "c1")));
        assert_eq!(drain(&mut q), [joined("a"), left("a"), m("b", "b3")]);
    }

    #[test]
    fn latest_full_of_presence_drops_the_oldest_presence() {
        let mut q = LatestPerSenderQueue::new(2);
        q.push(joined("a"));
        q.push(joined("b"));
        assert_eq!(q.push(joined("c")), Pushed::Dropped(joined("a")));
        assert_eq!(q.push(m("d", "d1")), Pushed::Dropped(joined("b")));
        assert_eq!(drain(&mut q), [joined("c"), m("d", "d1")]);
    }

    #[test]
    fn latest_zero_capacity_holds_one_event() {
        let mut q = LatestPerSenderQueue::new(0);
        assert_eq!(q.push(m("a", "a1")), Pushed::Added);
        assert_eq!(q.push(m("a", "a2")), Pushed::Replaced(m("a", "a1")));
        assert_eq!(q.push(m("b", "b1")), Pushed::Dropped(m("a", "a2")));
        assert_eq!(drain(&mut q), [m("b", "b1")]);
    }

    /// The same policy written the slow, obvious way: a message replaces the
    /// newest waiting message from its sender unless a presence event about
    /// that sender was queued since.
    fn model_push(items: &mut VecDeque<Event>, capacity: usize, event: Event) {
        if let Event::Message(new) = &event {
            for item in items.iter_mut().rev() {
                match item {
                    Event::Message(old) if old.sender == new.sender => {
                        *item = event;
                        return;
                    }
                    Event::Joined(name) | Event::Left { name, .. } if *name == new.sender => break,
                    _ => {}
                }
            }
        }
        if items.len() >= capacity {
            let i = items.iter().position(|e| matches!(e, Event::Message(_)));
            items.remove(i.unwrap_or(0));
        }
        items.push_back(event);
    }

    #[test]
    fn latest_matches_the_obvious_model_on_random_traffic() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n) as usize
        };
        for capacity in [1, 2, 3, 5, 8, 64] {
            let mut q = LatestPerSenderQueue::new(capacity);
            let mut model = VecDeque::new();
            for i in 0..20_000_u32 {
                let name = ["a", "b", "c", "d"][next(4)];
                match next(10) {
                    0..=5 => {
                        let event = Event::Message(Message {
                            sender: name.into(),
                            payload: i.to_string().into(),
                        });
                        q.push(event.clone());
                        model_push(&mut model, capacity, event);
                    }
                    6 => {
                        q.push(joined(name));
                        model_push(&mut model, capacity, joined(name));
                    }
                    7 => {
                        q.push(left(name));
                        model_push(&mut model, capacity, left(name));
                    }
                    _ => assert_eq!(q.pop(), model.pop_front()),
                }
                assert!(q.items.len() <= capacity);
            }
            assert_eq!(drain(&mut q), Vec::from(model));
            assert!(q.slots.is_empty());
        }
    }
}
