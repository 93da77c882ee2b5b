//! The byte stream under the frames: TCP, or TLS over it, opened anew for
//! every connection attempt.

use std::net::SocketAddr;

use relais_client_core::ConnectError;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::tls::{TlsOptions, TlsSetup};

/// Bytes both ways.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Where to connect, resolved once when the client is built.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) addrs: Vec<SocketAddr>,
    /// TLS, set up once (trust roots read, server name settled).
    pub(crate) tls: Option<TlsSetup>,
}

impl Target {
    /// Resolves `addr` (this may block on a name lookup) and sets up TLS
    /// (reading the trust roots).
    pub(crate) fn resolve(
        addr: impl crate::ServerAddr,
        tls: Option<&TlsOptions>,
    ) -> Result<Self, ConnectError> {
        let tls = tls
            .map(|options| TlsSetup::new(options, addr.host().as_deref()))
            .transpose()?;
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(ConnectError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the address resolved to no socket address",
            )));
        }
        Ok(Self { addrs, tls })
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
                        Some(tls) => Box::new(tls.connect(socket).await?),
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
