//! The WebSocket transport, for browsers.
//!
//! **Framing.** One binary WebSocket message carries exactly one protocol
//! frame *body* (type byte + fields), without the 4-byte length prefix of the
//! TCP transport: the message boundary already is the framing. The sink strips
//! the prefix off the shared encoded frames with `Bytes::slice(4..)` (no copy);
//! the source checks each message against the current maximum body length.
//! Text messages are a protocol error (close code 1003). WebSocket pings are
//! answered by tungstenite; the relais `PING`/`PONG` frames work as on TCP.
//!
//! **Limits.** tungstenite's defaults (64 MiB messages, 16 MiB frames, an
//! unbounded write buffer) are replaced by [`websocket_config`]: a message or
//! a single WebSocket frame larger than [`MAX_FRAME_LEN`], or fragments adding
//! up past it, are refused before being buffered, with close code 1009
//! ("message too big"). Before the handshake a message must also fit
//! [`MAX_HELLO_LEN`], and the stream under tungstenite ([`Capped`]) lets
//! through at most [`MAX_PRE_HANDSHAKE_BYTES`] until the session lifts the
//! cap on admission: tungstenite's own limits cannot change mid-connection,
//! and without the cap an unauthenticated peer could make the server buffer
//! a whole `MAX_FRAME_LEN` message.
//!
//! **The HTTP side.** The listener reads the request head itself (bounded in
//! size and time, see [`crate::web`]), then either answers plain HTTP (the demo
//! page, or a 404) or completes the upgrade by writing the `101` response with
//! tungstenite's [`derive_accept_key`] and wraps the socket with
//! [`WebSocketStream::from_partially_read`], handing over any bytes the client
//! sent after its request head.
//!
//! **TLS.** With [`Server::with_tls`](crate::Server::with_tls) the listener
//! first completes a TLS handshake (in the connection's task, see
//! [`crate::tls`]); everything above then reads and writes the decrypted
//! [`ClientStream`]: `wss://` upgrades, `https://` pages.
//!
//! **Closing.** After a transport error the WebSocket stream is unusable, but
//! the session still *lingers* (reads and discards until the peer closes, for
//! at most a second) so the goodbye and the close frame are not destroyed by
//! a TCP reset. The socket is therefore shared ([`SharedTcp`]) between the
//! WebSocket stream and the source, which drains it directly once the
//! WebSocket layer has failed.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use relais_protocol::{frames::kind, CloseReason, FrameError, LENGTH_PREFIX_LEN};
use relais_protocol::{MAX_FRAME_LEN, MAX_HELLO_LEN};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use crate::session::{self, FrameSink, FrameSource, ReadError};
use crate::tcp::SendQueueProbe;
use crate::tls::{self, ClientStream, TlsConfig};
use crate::web::{self, Request};
use crate::{Admission, Refusal, ServerContext};

/// What the WebSocket listener answers to a plain (non-upgrade) HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpPages {
    /// Every plain request gets `404 Not Found` (with a one-line hint).
    #[default]
    None,
    /// `GET /` is the live demo page (with its `/demo.js`, `/demo.css` and
    /// `/favicon.svg`, and a strict Content-Security-Policy), `GET
    /// /relais.js` the browser client (and `/relais.d.ts` its type
    /// declarations); anything else is a 404.
    Demo,
}

/// tungstenite's limits for a relais connection.
pub fn websocket_config() -> WebSocketConfig {
    /// Batches are written as one buffer; past this a write is started even
    /// before the batch is complete.
    const WRITE_BUFFER: usize = 64 * 1024;
    WebSocketConfig::default()
        // Allocated eagerly per connection: small, clients send small updates.
        .read_buffer_size(8 * 1024)
        .write_buffer_size(WRITE_BUFFER)
        // The buffer exceeds `write_buffer_size` only while the socket is
        // not writable: one more message at most (plus headers).
        .max_write_buffer_size(WRITE_BUFFER + 2 * (MAX_FRAME_LEN + 16))
        .max_message_size(Some(MAX_FRAME_LEN))
        .max_frame_size(Some(MAX_FRAME_LEN))
}

