//! Kafka produce and consume through librdkafka (`benches/kafka/clients.py`, run by
//! `benches/run` after the criterion benchmarks): its results file, the section of the page
//! and its rows of the Targets table.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use crate::doc::{TargetRow, count, utc};

/// The results file `benches/run` has `clients.py` write, beside criterion's results.
pub(crate) const FILE: &str = "kafka-clients.json";

/// One run of `clients.py`.
#[derive(Debug, Deserialize)]
pub(crate) struct ClientRun {
    backend: String,
    messages: u64,
    value_bytes: u64,
    /// The value size of the durable-write phases.
    large_value_bytes: u64,
    partitions: u32,
    rounds: u32,
    client: String,
    librdkafka: String,
    started: f64,
    finished: f64,
    /// Build name (`this build`, `baseline`) → what it is (a commit).
    builds: std::collections::BTreeMap<String, String>,
    rows: Vec<Row>,
}

/// The medians of one build, cluster size and phase.
#[derive(Debug, Deserialize)]
struct Row {
    build: String,
    nodes: u32,
    phase: String,
    msgs_per_s: f64,
    mb_per_s: f64,
    /// After a produce phase: the disk's durable sequential write rate for as many new bytes
    /// (`write_floor` in `clients.py`), MB/s.
    #[serde(default)]
    floor_mb_per_s: Option<f64>,
    broker_cpu_us_per_msg: f64,
    client_cpu_us_per_msg: f64,
}

impl ClientRun {
    /// The run's results in `dir`, if it has them.
    pub(crate) fn load(dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn row(&self, build: &str, nodes: u32, phase: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.build == build && r.nodes == nodes && r.phase == phase)
    }

    /// Its rows of the Targets table: consume against the baseline build, durable produce
    /// against the write floor measured after it.
    pub(crate) fn targets(&self) -> Vec<TargetRow> {
        let mut rows = Vec::new();
        let backend = format!("`{}`", self.backend);
        let against_baseline = |phase: &str, key: fn(&Row) -> f64| match (
            self.row("this build", 1, phase),
            self.row("baseline", 1, phase),
        ) {
            (Some(new), Some(old)) => Some((key(new), key(old), key(new) / key(old))),
            _ => None,
        };
        let baseline = self
            .builds
            .get("baseline")
            .map_or("no baseline in this run".to_owned(), |b| b.clone());
        match against_baseline("consume", |r| r.broker_cpu_us_per_msg) {
            Some((new, old, ratio)) => rows.push(TargetRow {
                target: "consume, one node: broker CPU per message ≤ 0.8 × the baseline's".into(),
                backend: backend.clone(),
                measured: format!("{ratio:.2}× ({new:.2} µs ÷ {old:.2} µs; baseline {baseline})"),
                met: Some(ratio <= 0.8),
            }),
            None => rows.push(TargetRow::not_measured(
                "consume, one node: broker CPU per message ≤ 0.8 × the baseline's",
                &backend,
            )),
        }
        match against_baseline("consume", |r| r.msgs_per_s) {
            Some((new, old, ratio)) => rows.push(TargetRow {
                target: "consume, one node: messages/s ≥ 1.2 × the baseline's".into(),
                backend: backend.clone(),
                measured: format!("{ratio:.2}× ({}/s ÷ {}/s)", count(new), count(old)),
                met: Some(ratio >= 1.2),
            }),
            None => rows.push(TargetRow::not_measured(
                "consume, one node: messages/s ≥ 1.2 × the baseline's",
                &backend,
            )),
        }
        for acks in ["1", "all"] {
            let target = format!(
                "durable produce, one node, acks={acks}: MB/s ≥ 90 % of the write floor of as \
                 many bytes"
            );
            let phase = format!(
                "produce acks={acks}, {} KiB values",
                self.large_value_bytes / 1024
            );
            match self
                .row("this build", 1, &phase)
                .and_then(|row| Some((row, row.floor_mb_per_s?)))
            {
                Some((row, floor)) => rows.push(TargetRow {
                    measured: format!(
                        "{:.0} % ({:.0} MB/s of {} KiB values ÷ {floor:.0} MB/s)",
                        row.mb_per_s / floor * 100.0,
                        row.mb_per_s,
                        self.large_value_bytes / 1024
                    ),
                    target,
                    backend: backend.clone(),
                    met: Some(row.mb_per_s >= 0.9 * floor),
                }),
                None => rows.push(TargetRow::not_measured(&target, &backend)),
            }
        }
        rows
    }

    /// The section of the page.
    pub(crate) fn section(&self, out: &mut String) {
        let _ = writeln!(out, "## Kafka produce and consume through librdkafka\n");
        let builds: Vec<String> = self
            .builds
            .iter()
            .map(|(name, what)| format!("{name}: {what}"))
            .collect();
        let _ = writeln!(
            out,
            "`benches/kafka/clients.py`, run by `benches/run` after the criterion benchmarks \
             ({} to {} UTC): the client is `{}`, a plain producer and consumer loop compiled \
             against librdkafka {}, and the brokers are `switchyard serve` processes of the \
             `{}` backend on loopback (a fresh cluster per round). Per round: {} messages of {} \
             bytes to a topic of {} partitions (replication factor = nodes) with acks=1, as many \
             to another with acks=all, then one consumer group member reads the acks=all topic \
             from the first message on; then the same bytes again in values of {} bytes, acks=1 \
             and acks=all, each to a topic of its own (the durable-write phases: with 1 KiB \
             values the client's own cost per message, on the two CPUs it shares with the \
             brokers, bounds the rate before the broker's write path does). Every partition \
             write is fsynced before it is acknowledged (`flush.messages` = 1, the default). \
             MB/s counts values. After each produce phase, the write floor: as many bytes \
             written to a new file on the brokers' filesystem as 1 MiB appends, each followed \
             by `fdatasync` (on this VM, writing new data into page-cache memory the guest has \
             not touched yet costs far more than `floor/sequential_1m`'s rewriting of one small \
             file, so a phase is compared with the same volume of new data). CPU per message \
             is user + system \
             time from /proc: the brokers' (every broker process) and the client's. Rounds per \
             build: {}, the builds alternating round by round; the table shows medians ({}).\n",
            utc(self.started as u64),
            utc(self.finished as u64),
            self.client,
            self.librdkafka,
            self.backend,
            count(self.messages as f64),
            self.value_bytes,
            self.partitions,
            self.large_value_bytes,
            self.rounds,
            builds.join("; "),
        );
        let _ = writeln!(
            out,
            "| build | nodes | phase | messages/s | MB/s | write floor | broker CPU per message \
             | client CPU per message |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
        for r in &self.rows {
            let floor = r
                .floor_mb_per_s
                .map_or("-".to_owned(), |f| format!("{f:.0} MB/s"));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.0} | {floor} | {:.2} µs | {:.2} µs |",
                r.build,
                r.nodes,
                r.phase,
                count(r.msgs_per_s),
                r.mb_per_s,
                r.broker_cpu_us_per_msg,
                r.client_cpu_us_per_msg
            );
        }
        out.push('\n');
    }
}
