//! `relais serve --cluster`: several relais nodes sharing rooms through a
//! real NATS server behave as one server (issue 13). Each test starts its
//! own `nats-server` (with JetStream, on a free loopback port, its store in
//! a temporary directory) and its own nodes, and drives them with the Rust
//! client (`relais::Client`) or, where it must control reading byte for
//! byte (a reader that stalls, the exact presence sequence), a raw protocol
//! client.
//!
//! It needs Debian's `nats-server` package (/usr/sbin/nats-server, or
//! `NATS_SERVER`), which `.ci/run` is to install (issue 13). Without it
//! these tests fail with what to install: they never pass without having
//! run NATS.
//!
//! Every wait is bounded by a deadline and ends on an event (a line, a
//! frame, an event); the only sleeps are the pauses of retry loops ("the
//! name is free again once the death is detected") and of paced senders,
//! and observation windows (once a cluster has settled after NATS came
//! back, a node was cut off or one stopped: a second in which no further
//! presence change may come). The clusters run one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use relais::{Bytes, Client, CloseReason, ConnectError, Event, RefuseReason};
use relais_protocol::{ClientFrame, Hello, ServerFrame, Welcome, LENGTH_PREFIX_LEN, VERSION};

mod common;
use common::{last_word, Proc, PATIENCE};

/// A dead node's members are reported gone within this (issue 13:
/// heartbeats every 500 ms, a node unheard for 2 s is dead).
const DEATH_REPORTED_WITHIN: Duration = Duration::from_secs(3);

/// How long nodes may take to get NATS back after it restarts and to
/// resynchronise (async-nats reconnects with a backoff of a few seconds).
const RECOVERY: Duration = Duration::from_secs(15);

/// Between two attempts of a retry loop.
const RETRY: Duration = Duration::from_millis(50);

/// Every node's flags besides `--cluster`: the per-address limits lifted
/// (every test client comes from 127.0.0.1), no inbound rate limit (the
/// tests send as fast as they like), and no resumable seats (a lost
/// connection is a leave at once, as the tests expect).
const NODE_FLAGS: &[&str] = &[
    "--max-connections-per-ip",
    "0",
    "--max-handshakes-per-ip",
    "0",
    "--max-joins-per-ip",
    "0",
    "--max-message-rate",
    "1000000",
    "--message-burst",
    "1000000",
    "--resume-grace",
    "0",
];

// ---------------------------------------------------------------------------
// NATS

/// Debian's nats-server (`NATS_SERVER` overrides where), or a failure
/// saying what to install.
fn nats_server_binary() -> String {
    if let Ok(binary) = std::env::var("NATS_SERVER") {
        assert!(
            Path::new(&binary).exists(),
            "NATS_SERVER={binary}: no such file"
        );
        return binary;
    }
    // Debian installs it in /usr/sbin; /usr/bin for other layouts.
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!(
                "these tests need nats-server: `apt-get install nats-server` \
                 (Debian's package, /usr/sbin/nats-server; .ci/run is to do it), \
                 or NATS_SERVER=/path/to/nats-server"
            )
        })
        .to_owned()
}

/// A nats-server of our own, with JetStream, on loopback: stopped and
/// started again on the same port with the same store directory, as an
/// operator restarts it.
struct Nats {
    binary: String,
    proc: Option<Proc>,
    port: u16,
    /// Its JetStream store (`-sd`); declared after `proc`, so removed once
    /// the process is killed.
    dir: tempfile::TempDir,
}

/// What became of a nats-server start.
enum Launch {
    Ready(Proc),
    /// It exited before it was ready; its output.
    Exited(String),
}

impl Nats {
    /// Starts one on a port the kernel picks (`-p -1`: it logs the port).
    fn start() -> Self {
        let binary = nats_server_binary();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let proc = match Self::launch(&binary, "-1", dir.path()) {
            Launch::Ready(proc) => proc,
            Launch::Exited(log) => panic!("nats-server did not start\n{log}"),
        };
        let line = proc
            .log()
            .lines()
            .find(|l| l.contains("Listening for client connections on"))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("nats-server gave no client port\n{}", proc.log()));
        let port = last_word(&line)
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Self {
            binary,
            proc: Some(proc),
            port,
            dir,
        }
    }

    /// Runs nats-server on `port` with its store in `dir`, and waits for
    /// "Server is ready" on its log (stderr) or for its exit.
    fn launch(binary: &str, port: &str, dir: &Path) -> Launch {
        let proc = Proc::spawn(
            "nats-server",
            Command::new(binary)
                .args(["-js", "-a", "127.0.0.1", "-p", port, "-sd"])
                .arg(dir),
        );
        loop {
            match proc.stderr.recv_timeout(PATIENCE) {
                Ok(line) if line.contains("Server is ready") => return Launch::Ready(proc),
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => return Launch::Exited(proc.log()),
                Err(e) => panic!("nats-server not ready ({e:?})\n{}", proc.log()),
            }
        }
    }

    /// The URL nodes connect to.
    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn is_running(&self) -> bool {
        self.proc.is_some()
    }

    /// SIGKILL, as a crash or an operator's `kill -9` does; returns once it
    /// is gone (its port is free).
    fn stop(&mut self) {
        let mut proc = self.proc.take().expect("nats-server is running");
        proc.child.kill().expect("kill nats-server");
        proc.child.wait().expect("wait for nats-server");
    }

    /// Starts it again on the same port with the same store. Should the
    /// port still be held (a socket of the old process lingering), it tries
    /// again for a few seconds.
    fn start_again(&mut self) {
        assert!(self.proc.is_none(), "nats-server is already running");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Self::launch(&self.binary, &self.port.to_string(), self.dir.path()) {
                Launch::Ready(proc) => {
                    self.proc = Some(proc);
                    return;
                }
                Launch::Exited(log)
                    if log.contains("address already in use") && Instant::now() < deadline =>
                {
                    thread::sleep(Duration::from_millis(200))
                }
                Launch::Exited(log) => panic!("nats-server did not start again\n{log}"),
            }
        }
    }

    fn log(&self) -> String {
        self.proc
            .as_ref()
            .map_or_else(|| "(nats-server stopped)".into(), Proc::log)
    }
}

// ---------------------------------------------------------------------------
// A cuttable link to NATS

/// A TCP forwarder on loopback between one node and NATS: a thread accepts,
/// and two threads per connection copy bytes each way. [`cut`](Self::cut)
/// closes both sides of every connection and closes each new one at once
/// (the node's reconnects fail) until [`restore`](Self::restore): the node
/// is cut off from NATS, while NATS and the other nodes are not.
struct Proxy {
    port: u16,
    state: Arc<Mutex<ProxyState>>,
    accepter: Option<thread::JoinHandle<()>>,
}

#[derive(Default)]
struct ProxyState {
    cut: bool,
    stopped: bool,
    /// Both sockets of every connection forwarded, to close on a cut.
    open: Vec<TcpStream>,
}

impl ProxyState {
    fn close_all(&mut self) {
        for s in self.open.drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Proxy {
    /// Forwards a port of its own to the NATS server on `upstream`.
    fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let accepter = thread::spawn({
            let state = state.clone();
            move || {
                for client in listener.incoming() {
                    let Ok(client) = client else { continue };
                    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
                    if lock().stopped {
                        return;
                    }
                    if lock().cut {
                        continue; // Dropped: closed at once.
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        continue;
                    };
                    let mut st = lock();
                    // Checked again with the connection registered under
                    // the same lock: a cut meanwhile closes it too.
                    if st.cut || st.stopped {
                        continue;
                    }
                    let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) else {
                        continue;
                    };
                    st.open.extend([c, s]);
                    drop(st);
                    for (from, to) in [(&client, &server), (&server, &client)] {
                        let _ = from.set_nodelay(true);
                        let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
                            continue;
                        };
                        thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            // One way ended: the whole connection ends.
                            let _ = from.shutdown(std::net::Shutdown::Both);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                }
            }
        });
        Self {
            port,
            state,
            accepter: Some(accepter),
        }
    }

    /// The URL a node behind it connects to.
    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn lock(&self) -> MutexGuard<'_, ProxyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes both sides of every connection, and each new one, until
    /// [`restore`](Self::restore).
    fn cut(&self) {
        let mut st = self.lock();
        st.cut = true;
        st.close_all();
    }

