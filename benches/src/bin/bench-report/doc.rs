//! `docs/BENCHMARKS.md`: the run and the machine, the targets with a verdict per backend, and
//! one table per measurement. Every number in it is computed from the run's results.

use std::fmt::Write as _;

use switchyard_benches::run::{BackendInfo, RunRecord};

use crate::clients::ClientRun;
use crate::machine::Machine;
use crate::results::{Measurement, Results};

/// A floor every ratio column divides by (or subtracts), measured in the same run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Column {
    /// p50 ÷ `floor/fdatasync_4k` p50.
    PerFsync,
    /// p50 − `floor/fdatasync_4k` p50.
    OverFsync,
    /// p50 ÷ `floor/loopback_rtt` p50.
    PerLoopback,
}

impl Column {
    fn header(self) -> &'static str {
        match self {
            Self::PerFsync => "÷ `fdatasync_4k`",
            Self::OverFsync => "− `fdatasync_4k`",
            Self::PerLoopback => "÷ `loopback_rtt`",
        }
    }

    fn value(self, p50: f64, floors: &Floors) -> String {
        match self {
            Self::PerFsync => ratio(floors.fsync.map(|f| p50 / f)),
            Self::OverFsync => floors.fsync.map_or("—".into(), |f| signed_time(p50 - f)),
            Self::PerLoopback => ratio(floors.loopback.map(|f| p50 / f)),
        }
    }
}

/// Which backends a measurement covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Covers {
    /// Every linked backend.
    All,
    /// Backends that run more than one node.
    MultiNode,
    /// Backends whose writes survive a restart.
    Durable,
    /// Backends that declare linearizable reads (the run skips the others).
    Declared,
    /// Multi-node backends that declare linearizable reads.
    DeclaredMultiNode,
}

impl Covers {
    fn includes(self, backend: &BackendInfo) -> bool {
        match self {
            Self::All | Self::Declared => true,
            Self::MultiNode | Self::DeclaredMultiNode => backend.multi_node,
            Self::Durable => backend.durable,
        }
    }
}

/// One table: a measurement over the backends.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    /// Criterion group.
    pub(crate) group: &'static str,
    /// Parameter (the last part of the id).
    pub(crate) param: String,
    /// Section title.
    pub(crate) title: String,
    /// What one iteration is.
    pub(crate) iteration: String,
    /// What the throughput column counts ("writes"), if it has one.
    pub(crate) counts: Option<&'static str>,
    /// Ratio columns.
    pub(crate) columns: &'static [Column],
    /// Which backends it covers.
    pub(crate) covers: Covers,
}

