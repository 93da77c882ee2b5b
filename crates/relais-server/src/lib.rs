//! The relais server.
//!
//! - [`relay`]: the transport-agnostic core: rooms, members, latest-wins
//!   fan-out, the late-joiner snapshot.
//! - [`outbox`]: each recipient's conflating queue; [`batching`]: when its
//!   writer writes.
//! - [`pacing`]: how much each recipient's connection may hold in the kernel
//!   ([`tcp_info`] reads it), so state waits where it is conflated.
//! - [`session`]: one connection's life (handshake, reader, writer, goodbye),
//!   generic over a [`session::FrameSource`]/[`session::FrameSink`] pair.
//! - [`tcp`]: the TCP transport.
//! - [`ws`]: the WebSocket transport (browsers), and [`web`]: the HTTP side
//!   of its listener (upgrade, demo page).
//! - [`Server`]: accept loops, the connection limit, graceful shutdown.
//! - [`auth`]: join tokens (who may join which room); [`origins`]: which web
//!   pages may open a WebSocket.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7777").await?;
//! let server = relais_server::Server::new(relais_server::Config::default());
//! server.serve_tcp(listener, async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod batching;
pub mod config;
pub mod fdlimit;
pub mod origins;
pub mod outbox;
pub mod pacing;
pub mod rate;
pub mod relay;
pub mod session;
pub mod tcp;
pub mod tcp_info;
pub mod web;
pub mod ws;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use relais_protocol::RefuseReason;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

pub use config::Config;
pub use relay::Relay;

/// What every session of one server shares: the relay, the limits, the
/// shutdown signal, who may join.
#[derive(Debug)]
pub struct ServerContext {
    /// The rooms and their members.
    pub relay: Relay,
    /// The limits in force.
    pub config: Config,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// With a verifier, every `HELLO` must carry a join token it accepts;
    /// without (the default), tokens are ignored.
    pub auth: Option<auth::Verifier>,
    /// With a list, WebSocket upgrades must come from one of its origins;
    /// without (the default), from any page.
    pub allowed_origins: Option<origins::AllowedOrigins>,
}

impl ServerContext {
    /// A context for a server with the given limits.
    pub fn new(config: Config) -> Self {
        Self {
            relay: Relay::new(),
            config,
            shutdown: CancellationToken::new(),
            auth: None,
            allowed_origins: None,
        }
    }

    /// Requires a join token accepted by `verifier` from every client.
    pub fn with_auth(mut self, verifier: auth::Verifier) -> Self {
        self.auth = Some(verifier);
        self
    }

    /// Accepts WebSocket upgrades only from pages of these origins.
    pub fn with_allowed_origins(mut self, origins: origins::AllowedOrigins) -> Self {
        self.allowed_origins = Some(origins);
        self
    }
}

/// A relais server: one relay, any number of listeners, one shutdown.
///
/// Cloning gives another handle on the same server.
#[derive(Debug, Clone)]
pub struct Server {
    ctx: Arc<ServerContext>,
    connections: Arc<Semaphore>,
    tasks: TaskTracker,
}

impl Server {
    /// A server with the given limits, serving nothing yet.
    pub fn new(config: Config) -> Self {
        Self::with_context(ServerContext::new(config))
    }

    /// A server with the given limits and admission rules (join tokens,
    /// WebSocket origins), serving nothing yet.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), relais_server::auth::KeyError> {
    /// use relais_server::{auth::Verifier, Config, Server, ServerContext};
    /// let verifier = Verifier::from_secret_file("token-secret".as_ref())?;
    /// let server = Server::with_context(ServerContext::new(Config::default()).with_auth(verifier));
    /// # Ok(()) }
    /// ```
    pub fn with_context(ctx: ServerContext) -> Self {
        Self {
            connections: Arc::new(Semaphore::new(ctx.config.max_connections)),
            ctx: Arc::new(ctx),
            tasks: TaskTracker::new(),
        }
    }

    /// The relay core, for inspection (room and member counts).
    pub fn relay(&self) -> &Relay {
        &self.ctx.relay
    }

    /// The limits in force.
    pub fn config(&self) -> &Config {
        &self.ctx.config
    }

    /// How many connections are open (handshaking or registered).
    pub fn connection_count(&self) -> usize {
        self.ctx.config.max_connections - self.connections.available_permits()
    }

    /// Accepts TCP clients on `listener` until `stop` completes (or
    /// [`shutdown`](Self::shutdown) is called), then shuts the whole server
    /// down gracefully: every client receives a goodbye with reason "server
    /// shutting down" after what was pending for it, within the grace period.
    pub async fn serve_tcp(&self, listener: TcpListener, stop: impl Future<Output = ()>) {
        tokio::select! {
            () = self.accept_tcp(listener) => {}
            () = stop => {}
        }
        self.shutdown().await;
    }

    /// Starts the graceful shutdown and waits until every connection has
    /// ended (bounded by the grace period plus the linger time).
    pub async fn shutdown(&self) {
        self.ctx.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// The accept loop. Returns when the server shuts down.
    async fn accept_tcp(&self, listener: TcpListener) {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "listening (tcp)");
        }
        while let Some((stream, peer)) = self.next_connection(&listener).await {
            let (source, sink) = tcp::split(stream);
            let permit = self.connections.clone().try_acquire_owned();
            let ctx = self.ctx.clone();
            self.tasks.spawn(async move {
                match permit {
                    Ok(_permit) => session::run(source, sink, ctx).await,
                    Err(_) => {
                        debug!(%peer, "server full");
                        let reason = RefuseReason::ServerFull;
                        session::refuse_connection(source, sink, reason, &ctx).await
                    }
                }
            });
        }
    }

    /// Accepts WebSocket clients (and answers plain HTTP requests per
    /// `pages`) on `listener`, next to the TCP listener of
    /// [`serve_tcp`](Self::serve_tcp), whose shutdown also ends this: returns
    /// when the server shuts down, without shutting it down itself.
    /// Connections share the server's connection limit and shutdown.
    pub async fn accept_ws(&self, listener: TcpListener, pages: ws::HttpPages) {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, ?pages, "listening (websocket)");
        }
        while let Some((stream, peer)) = self.next_connection(&listener).await {
            let permit = self.connections.clone().try_acquire_owned().ok();
            let span = tracing::info_span!("ws", %peer);
            self.tasks.spawn(
                ws::serve_connection(stream, peer, permit, self.ctx.clone(), pages)
                    .instrument(span),
            );
        }
    }

    /// The next accepted connection, or `None` once the server shuts down.
    /// Accept errors are handled here: one connection's error is skipped,
    /// running out of descriptors backs off instead of spinning.
    async fn next_connection(
        &self,
        listener: &TcpListener,
    ) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
        let mut backoff = Duration::from_millis(10);
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                () = self.ctx.shutdown.cancelled() => return None,
            };
            match accepted {
                Ok((stream, peer)) => {
                    tcp::tune(&stream, &self.ctx.config);
                    return Some((stream, peer));
                }
                Err(e) if is_per_connection(&e) => {
                    debug!(error = %e, "accept failed for one connection");
                }
                Err(e) => {
                    warn!(error = %e, ?backoff, "accept failed; pausing");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.ctx.shutdown.cancelled() => return None,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Accept errors that concern only the connection being accepted.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}