    /// Forwards new connections again.
    fn restore(&self) {
        self.lock().cut = false;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        {
            let mut st = self.lock();
            st.stopped = true;
            st.close_all();
        }
        // Wakes the accepting thread, which sees `stopped` and returns.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accepter) = self.accepter.take() {
            let _ = accepter.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Nodes and the cluster

/// A running `relais serve --cluster`.
struct Node {
    proc: Proc,
    /// Its TCP address for clients.
    addr: String,
    /// The id it printed (16 hex digits).
    id: String,
}

/// Starts a node; [`Node::ready`] waits for it (so that several start at
/// once: each listens one heartbeat period before it is ready).
fn spawn_node(nats_url: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "serve",
        "--cluster",
        nats_url,
        "--listen",
        "127.0.0.1:0",
        "--ws-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(NODE_FLAGS);
    args.extend_from_slice(extra);
    Proc::relais(&args, "info")
}

impl Node {
    /// Waits for `relais cluster node <id> via <url>`, then `relais
    /// listening on <addr>`, on its stdout.
    fn ready(proc: Proc, nats_url: &str) -> Self {
        let lines = proc.lines_until("stdout", "relais listening on");
        let cluster = lines
            .iter()
            .find(|l| l.starts_with("relais cluster node "))
            .unwrap_or_else(|| {
                panic!(
                    "no `relais cluster node` line before `listening on`\n{}",
                    proc.log()
                )
            });
        let words: Vec<&str> = cluster.split(' ').collect();
        let [_, _, _, id, via, url] = words[..] else {
            panic!("not `relais cluster node <id> via <url>`: {cluster:?}")
        };
        assert!(
            id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) && via == "via",
            "not `relais cluster node <16 hex digits> via <url>`: {cluster:?}"
        );
        assert_eq!(url, nats_url, "{cluster:?}");
        let addr = last_word(lines.last().unwrap()).to_owned();
        Self {
            id: id.to_owned(),
            addr,
            proc,
        }
    }
}

/// One cluster at a time: the tests measure failure detection (3 s) and
/// delivery latency, which a machine running several clusters of debug
/// builds at once (each node a few threads, 100 concurrent joins, 24 MB
/// streams) would blur.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A NATS server and relais nodes joined through it.
struct Cluster {
    /// `None` once killed.
    nodes: Vec<Option<Node>>,
    nats: Nats,
    /// Declared last: released once the processes are gone.
    _turn: MutexGuard<'static, ()>,
}

impl Cluster {
    fn start(nodes: usize) -> Self {
        Self::with_flags(nodes, &[])
    }

    /// `nodes` nodes, each started with `extra` flags too.
    fn with_flags(nodes: usize, extra: &[&str]) -> Self {
        // Another test's failure does not stop this one.
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let nats = Nats::start();
        let url = nats.url();
        let procs: Vec<Proc> = (0..nodes).map(|_| spawn_node(&url, extra)).collect();
        let nodes: Vec<Option<Node>> = procs
            .into_iter()
            .map(|p| Some(Node::ready(p, &url)))
            .collect();
        let ids: BTreeSet<&str> = nodes.iter().flatten().map(|n| n.id.as_str()).collect();
        assert_eq!(ids.len(), nodes.len(), "node ids are unique: {ids:?}");
        Self {
            nodes,
            nats,
            _turn: turn,
        }
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes[i]
            .as_ref()
            .unwrap_or_else(|| panic!("node {i} was killed"))
    }

    /// Node `i`'s TCP address for clients.
    fn node_addr(&self, i: usize) -> String {
        self.node(i).addr.clone()
    }

    /// SIGKILLs node `i` (no goodbye to anyone, no last word on NATS);
    /// returns the instant of the kill.
    fn kill_node(&mut self, i: usize) -> Instant {
        let mut node = self.nodes[i].take().expect("node is running");
        let killed = Instant::now();
        node.proc.child.kill().expect("SIGKILL the node");
        node.proc.child.wait().expect("wait for the node");
        killed
    }

    /// Kills nats-server (SIGKILL).
    fn stop_nats(&mut self) {
        self.nats.stop();
    }

    /// Starts nats-server again on its port, with its JetStream store.
    fn start_nats_again(&mut self) {
        self.nats.start_again();
    }

    /// Stops and starts nats-server.
    fn restart_nats(&mut self) {
        self.stop_nats();
        self.start_nats_again();
    }

    /// Starts one more node, joined through `nats_url` (NATS itself, or a
    /// [`Proxy`] to it), and waits until it is ready; its index.
    fn add_node(&mut self, nats_url: &str) -> usize {
        let node = Node::ready(spawn_node(nats_url, &[]), nats_url);
        assert!(
            self.nodes.iter().flatten().all(|n| n.id != node.id),
            "node ids are unique: {}",
            node.id
        );
        self.nodes.push(Some(node));
        self.nodes.len() - 1
    }

    /// SIGTERMs node `i`, as an operator's `kill` or systemd's stop does (a
    /// clean shutdown); returns the instant it was sent. The node stays in
    /// the list, for its log.
    fn terminate_node(&self, i: usize) -> Instant {
        let sent = Instant::now();
        self.node(i).proc.signal("TERM");
        sent
    }

    /// Waits until node `i`'s process has exited (its output closes), for
    /// at most `within`; its exit status.
    fn await_node_exit(&mut self, i: usize, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let node = self.nodes[i]
            .as_mut()
            .unwrap_or_else(|| panic!("node {i} was killed"));
        for rx in [&node.proc.stdout, &node.proc.stderr] {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(_) => {} // Kept in its log.
                    Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) => panic!(
                        "node {i} still running {within:?} later\n{}",
                        node.proc.log()
                    ),
                }
            }
        }
        node.proc.child.wait().expect("wait for the node")
    }
}

