//! Redis pub/sub with the `redis` crate: per client, one connection
//! subscribed to the room's channel and one connection that `PUBLISH`es to
//! it (a subscribed connection can do nothing else). Redis delivers a
//! message to every subscriber, the publisher's own subscriber connection
//! included, which is the workload's echo.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use redis::aio::{MultiplexedConnection, PubSubStream};
use redis::{AsyncConnectionConfig, Client};

use super::{Adapter, Publisher, Subscriber, MAX_BATCH};

/// Connects clients to a Redis server.
#[derive(Debug, Clone)]
pub struct RedisAdapter {
    client: Client,
}

impl RedisAdapter {
    /// An adapter for the server at `addr` (`host:port`).
    pub fn new(addr: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: Client::open(format!("redis://{addr}/"))?,
        })
    }
}

/// The sending half: the publishing connection.
pub struct RedisPub {
    conn: MultiplexedConnection,
    channel: String,
}

/// The receiving half: the subscribed connection's message stream.
pub struct RedisSub {
    stream: PubSubStream,
}

impl Adapter for RedisAdapter {
    type Pub = RedisPub;
    type Sub = RedisSub;

    async fn connect(&self, _index: usize, room: &str) -> anyhow::Result<(RedisPub, RedisSub)> {
        let mut pubsub = self
            .client
            .get_async_pubsub()
            .await
            .context("connecting the Redis subscriber")?;
        // Returns once Redis has confirmed the subscription.
        pubsub.subscribe(room).await?;
        // No response timeout: under overload a PUBLISH waits as long as
        // Redis takes, and that wait shows up in the latencies instead of
        // as errors.
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(Duration::from_secs(10)));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .context("connecting the Redis publisher")?;
        Ok((
            RedisPub {
                conn,
                channel: room.to_owned(),
            },
            RedisSub {
                stream: pubsub.into_on_message(),
            },
        ))
    }
}

impl Publisher for RedisPub {
    async fn publish(&mut self, payload: Bytes) -> anyhow::Result<()> {
        let _receivers: i64 = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(&payload[..])
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }
}

impl Subscriber for RedisSub {
    async fn recv_batch(&mut self, out: &mut Vec<Bytes>) -> anyhow::Result<bool> {
        let Some(first) = self.stream.next().await else {
            return Ok(false);
        };
        out.push(Bytes::copy_from_slice(first.get_payload_bytes()));
        while out.len() < MAX_BATCH {
            match self.stream.next().now_or_never() {
                Some(Some(m)) => out.push(Bytes::copy_from_slice(m.get_payload_bytes())),
                _ => break,
            }
        }
        Ok(true)
    }
}
