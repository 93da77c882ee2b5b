//! `relais serve` settings: built-in defaults, then a TOML file
//! (`--config`), then command-line flags, each overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use relais_server::auth::Verifier;
use relais_server::config::MAX_RESUME_GRACE;
use relais_server::origins::AllowedOrigins;
use relais_server::Config;
use serde::Deserialize;

/// Flags of `relais serve`. Unset flags fall back to the config file, then to
/// the defaults given in each flag's help.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (durations in seconds, keys
    /// as the flag names with `_` for `-`); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on for TCP clients [default: 127.0.0.1:7777].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Address to listen on for WebSocket clients (browsers), at any path
    /// (`ws://ADDR/ws`) [default: 127.0.0.1:7778].
    #[arg(long)]
    pub ws_listen: Option<SocketAddr>,
    /// Also serve the live demo page (`http://WS-ADDR/`) and the browser
    /// client (`/relais.js`) on the WebSocket port.
    #[arg(long)]
    pub web: bool,
    /// Most connections served at once; past it clients are refused "server
    /// full". Lowered at start if the open-file limit cannot hold them
    /// [default: 10000].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Seconds a recipient's socket may take to accept a batch before it is
    /// dropped as a slow consumer [default: 5].
    #[arg(long)]
    pub write_deadline: Option<f64>,
    /// Seconds without traffic before the server pings a client (dropped
    /// after two unanswered pings) [default: 10].
    #[arg(long)]
    pub keepalive: Option<f64>,
    /// Seconds a new connection has to complete its handshake [default: 5].
    #[arg(long)]
    pub handshake_timeout: Option<f64>,
    /// Seconds clients get on shutdown to receive what is pending and the
    /// goodbye [default: 5].
    #[arg(long)]
    pub shutdown_grace: Option<f64>,
    /// Seconds the seat of a client that can resume is kept after its
    /// connection is lost (its name held, the room told nothing), for it to
    /// reconnect and take it back; 0 never keeps one; at most 300
    /// [default: 10].
    #[arg(long, value_name = "SECS")]
    pub resume_grace: Option<f64>,
    /// Messages a second one client may send; the excess is conflated
    /// (newest kept) [default: 120].
    #[arg(long)]
    pub max_message_rate: Option<u32>,
    /// Messages a client may send at once above the rate [default: 120].
    #[arg(long)]
    pub message_burst: Option<u32>,
    /// Most connections open at once from one address (IPv4 address or
    /// IPv6 /64); 0 for no limit [default: 64].
    #[arg(long)]
    pub max_connections_per_ip: Option<usize>,
    /// Connections from one address still in their handshake (TLS, HTTP
    /// upgrade, `HELLO`); 0 for no limit [default: 16].
    #[arg(long)]
    pub max_handshakes_per_ip: Option<usize>,
    /// Joins a second one address may make (bucket of `join_burst_per_ip`
    /// in the file); 0 for no limit [default: 10].
    #[arg(long)]
    pub max_joins_per_ip: Option<u32>,
    /// Most bytes of buffers the whole server may hold; new connections and
    /// joins are refused "server overloaded" past 7/8 of it
    /// [default: 536870912, 512 MiB].
    #[arg(long)]
    pub max_memory_bytes: Option<usize>,
    /// Serve TLS on both ports (`wss://` and `https://` on the WebSocket
    /// port) with this certificate chain (PEM, the server's certificate
    /// first); needs --tls-key. Reloaded on SIGHUP [default: plaintext].
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, RSA or SEC1).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Require a join token signed with HS256 and this shared secret: the
    /// file's bytes (one trailing newline trimmed), at least 32 of them.
    #[arg(long, value_name = "FILE")]
    pub token_secret_file: Option<PathBuf>,
    /// Require a join token signed with the private half of this PEM public
    /// key: Ed25519 (EdDSA) or RSA (RS256).
    #[arg(long, value_name = "FILE")]
    pub token_public_key: Option<PathBuf>,
    /// Accept WebSocket upgrades only from pages of these origins
    /// (scheme://host[:port], comma-separated); others get 403. Unset: any
    /// page on the web may connect.
    #[arg(long, value_name = "ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Serve Prometheus metrics (`/metrics`) and health checks (`/healthz`,
    /// `/readyz`) on this address; keep it private (a loopback or an
    /// internal address) [default: off, nothing counted].
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Join a cluster of relais nodes through this NATS server (JetStream
    /// on: `nats-server -js`), e.g. nats://127.0.0.1:4222 [default: none, a
    /// single server].
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
    /// Log lines as text (colour only on a terminal) or as one JSON object
    /// each, for log collectors [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// How `relais serve` writes its log (stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; span fields quoted and escaped.
    #[default]
    Text,
    /// One JSON object per line, span fields as JSON strings.
    Json,
}