/// Serves one connection accepted on the WebSocket listener: reads its HTTP
/// request head, then answers it as plain HTTP or upgrades it and runs a
/// relais session over it. With `tls`, all of it runs over TLS, whose
/// handshake comes first. A refused connection (the server is full, the
/// address over its limits, the memory budget spent) gets its TLS handshake
/// and request head within [`session::REFUSED_HEAD_TIMEOUT`] each, then an upgrade
/// is refused with a `REFUSED` frame, plain HTTP with a 503.
pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    admission: Result<Admission, Refusal>,
    ctx: Arc<ServerContext>,
    pages: HttpPages,
    tls: Option<TlsConfig>,
) {
    let (config, shutdown) = (&ctx.config, &ctx.shutdown);
    let head_timeout = session::handshake_timeout(config, &admission);
    let socket = Arc::new(stream);
    let tls_stream = tls::accept(tls.as_ref(), socket.clone(), &ctx, peer, head_timeout);
    let Some(mut stream) = tls_stream.await else {
        return;
    };
    let request = tokio::select! {
        r = web::read_request(&mut stream, head_timeout) => r,
        () = shutdown.cancelled() => return,
    };
    let request = match request {
        Ok(r) => r,
        Err(response) => {
            debug!(%peer, status = response.status, "bad HTTP request");
            return web::respond(stream, response).await;
        }
    };
    let (key, leftover) = match request {
        Request::Upgrade { origin, .. }
            if ctx
                .allowed_origins
                .as_ref()
                .is_some_and(|allowed| !allowed.allows(origin.as_deref())) =>
        {
            debug!(%peer, ?origin, "origin not allowed");
            let response = web::Response::forbidden_origin(origin.as_deref());
            return web::respond(stream, response).await;
        }
        Request::Upgrade { key, leftover, .. } => (key, leftover),
        Request::Plain { .. } if admission.is_err() => {
            return web::respond(stream, web::Response::server_full()).await
        }
        Request::Plain { head, path, host } => {
            let response = web::page(pages, &path, head, host.as_deref());
            return web::respond(stream, response).await;
        }
    };
    let accept = derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if let Err(e) = stream.write_all(response.as_bytes()).await {
        debug!(%peer, error = %e, "upgrade failed");
        return;
    }
    let (source, sink) = split(stream, socket, leftover).await;
    debug!(%peer, "websocket connected");
    session::serve_or_refuse(source, sink, ctx, admission, peer).await
}

/// Most bytes a WebSocket client may send after its request head and before
/// its handshake is answered: one largest `HELLO` in one masked frame (at
/// most 14 bytes of header), plus room for a ping and a close frame. Past
/// it the connection is a protocol error at once, whatever frame header it
/// announced, so an unauthenticated peer makes the server hold at most this
/// (and tungstenite's read buffer), as on the TCP port.
pub const MAX_PRE_HANDSHAKE_BYTES: usize = MAX_HELLO_LEN + 14 + 2 * (125 + 6);

