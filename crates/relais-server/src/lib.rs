//! The relais server.
//!
//! - [`relay`]: the transport-agnostic core: rooms, members, latest-wins
//!   fan-out, the late-joiner snapshot.
//! - [`outbox`]: each recipient's conflating queue; [`batching`]: when its
//!   writer writes.
//! - [`pacing`]: how much each recipient's connection may hold in the kernel
//!   ([`tcp_info`] reads it), so state waits where it is conflated.
//! - [`session`]: one connection's life (handshake, reader, writer, goodbye),
//!   generic over a [`session::FrameSource`]/[`session::FrameSink`] pair;
//!   a resumable member's seat parked when its connection is lost.
//! - [`resume`]: the tokens that take a parked seat back.
//! - [`tcp`]: the TCP transport.
//! - [`ws`]: the WebSocket transport (browsers), and [`web`]: the HTTP side
//!   of its listener (upgrade, demo page).
//! - [`tls`]: TLS under either transport, and certificate reload.
//! - [`Server`]: accept loops, the connection limit, graceful shutdown.
//! - [`auth`]: join tokens (who may join which room); [`origins`]: which web
//!   pages may open a WebSocket.
//! - [`metrics`]: what the server counts; [`ops`]: the listener serving
//!   them with the health checks.
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
pub mod budget;
pub mod cluster;
pub mod config;
pub mod fdlimit;
pub mod metrics;
pub mod ops;
pub mod origins;
pub mod outbox;
pub mod pacing;
pub mod per_ip;
pub mod rate;
pub mod relay;
pub mod resume;
pub mod session;
pub mod tcp;
pub mod tcp_info;
pub mod tls;
pub mod web;
pub mod ws;

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use relais_protocol::RefuseReason;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use budget::{Charge, MemoryBudget};
pub use config::Config;
use metrics::{Metrics, OpenConnection, Transport};
use per_ip::{IpGuard, PerIp};
pub use relay::Relay;

/// What every session of one server shares: the relay, the limits, the
/// shutdown signal, who may join, and the counts limits are checked against.
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
    /// The server-wide memory budget.
    pub budget: Arc<MemoryBudget>,
    /// What the server counts (nothing unless
    /// [`with_metrics`](Self::with_metrics)).
    pub metrics: Metrics,
    /// Per-address connection, handshake and join counts.
    per_ip: Arc<PerIp>,
    connections: Arc<Semaphore>,
    /// The cluster this server is a node of, if any ([`cluster::Cluster::start`]).
    cluster: std::sync::OnceLock<Arc<cluster::Cluster>>,
    /// Refused connections being answered; past [`MAX_REFUSING`] a refused
    /// connection is closed without an answer.
    refusing: Arc<Semaphore>,
}

/// Most refused connections answered at once (each for at most
/// [`session::REFUSE_LINGER`]); past it a refused connection is closed at
/// once, unanswered.
pub const MAX_REFUSING: usize = 256;

/// A connection the server took: its share of every limit, given back when
/// it is dropped.
#[derive(Debug)]
pub struct Admission {
    // Dropped in this order: the connection slot goes last, so that once
    // `connection_count()` has dropped, so has everything else.
    _memory: Charge,
    ip: Option<IpGuard>,
    _open: OpenConnection,
    _permit: OwnedSemaphorePermit,
}

impl Admission {
    /// The handshake is over: it no longer counts as one in progress.
    pub fn handshake_done(&mut self) {
        if let Some(ip) = &mut self.ip {
            ip.handshake_done();
        }
    }

    /// Takes one join from the address's join rate.
    pub fn try_join(&self) -> Result<(), RefuseReason> {
        self.ip.as_ref().map_or(Ok(()), IpGuard::try_join)
    }
}

/// A connection the server refuses: a permit to answer it, if answering is
/// within [`MAX_REFUSING`].
#[derive(Debug)]
pub struct Refusal {
    /// Why.
    pub reason: RefuseReason,
    /// Held while the refusal is answered.
    _answer: OwnedSemaphorePermit,
}

impl ServerContext {
    /// A context for a server with the given limits.
    pub fn new(config: Config) -> Self {
        let budget = Arc::new(MemoryBudget::new(config.max_memory_bytes));
        Self {
            relay: Relay::with_budget(budget.clone()),
            budget,
            metrics: Metrics::disabled(),
            per_ip: Arc::new(PerIp::new(&config)),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
            config,
            shutdown: CancellationToken::new(),
            auth: None,
            allowed_origins: None,
            cluster: std::sync::OnceLock::new(),
        }
    }

    /// Requires a join token accepted by `verifier` from every client.
    pub fn with_auth(mut self, verifier: auth::Verifier) -> Self {
        self.auth = Some(verifier);
        self
    }

    /// Counts what the server does ([`metrics`]), to be served by
    /// [`Server::serve_ops`]. Call before the server serves anyone.
    pub fn with_metrics(mut self) -> Self {
        self.metrics = Metrics::enabled(self.budget.clone());
        self.relay = Relay::with_budget(self.budget.clone()).with_metrics(self.metrics.clone());
        self
    }

    /// Whether the server accepts clients (`/readyz`): until its shutdown
    /// starts, and, on a cluster node, while it reaches NATS.
    pub fn is_ready(&self) -> bool {
        !self.shutdown.is_cancelled() && self.cluster().is_none_or(|c| c.is_up())
    }

    /// The cluster this server is a node of, if any.
    pub fn cluster(&self) -> Option<&Arc<cluster::Cluster>> {
        self.cluster.get()
    }

