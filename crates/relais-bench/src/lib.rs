//! relais-bench: one process simulating N clients of a relay, to measure
//! relais and its peers (NATS core pub/sub, Redis pub/sub) on the same
//! workload with the same measurement.
//!
//! # The workload
//!
//! N clients join one room. Each sends a P-byte payload at R Hz for D
//! seconds (after an unmeasured warm-up) and reads everything the room
//! relays. The echo is on: a client receives its own messages too, as a NATS
//! or Redis subscriber of the subject it publishes to does. So every message
//! is delivered to N recipients and the expected number of deliveries is
//! **N × N × R × D** (N senders × R·D messages each × N recipients).
//!
//! Each payload carries its sender's index, a sequence number and the time
//! it was handed to the client library, in nanoseconds since the UNIX epoch
//! on a clock common to all simulated clients, and to generator processes on
//! the same host (this process's monotonic clock anchored to the wall clock:
//! [`payload::Clock`]), then zero padding up to P bytes (see [`payload`]). Every delivery thus gives one
//! end-to-end latency sample. Deliveries are counted for messages whose
//! sequence number falls in the measured window, whenever they arrive before
//! the end of the drain, so warm-up traffic never counts.
//!
//! # Slow link: two processes
//!
//! `bench/slowlink.sh` splits a run over two processes on either side of a
//! throttled link: the N senders (`--role all`, the normal run) and one
//! client that only reads (`--role reader`), both started with the same
//! `--start-at` so they follow one schedule. The reader reports the state
//! age of the updates it reads ([`ReaderReport`]).
//!
//! # Cluster: several addresses
//!
//! `--servers A,B` spreads the clients over the nodes of a relais cluster
//! (client `i` on address `i mod k`, [`nodes`]); the report then splits
//! latency and deliveries into same-node and cross-node pairs, sums the
//! nodes' CPU (`--server-pid A_PID,B_PID`) and reports the NATS server's
//! (`--nats-pid`) apart ([`ClusterReport`]). `bench/cluster.sh` runs it.
//!
//! # Layout
//!
//! - [`workload`]: what to run ([`Workload`], [`Stall`], [`System`], [`Role`]).
//! - [`payload`]: the payload's byte layout.
//! - [`nodes`]: which client connects to which of several addresses.
//! - [`adapters`]: one adapter per system, all behind the same
//!   [`adapters::Adapter`] trait, each speaking its system's wire protocol
//!   over tokio TCP (relais with `relais-protocol`).
//! - [`runner`]: connects the clients, runs the send and receive loops,
//!   samples CPU, merges the histograms: [`run`].
//! - [`report`]: the result of a run ([`Report`]), its table and JSON forms.
//! - [`cpu`]: CPU time of a process from `/proc/PID/stat`.
//! - [`render`]: `BENCHMARKS.md` and the plot from a directory of JSON reports
//!   (used by the `relais-bench-report` binary); [`render_cluster`] its
//!   "Cluster" section.

pub mod adapters;
pub mod cpu;
pub mod nodes;
pub mod payload;
pub mod render;
pub mod render_cluster;
pub mod report;
pub mod runner;
pub mod workload;

pub use report::{ClusterReport, Latency, PairReport, ReaderReport, Report, StallReport};
pub use runner::{run, run_on};
pub use workload::{Role, Stall, System, Workload};