/// The tables of the report, in order.
pub(crate) fn tables(record: &RunRecord) -> Vec<Table> {
    let entries = record.settings.recovery_entries;
    let table = |group, param: &str, title: &str, iteration: &str, counts, columns, covers| Table {
        group,
        param: param.to_owned(),
        title: title.to_owned(),
        iteration: iteration.to_owned(),
        counts,
        columns,
        covers,
    };
    use Column::{OverFsync, PerFsync, PerLoopback};
    vec![
        table(
            "propose",
            "1",
            "Propose, 1 proposer, one node",
            "one single-partition offset commit, awaited before the next",
            Some("writes"),
            &[PerFsync],
            Covers::All,
        ),
        table(
            "propose",
            "64",
            "Propose, 64 concurrent proposers, one node",
            "256 commits: 64 tasks, 4 sequential commits each",
            Some("writes"),
            &[],
            Covers::All,
        ),
        table(
            "propose_3nodes",
            "1",
            "Propose on the leader of 3 nodes on loopback, 1 proposer",
            "one commit, acknowledged once the backend's quorum has it",
            Some("writes"),
            &[PerFsync, OverFsync, PerLoopback],
            Covers::MultiNode,
        ),
        table(
            "propose_3nodes",
            "64",
            "Propose on the leader of 3 nodes on loopback, 64 proposers",
            "256 commits: 64 tasks, 4 sequential commits each",
            Some("writes"),
            &[],
            Covers::MultiNode,
        ),
        table(
            "read",
            "local",
            "Local read",
            "`local()` and a topic lookup",
            Some("reads"),
            &[],
            Covers::All,
        ),
        table(
            "read",
            "linearizable",
            "Linearizable read, one node",
            "`read_linearizable()` and a topic lookup (only where declared)",
            Some("reads"),
            &[],
            Covers::Declared,
        ),
        table(
            "read_3nodes",
            "local",
            "Local read on the leader of 3 nodes",
            "`local()` and a topic lookup",
            Some("reads"),
            &[],
            Covers::MultiNode,
        ),
        table(
            "read_3nodes",
            "linearizable",
            "Linearizable read on the leader of 3 nodes on loopback",
            "`read_linearizable()` and a topic lookup: the leader confirms its leadership with \
             a quorum (only where declared)",
            Some("reads"),
            &[PerLoopback],
            Covers::DeclaredMultiNode,
        ),
        table(
            "kafka",
            "offset_commit",
            "Kafka OffsetCommit, end to end, one node",
            "one OffsetCommit request of one partition: client → broker → backend → response",
            Some("requests"),
            &[PerFsync, PerLoopback],
            Covers::All,
        ),
        table(
            "kafka",
            "create_topic",
            "Kafka CreateTopics of 1 topic, end to end, one node",
            "one CreateTopics request creating one topic of one partition",
            Some("topics"),
            &[PerFsync, PerLoopback],
            Covers::All,
        ),
        table(
            "kafka",
            "create_topics_1000",
            "Kafka CreateTopics of 1,000 topics, end to end, one node",
            "one CreateTopics request creating 1,000 topics of one partition each",
            Some("topics"),
            &[],
            Covers::All,
        ),
        table(
            "kafka",
            "produce_acks_all",
            "Kafka Produce with acks=all, end to end, one node",
            "one Produce request of a batch of 100 records of 1 KiB, one request in flight",
            Some("records"),
            &[],
            Covers::All,
        ),
        table(
            "kafka",
            "produce_idempotent",
            "Kafka Produce from an idempotent producer, acks=all, end to end, one node",
            "one Produce request of a batch of 100 records of 1 KiB with producer id, epoch and \
             sequence, one request in flight",
            Some("records"),
            &[],
            Covers::All,
        ),
        table(
            "kafka",
            "transaction_100",
            "Kafka transaction of 100 records, end to end, one node",
            "AddPartitionsToTxn, one Produce request of 100 records of 1 KiB, EndTxn (commit, \
             answered once the commit marker is in the partition)",
            Some("records"),
            &[],
            Covers::All,
        ),
        table(
            "kafka",
            "transaction_1000",
            "Kafka transaction of 1,000 records, end to end, one node",
            "AddPartitionsToTxn, ten Produce requests of 100 records of 1 KiB, EndTxn (commit)",
            Some("records"),
            &[],
            Covers::All,
        ),
        table(
            "kafka",
            "transaction_commit",
            "Kafka transaction commit (EndTxn), end to end, one node",
            "the EndTxn of a one-batch transaction: the commit decision in the metadata, the \
             commit marker written to the partition, the completion in the metadata",
            Some("commits"),
            &[PerFsync, PerLoopback],
            Covers::All,
        ),
        table(
            "kafka_3nodes",
            "offset_commit",
            "Kafka OffsetCommit, end to end, 3 nodes on loopback",
            "one OffsetCommit request of one partition to the group coordinator among three \
             brokers: client → broker → metadata leader and quorum → response",
            Some("requests"),
            &[PerFsync, OverFsync, PerLoopback],
            Covers::MultiNode,
        ),
        table(
            "kafka_3nodes",
            "create_topic",
            "Kafka CreateTopics of 1 topic, end to end, 3 nodes on loopback",
            "one CreateTopics request creating one topic of one partition, sent to the same broker",
            Some("topics"),
            &[PerFsync, OverFsync, PerLoopback],
            Covers::MultiNode,
        ),
        table(
            "kafka_3nodes",
            "produce_acks_all",
            "Kafka Produce with acks=all, replication factor 3, 3 nodes on loopback",
            "one Produce request of a batch of 100 records of 1 KiB to the partition leader, \
             answered once both followers fetched it; one request in flight",
            Some("records"),
            &[],
            Covers::MultiNode,
        ),
        table(
            "kafka_3nodes",
            "produce_idempotent",
            "Kafka Produce from an idempotent producer, replication factor 3, 3 nodes on loopback",
            "one Produce request of a batch of 100 records of 1 KiB with producer id, epoch and \
             sequence to the partition leader, answered once both followers fetched it",
            Some("records"),
            &[],
            Covers::MultiNode,
        ),
        table(
            "kafka_3nodes",
            "transaction_100",
            "Kafka transaction of 100 records, replication factor 3, 3 nodes on loopback",
            "AddPartitionsToTxn and EndTxn (commit) to the transaction coordinator, one Produce \
             request of 100 records of 1 KiB to the partition leader",
            Some("records"),
            &[],
            Covers::MultiNode,
        ),
        table(
            "kafka_3nodes",
            "transaction_1000",
            "Kafka transaction of 1,000 records, replication factor 3, 3 nodes on loopback",
            "AddPartitionsToTxn and EndTxn (commit) to the transaction coordinator, ten Produce \
             requests of 100 records of 1 KiB to the partition leader",
            Some("records"),
            &[],
            Covers::MultiNode,
        ),
        table(
            "kafka_3nodes",
            "transaction_commit",
            "Kafka transaction commit (EndTxn), 3 nodes on loopback",
            "the EndTxn of a one-batch transaction to its coordinator: the decision through the \
             metadata quorum, the commit marker replicated to the partition's ISR, the \
             completion through the quorum",
            Some("commits"),
            &[PerFsync, OverFsync, PerLoopback],
            Covers::MultiNode,
        ),
        table(
            "failover",
            "3",
            "Failover of the metadata leader, 3 broker processes on loopback",
            "SIGKILL of the metadata leader's process in a fresh cluster of three broker \
             processes, then the first CreateTopics request a surviving broker acknowledges (a \
             topic assigned to that broker), a new attempt every 20 ms on its own connection \
             while earlier ones wait for their answers (manual failover: promotion of the \
             survivor included); setup not timed",
            None,
            &[],
            Covers::MultiNode,
        ),
        table(
            "recovery",
            &format!("{entries}_snapshots"),
            &format!(
                "Recovery of one node with {} applied entries, snapshots at the default interval",
                count(entries as f64)
            ),
            "reopen after a graceful shutdown until ready and caught up to the last entry",
            None,
            &[],
            Covers::Durable,
        ),
        table(
            "recovery",
            &format!("{entries}_no_snapshot"),
            &format!(
                "Recovery of one node with {} applied entries, no snapshot",
                count(entries as f64)
            ),
            "reopen after a graceful shutdown until ready and caught up to the last entry",
            None,
            &[],
            Covers::Durable,
        ),
    ]
}