/// The TOML file: every key optional, unknown keys refused.
#[derive(Deserialize, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    listen: Option<SocketAddr>,
    ws_listen: Option<SocketAddr>,
    web: Option<bool>,
    max_connections: Option<usize>,
    write_deadline: Option<f64>,
    keepalive: Option<f64>,
    handshake_timeout: Option<f64>,
    shutdown_grace: Option<f64>,
    resume_grace: Option<f64>,
    max_message_rate: Option<u32>,
    message_burst: Option<u32>,
    max_pending_bytes: Option<usize>,
    send_buffer_bytes: Option<usize>,
    flush_interval: Option<f64>,
    flood_factor: Option<u32>,
    flood_seconds: Option<u32>,
    max_connections_per_ip: Option<usize>,
    max_handshakes_per_ip: Option<usize>,
    max_joins_per_ip: Option<u32>,
    join_burst_per_ip: Option<u32>,
    max_memory_bytes: Option<usize>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    token_secret_file: Option<PathBuf>,
    token_public_key: Option<PathBuf>,
    allowed_origins: Option<Vec<String>>,
    metrics_listen: Option<SocketAddr>,
    cluster: Option<String>,
    log_format: Option<LogFormat>,
}

impl FileSettings {
    /// Reads and parses a settings file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid settings in {}", path.display()))
    }
}

/// Everything `relais serve` needs, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub listen: SocketAddr,
    pub ws_listen: SocketAddr,
    pub web: bool,
    pub config: Config,
    /// Certificate chain and key files, if both listeners speak TLS.
    pub tls: Option<TlsFiles>,
    /// Where the join-token key is, if tokens are required.
    pub token_key: Option<TokenKey>,
    pub allowed_origins: Option<AllowedOrigins>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The NATS server of the cluster this node joins, if any.
    pub cluster: Option<String>,
    pub log_format: LogFormat,
}

/// `--tls-cert` and `--tls-key`.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The key `relais serve` verifies join tokens with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKey {
    /// `--token-secret-file`: an HS256 shared secret.
    Secret(PathBuf),
    /// `--token-public-key`: an Ed25519 or RSA public key (PEM).
    PublicKey(PathBuf),
}

impl TokenKey {
    /// Reads the key; a missing file or an unfit key is a start-up error.
    pub fn load(&self) -> anyhow::Result<Verifier> {
        let (verifier, path) = match self {
            Self::Secret(path) => (Verifier::from_secret_file(path), path),
            Self::PublicKey(path) => (Verifier::from_public_key_file(path), path),
        };
        verifier.with_context(|| format!("unusable join-token key {}", path.display()))
    }
}

