//! A server on an ephemeral port and a raw protocol client with full control
//! over reading (so tests can stall it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use relais_protocol::{
    ClientFrame, FrameDecoder, Hello, RefuseReason, ServerFrame, Welcome, MAX_FRAME_LEN, VERSION,
};
use relais_server::session::{self, FrameSink, FrameSource};
use relais_server::tcp::{StreamSink, StreamSource};
use relais_server::{Config, Server, ServerContext};
use tokio::io::DuplexStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// Upper bound on any single wait in a test: a guard against hangs, never a
/// way to wait for something to happen.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Default limits without the inbound rate limit.
pub fn unlimited() -> Config {
    Config {
        max_message_rate: u32::MAX / 16,
        message_burst: u32::MAX / 16,
        // Every test client comes from 127.0.0.1; the per-address limits
        // have tests of their own.
        max_connections_per_ip: 0,
        max_handshakes_per_ip: 0,
        max_joins_per_ip: 0,
        ..Config::default()
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub server: Server,
    task: JoinHandle<()>,
}

impl TestServer {
    /// A server with default limits, except the inbound rate limit and the
    /// per-address limits, which are lifted so tests of the relay semantics
    /// can send as fast and connect as often as they like (those limits
    /// have tests of their own).
    pub async fn start() -> Self {
        Self::with_config(unlimited()).await
    }

    pub async fn with_config(config: Config) -> Self {
        Self::with_context(ServerContext::new(config)).await
    }

    /// A server with admission rules (join tokens, origins) as well.
    pub async fn with_context(ctx: ServerContext) -> Self {
        Self::serving(Server::with_context(ctx)).await
    }

    /// Serves TCP clients with `server` (e.g. one with TLS).
    pub async fn serving(server: Server) -> Self {
        Self::serving_at("127.0.0.1:0".parse().unwrap(), server).await
    }

    /// Serves TCP clients with `server` on exactly `addr` (a restart on the
    /// same port).
    pub async fn serving_at(addr: SocketAddr, server: Server) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s = server.clone();
        let task = tokio::spawn(async move { s.serve_tcp(listener, std::future::pending()).await });
        Self { addr, server, task }
    }

    /// Shuts the server down and waits for `serve_tcp` to return.
    pub async fn stop(self) {
        tokio::time::timeout(PATIENCE, self.server.shutdown())
            .await
            .expect("shutdown finishes");
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("serve_tcp returns")
            .unwrap();
    }

    pub async fn raw(&self) -> Raw {
        Raw::connect(self.addr, None).await
    }

    /// Joins `room` as `name` (echo on) and returns the client and its welcome.
    pub async fn join(&self, room: &str, name: &str) -> (Raw, Welcome) {
        let mut c = self.raw().await;
        let w = c.hello(name, room, true).await.expect("welcome");
        (c, w)
    }
}

/// A raw protocol client over any byte stream (TCP, or an in-memory pipe
/// for tests under a paused clock).
pub struct Raw<S = TcpStream> {
    stream: S,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl<S> Raw<S> {
    pub fn over(stream: S) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(MAX_FRAME_LEN),
        }
    }
}

impl Raw {
    /// Connects; with `recv_buffer`, the socket's receive buffer is made
    /// that small (so a client that stops reading stalls the server soon).
    pub async fn connect(addr: SocketAddr, recv_buffer: Option<u32>) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let stream = socket.connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self::over(stream)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    pub async fn send(&mut self, frame: ClientFrame) {
        self.stream.write_all(&frame.to_bytes()).await.unwrap();
    }

    /// Sends a DATA frame; false if the connection is gone.
    pub async fn try_data(&mut self, payload: impl Into<Bytes>) -> bool {
        let frame = ClientFrame::Data(payload.into()).to_bytes();
        self.stream.write_all(&frame).await.is_ok()
    }

    /// Sends raw bytes; false if the connection is gone.
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    pub async fn data(&mut self, payload: impl Into<Bytes>) {
        self.send(ClientFrame::Data(payload.into())).await;
    }

    /// Sends a HELLO and returns the server's answer.
    pub async fn hello(
        &mut self,
        name: &str,
        room: &str,
        echo: bool,
    ) -> Result<Welcome, (RefuseReason, String)> {
        self.handshake(hello_frame(name, room, echo, None)).await
    }

    /// Sends `hello` and returns the server's answer.
    pub async fn handshake(
        &mut self,
        hello: ClientFrame,
    ) -> Result<Welcome, (RefuseReason, String)> {
        self.send(hello).await;
        match self.next().await {
            Some(ServerFrame::Welcome(w)) => Ok(w),
            Some(ServerFrame::Refused(r, text)) => Err((r, text)),
            other => panic!("expected WELCOME or REFUSED, got {other:?}"),
        }
    }

