//! What the kernel knows about a TCP connection's send side, read with
//! `getsockopt(TCP_INFO)`: the one place in relais that needs `unsafe`.
//!
//! No maintained crate exposes `TCP_INFO` without generating bindings at
//! build time (`tcp-info-sys` needs libclang); `libc` already defines the
//! struct, so this is one system call into a zeroed `libc::tcp_info`. The
//! kernel copies at most the size we pass and fields it does not know stay
//! zero, which the callers read as "unknown".

use std::io;
use std::os::fd::AsRawFd;
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
    /// zero if unknown.
    pub min_rtt: Duration,
}

/// Reads the send queue of a connected TCP socket.
pub fn send_queue(socket: &impl AsRawFd) -> io::Result<SendQueue> {
    let info = tcp_info(socket.as_raw_fd())?;
    // `tcpi_bytes_sent` counts retransmissions too (Linux ≥ 4.19; zero
    // before, where the unacknowledged packet count is the fallback).
    let in_flight = if info.tcpi_bytes_sent > 0 {
        let first_sends = info.tcpi_bytes_sent.saturating_sub(info.tcpi_bytes_retrans);
        first_sends.saturating_sub(info.tcpi_bytes_acked)
    } else {
        u64::from(info.tcpi_unacked) * u64::from(info.tcpi_snd_mss)
    };
    Ok(SendQueue {
        queued: u64::from(info.tcpi_notsent_bytes) + in_flight,
        acked: info.tcpi_bytes_acked,
        min_rtt: Duration::from_micros(u64::from(info.tcpi_min_rtt)),
    })
}

#[allow(unsafe_code)]
fn tcp_info(fd: std::os::fd::RawFd) -> io::Result<libc::tcp_info> {
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
            Ok(info)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
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
