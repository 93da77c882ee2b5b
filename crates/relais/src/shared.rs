//! The state a client's handle and its driver share: the core (behind a
//! mutex: the handle queues payloads and reads the member list, the driver
//! feeds it bytes), the receive queue, the status and the counters.
//!
//! The receive queue sits in a `Mutex` with a `Condvar` (blocking waits) and
//! a `Notify` (async waits), both signalled whenever it gains an event or
//! the client closes. Waiters check the status while holding the queue's
//! lock, and [`Shared::end`] takes that lock before signalling, so a waiter
//! cannot miss the end. (Lock order: core, then inbound, then status.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use relais_client_core::{ConnectError, Core, SendError, Update};
use tokio::sync::Notify;

use crate::builder::ReceiveMode;
use crate::client::Stats;
use crate::error::{Disconnect, RecvError};
use crate::queue::{DropOldestQueue, LatestPerSenderQueue, Pushed};
use crate::Event;

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

/// How the first connection went: the connect call waits for this.
#[derive(Debug)]
pub(crate) enum First {
    Pending,
    Joined,
    Failed(ConnectError),
    Taken,
}

impl First {
    /// The outcome, once known, for the connect call (which takes it once).
    fn take(&mut self) -> Option<Result<(), ConnectError>> {
        match self {
            Self::Pending => None,
            _ => match std::mem::replace(self, Self::Taken) {
                Self::Failed(error) => Some(Err(error)),
                _ => Some(Ok(())),
            },
        }
    }
}

