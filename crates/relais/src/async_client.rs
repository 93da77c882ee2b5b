//! [`AsyncClient`]: the client for async code (tokio).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use relais_client_core::State;
use tokio::task::JoinHandle;

use crate::client::{only_messages, Stats};
use crate::error::{Disconnect, SendError};
use crate::shared::Shared;
use crate::{Event, Message};

/// A connection to a relais server, for async code (game servers, bots,
/// tools). Made by
/// [`ClientBuilder::connect_async`](crate::ClientBuilder::connect_async).
///
/// The same client as [`Client`](crate::Client), with the same queues,
/// receive modes, errors and reconnect with resume: [`send`](Self::send)
/// never blocks (it queues), [`recv`](Self::recv) and
/// [`recv_event`](Self::recv_event) await, and [`events`](Self::events)
/// is a `Stream` of everything that happens in the room. The I/O runs as a
/// task on the runtime that connected; dropping the client stops it
/// without a goodbye, so the server keeps its seat for the resume grace
/// (10 s by default) before the others see it leave: use
/// [`close`](Self::close) to leave at once.
///
/// ```no_run
/// use relais::{Client, Event};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::builder("bot-1").room("arena").connect_async("127.0.0.1:7777").await?;
/// client.send("hello")?;
/// while let Ok(event) = client.recv_event().await {
///     match event {
///         Event::Message(m) => println!("{}: {:?}", m.sender, m.payload),
///         Event::Joined(name) => println!("{name} joined"),
///         Event::Left { name, reason } => println!("{name} left ({reason})"),
///         _ => {}
///     }
/// }
/// client.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncClient {
    name: String,
    room: String,
    shared: Arc<Shared>,
    driver: Option<JoinHandle<()>>,
}

impl AsyncClient {
    pub(crate) fn new(shared: Arc<Shared>, driver: JoinHandle<()>) -> Self {
        let (name, room) = shared.names();
        Self {
            name,
            room,
            shared,
            driver: Some(driver),
        }
    }

    /// The name this client registered.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The room joined, as the server named it.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The largest payload [`send`](Self::send) accepts.
    pub fn max_payload(&self) -> usize {
        self.shared.core().max_payload()
    }

    /// Queues `payload` for the room and returns at once (see
    /// [`Client::send`](crate::Client::send)).
    pub fn send(&self, payload: impl Into<Bytes>) -> Result<(), SendError> {
        self.shared.send(payload.into())
    }

    /// The next message; presence events before it are skipped (the member
    /// list stays current). `Err` once the client has closed and every
    /// message received before has been returned.
    pub async fn recv(&self) -> Result<Message, Disconnect> {
        self.shared.take_async(only_messages).await
    }

    /// The next event: a message, a join or a leave, or news of the
    /// connection (`Reconnecting`, `Reconnected`).
    pub async fn recv_event(&self) -> Result<Event, Disconnect> {
        self.shared.take_async(Some).await
    }

    /// The events as a `Stream`, ending when the client has closed.
    ///
    /// ```no_run
    /// use futures_util::StreamExt;
    ///
    /// # async fn run(client: relais::AsyncClient) {
    /// let mut events = client.events();
    /// while let Some(event) = events.next().await {
    ///     println!("{event:?}");
    /// }
    /// # }
    /// ```
    pub fn events(&self) -> Events<'_> {
        Events {
            next: None,
            client: self,
        }
    }

    /// The room's members, this client included.
    pub fn members(&self) -> Vec<String> {
        self.shared.core().members().to_vec()
    }

    /// Connected, reconnecting or closed.
    pub fn state(&self) -> State {
        self.shared.core().state()
    }

    /// Why the client closed, or `None` while it is up or reconnecting.
    pub fn status(&self) -> Option<Disconnect> {
        self.shared.status()
    }

    /// The connection's counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Closes: queued payloads, `GOODBYE`, the server's goodbye (at most
    /// 2 s), then the I/O task ends.
    pub async fn close(mut self) {
        self.shared.close();
        if let Some(driver) = self.driver.take() {
            if let Err(e) = driver.await {
                tracing::error!("the relais client task failed: {e}");
            }
        }
    }
}

impl Drop for AsyncClient {
    fn drop(&mut self) {
        if let Some(driver) = self.driver.take() {
            // Not closed: nothing can be awaited here, so the I/O stops
            // where it is (the server sees a lost connection).
            self.shared.end(Disconnect::Closed);
            driver.abort();
        }
    }
}

type EventFuture<'a> =
    Pin<Box<dyn std::future::Future<Output = Result<Event, Disconnect>> + Send + 'a>>;

/// The events of an [`AsyncClient`], from [`AsyncClient::events`].
pub struct Events<'a> {
    client: &'a AsyncClient,
    next: Option<EventFuture<'a>>,
}

impl std::fmt::Debug for Events<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Stream for Events<'_> {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let client = self.client;
        let next = self
            .next
            .get_or_insert_with(|| Box::pin(client.recv_event()));
        match next.as_mut().poll(cx) {
            Poll::Ready(item) => {
                self.next = None;
                Poll::Ready(item.ok())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
