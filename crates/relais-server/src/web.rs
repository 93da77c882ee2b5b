//! The HTTP side of the WebSocket listener: reading a request head (bounded
//! in size and time), telling an upgrade from a plain request, and answering
//! plain requests with the pages built into the binary.
//!
//! This is deliberately not an HTTP server: one request per connection, no
//! bodies, `Connection: close` on every answer. Browsers load the demo with
//! a few requests (the page, its script, style and icon, `relais.js`) and
//! then open a WebSocket.
//!
//! The demo page is served with a strict Content-Security-Policy
//! ([`content_security_policy`]): scripts, styles and images from this origin
//! only (the page has no inline script or style), connections to this origin
//! and its `ws://`/`wss://` form, no frames, no plugins, no `<base>`.

use std::borrow::Cow;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::session::LINGER;
use crate::ws::HttpPages;

/// The demo page, served at `/` by `relais serve --web`.
pub const DEMO_PAGE: &str = include_str!("../../../web/index.html");
/// The browser client module, served at `/relais.js`.
pub const CLIENT_JS: &str = include_str!("../../../web/relais.js");
/// Its TypeScript declarations, served at `/relais.d.ts`.
pub const CLIENT_DTS: &str = include_str!("../../../web/relais.d.ts");
/// The demo page's script, served at `/demo.js`.
pub const DEMO_JS: &str = include_str!("../../../web/demo.js");
/// The demo page's style sheet, served at `/demo.css`.
pub const DEMO_CSS: &str = include_str!("../../../web/demo.css");
/// The icon, served at `/favicon.svg` (and `/favicon.ico`, where browsers
/// look when a page names none).
pub const FAVICON: &str = include_str!("../../../web/favicon.svg");

/// Largest request head accepted (request line and headers).
const MAX_HEAD: usize = 8 * 1024;
/// Most headers in a request head.
const MAX_HEADERS: usize = 48;

/// A request head, classified.
#[derive(Debug)]
pub(crate) enum Request {
    /// A valid WebSocket upgrade (`GET`, `Upgrade: websocket`, version 13).
    Upgrade {
        /// The client's `Sec-WebSocket-Key`.
        key: String,
        /// The `Origin` header: the page that opens the socket, if a
        /// browser's.
        origin: Option<String>,
        /// Bytes the client sent after the head (already WebSocket frames).
        leftover: Vec<u8>,
    },
    /// Any other `GET` or `HEAD`.
    Plain {
        /// `true` for `HEAD`: answer without a body.
        head: bool,
        /// The path, without the query string.
        path: String,
        /// The `Host` header, if any.
        host: Option<String>,
    },
}

/// A plain HTTP answer.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    reason: &'static str,
    content_type: &'static str,
    extra_headers: Cow<'static, str>,
    body: Cow<'static, str>,
    head_only: bool,
}

impl Response {
    /// A plain-text answer.
    pub fn text(status: u16, reason: &'static str, body: &'static str) -> Self {
        Self::new(status, reason, "text/plain; charset=utf-8", body.into())
    }

    /// An answer with `body`.
    pub fn new(
        status: u16,
        reason: &'static str,
        content_type: &'static str,
        body: Cow<'static, str>,
    ) -> Self {
        Self {
            status,
            reason,
            content_type,
            extra_headers: "".into(),
            body,
            head_only: false,
        }
    }

    /// The same answer without its body (for `HEAD`).
    pub fn head_only(self, head_only: bool) -> Self {
        Self { head_only, ..self }
    }

    pub fn server_full() -> Self {
        Self::text(503, "Service Unavailable", "relais: server full\n")
    }

    /// The answer to an upgrade from an origin not in the allowed list.
    pub fn forbidden_origin(origin: Option<&str>) -> Self {
        let body = match origin {
            None => "relais: this WebSocket port requires an Origin header from an allowed page\n",
            Some(_) => "relais: this page's origin may not open a WebSocket here\n",
        };
        Self::text(403, "Forbidden", body)
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n\
             Connection: close\r\n{}\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len(),
            self.extra_headers,
        )
        .into_bytes();
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// Reads one request head within `timeout`. An error is the answer to send
/// (400, 405, 408, 426, 431).
pub(crate) async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<Request, Response> {
    match tokio::time::timeout(timeout, read_head(stream)).await {
        Ok(r) => r,
        Err(_) => Err(Response::text(
            408,
            "Request Timeout",
            "relais: request head not received in time\n",
        )),
    }
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Request, Response> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        // Read at most up to the cap: a head that does not fit is refused.
        let room = MAX_HEAD - buf.len();
        let mut chunk = (&mut *stream).take(room as u64);
        let n = chunk.read_buf(&mut buf).await.map_err(|_| bad_request())?;
        if n == 0 {
            return Err(bad_request());
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => return classify(&request, &buf[len..]),
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                return Err(Response::text(
                    431,
                    "Request Header Fields Too Large",
                    "relais: request head too large\n",
                ))
            }
            Err(_) => return Err(bad_request()),
        }
    }
}