    /// The next frame, or `None` once the server closed the connection
    /// (cleanly or not).
    pub async fn next(&mut self) -> Option<ServerFrame> {
        self.next_within(PATIENCE).await
    }

    /// Like `next`, with another bound (tests under a paused clock wait
    /// through simulated minutes).
    pub async fn next_within(&mut self, bound: Duration) -> Option<ServerFrame> {
        tokio::time::timeout(bound, self.next_unbounded())
            .await
            .expect("a frame or the end of the connection in time")
    }

    /// The next frame, without a bound (callers bound it themselves).
    pub async fn next_unchecked(&mut self) -> Option<ServerFrame> {
        self.next_unbounded().await
    }

    async fn next_unbounded(&mut self) -> Option<ServerFrame> {
        loop {
            if let Some(body) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some(ServerFrame::decode(body).unwrap());
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads exactly `into.len()` bytes as they come, not as frames (for
    /// byte-for-byte checks).
    pub async fn read_exact(&mut self, into: &mut [u8]) {
        while self.buf.len() < into.len() {
            let read = tokio::time::timeout(PATIENCE, self.stream.read_buf(&mut self.buf))
                .await
                .expect("bytes in time")
                .unwrap();
            assert!(read > 0, "the connection ended");
        }
        into.copy_from_slice(&self.buf.split_to(into.len()));
    }

    /// The next relayed message as (sender, payload), skipping keepalives.
    /// Panics on anything else.
    pub async fn message(&mut self) -> (String, Bytes) {
        loop {
            match self.next().await {
                Some(ServerFrame::Message { sender, payload }) => return (sender, payload),
                Some(ServerFrame::Ping | ServerFrame::Pong) => {}
                other => panic!("expected a MESSAGE, got {other:?}"),
            }
        }
    }

    /// Reads until the connection ends; returns the last frame seen.
    pub async fn until_closed(&mut self) -> Option<ServerFrame> {
        let mut last = None;
        while let Some(f) = self.next().await {
            last = Some(f);
        }
        last
    }

    /// Closes the socket abruptly (no goodbye).
    pub fn drop_abruptly(self) {
        drop(self.stream);
    }
}

/// A `HELLO` of this protocol version.
pub fn hello_frame(name: &str, room: &str, echo: bool, token: Option<&str>) -> ClientFrame {
    ClientFrame::Hello(Hello {
        version: VERSION,
        name: name.into(),
        room: room.into(),
        echo,
        token: token.map(str::to_string),
        resume: None,
    })
}

/// Polls `cond` until it holds, for at most `PATIENCE`: for what no client
/// can observe (say, that the server has seen a connection end).
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs blocking client-library code off the runtime's threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// A payload carrying a sequence number (and padding up to `size` bytes).
pub fn seq_payload(seq: u32, size: usize) -> Bytes {
    let mut v = vec![0u8; size.max(4)];
    v[..4].copy_from_slice(&seq.to_be_bytes());
    Bytes::from(v)
}

pub fn seq_of(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload[..4].try_into().unwrap())
}

/// Sessions served over in-memory pipes, without a listener.
pub struct Sim {
    pub ctx: Arc<ServerContext>,
}

impl std::ops::Deref for Sim {
    type Target = ServerContext;
    fn deref(&self) -> &ServerContext {
        &self.ctx
    }
}

impl Sim {
    pub fn new(config: Config) -> Self {
        Self {
            ctx: Arc::new(ServerContext::new(config)),
        }
    }

    /// Runs a server session over `source` and `sink`.
    pub fn serve<S, W>(&self, source: S, sink: W) -> JoinHandle<()>
    where
        S: FrameSource + 'static,
        W: FrameSink + 'static,
    {
        let admission = self
            .ctx
            .admit(None, relais_server::metrics::Transport::Tcp, 0)
            .expect("admitted");
        tokio::spawn(session::run(source, sink, self.ctx.clone(), admission))
    }

    /// A new connection: the client's end, and the server session's task.
    pub fn connect(&self) -> (Raw<DuplexStream>, JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (read, write) = tokio::io::split(server);
        let task = self.serve(StreamSource::new(read), StreamSink::new(write));
        (Raw::over(client), task)
    }

    /// A new connection that has joined the default room as `name`.
    pub async fn join(&self, name: &str, echo: bool) -> Raw<DuplexStream> {
        let (mut c, _) = self.connect();
        c.hello(name, "", echo).await.expect("welcome");
        c
    }
}
