//! What the `relais` binary's integration tests share: a child process
//! whose output lines arrive on channels (and are kept for failure
//! messages), killed when dropped; `relais serve` on ephemeral ports; a
//! plain HTTP `GET`.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Upper bound on any one wait (for a line, an exit): a guard against
/// hangs, never a way to wait for something to happen.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A running process whose output lines arrive on channels.
pub struct Proc {
    name: String,
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: Receiver<String>,
    pub stderr: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

/// The lines `r` writes, split at `\n` only: a carriage return or any
/// other byte stays in the line it was written in (invalid UTF-8 shows as
/// U+FFFD). Each is also kept in `log`.
fn lines(r: impl Read + Send + 'static, log: Arc<Mutex<Vec<String>>>) -> Receiver<String> {
    let (tx, rx) = channel();
    thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line.clone());
            // The test may have stopped listening: keep draining the pipe.
            let _ = tx.send(line);
        }
    });
    rx
}

impl Proc {
    /// Starts `command` with its standard streams piped.
    pub fn spawn(name: &str, command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        Self {
            name: name.to_string(),
            stdout: lines(child.stdout.take().unwrap(), log.clone()),
            stderr: lines(child.stderr.take().unwrap(), log.clone()),
            stdin: child.stdin.take(),
            child,
            log,
        }
    }

    /// `relais args` with `RUST_LOG` set to `log`.
    pub fn relais(args: &[&str], log: &str) -> Self {
        Self::spawn(
            "relais",
            Command::new(env!("CARGO_BIN_EXE_relais"))
                .args(args)
                .env("RUST_LOG", log),
        )
    }

    /// The channel of `which` ("stdout" or "stderr").
    pub fn output(&self, which: &str) -> &Receiver<String> {
        if which == "stdout" {
            &self.stdout
        } else {
            &self.stderr
        }
    }

    /// Waits for a line on `which` that contains `needle`; returns it.
    pub fn expect(&self, which: &str, needle: &str) -> String {
        self.lines_until(which, needle).pop().unwrap()
    }

    /// The lines on `which` up to and including the first that contains
    /// `needle` (at most PATIENCE between two lines).
    pub fn lines_until(&self, which: &str, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let line = match self.output(which).recv_timeout(PATIENCE) {
                Ok(line) => line,
                Err(e) => panic!(
                    "{}: no {which} line containing {needle:?} ({e:?})\n{}",
                    self.name,
                    self.log()
                ),
            };
            let found = line.contains(needle);
            seen.push(line);
            if found {
                return seen;
            }
        }
    }

    /// Every line left on `which` until the process closes it (at most
    /// PATIENCE between two lines).
    pub fn rest(&self, which: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.output(which).recv_timeout(PATIENCE) {
                Ok(line) => seen.push(line),
                Err(RecvTimeoutError::Disconnected) => return seen,
                Err(RecvTimeoutError::Timeout) => panic!("{which} still open"),
            }
        }
    }

    /// Types `line` and a newline on its standard input.
    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits (at most PATIENCE) for the process to exit: its output
    /// channels close when it does.
    pub fn wait_exit(&mut self) -> ExitStatus {
        for rx in [&self.stdout, &self.stderr] {
            loop {
                match rx.recv_timeout(PATIENCE) {
                    Ok(line) => eprintln!("[{}] {line}", self.child.id()),
                    Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) => panic!("process did not exit"),
                }
            }
        }
        self.child.wait().unwrap()
    }

    /// Sends it the signal `name` (`TERM`, `HUP`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let kill = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -{name} {pid}");
    }

    /// Everything it has written so far, for failure messages.
    pub fn log(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        format!("--- {} output:\n{}\n---", self.name, log.join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last word of `line` (where `relais` prints an address).
pub fn last_word(line: &str) -> &str {
    line.rsplit(' ').next().unwrap()
}

/// `relais serve` on the TCP address `addr` (a restart on the same port).
pub fn serve_at(addr: &str) -> (Proc, String) {
    serve_on(addr, &[], "warn")
}

/// `relais serve` on ephemeral ports with `extra` flags, logging at `log`;
/// its TCP address.
pub fn serve_with(extra: &[&str], log: &str) -> (Proc, String) {
    serve_on("127.0.0.1:0", extra, log)
}

/// `relais serve` for TCP on `addr`, WebSocket on an ephemeral port, with
/// `extra` flags, logging at `log`; its TCP address.
fn serve_on(addr: &str, extra: &[&str], log: &str) -> (Proc, String) {
    let mut args = vec!["serve", "--listen", addr, "--ws-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let server = Proc::relais(&args, log);
    let addr = last_word(&server.expect("stdout", "listening on")).to_string();
    (server, addr)
}

/// The address of the operations listener of a `relais serve` started with
/// `--metrics-listen` (it prints `relais metrics on http://ADDR/metrics`).
pub fn metrics_addr(server: &Proc) -> String {
    let line = server.expect("stdout", "relais metrics on http://");
    last_word(&line)
        .strip_prefix("http://")
        .and_then(|a| a.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("not an address: {line:?}"))
        .to_owned()
}

/// `GET target` from `addr`, over HTTP/1.0 so that the answer comes whole
/// (never chunked) and the connection closes after it: its status and body.
pub fn http_get(addr: &str, target: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    write!(stream, "GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, response.to_string());
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_owned()))
}
