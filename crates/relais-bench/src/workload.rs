//! What a run does: which system, how many clients, how fast, how long.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::payload::HEADER_LEN;

/// The system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// A relais server, spoken to over raw TCP.
    Relais,
    /// A NATS server (core pub/sub, no JetStream).
    Nats,
    /// A Redis server (pub/sub).
    Redis,
}

impl System {
    /// Every system, in the order reports list them.
    pub const ALL: [System; 3] = [System::Relais, System::Nats, System::Redis];

    /// The lowercase name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Relais => "relais",
            Self::Nats => "nats",
            Self::Redis => "redis",
        }
    }

    /// Whether messages missing at the end are conflated by design (relais:
    /// latest wins) rather than lost or still queued (the peers).
    pub fn conflates(self) -> bool {
        self == Self::Relais
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for System {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "relais" => Ok(Self::Relais),
            "nats" => Ok(Self::Nats),
            "redis" => Ok(Self::Redis),
            other => Err(format!(
                "unknown system {other:?} (expected relais, nats or redis)"
            )),
        }
    }
}

/// What the clients of one generator process do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// N clients each send at R Hz and read everything (the normal run; the
    /// senders' side of a slow-link run).
    #[default]
    All,
    /// One client that joins the room (NATS, Redis: subscribes) and only
    /// reads, expecting N senders at R Hz in another process: the
    /// constrained client of a slow-link run. It reports the state age of
    /// what it reads (see [`crate::ReaderReport`]).
    Reader,
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" | "senders" => Ok(Self::All),
            "reader" => Ok(Self::Reader),
            other => Err(format!(
                "unknown role {other:?} (expected all, senders or reader)"
            )),
        }
    }
}

/// One client stops reading for a while, then resumes (the slow-consumer
/// scenario). It keeps sending all along, as a game whose render loop froze
/// but whose network thread did not would.
#[derive(Debug, Clone, PartialEq)]
pub struct Stall {
    /// Index of the stalled client (0-based).
    pub client: usize,
    /// When the stall starts, counted from the start of the measured window.
    pub at: Duration,
    /// How long the client reads nothing.
    pub duration: Duration,
}

/// The workload of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Number of simulated clients (N), all in one room.
    pub clients: usize,
    /// Messages per second each client sends (R).
    pub rate_hz: u32,
    /// Size of each payload in bytes (P), at least [`HEADER_LEN`].
    pub payload_bytes: usize,
    /// Length of the measured window (D).
    pub duration: Duration,
    /// Sending before the measured window, not counted (connections warm,
    /// subscriptions settled, allocators grown).
    pub warmup: Duration,
    /// After the last send, how long receivers keep reading before counting.
    pub drain: Duration,
    /// The room (relais) or subject/channel (peers) all clients use.
    pub room: String,
    /// The slow-consumer scenario, if any.
    pub stall: Option<Stall>,
    /// The server's process ids, to measure its CPU time: one, or a
    /// cluster's nodes (their CPU is summed; each is also reported).
    pub server_pids: Vec<u32>,
    /// The NATS server's process id in a cluster run: its CPU is reported
    /// apart from the nodes'.
    pub nats_pid: Option<u32>,
    /// A round number copied into the report, so that runs of several
    /// setups made in one round can be paired (`bench/cluster.sh`).
    pub round: Option<u32>,
    /// A free-form tag copied into the report (e.g. `matrix`, `overload`).
    pub label: String,
    /// What this process's clients do.
    pub role: Role,
    /// When message 0 of client 0 is due, in ns since the UNIX epoch, so
    /// that two processes (senders and reader) follow one schedule. `None`:
    /// shortly after the clients have connected.
    pub start_at_unix_ns: Option<u64>,
    /// Reader: the state age is measured over deliveries received in the
    /// last `window` of the measured window. `None`: its last 60 %.
    pub window: Option<Duration>,
    /// The constrained link's rate in kbit/s, copied into the report
    /// (slow-link runs; the generator does not shape anything itself).
    pub link_kbit: Option<u64>,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            clients: 10,
            rate_hz: 60,
            payload_bytes: 64,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            drain: Duration::from_millis(500),
            room: "bench".into(),
            stall: None,
            server_pids: Vec::new(),
            nats_pid: None,
            round: None,
            label: String::new(),
            role: Role::All,
            start_at_unix_ns: None,
            window: None,
            link_kbit: None,
        }
    }
}

