//! The driver: the one task that does a client's I/O. It owns the
//! transport and runs the core (see `relais-client-core`): it opens and
//! closes connections when the core says so, feeds it what it reads, writes
//! what it has to send, and wakes it at its deadlines. The async client runs
//! it on the caller's runtime; the blocking client on a hidden thread of its
//! own.
//!
//! A write is one more thing the driver waits on, never a wait of its own:
//! while a batch is being written (the server may be slow to take it, or
//! gone), the driver still reads, keeps its deadlines (so a dead link is
//! found by keepalive, whatever the kernel's TCP timeout) and hears a close.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use relais_client_core::{Action, ConnectError, Disconnect};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::shared::Shared;
use crate::transport::{Stream, Target};

/// Bytes asked of the transport per read.
const READ_CHUNK: usize = 16 * 1024;

/// A batch buffer that grew past this (a burst of large payloads) is freed
/// after use rather than kept for the life of the client.
const BATCH_RETAIN_LIMIT: usize = 1024 * 1024;

/// How long ending a connection may take (TLS writes its `close_notify`).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(500);

type Writer = WriteHalf<Box<dyn Stream>>;

/// A batch being written: gives back the write half and the buffer.
type Writing = Pin<Box<dyn Future<Output = (Writer, BytesMut, io::Result<()>)> + Send>>;

/// The time, from tokio's clock (which tests may pause), as the core takes
/// it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Runs the client until it is closed for good.
pub(crate) async fn drive(shared: Arc<Shared>, target: Target) {
    // If the driver ends any other way (a panic), its waiters still wake.
    let _guard = Finished(Arc::clone(&shared));
    let mut read: Option<ReadHalf<Box<dyn Stream>>> = None;
    let mut write: Option<Writer> = None;
    let mut writing: Option<Writing> = None;
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut batch = BytesMut::new();
    loop {
        let (action, deadline, finished) = {
            let mut core = shared.core();
            // While a batch is in flight the frames wait in the core, and
            // go out together in the next one.
            if writing.is_none() {
                core.poll_transmit(&mut batch);
            }
            (core.poll_action(), core.poll_timeout(), core.is_finished())
        };
        match action {
            Some(Action::Connect { deadline }) => {
                (read, write, writing) = (None, None, None);
                batch.clear();
                if let Some(stream) = open(&shared, &target, deadline).await {
                    let (r, w) = tokio::io::split(stream);
                    (read, write) = (Some(r), Some(w));
                }
                continue;
            }
            Some(Action::Disconnect) => {
                read = None;
                writing = None;
                batch.clear();
                if let Some(mut w) = write.take() {
                    // Our last frames (a goodbye) are written; a failed or
                    // slow shutdown changes nothing now.
                    let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, w.shutdown()).await;
                }
                continue;
            }
            None => {}
        }
        if finished {
            break;
        }
        if writing.is_none() && !batch.is_empty() {
            if let Some(mut w) = write.take() {
                let mut out = std::mem::take(&mut batch);
                writing = Some(Box::pin(async move {
                    // `flush`: TLS holds records until asked.
                    let result = match w.write_all(&out).await {
                        Ok(()) => w.flush().await,
                        Err(e) => Err(e),
                    };
                    out.clear();
                    (w, out, result)
                }));
            }
        }
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let reading = async {
            match read.as_mut() {
                Some(r) => r.read(&mut chunk).await,
                None => std::future::pending().await,
            }
        };
        let written = async {
            match writing.as_mut() {
                Some(w) => w.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = reading => shared.with_core(|core| match r {
                Ok(0) => core.handle_eof(now()),
                Ok(n) => core.handle_input(&chunk[..n], now()),
                Err(e) => core.io_failed(e, now()),
            }),
            (w, out, result) = written => {
                writing = None;
                write = Some(w);
                batch = if out.capacity() > BATCH_RETAIN_LIMIT { BytesMut::new() } else { out };
                if let Err(e) = result {
                    shared.with_core(|core| core.io_failed(e, now()));
                }
            }
            () = sleep => shared.with_core(|core| core.handle_timeout(now())),
            () = shared.wake_driver.notified() => {}
        }
    }
}

/// Opens a transport by `deadline`, telling the core how it went; `None`
/// if it failed, or if the client was closed meanwhile (the attempt is
/// then abandoned).
async fn open(shared: &Shared, target: &Target, deadline: Instant) -> Option<Box<dyn Stream>> {
    let open = tokio::time::timeout_at(deadline.into(), target.open());
    tokio::pin!(open);
    let opened = loop {
        tokio::select! {
            opened = &mut open => break opened,
            () = shared.wake_driver.notified() => {
                // Sends only queue; a close abandons the attempt.
                if shared.core().status().is_some() {
                    return None;
                }
            }
        }
    };
    shared.with_core(|core| match opened {
        Ok(Ok(stream)) => {
            core.connected(now());
            Some(stream)
        }
        Ok(Err(e)) => {
            core.connect_failed(e, now());
            None
        }
        Err(_) => {
            core.connect_failed(ConnectError::Timeout, now());
            None
        }
    })
}

/// Tells the handles the driver is gone, however it ends.
struct Finished(Arc<Shared>);

impl Drop for Finished {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.end(Disconnect::ConnectionLost(
                "the relais client's I/O task panicked".into(),
            ));
        }
        self.0.driver_finished();
    }
}