impl Settings {
    /// Flags over file over defaults.
    pub fn resolve(args: &ServeArgs, file: &FileSettings) -> anyhow::Result<Self> {
        let d = Config::default();
        let secs = |name: &str, flag: Option<f64>, file: Option<f64>, default: Duration| match flag
            .or(file)
        {
            None => Ok(default),
            Some(s) if s > 0.0 => Duration::try_from_secs_f64(s)
                .with_context(|| format!("{name} = {s} is not a usable number of seconds")),
            Some(s) => anyhow::bail!("{name} must be a positive number of seconds, not {s}"),
        };
        let positive = |name: &str, v: u32| {
            anyhow::ensure!(v > 0, "{name} must be at least 1");
            Ok(v)
        };
        let config = Config {
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(d.max_connections),
            handshake_timeout: secs(
                "handshake-timeout",
                args.handshake_timeout,
                file.handshake_timeout,
                d.handshake_timeout,
            )?,
            keepalive_interval: secs(
                "keepalive",
                args.keepalive,
                file.keepalive,
                d.keepalive_interval,
            )?,
            write_deadline: secs(
                "write-deadline",
                args.write_deadline,
                file.write_deadline,
                d.write_deadline,
            )?,
            max_pending_bytes: file.max_pending_bytes.unwrap_or(d.max_pending_bytes),
            send_buffer_bytes: file.send_buffer_bytes.unwrap_or(d.send_buffer_bytes),
            flush_interval: match file.flush_interval {
                None => d.flush_interval,
                Some(s) => Duration::try_from_secs_f64(s).with_context(|| {
                    format!("flush_interval = {s} is not a usable number of seconds")
                })?,
            },
            shutdown_grace: secs(
                "shutdown-grace",
                args.shutdown_grace,
                file.shutdown_grace,
                d.shutdown_grace,
            )?,
            max_message_rate: positive(
                "max-message-rate",
                args.max_message_rate
                    .or(file.max_message_rate)
                    .unwrap_or(d.max_message_rate),
            )?,
            message_burst: positive(
                "message-burst",
                args.message_burst
                    .or(file.message_burst)
                    .unwrap_or(d.message_burst),
            )?,
            flood_factor: positive("flood_factor", file.flood_factor.unwrap_or(d.flood_factor))?,
            flood_seconds: positive(
                "flood_seconds",
                file.flood_seconds.unwrap_or(d.flood_seconds),
            )?,
            max_connections_per_ip: args
                .max_connections_per_ip
                .or(file.max_connections_per_ip)
                .unwrap_or(d.max_connections_per_ip),
            max_handshakes_per_ip: args
                .max_handshakes_per_ip
                .or(file.max_handshakes_per_ip)
                .unwrap_or(d.max_handshakes_per_ip),
            max_joins_per_ip: args
                .max_joins_per_ip
                .or(file.max_joins_per_ip)
                .unwrap_or(d.max_joins_per_ip),
            join_burst_per_ip: positive(
                "join_burst_per_ip",
                file.join_burst_per_ip.unwrap_or(d.join_burst_per_ip),
            )?,
            max_memory_bytes: args
                .max_memory_bytes
                .or(file.max_memory_bytes)
                .unwrap_or(d.max_memory_bytes),
            resume_grace: resume_grace(args.resume_grace.or(file.resume_grace))?
                .unwrap_or(d.resume_grace),
        };
        // One largest frame must fit, or every recipient of one would be
        // dropped as a slow consumer.
        let min_pending = relais_protocol::LENGTH_PREFIX_LEN + relais_protocol::MAX_FRAME_LEN + 64;
        anyhow::ensure!(
            config.max_pending_bytes >= min_pending,
            "max_pending_bytes must be at least {min_pending} (one largest frame)"
        );
        anyhow::ensure!(
            config.max_connections >= 1,
            "max-connections must be at least 1"
        );
        // Room for one connection and one largest frame to a handful of
        // recipients, or nothing could ever be relayed.
        let min_memory = 1024 * 1024;
        anyhow::ensure!(
            config.max_memory_bytes >= min_memory,
            "max-memory-bytes must be at least {min_memory} (1 MiB)"
        );
        anyhow::ensure!(
            config.flush_interval <= Duration::from_secs(1),
            "flush_interval must be at most 1 second"
        );
        // The flood window is kept per connection in 100 ms slots.
        anyhow::ensure!(
            config.flood_seconds <= 60,
            "flood_seconds must be at most 60"
        );
        Ok(Self {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or(([127, 0, 0, 1], 7777).into()),
            ws_listen: args
                .ws_listen
                .or(file.ws_listen)
                .unwrap_or(([127, 0, 0, 1], 7778).into()),
            web: args.web || file.web.unwrap_or(false),
            config,
            tls: tls_files(args, file)?,
            token_key: token_key(args, file)?,
            allowed_origins: match args
                .allowed_origins
                .as_ref()
                .or(file.allowed_origins.as_ref())
            {
                Some(list) => Some(AllowedOrigins::new(list)?),
                None => None,
            },
            metrics_listen: args.metrics_listen.or(file.metrics_listen),
            cluster: match args.cluster.as_ref().or(file.cluster.as_ref()) {
                Some(url) if url.trim().is_empty() => {
                    anyhow::bail!("cluster: a NATS address is needed, e.g. nats://127.0.0.1:4222")
                }
                url => url.cloned(),
            },
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
        })
    }
}

