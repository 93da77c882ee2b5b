//! The state the user's handle and the two background threads share: the
//! inbound and outbound queues, the member list, the connection status and
//! the counters.
//!
//! Each queue sits in a `Mutex` with a `Condvar` that is notified whenever it
//! gains work or the connection ends. The status has its own mutex. Waiters
//! check the status while holding their queue's lock, and [`Shared::end`]
//! takes each queue's lock before notifying it, so a waiter cannot miss the
//! end of the connection. (Lock order: queue, then status; nothing holds the
//! status lock while taking another.)

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;

use crate::builder::ReceiveMode;
use crate::client::{Event, Stats};
use crate::error::{Disconnect, RecvError};
use crate::queue::{DropOldestQueue, LatestPerSenderQueue, Pushed};

/// How long a receive may wait.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Not at all.
    Poll,
    /// Until this instant.
    Until(Instant),
    /// Until something arrives or the connection ends.
    Forever,
}

/// What the writer thread must send next, besides the payloads it was handed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Work {
    /// Send a `PING` (the reader heard nothing for a keepalive interval).
    pub(crate) ping: bool,
    /// Send a `PONG` (the server pinged).
    pub(crate) pong: bool,
    /// The user is closing: send `GOODBYE` after the payloads, then stop.
    pub(crate) closing: bool,
}

/// The writer's side of the outbound direction.
#[derive(Debug)]
struct Outbound {
    /// Payloads the user queued; drops the oldest when full.
    payloads: DropOldestQueue<Bytes>,
    /// Control frames are flags, not a queue: however many pings the server
    /// sends while the writer is busy, one `PONG` answers them all, so this
    /// direction stays bounded too.
    ping_due: bool,
    pong_due: bool,
    /// The TLS layer has records of its own to send: the writer's flush,
    /// which follows every batch (even an empty one), sends them.
    flush_due: bool,
    closing: bool,
    writer_done: bool,
    /// The reader thread has exited (kept here to share the condvar).
    reader_done: bool,
}

/// The receive queue, as [`ReceiveMode`] chose it.
#[derive(Debug)]
enum Inbound {
    Queue(DropOldestQueue<Event>),
    LatestPerSender(LatestPerSenderQueue),
}

impl Inbound {
    fn push(&mut self, event: Event) -> Pushed {
        match self {
            Self::Queue(q) => q.push(event).map_or(Pushed::Added, Pushed::Dropped),
            Self::LatestPerSender(q) => q.push(event),
        }
    }

    fn pop(&mut self) -> Option<Event> {
        match self {
            Self::Queue(q) => q.pop(),
            Self::LatestPerSender(q) => q.pop(),
        }
    }
}

