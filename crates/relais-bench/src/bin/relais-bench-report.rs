//! `relais-bench-report`: renders `BENCHMARKS.md` and its plots from the JSON
//! reports `bench/compare.sh`, `bench/slowlink.sh` and `bench/cluster.sh`
//! wrote.
//!
//! ```text
//! relais-bench-report --results bench/results --out BENCHMARKS.md \
//!     --plot bench/benchmarks.png --plot-link bench/benchmarks.png \
//!     --font /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
//! ```
//!
//! The matrix plot is drawn when there are matrix runs; the slow-link plot
//! (`slowlink.png` next to `--plot` unless `--slowlink-plot` says otherwise)
//! when there are slow-link runs. The slow-link setup is read from
//! `slowlink-meta.txt` in the results directory, if there is one, and the
//! cluster runs' setup (`bench/cluster.sh`) from `cluster-meta.txt`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Parser;
use relais_bench::render;

/// Renders BENCHMARKS.md and PNG plots from a directory of JSON reports.
#[derive(Debug, Parser)]
#[command(name = "relais-bench-report", version)]
struct Args {
    /// Directory of `*.json` reports (one JSON object per line).
    #[arg(long, default_value = "bench/results")]
    results: PathBuf,
    /// The Markdown file to write.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// The PNG to write.
    #[arg(long, default_value = "bench/benchmarks.png")]
    plot: PathBuf,
    /// How the Markdown links to the PNG (relative to the Markdown file).
    #[arg(long, default_value = "bench/benchmarks.png")]
    plot_link: String,
    /// The slow-link PNG to write. Default: `slowlink.png` next to --plot.
    #[arg(long)]
    slowlink_plot: Option<PathBuf>,
    /// How the Markdown links to the slow-link PNG. Default: `slowlink.png`
    /// next to --plot-link.
    #[arg(long)]
    slowlink_plot_link: Option<String>,
    /// A TTF font for the plot's text (Debian: fonts-dejavu-core).
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    font: PathBuf,
    /// The setup description shown verbatim (machine, versions).
    #[arg(long)]
    meta: Option<PathBuf>,
    /// Hand-written analysis appended to the file.
    #[arg(long)]
    notes: Option<PathBuf>,
}

/// The slow-link setup file in the results directory.
const SLOWLINK_META: &str = "slowlink-meta.txt";
/// The cluster setup file in the results directory.
const CLUSTER_META: &str = "cluster-meta.txt";
/// The slow-link plot's file name, next to the matrix plot.
const SLOWLINK_PNG: &str = "slowlink.png";

fn read_optional(path: Option<&Path>) -> anyhow::Result<String> {
    match path {
        Some(p) if p.exists() => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        }
        _ => Ok(String::new()),
    }
}

/// `name` in the directory of `link` (a `/`-separated relative path).
fn sibling_link(link: &str, name: &str) -> String {
    match link.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{name}"),
        None => name.to_owned(),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let reports = render::load_reports(&args.results)?;
    anyhow::ensure!(
        !reports.is_empty(),
        "no reports in {}",
        args.results.display()
    );
    let meta = read_optional(args.meta.as_deref())?;
    let notes = read_optional(args.notes.as_deref())?;
    let slowlink_meta = read_optional(Some(&args.results.join(SLOWLINK_META)))?;
    let cluster_meta = read_optional(Some(&args.results.join(CLUSTER_META)))?;
    let mut written = vec![args.out.display().to_string()];
    if reports.iter().any(|r| r.label == render::MATRIX) {
        render::plot(&reports, &args.plot, &args.font)?;
        written.push(args.plot.display().to_string());
    }
    let mut slowlink_link = String::new();
    if render::has_slowlink_runs(&reports) {
        let png = args
            .slowlink_plot
            .clone()
            .unwrap_or_else(|| args.plot.with_file_name(SLOWLINK_PNG));
        render::slowlink_plot(&reports, &png, &args.font)?;
        written.push(png.display().to_string());
        slowlink_link = args
            .slowlink_plot_link
            .clone()
            .unwrap_or_else(|| sibling_link(&args.plot_link, SLOWLINK_PNG));
    }
    let md = render::markdown_doc(
        &reports,
        &render::Doc {
            meta: &meta,
            notes: &notes,
            plot: &args.plot_link,
            slowlink_meta: &slowlink_meta,
            slowlink_plot: &slowlink_link,
            cluster_meta: &cluster_meta,
        },
    );
    std::fs::write(&args.out, md).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {} from {} runs", written.join(", "), reports.len());
    Ok(())
}
