//! The driver: the one task that does a client's I/O. It owns the
//! transport and runs the core (see `relais-client-core`): it opens and
//! closes connections when the core says so, feeds it what it reads, writes
//! what it has to send, and wakes it at its deadlines. The async client runs
//! it on the caller's runtime; the blocking client on a hidden thread of its
//! own.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use relais_client_core::{Action, ConnectError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::shared::Shared;
use crate::transport::{Stream, Target};

/// Bytes asked of the transport per read.
const READ_CHUNK: usize = 16 * 1024;

/// A batch buffer that grew past this (a burst of large payloads) is freed
/// after use rather than kept for the life of the client.
const BATCH_RETAIN_LIMIT: usize = 1024 * 1024;

/// Runs the client until it is closed for good.
pub(crate) async fn drive(shared: Arc<Shared>, target: Target) {
    let mut stream: Option<Box<dyn Stream>> = None;
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut batch = BytesMut::new();
    loop {
        let (action, deadline, finished) = {
            let mut core = shared.core();
            batch.clear();
            core.poll_transmit(&mut batch);
            shared.deliver(&mut core);
            (core.poll_action(), core.poll_timeout(), core.is_finished())
        };
        match action {
            Some(Action::Connect { deadline }) => {
                stream = None;
                let open = tokio::time::timeout_at(deadline.into(), target.open());
                tokio::pin!(open);
                // A close meanwhile abandons the attempt (sends only queue).
                let opened = loop {
                    tokio::select! {
                        opened = &mut open => break Some(opened),
                        () = shared.wake_driver.notified() => {
                            if shared.core().status().is_some() {
                                break None;
                            }
                        }
                    }
                };
                let Some(opened) = opened else {
                    continue;
                };
                let mut core = shared.core();
                match opened {
                    Ok(Ok(s)) => {
                        stream = Some(s);
                        core.connected(Instant::now());
                    }
                    Ok(Err(e)) => core.connect_failed(e, Instant::now()),
                    Err(_) => core.connect_failed(ConnectError::Timeout, Instant::now()),
                }
                continue;
            }
            Some(Action::Disconnect) => {
                if let Some(mut s) = stream.take() {
                    // Our last frames (a goodbye) are already written;
                    // a shutdown error changes nothing now.
                    let _ = s.shutdown().await;
                }
                continue;
            }
            None => {}
        }
        if finished {
            break;
        }
        if let (Some(s), false) = (stream.as_mut(), batch.is_empty()) {
            // `flush`: TLS holds records until asked.
            if let Err(e) = write(s, &batch).await {
                shared.core().io_failed(e, Instant::now());
            }
            if batch.capacity() > BATCH_RETAIN_LIMIT {
                batch = BytesMut::new();
            }
            continue;
        }
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let read = async {
            match stream.as_mut() {
                Some(s) => s.read(&mut chunk).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = read => {
                let mut core = shared.core();
                let now = Instant::now();
                match r {
                    Ok(0) => core.handle_eof(now),
                    Ok(n) => core.handle_input(&chunk[..n], now),
                    Err(e) => core.io_failed(e, now),
                }
            }
            () = sleep => shared.core().handle_timeout(Instant::now()),
            () = shared.wake_driver.notified() => {}
        }
    }
    drop(stream);
    shared.driver_finished();
}

async fn write(s: &mut Box<dyn Stream>, batch: &[u8]) -> std::io::Result<()> {
    s.write_all(batch).await?;
    s.flush().await
}
