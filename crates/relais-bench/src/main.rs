//! `relais-bench`: the load generator's command line. One run per
//! invocation; a table on stdout, or one JSON object with `--json`.
//!
//! ```text
//! relais-bench --system relais --addr 127.0.0.1:7777 --clients 100 --rate 60 \
//!              --payload 64 --duration 10 --server-pid 1234 --json
//! ```
//!
//! A cluster run spreads the clients over the nodes, round-robin, and sums
//! the nodes' CPU (the NATS server's is reported apart):
//!
//! ```text
//! relais-bench --servers 127.0.0.1:7777,127.0.0.1:7787 -n 100 -d 5 \
//!              --server-pid 1234,1235 --nats-pid 1233 --json
//! ```
//!
//! A slow-link run is two processes given the same start time: the senders
//! (a normal run) and, on the far side of the throttled link, one reader:
//!
//! ```text
//! T=$(date +%s.%N | awk '{printf "%.3f", $1 + 2}')
//! relais-bench --addr 10.200.7.1:7777 -n 20 -d 20 --start-at $T --json &
//! ip netns exec NS relais-bench --role reader --addr 10.200.7.1:7777 -n 20 -d 20 \
//!              --start-at $T --window 12 --link-kbit 500 --json
//! ```

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use relais_bench::{nodes, Role, Stall, System, Workload};

/// Simulates N clients in one room of a relay (relais, NATS or Redis
/// pub/sub), each sending a P-byte payload at R Hz for D seconds and reading
/// everything; reports deliveries, throughput, latency and server CPU.
/// Expected deliveries are N×N×R×D: the echo is on, so each client also
/// receives its own messages.
#[derive(Debug, Parser)]
#[command(name = "relais-bench", version)]
struct Args {
    /// The system under test.
    #[arg(long, default_value = "relais")]
    system: System,
    /// The server's address (host:port).
    #[arg(long, default_value = "127.0.0.1:7777")]
    addr: String,
    /// Several servers (the nodes of a cluster), comma-separated host:port:
    /// client i connects to the (i mod k)-th, and the report splits latency
    /// into same-node and cross-node pairs. Replaces --addr.
    #[arg(long)]
    servers: Option<String>,
    /// Number of clients (N).
    #[arg(long, short = 'n', default_value_t = 10)]
    clients: usize,
    /// Messages per second per client (R).
    #[arg(long, short = 'r', default_value_t = 60)]
    rate: u32,
    /// Payload size in bytes (P), at least 20.
    #[arg(long, short = 'p', default_value_t = 64)]
    payload: usize,
    /// Measured duration in seconds (D).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured warm-up before it, in seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// After the last send, how long to keep reading, in ms.
    #[arg(long, default_value_t = 500)]
    drain_ms: u64,
    /// Room (relais) or subject/channel (NATS, Redis).
    #[arg(long, default_value = "bench")]
    room: String,
    /// The server's process id, to report its CPU time (/proc/PID/stat);
    /// several (comma-separated or repeated) for a cluster's nodes: their
    /// CPU is summed, and each reported.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// The NATS server's process id in a cluster run: its CPU is reported
    /// apart from the nodes'.
    #[arg(long)]
    nats_pid: Option<u32>,
    /// A round number copied into the report (to pair runs of one round).
    #[arg(long)]
    round: Option<u32>,
    /// Slow consumer: this client stops reading for --stall-secs.
    #[arg(long)]
    stall_client: Option<usize>,
    /// How long the stalled client reads nothing, in seconds.
    #[arg(long, default_value_t = 5.0)]
    stall_secs: f64,
    /// When the stall starts, in seconds into the measured window.
    #[arg(long, default_value_t = 1.0)]
    stall_at: f64,
    /// A tag copied into the report (e.g. matrix, overload).
    #[arg(long, default_value = "")]
    label: String,
    /// What the clients do: `all` (alias `senders`): N clients each send and
    /// read everything; `reader`: one client that only reads, from N senders
    /// at R Hz run by another process (see --start-at), and reports the
    /// state age of what it reads.
    #[arg(long, default_value = "all")]
    role: Role,
    /// When the first message is due, in seconds since the UNIX epoch
    /// (decimals allowed), so that a senders process and a reader process
    /// follow one schedule. Default: right after connecting.
    #[arg(long)]
    start_at: Option<f64>,
    /// Reader: measure the state age over the last this many seconds of the
    /// measured window. Default: its last 60 %.
    #[arg(long)]
    window: Option<f64>,
    /// The constrained link's rate in kbit/s, copied into the report.
    #[arg(long)]
    link_kbit: Option<u64>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

fn secs(s: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("invalid {what}: {s}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let workload = Workload {
        clients: args.clients,
        rate_hz: args.rate,
        payload_bytes: args.payload,
        duration: secs(args.duration, "--duration")?,
        warmup: secs(args.warmup, "--warmup")?,
        drain: Duration::from_millis(args.drain_ms),
        room: args.room,
        stall: args
            .stall_client
            .map(|client| -> anyhow::Result<Stall> {
                Ok(Stall {
                    client,
                    at: secs(args.stall_at, "--stall-at")?,
                    duration: secs(args.stall_secs, "--stall-secs")?,
                })
            })
            .transpose()?,
        server_pids: args.server_pid,
        nats_pid: args.nats_pid,
        round: args.round,
        label: args.label,
        role: args.role,
        start_at_unix_ns: args
            .start_at
            .map(|t| secs(t, "--start-at").map(|d| d.as_nanos() as u64))
            .transpose()?,
        window: args.window.map(|s| secs(s, "--window")).transpose()?,
        link_kbit: args.link_kbit,
    };
    let servers = match &args.servers {
        Some(list) => {
            nodes::parse_servers(list).map_err(|e| anyhow::anyhow!("invalid --servers: {e}"))?
        }
        None => vec![args.addr.clone()],
    };
    let report = relais_bench::run_on(args.system, &servers, &workload).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}
