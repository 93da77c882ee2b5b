//! TLS on both listeners (rustls, `ring` provider).
//!
//! **Where it sits.** TLS is a layer of the transport, below the framing:
//! the accept loops only accept; each connection's own task runs the TLS
//! handshake under [`Config::handshake_timeout`](crate::Config),
//! then the TCP transport reads frames from the decrypted stream
//! ([`split_tcp`]) and the WebSocket transport reads its HTTP request and
//! WebSocket messages from it (`wss://`, and `https://` for the demo page).
//! A failed or timed-out handshake is logged at debug level and the socket
//! closed; the connection never reaches the session.
//!
//! **Pacing.** TLS runs over a [`SharedTcp`], so the sink keeps a handle on
//! the socket and can still read its send queue (`TCP_INFO`): the kernel
//! then counts encrypted bytes, a few dozen more per 16 KiB record than
//! the writer counts, which pacing's margins absorb.
//!
//! **Reload.** The certificate is chosen per handshake by a
//! [`ResolvesServerCert`] holding an `Arc<CertifiedKey>` behind a lock;
//! [`TlsConfig::reload`] reads the files again and swaps the `Arc`.
//! Handshakes after the swap use the new certificate; established
//! connections keep their session keys and are not disturbed. A reload that
//! fails keeps the certificate in use.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tracing::debug;

use crate::tcp::{SendQueueProbe, StreamSink, StreamSource};
use crate::tcp_info::SendQueue;
use crate::ws::SharedTcp;
use crate::ServerContext;

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file is not PEM, or holds a malformed PEM section.
    #[error("{path} is not a valid PEM file: {detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        detail: String,
    },
    /// The certificate file holds no `CERTIFICATE` section.
    #[error("no certificate (PEM \"CERTIFICATE\") in {0}")]
    NoCertificate(PathBuf),
    /// The key file holds no private key.
    #[error("no private key (PEM PKCS#8 \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\") in {0}")]
    NoKey(PathBuf),
    /// The key is not the one the certificate was issued for.
    #[error("the private key in {key} does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the key or the certificate (e.g. an unsupported key
    /// type).
    #[error("unusable certificate or key ({cert}, {key}): {source}")]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
}

/// The server's TLS settings: a certificate chain and its key, read from PEM
/// files, and able to read them again ([`reload`](Self::reload)).
///
/// Cloning gives another handle on the same certificate: a reload through
/// any handle is seen by all.
///
/// ```no_run
/// # fn demo() -> Result<(), relais_server::tls::TlsError> {
/// let tls = relais_server::tls::TlsConfig::from_pem_files("cert.pem", "key.pem")?;
/// let server = relais_server::Server::new(relais_server::Config::default()).with_tls(tls.clone());
/// // Later, e.g. on SIGHUP, after the files were renewed:
/// tls.reload()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TlsConfig {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: Arc<CurrentCert>,
    config: Arc<ServerConfig>,
}

impl TlsConfig {
    /// Reads a certificate chain (`cert`: PEM, the server's certificate
    /// first, then any intermediates) and its private key (`key`: PEM,
    /// PKCS#8, PKCS#1 RSA or SEC1 EC), and checks that they belong together.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, TlsError> {
        let (cert_path, key_path) = (cert.as_ref().to_path_buf(), key.as_ref().to_path_buf());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = Arc::new(CurrentCert(RwLock::new(load(
            &cert_path, &key_path, &provider,
        )?)));
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        Ok(Self {
            cert_path,
            key_path,
            current,
            config: Arc::new(config),
        })
    }

    /// Reads the certificate and key files again and, if they are valid,
    /// uses them for every handshake from now on. Established connections
    /// are not affected. On error the certificate in use is kept.
    pub fn reload(&self) -> Result<(), TlsError> {
        let provider = self.config.crypto_provider();
        let fresh = load(&self.cert_path, &self.key_path, provider)?;
        *self
            .current
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The key file.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }
}

