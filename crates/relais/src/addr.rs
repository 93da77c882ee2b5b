//! Server addresses: what `connect` resolves, and the host name TLS checks
//! the server's certificate against.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, ToSocketAddrs};

/// An address to connect to: anything [`ToSocketAddrs`] takes (`"host:port"`,
/// a [`SocketAddr`], `("host", port)`, ...), which can also tell its host,
/// the name a TLS connection verifies the server's certificate against
/// (see [`TlsOptions`](crate::TlsOptions)).
pub trait ServerAddr: ToSocketAddrs {
    /// The host part: a DNS name or an IP address, without the port.
    fn host(&self) -> Option<String>;
}

/// The host of `"host:port"`, `"[v6]:port"`, or a bare host.
fn host_of(addr: &str) -> Option<String> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => addr,
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then(|| host.to_owned())
}

impl ServerAddr for str {
    fn host(&self) -> Option<String> {
        host_of(self)
    }
}

impl ServerAddr for String {
    fn host(&self) -> Option<String> {
        host_of(self)
    }
}

impl ServerAddr for &[SocketAddr] {
    fn host(&self) -> Option<String> {
        self.first().map(|a| a.ip().to_string())
    }
}

impl<T: ServerAddr + ?Sized> ServerAddr for &T {
    fn host(&self) -> Option<String> {
        (**self).host()
    }
}

/// Socket addresses: the host is the IP address.
macro_rules! host_is_ip {
    ($($t:ty),*) => {$(
        impl ServerAddr for $t {
            fn host(&self) -> Option<String> {
                Some(self.ip().to_string())
            }
        }
    )*};
}
host_is_ip!(SocketAddr, SocketAddrV4, SocketAddrV6);

/// `(host, port)` pairs: the host is the first element.
macro_rules! host_is_first {
    ($($t:ty),*) => {$(
        impl ServerAddr for ($t, u16) {
            fn host(&self) -> Option<String> {
                Some(self.0.to_string())
            }
        }
    )*};
}
host_is_first!(&str, String, IpAddr, Ipv4Addr, Ipv6Addr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(
            "relais.example.org:7777".host().as_deref(),
            Some("relais.example.org")
        );
        assert_eq!("127.0.0.1:7777".host().as_deref(), Some("127.0.0.1"));
        assert_eq!("[::1]:7777".host().as_deref(), Some("::1"));
        assert_eq!("localhost".host().as_deref(), Some("localhost"));
        assert_eq!(String::from("a.b:1").host().as_deref(), Some("a.b"));
        assert_eq!(("a.b", 1).host().as_deref(), Some("a.b"));
        let v6: SocketAddr = "[::1]:5".parse().unwrap();
        assert_eq!(v6.host().as_deref(), Some("::1"));
        assert_eq!([v6].as_slice().host().as_deref(), Some("::1"));
        assert_eq!(":7777".host(), None);
    }
}