impl Drop for Cluster {
    /// On a failure, everything the processes said.
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.nats.log());
            for (i, node) in self.nodes.iter().enumerate() {
                match node {
                    Some(node) => eprintln!("node {i} ({}):\n{}", node.id, node.proc.log()),
                    None => eprintln!("node {i}: killed"),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Clients

/// Options every test client uses: no reconnecting (a lost connection must
/// show, not be papered over) and time for a busy cluster to answer.
fn builder(name: &str, room: &str) -> relais::ClientBuilder {
    Client::builder(name)
        .room(room)
        .reconnect_window(Duration::ZERO)
        .connect_timeout(PATIENCE)
}

/// Joins `room` on `addr` as `name` (echo off).
fn join(addr: &str, room: &str, name: &str) -> Client {
    builder(name, room)
        .echo(false)
        .connect(addr)
        .unwrap_or_else(|e| panic!("{name} cannot join {room} on {addr}: {e}"))
}

fn is_name_taken(e: &ConnectError) -> bool {
    matches!(
        e,
        ConnectError::Refused {
            reason: RefuseReason::NameTaken,
            ..
        }
    )
}

/// Joins `room` on `addr` as `name`, trying again while the name is still
/// taken (the claim of a member that left or died is released
/// asynchronously), for at most `within`.
fn claim_within(addr: &str, room: &str, name: &str, within: Duration) -> Client {
    let deadline = Instant::now() + within;
    loop {
        match builder(name, room).echo(false).connect(addr) {
            Ok(client) => return client,
            Err(e) if is_name_taken(&e) && Instant::now() < deadline => thread::sleep(RETRY),
            Err(e) => panic!("{name} cannot claim its name in {room} on {addr}: {e}"),
        }
    }
}

/// Asserts that `name` is refused "name taken" in `room` on `addr`.
fn assert_taken(addr: &str, room: &str, name: &str) {
    match builder(name, room).connect(addr) {
        Err(e) if is_name_taken(&e) => {}
        Err(e) => panic!("{name} on {addr}: refused, but not \"name taken\": {e}"),
        Ok(_) => panic!("{name} on {addr}: joined {room}, though the name is taken"),
    }
}

/// Takes `client`'s events until its member list is `expected` (sorted),
/// for at most `within`. Only presence is expected meanwhile.
fn await_members(client: &Client, expected: &[&str], within: Duration) {
    let expected: BTreeSet<&str> = expected.iter().copied().collect();
    let deadline = Instant::now() + within;
    loop {
        let members = client.members();
        if members.iter().map(String::as_str).collect::<BTreeSet<_>>() == expected {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match client.recv_event_timeout(left) {
            Ok(Event::Joined(_) | Event::Left { .. }) => {}
            Ok(other) => panic!("{}: unexpected {other:?} while waiting", client.name()),
            Err(e) => panic!(
                "{} sees {members:?}, not {expected:?}, after {within:?}: {e}",
                client.name()
            ),
        }
    }
}

/// A payload saying who sent it and its sequence number.
fn numbered(name: &str, seq: u32) -> String {
    format!("{name} {seq}")
}

/// The (name, seq) of a [`numbered`] payload.
fn parse_numbered(payload: &[u8]) -> (String, u32) {
    let text = std::str::from_utf8(payload).expect("a text payload");
    let (name, seq) = text
        .rsplit_once(' ')
        .unwrap_or_else(|| panic!("not `name seq`: {text:?}"));
    (name.to_owned(), seq.parse().expect("a sequence number"))
}

/// The node a test name lives on: its first letter (`a`, `b`, `c`).
fn node_of(name: &str) -> usize {
    usize::from(name.as_bytes()[0] - b'a')
}

// ---------------------------------------------------------------------------
// A raw protocol client, for what the library hides

/// What a raw client read.
#[derive(Debug)]
enum Next {
    Frame(ServerFrame),
    Timeout,
    Closed,
}

/// A blocking raw protocol client: the test decides when it reads.
struct Raw {
    name: String,
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects to `addr`; with `recv_buffer`, the socket's receive buffer
    /// is made that small first (so a client that stops reading stalls the
    /// server soon).
    fn connect(addr: &str, recv_buffer: Option<usize>) -> TcpStream {
        let addr: SocketAddr = addr.parse().expect("an address");
        let Some(size) = recv_buffer else {
            let stream = TcpStream::connect(addr).expect("connect");
            stream.set_nodelay(true).expect("TCP_NODELAY");
            return stream;
        };
        // std sets no receive buffer; tokio's socket does, before the
        // connect (a runtime of our own for that one connect).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("a runtime");
        let stream = runtime
            .block_on(async {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.set_recv_buffer_size(size as u32)?;
                socket.connect(addr).await?.into_std()
            })
            .expect("connect");
        stream.set_nonblocking(false).expect("blocking");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream
    }

    /// Joins, or returns the refusal.
    fn try_join(
        addr: &str,
        room: &str,
        name: &str,
        echo: bool,
        recv_buffer: Option<usize>,
    ) -> Result<(Self, Welcome), (RefuseReason, String)> {
        let mut raw = Self {
            name: name.to_owned(),
            stream: Self::connect(addr, recv_buffer),
            buf: Vec::new(),
        };
        raw.send(ClientFrame::Hello(Hello {
            version: VERSION,
            name: name.into(),
            room: room.into(),
            echo,
            token: None,
            resume: None,
        }));
        let deadline = Instant::now() + PATIENCE;
        match raw.next(deadline) {
            Next::Frame(ServerFrame::Welcome(w)) => Ok((raw, w)),
            Next::Frame(ServerFrame::Refused(reason, text)) => Err((reason, text)),
            other => panic!("{name} on {addr}: expected WELCOME or REFUSED, got {other:?}"),
        }
    }

    /// Joins; panics if refused.
    fn join(addr: &str, room: &str, name: &str, echo: bool) -> (Self, Welcome) {
        Self::try_join(addr, room, name, echo, None)
            .unwrap_or_else(|r| panic!("{name} cannot join {room} on {addr}: {r:?}"))
    }

    fn send(&mut self, frame: ClientFrame) {
        self.stream
            .write_all(&frame.to_bytes())
            .unwrap_or_else(|e| panic!("{}: write: {e}", self.name));
    }

    fn data(&mut self, payload: impl Into<Bytes>) {
        self.send(ClientFrame::Data(payload.into()));
    }

    /// Says goodbye and closes.
    fn leave(mut self) {
        self.send(ClientFrame::Goodbye(CloseReason::Normal, String::new()));
    }

    /// The next frame, waiting until `deadline` at most.
    fn next(&mut self, deadline: Instant) -> Next {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if self.buf.len() >= LENGTH_PREFIX_LEN {
                let len = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
                if self.buf.len() >= LENGTH_PREFIX_LEN + len {
                    let body: Vec<u8> = self
                        .buf
                        .drain(..LENGTH_PREFIX_LEN + len)
                        .skip(LENGTH_PREFIX_LEN)
                        .collect();
                    let frame = ServerFrame::decode(Bytes::from(body))
                        .unwrap_or_else(|e| panic!("{}: bad frame: {e}", self.name));
                    return Next::Frame(frame);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Next::Timeout;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => return Next::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Next::Timeout
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Next::Closed,
            }
        }
    }
}

/// A payload carrying a sequence number, then padding up to `size` bytes.
fn seq_payload(seq: u32, size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size.max(12)];
    v[..4].copy_from_slice(&seq.to_be_bytes());
    v
}

fn seq_of(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload[..4].try_into().unwrap())
}

/// A raw member that keeps the room's presence as its frames tell it, and
/// fails on a duplicate: a `JOINED` for someone present or a `LEFT` for
/// someone absent (so, per name, JOINED and LEFT alternate).
struct Observer {
    raw: Raw,
    present: BTreeSet<String>,
    /// Every presence event seen, `+name` or `-name (reason)`, for failure
    /// messages.
    history: Vec<String>,
}

impl Observer {
    fn join(addr: &str, room: &str, name: &str) -> Self {
        let (raw, welcome) = Raw::join(addr, room, name, false);
        Self::new(raw, welcome)
    }

    fn new(raw: Raw, welcome: Welcome) -> Self {
        let present: BTreeSet<String> = welcome.members.iter().cloned().collect();
        assert_eq!(
            present.len(),
            welcome.members.len(),
            "{}: duplicate names in WELCOME {:?}",
            raw.name,
            welcome.members
        );
        Self {
            history: vec![format!("welcome {:?}", welcome.members)],
            raw,
            present,
        }
    }

    fn name(&self) -> &str {
        &self.raw.name
    }

    /// The next frame, until `deadline` at most: `Some(Some(message))` for
    /// a relayed message (sender, payload), `Some(None)` for another frame
    /// (presence, tracked; a ping, answered), `None` if `deadline` passed.
    fn frame(&mut self, deadline: Instant) -> Option<Option<(String, Bytes)>> {
        match self.raw.next(deadline) {
            Next::Frame(ServerFrame::Message { sender, payload }) => {
                return Some(Some((sender, payload)))
            }
            Next::Frame(ServerFrame::Joined(name)) => {
                assert!(
                    self.present.insert(name.clone()),
                    "{}: JOINED {name} while present; history {:?}",
                    self.name(),
                    self.history
                );
                self.history.push(format!("+{name}"));
            }
            Next::Frame(ServerFrame::Left(name, reason)) => {
                assert!(
                    self.present.remove(&name),
                    "{}: LEFT {name} ({reason}) while absent; history {:?}",
                    self.name(),
                    self.history
                );
                self.history.push(format!("-{name} ({reason})"));
            }
            Next::Frame(ServerFrame::Ping) => self.raw.send(ClientFrame::Pong),
            Next::Frame(ServerFrame::Pong) => {}
            Next::Frame(other) => panic!("{}: unexpected {other:?}", self.name()),
            Next::Timeout => return None,
            Next::Closed => panic!(
                "{}: connection closed; history {:?}",
                self.name(),
                self.history
            ),
        }
        Some(None)
    }

    /// The next relayed message (sender, payload), tracking presence and
    /// answering pings meanwhile; `None` if `deadline` passes first.
    fn message(&mut self, deadline: Instant) -> Option<(String, Bytes)> {
        loop {
            if let Some(message) = self.frame(deadline)? {
                return Some(message);
            }
        }
    }

    /// Reads until a message from `sender` whose payload passes `want`
    /// arrives (others are passed over); false if `deadline` passes first.
    fn await_message_where(
        &mut self,
        sender: &str,
        mut want: impl FnMut(&str) -> bool,
        deadline: Instant,
    ) -> bool {
        while let Some((from, got)) = self.message(deadline) {
            if from == sender && want(&String::from_utf8_lossy(&got)) {
                return true;
            }
        }
        false
    }

    /// Reads until the message `payload` from `sender` arrives (others are
    /// passed over); false if `deadline` passes first.
    fn await_message(&mut self, sender: &str, payload: &str, deadline: Instant) -> bool {
        self.await_message_where(sender, |got| got == payload, deadline)
    }

    /// Reads (messages passed over) until the room is `expected` as its
    /// frames tell it, for at most `within`.
    fn await_present(&mut self, expected: &BTreeSet<String>, within: Duration) {
        let deadline = Instant::now() + within;
        while self.present != *expected {
            if self.frame(deadline).is_none() {
                panic!(
                    "{} sees {:?}, not {expected:?}, after {within:?}; history {:?}",
                    self.name(),
                    self.present,
                    self.history
                );
            }
        }
    }
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// `relais rooms` against each node until every one lists `expected`
/// (a remote join reaches a node within milliseconds; bounded).
fn rooms_everywhere(cluster: &Cluster, expected: &[&str]) {
    for i in 0..cluster.nodes.len() {
        let addr = cluster.node_addr(i);
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let mut rooms = Proc::relais(&["rooms", "--server", &addr], "warn");
            let mut lines = rooms.rest("stdout");
            let status = rooms.wait_exit();
            assert!(status.success(), "relais rooms: {}", rooms.log());
            lines.sort();
            if lines == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "relais rooms on node {i}: {lines:?}, not {expected:?}"
            );
            thread::sleep(RETRY);
        }
    }
}

