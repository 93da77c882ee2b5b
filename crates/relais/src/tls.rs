//! TLS for the blocking client (rustls, `ring` provider).
//!
//! The two worker threads share one `rustls::ClientConnection` behind a
//! mutex, each with its own clone of the socket:
//!
//! - the **reader** blocks in `read()` on its socket *without* the lock,
//!   then takes it only to feed the bytes to rustls (`read_tls`,
//!   `process_new_packets`) and take the plaintext out;
//! - the **writer** takes it to encrypt a batch and collect the TLS records,
//!   then writes them to its socket *without* the lock.
//!
//! Only the writer ever writes to the socket, so records go out in the order
//! rustls made them. When reading makes rustls want to send something of its
//! own (a key update reply), the reader asks the writer to flush
//! ([`Transport::wants_flush`](crate::transport::Transport::wants_flush)).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::builder::io_error;
use crate::error::ConnectError;
use crate::shared::lock;
use crate::worker::READ_CHUNK;

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

/// Runs the TLS handshake on a connected socket, before `deadline`.
/// `host` is the address's host part, the server name unless the options
/// give one.
pub(crate) fn connect(
    mut socket: TcpStream,
    options: &TlsOptions,
    host: Option<String>,
    deadline: Instant,
) -> Result<TlsStream, ConnectError> {
    let config = options.client_config()?;
    let name = options.server_name.clone().or(host).ok_or_else(|| {
        ConnectError::Tls(
            "no server name to verify the certificate against: give one with \
             TlsOptions::server_name"
                .into(),
        )
    })?;
    let server_name = ServerName::try_from(name.clone())
        .map_err(|_| ConnectError::Tls(format!("{name:?} is not a valid server name")))?;
    let mut conn = ClientConnection::new(config, server_name)
        .map_err(|e| ConnectError::Tls(format!("cannot start a TLS session: {}", describe(&e))))?;
    while conn.is_handshaking() || conn.wants_write() {
        let left = crate::builder::remaining(deadline)?;
        socket.set_read_timeout(Some(left))?;
        socket.set_write_timeout(Some(left))?;
        if let Err(e) = conn.complete_io(&mut socket) {
            return Err(handshake_error(e));
        }
    }
    Ok(TlsStream {
        conn: Arc::new(Mutex::new(conn)),
        socket,
        incoming: Vec::new(),
        fed: 0,
        outgoing: Vec::new(),
    })
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
        _ => io_error(e),
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

/// One thread's end of a TLS connection: its own socket clone, the shared
/// rustls session. See the module documentation for the locking.
pub(crate) struct TlsStream {
    conn: Arc<Mutex<ClientConnection>>,
    socket: TcpStream,
    /// Ciphertext read from the socket; `incoming[fed..]` is not yet given
    /// to rustls.
    incoming: Vec<u8>,
    fed: usize,
    /// Records to write, collected under the lock, written without it.
    outgoing: Vec<u8>,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl TlsStream {
    /// Another end on the same session, over a clone of the socket.
    pub(crate) fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            conn: Arc::clone(&self.conn),
            socket: self.socket.try_clone()?,
            incoming: Vec::new(),
            fed: 0,
            outgoing: Vec::new(),
        })
    }

    /// The socket under the session.
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// Whether rustls has records of its own waiting to be written.
    pub(crate) fn wants_flush(&self) -> bool {
        lock(&self.conn).wants_write()
    }

    /// Sends `close_notify`, then ends our direction of the socket.
    pub(crate) fn shutdown_write(&mut self) -> io::Result<()> {
        lock(&self.conn).send_close_notify();
        self.flush()?;
        self.socket.shutdown(std::net::Shutdown::Write)
    }

    /// Moves everything rustls has to send into `outgoing`; under the lock.
    fn collect_records(conn: &mut ClientConnection, outgoing: &mut Vec<u8>) -> io::Result<()> {
        while conn.wants_write() {
            conn.write_tls(outgoing)?;
        }
        Ok(())
    }

    /// Writes `outgoing` to the socket; without the lock.
    fn send_records(&mut self) -> io::Result<()> {
        let result = self.socket.write_all(&self.outgoing);
        self.outgoing.clear();
        result
    }
}

impl Read for TlsStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            {
                let mut conn = lock(&self.conn);
                match conn.reader().read(out) {
                    // Ok(0): the server's close_notify, a clean end.
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if self.fed < self.incoming.len() {
                    self.fed += conn.read_tls(&mut &self.incoming[self.fed..])?;
                    conn.process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    continue;
                }
            }
            // Everything read so far is decrypted and taken: wait for more,
            // without the lock, so the writer can encrypt meanwhile.
            self.incoming.resize(READ_CHUNK, 0);
            self.fed = 0;
            let n = match self.socket.read(&mut self.incoming) {
                Ok(n) => n,
                Err(e) => {
                    self.incoming.clear();
                    return Err(e);
                }
            };
            self.incoming.truncate(n);
            if n == 0 {
                // End of stream: rustls tells a clean close (after
                // close_notify: `Ok(0)`) from a truncation (an error).
                let mut conn = lock(&self.conn);
                conn.read_tls(&mut &[][..])?;
                conn.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                return conn.reader().read(out);
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = {
            let mut conn = lock(&self.conn);
            // Takes at most rustls's buffer limit (64 KiB); `write_all` loops.
            let n = conn.writer().write(buf)?;
            Self::collect_records(&mut conn, &mut self.outgoing)?;
            n
        };
        self.send_records()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Self::collect_records(&mut lock(&self.conn), &mut self.outgoing)?;
        self.send_records()
    }
}
