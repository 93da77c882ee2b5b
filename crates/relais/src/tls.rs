//! TLS for the clients (rustls with the `ring` provider, driven by
//! tokio-rustls): the options, the trust roots, and errors in words a user
//! can act on.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use relais_client_core::ConnectError;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How to connect with TLS: which certificate authorities to trust and which
/// name the server's certificate must carry. Given to
/// [`ClientBuilder::tls`](crate::ClientBuilder::tls) and
/// [`list_rooms_tls`](crate::list_rooms_tls).
///
/// ```no_run
/// use relais::{Client, TlsOptions};
///
/// // A public server: verified against the system's trusted roots, as
/// // `relais.example.org`.
/// let client = Client::builder("alice")
///     .tls(TlsOptions::new())
///     .connect("relais.example.org:7777")?;
/// // A server with a certificate from your own CA.
/// let client = Client::builder("bob")
///     .tls(TlsOptions::new().ca_file("ca.pem"))
///     .connect("10.0.0.5:7777")?;
/// # Ok::<(), relais::ConnectError>(())
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct TlsOptions {
    roots: Roots,
    server_name: Option<String>,
}

#[derive(Clone, Default)]
enum Roots {
    /// The operating system's trust store.
    #[default]
    System,
    /// CA certificates in a PEM file.
    File(PathBuf),
    /// CA certificates as PEM bytes.
    Pem(Vec<u8>),
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let roots = match &self.roots {
            Roots::System => "system".to_string(),
            Roots::File(path) => path.display().to_string(),
            Roots::Pem(pem) => format!("{} bytes of PEM", pem.len()),
        };
        f.debug_struct("TlsOptions")
            .field("roots", &roots)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsOptions {
    /// TLS verified against the operating system's trusted root
    /// certificates, for the host named in the address given to `connect`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the CA certificates in this PEM file instead of the system's.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.roots = Roots::File(path.into());
        self
    }

    /// Trusts these CA certificates (PEM) instead of the system's.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.roots = Roots::Pem(pem.into());
        self
    }

    /// The name (DNS name or IP address) the server's certificate must
    /// carry. Without it, the host part of the address given to `connect`
    /// (`"relais.example.org:7777"` → `relais.example.org`).
    pub fn server_name(mut self, name: &str) -> Self {
        self.server_name = Some(name.to_owned());
        self
    }

    /// The rustls configuration: the trusted roots, no client certificate.
    fn client_config(&self) -> Result<Arc<ClientConfig>, ConnectError> {
        let mut roots = RootCertStore::empty();
        match &self.roots {
            Roots::System => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _ignored) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                    return Err(ConnectError::Tls(format!(
                        "no trusted root certificates found on this system ({}); \
                         give a CA file instead",
                        errors.join("; ")
                    )));
                }
            }
            Roots::File(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    ConnectError::Tls(format!("cannot read CA file {}: {e}", path.display()))
                })?;
                add_pem(&mut roots, &pem, &path.display().to_string())?;
            }
            Roots::Pem(pem) => add_pem(&mut roots, pem, "the CA PEM")?,
        }
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| ConnectError::Tls(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// Adds every certificate of a PEM text to `roots`.
fn add_pem(roots: &mut RootCertStore, pem: &[u8], what: &str) -> Result<(), ConnectError> {
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| ConnectError::Tls(format!("{what} is not valid PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| ConnectError::Tls(format!("{what}: unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ConnectError::Tls(format!(
            "{what} holds no certificate (PEM \"CERTIFICATE\")"
        )));
    }
    Ok(())
}

/// TLS as a client will use it on every (re)connect: the configuration
/// (trust roots read once) and the server name to verify.
#[derive(Clone)]
pub(crate) struct TlsSetup {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSetup")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsSetup {
    /// Reads the trust roots and settles the server name: `host`, the
    /// address's host part, unless the options give one.
    pub(crate) fn new(options: &TlsOptions, host: Option<&str>) -> Result<Self, ConnectError> {
        let config = options.client_config()?;
        let name = options
            .server_name
            .clone()
            .or(host.map(str::to_owned))
            .ok_or_else(|| {
                ConnectError::Tls(
                    "no server name to verify the certificate against: give one with \
                     TlsOptions::server_name"
                        .into(),
                )
            })?;
        let server_name = ServerName::try_from(name.clone())
            .map_err(|_| ConnectError::Tls(format!("{name:?} is not a valid server name")))?;
        Ok(Self {
            connector: TlsConnector::from(config),
            server_name,
        })
    }

    /// Runs the TLS handshake on a connected socket.
    pub(crate) async fn connect(
        &self,
        socket: TcpStream,
    ) -> Result<TlsStream<TcpStream>, ConnectError> {
        self.connector
            .connect(self.server_name.clone(), socket)
            .await
            .map_err(handshake_error)
    }
}

/// A handshake I/O error as the connect error it stands for.
fn handshake_error(e: io::Error) -> ConnectError {
    if let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        return ConnectError::Tls(describe(tls));
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => ConnectError::Tls(
            "the server closed the connection during the TLS handshake \
             (does it speak TLS on this port?)"
                .into(),
        ),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ConnectError::Timeout,
        _ => ConnectError::Io(e),
    }
}

/// A rustls error in words a user can act on.
fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(_) => format!(
            "the server's certificate is not trusted ({e}): check the CA and the server name"
        ),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("the server does not speak TLS on this port ({e})")
        }
        _ => e.to_string(),
    }
}