/// The floors of the run, p50 in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Floors {
    /// `floor/fdatasync_4k`.
    pub(crate) fsync: Option<f64>,
    /// `floor/loopback_rtt`.
    pub(crate) loopback: Option<f64>,
    /// `floor/fdatasync_4k_x3`.
    pub(crate) fsync_x3: Option<f64>,
}

impl Floors {
    pub(crate) fn of(results: &Results) -> Self {
        Self {
            fsync: results.get("floor/fdatasync_4k").map(Measurement::p50),
            loopback: results.get("floor/loopback_rtt").map(Measurement::p50),
            fsync_x3: results.get("floor/fdatasync_4k_x3").map(Measurement::p50),
        }
    }
}

/// Everything the document is made from.
#[derive(Debug)]
pub(crate) struct Inputs<'a> {
    pub(crate) record: &'a RunRecord,
    pub(crate) results: &'a Results,
    pub(crate) machine: &'a Machine,
    /// File name of the plot, beside the document.
    pub(crate) plot: &'a str,
    /// The librdkafka produce and consume run, if `benches/run` made one.
    pub(crate) clients: Option<&'a ClientRun>,
}

/// Render `docs/BENCHMARKS.md`.
pub(crate) fn render(inputs: &Inputs<'_>) -> String {
    let Inputs {
        record,
        results,
        machine,
        plot,
        clients,
    } = inputs;
    let floors = Floors::of(results);
    let mut doc = String::new();
    let out = &mut doc;
    line(out, "# Benchmarks");
    line(out, "");
    line(
        out,
        "<!-- Generated by `bench-report` (benches/src/bin/bench-report) from one run of \
         `cargo bench -p switchyard-benches`. Do not edit: run `benches/run` again. -->",
    );
    line(out, "");
    line(
        out,
        "Every number below comes from one run of the criterion benchmarks in \
         `benches/benches/metadata.rs`, which measures every linked metadata backend and the \
         machine's own floors (fdatasync of an append, loopback TCP round trip) in the same \
         process. Absolute times on a shared virtual machine drift between runs: compare rows \
         of this page with each other, and re-run on your own hardware before deciding \
         anything. Criterion's own HTML report of the run is under \
         `$CARGO_TARGET_DIR/criterion/report/`.",
    );
    line(out, "");
    run_section(out, record, machine, results);
    reading_section(out);
    let _ = writeln!(out, "![p50 of every backend, by measurement]({plot})\n");
    let client_targets = clients.map_or_else(Vec::new, |c| c.targets());
    targets_section(out, record, results, &floors, &client_targets);
    floors_section(out, results);
    for table in tables(record) {
        table_section(out, record, results, &floors, &table);
    }
    compaction_section(out, results);
    if let Some(clients) = clients {
        clients.section(out);
    }
    tls_section(out);
    not_covered_section(out);
    doc
}

