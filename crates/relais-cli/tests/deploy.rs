//! The deployment files of `deploy/` and README.md's "Run it in production"
//! against the real thing: the systemd unit through `systemd-analyze` and
//! against the sample settings, the Grafana dashboard's queries and the
//! README's table of metrics against a scrape of a running `relais serve`.
//! (deploy/relais.toml itself is checked in `settings::tests`.)
//!
//! Needs `systemd-analyze`: Debian's `systemd` package.

#![cfg(target_os = "linux")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNIT: &str = include_str!("../../../deploy/relais.service");
const SAMPLE: &str = include_str!("../../../deploy/relais.toml");
const DASHBOARD: &str = include_str!("../../../deploy/grafana-dashboard.json");
const README: &str = include_str!("../../../README.md");

mod common;
use common::{http_get, metrics_addr, serve_with};

// --- The systemd unit -------------------------------------------------------

/// `systemd-analyze`, or a failure saying what to install.
fn systemd_analyze() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("systemd-analyze"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "systemd-analyze is not installed: it checks deploy/relais.service; \
             install Debian's `systemd` package (apt-get install systemd)"
        )
    })
}

/// `unit` written to `dir`, starting `program` instead of the deployed
/// binary (systemd-analyze checks that ExecStart's program exists).
fn unit_starting(dir: &Path, unit: &str, program: &str) -> PathBuf {
    let deployed = "ExecStart=/usr/local/bin/relais ";
    assert_eq!(unit.matches(deployed).count(), 1, "one ExecStart");
    assert!(!program.contains(char::is_whitespace), "{program}");
    let path = dir.join("relais.service");
    std::fs::write(
        &path,
        unit.replace(deployed, &format!("ExecStart={program} ")),
    )
    .unwrap();
    path
}

/// The unit as deployed but starting the binary under test.
fn unit_for_test(dir: &Path, unit: &str) -> PathBuf {
    unit_starting(dir, unit, env!("CARGO_BIN_EXE_relais"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("systemd-analyze runs");
    eprintln!(
        "{cmd:?}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `systemd-analyze verify` on `unit`: its status and the stderr lines
/// about the unit (warnings name the file, or the unit).
fn verify(unit: &Path) -> (bool, Vec<String>) {
    let out = run(Command::new(systemd_analyze()).arg("verify").arg(unit));
    let about_it = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("relais.service"))
        .map(str::to_string)
        .collect();
    (out.status.success(), about_it)
}

#[test]
fn the_systemd_unit_passes_systemd_analyze() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path(), UNIT);
    let (ok, warnings) = verify(&unit);
    assert!(ok, "systemd-analyze verify failed: {warnings:#?}");
    assert_eq!(
        warnings,
        Vec::<String>::new(),
        "systemd-analyze verify warns"
    );

    // The check is real here (no running systemd is needed): a misspelt
    // value and a missing program are reported.
    let broken = UNIT.replace("ProtectSystem=strict", "ProtectSystem=strictly");
    let (_, warnings) = verify(&unit_for_test(dir.path(), &broken));
    assert!(
        warnings.iter().any(|w| w.contains("strictly")),
        "a bad value goes unnoticed: {warnings:#?}"
    );
    let nowhere = dir.path().join("no-such-relais");
    let (ok, _) = verify(&unit_starting(dir.path(), UNIT, nowhere.to_str().unwrap()));
    assert!(!ok, "a missing ExecStart program goes unnoticed");

    // And the hardening holds: systemd's own exposure score (0 to 10, lower
    // is safer; --threshold counts tenths) is 2 at most.
    let out = run(Command::new(systemd_analyze())
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&unit));
    assert!(out.status.success(), "exposure above 2.0 (see above)");
}

/// The unit's `Key=value` lines (the last of each key, as systemd reads
/// them; empty values kept).
fn unit_settings() -> BTreeMap<&'static str, &'static str> {
    UNIT.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .collect()
}

fn sample() -> toml::Table {
    toml::from_str(SAMPLE).unwrap()
}

#[test]
fn the_unit_runs_the_sample_config_hardened() {
    let unit = unit_settings();
    assert_eq!(
        unit["ExecStart"],
        "/usr/local/bin/relais serve --config /etc/relais/relais.toml"
    );
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("CapabilityBoundingSet", ""),
        ("ConfigurationDirectory", "relais"),
        ("KillSignal", "SIGTERM"),
        ("Restart", "on-failure"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert_eq!(unit.get(key), Some(&value), "{key}");
    }
    assert!(UNIT.contains("\nSystemCallFilter=@system-service\n"));
}

