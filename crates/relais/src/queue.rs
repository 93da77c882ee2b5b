//! The bounded queue behind both directions of a connection.
//!
//! A real-time relay cares about the newest state, so when a queue is full it
//! makes room by dropping its *oldest* item, never by refusing the new one or
//! by blocking the caller.

use std::collections::VecDeque;

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

    /// Whether the queue holds nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Moves every item, oldest first, to the back of `out`, leaving the
    /// queue empty. When `out` is empty this swaps buffers instead of
    /// copying, so a caller that keeps `out` between calls reuses both
    /// allocations.
    pub(crate) fn drain_into(&mut self, out: &mut VecDeque<T>) {
        if out.is_empty() {
            std::mem::swap(&mut self.items, out);
        } else {
            out.extend(self.items.drain(..));
        }
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
        assert!(q.is_empty());
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

    #[test]
    fn drain_into_moves_everything_in_order() {
        let mut q = DropOldestQueue::new(4);
        let mut out = VecDeque::new();
        q.push(1);
        q.push(2);
        q.drain_into(&mut out);
        assert!(q.is_empty());
        q.push(3);
        q.drain_into(&mut out);
        assert_eq!(out, [1, 2, 3]);
        // The capacity is unchanged by the swap.
        for i in 0..4 {
            assert_eq!(q.push(i), None);
        }
        assert_eq!(q.push(4), Some(0));
    }
}
