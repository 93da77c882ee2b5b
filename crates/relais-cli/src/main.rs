//! `relais`: the relay server and its command-line clients.

use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use relais::{Client, Event, Message, TlsOptions};
use relais_server::tls::TlsConfig;
use settings::{FileSettings, LogFormat, ServeArgs, Settings};
use tracing_subscriber::EnvFilter;

mod settings;
mod token;

#[derive(Parser)]
#[command(
    name = "relais",
    version,
    about = "A real-time relay for multiplayer games and live apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay server.
    Serve(Box<ServeArgs>),
    /// Chat in a room: stdin lines go out, relayed messages print as `name: text`.
    Chat {
        /// The name to register.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Print everything relayed in a room, with joins and leaves.
    Watch {
        /// The name to register (must be unique in the room).
        #[arg(long, default_value_t = default_watch_name())]
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// List the server's rooms with their member counts.
    Rooms {
        /// The server to ask.
        #[arg(long, default_value = "127.0.0.1:7777")]
        server: String,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Mint a join token, as a game backend does (for testing): prints it.
    Token(token::TokenArgs),
}

/// How a client subcommand connects: plaintext unless asked.
#[derive(Args)]
struct TlsArgs {
    /// Connect with TLS, verifying the server's certificate against the
    /// system's trusted roots (or --ca).
    #[arg(long)]
    tls: bool,
    /// Trust the CA certificates in this PEM file instead of the system's
    /// (implies --tls).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The name the server's certificate must carry (implies --tls)
    /// [default: the host of --server].
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
}

impl TlsArgs {
    fn options(&self) -> Option<TlsOptions> {
        if !self.tls && self.ca.is_none() && self.server_name.is_none() {
            return None;
        }
        let mut options = TlsOptions::new();
        if let Some(ca) = &self.ca {
            options = options.ca_file(ca);
        }
        if let Some(name) = &self.server_name {
            options = options.server_name(name);
        }
        Some(options)
    }
}

#[derive(Args)]
struct Target {
    /// The server to connect to.
    #[arg(long, default_value = "127.0.0.1:7777")]
    server: String,
    /// The room to join (the server's default room if not given).
    #[arg(long)]
    room: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    /// The join token, for servers that require one (visible to other
    /// local users in the process list: prefer --token-file).
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// A file holding the join token (surrounding whitespace ignored).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// How long to keep trying to get a lost connection back, resuming the
    /// seat (seconds, fractions allowed); 0 exits when the connection is
    /// lost.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = seconds)]
    reconnect: std::time::Duration,
}

/// A duration given in seconds (fractions allowed).
fn seconds(text: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    std::time::Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{text:?} is not a duration (0 or more seconds)"))
}

fn default_watch_name() -> String {
    format!("watch-{}", std::process::id())
}

/// Logs to stderr, at the level `RUST_LOG` asks (default `info`).
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colour codes only for a person at a terminal, never into a file
        // or a pipe.
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        // Each event's fields under "fields", its spans' (peer, name,
        // room) under "span"/"spans": values are JSON strings, so no name
        // can add or change a key.
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        init_logging(LogFormat::Text);
    }
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Chat { name, target } => chat(&name, &target),
        Command::Watch { name, target } => watch(&name, &target),
        Command::Rooms { server, tls } => rooms(&server, &tls),
        Command::Token(args) => token::mint(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // May quote the server (a refusal's or a goodbye's text).
            eprintln!("relais: {}", escape(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => FileSettings::load(path)?,
        None => FileSettings::default(),
    };
    let Settings {
        listen,
        ws_listen,
        web,
        mut config,
        tls,
        token_key,
        allowed_origins,
        metrics_listen,
        cluster,
        log_format,
    } = Settings::resolve(&args, &file)?;
    init_logging(log_format);
    // Before anything listens: a missing or bad certificate stops the start.
    let tls = match tls {
        Some(files) => Some(TlsConfig::from_pem_files(&files.cert, &files.key)?),
        None => None,
    };
    if let Some(budget) = relais_server::fdlimit::fit_to_fd_limit(&mut config) {
        if budget.lowered() {
            tracing::warn!(
                "the open-file limit is {} (ulimit -n): serving at most {} connections instead \
                 of {} ({} descriptors kept in reserve); raise the limit to serve more",
                budget.limit,
                budget.granted,
                budget.wanted,
                budget.reserve
            );
        }
    }
    let mut ctx = relais_server::ServerContext::new(config);
    if let Some(key) = token_key {
        let verifier = key.load()?;
        tracing::info!(algorithm = %verifier.kind(), "join tokens required");
        ctx = ctx.with_auth(verifier);
    }
    if let Some(origins) = allowed_origins {
        tracing::info!(%origins, "WebSocket upgrades only from these origins");
        ctx = ctx.with_allowed_origins(origins);
    }
    if metrics_listen.is_some() {
        ctx = ctx.with_metrics();
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let ws_listener = tokio::net::TcpListener::bind(ws_listen)
            .await
            .with_context(|| format!("cannot listen on {ws_listen}"))?;
        let ops_listener = match metrics_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?,
            ),
            None => None,
        };
        let mut server = relais_server::Server::with_context(ctx);
        // Before anything listens: a node takes clients once it has heard
        // the others.
        let cluster = match cluster {
            Some(url) => {
                let node =
                    relais_server::cluster::Cluster::start(server.context().clone(), &url).await?;
                println!("relais cluster node {:016x} via {url}", node.node());
                Some(node)
            }
            None => None,
        };
        // Caught with or without TLS: SIGHUP's default action would end
        // the server (`systemctl reload` sends it).
        #[cfg(unix)]
        tokio::spawn(reload_on_sighup(tls.clone())?);
        if let Some(tls) = tls {
            server = server.with_tls(tls);
        }
        let (ws, http) = match server.tls() {
            Some(tls) => {
                tracing::info!(cert = %tls.cert_path().display(), "TLS on both ports");
                ("wss", "https")
            }
            None => ("ws", "http"),
        };
        // On stdout, for scripts and tests that listen on port 0.
        println!("relais listening on {}", listener.local_addr()?);
        let ws_addr = ws_listener.local_addr()?;
        println!("relais websocket on {ws}://{ws_addr}/ws");
        let pages = if web {
            println!("relais web on {http}://{ws_addr}/");
            relais_server::ws::HttpPages::Demo
        } else {
            relais_server::ws::HttpPages::None
        };
        // One shutdown for both listeners: serve_tcp's ends accept_ws too.
        // The operations listener outlives the shutdown, so that /readyz
        // says 503 through its grace period; it stops when serving has.
        let served = tokio_util::sync::CancellationToken::new();
        if let Some(ops_listener) = ops_listener {
            println!(
                "relais metrics on http://{}/metrics",
                ops_listener.local_addr()?
            );
            let (ops_server, stop) = (server.clone(), served.clone());
            tokio::spawn(async move {
                ops_server
                    .serve_ops(ops_listener, stop.cancelled_owned())
                    .await
            });
        }
        let ws_server = server.clone();
        let ws = tokio::spawn(async move { ws_server.accept_ws(ws_listener, pages).await });
        server.serve_tcp(listener, shutdown_signal()).await;
        let _ = ws.await;
        if let Some(cluster) = cluster {
            cluster.leave().await;
        }
        served.cancel();
        tracing::info!("shut down");
        Ok(())
    })
}