impl Workload {
    /// Nanoseconds between two sends of one client.
    pub fn period_ns(&self) -> u64 {
        1_000_000_000 / u64::from(self.rate_hz)
    }

    /// Messages each client sends during the warm-up.
    pub fn warmup_messages(&self) -> u64 {
        (self.warmup.as_secs_f64() * f64::from(self.rate_hz)).round() as u64
    }

    /// Messages each client sends during the measured window (R × D).
    pub fn measured_messages(&self) -> u64 {
        (self.duration.as_secs_f64() * f64::from(self.rate_hz)).round() as u64
    }

    /// Deliveries a lossless, conflation-free relay makes in the measured
    /// window: N × N × R × D (the echo is on, so each client receives its own
    /// messages as well).
    pub fn expected_deliveries(&self) -> u64 {
        let n = self.clients as u64;
        n * n * self.measured_messages()
    }

    /// The reader's state-age window: the last [`Workload::window`] of the
    /// measured window (default: its last 60 %).
    pub fn reader_window(&self) -> Duration {
        self.window.unwrap_or(self.duration.mul_f64(0.6))
    }

    /// Deliveries to the one reader of a reader run: N × R × D.
    pub fn reader_expected(&self) -> u64 {
        self.clients as u64 * self.measured_messages()
    }

    /// Checks the workload makes sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.clients == 0 {
            return Err("need at least one client".into());
        }
        if self.clients > relais_protocol::MAX_ROOM_MEMBERS {
            return Err(format!(
                "relais rooms hold at most {} members",
                relais_protocol::MAX_ROOM_MEMBERS
            ));
        }
        if self.rate_hz == 0 || self.rate_hz > 10_000 {
            return Err("rate must be between 1 and 10000 Hz".into());
        }
        if self.payload_bytes < HEADER_LEN || self.payload_bytes > relais_protocol::MAX_PAYLOAD {
            return Err(format!(
                "payload must be between {HEADER_LEN} and {} bytes",
                relais_protocol::MAX_PAYLOAD
            ));
        }
        if self.measured_messages() == 0 {
            return Err("duration too short for one message".into());
        }
        if self.role == Role::Reader {
            if self.stall.is_some() {
                return Err("a reader run has no stalled client".into());
            }
            let window = self.reader_window();
            if window.is_zero() || window > self.duration {
                return Err(format!(
                    "the reader's window ({window:?}) must be positive and within the measured window ({:?})",
                    self.duration
                ));
            }
        }
        if let Some(s) = &self.stall {
            if s.client >= self.clients {
                return Err(format!("stalled client {} does not exist", s.client));
            }
            if s.at + s.duration >= self.duration {
                return Err(format!(
                    "the stall ({:?} at {:?}) must end before the measured window ({:?}) does",
                    s.duration, s.at, self.duration
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_is_n_squared_r_d() {
        let w = Workload {
            clients: 3,
            rate_hz: 20,
            duration: Duration::from_secs(2),
            ..Workload::default()
        };
        assert_eq!(w.expected_deliveries(), 3 * 3 * 20 * 2);
        assert_eq!(w.period_ns(), 50_000_000);
    }

    #[test]
    fn stall_must_fit_in_the_window() {
        let mut w = Workload {
            duration: Duration::from_secs(5),
            ..Workload::default()
        };
        w.stall = Some(Stall {
            client: 0,
            at: Duration::from_secs(1),
            duration: Duration::from_secs(5),
        });
        assert!(w.validate().is_err());
        w.duration = Duration::from_secs(8);
        assert!(w.validate().is_ok());
    }

    #[test]
    fn reader_window_defaults_to_the_last_60_percent() {
        let mut w = Workload {
            duration: Duration::from_secs(20),
            role: Role::Reader,
            ..Workload::default()
        };
        assert_eq!(w.reader_window(), Duration::from_secs(12));
        assert!(w.validate().is_ok());
        w.window = Some(Duration::from_secs(21));
        assert!(w.validate().is_err());
        w.window = Some(Duration::from_secs(5));
        assert_eq!(w.reader_window(), Duration::from_secs(5));
        assert_eq!(w.reader_expected(), 10 * 60 * 20);
        assert_eq!("senders".parse::<Role>(), Ok(Role::All));
        assert_eq!("reader".parse::<Role>(), Ok(Role::Reader));
    }
}
