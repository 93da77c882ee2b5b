//! The operations listener (`relais serve --metrics-listen ADDR`), apart
//! from the client ports so that it can stay on a private address:
//!
//! - `GET /metrics`: every [metric](crate::metrics), OpenMetrics text;
//! - `GET /healthz`: `200` while the process serves at all;
//! - `GET /readyz`: `200` while the server accepts clients, `503` from the
//!   start of a shutdown (through its grace period) on, and on a cluster
//!   node while it cannot reach NATS.
//!
//! Like the WebSocket port's pages ([`crate::web`]) this is one request per
//! connection, `Connection: close`, heads bounded in size and time. At most
//! [`MAX_OPS_CONNECTIONS`] are served at once; past that a connection is
//! closed unanswered.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::info;

use crate::metrics;
use crate::web::{self, Request, Response};
use crate::ServerContext;

/// Most connections the operations listener serves at once.
pub const MAX_OPS_CONNECTIONS: usize = 32;

/// How long a connection to the operations listener has to send its
/// request head.
pub const OPS_HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `stop`
/// completes. Give it a `stop` that outlasts the server's shutdown, so that
/// `/readyz` answers `503` through the grace period.
pub async fn serve(listener: TcpListener, ctx: Arc<ServerContext>, stop: impl Future<Output = ()>) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "listening (metrics and health)");
    }
    let slots = Arc::new(Semaphore::new(MAX_OPS_CONNECTIONS));
    let accept = async {
        loop {
            let Ok((mut stream, _peer)) = listener.accept().await else {
                // Out of descriptors or similar: this listener is not worth
                // a busy loop; the clients' ports have their own backoff.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue; // Dropped: closed unanswered.
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let response = match web::read_request(&mut stream, OPS_HEAD_TIMEOUT).await {
                    Ok(Request::Plain { head, path, .. }) => answer(&ctx, &path).head_only(head),
                    Ok(Request::Upgrade { .. }) => not_found(),
                    Err(response) => response,
                };
                web::respond(stream, response).await;
                drop(slot);
            });
        }
    };
    tokio::select! {
        () = accept => {}
        () = stop => {}
    }
}

fn answer(ctx: &ServerContext, path: &str) -> Response {
    match path {
        "/metrics" => Response::new(
            200,
            "OK",
            metrics::CONTENT_TYPE,
            ctx.metrics.encode().into(),
        ),
        "/healthz" => Response::text(200, "OK", "ok\n"),
        "/readyz" if ctx.is_ready() => Response::text(200, "OK", "ready\n"),
        "/readyz" if ctx.shutdown.is_cancelled() => {
            Response::text(503, "Service Unavailable", "shutting down\n")
        }
        "/readyz" => Response::text(503, "Service Unavailable", "cluster unavailable\n"),
        _ => not_found(),
    }
}

fn not_found() -> Response {
    Response::text(
        404,
        "Not Found",
        "relais: this port serves /metrics, /healthz and /readyz\n",
    )
}
