//! NATS core pub/sub with `async-nats`: one connection per client, which
//! subscribes to the room's subject and publishes to it. NATS echoes a
//! connection's own messages to its subscriptions by default, which is the
//! workload's echo.

use anyhow::Context;
use async_nats::{Client, Subject};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};

use super::{Adapter, Publisher, Subscriber, MAX_BATCH};

/// Connects clients to a NATS server.
#[derive(Debug, Clone)]
pub struct NatsAdapter {
    addr: String,
}

impl NatsAdapter {
    /// An adapter for the server at `addr` (`host:port`).
    pub fn new(addr: impl Into<String>) -> Self {
        Self { addr: addr.into() }
    }
}

/// The sending half: a handle on the client's connection.
#[derive(Debug)]
pub struct NatsPub {
    client: Client,
    subject: Subject,
}

/// The receiving half: the subscription (it also keeps the connection open).
#[derive(Debug)]
pub struct NatsSub {
    sub: async_nats::Subscriber,
    _client: Client,
}

impl Adapter for NatsAdapter {
    type Pub = NatsPub;
    type Sub = NatsSub;

    async fn connect(&self, index: usize, room: &str) -> anyhow::Result<(NatsPub, NatsSub)> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("c{index}"))
            // async-nats drops messages for a subscription whose queue is
            // full (its slow-consumer policy); the default queue is kept.
            .connect(self.addr.as_str())
            .await
            .with_context(|| format!("connecting to NATS at {}", self.addr))?;
        let sub = client.subscribe(room.to_owned()).await?;
        // The SUB is on the server once a round trip has completed.
        client.flush().await?;
        Ok((
            NatsPub {
                client: client.clone(),
                subject: Subject::from(room),
            },
            NatsSub {
                sub,
                _client: client,
            },
        ))
    }
}

impl Publisher for NatsPub {
    async fn publish(&mut self, payload: Bytes) -> anyhow::Result<()> {
        self.client.publish(self.subject.clone(), payload).await?;
        Ok(())
    }
}

impl Subscriber for NatsSub {
    async fn recv_batch(&mut self, out: &mut Vec<Bytes>) -> anyhow::Result<bool> {
        let Some(first) = self.sub.next().await else {
            return Ok(false);
        };
        out.push(first.payload);
        while out.len() < MAX_BATCH {
            match self.sub.next().now_or_never() {
                Some(Some(m)) => out.push(m.payload),
                _ => break,
            }
        }
        Ok(true)
    }
}