/// Where the hand-run TLS comparison's last results are kept (a Markdown fragment).
const TLS_RESULTS: &str = "benches/kafka/tls-results.md";

/// TLS against plaintext on the Kafka listener: measured by hand with `benches/kafka/tls.py`
/// (real broker processes and a C client, not criterion), its last results copied from
/// [`TLS_RESULTS`].
fn tls_section(out: &mut String) {
    let Ok(results) = std::fs::read_to_string(TLS_RESULTS) else {
        return;
    };
    line(out, "## TLS on the Kafka listener against plaintext");
    line(out, "");
    out.push_str(results.trim_end());
    out.push_str("\n\n");
}

fn not_covered_section(out: &mut String) {
    line(out, "## Not covered by this run");
    line(out, "");
    line(
        out,
        "- Creating 1,000 topics with the Python client: `benches/kafka/throughput.py` \
         (confluent-kafka against a `switchyard serve` process) measures it separately, with \
         produce and consume through that client; its numbers are not part of this page. \
         Produce and consume through librdkafka are (the section above, when `benches/run` ran \
         `benches/kafka/clients.py`).",
    );
    line(
        out,
        "- Partition leader failover (kill -9 of a partition leader while an idempotent \
         producer writes) is tested for loss and duplicates by the real-client suite \
         (`compat-tests/clients/test_replication.py`), not timed here.",
    );
}

fn line(out: &mut String, text: &str) {
    out.push_str(text);
    out.push('\n');
}