/// State shared by a client's handle and its driver.
#[derive(Debug)]
pub(crate) struct Shared {
    core: Mutex<Core>,
    /// Wakes the driver: a payload was queued, or a close requested.
    pub(crate) wake_driver: Notify,
    inbound: Mutex<Inbound>,
    inbound_ready: Condvar,
    inbound_notify: Notify,
    status: Mutex<Option<Disconnect>>,
    first: Mutex<First>,
    first_ready: Condvar,
    /// Set when the driver has returned.
    driver_done: Mutex<bool>,
    driver_done_ready: Condvar,
    received: AtomicU64,
    dropped_inbound: AtomicU64,
    recv_conflated: AtomicU64,
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves the
/// data consistent, so a panic elsewhere must not take the client down too.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(core: Core, receive_mode: ReceiveMode, inbound_capacity: usize) -> Self {
        let inbound = match receive_mode {
            ReceiveMode::Queue => Inbound::Queue(DropOldestQueue::new(inbound_capacity)),
            ReceiveMode::LatestPerSender => {
                Inbound::LatestPerSender(LatestPerSenderQueue::new(inbound_capacity))
            }
        };
        Self {
            core: Mutex::new(core),
            wake_driver: Notify::new(),
            inbound: Mutex::new(inbound),
            inbound_ready: Condvar::new(),
            inbound_notify: Notify::new(),
            status: Mutex::new(None),
            first: Mutex::new(First::Pending),
            first_ready: Condvar::new(),
            driver_done: Mutex::new(false),
            driver_done_ready: Condvar::new(),
            received: AtomicU64::new(0),
            dropped_inbound: AtomicU64::new(0),
            recv_conflated: AtomicU64::new(0),
        }
    }

    /// The core, locked.
    pub(crate) fn core(&self) -> MutexGuard<'_, Core> {
        lock(&self.core)
    }

    /// Acts on the core, then hands what that produced to the queues before
    /// the lock is released: a handle that sees the core's new state (the
    /// member list after a `JOINED`, say) finds the events that go with it
    /// already queued.
    pub(crate) fn with_core<R>(&self, act: impl FnOnce(&mut Core) -> R) -> R {
        let mut core = self.core();
        let result = act(&mut core);
        self.deliver(&mut core);
        result
    }

    /// The registered name and the room joined (fixed once joined).
    pub(crate) fn names(&self) -> (String, String) {
        let core = self.core();
        (core.name().to_owned(), core.room().to_owned())
    }

    /// Queues a payload and wakes the driver.
    pub(crate) fn send(&self, payload: Bytes) -> Result<(), SendError> {
        self.core().send(payload)?;
        self.wake_driver.notify_one();
        Ok(())
    }

    /// Asks the core to close, records it, and wakes the driver.
    pub(crate) fn close(&self) {
        // What had arrived is queued before the status is set, so a receive
        // sees all of it before the disconnect.
        self.with_core(|core| core.close(Instant::now()));
        self.end(Disconnect::Closed);
        self.wake_driver.notify_one();
    }

    /// Hands what the core has for the application to the queues, the
    /// status and the waiting connect call.
    fn deliver(&self, core: &mut Core) {
        while let Some(update) = core.poll_event() {
            match update {
                Update::Event(event) => self.push_event(event),
                Update::Joined { .. } => self.set_first(First::Joined),
                Update::Failed(error) => {
                    let why = Disconnect::ConnectionLost(error.to_string());
                    self.set_first(First::Failed(error));
                    self.end(why);
                }
                Update::Closed(why) => self.end(why),
                _ => {}
            }
        }
    }

    fn set_first(&self, first: First) {
        *lock(&self.first) = first;
        self.first_ready.notify_all();
        self.inbound_notify.notify_waiters();
    }

    /// Waits (blocking) for the first connection's outcome.
    pub(crate) fn wait_first(&self) -> Result<(), ConnectError> {
        let mut first = lock(&self.first);
        loop {
            if let Some(outcome) = first.take() {
                return outcome;
            }
            first = self
                .first_ready
                .wait(first)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Why the client closed, or `None` while it is up or reconnecting.
    pub(crate) fn status(&self) -> Option<Disconnect> {
        lock(&self.status).clone()
    }

    /// Records why the client closed and wakes every waiter. The first
    /// reason wins.
    pub(crate) fn end(&self, reason: Disconnect) {
        {
            let mut status = lock(&self.status);
            if status.is_some() {
                return;
            }
            tracing::debug!(%reason, "relais client closed");
            *status = Some(reason);
        }
        // Taking the lock before notifying orders this after any waiter's
        // status check (see the module docs).
        drop(lock(&self.inbound));
        self.inbound_ready.notify_all();
        self.inbound_notify.notify_waiters();
        self.set_first_if_pending();
    }

    fn set_first_if_pending(&self) {
        let mut first = lock(&self.first);
        if matches!(*first, First::Pending) {
            *first = First::Failed(ConnectError::Closed);
            self.first_ready.notify_all();
            self.inbound_notify.notify_waiters();
        }
    }

    /// Called by the driver as it returns.
    pub(crate) fn driver_finished(&self) {
        *lock(&self.driver_done) = true;
        self.driver_done_ready.notify_all();
        self.set_first_if_pending();
    }

    /// Waits until the driver has returned or `deadline` passes.
    pub(crate) fn wait_driver_finished(&self, deadline: Instant) -> bool {
        let mut done = lock(&self.driver_done);
        while !*done {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            done = self
                .driver_done_ready
                .wait_timeout(done, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> Stats {
        let core = self.core();
        Stats {
            sent: core.sent(),
            received: self.received.load(Ordering::Relaxed),
            dropped_outbound: core.dropped_outbound(),
            dropped_inbound: self.dropped_inbound.load(Ordering::Relaxed),
            recv_conflated: self.recv_conflated.load(Ordering::Relaxed),
        }
    }

    /// Queues a received event as the receive mode says, counting what it
    /// replaced or dropped.
    fn push_event(&self, event: Event) {
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
        self.inbound_notify.notify_waiters();
    }

    /// Takes events off the inbound queue, oldest first, until `pick` keeps
    /// one; events `pick` passes over are dropped. Waits as `wait` says when
    /// the queue is empty. Returns `Disconnected` only once the queue is
    /// drained and the client has closed.
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

    /// [`take`](Self::take), awaiting instead of blocking.
    pub(crate) async fn take_async<T>(
        &self,
        mut pick: impl FnMut(Event) -> Option<T>,
    ) -> Result<T, Disconnect> {
        loop {
            // Registered before the queue is checked, so a push in between
            // is not missed.
            let notified = self.inbound_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.take(&mut pick, Wait::Poll) {
                Ok(item) => return Ok(item),
                Err(RecvError::Disconnected(why)) => return Err(why),
                Err(RecvError::Timeout) => notified.await,
            }
        }
    }

    /// Waits (async) for the first connection's outcome.
    pub(crate) async fn first_async(&self) -> Result<(), ConnectError> {
        loop {
            let notified = self.inbound_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(outcome) = lock(&self.first).take() {
                return outcome;
            }
            notified.await;
        }
    }
}
