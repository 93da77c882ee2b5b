//! Which web pages may open a WebSocket to the server.
//!
//! A browser tells the server, in the upgrade request's `Origin` header,
//! which page (`scheme://host[:port]`) opens the connection; any page on the
//! web can try. With an [`AllowedOrigins`] list the server upgrades only
//! requests whose `Origin` is in it (compared case-insensitively, a default
//! port — 80 for http, 443 for https — the same as none) and answers the
//! others `403 Forbidden`. A request without `Origin` (a native client, or
//! a page that hides it) is refused too: native clients use the TCP port.

use std::fmt;

/// The origins allowed to open WebSockets, e.g. `https://game.example`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOrigins {
    /// Normalised: lower case, no default port.
    origins: Vec<String>,
}

/// Why an allowed-origins entry was refused (a start-up error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// The list is empty: no page could connect, which is what leaving the
    /// WebSocket port closed is for.
    #[error("the allowed-origins list is empty")]
    Empty,
    /// An entry is not `http://host[:port]` or `https://host[:port]`.
    #[error("allowed origin {origin:?} is not http(s)://host[:port] ({why})")]
    Invalid {
        /// The entry.
        origin: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl AllowedOrigins {
    /// The list, each entry `http://host[:port]` or `https://host[:port]`
    /// with no path, not even `/`.
    pub fn new<S: AsRef<str>>(origins: impl IntoIterator<Item = S>) -> Result<Self, OriginError> {
        let origins = origins
            .into_iter()
            .map(|o| {
                let o = o.as_ref().trim();
                normalise(o).map_err(|why| OriginError::Invalid {
                    origin: o.to_string(),
                    why,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if origins.is_empty() {
            return Err(OriginError::Empty);
        }
        Ok(Self { origins })
    }

    /// Whether a request with this `Origin` header (none: `None`) may
    /// upgrade.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        origin
            .and_then(|o| normalise(o).ok())
            .is_some_and(|o| self.origins.contains(&o))
    }
}

impl fmt::Display for AllowedOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origins.join(", "))
    }
}

/// `scheme://host[:port]` in lower case without a default port, or what is
/// wrong with it.
fn normalise(origin: &str) -> Result<String, &'static str> {
    let lower = origin.to_ascii_lowercase();
    let (scheme, authority) = lower.split_once("://").ok_or("no scheme://")?;
    let default_port = match scheme {
        "http" => "80",
        "https" => "443",
        _ => return Err("the scheme must be http or https"),
    };
    if authority.is_empty() {
        return Err("no host");
    }
    if authority.contains(['/', '?', '#']) {
        return Err("no path, query or fragment, not even a trailing /");
    }
    if authority.contains('@') || authority.contains(|c: char| c.is_whitespace()) {
        return Err("no user or spaces");
    }
    // The port follows the last ':' unless that is inside an IPv6 `[...]`.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    if host.is_empty() {
        return Err("no host");
    }
    match port {
        None => Ok(format!("{scheme}://{host}")),
        Some(port) if port.parse::<u16>().is_err() || port.starts_with('+') => {
            Err("the port must be a number up to 65535")
        }
        Some(port) if port == default_port => Ok(format!("{scheme}://{host}")),
        Some(port) => Ok(format!("{scheme}://{host}:{port}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_up_to_case_and_default_ports() {
        let list = AllowedOrigins::new([
            "https://game.example",
            "http://localhost:8080",
            "https://[::1]:8443",
        ])
        .unwrap();
        for ok in [
            "https://game.example",
            "HTTPS://Game.Example",
            "https://game.example:443",
            "http://localhost:8080",
            "https://[::1]:8443",
        ] {
            assert!(list.allows(Some(ok)), "{ok}");
        }
        for refused in [
            "http://game.example",
            "https://game.example:8443",
            "https://evil.game.example",
            "https://game.example.evil",
            "https://game.example/",
            "http://localhost",
            "http://localhost:8081",
            "null",
            "",
        ] {
            assert!(!list.allows(Some(refused)), "{refused}");
        }
        assert!(!list.allows(None));
        assert_eq!(
            list.to_string(),
            "https://game.example, http://localhost:8080, https://[::1]:8443"
        );
    }

    #[test]
    fn bad_entries_are_start_up_errors() {
        assert_eq!(
            AllowedOrigins::new(Vec::<String>::new()),
            Err(OriginError::Empty)
        );
        for bad in [
            "game.example",
            "ftp://game.example",
            "https://",
            "https://game.example/",
            "https://game.example/play",
            "https://user@game.example",
            "https://game.example:http",
            "https://game.example:65536",
            "https://:443",
            "null",
        ] {
            assert!(
                matches!(AllowedOrigins::new([bad]), Err(OriginError::Invalid { .. })),
                "{bad}"
            );
        }
        // An entry with the default port is the same origin as without.
        let list = AllowedOrigins::new([" https://game.example:443 "]).unwrap();
        assert!(list.allows(Some("https://game.example")));
    }
}
