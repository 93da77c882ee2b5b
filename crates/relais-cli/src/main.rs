//! `relais`: the relay server and its command-line clients.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use relais::{Client, Event, Message, TlsOptions};
use relais_server::tls::TlsConfig;
use settings::{FileSettings, ServeArgs, Settings};
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
    Serve(ServeArgs),
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
}

fn default_watch_name() -> String {
    format!("watch-{}", std::process::id())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Chat { name, target } => chat(&name, &target),
        Command::Watch { name, target } => watch(&name, &target),
        Command::Rooms { server, tls } => rooms(&server, &tls),
        Command::Token(args) => token::mint(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relais: {e:#}");
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
    } = Settings::resolve(&args, &file)?;
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
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let ws_listener = tokio::net::TcpListener::bind(ws_listen)
            .await
            .with_context(|| format!("cannot listen on {ws_listen}"))?;
        let mut server = relais_server::Server::with_context(ctx);
        if let Some(tls) = tls {
            #[cfg(unix)]
            tokio::spawn(reload_on_sighup(tls.clone())?);
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
        let ws_server = server.clone();
        let ws = tokio::spawn(async move { ws_server.accept_ws(ws_listener, pages).await });
        server.serve_tcp(listener, shutdown_signal()).await;
        let _ = ws.await;
        tracing::info!("shut down");
        Ok(())
    })
}

/// Installs the SIGHUP handler (now, so a SIGHUP right after the start is
/// not fatal) and returns the task that reloads the certificate on each one.
/// A failed reload keeps the certificate in use.
#[cfg(unix)]
fn reload_on_sighup(
    tls: TlsConfig,
) -> anyhow::Result<impl std::future::Future<Output = ()> + Send> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup()).context("install SIGHUP handler")?;
    Ok(async move {
        while hangup.recv().await.is_some() {
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
    let mut builder = Client::builder(name).echo(echo);
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
        "joined room {:?} as {name:?}; members: {}",
        client.room(),
        client.members().join(", ")
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
        "watching room {:?}; members: {}",
        client.room(),
        client.members().join(", ")
    );
    print_events(&client);
    ended(client.status())
}

/// Prints every event until the connection ends.
fn print_events(client: &Client) {
    let stdout = std::io::stdout();
    while let Ok(event) = client.recv_event_blocking() {
        let mut out = stdout.lock();
        let _ = match event {
            Event::Message(Message { sender, payload }) => {
                writeln!(out, "{sender}: {}", String::from_utf8_lossy(&payload))
            }
            Event::Joined(name) => writeln!(out, "* {name} joined"),
            Event::Left { name, reason } => writeln!(out, "* {name} left ({reason})"),
            other => writeln!(out, "* {other:?}"),
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
        println!("{}\t{}", room.name, room.members);
    }
    Ok(())
}
