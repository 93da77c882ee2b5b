//! The sending policy over a simulated slow link, under a paused clock: a
//! recipient whose link drains slower than its room sends gets fresh state
//! when the server paces it, where a fixed buffer in front of the same link
//! (no pacing) hands it seconds-old state.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use relais_protocol::ServerFrame;
use relais_server::pacing::SendQueue;
use relais_server::tcp::{SendQueueProbe, StreamSink, StreamSource};
use relais_server::Config;
use tokio::io::{AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

use crate::support::*;

/// The server's end of a link that carries `rate` bytes per millisecond and
/// holds at most `buffer` bytes not yet carried (like a kernel send buffer).
struct SlowLink {
    state: Arc<Mutex<LinkState>>,
    /// Whether the link tells the server what it holds (a real TCP socket
    /// does); without it the server cannot pace.
    probe: bool,
}

#[derive(Default)]
struct LinkState {
    queue: VecDeque<u8>,
    carried: u64,
    buffer: usize,
    closed: bool,
    writer: Option<Waker>,
}

impl SlowLink {
    /// The link, and the task that carries its bytes to `to` (the client's
    /// end of a pipe).
    fn new(rate: usize, buffer: usize, probe: bool, mut to: DuplexStream) -> Self {
        let state = Arc::new(Mutex::new(LinkState {
            buffer,
            ..LinkState::default()
        }));
        let pump = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            loop {
                tick.tick().await;
                let (chunk, done) = {
                    let mut st = pump.lock().unwrap();
                    let n = rate.min(st.queue.len());
                    let chunk: Vec<u8> = st.queue.drain(..n).collect();
                    st.carried += n as u64;
                    if let Some(w) = st.writer.take() {
                        w.wake();
                    }
                    (chunk, st.closed && st.queue.is_empty())
                };
                if to.write_all(&chunk).await.is_err() || done {
                    return;
                }
            }
        });
        Self { state, probe }
    }
}

impl AsyncWrite for SlowLink {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.state.lock().unwrap();
        let room = st.buffer.saturating_sub(st.queue.len());
        if room == 0 {
            st.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(buf.len());
        st.queue.extend(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.state.lock().unwrap().closed = true;
        Poll::Ready(Ok(()))
    }
}

impl SendQueueProbe for SlowLink {
    fn send_queue(&self) -> Option<SendQueue> {
        let st = self.state.lock().unwrap();
        self.probe.then(|| SendQueue {
            queued: st.queue.len() as u64,
            acked: st.carried,
            min_rtt: Duration::ZERO,
        })
    }
}

/// State ages (ms) seen by a reader behind a 40 kB/s link, in a room of 20
/// senders × 60 Hz × 64 B (~86 kB/s of `MESSAGE` frames), over the last 3 s
/// of a 6 s run.
async fn ages_behind_slow_link(paced: bool) -> Vec<u64> {
    let sim = Sim::new(Config::default());
    let start = Instant::now();

    // The reader: requests over a plain pipe, answers over the slow link.
    let (up_client, up_server) = tokio::io::duplex(64 * 1024);
    let (down_client, down_server) = tokio::io::duplex(1 << 20);
    let link = SlowLink::new(40, 64 * 1024, paced, down_server);
    sim.serve(StreamSource::new(up_server), StreamSink::new(link));
    let mut reader = Raw::over(tokio::io::join(down_client, up_client));
    reader.hello("reader", "", false).await.expect("welcome");

    for i in 0..20u32 {
        let mut sender = sim.join(&format!("s{i}"), false).await;
        tokio::spawn(async move {
            // Spread the senders over the 60 Hz period.
            tokio::time::sleep(Duration::from_micros(u64::from(i) * 16_666 / 20)).await;
            let mut tick = tokio::time::interval(Duration::from_micros(16_666));
            while start.elapsed() < Duration::from_secs(6) {
                tick.tick().await;
                let sent_ms = start.elapsed().as_millis() as u32;
                if !sender.try_data(seq_payload(sent_ms, 64)).await {
                    return;
                }
                // Senders drain what the room relays to them (echo is off,
                // but they receive the others).
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::ZERO, sender.next_unchecked()).await
                {
                }
            }
        });
    }

    let mut ages = Vec::new();
    while start.elapsed() < Duration::from_secs(6) {
        match reader.next_within(Duration::from_secs(10)).await {
            Some(ServerFrame::Message { payload, .. }) => {
                let now = start.elapsed().as_millis() as u64;
                if now >= 3000 {
                    ages.push(now - u64::from(seq_of(&payload)));
                }
            }
            Some(_) => {}
            None => panic!("the reader was disconnected"),
        }
    }
    sim.shutdown.cancel();
    ages.sort_unstable();
    ages
}

fn quantile(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

#[tokio::test(start_paused = true)]
async fn a_slow_link_gets_fresh_state_not_a_backlog() {
    let paced = ages_behind_slow_link(true).await;
    let fixed = ages_behind_slow_link(false).await;
    let (p50, p99) = (quantile(&paced, 0.5), quantile(&paced, 0.99));
    let fixed_p50 = quantile(&fixed, 0.5);
    eprintln!(
        "paced: {} messages, age p50 {p50} ms, p99 {p99} ms; fixed buffer: {} messages, age p50 {fixed_p50} ms",
        paced.len(),
        fixed.len()
    );
    // The link carries ~550 frames a second: the reader keeps getting
    // messages (about 1,600 in 3 s), each at most a few link-batches old.
    assert!(paced.len() > 1000, "{} messages", paced.len());
    assert!(p99 <= 150, "paced state age p99 {p99} ms");
    // Behind a 64 KiB buffer draining at 40 kB/s, state is ~1.6 s old.
    assert!(
        fixed_p50 >= 1000,
        "fixed-buffer state age p50 {fixed_p50} ms"
    );
}
