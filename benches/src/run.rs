//! One benchmark run: how long it measures ([`Settings`], full or quick), where criterion
//! writes ([`criterion_dir`]), and what the run records for the report ([`RunRecord`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use switchyard_backend_api::{Failover, Registration};

/// Environment variable that selects quick mode when set to anything but `0` or empty.
pub const QUICK_ENV: &str = "SWITCHYARD_BENCH_QUICK";

/// File in [`criterion_dir`] where the benchmark binary records its run.
pub const RECORD_FILE: &str = "switchyard-run.json";

/// How long each benchmark measures, and how large the recovery logs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Whether this is the quick run ([`QUICK_ENV`] or criterion's `--quick`).
    pub quick: bool,
    /// Criterion samples per benchmark (criterion's minimum is 10).
    pub sample_size: usize,
    /// Criterion warm-up per benchmark.
    pub warm_up: Duration,
    /// Criterion measurement time per benchmark.
    pub measurement: Duration,
    /// Entries applied before the recovery benchmarks reopen a node.
    pub recovery_entries: u64,
}

impl Settings {
    /// The full run: 20 samples, 1 s warm-up, 3 s measurement, recovery from 100,000 entries.
    pub const FULL: Self = Self {
        quick: false,
        sample_size: 20,
        warm_up: Duration::from_secs(1),
        measurement: Duration::from_secs(3),
        recovery_entries: 100_000,
    };

    /// The quick run: 10 samples, 0.3 s warm-up, 1 s measurement, recovery from 10,000 entries.
    pub const QUICK: Self = Self {
        quick: true,
        sample_size: 10,
        warm_up: Duration::from_millis(300),
        measurement: Duration::from_secs(1),
        recovery_entries: 10_000,
    };

    /// When the binary runs as a test (`cargo test`, `cargo nextest`) or only lists the
    /// benchmarks: criterion then runs each benchmark once, so only the recovery logs need to
    /// be small (100 entries).
    pub const SMOKE: Self = Self {
        quick: true,
        sample_size: 10,
        warm_up: Duration::from_millis(300),
        measurement: Duration::from_secs(1),
        recovery_entries: 100,
    };

    /// [`Self::SMOKE`] unless [`measuring`]; else quick when [`QUICK_ENV`] is set (not to `0`
    /// or empty) or `args` hold `--quick`; else full.
    pub fn from_env_and_args(args: &[String]) -> Self {
        let env = std::env::var(QUICK_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
        if !measuring(args) {
            Self::SMOKE
        } else if env || args.iter().any(|a| a == "--quick") {
            Self::QUICK
        } else {
            Self::FULL
        }
    }
}

/// Whether criterion measures, by its own rule: `cargo bench` passes `--bench`; without it
/// (`cargo test`, `cargo nextest`), or with `--test` or `--list`, it runs each benchmark once
/// or only lists them, and writes no results.
pub fn measuring(args: &[String]) -> bool {
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list")
}

/// Where criterion writes its results, by criterion's own rule: `CRITERION_HOME`, else
/// `$CARGO_TARGET_DIR/criterion`, else the workspace's `target/criterion`. The benchmark sets
/// it explicitly, so that it and the report agree whatever directory cargo runs them in.
pub fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("criterion")
}

/// What the benchmark binary records about its run, for the report: which results under
/// [`criterion_dir`] are this run's (written between `started` and `finished`), with which
/// settings and at which commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Seconds since the Unix epoch when the run started.
    pub started: u64,
    /// Seconds since the Unix epoch when it finished.
    pub finished: u64,
    /// The benchmark binary's arguments.
    pub args: Vec<String>,
    /// The settings it ran with.
    pub settings: Settings,
    /// `git rev-parse --short HEAD` at the start, if git answered.
    pub commit: Option<String>,
    /// Whether `git status --porcelain` listed changes at the start, other than to
    /// `docs/BENCHMARKS.md` and `docs/benchmarks.svg`.
    pub dirty: bool,
    /// The backends linked into the run.
    pub backends: Vec<BackendInfo>,
}

/// What a run's report needs to know about one backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// Registry name.
    pub name: String,
    /// Its declared guarantees, as `switchyard backends` prints them.
    pub guarantees: String,
    /// `none`, `manual` or `automatic`.
    pub failover: String,
    /// Whether an acknowledged write survives a restart.
    pub durable: bool,
    /// Whether it runs more than one node.
    pub multi_node: bool,
}

impl BackendInfo {
    /// The facts of a registered backend.
    pub fn of(registration: &Registration) -> Self {
        let guarantees = registration.guarantees;
        let failover = match guarantees.failover {
            Failover::Automatic => "automatic",
            Failover::Manual => "manual",
            _ => "none",
        };
        Self {
            name: registration.name.to_owned(),
            guarantees: guarantees.to_string(),
            failover: failover.to_owned(),
            durable: guarantees.survives_restart(),
            multi_node: guarantees.multi_node,
        }
    }
}

impl RunRecord {
    /// The record of a run starting now.
    pub fn start(args: Vec<String>, settings: Settings, backends: Vec<BackendInfo>) -> Self {
        let started = unix_now();
        let commit = git(&["rev-parse", "--short", "HEAD"]);
        // The report's own outputs do not count: every run after the first rewrites them.
        let dirty = git(&[
            "status",
            "--porcelain",
            "--",
            ":/",
            ":(exclude,top)docs/BENCHMARKS.md",
            ":(exclude,top)docs/benchmarks.svg",
        ])
        .is_some_and(|s| !s.is_empty());
        Self {
            started,
            finished: started,
            args,
            settings,
            commit,
            dirty,
            backends,
        }
    }

    /// Mark the run finished and write the record to `dir`/[`RECORD_FILE`].
    pub fn finish(mut self, dir: &Path) -> anyhow::Result<()> {
        self.finished = unix_now();
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(RECORD_FILE);
        let json = serde_json::to_string_pretty(&self).context("encoding the run record")?;
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))
    }

    /// Read the record from `dir`/[`RECORD_FILE`].
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(RECORD_FILE);
        let json = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (written at the end of `cargo bench -p switchyard-benches`)",
                path.display()
            )
        })?;
        serde_json::from_str(&json).with_context(|| format!("decoding {}", path.display()))
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `git ARGS` in the current directory, trimmed, if it ran and succeeded.
fn git(args: &[&str]) -> Option<String> {
    let output = std::process::Command::new("git").args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