    pub(crate) fn set_cluster(&self, cluster: Arc<cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// Accepts WebSocket upgrades only from pages of these origins.
    pub fn with_allowed_origins(mut self, origins: origins::AllowedOrigins) -> Self {
        self.allowed_origins = Some(origins);
        self
    }

    /// Admits a new connection from `peer` (`None`: not a network peer, as
    /// in tests over in-memory pipes) over `transport` that holds `cost`
    /// bytes of buffers,
    /// or says why not: the server is full, the address has too many
    /// connections or handshakes, or the memory budget is spent. `Err(None)`:
    /// refused, and [`MAX_REFUSING`] refusals are being answered already:
    /// close it at once, unanswered.
    pub fn admit(
        &self,
        peer: Option<IpAddr>,
        transport: Transport,
        cost: usize,
    ) -> Result<Admission, Option<Refusal>> {
        let refuse = |reason| {
            self.metrics.refused(reason);
            let answer = self.refusing.clone().try_acquire_owned().ok();
            answer.map(|_answer| Refusal { reason, _answer })
        };
        let permit = self
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| refuse(RefuseReason::ServerFull))?;
        let ip = match peer {
            Some(ip) => Some(self.per_ip.connect(ip).map_err(refuse)?),
            None => None,
        };
        let memory =
            Charge::admit(&self.budget, cost).ok_or_else(|| refuse(RefuseReason::Overloaded))?;
        Ok(Admission {
            _memory: memory,
            ip,
            _open: self.metrics.connection_opened(transport),
            _permit: permit,
        })
    }

    /// How many connections are open (handshaking or registered).
    pub fn connection_count(&self) -> usize {
        self.config.max_connections - self.connections.available_permits()
    }
}

/// A relais server: one relay, any number of listeners, one shutdown.
///
/// Cloning gives another handle on the same server.
#[derive(Debug, Clone)]
pub struct Server {
    ctx: Arc<ServerContext>,
    tasks: TaskTracker,
    /// TLS for both listeners, if set ([`Server::with_tls`]).
    tls: Option<tls::TlsConfig>,
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
            ctx: Arc::new(ctx),
            tasks: TaskTracker::new(),
            tls: None,
        }
    }

    /// Serves both listeners over TLS with `tls`'s certificate (`wss://`
    /// and `https://` on the WebSocket port). Keep a clone of `tls` to
    /// [`reload`](tls::TlsConfig::reload) the certificate later.
    pub fn with_tls(mut self, tls: tls::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The TLS settings, if the listeners speak TLS.
    pub fn tls(&self) -> Option<&tls::TlsConfig> {
        self.tls.as_ref()
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
        self.ctx.connection_count()
    }

    /// What every session shares (limits, counts, the memory budget).
    pub fn context(&self) -> &Arc<ServerContext> {
        &self.ctx
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

    /// Admits a connection accepted from `peer`, charging what it holds to
    /// the memory budget, or refuses it; `None`: too many refusals are being
    /// answered, close it at once.
    fn admit(
        &self,
        peer: std::net::SocketAddr,
        websocket: bool,
    ) -> Option<Result<Admission, Refusal>> {
        let mut cost = budget::TCP_CONNECTION_COST;
        let mut transport = Transport::Tcp;
        if websocket {
            cost += budget::WS_CONNECTION_COST;
            transport = Transport::Ws;
        }
        if self.tls.is_some() {
            cost += budget::TLS_CONNECTION_COST;
        }
        match self.ctx.admit(Some(peer.ip()), transport, cost) {
            Ok(admission) => Some(Ok(admission)),
            Err(refusal) => refusal.map(Err),
        }
    }

    /// The accept loop. Returns when the server shuts down.
    async fn accept_tcp(&self, listener: TcpListener) {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "listening (tcp)");
        }
        while let Some((stream, peer)) = self.next_connection(&listener).await {
            let Some(admission) = self.admit(peer, false) else {
                continue;
            };
            let ctx = self.ctx.clone();
            let tls = self.tls.clone();
            let span = tracing::info_span!("conn", transport = "tcp", %peer);
            self.tasks.spawn(
                async move {
                    // The TLS handshake, if any, runs here, in the
                    // connection's task.
                    let timeout = session::handshake_timeout(&ctx.config, &admission);
                    let split = tls::split_tcp(stream, tls.as_ref(), &ctx, peer, timeout);
                    let Some((source, sink)) = split.await else {
                        return;
                    };
                    session::serve_or_refuse(source, sink, ctx, admission, peer).await
                }
                .instrument(span),
            );
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
            let Some(admission) = self.admit(peer, true) else {
                continue;
            };
            let span = tracing::info_span!("conn", transport = "ws", %peer);
            self.tasks.spawn(
                ws::serve_connection(
                    stream,
                    peer,
                    admission,
                    self.ctx.clone(),
                    pages,
                    self.tls.clone(),
                )
                .instrument(span),
            );
        }
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` ([`ops`]) on `listener`
    /// until `stop` completes; `/metrics` is empty unless the context was
    /// built [`with_metrics`](ServerContext::with_metrics). Give it a `stop`
    /// that completes after [`serve_tcp`](Self::serve_tcp) has returned, so
    /// that `/readyz` answers `503` through the shutdown's grace period.
    pub async fn serve_ops(&self, listener: TcpListener, stop: impl Future<Output = ()>) {
        ops::serve(listener, self.ctx.clone(), stop).await;
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