/// `resume_grace`, if set: 0 (never park) to [`MAX_RESUME_GRACE`].
fn resume_grace(secs: Option<f64>) -> anyhow::Result<Option<Duration>> {
    let Some(s) = secs else {
        return Ok(None);
    };
    let max = MAX_RESUME_GRACE.as_secs();
    anyhow::ensure!(
        (0.0..=max as f64).contains(&s),
        "resume-grace must be 0 (never keep a lost member's seat) to {max} seconds, not {s}"
    );
    Ok(Some(Duration::from_secs_f64(s)))
}

/// The TLS files, flags over file; both or neither.
fn tls_files(args: &ServeArgs, file: &FileSettings) -> anyhow::Result<Option<TlsFiles>> {
    let cert = args.tls_cert.clone().or_else(|| file.tls_cert.clone());
    let key = args.tls_key.clone().or_else(|| file.tls_key.clone());
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (Some(_), None) => anyhow::bail!("tls-cert needs tls-key (the certificate's private key)"),
        (None, Some(_)) => anyhow::bail!("tls-key needs tls-cert (the certificate chain)"),
    }
}

/// The join-token key: a secret or a public key, not both (wherever each
/// is set, flag or file).
fn token_key(args: &ServeArgs, file: &FileSettings) -> anyhow::Result<Option<TokenKey>> {
    let secret = args
        .token_secret_file
        .as_ref()
        .or(file.token_secret_file.as_ref());
    let public = args
        .token_public_key
        .as_ref()
        .or(file.token_public_key.as_ref());
    match (secret, public) {
        (Some(_), Some(_)) => anyhow::bail!(
            "token-secret-file and token-public-key are both set: a server verifies with one key"
        ),
        (Some(path), None) => Ok(Some(TokenKey::Secret(path.clone()))),
        (None, Some(path)) => Ok(Some(TokenKey::PublicKey(path.clone()))),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_file_or_flags() {
        let s = Settings::resolve(&ServeArgs::default(), &FileSettings::default()).unwrap();
        assert_eq!(s.config, Config::default());
        assert_eq!(s.listen.to_string(), "127.0.0.1:7777");
        assert_eq!(s.ws_listen.to_string(), "127.0.0.1:7778");
        assert!(!s.web);
        assert_eq!(s.tls, None, "plaintext by default");
        assert_eq!(s.token_key, None);
        assert_eq!(s.allowed_origins, None);
        assert_eq!(s.metrics_listen, None, "no metrics unless asked");
        assert_eq!(s.log_format, LogFormat::Text);
    }

    #[test]
    fn metrics_and_log_format_from_flags_or_file() {
        let file: FileSettings =
            toml::from_str("metrics_listen = \"127.0.0.1:9477\"\nlog_format = \"json\"\n").unwrap();
        let s = Settings::resolve(&ServeArgs::default(), &file).unwrap();
        assert_eq!(s.metrics_listen, Some("127.0.0.1:9477".parse().unwrap()));
        assert_eq!(s.log_format, LogFormat::Json);
        let args = ServeArgs {
            metrics_listen: Some("127.0.0.1:1".parse().unwrap()),
            log_format: Some(LogFormat::Text),
            ..ServeArgs::default()
        };
        let s = Settings::resolve(&args, &file).unwrap();
        assert_eq!(s.metrics_listen, Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!(s.log_format, LogFormat::Text);
        let bad = toml::from_str::<FileSettings>("log_format = \"xml\"\n").unwrap_err();
        assert!(bad.to_string().contains("xml"), "{bad}");
    }

    #[test]
    fn tls_files_come_from_flags_or_file_and_go_in_pairs() {
        let file: FileSettings = toml::from_str(
            "tls_cert = \"/etc/relais/cert.pem\"\ntls_key = \"/etc/relais/key.pem\"\n",
        )
        .unwrap();
        let s = Settings::resolve(&ServeArgs::default(), &file).unwrap();
        let files = s.tls.unwrap();
        assert_eq!(files.cert, Path::new("/etc/relais/cert.pem"));
        assert_eq!(files.key, Path::new("/etc/relais/key.pem"));
        let args = ServeArgs {
            tls_cert: Some("new.pem".into()),
            ..ServeArgs::default()
        };
        let s = Settings::resolve(&args, &file).unwrap();
        assert_eq!(s.tls.unwrap().cert, Path::new("new.pem"));
        for (cert, key, missing) in [
            (Some("c.pem"), None, "tls-key"),
            (None, Some("k.pem"), "tls-cert"),
        ] {
            let args = ServeArgs {
                tls_cert: cert.map(PathBuf::from),
                tls_key: key.map(PathBuf::from),
                ..ServeArgs::default()
            };
            let err = Settings::resolve(&args, &FileSettings::default()).unwrap_err();
            assert!(err.to_string().contains(missing), "{err}");
        }
    }

    #[test]
    fn token_keys_and_origins_from_flags_or_file_one_key_only() {
        let file: FileSettings = toml::from_str(
            "token_public_key = \"keys/relais.pub\"\nallowed_origins = [\"https://game.example\"]\n",
        )
        .unwrap();
        let s = Settings::resolve(&ServeArgs::default(), &file).unwrap();
        assert_eq!(
            s.token_key,
            Some(TokenKey::PublicKey("keys/relais.pub".into()))
        );
        let origins = s.allowed_origins.unwrap();
        assert!(origins.allows(Some("https://game.example")));
        assert!(!origins.allows(Some("https://other.example")));

        let args = ServeArgs {
            allowed_origins: Some(vec!["https://other.example".into()]),
            ..ServeArgs::default()
        };
        let s = Settings::resolve(&args, &file).unwrap();
        assert!(s
            .allowed_origins
            .unwrap()
            .allows(Some("https://other.example")));

        let both = ServeArgs {
            token_secret_file: Some("secret".into()),
            ..ServeArgs::default()
        };
        let err = Settings::resolve(&both, &file).unwrap_err();
        assert!(err.to_string().contains("both set"), "{err}");
        let s = Settings::resolve(&both, &FileSettings::default()).unwrap();
        assert_eq!(s.token_key, Some(TokenKey::Secret("secret".into())));

        let bad = ServeArgs {
            allowed_origins: Some(vec!["game.example".into()]),
            ..ServeArgs::default()
        };
        let err = Settings::resolve(&bad, &FileSettings::default()).unwrap_err();
        assert!(err.to_string().contains("game.example"), "{err}");
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file: FileSettings = toml::from_str(
            "listen = \"0.0.0.0:9000\"\nwrite_deadline = 2.5\nmax_message_rate = 60\nflood_seconds = 3\n",
        )
        .unwrap();
        let args = ServeArgs {
            max_message_rate: Some(240),
            ..ServeArgs::default()
        };
        let s = Settings::resolve(&args, &file).unwrap();
        assert_eq!(s.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(s.config.write_deadline, Duration::from_millis(2500));
        assert_eq!(s.config.max_message_rate, 240);
        assert_eq!(s.config.flood_seconds, 3);
        assert_eq!(
            s.config.keepalive_interval,
            Config::default().keepalive_interval
        );
    }

    #[test]
    fn resume_grace_is_zero_to_300_seconds() {
        let grace = |flag: Option<f64>, file: &str| {
            let file: FileSettings = toml::from_str(file).unwrap();
            let args = ServeArgs {
                resume_grace: flag,
                ..ServeArgs::default()
            };
            Settings::resolve(&args, &file).map(|s| s.config.resume_grace)
        };
        assert_eq!(grace(None, "").unwrap(), Duration::from_secs(10));
        assert_eq!(grace(None, "resume_grace = 0\n").unwrap(), Duration::ZERO);
        assert_eq!(
            grace(None, "resume_grace = 300\n").unwrap(),
            Duration::from_secs(300)
        );
        assert_eq!(
            grace(Some(0.25), "resume_grace = 300\n").unwrap(),
            Duration::from_millis(250),
            "the flag wins"
        );
        for (flag, file) in [
            (Some(301.0), ""),
            (None, "resume_grace = 301\n"),
            (None, "resume_grace = 300.5\n"),
            (Some(-1.0), ""),
            (Some(f64::NAN), ""),
        ] {
            let err = grace(flag, file).unwrap_err().to_string();
            assert!(err.contains("resume-grace") && err.contains("300"), "{err}");
        }
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        let unknown = toml::from_str::<FileSettings>("max_conections = 5\n").unwrap_err();
        assert!(unknown.to_string().contains("max_conections"), "{unknown}");
        let args = ServeArgs {
            keepalive: Some(0.0),
            ..ServeArgs::default()
        };
        let err = Settings::resolve(&args, &FileSettings::default()).unwrap_err();
        assert!(err.to_string().contains("keepalive"), "{err}");
        for bad in [
            "flood_seconds = 0\n",
            "max_pending_bytes = 1000\n",
            "max_connections = 0\n",
            "flush_interval = 5.0\n",
            "max_memory_bytes = 1048575\n",
            "join_burst_per_ip = 0\n",
            "flood_seconds = 61\n",
        ] {
            let file: FileSettings = toml::from_str(bad).unwrap();
            assert!(
                Settings::resolve(&ServeArgs::default(), &file).is_err(),
                "{bad}"
            );
        }
    }

    /// The file keys the binary accepts, read off serde's "unknown field"
    /// error, which lists them all.
    fn accepted_keys() -> Vec<String> {
        let err = toml::from_str::<FileSettings>("no_such_key = 1\n").unwrap_err();
        let text = err.to_string();
        let list = text.split("expected one of").nth(1).expect(&text);
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn security_md_lists_exactly_the_file_keys() {
        let doc = include_str!("../../../SECURITY.md");
        let section = doc
            .split("## Settings: flags and file keys")
            .nth(1)
            .expect("SECURITY.md has the settings section");
        let documented: Vec<String> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .map(str::to_string)
            .collect();
        let mut accepted = accepted_keys();
        let mut sorted = documented.clone();
        accepted.sort();
        sorted.sort();
        assert_eq!(sorted, accepted, "SECURITY.md's table vs the TOML keys");
        // Every documented flag exists.
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let flag = line.split('|').nth(2).unwrap().trim();
            if let Some(flag) = flag.strip_prefix("`--") {
                let flag = flag.trim_end_matches('`');
                let known = <ServeArgs as clap::Args>::augment_args(clap::Command::new("t"))
                    .get_arguments()
                    .any(|a| a.get_long() == Some(flag));
                assert!(known, "--{flag} is documented but not a flag");
            }
        }
    }

    /// deploy/relais.toml, the sample settings of a production server.
    const SAMPLE: &str = include_str!("../../../deploy/relais.toml");

    /// The one key the sample shows commented out instead of setting: a
    /// server verifies join tokens with a secret or a public key, never both
    /// (both is a start-up error), and the sample sets the secret.
    const SAMPLE_COMMENTED_OUT: &str = "token_public_key";

    /// Keys the sample shows commented out because setting them changes
    /// what the server is: `cluster` needs a NATS server.
    const SAMPLE_OPTIONAL: &[&str] = &["cluster"];

    fn resolve_sample(text: &str) -> anyhow::Result<Settings> {
        let file: FileSettings = toml::from_str(text)?;
        Settings::resolve(&ServeArgs::default(), &file)
    }

    #[test]
    fn the_sample_config_sets_every_key_but_the_one_exclusive_token_key() {
        let table: toml::Table = toml::from_str(SAMPLE).unwrap();
        let mut set: Vec<String> = table.keys().cloned().collect();
        let mut expected: Vec<String> = accepted_keys()
            .into_iter()
            .filter(|k| k != SAMPLE_COMMENTED_OUT && !SAMPLE_OPTIONAL.contains(&k.as_str()))
            .collect();
        set.sort();
        expected.sort();
        assert_eq!(set, expected, "deploy/relais.toml's keys vs the TOML keys");
        for key in SAMPLE_OPTIONAL {
            let line = format!("# {key} = ");
            let value = SAMPLE
                .lines()
                .find_map(|l| l.strip_prefix(&line))
                .unwrap_or_else(|| panic!("the sample shows {key} commented out"));
            let set = format!("{SAMPLE}\n{key} = {value}\n");
            resolve_sample(&set).unwrap_or_else(|e| panic!("{key} = {value}: {e}"));
        }

        // The exception is shown, commented out, and is a real one: set as
        // well, the sample is refused; set instead, as its comment says,
        // it is accepted.
        let commented = format!("# {SAMPLE_COMMENTED_OUT} = ");
        let value = SAMPLE
            .lines()
            .find_map(|l| l.strip_prefix(&commented))
            .expect("the sample shows token_public_key commented out");
        let both = format!("{SAMPLE}\n{SAMPLE_COMMENTED_OUT} = {value}\n");
        let err = resolve_sample(&both).unwrap_err();
        assert!(err.to_string().contains("both set"), "{err}");
        let swapped = SAMPLE
            .replace("\ntoken_secret_file = ", "\n# token_secret_file = ")
            .replace(
                &format!("\n{commented}"),
                &format!("\n{SAMPLE_COMMENTED_OUT} = "),
            );
        let s = resolve_sample(&swapped).unwrap();
        let Some(TokenKey::PublicKey(public)) = s.token_key else {
            panic!("{:?}", s.token_key);
        };
        assert!(public.starts_with("/etc/relais/"), "{}", public.display());
    }

    #[test]
    fn the_sample_config_is_accepted_and_fit_for_production() {
        let s = resolve_sample(SAMPLE).unwrap();
        assert!(s.listen.ip().is_unspecified(), "clients from anywhere");
        assert!(s.ws_listen.ip().is_unspecified(), "browsers from anywhere");
        let ops = s.metrics_listen.expect("metrics on");
        assert!(ops.ip().is_loopback(), "the metrics listener stays private");
        assert_eq!(ops.port(), 9477);
        assert_eq!(s.log_format, LogFormat::Json);
        assert!(!s.web, "no demo page in production");
        assert!(s.allowed_origins.is_some());
        // Every file it names is in /etc/relais, the unit's
        // ConfigurationDirectory.
        let tls = s.tls.expect("TLS on");
        let Some(TokenKey::Secret(secret)) = s.token_key else {
            panic!("a token secret");
        };
        for path in [&tls.cert, &tls.key, &secret] {
            assert!(path.starts_with("/etc/relais/"), "{}", path.display());
        }
    }

    /// A setting's value as the sample's "Default:" comments write it.
    #[derive(Debug, PartialEq)]
    enum Shown {
        /// A number in `unit` ("" for a count).
        Number(f64, &'static str),
        /// Anything else, or "none" when unset.
        Text(String),
    }

    /// Every file key with its value in `s`.
    fn shown(s: &Settings) -> Vec<(&'static str, Shown)> {
        use Shown::{Number, Text};
        let c = &s.config;
        let count = |n: f64| Number(n, "");
        let seconds = |d: Duration| Number(d.as_secs_f64(), "seconds");
        let bytes = |n: usize| Number(n as f64, "bytes");
        let text = |t: Option<String>| Text(t.unwrap_or_else(|| "none".into()));
        let tls =
            |f: fn(&TlsFiles) -> &PathBuf| text(s.tls.as_ref().map(|t| f(t).display().to_string()));
        let token = |public: bool| {
            text(s.token_key.as_ref().and_then(|k| match (k, public) {
                (TokenKey::Secret(p), false) | (TokenKey::PublicKey(p), true) => {
                    Some(p.display().to_string())
                }
                _ => None,
            }))
        };
        vec![
            ("listen", Text(s.listen.to_string())),
            ("ws_listen", Text(s.ws_listen.to_string())),
            ("web", Text(s.web.to_string())),
            (
                "metrics_listen",
                text(s.metrics_listen.map(|a| a.to_string())),
            ),
            ("cluster", text(s.cluster.clone())),
            (
                "log_format",
                Text(format!("{:?}", s.log_format).to_lowercase()),
            ),
            ("tls_cert", tls(|t| &t.cert)),
            ("tls_key", tls(|t| &t.key)),
            ("token_secret_file", token(false)),
            ("token_public_key", token(true)),
            (
                "allowed_origins",
                text(s.allowed_origins.as_ref().map(|o| o.to_string())),
            ),
            ("max_connections", count(c.max_connections as f64)),
            (
                "max_connections_per_ip",
                count(c.max_connections_per_ip as f64),
            ),
            (
                "max_handshakes_per_ip",
                count(c.max_handshakes_per_ip as f64),
            ),
            ("max_joins_per_ip", count(f64::from(c.max_joins_per_ip))),
            ("join_burst_per_ip", count(f64::from(c.join_burst_per_ip))),
            ("handshake_timeout", seconds(c.handshake_timeout)),
            ("keepalive", seconds(c.keepalive_interval)),
            ("write_deadline", seconds(c.write_deadline)),
            ("shutdown_grace", seconds(c.shutdown_grace)),
            ("resume_grace", seconds(c.resume_grace)),
            ("flush_interval", seconds(c.flush_interval)),
            ("max_message_rate", count(f64::from(c.max_message_rate))),
            ("message_burst", count(f64::from(c.message_burst))),
            ("flood_factor", count(f64::from(c.flood_factor))),
            (
                "flood_seconds",
                Number(f64::from(c.flood_seconds), "seconds"),
            ),
            ("max_memory_bytes", bytes(c.max_memory_bytes)),
            ("max_pending_bytes", bytes(c.max_pending_bytes)),
            ("send_buffer_bytes", bytes(c.send_buffer_bytes)),
        ]
    }

    /// The comment lines right above `key`'s line in the sample (set or
    /// commented out), nearest last.
    fn comment_above(key: &str) -> Vec<&'static str> {
        let lines: Vec<&str> = SAMPLE.lines().collect();
        let at = lines
            .iter()
            .position(|l| {
                l.strip_prefix("# ")
                    .unwrap_or(l)
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.starts_with(" = "))
            })
            .unwrap_or_else(|| panic!("no line for {key} in the sample"));
        let start = lines[..at]
            .iter()
            .rposition(|l| !l.starts_with('#'))
            .map_or(0, |i| i + 1);
        lines[start..at].to_vec()
    }

    #[test]
    fn the_sample_configs_defaults_are_the_binarys_and_its_limits_are_them() {
        let defaults =
            shown(&Settings::resolve(&ServeArgs::default(), &FileSettings::default()).unwrap());
        let sample = shown(&resolve_sample(SAMPLE).unwrap());
        let mut keys: Vec<&str> = defaults.iter().map(|(k, _)| *k).collect();
        let mut accepted = accepted_keys();
        keys.sort_unstable();
        accepted.sort();
        assert_eq!(keys, accepted, "shown() covers every file key");

        for ((key, default), (_, value)) in defaults.iter().zip(&sample) {
            let comment = comment_above(key);
            let claim = comment
                .iter()
                .rev()
                .find_map(|l| l.strip_prefix("# Default: "))
                .unwrap_or_else(|| panic!("{key}: no \"# Default: \" line in {comment:#?}"));
            let first = claim
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_end_matches(['.', ',']);
            match default {
                Shown::Number(n, unit) => {
                    let claimed: f64 = first.parse().unwrap_or_else(|_| {
                        panic!("{key}: {claim:?} does not start with a number")
                    });
                    assert_eq!(claimed, *n, "{key}: the sample says {claim:?}");
                    assert!(claim.contains(unit), "{key}: {claim:?} does not say {unit}");
                    // A limit differs from the default only on purpose,
                    // and says so.
                    if value != default {
                        assert!(
                            comment
                                .iter()
                                .any(|l| l.to_lowercase().contains("deliberately")),
                            "{key} = {value:?}, not the default {n}: say it deliberately differs"
                        );
                    }
                }
                Shown::Text(t) => assert_eq!(first, t, "{key}: the sample says {claim:?}"),
            }
        }
    }
}