/// Installs the SIGHUP handler (now, so a SIGHUP right after the start is
/// not fatal) and returns the task that reloads the certificate on each one
/// (without TLS there is nothing to reload: it says so). A failed reload
/// keeps the certificate in use.
#[cfg(unix)]
fn reload_on_sighup(
    tls: Option<TlsConfig>,
) -> anyhow::Result<impl std::future::Future<Output = ()> + Send> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup()).context("install SIGHUP handler")?;
    Ok(async move {
        while hangup.recv().await.is_some() {
            let Some(tls) = &tls else {
                tracing::info!("SIGHUP: no TLS certificate to reload");
                continue;
            };
            match tls.reload() {
                Ok(()) => tracing::info!(
                    cert = %tls.cert_path().display(),
                    "SIGHUP: TLS certificate reloaded; new connections use it"
                ),
                Err(e) => tracing::error!("SIGHUP: {e}; keeping the certificate in use"),
            }
        }
    })
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn connect(name: &str, target: &Target, echo: bool) -> anyhow::Result<Client> {
    let mut builder = Client::builder(name)
        .echo(echo)
        .reconnect_window(target.reconnect);
    if let Some(room) = &target.room {
        builder = builder.room(room);
    }
    if let Some(tls) = target.tls.options() {
        builder = builder.tls(tls);
    }
    if let Some(token) = &target.token {
        builder = builder.token(token);
    }
    if let Some(path) = &target.token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
        builder = builder.token(token.trim());
    }
    builder
        .connect(target.server.as_str())
        .with_context(|| format!("cannot join {} as {name:?}", target.server))
}

fn chat(name: &str, target: &Target) -> anyhow::Result<()> {
    let client = std::sync::Arc::new(connect(name, target, false)?);
    eprintln!(
        "joined room \"{}\" as \"{}\"; members: {}",
        escape(client.room()),
        escape(client.name()),
        members(&client)
    );
    // Input on its own thread; the main thread prints until the connection
    // ends, whichever side ends it (end of input closes it).
    let input = client.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if input.send(line.into_bytes()).is_err() {
                break;
            }
        }
        input.close();
    });
    print_events(&client);
    // If input ended the connection, its close() may still be writing the
    // goodbye: this waits for it (close is idempotent and serialised).
    client.close();
    ended(client.status())
}

