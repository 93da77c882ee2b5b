//! The server-wide memory budget (`max_memory_bytes`).
//!
//! Every buffer a stranger can make the server hold is charged here before
//! it is held: each connection's fixed buffers (when it is accepted), every
//! frame waiting in an outbox or being written (from the moment it is
//! queued until its write completes), every member's latest message (the
//! room state late joiners receive), snapshot chunks, room lists. Frames
//! shared by several recipients are charged once per recipient, so the
//! count is an upper bound on what those buffers really take.
//!
//! Three levels:
//! - **admission** (new connections, joins) must fit under 7/8 of the
//!   budget, so that the members already in keep room to work;
//! - **data** (a relayed message, a snapshot chunk) must fit under the whole
//!   budget; a message that does not is held by its sender's session (newest
//!   wins) and relayed once memory frees up;
//! - **control** frames (presence, keepalive, the goodbye, the welcome) are
//!   always charged. They are small and bounded by the number of members
//!   (presence churn is rate-limited per address), and the 1/8 kept free
//!   by admission is there for them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What a plain TCP connection holds besides its queued frames: the read
/// buffer (at most a `HELLO` before the handshake, a frame after it), the
/// write coalescing buffer ([`crate::tcp::COALESCE_BYTES`]), the session's
/// state and timers.
pub const TCP_CONNECTION_COST: usize = 32 * 1024;

/// What a WebSocket connection holds on top of a TCP one: tungstenite's
/// read buffer and its frame state (see [`crate::ws`]).
pub const WS_CONNECTION_COST: usize = 32 * 1024;

/// What TLS adds to a connection: rustls's record buffers (a 16 KiB
/// record in each direction) and session state.
pub const TLS_CONNECTION_COST: usize = 48 * 1024;

/// The shared memory budget of one server.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    peak: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes, nothing used.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// The budget.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The most bytes ever charged at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Where admission (new connections and joins) stops: 7/8 of the budget.
    pub fn admission_ceiling(&self) -> usize {
        self.limit - self.limit / 8
    }

    /// Charges `n` bytes for a new connection or a join, if the total stays
    /// within [`admission_ceiling`](Self::admission_ceiling).
    pub fn try_admit(&self, n: usize) -> bool {
        self.try_charge(n, self.admission_ceiling())
    }

    /// Charges `n` bytes of data, if the total stays within the budget.
    pub fn try_data(&self, n: usize) -> bool {
        self.try_charge(n, self.limit)
    }

    fn try_charge(&self, n: usize, ceiling: usize) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = used.checked_add(n).filter(|&t| t <= ceiling) else {
                return false;
            };
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.peak.fetch_max(next, Ordering::Relaxed);
                    return true;
                }
                Err(now) => used = now,
            }
        }
    }

    /// Charges `n` bytes of control frames, unconditionally.
    pub fn force(&self, n: usize) {
        let next = self.used.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(next, Ordering::Relaxed);
    }

    /// Gives back `n` charged bytes.
    pub fn release(&self, n: usize) {
        let before = self.used.fetch_sub(n, Ordering::Relaxed);
        debug_assert!(before >= n, "released more than was charged");
    }
}

/// Bytes charged to a budget for as long as this lives.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Charge {
    /// Charges `bytes` for a new connection or a join (admission level), or
    /// `None` if the budget cannot take it.
    pub fn admit(budget: &Arc<MemoryBudget>, bytes: usize) -> Option<Self> {
        budget.try_admit(bytes).then(|| Self {
            budget: budget.clone(),
            bytes,
        })
    }

    /// Charges `bytes` at the data level, or `None` if the budget cannot
    /// take it.
    pub fn data(budget: &Arc<MemoryBudget>, bytes: usize) -> Option<Self> {
        budget.try_data(bytes).then(|| Self {
            budget: budget.clone(),
            bytes,
        })
    }

    /// Charges `bytes` of control frames, unconditionally.
    pub fn force(budget: &Arc<MemoryBudget>, bytes: usize) -> Self {
        budget.force(bytes);
        Self {
            budget: budget.clone(),
            bytes,
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_stop_at_their_ceilings_and_releases_free_room() {
        let b = Arc::new(MemoryBudget::new(800));
        assert_eq!(b.admission_ceiling(), 700);
        let conn = Charge::admit(&b, 700).expect("up to 7/8");
        assert!(Charge::admit(&b, 1).is_none(), "admission stops at 7/8");
        let data = Charge::data(&b, 100).expect("data may use the rest");
        assert!(Charge::data(&b, 1).is_none(), "never past the budget");
        let control = Charge::force(&b, 10);
        assert_eq!((b.used(), b.peak()), (810, 810));
        drop((conn, data, control));
        assert_eq!(b.used(), 0);
        assert!(Charge::admit(&b, 700).is_some());
    }

    #[test]
    fn concurrent_charges_never_pass_the_budget() {
        let b = Arc::new(MemoryBudget::new(10_000));
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        if b.try_data(7) {
                            b.release(7);
                        }
                    }
                });
            }
        });
        assert!(b.peak() <= 10_000);
        assert_eq!(b.used(), 0);
    }
}
