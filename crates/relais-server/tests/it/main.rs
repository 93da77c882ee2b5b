//! Integration tests: the real server on 127.0.0.1:0, driven by real clients.
//! One binary with a module per area keeps link time down.

mod client_library;
mod hardening;
mod limits;
mod metrics;
mod pacing;
mod reconnect;
mod relay;
mod resume;
mod rooms;
mod support;
mod tls;
mod tokens;
mod websocket;