/// The certificate every new handshake gets: swapped whole by a reload.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// Reads and checks a certificate chain and its key.
fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let pem_error = |path: &Path, e: rustls_pki_types::pem::Error| TlsError::Pem {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let private_key = match PrivateKeyDer::from_pem_slice(&read(key)?) {
        Ok(k) => k,
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey(key.to_path_buf()))
        }
        Err(e) => return Err(pem_error(key, e)),
    };
    let unusable = |source| TlsError::Unusable {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    };
    let signing_key = provider
        .key_provider
        .load_private_key(private_key)
        .map_err(unusable)?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(Arc::new(certified)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })
        }
        Err(e) => Err(unusable(e)),
    }
}

/// A client's byte stream: the socket itself, or TLS over it.
pub type ClientStream = Either<SharedTcp, TlsStream<SharedTcp>>;

/// The client's stream, after the TLS handshake if `tls` is set. `None`
/// if the handshake failed, took longer than `timeout`, or the server shut
/// down meanwhile: the socket is then closed.
pub(crate) async fn accept(
    tls: Option<&TlsConfig>,
    socket: Arc<TcpStream>,
    ctx: &ServerContext,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<ClientStream> {
    match tls {
        None => Some(Either::Left(SharedTcp::new(socket))),
        Some(tls) => Some(Either::Right(
            handshake(tls, socket, ctx, peer, timeout).await?,
        )),
    }
}

/// The server side of a TLS handshake on `socket`, or `None` (logged) if it
/// failed, took longer than `timeout`, or the server shut down meanwhile.
async fn handshake(
    tls: &TlsConfig,
    socket: Arc<TcpStream>,
    ctx: &ServerContext,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<TlsStream<SharedTcp>> {
    let handshake = tokio::time::timeout(
        timeout,
        TlsAcceptor::from(tls.config.clone()).accept(SharedTcp::new(socket)),
    );
    let outcome = tokio::select! {
        r = handshake => r,
        () = ctx.shutdown.cancelled() => return None,
    };
    match outcome {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// What the TCP transport reads frames from: the socket's read half, or TLS.
pub type TcpRead = Either<OwnedReadHalf, ReadHalf<TlsStream<SharedTcp>>>;
/// What the TCP transport writes frames to: the socket's write half, or TLS.
pub type TcpWrite = Either<OwnedWriteHalf, TlsWriteHalf>;

/// The TCP transport's frame source and sink for an accepted socket, over
/// TLS if `tls` is set. `None` if the TLS handshake failed, took longer
/// than `timeout`, or the server shut down meanwhile. Without TLS these are
/// the socket's own halves: no lock between them.
pub async fn split_tcp(
    stream: TcpStream,
    tls: Option<&TlsConfig>,
    ctx: &ServerContext,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<(StreamSource<TcpRead>, StreamSink<TcpWrite>)> {
    let Some(tls) = tls else {
        let (read, write) = stream.into_split();
        return Some((
            StreamSource::new(Either::Left(read)),
            StreamSink::new(Either::Left(write)),
        ));
    };
    let socket = Arc::new(stream);
    let tls_stream = handshake(tls, socket.clone(), ctx, peer, timeout).await?;
    let (read, write) = tokio::io::split(tls_stream);
    Some((
        StreamSource::new(Either::Right(read)),
        StreamSink::new(Either::Right(TlsWriteHalf { write, socket })),
    ))
}

/// The writing half of a TLS stream, with the socket under it, whose send
/// queue pacing reads.
#[derive(Debug)]
pub struct TlsWriteHalf {
    write: WriteHalf<TlsStream<SharedTcp>>,
    socket: Arc<TcpStream>,
}

impl AsyncWrite for TlsWriteHalf {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // close_notify, then the socket's FIN.
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}

impl SendQueueProbe for TlsWriteHalf {
    fn send_queue(&self) -> Option<SendQueue> {
        self.socket.send_queue()
    }
}

impl<L: SendQueueProbe, R: SendQueueProbe> SendQueueProbe for Either<L, R> {
    fn send_queue(&self) -> Option<SendQueue> {
        match self {
            Either::Left(l) => l.send_queue(),
            Either::Right(r) => r.send_queue(),
        }
    }
}
