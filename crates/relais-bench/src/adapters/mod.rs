//! One adapter per system under test. An adapter connects one simulated
//! client and hands back its two halves: a [`Publisher`] (send loop) and a
//! [`Subscriber`] (receive loop). Everything else (schedule, timestamps,
//! counting, histograms) is common, so the systems are measured the same way.

use std::future::Future;

use bytes::Bytes;

pub mod nats;
pub mod redis;
pub mod relais;

pub use self::nats::NatsAdapter;
pub use self::redis::RedisAdapter;
pub use self::relais::RelaisAdapter;

/// The sending half of one client.
pub trait Publisher: Send + 'static {
    /// Sends one payload to the room. Returns once the client library has
    /// accepted it (written to the socket for relais, queued in the client
    /// for NATS, acknowledged by the server for Redis's `PUBLISH`).
    fn publish(&mut self, payload: Bytes) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The receiving half of one client.
pub trait Subscriber: Send + 'static {
    /// Waits for at least one relayed payload, then appends to `out` every
    /// payload available without waiting further (one receive timestamp then
    /// serves the whole batch). Returns `Ok(false)` once the connection has
    /// ended. Cancel-safe: nothing is lost if the future is dropped.
    fn recv_batch(
        &mut self,
        out: &mut Vec<Bytes>,
    ) -> impl Future<Output = anyhow::Result<bool>> + Send;
}

/// Connects clients to one system.
pub trait Adapter: Send + Sync + 'static {
    /// The sending half of a client.
    type Pub: Publisher;
    /// The receiving half of a client.
    type Sub: Subscriber;

    /// Connects client number `index` and joins/subscribes to `room`. When
    /// this returns, the client receives everything published to the room.
    fn connect(
        &self,
        index: usize,
        room: &str,
    ) -> impl Future<Output = anyhow::Result<(Self::Pub, Self::Sub)>> + Send;
}

/// Most payloads one [`Subscriber::recv_batch`] takes from a client library
/// queue without waiting, so one batch never starves the sender sharing its
/// task.
pub(crate) const MAX_BATCH: usize = 1024;