/// A stream whose reads stop with an error once `left` bytes have been read,
/// until `left` is set to `usize::MAX`. Writes pass through.
#[derive(Debug)]
pub struct Capped<S> {
    inner: S,
    left: Arc<AtomicUsize>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let left = self.left.load(Ordering::Relaxed);
        if left == usize::MAX {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        if left == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than {MAX_PRE_HANDSHAKE_BYTES} bytes before the handshake"),
            )));
        }
        let room = left.min(buf.remaining());
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(room));
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut limited))?;
        let n = limited.filled().len();
        buf.advance(n);
        // Only the session lifts the cap; a race with it only lowers `left`
        // once more, harmlessly (the next read sees usize::MAX again).
        let _ = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                (l != usize::MAX).then(|| l.saturating_sub(n))
            });
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Wraps an upgraded stream (`tcp`: the socket under it; `leftover`: bytes
/// the client sent after its request head) into the session's frame source
/// and sink.
pub async fn split(
    stream: ClientStream,
    tcp: Arc<TcpStream>,
    leftover: Vec<u8>,
) -> (WsSource, WsSink) {
    let allowance = Arc::new(AtomicUsize::new(
        MAX_PRE_HANDSHAKE_BYTES.saturating_sub(leftover.len()),
    ));
    let stream = Capped {
        inner: stream,
        left: allowance.clone(),
    };
    let ws = WebSocketStream::from_partially_read(
        stream,
        leftover,
        Role::Server,
        Some(websocket_config()),
    )
    .await;
    let (write, read) = ws.split();
    let close_code = Arc::new(AtomicU16::new(0));
    (
        WsSource {
            messages: read,
            tcp: tcp.clone(),
            allowance,
            max_frame_len: MAX_HELLO_LEN,
            failed: false,
            close_code: close_code.clone(),
        },
        WsSink {
            messages: write,
            tcp: tcp.clone(),
            close_code,
            goodbye: None,
        },
    )
}

/// Frame bodies from a WebSocket, one per binary message.
#[derive(Debug)]
pub struct WsSource {
    messages: SplitStream<WebSocketStream<Capped<ClientStream>>>,
    /// What the client may still send before its handshake is answered.
    allowance: Arc<AtomicUsize>,
    /// The raw socket, drained directly once the WebSocket layer has failed.
    tcp: Arc<TcpStream>,
    max_frame_len: usize,
    failed: bool,
    /// The close code the sink sends when the session ends (0: its own
    /// choice), set here when the client broke a transport rule.
    close_code: Arc<AtomicU16>,
}

impl WsSource {
    /// Records why the connection must close and returns the session's error.
    fn fail(&mut self, code: CloseCode, error: ReadError) -> ReadError {
        self.failed = true;
        self.close_code.store(code.into(), Ordering::Relaxed);
        error
    }

    /// Reads and discards raw bytes until the peer closes (the linger after
    /// a failure). Cancel-safe: `readable` and `try_read` lose nothing.
    async fn drain(&self) -> Result<Option<Bytes>, ReadError> {
        let mut scratch = [0u8; 4096];
        loop {
            self.tcp.readable().await?;
            match self.tcp.try_read(&mut scratch) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl FrameSource for WsSource {
    async fn next_frame(&mut self) -> Result<Option<Bytes>, ReadError> {
        if self.failed {
            return self.drain().await;
        }
        loop {
            // `SplitStream::next` is cancel-safe (tokio-tungstenite documents
            // it for its stream; the split half only adds a lock).
            let message = match self.messages.next().await {
                None => return Ok(None),
                Some(Ok(m)) => m,
                Some(Err(WsError::Io(e))) => {
                    self.failed = true;
                    return Err(e.into());
                }
                // The stream ended without a WebSocket close: the connection
                // was lost (a browser killed, a network path reset), as an
                // end of stream is on TCP; not a protocol error.
                Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                    return Ok(None)
                }
                Some(Err(e @ WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                    return Err(self.fail(CloseCode::Size, ReadError::Transport(e.to_string())))
                }
                Some(Err(e)) => {
                    return Err(self.fail(CloseCode::Protocol, ReadError::Transport(e.to_string())))
                }
            };
            match message {
                Message::Binary(body) if body.len() > self.max_frame_len => {
                    let too_large = FrameError::TooLarge {
                        len: body.len() as u64,
                        max: self.max_frame_len,
                    };
                    return Err(self.fail(CloseCode::Size, too_large.into()));
                }
                Message::Binary(body) if body.is_empty() => {
                    return Err(self.fail(CloseCode::Protocol, FrameError::Empty.into()))
                }
                Message::Binary(body) => return Ok(Some(body)),
                Message::Text(_) => {
                    let e = ReadError::Transport(
                        "text message: relais frames travel in binary messages".into(),
                    );
                    return Err(self.fail(CloseCode::Unsupported, e));
                }
                // tungstenite queues the pong itself and sends it with the
                // next read or write.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                // The client closed; tungstenite queues the reply, which the
                // next read (the session's linger) flushes.
                Message::Close(_) => return Ok(None),
            }
        }
    }

    fn set_max_frame_len(&mut self, max: usize) {
        self.max_frame_len = max;
        if max > MAX_HELLO_LEN {
            // Admitted: from now on the frame limits alone apply.
            self.allowance.store(usize::MAX, Ordering::Relaxed);
        }
    }
}

/// Encoded frames to a WebSocket, one binary message each.
#[derive(Debug)]
pub struct WsSink {
    messages: SplitSink<WebSocketStream<Capped<ClientStream>>, Message>,
    /// The raw socket, to end our direction after the close frame.
    tcp: Arc<TcpStream>,
    close_code: Arc<AtomicU16>,
    /// The reason of the last `GOODBYE` sent, which picks the close code.
    goodbye: Option<CloseReason>,
}

impl FrameSink for WsSink {
    async fn send_batch(&mut self, frames: &[Bytes]) -> io::Result<()> {
        for frame in frames {
            let body = frame.slice(LENGTH_PREFIX_LEN..);
            if body.first() == Some(&kind::GOODBYE) {
                self.goodbye = body.get(1).map(|&c| CloseReason::from_code(c));
            }
            // `feed` only buffers (writing once the buffer passes
            // `write_buffer_size`); the flush below writes the batch.
            self.messages
                .feed(Message::Binary(body))
                .await
                .map_err(into_io)?;
        }
        self.messages.flush().await.map_err(into_io)
    }

    async fn close(&mut self) -> io::Result<()> {
        let code = match self.close_code.load(Ordering::Relaxed) {
            0 => close_code_for(self.goodbye),
            code => CloseCode::from(code),
        };
        let frame = CloseFrame {
            code,
            reason: close_text(code).into(),
        };
        self.messages
            .send(Message::Close(Some(frame)))
            .await
            .map_err(into_io)?;
        // Like the TCP transport: end our direction, keep reading (linger).
        // (Under TLS without a close_notify: the close frame already ends
        // the WebSocket, and is authenticated.)
        socket2::SockRef::from(&*self.tcp).shutdown(Shutdown::Write)
    }

    fn send_queue(&self) -> Option<crate::pacing::SendQueue> {
        SendQueueProbe::send_queue(&*self.tcp)
    }
}

/// The WebSocket close code matching a relais close reason.
fn close_code_for(reason: Option<CloseReason>) -> CloseCode {
    match reason {
        None | Some(CloseReason::Normal) => CloseCode::Normal,
        Some(CloseReason::ServerShutdown) => CloseCode::Away,
        Some(CloseReason::ProtocolError) => CloseCode::Protocol,
        Some(CloseReason::SlowConsumer | CloseReason::RateLimit | CloseReason::ReadOnly) => {
            CloseCode::Policy
        }
        Some(_) => CloseCode::Normal,
    }
}

fn close_text(code: CloseCode) -> &'static str {
    match code {
        CloseCode::Size => "message too big",
        CloseCode::Unsupported => "binary messages only",
        CloseCode::Protocol => "protocol error",
        CloseCode::Away => "server shutting down",
        CloseCode::Policy => "policy violation",
        _ => "",
    }
}

fn into_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        other => io::Error::other(other),
    }
}

/// A TCP socket shared between the stream a transport reads and writes
/// through this (WebSocket, TLS) and the server's direct uses of the socket:
/// the [`WsSource`]'s drain after a failure, `TCP_INFO` for pacing, the
/// final shutdown. tokio's readiness API works on `&TcpStream`.
#[derive(Debug)]
pub struct SharedTcp(Arc<TcpStream>);

impl SharedTcp {
    /// A stream over `socket`.
    pub fn new(socket: Arc<TcpStream>) -> Self {
        Self(socket)
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale; polling again registers the waker.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(Shutdown::Write))
    }
}