fn bad_request() -> Response {
    Response::text(400, "Bad Request", "relais: malformed HTTP request\n")
}

fn header<'a>(request: &'a httparse::Request<'_, '_>, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::trim)
}

fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

fn classify(request: &httparse::Request<'_, '_>, rest: &[u8]) -> Result<Request, Response> {
    let method = request.method.unwrap_or_default();
    let path = request.path.unwrap_or("/");
    let path = path.split('?').next().unwrap_or("/").to_string();
    let upgrade = has_token(header(request, "upgrade"), "websocket");
    if upgrade {
        if method != "GET" || !has_token(header(request, "connection"), "upgrade") {
            return Err(bad_request());
        }
        if header(request, "sec-websocket-version") != Some("13") {
            return Err(Response {
                extra_headers: "Sec-WebSocket-Version: 13\r\n".into(),
                ..Response::text(
                    426,
                    "Upgrade Required",
                    "relais: WebSocket version 13 only\n",
                )
            });
        }
        let Some(key) = header(request, "sec-websocket-key").filter(|k| !k.is_empty()) else {
            return Err(bad_request());
        };
        return Ok(Request::Upgrade {
            key: key.to_string(),
            origin: header(request, "origin").map(str::to_string),
            leftover: rest.to_vec(),
        });
    }
    let host = header(request, "host").map(str::to_string);
    match method {
        "GET" => Ok(Request::Plain {
            head: false,
            path,
            host,
        }),
        "HEAD" => Ok(Request::Plain {
            head: true,
            path,
            host,
        }),
        _ => Err(Response {
            extra_headers: "Allow: GET, HEAD\r\n".into(),
            ..Response::text(
                405,
                "Method Not Allowed",
                "relais: only GET and WebSocket upgrades\n",
            )
        }),
    }
}

/// The Content-Security-Policy of the demo page, for a request whose `Host`
/// header is `host`. `'self'` covers the page's own origin, and in browsers
/// that follow CSP level 3 also its `ws:`/`wss:` form; the page's WebSocket
/// endpoint is named explicitly too when `host` is a plain `host[:port]`
/// (anything else is left out rather than copied into a header).
pub fn content_security_policy(host: Option<&str>) -> String {
    let plain = |h: &str| {
        !h.is_empty()
            && h.len() <= 261
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    };
    let sockets = match host.filter(|h| plain(h)) {
        Some(h) => format!(" ws://{h} wss://{h}"),
        None => String::new(),
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'{sockets}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// The answer to a plain `GET`/`HEAD` of `path`; `host` is the request's
/// `Host` header (for the page's Content-Security-Policy).
pub(crate) fn page(pages: HttpPages, path: &str, head_only: bool, host: Option<&str>) -> Response {
    let found =
        |content_type, body: &'static str| Response::new(200, "OK", content_type, body.into());
    let response = match (pages, path) {
        (HttpPages::Demo, "/" | "/index.html") => Response {
            extra_headers: format!(
                "Content-Security-Policy: {}\r\nReferrer-Policy: no-referrer\r\n",
                content_security_policy(host)
            )
            .into(),
            ..found("text/html; charset=utf-8", DEMO_PAGE)
        },
        (HttpPages::Demo, "/relais.js") => found("text/javascript; charset=utf-8", CLIENT_JS),
        (HttpPages::Demo, "/relais.d.ts") => found("text/plain; charset=utf-8", CLIENT_DTS),
        (HttpPages::Demo, "/demo.js") => found("text/javascript; charset=utf-8", DEMO_JS),
        (HttpPages::Demo, "/demo.css") => found("text/css; charset=utf-8", DEMO_CSS),
        (HttpPages::Demo, "/favicon.svg" | "/favicon.ico") => found("image/svg+xml", FAVICON),
        (HttpPages::None, _) => Response::text(
            404,
            "Not Found",
            "relais: this port speaks WebSocket (one binary message per protocol frame, \
             see PROTOCOL.md); `relais serve --web` also serves a demo page here\n",
        ),
        (HttpPages::Demo, _) => Response::text(404, "Not Found", "relais: no such page\n"),
    };
    response.head_only(head_only)
}

/// Writes `response`, ends our direction, and reads what the client still
/// sends (discarded) until it closes or [`LINGER`] passes.
pub(crate) async fn respond<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, response: Response) {
    if stream.write_all(&response.bytes()).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(LINGER, async {
        let mut scratch = [0u8; 4096];
        while let Ok(n) = stream.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