/// Exit status of a client subcommand: success if the user closed it.
fn ended(status: Option<relais::Disconnect>) -> anyhow::Result<()> {
    match status {
        Some(relais::Disconnect::Closed) | None => Ok(()),
        Some(other) => anyhow::bail!("disconnected: {other}"),
    }
}

fn watch(name: &str, target: &Target) -> anyhow::Result<()> {
    let client = connect(name, target, false)?;
    eprintln!(
        "watching room \"{}\"; members: {}",
        escape(client.room()),
        members(&client)
    );
    print_events(&client);
    ended(client.status())
}

/// The room's members, escaped, separated by commas.
fn members(client: &Client) -> String {
    let members: Vec<String> = client.members().iter().map(|m| escape(m)).collect();
    members.join(", ")
}

/// Text from the network made safe to print on one line of a terminal:
/// every character that could move the cursor, rewrite or reorder the line,
/// or hide text ([`relais_protocol::is_unsafe_to_display`]: controls such as
/// ESC and CR, line breaks, bidirectional controls, invisible characters) is
/// written as a Rust-style escape (`\n`, `\r`, `\t`, `\u{1b}`), and a
/// backslash as `\\` so that an escape and the same characters typed
/// literally stay distinct. Everything else is printed as it is.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if relais_protocol::is_unsafe_to_display(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Prints every event until the connection ends, one line each.
fn print_events(client: &Client) {
    let stdout = std::io::stdout();
    while let Ok(event) = client.recv_event_blocking() {
        let mut out = stdout.lock();
        let _ = match event {
            Event::Message(Message { sender, payload }) => writeln!(
                out,
                "{}: {}",
                escape(&sender),
                escape(&String::from_utf8_lossy(&payload))
            ),
            Event::Joined(name) => writeln!(out, "* {} joined", escape(&name)),
            Event::Left { name, reason } => writeln!(out, "* {} left ({reason})", escape(&name)),
            // Connection news goes with the other diagnostics, on stderr.
            Event::Reconnecting(why) => {
                eprintln!("* {}; reconnecting", escape(&why.to_string()));
                Ok(())
            }
            Event::Reconnected { resumed } => {
                eprintln!(
                    "* reconnected ({})",
                    if resumed {
                        "seat resumed"
                    } else {
                        "joined again"
                    }
                );
                Ok(())
            }
            other => writeln!(out, "* {}", escape(&format!("{other:?}"))),
        };
        let _ = out.flush();
    }
}

fn rooms(server: &str, tls: &TlsArgs) -> anyhow::Result<()> {
    let rooms = match tls.options() {
        Some(options) => relais::list_rooms_tls(server, &options),
        None => relais::list_rooms(server),
    }
    .with_context(|| format!("cannot list rooms of {server}"))?;
    if rooms.is_empty() {
        println!("no rooms");
    }
    for room in rooms {
        println!("{}\t{}", escape(&room.name), room.members);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn printable_text_is_left_alone() {
        for text in [
            "alice: x=1",
            "élodie 🎮",
            "山田",
            "a\u{301}",
            "tab-free",
            "",
        ] {
            assert_eq!(escape(text), text);
        }
    }

    #[test]
    fn controls_and_line_breaks_are_escaped() {
        assert_eq!(escape("\u{1b}[2J\rspoof: hi"), "\\u{1b}[2J\\rspoof: hi");
        assert_eq!(escape("one\ntwo\tthree"), "one\\ntwo\\tthree");
        assert_eq!(escape("\0\u{7}\u{8}\u{7f}"), "\\u{0}\\u{7}\\u{8}\\u{7f}");
        // C1, including the one-byte CSI.
        assert_eq!(escape("\u{85}\u{9b}31m"), "\\u{85}\\u{9b}31m");
        assert_eq!(escape("a\u{2028}b\u{2029}"), "a\\u{2028}b\\u{2029}");
    }

    #[test]
    fn bidi_controls_and_invisible_characters_are_escaped() {
        assert_eq!(escape("\u{202e}olleh"), "\\u{202e}olleh");
        assert_eq!(escape("a\u{2066}b\u{2069}"), "a\\u{2066}b\\u{2069}");
        assert_eq!(escape("ad\u{200b}min"), "ad\\u{200b}min");
        assert_eq!(escape("\u{feff}x\u{ad}"), "\\u{feff}x\\u{ad}");
    }

    #[test]
    fn a_backslash_cannot_pass_for_an_escape() {
        assert_eq!(escape("\\n"), "\\\\n");
        assert_ne!(escape("\\n"), escape("\n"));
        assert_eq!(escape("C:\\dir"), "C:\\\\dir");
    }

    #[test]
    fn escaped_text_has_nothing_unsafe_left() {
        let all: String = (0..0x3000).filter_map(char::from_u32).collect();
        let escaped = escape(&all);
        assert!(!escaped.chars().any(relais_protocol::is_unsafe_to_display));
        assert_eq!(escaped.lines().count(), 1);
    }
}
