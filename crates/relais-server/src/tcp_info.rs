//! What the kernel knows about a TCP connection's send side, read with
//! `getsockopt(TCP_INFO)`: the one place in relais that needs `unsafe`.
//!
//! No maintained crate exposes `TCP_INFO` without generating bindings at
//! build time (`tcp-info-sys` needs libclang); `libc` already defines the
//! struct, so this is one system call into a zeroed `libc::tcp_info`. The
//! kernel reports how much of it it wrote: a kernel too old to fill every
//! field pacing reads (Linux < 4.6) gives "unsupported", as other systems
//! do, and such connections are simply not paced.

use std::io;
use std::time::Duration;

/// A connection's send queue as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SendQueue {
    /// Bytes written by the application and not yet acknowledged by the
    /// peer: never sent (`tcpi_notsent_bytes`) plus in flight.
    pub queued: u64,
    /// Bytes acknowledged by the peer since the connection opened
    /// (`tcpi_bytes_acked`): its growth is what the link really carried.
    pub acked: u64,
    /// The lowest round-trip time seen on the connection (`tcpi_min_rtt`),
    /// zero before the first sample.
    pub min_rtt: Duration,
}

/// Reads the send queue of a connected TCP socket. Fails with
/// [`io::ErrorKind::Unsupported`] where the kernel does not report what
/// pacing needs (not Linux, or Linux before 4.6), which leaves the
/// connection unpaced.
#[cfg(target_os = "linux")]
pub fn send_queue(socket: &impl std::os::fd::AsRawFd) -> io::Result<SendQueue> {
    let (info, len) = tcp_info(socket.as_raw_fd())?;
    // Every field read below, up to `tcpi_min_rtt` (Linux 4.6), must have
    // been written by the kernel; an older kernel writes less.
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_min_rtt) + 4;
    if len < needed {
        return Err(io::ErrorKind::Unsupported.into());
    }
    // `tcpi_bytes_sent` counts retransmissions too (Linux ≥ 4.19; zero
    // before, where the unacknowledged packet count is the fallback).
    let in_flight = if info.tcpi_bytes_sent > 0 {
        let first_sends = info.tcpi_bytes_sent.saturating_sub(info.tcpi_bytes_retrans);
        first_sends.saturating_sub(info.tcpi_bytes_acked)
    } else {
        u64::from(info.tcpi_unacked) * u64::from(info.tcpi_snd_mss)
    };
    // Before its first sample the kernel reports the minimum RTT as ~0U.
    let min_rtt = match info.tcpi_min_rtt {
        u32::MAX => Duration::ZERO,
        us => Duration::from_micros(u64::from(us)),
    };
    Ok(SendQueue {
        queued: u64::from(info.tcpi_notsent_bytes) + in_flight,
        acked: info.tcpi_bytes_acked,
        min_rtt,
    })
}

/// Elsewhere the kernel's send queue is not read: connections are unpaced.
#[cfg(not(target_os = "linux"))]
pub fn send_queue<T>(_socket: &T) -> io::Result<SendQueue> {
    Err(io::ErrorKind::Unsupported.into())
}

/// `getsockopt(TCP_INFO)`: the struct and how many bytes the kernel wrote.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn tcp_info(fd: std::os::fd::RawFd) -> io::Result<(libc::tcp_info, usize)> {
    // SAFETY: `tcp_info` is plain integers, for which all zeroes is a valid
    // value; `getsockopt` writes at most `len` bytes into it and `fd` is an
    // open socket borrowed for the duration of the call.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let r = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        if r == 0 {
            Ok((info, len as usize))
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn counts_what_the_peer_acknowledged() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let before = send_queue(&server).unwrap();
        assert_eq!((before.queued, before.acked), (0, 0));
        // The handshake gave the kernel its first round-trip sample.
        assert!(before.min_rtt < Duration::from_secs(1), "{before:?}");
        server.write_all(&[7u8; 1000]).unwrap();
        let mut got = [0u8; 1000];
        client.read_exact(&mut got).unwrap();
        // The acknowledgement follows the data (possibly delayed by the
        // receiver): poll for it, for at most two seconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut after = send_queue(&server).unwrap();
        while after.acked < 1000 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
            after = send_queue(&server).unwrap();
        }
        assert_eq!((after.queued, after.acked), (0, 1000));
    }
}