#[test]
fn the_units_limits_fit_the_sample_config() {
    let unit = unit_settings();
    let sample = sample();
    // One descriptor per connection plus the reserve relais keeps.
    let nofile: u64 = unit["LimitNOFILE"].parse().unwrap();
    let connections = sample["max_connections"].as_integer().unwrap() as u64;
    let reserve = relais_server::fdlimit::reserve_for(nofile);
    assert!(
        nofile - reserve >= connections,
        "LimitNOFILE={nofile} keeps {reserve} in reserve: fewer than {connections} connections"
    );
    // The stop timeout outlasts the graceful shutdown.
    let stop: f64 = unit["TimeoutStopSec"].parse().unwrap();
    let grace = match &sample["shutdown_grace"] {
        toml::Value::Integer(n) => *n as f64,
        other => other.as_float().unwrap(),
    };
    assert!(
        stop > grace + relais_server::session::LINGER.as_secs_f64(),
        "TimeoutStopSec={stop} does not outlast shutdown_grace {grace} s + the linger time"
    );
}

// --- A scrape of the real server --------------------------------------------

/// A scrape: each sample name with its labels and their values, and each
/// family (`# TYPE` line) with its type.
#[derive(Debug, Default)]
struct Scrape {
    samples: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    families: BTreeMap<String, String>,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut scrape = Self::default();
        for line in text.lines() {
            if let Some(family) = line.strip_prefix("# TYPE ") {
                let (name, kind) = family.split_once(' ').unwrap();
                scrape.families.insert(name.into(), kind.into());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let end = line.find(['{', ' ']).unwrap();
            let labels = scrape.samples.entry(line[..end].into()).or_default();
            if line[end..].starts_with('{') {
                let (matchers, _) = parse_braces(&line[end..]);
                for (key, _, value) in matchers {
                    labels.entry(key).or_default().insert(value);
                }
            }
        }
        scrape
    }

    /// The sample names `family` is queried by.
    fn names_of(&self, family: &str) -> Vec<String> {
        match self.families[family].as_str() {
            "counter" => vec![format!("{family}_total")],
            "info" => vec![format!("{family}_info")],
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{family}{s}"))
                .collect(),
            _ => vec![family.to_string()],
        }
    }
}

/// `{key op "value", ...}` at the start of `text`: the matchers (or, in
/// an exposition, labels with op `=`) and the length taken.
fn parse_braces(text: &str) -> (Vec<(String, String, String)>, usize) {
    assert!(text.starts_with('{'), "{text}");
    let mut out = Vec::new();
    let mut rest = &text[1..];
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix('}') {
            return (out, text.len() - after.len());
        }
        let op_at = rest.find(['=', '!']).expect("a matcher");
        let key = rest[..op_at].trim().to_string();
        rest = &rest[op_at..];
        let op_len = rest.find('"').expect("a quoted value");
        let op = rest[..op_len].to_string();
        rest = &rest[op_len + 1..];
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().expect("a closing quote") {
                (i, '"') => break i,
                (_, '\\') => value.push(chars.next().unwrap().1),
                (_, c) => value.push(c),
            }
        };
        rest = &rest[end + 1..];
        out.push((key, op, value));
    }
}

/// Labels a query may select on that the server does not export: the
/// target labels Prometheus adds to every series.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// The metric names in a PromQL expression (`relais_*`, `process_*`), each
/// with the matchers in braces right after it; and the labels of its
/// `by (...)` and `without (...)` clauses.
#[allow(clippy::type_complexity)]
fn metrics_in(expr: &str) -> (Vec<(String, Vec<(String, String, String)>)>, Vec<String>) {
    let mut metrics = Vec::new();
    let mut grouping = Vec::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut i = 0;
    while i < expr.len() {
        let rest = &expr[i..];
        let c = rest.chars().next().unwrap();
        if c == '"' {
            // A string literal: skip it.
            let close = rest[1..].find('"').unwrap();
            i += close + 2;
            continue;
        }
        if !ident(c) {
            i += c.len_utf8();
            continue;
        }
        let len = rest.find(|c: char| !ident(c)).unwrap_or(rest.len());
        let word = &rest[..len];
        i += len;
        let after = &expr[i..];
        if word.starts_with("relais_") || word.starts_with("process_") {
            let mut matchers = Vec::new();
            if after.starts_with('{') {
                let (m, taken) = parse_braces(after);
                matchers = m;
                i += taken;
            }
            metrics.push((word.to_string(), matchers));
        } else if word == "by" || word == "without" {
            let list = after.trim_start();
            let list = list.strip_prefix('(').expect("a label list");
            let close = list.find(')').unwrap();
            grouping.extend(list[..close].split(',').map(|l| l.trim().to_string()));
        }
    }
    (metrics, grouping)
}

