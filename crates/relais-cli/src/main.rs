//! `relais`: the relay server and its command-line clients.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use relais::{Client, Event, Message};
use tracing_subscriber::EnvFilter;

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
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on for TCP clients.
    #[arg(long, default_value = "127.0.0.1:7777")]
    listen: SocketAddr,
    /// Most connections served at once; past it clients are refused "server full".
    #[arg(long, default_value_t = relais_server::Config::default().max_connections)]
    max_connections: usize,
    /// Seconds a recipient may stay unwritable before it is dropped as a slow consumer.
    #[arg(long, default_value_t = relais_server::Config::default().write_deadline.as_secs_f64())]
    write_deadline: f64,
    /// Seconds without traffic before the server pings a client (dropped after two unanswered pings).
    #[arg(long, default_value_t = relais_server::Config::default().keepalive_interval.as_secs_f64())]
    keepalive: f64,
    /// Seconds a new connection has to complete its handshake.
    #[arg(long, default_value_t = relais_server::Config::default().handshake_timeout.as_secs_f64())]
    handshake_timeout: f64,
    /// Seconds clients get on shutdown to receive what is pending and the goodbye.
    #[arg(long, default_value_t = relais_server::Config::default().shutdown_grace.as_secs_f64())]
    shutdown_grace: f64,
}

#[derive(Args)]
struct Target {
    /// The server to connect to.
    #[arg(long, default_value = "127.0.0.1:7777")]
    server: String,
    /// The room to join (the server's default room if not given).
    #[arg(long)]
    room: Option<String>,
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
        Command::Rooms { server } => rooms(&server),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relais: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn seconds(name: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("--{name} must be a positive number"))
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = relais_server::Config {
        max_connections: args.max_connections,
        write_deadline: seconds("write-deadline", args.write_deadline)?,
        keepalive_interval: seconds("keepalive", args.keepalive)?,
        handshake_timeout: seconds("handshake-timeout", args.handshake_timeout)?,
        shutdown_grace: seconds("shutdown-grace", args.shutdown_grace)?,
        ..relais_server::Config::default()
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        // On stdout, for scripts and tests that listen on port 0.
        println!("relais listening on {}", listener.local_addr()?);
        let server = relais_server::Server::new(config);
        server.serve_tcp(listener, shutdown_signal()).await;
        tracing::info!("shut down");
        Ok(())
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

fn rooms(server: &str) -> anyhow::Result<()> {
    let rooms =
        relais::list_rooms(server).with_context(|| format!("cannot list rooms of {server}"))?;
    if rooms.is_empty() {
        println!("no rooms");
    }
    for room in rooms {
        println!("{}\t{}", room.name, room.members);
    }
    Ok(())
}