fn run_section(out: &mut String, record: &RunRecord, machine: &Machine, results: &Results) {
    let settings = &record.settings;
    let args: Vec<&str> = record
        .args
        .iter()
        .skip(1)
        .map(String::as_str)
        .filter(|a| *a != "--bench")
        .collect();
    line(out, "## The run");
    line(out, "");
    let mode = if settings.quick { "quick" } else { "full" };
    let command = if settings.quick {
        "benches/run --quick` (`SWITCHYARD_BENCH_QUICK=1`)"
    } else {
        "benches/run`"
    };
    let _ = writeln!(
        out,
        "- Command: `{command}, which runs `cargo bench -p switchyard-benches --bench metadata{}` \
         ({}) and then `bench-report`.",
        if args.is_empty() {
            String::new()
        } else {
            format!(" -- {}", args.join(" "))
        },
        profile(record)
    );
    let _ = writeln!(
        out,
        "- Mode: {mode} — {} samples per benchmark, {} warm-up, {} measurement (failover and \
         recovery: 10 samples of one iteration each, as criterion allows); recovery logs of {} \
         entries.",
        settings.sample_size,
        duration(settings.warm_up.as_secs_f64()),
        duration(settings.measurement.as_secs_f64()),
        count(settings.recovery_entries as f64),
    );
    if record.args.iter().any(|a| a == "--quick") {
        line(
            out,
            "- Criterion's own `--quick` was given: it stops each benchmark after two samples \
             (n and 2n iterations), so p50 and p99 here are only indicative.",
        );
    }
    let _ = writeln!(
        out,
        "- When: {} to {} UTC; {} measurements.",
        utc(record.started),
        utc(record.finished),
        results.len()
    );
    let commit = record.commit.as_deref().unwrap_or("unknown");
    let _ = writeln!(
        out,
        "- Commit: `{commit}`{}.",
        if record.dirty {
            " (the working tree had uncommitted changes)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "- Machine: {} × {}, {:.1} GiB memory, Linux {}; {}.",
        machine.cpus, machine.cpu, machine.memory_gib, machine.kernel, machine.rustc
    );
    line(out, "- Backends linked, with their declared guarantees:");
    for backend in &record.backends {
        let _ = writeln!(out, "  - `{}`: {}", backend.name, backend.guarantees);
    }
    line(out, "");
}

/// The cargo profile the benchmark binary was built with, from the directory it ran from.
fn profile(record: &RunRecord) -> &'static str {
    let binary = record.args.first().map(String::as_str).unwrap_or_default();
    let dir = std::path::Path::new(binary)
        .parent()
        .and_then(std::path::Path::parent)
        .and_then(std::path::Path::file_name)
        .and_then(|d| d.to_str());
    match dir {
        Some("release") => "cargo's `bench` profile: optimized, as `release`",
        Some("debug") => "**the `dev` profile: not optimized, numbers not representative**",
        _ => "profile unknown",
    }
}

fn reading_section(out: &mut String) {
    line(out, "## How to read the tables");
    line(out, "");
    line(
        out,
        "- Criterion runs each benchmark as samples of many iterations and records, per \
         sample, the iterations and their total time (`new/sample.json`). **p50 and p99 are \
         percentiles over the sample means** (`times[i] / iters[i]`, linear interpolation \
         between ranks), not over single operations: with 10–20 samples, p99 is close to the \
         slowest sample's mean.",
    );
    line(
        out,
        "- Throughput is the elements one iteration processes divided by the p50 time.",
    );
    line(
        out,
        "- `÷ fdatasync_4k` and `÷ loopback_rtt` divide a p50 by the p50 of that floor, \
         measured at the start of the same run; `− fdatasync_4k` subtracts it. `floor_after` \
         measures the fdatasync floors again at the end, to show how far the disk drifted.",
    );
    line(
        out,
        "- A target is met when the p50 is within it (the 64-proposer target: when the \
         throughput at the p50 is).",
    );
    line(out, "");
}

/// One backend's verdict on one target.
struct Verdict {
    measured: String,
    verdict: &'static str,
}

/// How a target judges one backend.
type Judge<'a> = &'a dyn Fn(&BackendInfo) -> Verdict;

/// A row of the Targets table that is not one per linked backend.
#[derive(Debug)]
pub(crate) struct TargetRow {
    pub(crate) target: String,
    /// The backend column, as shown.
    pub(crate) backend: String,
    pub(crate) measured: String,
    /// `None`: not measured.
    pub(crate) met: Option<bool>,
}

