//! The byte stream under the frames: the TCP socket itself, or TLS over it.
//! The handshake and both worker threads read and write through this.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};

use crate::tls::TlsStream;

/// One thread's end of a connection.
#[derive(Debug)]
pub(crate) enum Transport {
    /// Frames straight on the socket.
    Plain(TcpStream),
    /// Frames inside TLS records.
    Tls(TlsStream),
}

impl Transport {
    /// Another end of the same connection, for another thread.
    pub(crate) fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            Self::Plain(s) => Self::Plain(s.try_clone()?),
            Self::Tls(s) => Self::Tls(s.try_clone()?),
        })
    }

    /// The TCP socket underneath (timeouts, shutdown).
    pub(crate) fn socket(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.socket(),
        }
    }

    /// Whether the TLS layer has records of its own to send (after reading
    /// a key update): the reader then asks the writer to flush.
    pub(crate) fn wants_flush(&self) -> bool {
        match self {
            Self::Plain(_) => false,
            Self::Tls(s) => s.wants_flush(),
        }
    }

    /// Ends our direction once everything is written (TLS: `close_notify`
    /// first).
    pub(crate) fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.shutdown(Shutdown::Write),
            Self::Tls(s) => s.shutdown_write(),
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}