/// Every query in `value`: the panels' `expr` and the variables'
/// `definition`.
fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = stack.pop() {
        if let Some(nested) = panel.get("panels").and_then(|p| p.as_array()) {
            stack.extend(nested);
        }
        out.push(panel);
    }
    out
}

fn scrape() -> Scrape {
    // Dropped at the end: killed.
    let (server, _) = serve_with(&["--metrics-listen", "127.0.0.1:0"], "warn");
    let ops = metrics_addr(&server);
    let get = |path| http_get(&ops, path).unwrap();
    assert_eq!(get("/healthz"), (200, "ok\n".into()));
    assert_eq!(get("/readyz"), (200, "ready\n".into()));
    let (status, body) = get("/metrics");
    assert_eq!(status, 200);
    assert!(body.ends_with("# EOF\n"), "{body}");
    Scrape::parse(&body)
}

#[test]
fn every_metric_of_the_dashboard_is_served_and_every_served_family_is_shown() {
    let scrape = scrape();
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    assert_eq!(dashboard["schemaVersion"], 39);

    // Every panel queries through the data-source variable.
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(variables.iter().any(|v| v["name"] == "datasource"
        && v["type"] == "datasource"
        && v["query"] == "prometheus"));
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate id {}",
            panel["id"]
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}");
        }
    }

    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    let mut used = BTreeSet::new();
    for expr in &all {
        let (metrics, grouping) = metrics_in(expr);
        assert!(
            !metrics.is_empty(),
            "no relais or process metric in {expr:?}"
        );
        for (name, matchers) in &metrics {
            let labels = scrape
                .samples
                .get(name)
                .unwrap_or_else(|| panic!("{name} (in {expr:?}) is not served"));
            for (key, op, value) in matchers {
                if TARGET_LABELS.contains(&key.as_str()) {
                    continue;
                }
                let values = labels
                    .get(key)
                    .unwrap_or_else(|| panic!("{name} has no label {key:?} (in {expr:?})"));
                if (op == "=" || op == "!=") && !value.contains('$') {
                    assert!(
                        values.contains(value),
                        "{name}{{{key}={value:?}}} is never served"
                    );
                }
            }
            used.insert(name.clone());
        }
        for label in grouping {
            let known = TARGET_LABELS.contains(&label.as_str())
                || metrics
                    .iter()
                    .any(|(name, _)| scrape.samples[name].contains_key(&label));
            assert!(known, "no metric in {expr:?} has the label {label:?}");
        }
    }
    for family in scrape.families.keys() {
        assert!(
            scrape.names_of(family).iter().any(|n| used.contains(n)),
            "the dashboard shows nothing of {family}"
        );
    }
}

#[test]
fn the_readme_lists_every_metric_with_its_type_and_labels() {
    let scrape = scrape();
    let section = README
        .split("\n## Run it in production\n")
        .nth(1)
        .expect("README.md has \"## Run it in production\"");
    let section = section.split("\n## ").next().unwrap();
    // | `name` | type | `label`, `label` | meaning |
    let mut documented = BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`');
        if !(name.starts_with("relais_") || name.starts_with("process_")) {
            continue;
        }
        let labels: BTreeSet<String> = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_string())
            .filter(|l| !l.is_empty())
            .collect();
        documented.insert(name.to_string(), (cells[2].to_string(), labels));
    }
    let mut served = BTreeMap::new();
    for (family, kind) in &scrape.families {
        // Histograms are listed by family, the rest by their sample's name.
        let name = match kind.as_str() {
            "histogram" => family.clone(),
            _ => scrape.names_of(family).remove(0),
        };
        let sample = scrape.names_of(family).remove(0);
        let labels: BTreeSet<String> = scrape.samples[&sample]
            .keys()
            .filter(|l| *l != "le")
            .cloned()
            .collect();
        served.insert(name, (kind.clone(), labels));
    }
    assert_eq!(documented, served, "README.md's metrics vs a scrape");
}