/// State shared by the [`Client`](crate::Client) handle and its two threads.
#[derive(Debug)]
pub(crate) struct Shared {
    inbound: Mutex<Inbound>,
    inbound_ready: Condvar,
    outbound: Mutex<Outbound>,
    outbound_ready: Condvar,
    status: Mutex<Option<Disconnect>>,
    members: Mutex<Vec<String>>,
    sent: AtomicU64,
    received: AtomicU64,
    dropped_outbound: AtomicU64,
    dropped_inbound: AtomicU64,
    recv_conflated: AtomicU64,
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves the
/// data consistent, so a panic elsewhere must not take the client down too.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(
        receive_mode: ReceiveMode,
        inbound_capacity: usize,
        outbound_capacity: usize,
        members: Vec<String>,
    ) -> Self {
        let inbound = match receive_mode {
            ReceiveMode::Queue => Inbound::Queue(DropOldestQueue::new(inbound_capacity)),
            ReceiveMode::LatestPerSender => {
                Inbound::LatestPerSender(LatestPerSenderQueue::new(inbound_capacity))
            }
        };
        Self {
            inbound: Mutex::new(inbound),
            inbound_ready: Condvar::new(),
            outbound: Mutex::new(Outbound {
                payloads: DropOldestQueue::new(outbound_capacity),
                ping_due: false,
                pong_due: false,
                flush_due: false,
                closing: false,
                writer_done: false,
                reader_done: false,
            }),
            outbound_ready: Condvar::new(),
            status: Mutex::new(None),
            members: Mutex::new(members),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            dropped_outbound: AtomicU64::new(0),
            dropped_inbound: AtomicU64::new(0),
            recv_conflated: AtomicU64::new(0),
        }
    }

    /// Why the connection ended, or `None` while it is up.
    pub(crate) fn status(&self) -> Option<Disconnect> {
        lock(&self.status).clone()
    }

    /// Records why the connection ended and wakes every waiter. The first
    /// reason wins: a later one (say, the read error caused by our own
    /// shutdown) describes a consequence, not the cause.
    pub(crate) fn end(&self, reason: Disconnect) {
        if self.set_status(reason) {
            self.wake_all();
        }
    }

    /// Records why the connection ended, unless that is already known.
    /// Returns whether it was recorded.
    fn set_status(&self, reason: Disconnect) -> bool {
        let mut status = lock(&self.status);
        if status.is_some() {
            return false;
        }
        tracing::debug!(%reason, "relais connection ended");
        *status = Some(reason);
        true
    }

    /// Wakes every waiter so it sees the status.
    fn wake_all(&self) {
        // Taking each lock before notifying orders this after any waiter's
        // status check (see the module docs).
        drop(lock(&self.inbound));
        self.inbound_ready.notify_all();
        drop(lock(&self.outbound));
        self.outbound_ready.notify_all();
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> Stats {
        Stats {
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            dropped_outbound: self.dropped_outbound.load(Ordering::Relaxed),
            dropped_inbound: self.dropped_inbound.load(Ordering::Relaxed),
            recv_conflated: self.recv_conflated.load(Ordering::Relaxed),
        }
    }

    /// The current member list.
    pub(crate) fn members(&self) -> Vec<String> {
        lock(&self.members).clone()
    }

    /// Adds a member who joined the room.
    pub(crate) fn member_joined(&self, name: &str) {
        let mut members = lock(&self.members);
        if !members.iter().any(|m| m == name) {
            members.push(name.to_owned());
        }
    }

    /// Removes a member who left the room.
    pub(crate) fn member_left(&self, name: &str) {
        lock(&self.members).retain(|m| m != name);
    }

    // ---- inbound: the reader pushes, the user takes ----

    /// Queues a received event as the receive mode says, counting what it
    /// replaced or dropped.
    pub(crate) fn push_event(&self, event: Event) {
        if matches!(event, Event::Message(_)) {
            self.received.fetch_add(1, Ordering::Relaxed);
        }
        let pushed = lock(&self.inbound).push(event);
        match pushed {
            Pushed::Added => {}
            Pushed::Replaced(_) => {
                self.recv_conflated.fetch_add(1, Ordering::Relaxed);
            }
            Pushed::Dropped(_) => {
                self.dropped_inbound.fetch_add(1, Ordering::Relaxed);
            }
        }
        // All, not one: a `recv` and a `recv_event` may wait side by side,
        // and only one of them may want this event.
        self.inbound_ready.notify_all();
    }

    /// Takes events off the inbound queue, oldest first, until `pick` keeps
    /// one; events `pick` passes over are dropped. Waits as `wait` says when
    /// the queue is empty. Returns `Disconnected` only once the queue is
    /// drained and the connection has ended.
    pub(crate) fn take<T>(
        &self,
        mut pick: impl FnMut(Event) -> Option<T>,
        wait: Wait,
    ) -> Result<T, RecvError> {
        let mut inbound = lock(&self.inbound);
        loop {
            while let Some(event) = inbound.pop() {
                if let Some(item) = pick(event) {
                    return Ok(item);
                }
            }
            if let Some(reason) = self.status() {
                return Err(RecvError::Disconnected(reason));
            }
            inbound = match wait {
                Wait::Poll => return Err(RecvError::Timeout),
                Wait::Forever => self
                    .inbound_ready
                    .wait(inbound)
                    .unwrap_or_else(PoisonError::into_inner),
                Wait::Until(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(RecvError::Timeout);
                    }
                    self.inbound_ready
                        .wait_timeout(inbound, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    // ---- outbound: the user and the reader ask, the writer sends ----

    /// Queues a payload for the writer, dropping (and counting) the oldest
    /// queued payload if full.
    pub(crate) fn queue_payload(&self, payload: Bytes) {
        if lock(&self.outbound).payloads.push(payload).is_some() {
            self.dropped_outbound.fetch_add(1, Ordering::Relaxed);
        }
        self.outbound_ready.notify_all();
    }

    /// Asks the writer to send a `PING`.
    pub(crate) fn request_ping(&self) {
        lock(&self.outbound).ping_due = true;
        self.outbound_ready.notify_all();
    }

    /// Asks the writer to send a `PONG`.
    pub(crate) fn request_pong(&self) {
        lock(&self.outbound).pong_due = true;
        self.outbound_ready.notify_all();
    }

    /// Asks the writer to write what the TLS layer has to send.
    pub(crate) fn request_flush(&self) {
        lock(&self.outbound).flush_due = true;
        self.outbound_ready.notify_all();
    }

    /// Asks the writer to flush, say goodbye and stop, and marks the
    /// connection closed by the user (unless it had already ended).
    pub(crate) fn request_close(&self) {
        // `closing` and the status are set together, under the outbound lock
        // (queue, then status: the documented order): a writer that sees the
        // status also sees `closing` and flushes, and no goodbye the writer
        // provokes can be recorded as the reason before `Closed` is.
        let recorded = {
            let mut out = lock(&self.outbound);
            out.closing = true;
            self.set_status(Disconnect::Closed)
        };
        self.outbound_ready.notify_all();
        if recorded {
            self.wake_all();
        }
    }

    /// Waits for the writer's next piece of work and moves the queued
    /// payloads into `payloads`. `None` means the connection ended without a
    /// close request: the writer has nothing left to do.
    pub(crate) fn next_work(&self, payloads: &mut VecDeque<Bytes>) -> Option<Work> {
        let mut out = lock(&self.outbound);
        loop {
            if out.closing
                || out.ping_due
                || out.pong_due
                || out.flush_due
                || !out.payloads.is_empty()
            {
                break;
            }
            if self.status().is_some() {
                return None;
            }
            out = self
                .outbound_ready
                .wait(out)
                .unwrap_or_else(PoisonError::into_inner);
        }
        out.payloads.drain_into(payloads);
        out.flush_due = false;
        Some(Work {
            ping: std::mem::take(&mut out.ping_due),
            pong: std::mem::take(&mut out.pong_due),
            closing: out.closing,
        })
    }

    /// Counts payloads the writer has written to the socket.
    pub(crate) fn count_sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Called by the writer as it exits.
    pub(crate) fn writer_finished(&self) {
        lock(&self.outbound).writer_done = true;
        self.outbound_ready.notify_all();
    }

    /// Called by the reader thread as it exits.
    pub(crate) fn reader_finished(&self) {
        lock(&self.outbound).reader_done = true;
        self.outbound_ready.notify_all();
    }

    /// Waits until the writer has exited or `deadline` passes; returns
    /// whether it exited.
    pub(crate) fn wait_writer_finished(&self, deadline: Instant) -> bool {
        self.wait_outbound_until(deadline, |out| out.writer_done)
    }

    /// Waits until the reader has exited or `deadline` passes; returns
    /// whether it exited.
    pub(crate) fn wait_reader_finished(&self, deadline: Instant) -> bool {
        self.wait_outbound_until(deadline, |out| out.reader_done)
    }

    fn wait_outbound_until(&self, deadline: Instant, done: impl Fn(&Outbound) -> bool) -> bool {
        let mut out = lock(&self.outbound);
        while !done(&out) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            out = self
                .outbound_ready
                .wait_timeout(out, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}