// ---------------------------------------------------------------------------
// The harness itself

/// Sends `payload` on `subject` to the NATS server on `port`, in NATS's
/// text protocol, and returns the reply's payload (a JetStream API call).
fn nats_request(port: u16, subject: &str, payload: &str) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to nats-server");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).expect("INFO");
    assert!(line.starts_with("INFO {"), "{line:?}");
    write!(
        writer,
        "CONNECT {{\"verbose\":false}}\r\nSUB _INBOX.harness 1\r\n\
         PUB {subject} _INBOX.harness {}\r\n{payload}\r\n",
        payload.len()
    )
    .unwrap();
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .expect("a reply from nats-server");
        assert!(
            read > 0,
            "nats-server closed the connection before its reply"
        );
        if line.starts_with("PING") {
            writer.write_all(b"PONG\r\n").unwrap();
        } else if line.starts_with("-ERR") {
            panic!("nats-server: {line}");
        } else if let Some(header) = line.strip_prefix("MSG _INBOX.harness ") {
            let len: usize = last_word(header.trim_end()).parse().unwrap();
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body).unwrap();
            body.truncate(len);
            return String::from_utf8(body).unwrap();
        }
    }
}

/// The harness's NATS: it starts with JetStream, stops, and starts again on
/// the same port with its JetStream state (a stream made before the restart
/// is there after it). This runs now, without the cluster mode.
#[test]
fn the_nats_harness_restarts_on_the_same_port_with_its_store() {
    // A cluster of no node: NATS alone.
    let mut cluster = Cluster::start(0);
    let port = cluster.nats.port;
    let created = nats_request(
        port,
        "$JS.API.STREAM.CREATE.probe",
        r#"{"name":"probe","subjects":["probe.>"],"storage":"file"}"#,
    );
    assert!(
        created.contains(r#""name":"probe""#) && !created.contains(r#""error""#),
        "{created}"
    );

    cluster.stop_nats();
    assert!(!cluster.nats.is_running());
    let refused = TcpStream::connect(("127.0.0.1", port));
    assert!(refused.is_err(), "nothing listens while it is stopped");

    cluster.start_nats_again();
    assert_eq!(cluster.nats.port, port);
    assert!(cluster.nats.log().contains(&format!("127.0.0.1:{port}")));
    let streams = nats_request(port, "$JS.API.STREAM.NAMES", "");
    assert!(streams.contains(r#""probe""#), "{streams}");

    // And once more, in one step.
    cluster.restart_nats();
    let streams = nats_request(port, "$JS.API.STREAM.NAMES", "");
    assert!(streams.contains(r#""probe""#), "{streams}");
}

// ---------------------------------------------------------------------------
// The cluster

/// A node that cannot reach NATS at start does not serve: it exits with
/// relais's error status (1; not clap's usage error, 2).
#[test]
fn a_node_exits_when_nats_is_unreachable() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let mut node = Proc::relais(
        &[
            "serve",
            "--cluster",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--ws-listen",
            "127.0.0.1:0",
        ],
        "info",
    );
    let status = node.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", node.log());
    assert!(
        !node.log().contains("relais listening on"),
        "it served without NATS\n{}",
        node.log()
    );
}

/// Three nodes, two members on each, one room: everyone gets everyone
/// else's messages, stamped with the sender's name (the payload says who
/// sent it), each sender's in order, none twice, each sender's last one
/// included (latest wins never loses the newest).
#[test]
fn three_nodes_one_room_everyone_sees_everyone() {
    const PER_SENDER: u32 = 200;
    let cluster = Cluster::start(3);
    let everyone = ["a0", "a1", "b0", "b1", "c0", "c1"];
    // `Queue`: the client keeps every message, so whatever is missing or
    // out of order was so on the wire.
    let clients: Vec<Client> = everyone
        .iter()
        .map(|name| join(&cluster.node_addr(node_of(name)), "one", name))
        .collect();
    for client in &clients {
        await_members(client, &everyone, Duration::from_secs(5));
    }

    thread::scope(|s| {
        for client in &clients {
            s.spawn(move || {
                // Paced a little, so that most messages get through rather
                // than being replaced by newer ones (latest wins): order is
                // checked on many.
                for seq in 0..PER_SENDER {
                    client.send(numbered(client.name(), seq)).unwrap();
                    thread::sleep(Duration::from_millis(2));
                }
            });
        }
        for client in &clients {
            s.spawn(move || {
                let me = client.name();
                let deadline = Instant::now() + PATIENCE;
                let mut last: BTreeMap<String, u32> = BTreeMap::new();
                let mut received = 0;
                while everyone
                    .iter()
                    .any(|n| *n != me && last.get(*n) != Some(&(PER_SENDER - 1)))
                {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let event = client
                        .recv_event_timeout(left)
                        .unwrap_or_else(|e| panic!("{me}: {e}; last of each: {last:?}"));
                    let m = match event {
                        Event::Message(m) => m,
                        // Queued before `await_members` saw the list whole.
                        Event::Joined(name) if everyone.contains(&name.as_str()) => continue,
                        other => panic!("{me}: unexpected {other:?}"),
                    };
                    let (claimed, seq) = parse_numbered(&m.payload);
                    assert_eq!(m.sender, claimed, "{me}: stamped with the sender's name");
                    assert_ne!(m.sender, me, "{me}: no echo was asked for");
                    if let Some(&prev) = last.get(&m.sender) {
                        assert!(seq > prev, "{me}: {} sent {seq} after {prev}", m.sender);
                    }
                    last.insert(m.sender, seq);
                    received += 1;
                }
                eprintln!(
                    "{me}: {received} of {} messages",
                    PER_SENDER as usize * (everyone.len() - 1)
                );
            });
        }
    });
}

/// A name held on one node is taken on every node; it is free everywhere
/// once its holder leaves, whose last message reaches a remote member
/// before its LEFT; and of 100 simultaneous claims spread over three
/// nodes, exactly one wins.
#[test]
fn a_name_is_unique_across_nodes() {
    let cluster = Cluster::start(3);
    let (a, b, c) = (
        cluster.node_addr(0),
        cluster.node_addr(1),
        cluster.node_addr(2),
    );
    let witness = join(&c, "names", "witness");
    let alice = join(&a, "names", "alice");
    for node in [&a, &b, &c] {
        assert_taken(node, "names", "alice");
    }
    await_members(&witness, &["alice", "witness"], Duration::from_secs(5));

    // alice's last word, then her leave, in that order, on another node.
    alice.send("bye").unwrap();
    alice.close();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match witness.recv_event_timeout(left) {
            Ok(Event::Left { name, reason }) => {
                assert_eq!(name, "alice");
                assert_eq!(reason, CloseReason::Normal);
                break;
            }
            // Queued before `await_members` saw the list whole.
            Ok(Event::Joined(name)) if name == "alice" => {}
            Ok(event) => seen.push(event),
            Err(e) => panic!("the witness never saw alice leave: {e}; saw {seen:?}"),
        }
    }
    assert!(
        matches!(&seen[..], [Event::Message(m)] if m.sender == "alice" && m.payload == "bye"),
        "alice's message, then her LEFT: saw {seen:?}"
    );

    // Free on every node, one after the other.
    for node in [&b, &c, &a] {
        let again = claim_within(node, "names", "alice", Duration::from_secs(2));
        for other in [&a, &b, &c] {
            assert_taken(other, "names", "alice");
        }
        again.close();
    }

    // 100 claims at once, spread over the nodes: one wins.
    const CLAIMS: usize = 100;
    let nodes = [a.as_str(), b.as_str(), c.as_str()];
    let start = Arc::new(Barrier::new(CLAIMS));
    let results: Vec<(usize, Result<Client, ConnectError>)> = thread::scope(|s| {
        let claims: Vec<_> = (0..CLAIMS)
            .map(|i| {
                let start = start.clone();
                s.spawn(move || {
                    start.wait();
                    (i % 3, builder("highlander", "rush").connect(nodes[i % 3]))
                })
            })
            .collect();
        claims.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let winners: Vec<usize> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(node, _)| *node)
        .collect();
    for (node, result) in &results {
        if let Err(e) = result {
            assert!(is_name_taken(e), "a claim on node {node}: {e}");
        }
    }
    assert_eq!(winners.len(), 1, "winners on nodes {winners:?}");
    // The winner holds it: still taken everywhere.
    for node in nodes {
        assert_taken(node, "rush", "highlander");
    }
}

/// Members on A and B each send several messages; a late joiner on C (a
/// node with nobody in the room) gets each one's latest, and none older.
#[test]
fn a_late_joiner_gets_remote_latest() {
    const LAST: u32 = 20;
    let cluster = Cluster::start(3);
    let senders = ["a0", "b0", "b1"];
    // Echo on: a sender seeing its own last message knows its node relayed
    // it.
    let clients: Vec<Client> = senders
        .iter()
        .map(|name| {
            builder(name, "late")
                .connect(cluster.node_addr(node_of(name)))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        })
        .collect();
    for client in &clients {
        await_members(client, &senders, Duration::from_secs(5));
    }
    for client in &clients {
        for seq in 1..=LAST {
            client.send(numbered(client.name(), seq)).unwrap();
        }
    }
    // Every sender has every sender's last message, its own included: both
    // nodes hold everyone's latest.
    for client in &clients {
        let deadline = Instant::now() + PATIENCE;
        let mut pending: BTreeSet<&str> = senders.into_iter().collect();
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = client
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("{}: {e}; waiting for {pending:?}", client.name()));
            if parse_numbered(&m.payload).1 == LAST {
                pending.remove(m.sender.as_str());
            }
        }
    }

    let late = join(&cluster.node_addr(2), "late", "c0");
    let mut first: BTreeMap<String, u32> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while first.len() < senders.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match late.recv_event_timeout(left) {
            Ok(Event::Message(m)) => {
                let (claimed, seq) = parse_numbered(&m.payload);
                assert_eq!(m.sender, claimed);
                first.entry(m.sender).or_insert(seq);
            }
            Ok(Event::Joined(name)) => {
                assert!(senders.contains(&name.as_str()), "c0: {name} joined?")
            }
            Ok(other) => panic!("c0: unexpected {other:?}"),
            Err(e) => panic!("c0 got the latest of {first:?} only: {e}"),
        }
    }
    let expected: BTreeMap<String, u32> = senders.iter().map(|s| (s.to_string(), LAST)).collect();
    assert_eq!(first, expected, "each sender's first message is its latest");
    let mut members = late.members();
    members.sort();
    assert_eq!(members, ["a0", "b0", "b1", "c0"]);
}

/// SIGKILL node B: the members on A and C get LEFT "connection lost" for
/// each of B's members within 3 s, and B's names can be claimed again.
#[test]
fn a_killed_node_s_members_leave_within_3s() {
    let mut cluster = Cluster::start(3);
    let everyone = ["a0", "b0", "b1", "c0"];
    let clients: Vec<Client> = everyone
        .iter()
        .map(|name| join(&cluster.node_addr(node_of(name)), "doom", name))
        .collect();
    for client in &clients {
        await_members(client, &everyone, Duration::from_secs(5));
    }
    let (a0, c0) = (&clients[0], &clients[3]);

    let killed = cluster.kill_node(1);
    let took: Vec<Vec<(String, Duration)>> = thread::scope(|s| {
        let watchers: Vec<_> = [a0, c0]
            .into_iter()
            .map(|client| {
                s.spawn(move || {
                    let mut gone = Vec::new();
                    let deadline = killed + Duration::from_secs(10);
                    while gone.len() < 2 {
                        let left = deadline.saturating_duration_since(Instant::now());
                        match client.recv_event_timeout(left) {
                            Ok(Event::Left { name, reason }) => {
                                assert!(
                                    name == "b0" || name == "b1",
                                    "{}: {name} left ({reason})",
                                    client.name()
                                );
                                assert_eq!(reason, CloseReason::ConnectionLost, "{name}");
                                gone.push((name, killed.elapsed()));
                            }
                            // Queued before `await_members` saw the list whole.
                            Ok(Event::Joined(name)) if everyone.contains(&name.as_str()) => {}
                            Ok(other) => panic!("{}: unexpected {other:?}", client.name()),
                            Err(e) => panic!(
                                "{}: {e} {:?} after the kill; gone: {gone:?}",
                                client.name(),
                                killed.elapsed()
                            ),
                        }
                    }
                    gone
                })
            })
            .collect();
        watchers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for (watcher, gone) in ["a0", "c0"].iter().zip(&took) {
        for (name, after) in gone {
            assert!(
                *after < DEATH_REPORTED_WITHIN,
                "{watcher} saw {name} leave {after:?} after the kill"
            );
        }
        eprintln!("{watcher}: {gone:?}");
    }
    let mut members = a0.members();
    members.sort();
    assert_eq!(members, ["a0", "c0"]);

    // B's names are free again, on the surviving nodes.
    let b0 = claim_within(&cluster.node_addr(0), "doom", "b0", Duration::from_secs(2));
    let b1 = claim_within(&cluster.node_addr(2), "doom", "b1", Duration::from_secs(2));
    assert_taken(&cluster.node_addr(2), "doom", "b0");
    assert_taken(&cluster.node_addr(0), "doom", "b1");
    drop((b0, b1));
}

/// Kill NATS and start it again on its port and store. Meanwhile two
/// members on one node keep talking, and a join is refused "cluster
/// unavailable" (code 15). Afterwards joins work again, names are unique
/// again, messages cross nodes again, and every member's view of the room
/// is whole, with each name's JOINED and LEFT alternating (no duplicate).
#[test]
fn nats_restart() {
    /// How long NATS stays down: past a node's death threshold (2 s), so
    /// that the nodes also lose sight of each other.
    const OUTAGE: Duration = Duration::from_secs(3);
    /// The most a local message may take, NATS or not.
    const LOCAL: Duration = Duration::from_secs(1);

    let mut cluster = Cluster::start(2);
    let (a, b) = (cluster.node_addr(0), cluster.node_addr(1));
    let mut a1 = Observer::join(&a, "storm", "a1");
    let mut a2 = Observer::join(&a, "storm", "a2");
    let mut b1 = Observer::join(&b, "storm", "b1");
    let before = names(&["a1", "a2", "b1"]);
    for o in [&mut a1, &mut a2, &mut b1] {
        o.await_present(&before, Duration::from_secs(5));
    }
    b1.raw.data("b1 before");
    let deadline = Instant::now() + Duration::from_secs(5);
    assert!(a1.await_message("b1", "b1 before", deadline));
    assert!(a2.await_message("b1", "b1 before", deadline));

    cluster.stop_nats();
    let outage = Instant::now();
    let mut refused = BTreeSet::new();
    let mut round = 0u32;
    while outage.elapsed() < OUTAGE || refused.len() < 2 {
        // Local traffic goes on.
        round += 1;
        let (from_a1, from_a2) = (format!("a1 {round}"), format!("a2 {round}"));
        a1.raw.data(from_a1.clone());
        assert!(
            a2.await_message("a1", &from_a1, Instant::now() + LOCAL),
            "round {round}, {:?} into the outage: a1's message did not reach a2",
            outage.elapsed()
        );
        a2.raw.data(from_a2.clone());
        assert!(
            a1.await_message("a2", &from_a2, Instant::now() + LOCAL),
            "round {round}, {:?} into the outage: a2's message did not reach a1",
            outage.elapsed()
        );
        // A join, to the room and to a new one, is refused once the node
        // knows NATS is gone (it learns it from the closed connection;
        // allowed the time a dead node takes to be noticed).
        for room in ["storm", "elsewhere"] {
            if refused.contains(room) {
                continue;
            }
            match Raw::try_join(&a, room, &format!("early-{round}"), false, None) {
                Err((reason, _)) if reason.code() == 15 => {
                    refused.insert(room);
                }
                Err(other) => panic!("a join during the outage: {other:?}"),
                Ok((early, _)) => {
                    early.leave();
                    assert!(
                        outage.elapsed() < DEATH_REPORTED_WITHIN,
                        "joins to {room} still accepted {:?} into the outage",
                        outage.elapsed()
                    );
                }
            }
        }
        thread::sleep(RETRY);
    }
    eprintln!("{round} local round trips during the outage");

    cluster.start_nats_again();
    let back = Instant::now();
    // Joins work again, on both nodes.
    let join_when_back = |addr: &str, name: &str| loop {
        match Raw::try_join(addr, "storm", name, false, None) {
            Ok((raw, welcome)) => return Observer::new(raw, welcome),
            Err((reason, _)) if reason.code() == 15 && back.elapsed() < RECOVERY => {
                thread::sleep(RETRY)
            }
            Err(other) => panic!(
                "{name} on {addr}, {:?} after NATS came back: {other:?}",
                back.elapsed()
            ),
        }
    };
    let mut na = join_when_back(&a, "na");
    let mut nb = join_when_back(&b, "nb");
    eprintln!("joins work again {:?} after NATS came back", back.elapsed());

    // Names are unique across nodes again.
    for (addr, name) in [(&a, "b1"), (&b, "a1"), (&a, "nb"), (&b, "na")] {
        match Raw::try_join(addr, "storm", name, false, None) {
            Err((RefuseReason::NameTaken, _)) => {}
            other => panic!(
                "{name} on {addr} after the restart: {:?}",
                other.map(|(_, w)| w)
            ),
        }
    }

    // Messages cross nodes again, both ways: each side sends until the
    // other side has one.
    let mut k = 0u32;
    let mut crossed = [false; 3];
    while !crossed.iter().all(|c| *c) {
        assert!(
            back.elapsed() < RECOVERY,
            "cross-node traffic not back after {RECOVERY:?}: a1 {}, a2 {}, b1 {}",
            crossed[0],
            crossed[1],
            crossed[2]
        );
        k += 1;
        let (from_b1, from_a1) = (format!("b1 after {k}"), format!("a1 after {k}"));
        b1.raw.data(from_b1.clone());
        a1.raw.data(from_a1.clone());
        // Any of them will do: one sent earlier may arrive late.
        let after = |got: &str| got.starts_with("b1 after ") || got.starts_with("a1 after ");
        let soon = Instant::now() + Duration::from_millis(200);
        for (crossed, (o, from)) in
            crossed
                .iter_mut()
                .zip([(&mut a1, "b1"), (&mut a2, "b1"), (&mut b1, "a1")])
        {
            *crossed = *crossed || o.await_message_where(from, after, soon);
        }
    }
    eprintln!(
        "cross-node traffic back {:?} after NATS came back",
        back.elapsed()
    );

    // Presence is whole again everywhere, with no duplicate on the way
    // (each observer fails on one as it reads).
    let after = names(&["a1", "a2", "b1", "na", "nb"]);
    for o in [&mut a1, &mut a2, &mut b1, &mut na, &mut nb] {
        o.await_present(&after, RECOVERY);
    }
    // And no late duplicate: a further second of frames changes nothing.
    let quiet = Instant::now() + Duration::from_secs(1);
    for o in [&mut a1, &mut a2, &mut b1, &mut na, &mut nb] {
        while o.message(quiet).is_some() {}
        assert_eq!(o.present, after, "{}: history {:?}", o.name(), o.history);
        eprintln!("{}: {:?}", o.name(), o.history);
    }
}

/// A reader on node B that stops reading while a sender on node A streams
/// 24 MB gets, when it reads again, the sender's newest message and only a
/// fraction of the rest, in order: latest wins at the recipient's node.
#[test]
fn cross_node_conflation() {
    const COUNT: u32 = 3000;
    const SIZE: usize = 8 * 1024;
    // The paused reader must not be dropped meanwhile.
    let cluster = Cluster::with_flags(2, &["--write-deadline", "30"]);
    let (a, b) = (cluster.node_addr(0), cluster.node_addr(1));
    // A small receive buffer, so the backlog cannot hide in the kernel.
    let (mut paused, _) =
        Raw::try_join(&b, "conflate", "paused", true, Some(4096)).expect("paused joins");
    let mut witness = Observer::join(&b, "conflate", "witness");
    let (mut sender, _) = Raw::join(&a, "conflate", "sender", false);
    witness.await_present(
        &names(&["paused", "witness", "sender"]),
        Duration::from_secs(5),
    );

    for seq in 0..COUNT {
        sender.data(seq_payload(seq, SIZE));
    }
    // The witness, on the paused reader's node, reading all along, gets
    // the last one: node B has relayed everything.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (from, payload) = witness
            .message(deadline)
            .expect("the witness gets the last message");
        if from == "sender" && seq_of(&payload) == COUNT - 1 {
            break;
        }
    }

    // Now the paused reader reads.
    let deadline = Instant::now() + PATIENCE;
    let mut seqs = Vec::new();
    while seqs.last() != Some(&(COUNT - 1)) {
        match paused.next(deadline) {
            Next::Frame(ServerFrame::Message { sender, payload }) => {
                assert_eq!(sender, "sender");
                seqs.push(seq_of(&payload));
            }
            Next::Frame(ServerFrame::Joined(_) | ServerFrame::Ping) => {}
            other => panic!("paused: {other:?} after {} messages", seqs.len()),
        }
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates"
    );
    assert!(
        seqs.len() < COUNT as usize / 2,
        "conflated: received {} of {COUNT}",
        seqs.len()
    );
    eprintln!("paused received {} of {COUNT}", seqs.len());
}

/// A member on node B that never reads, while a sender on node A streams,
/// is dropped as a slow consumer once its write deadline passes: both
/// nodes' members see it LEFT "slow consumer", they got every update
/// meanwhile in order and fast (no one waited for it), and its name is free
/// again.
#[test]
fn cross_node_slow_consumer() {
    const DEADLINE: Duration = Duration::from_secs(1);
    /// 16 KiB every half millisecond, 32 MB/s: enough to fill the stalled
    /// reader's buffers within a fraction of the deadline. (Paced, not a
    /// flood: what is measured is the relay, not the queues of a machine
    /// saturated by the test.)
    const PACE: Duration = Duration::from_micros(500);
    let cluster = Cluster::with_flags(2, &["--write-deadline", "1"]);
    let (a, b) = (cluster.node_addr(0), cluster.node_addr(1));
    let (stalled, _) =
        Raw::try_join(&b, "slow", "stalled", true, Some(4096)).expect("stalled joins");
    let mut healthy_b = Observer::join(&b, "slow", "healthy-b");
    let mut healthy_a = Observer::join(&a, "slow", "healthy-a");
    let (mut sender, _) = Raw::join(&a, "slow", "sender", false);
    let room = names(&["stalled", "healthy-b", "healthy-a", "sender"]);
    healthy_b.await_present(&room, Duration::from_secs(5));
    healthy_a.await_present(&room, Duration::from_secs(5));

    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let send = thread::spawn({
        let stop = stop.clone();
        move || {
            let mut seq = 0u32;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) && seq < 200_000 {
                let mut p = seq_payload(seq, 16 * 1024);
                p[4..12].copy_from_slice(&(base.elapsed().as_micros() as u64).to_be_bytes());
                sender.data(p);
                seq += 1;
                next += PACE;
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            (sender, seq)
        }
    });
    let worst: Vec<(String, Duration, usize)> = thread::scope(|s| {
        let readers: Vec<_> = [&mut healthy_a, &mut healthy_b]
            .into_iter()
            .map(|o| {
                s.spawn(move || {
                    let deadline = Instant::now() + PATIENCE;
                    let (mut last, mut worst, mut count) = (None, Duration::ZERO, 0);
                    loop {
                        match o.raw.next(deadline) {
                            Next::Frame(ServerFrame::Message { payload, .. }) => {
                                let seq = seq_of(&payload);
                                assert!(last.is_none_or(|l| seq > l), "{}: {seq}", o.name());
                                last = Some(seq);
                                count += 1;
                                let sent = u64::from_be_bytes(payload[4..12].try_into().unwrap());
                                worst = worst.max(base.elapsed() - Duration::from_micros(sent));
                            }
                            Next::Frame(ServerFrame::Left(name, reason)) => {
                                assert_eq!(name, "stalled", "{}", o.name());
                                assert_eq!(reason, CloseReason::SlowConsumer, "{}", o.name());
                                return (o.name().to_owned(), worst, count);
                            }
                            Next::Frame(ServerFrame::Ping) => o.raw.send(ClientFrame::Pong),
                            other => panic!("{}: {other:?} after {count} messages", o.name()),
                        }
                    }
                })
            })
            .collect();
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    stop.store(true, Ordering::Relaxed);
    let (_sender, sent) = send.join().unwrap();
    eprintln!("{sent} sent; {worst:?}");
    for (name, took, count) in &worst {
        assert!(
            *count > 0,
            "{name} got updates while the reader was stalled"
        );
        assert!(
            *took < DEADLINE,
            "an update took {took:?} to reach {name}: someone waited for the stalled reader"
        );
    }
    // Its name is free again, on the other node too.
    let again = claim_within(&a, "slow", "stalled", Duration::from_secs(2));
    drop((again, stalled));
}

/// `relais rooms` asked of any node lists the cluster's rooms with their
/// cluster-wide member counts, and follows members leaving.
#[test]
fn rooms_are_cluster_wide() {
    let cluster = Cluster::start(3);
    let x_a = join(&cluster.node_addr(0), "x", "xa");
    let x_b = join(&cluster.node_addr(1), "x", "xb");
    let y_c = join(&cluster.node_addr(2), "y", "yc");
    await_members(&x_a, &["xa", "xb"], Duration::from_secs(5));
    await_members(&x_b, &["xa", "xb"], Duration::from_secs(5));
    rooms_everywhere(&cluster, &["x\t2", "y\t1"]);

    y_c.close();
    x_b.close();
    rooms_everywhere(&cluster, &["x\t1"]);
    drop(x_a);
}

/// How a raw member's connection ended, read (presence and messages passed
/// over, pings answered) until `deadline` at most: `Some` of the reason of
/// its `GOODBYE`, or of `None` if it closed without one; `None` if it is
/// still connected at `deadline`.
fn ending_by(raw: &mut Raw, deadline: Instant) -> Option<Option<CloseReason>> {
    loop {
        match raw.next(deadline) {
            Next::Frame(ServerFrame::Goodbye(reason, _)) => return Some(Some(reason)),
            Next::Frame(ServerFrame::Ping) => raw.send(ClientFrame::Pong),
            Next::Frame(_) => {}
            Next::Closed => return Some(None),
            Next::Timeout => return None,
        }
    }
}

/// How a raw member's connection ended, which it must by `deadline`: the
/// reason of its `GOODBYE`, or `None` if it closed without one.
fn await_goodbye(raw: &mut Raw, deadline: Instant) -> Option<CloseReason> {
    ending_by(raw, deadline).unwrap_or_else(|| panic!("{}: still connected", raw.name))
}

/// Node A (behind a [`Proxy`]) and node B (on NATS directly); in room
/// "cut": watchers `wa` on A and `wb` on B, and `x` on A. A is cut off from
/// NATS past the 2 s that declare a node gone, and meanwhile a new `x`
/// joins on B (B took over A's claim). The proxy is still cut.
struct CutOff {
    cluster: Cluster,
    proxy: Proxy,
    wa: Observer,
    wb: Observer,
    /// A's `x`, whose name B's `new_x` now holds.
    old_x: Raw,
    new_x: Observer,
}

/// The room with everyone, as each of its members should see it.
const CUT_ROOM: &[&str] = &["wa", "wb", "x"];

impl CutOff {
    fn start() -> Self {
        let mut cluster = Cluster::start(0);
        let proxy = Proxy::start(cluster.nats.port);
        let node_a = cluster.add_node(&proxy.url());
        let node_b = cluster.add_node(&cluster.nats.url());
        let (a, b) = (cluster.node_addr(node_a), cluster.node_addr(node_b));
        let mut wa = Observer::join(&a, "cut", "wa");
        let mut wb = Observer::join(&b, "cut", "wb");
        let (old_x, _) = Raw::join(&a, "cut", "x", false);
        let all = names(CUT_ROOM);
        wa.await_present(&all, Duration::from_secs(5));
        wb.await_present(&all, Duration::from_secs(5));

        proxy.cut();
        let cut = Instant::now();
        // B declares A gone: its members leave, "connection lost", within
        // 3 s.
        wb.await_present(
            &names(&["wb"]),
            DEATH_REPORTED_WITHIN + Duration::from_secs(2),
        );
        let reported = cut.elapsed();
        assert!(
            reported < DEATH_REPORTED_WITHIN,
            "wb saw A's members leave {reported:?} after the cut"
        );
        for name in ["x", "wa"] {
            let left = format!("-{name} ({})", CloseReason::ConnectionLost);
            assert!(wb.history.contains(&left), "wb: {:?}", wb.history);
        }
        // And A, cut off, declares B gone.
        wa.await_present(
            &names(&["wa", "x"]),
            DEATH_REPORTED_WITHIN + Duration::from_secs(2),
        );
        // A new x, on B: A's claim is B's to take over now.
        let deadline = Instant::now() + Duration::from_secs(2);
        let new_x = loop {
            match Raw::try_join(&b, "cut", "x", false, None) {
                Ok((raw, welcome)) => break Observer::new(raw, welcome),
                Err((RefuseReason::NameTaken, _)) if Instant::now() < deadline => {
                    thread::sleep(RETRY)
                }
                Err(other) => panic!("a new x on B, {:?} after the cut: {other:?}", cut.elapsed()),
            }
        };
        wb.await_present(&names(&["wb", "x"]), Duration::from_secs(2));
        eprintln!(
            "B saw A gone {reported:?} after the cut; new x joined on B {:?} after it",
            cut.elapsed()
        );
        Self {
            cluster,
            proxy,
            wa,
            wb,
            old_x,
            new_x,
        }
    }

    /// Once the views have converged: `wa` gets B's x's messages, `relais
    /// rooms` counts the room once on both nodes, and a further second of
    /// frames changes nobody's view.
    fn settled(&mut self) {
        let all = names(CUT_ROOM);
        self.new_x.raw.data("x on B");
        assert!(
            self.wa
                .await_message("x", "x on B", Instant::now() + Duration::from_secs(5)),
            "wa never got B's x's message; history {:?}",
            self.wa.history
        );
        rooms_everywhere(&self.cluster, &["cut\t3"]);
        let quiet = Instant::now() + Duration::from_secs(1);
        for o in [&mut self.wa, &mut self.wb, &mut self.new_x] {
            let seen = o.history.len();
            while o.message(quiet).is_some() {}
            assert_eq!(o.present, all, "{}: history {:?}", o.name(), o.history);
            assert_eq!(
                o.history.len(),
                seen,
                "{}: presence changed once settled: {:?}",
                o.name(),
                o.history
            );
            eprintln!("{}: {:?}", o.name(), o.history);
        }
    }
}

/// Node A is cut off from NATS (a proxy between them closes every
/// connection) for longer than the 2 s that declare it gone; meanwhile its
/// member `x`'s name is taken by a new `x` on node B. When A is back, A
/// removes its own `x` (LEFT and GOODBYE "connection lost"), so that the
/// name is one player again: every watcher's view has one `x`, B's (its
/// messages reach A's watcher), each name's JOINED and LEFT alternate,
/// nothing changes once settled, and `relais rooms` counts the room once
/// on both nodes.
#[test]
fn a_cut_off_node_gives_up_a_name_taken_elsewhere() {
    let mut t = CutOff::start();
    t.proxy.restore();
    let restored = Instant::now();
    // A's old x is removed by A, as soon as A has NATS back.
    let goodbye = await_goodbye(&mut t.old_x, restored + RECOVERY);
    let removed = restored.elapsed();
    assert!(
        goodbye.is_none_or(|r| r == CloseReason::ConnectionLost),
        "A's old x: GOODBYE {goodbye:?}"
    );
    // Every view converges on one x, with no duplicate JOINED or LEFT on
    // the way (each observer fails on one as it reads).
    let all = names(CUT_ROOM);
    for o in [&mut t.wa, &mut t.wb, &mut t.new_x] {
        o.await_present(&all, RECOVERY);
    }
    let converged = restored.elapsed();
    let evicted = format!("-x ({})", CloseReason::ConnectionLost);
    assert!(t.wa.history.contains(&evicted), "wa: {:?}", t.wa.history);
    t.settled();
    eprintln!(
        "after the restore: A's old x gone ({goodbye:?}) in {removed:?}, views one in {converged:?}"
    );
}

/// As [`a_cut_off_node_gives_up_a_name_taken_elsewhere`], with both x's
/// talking while A gets NATS back (a message every few milliseconds): B's
/// members never get a message of A's old x (the name is B's x's), and no
/// one's view ever holds two x's (no JOINED x while x is present) or loses
/// B's x.
#[test]
fn a_cut_off_node_gives_up_a_name_taken_elsewhere_while_both_talk() {
    let mut t = CutOff::start();
    let all = names(CUT_ROOM);
    t.proxy.restore();
    let restored = Instant::now();
    let mut old_x_gone = None;
    let mut k = 0u32;
    while old_x_gone.is_none() || [&t.wa, &t.wb, &t.new_x].iter().any(|o| o.present != all) {
        assert!(
            restored.elapsed() < RECOVERY,
            "not settled {RECOVERY:?} after the restore: old x gone {old_x_gone:?}; \
             wa {:?}, wb {:?}, x {:?}",
            t.wa.history,
            t.wb.history,
            t.new_x.history
        );
        k += 1;
        t.new_x.raw.data(format!("new {k}"));
        if old_x_gone.is_none() {
            // Not `Raw::data`: A may be closing this connection.
            let _ = t
                .old_x
                .stream
                .write_all(&ClientFrame::Data(format!("old {k}").into()).to_bytes());
            old_x_gone = ending_by(&mut t.old_x, Instant::now() + Duration::from_millis(5));
        }
        // Each observer reads what came meanwhile; B's must never relay
        // A's old x.
        for o in [&mut t.wa, &mut t.wb, &mut t.new_x] {
            let soon = Instant::now() + Duration::from_millis(5);
            while let Some((from, payload)) = o.message(soon) {
                assert!(
                    o.name() == "wa" || !(from == "x" && payload.starts_with(b"old ")),
                    "{} on B got A's old x's {payload:?}, {:?} after the restore; history {:?}",
                    o.name(),
                    restored.elapsed(),
                    o.history
                );
            }
        }
    }
    let gone = old_x_gone.unwrap();
    assert!(
        gone.is_none_or(|r| r == CloseReason::ConnectionLost),
        "A's old x: GOODBYE {gone:?}"
    );
    eprintln!(
        "{k} messages of each x; settled {:?} after the restore",
        restored.elapsed()
    );
    t.settled();
}

/// Three nodes, members on each; node C is stopped cleanly (SIGTERM): its
/// members get GOODBYE "server shutting down", A's and B's members see
/// them LEFT with that reason (not "connection lost"), and nothing else:
/// no one of A or B leaves or joins again, messages still cross between A
/// and B. C exits 0 within a few seconds, and its members' names are free
/// on A right after.
#[test]
fn a_node_shut_down_cleanly_moves_nobody_else() {
    /// A clean stop: the clients' goodbyes, the LEFTs flushed to NATS,
    /// half a second for the others to hear the leaving heartbeat.
    const STOPS_WITHIN: Duration = Duration::from_secs(5);
    let mut cluster = Cluster::start(3);
    let (a, b, c) = (
        cluster.node_addr(0),
        cluster.node_addr(1),
        cluster.node_addr(2),
    );
    let mut stayers = [
        Observer::join(&a, "calm", "a0"),
        Observer::join(&a, "calm", "a1"),
        Observer::join(&b, "calm", "b0"),
    ];
    let leavers = [
        Raw::join(&c, "calm", "c0", false).0,
        Raw::join(&c, "calm", "c1", false).0,
    ];
    let all = names(&["a0", "a1", "b0", "c0", "c1"]);
    for o in &mut stayers {
        o.await_present(&all, Duration::from_secs(5));
    }
    let before: Vec<usize> = stayers.iter().map(|o| o.history.len()).collect();

    let sent = cluster.terminate_node(2);
    for mut raw in leavers {
        let goodbye = await_goodbye(&mut raw, sent + STOPS_WITHIN);
        assert_eq!(goodbye, Some(CloseReason::ServerShutdown), "{}", raw.name);
        // Closed, as a client does after a GOODBYE.
    }
    let rest = names(&["a0", "a1", "b0"]);
    for o in &mut stayers {
        o.await_present(&rest, STOPS_WITHIN);
    }
    let lefts = sent.elapsed();
    let status = cluster.await_node_exit(2, STOPS_WITHIN);
    let exited = sent.elapsed();
    assert_eq!(status.code(), Some(0), "node C's exit: {status}");

    // C's names are free on A at once (bounded retry: its claims are
    // deleted as its members leave, or taken over once C is gone).
    let free = Instant::now();
    let c0 = claim_within(&a, "calm", "c0", Duration::from_secs(2));
    let c1 = claim_within(&a, "calm", "c1", Duration::from_secs(2));
    let claimed = free.elapsed();
    assert_taken(&b, "calm", "c0");
    assert_taken(&b, "calm", "c1");

    // Past C's leaving heartbeat and the half second after it that
    // declares C gone: the stayers saw C's members leave, "server shutting
    // down", and the new c0 and c1 join, and nothing else.
    let now = names(&["a0", "a1", "b0", "c0", "c1"]);
    let quiet = Instant::now() + Duration::from_secs(1);
    for (o, seen) in stayers.iter_mut().zip(&before) {
        o.await_present(&now, Duration::from_secs(2));
        while o.message(quiet).is_some() {}
        let mut since: Vec<&str> = o.history[*seen..].iter().map(String::as_str).collect();
        since.sort();
        let shutdown = CloseReason::ServerShutdown;
        assert_eq!(
            since,
            [
                "+c0".to_owned(),
                "+c1".to_owned(),
                format!("-c0 ({shutdown})"),
                format!("-c1 ({shutdown})")
            ],
            "{}: history {:?}",
            o.name(),
            o.history
        );
        assert_eq!(o.present, now, "{}", o.name());
    }
    // Messages still cross between A and B.
    let [a0, _, b0] = &mut stayers;
    a0.raw.data("a0 after");
    b0.raw.data("b0 after");
    let deadline = Instant::now() + Duration::from_secs(5);
    assert!(b0.await_message("a0", "a0 after", deadline));
    assert!(a0.await_message("b0", "b0 after", deadline));
    eprintln!(
        "after SIGTERM: LEFTs seen by all in {lefts:?}, C exited in {exited:?}; \
         C's names claimed on A in {claimed:?} after that"
    );
    drop((c0, c1));
}

/// A node whose NATS is gone still stops promptly on SIGTERM: its member
/// gets GOODBYE "server shutting down" and the process exits 0 within
/// 10 s (the cluster's leave gives up on NATS after 2 s per step).
#[test]
fn a_node_shuts_down_promptly_even_while_nats_is_away() {
    const STOPS_WITHIN: Duration = Duration::from_secs(10);
    let mut cluster = Cluster::start(1);
    let addr = cluster.node_addr(0);
    let (mut member, _) = Raw::join(&addr, "alone", "m", false);

    cluster.stop_nats();
    // Once the node knows NATS is gone, it refuses joins (code 15).
    let outage = Instant::now();
    loop {
        match Raw::try_join(&addr, "alone", "probe", false, None) {
            Err((reason, _)) if reason.code() == 15 => break,
            Ok((probe, _)) if outage.elapsed() < DEATH_REPORTED_WITHIN => {
                probe.leave();
                thread::sleep(RETRY);
            }
            other => panic!(
                "a join {:?} into the outage: {:?}",
                outage.elapsed(),
                other.map(|(_, w)| w)
            ),
        }
    }
    let noticed = outage.elapsed();

    let sent = cluster.terminate_node(0);
    let goodbye = await_goodbye(&mut member, sent + STOPS_WITHIN);
    assert_eq!(goodbye, Some(CloseReason::ServerShutdown));
    let said_goodbye = sent.elapsed();
    // It closes, as a client does after a GOODBYE (the server need not
    // linger for it).
    drop(member);
    let status = cluster.await_node_exit(0, STOPS_WITHIN);
    let exited = sent.elapsed();
    assert_eq!(status.code(), Some(0), "the node's exit: {status}");
    eprintln!(
        "NATS gone noticed in {noticed:?}; after SIGTERM: GOODBYE in {said_goodbye:?}, \
         exit in {exited:?}"
    );
}
