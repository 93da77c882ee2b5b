//! `relais-bench-report`: renders `BENCHMARKS.md` and its plot from the JSON
//! reports `bench/compare.sh` wrote.
//!
//! ```text
//! relais-bench-report --results bench/results --out BENCHMARKS.md \
//!     --plot bench/benchmarks.png --plot-link bench/benchmarks.png \
//!     --font /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use relais_bench::render;

/// Renders BENCHMARKS.md and a PNG plot from a directory of JSON reports.
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

fn read_optional(path: Option<&PathBuf>) -> anyhow::Result<String> {
    match path {
        Some(p) if p.exists() => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        }
        _ => Ok(String::new()),
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
    let meta = read_optional(args.meta.as_ref())?;
    let notes = read_optional(args.notes.as_ref())?;
    render::plot(&reports, &args.plot, &args.font)?;
    let md = render::markdown(&reports, &meta, &notes, &args.plot_link);
    std::fs::write(&args.out, md).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote {} and {} from {} runs",
        args.out.display(),
        args.plot.display(),
        reports.len()
    );
    Ok(())
}