impl TargetRow {
    pub(crate) fn not_measured(target: &str, backend: &str) -> Self {
        Self {
            target: target.to_owned(),
            backend: backend.to_owned(),
            measured: "not measured in this run".into(),
            met: None,
        }
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

fn not_measured() -> Verdict {
    Verdict {
        measured: "not measured in this run".into(),
        verdict: "—",
    }
}

fn targets_section(
    out: &mut String,
    record: &RunRecord,
    results: &Results,
    floors: &Floors,
    more: &[TargetRow],
) {
    line(out, "## Targets");
    line(out, "");
    line(out, "| target | backend | measured | verdict |");
    line(out, "|---|---|---|---|");
    let multi_node_only = || Verdict {
        measured: "single-node backend".into(),
        verdict: "n/a",
    };
    let targets: [(&str, Judge<'_>); 9] = [
        (
            "durable write, one node: p50 ≤ 1.2 × `fdatasync_4k`",
            &|b| match (results.of("propose", &b.name, "1"), floors.fsync) {
                (Some(m), Some(f)) if b.durable => Verdict {
                    measured: format!(
                        "{} ({} ÷ {})",
                        ratio(Some(m.p50() / f)),
                        time(m.p50()),
                        time(f)
                    ),
                    verdict: verdict(m.p50() <= 1.2 * f),
                },
                (Some(m), _) if !b.durable => Verdict {
                    measured: format!("{} (acknowledged without writing to disk)", time(m.p50())),
                    verdict: "n/a: not durable",
                },
                _ => not_measured(),
            },
        ),
        (
            "64 concurrent proposers, one node: ≥ 100,000 writes/s",
            &|b| match results.of("propose", &b.name, "64") {
                Some(m) => Verdict {
                    measured: format!("{}/s", count(m.throughput())),
                    verdict: verdict(m.throughput() >= 100_000.0),
                },
                None => not_measured(),
            },
        ),
        (
            "3 nodes on loopback: commit p50 ≤ `fdatasync_4k` p50 + 1 ms",
            &|b| {
                if !b.multi_node {
                    return multi_node_only();
                }
                match (results.of("propose_3nodes", &b.name, "1"), floors.fsync) {
                    (Some(m), Some(f)) => Verdict {
                        measured: format!(
                            "{} ({} over `fdatasync_4k` {})",
                            time(m.p50()),
                            signed_time(m.p50() - f),
                            time(f)
                        ),
                        verdict: verdict(m.p50() <= f + 1e6),
                    },
                    _ => not_measured(),
                }
            },
        ),
        (
            "local metadata read: p50 ≤ 1 µs",
            &|b| match results.of("read", &b.name, "local") {
                Some(m) => Verdict {
                    measured: time(m.p50()),
                    verdict: verdict(m.p50() <= 1e3),
                },
                None => not_measured(),
            },
        ),
        (
            "1,000 topics created through the Kafka API: ≤ 2 s",
            &|b| match results.of("kafka", &b.name, "create_topics_1000") {
                Some(m) => Verdict {
                    measured: format!("{} (p99 {})", time(m.p50()), time(m.p99())),
                    verdict: verdict(m.p50() <= 2e9),
                },
                None => not_measured(),
            },
        ),
        (
            "metadata-leader failover: a write succeeds ≤ 2 s after kill -9 of the leader",
            &|b| {
                if !b.multi_node {
                    return multi_node_only();
                }
                match results.of("failover", &b.name, "3") {
                    Some(m) => Verdict {
                        measured: format!(
                            "{} (p99 {}){}",
                            time(m.p50()),
                            time(m.p99()),
                            if b.failover == "manual" {
                                "; manual: promotion of a survivor and its first write, no operator delay"
                            } else {
                                ""
                            }
                        ),
                        verdict: verdict(m.p50() <= 2e9),
                    },
                    None => not_measured(),
                }
            },
        ),
        (
            "3 nodes on loopback: commit p50 ≤ 1.4 × `fdatasync_4k`, or ≤ `fdatasync_4k_x3` + 3 × \
             `loopback_rtt` if that is larger",
            &|b| {
                if !b.multi_node {
                    return multi_node_only();
                }
                let m = results.of("propose_3nodes", &b.name, "1");
                match (m, floors.fsync, floors.fsync_x3, floors.loopback) {
                    (Some(m), Some(f), Some(x3), Some(rtt)) => {
                        let limit = (1.4 * f).max(x3 + 3.0 * rtt);
                        Verdict {
                            measured: format!(
                                "{} = {} (limit {}: 1.4 × {}, `fdatasync_4k_x3` {} + 3 × {})",
                                time(m.p50()),
                                ratio(Some(m.p50() / f)),
                                time(limit),
                                time(f),
                                time(x3),
                                time(rtt)
                            ),
                            verdict: verdict(m.p50() <= limit),
                        }
                    }
                    _ => not_measured(),
                }
            },
        ),
        (
            "64 concurrent proposers, 3 nodes on loopback: ≥ 100,000 writes/s",
            &|b| {
                if !b.multi_node {
                    return multi_node_only();
                }
                match results.of("propose_3nodes", &b.name, "64") {
                    Some(m) => Verdict {
                        measured: format!("{}/s", count(m.throughput())),
                        verdict: verdict(m.throughput() >= 100_000.0),
                    },
                    None => not_measured(),
                }
            },
        ),
        (
            "automatic metadata-leader failover: p99 ≤ 1 s from kill -9 to a write",
            &|b| {
                if b.failover != "automatic" {
                    return Verdict {
                        measured: format!("failover: {}", b.failover),
                        verdict: "n/a",
                    };
                }
                match results.of("failover", &b.name, "3") {
                    Some(m) => Verdict {
                        measured: format!("p99 {} (p50 {})", time(m.p99()), time(m.p50())),
                        verdict: verdict(m.p99() <= 1e9),
                    },
                    None => not_measured(),
                }
            },
        ),
    ];
    for (target, judge) in targets {
        for backend in &record.backends {
            let v = judge(backend);
            let _ = writeln!(
                out,
                "| {target} | `{}` | {} | {} |",
                backend.name, v.measured, v.verdict
            );
        }
    }
    for row in more {
        let shown = row.met.map_or(not_measured().verdict, verdict);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {shown} |",
            row.target, row.backend, row.measured
        );
    }
    line(out, "");
}

fn floors_section(out: &mut String, results: &Results) {
    line(out, "## Floors");
    line(out, "");
    line(
        out,
        "`fdatasync_4k`: append 4 KiB to a file and `fdatasync` it, in the temp directory the \
         backends' data directories are created in; `fdatasync_128`: the same with 128 bytes \
         (about the size of one metadata write); `loopback_rtt`: an 8-byte TCP ping-pong on \
         127.0.0.1 with `TCP_NODELAY`, on the same tokio runtime as the backends; \
         `sequential_1m`: append 1 MiB and `fdatasync` it, the disk's durable sequential \
         write rate; `fdatasync_4k_x3`: `fdatasync_4k` on three files at the same time from \
         three threads, in lockstep, an iteration ending when all three have synced — the \
         floor of a commit on three replicas that share one disk.",
    );
    line(out, "");
    line(out, "| floor | samples | p50 | p99 |");
    line(out, "|---|---|---|---|");
    for id in [
        "floor/fdatasync_4k",
        "floor/fdatasync_128",
        "floor/fdatasync_4k_x3",
        "floor/loopback_rtt",
        "floor/sequential_1m",
        "floor_after/fdatasync_4k",
        "floor_after/fdatasync_128",
    ] {
        match results.get(id) {
            Some(m) => {
                let _ = writeln!(
                    out,
                    "| `{id}` | {} | {} | {} |",
                    m.samples(),
                    time(m.p50()),
                    time(m.p99())
                );
            }
            None => {
                let _ = writeln!(out, "| `{id}` | — | not measured | — |");
            }
        }
    }
    line(out, "");
    if let (Some(before), Some(after)) = (
        results.get("floor/fdatasync_4k"),
        results.get("floor_after/fdatasync_4k"),
    ) {
        let _ = writeln!(
            out,
            "`fdatasync_4k` p50 went from {} at the start of the run to {} at the end ({:+.1} %).\n",
            time(before.p50()),
            time(after.p50()),
            (after.p50() / before.p50() - 1.0) * 100.0
        );
    }
}

/// The log cleaner's throughput beside the disk's durable sequential write rate.
fn compaction_section(out: &mut String, results: &Results) {
    line(out, "## Log compaction");
    line(out, "");
    line(
        out,
        "`compaction/clean`: one compaction of a partition log of a compacted topic — 1,000 \
         keys updated 64 times in batches of 100 records of 100-byte values, 1 MiB segments \
         — written fresh for each iteration (not timed); the rate counts the bytes of the \
         closed segments it cleans (each read twice, one record per key written back, \
         fsynced). No metadata backend is on this path. `floor/sequential_1m` is the disk's \
         rate for 1 MiB appends each followed by `fdatasync`.",
    );
    line(out, "");
    line(out, "| measurement | samples | p50 | p99 | MB/s at p50 |");
    line(out, "|---|---|---|---|---|");
    for id in ["compaction/clean", "floor/sequential_1m"] {
        match results.get(id) {
            Some(m) => {
                let _ = writeln!(
                    out,
                    "| `{id}` | {} | {} | {} | {:.1} |",
                    m.samples(),
                    time(m.p50()),
                    time(m.p99()),
                    m.throughput() / 1e6
                );
            }
            None => {
                let _ = writeln!(out, "| `{id}` | — | not measured | — | — |");
            }
        }
    }
    line(out, "");
}

fn table_section(
    out: &mut String,
    record: &RunRecord,
    results: &Results,
    floors: &Floors,
    table: &Table,
) {
    let _ = writeln!(out, "## {}\n", table.title);
    let _ = writeln!(
        out,
        "`{}/<backend>/{}` — one iteration: {}.\n",
        table.group, table.param, table.iteration
    );
    let mut header = String::from("| backend | samples | p50 | p99 |");
    let mut rule = String::from("|---|---|---|---|");
    if let Some(counts) = table.counts {
        let _ = write!(header, " {counts}/s at p50 |");
        rule.push_str("---|");
    }
    if table.group == "failover" {
        header.push_str(" failover |");
        rule.push_str("---|");
    }
    for column in table.columns {
        let _ = write!(header, " {} |", column.header());
        rule.push_str("---|");
    }
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    for backend in record.backends.iter().filter(|b| table.covers.includes(b)) {
        let Some(m) = results.of(table.group, &backend.name, &table.param) else {
            missing.push(format!("`{}`", backend.name));
            continue;
        };
        let mut row = format!(
            "| `{}` | {} | {} | {} |",
            backend.name,
            m.samples(),
            time(m.p50()),
            time(m.p99())
        );
        if table.counts.is_some() {
            let _ = write!(row, " {} |", count(m.throughput()));
        }
        if table.group == "failover" {
            let _ = write!(row, " {} |", backend.failover);
        }
        for column in table.columns {
            let _ = write!(row, " {} |", column.value(m.p50(), floors));
        }
        rows.push(row);
    }
    if rows.is_empty() {
        line(out, "Not measured in this run.\n");
        return;
    }
    line(out, &header);
    line(out, &rule);
    for row in rows {
        line(out, &row);
    }
    line(out, "");
    if !missing.is_empty() {
        let reason = if matches!(table.covers, Covers::Declared | Covers::DeclaredMultiNode) {
            "not declared by"
        } else {
            "not measured in this run for"
        };
        let _ = writeln!(out, "{} {}.\n", capitalized(reason), missing.join(", "));
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Nanoseconds as a readable time.
pub(crate) fn time(ns: f64) -> String {
    if !ns.is_finite() {
        return "—".into();
    }
    let abs = ns.abs();
    if abs < 10.0 {
        format!("{ns:.1} ns")
    } else if abs < 1e3 {
        format!("{ns:.0} ns")
    } else if abs < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if abs < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn signed_time(ns: f64) -> String {
    if ns >= 0.0 {
        format!("+{}", time(ns))
    } else {
        format!("−{}", time(-ns))
    }
}

fn duration(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1e3)
    } else {
        format!("{secs:.0} s")
    }
}

fn ratio(value: Option<f64>) -> String {
    value.map_or("—".into(), |v| format!("{v:.2}×"))
}

/// A count rounded to an integer, with thousands separators.
pub(crate) fn count(value: f64) -> String {
    if !value.is_finite() {
        return "—".into();
    }
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if value < 0.0 {
        format!("-{grouped}")
    } else {
        grouped
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM`.
pub(crate) fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        secs / 3_600,
        secs % 3_600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(time(29.8), "30 ns");
        assert_eq!(time(469_300.0), "469.3 µs");
        assert_eq!(time(2_621_400.0), "2.62 ms");
        assert_eq!(time(1_500_000_000.0), "1.50 s");
        assert_eq!(signed_time(-1_500.0), "−1.5 µs");
        assert_eq!(count(154_589.4), "154,589");
        assert_eq!(count(999.0), "999");
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(1_796_236_800), "2026-12-02 18:40");
        assert_eq!(capitalized("not declared"), "Not declared");
    }
}
