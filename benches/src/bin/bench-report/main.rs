//! `bench-report`: turn one run of `cargo bench -p switchyard-benches` into
//! `docs/BENCHMARKS.md` and the plot embedded in it, `docs/benchmarks.svg`.
//!
//! It reads the run's record (`switchyard-run.json`, written by the benchmark at the end of its
//! run) and criterion's results in the same directory (`new/benchmark.json`,
//! `new/sample.json` of every benchmark written during that run), and describes the machine it
//! runs on — run it right after the benchmarks, as `benches/run` does.
//!
//! ```text
//! bench-report [--criterion DIR] [--out FILE]
//! ```
//! `DIR` defaults to criterion's directory (`CRITERION_HOME`, else
//! `$CARGO_TARGET_DIR/criterion`, else `target/criterion`); `FILE` to the workspace's
//! `docs/BENCHMARKS.md`. The plot is written beside `FILE`.
//!
//! # Layout
//! - `main.rs` — arguments, then read, render and write.
//! - `results.rs` — criterion's files → `Measurement`s (p50 and p99 over sample means).
//! - `machine.rs` — CPU, memory, kernel and compiler of this machine.
//! - `doc.rs` — the Markdown: the run, the targets with verdicts, one table per measurement.
//! - `clients.rs` — the librdkafka produce and consume run (`kafka-clients.json`, written by
//!   `benches/kafka/clients.py` beside criterion's results) and its targets.
//! - `plot.rs` — the SVG plot (plotters' SVG backend).

mod clients;
mod doc;
mod machine;
mod plot;
mod results;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use switchyard_benches::run::{RunRecord, criterion_dir};

/// File name of the plot, written beside the document.
const PLOT_FILE: &str = "benchmarks.svg";

fn main() -> anyhow::Result<()> {
    let mut dir = criterion_dir();
    let mut out = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("docs")
        .join("BENCHMARKS.md");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--criterion" => dir = PathBuf::from(args.next().context("--criterion DIR")?),
            "--out" => out = PathBuf::from(args.next().context("--out FILE")?),
            other => bail!(
                "unknown argument {other:?}; usage: bench-report [--criterion DIR] [--out FILE]"
            ),
        }
    }
    let record = RunRecord::read(&dir)?;
    let results = results::Results::load(&dir, record.started, record.finished)?;
    if results.len() == 0 {
        bail!(
            "no criterion results under {} were written during the run recorded there",
            dir.display()
        );
    }
    let clients = clients::ClientRun::load(&dir)?;
    let machine = machine::Machine::read();
    let plot_path = out.with_file_name(PLOT_FILE);
    plot::draw(&plot_path, &record, &results)?;
    let text = doc::render(&doc::Inputs {
        record: &record,
        results: &results,
        machine: &machine,
        plot: PLOT_FILE,
        clients: clients.as_ref(),
    });
    std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "wrote {} and {} from {} measurements",
        out.display(),
        plot_path.display(),
        results.len()
    );
    Ok(())
}
