//! The byte stream under the frames: TCP, or TLS over it, opened anew for
//! every connection attempt.

use std::net::SocketAddr;

use relais_client_core::ConnectError;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::tls::{self, TlsOptions};

/// Bytes both ways.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Where to connect, resolved once when the client is built.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) addrs: Vec<SocketAddr>,
    /// The host part of the address, the name TLS verifies by default.
    pub(crate) host: Option<String>,
    pub(crate) tls: Option<TlsOptions>,
}

impl Target {
    /// Resolves `addr` (this may block on a name lookup).
    pub(crate) fn resolve(
        addr: impl crate::ServerAddr,
        tls: Option<TlsOptions>,
    ) -> Result<Self, ConnectError> {
        let host = addr.host();
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(ConnectError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the address resolved to no socket address",
            )));
        }
        Ok(Self { addrs, host, tls })
    }

    /// Opens a connection: each address in turn, `TCP_NODELAY` (updates are
    /// small and latency-bound), then TLS if asked for. The caller bounds
    /// the time.
    pub(crate) async fn open(&self) -> Result<Box<dyn Stream>, ConnectError> {
        let mut last = None;
        for addr in &self.addrs {
            match TcpStream::connect(addr).await {
                Ok(socket) => {
                    socket.set_nodelay(true)?;
                    return Ok(match &self.tls {
                        None => Box::new(socket),
                        Some(options) => {
                            Box::new(tls::connect(socket, options, self.host.as_deref()).await?)
                        }
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(ConnectError::Io(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address")
        })))
    }
}
