//! Metrics, exported in the Prometheus text format by the admin listener ([`crate::admin`]).
//!
//! Two kinds:
//! - **events** (requests, bytes, fsyncs, proposals, ISR changes…) are recorded where they
//!   happen through the `metrics` facade — here, in `switchyard-log` and in the backends
//!   (`switchyard_backend_api::telemetry`) — into the process-wide recorder [`install`] sets
//!   up;
//! - **state** (partitions, groups, the backend's role and replication) is read at each
//!   scrape from the broker and the backend ([`scrape`]), so a deleted partition or a group
//!   that moved away disappears from the next scrape instead of lingering.
//!
//! Every name is in [`METRICS`], which `docs/OPERATIONS.md` documents (a test checks it).

pub mod kafka;
mod metered;
mod scrape;

use std::sync::OnceLock;

use metrics::Unit;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

pub use metered::Metered;
pub use scrape::render;

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// One exported metric: name, kind, labels, help.
#[derive(Debug, Clone, Copy)]
pub struct Described {
    /// The metric name.
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// Its labels.
    pub labels: &'static [&'static str],
    /// What it measures.
    pub help: &'static str,
}

/// Kafka requests answered, by API and version.
pub const KAFKA_REQUESTS: &str = "switchyard_kafka_requests_total";
/// Error codes in Kafka responses, by API and error.
pub const KAFKA_REQUEST_ERRORS: &str = "switchyard_kafka_request_errors_total";
/// Time from a request's decoding to its response, by API.
pub const KAFKA_REQUEST_DURATION: &str = "switchyard_kafka_request_duration_seconds";
/// Bytes of Kafka requests received, by listener.
pub const KAFKA_RECEIVED_BYTES: &str = "switchyard_kafka_received_bytes_total";
/// Bytes of Kafka responses sent, by listener.
pub const KAFKA_SENT_BYTES: &str = "switchyard_kafka_sent_bytes_total";
/// Open Kafka connections, by listener.
pub const KAFKA_CONNECTIONS: &str = "switchyard_kafka_connections";
/// Kafka connections accepted, by listener.
pub const KAFKA_CONNECTIONS_ACCEPTED: &str = "switchyard_kafka_connections_accepted_total";
/// Kafka connections closed at once by a connection limit, by limit.
pub const KAFKA_CONNECTIONS_REJECTED: &str = "switchyard_kafka_connections_rejected_total";
/// ISR shrinks this broker made as a leader.
pub const ISR_SHRINKS: &str = "switchyard_isr_shrinks_total";
/// ISR expansions this broker made as a leader.
pub const ISR_EXPANDS: &str = "switchyard_isr_expands_total";
/// Bytes retention deleted.
pub const RETENTION_DELETED_BYTES: &str = "switchyard_log_retention_deleted_bytes_total";
/// Bytes of segments the cleaner rewrote.
pub const CLEANER_CLEANED_BYTES: &str = "switchyard_log_cleaner_cleaned_bytes_total";
/// Bytes the cleaner's rewrites removed.
pub const CLEANER_REMOVED_BYTES: &str = "switchyard_log_cleaner_removed_bytes_total";
/// Metadata proposals from this node, by result, and their latency.
pub const METADATA_PROPOSE_DURATION: &str = "switchyard_metadata_propose_duration_seconds";
/// Metadata proposals from this node not answered yet.
pub const METADATA_PROPOSALS_IN_FLIGHT: &str = "switchyard_metadata_proposals_in_flight";
/// Changes of the metadata leader this node saw.
pub const METADATA_LEADER_CHANGES: &str = "switchyard_metadata_leader_changes_total";

/// Every metric the broker exports.
pub const METRICS: &[Described] = &[
    Described {
        name: KAFKA_REQUESTS,
        kind: Kind::Counter,
        labels: &["api", "version"],
        help: "Kafka requests answered (or dropped, for acks=0), by API and version.",
    },
    Described {
        name: KAFKA_REQUEST_ERRORS,
        kind: Kind::Counter,
        labels: &["api", "error"],
        help: "Error codes in Kafka responses: one per failed partition, topic or request.",
    },
    Described {
        name: KAFKA_REQUEST_DURATION,
        kind: Kind::Histogram,
        labels: &["api"],
        help: "Time from decoding a Kafka request to its response (includes acks=all and long-poll waits).",
    },
    Described {
        name: KAFKA_RECEIVED_BYTES,
        kind: Kind::Counter,
        labels: &["listener"],
        help: "Bytes of Kafka request frames received.",
    },
    Described {
        name: KAFKA_SENT_BYTES,
        kind: Kind::Counter,
        labels: &["listener"],
        help: "Bytes of Kafka response frames sent.",
    },
    Described {
        name: KAFKA_CONNECTIONS,
        kind: Kind::Gauge,
        labels: &["listener"],
        help: "Open Kafka connections.",
    },
    Described {
        name: KAFKA_CONNECTIONS_ACCEPTED,
        kind: Kind::Counter,
        labels: &["listener"],
        help: "Kafka connections accepted.",
    },
    Described {
        name: KAFKA_CONNECTIONS_REJECTED,
        kind: Kind::Counter,
        labels: &["limit"],
        help: "Kafka connections closed at once by max.connections (limit=total) or max.connections.per.ip (limit=per_ip).",
    },
    Described {
        name: scrape::PARTITION_LOG_END_OFFSET,
        kind: Kind::Gauge,
        labels: &["topic", "partition"],
        help: "Log end offset of each partition stored here.",
    },
    Described {
        name: scrape::PARTITION_HIGH_WATERMARK,
        kind: Kind::Gauge,
        labels: &["topic", "partition"],
        help: "High watermark of each partition stored here.",
    },
    Described {
        name: scrape::PARTITION_LOG_START_OFFSET,
        kind: Kind::Gauge,
        labels: &["topic", "partition"],
        help: "Log start offset of each partition stored here.",
    },
    Described {
        name: scrape::PARTITION_SIZE,
        kind: Kind::Gauge,
        labels: &["topic", "partition"],
        help: "Bytes of segments of each partition stored here.",
    },
    Described {
        name: scrape::PARTITION_SEGMENTS,
        kind: Kind::Gauge,
        labels: &["topic", "partition"],
        help: "Segments of each partition stored here.",
    },
    Described {
        name: scrape::PARTITION_ISR,
        kind: Kind::Gauge,
        labels: &["topic", "partition"],
        help: "ISR size of each partition led here.",
    },
    Described {
        name: scrape::PARTITION_FOLLOWER_LAG,
        kind: Kind::Gauge,
        labels: &["topic", "partition", "follower"],
        help: "Messages each follower of a partition led here is behind the leader's log end offset (followers that fetched in this leadership).",
    },
    Described {
        name: scrape::LEADER_PARTITIONS,
        kind: Kind::Gauge,
        labels: &[],
        help: "Partitions led here.",
    },
    Described {
        name: scrape::UNDER_REPLICATED_PARTITIONS,
        kind: Kind::Gauge,
        labels: &[],
        help: "Partitions led here whose ISR is smaller than their replica set.",
    },
    Described {
        name: scrape::UNDER_MIN_ISR_PARTITIONS,
        kind: Kind::Gauge,
        labels: &[],
        help: "Partitions led here whose ISR is smaller than min.insync.replicas (acks=all produce fails).",
    },
    Described {
        name: scrape::OFFLINE_PARTITIONS,
        kind: Kind::Gauge,
        labels: &[],
        help: "Partitions of the cluster without a leader, in this node's metadata.",
    },
    Described {
        name: ISR_SHRINKS,
        kind: Kind::Counter,
        labels: &[],
        help: "ISR shrinks this broker made as a partition leader.",
    },
    Described {
        name: ISR_EXPANDS,
        kind: Kind::Counter,
        labels: &[],
        help: "ISR expansions this broker made as a partition leader.",
    },
    Described {
        name: scrape::GROUP_MEMBERS,
        kind: Kind::Gauge,
        labels: &["group"],
        help: "Members of each group coordinated here.",
    },
    Described {
        name: scrape::GROUP_STATE,
        kind: Kind::Gauge,
        labels: &["group", "state"],
        help: "1 for the state (Empty, PreparingRebalance, CompletingRebalance, Stable) of each group coordinated here.",
    },
    Described {
        name: scrape::GROUP_COMMITTED_OFFSET,
        kind: Kind::Gauge,
        labels: &["group", "topic", "partition"],
        help: "Committed offset of each partition of each group coordinated here.",
    },
    Described {
        name: scrape::GROUP_LAG,
        kind: Kind::Gauge,
        labels: &["group", "topic", "partition"],
        help: "High watermark minus committed offset, for the partitions of groups coordinated here whose high watermark this broker knows (it stores the partition).",
    },
    Described {
        name: switchyard_log::FSYNC_DURATION,
        kind: Kind::Histogram,
        labels: &[],
        help: "fdatasync of a partition segment's data file.",
    },
    Described {
        name: RETENTION_DELETED_BYTES,
        kind: Kind::Counter,
        labels: &[],
        help: "Bytes of segments retention deleted.",
    },
    Described {
        name: CLEANER_CLEANED_BYTES,
        kind: Kind::Counter,
        labels: &[],
        help: "Bytes of segments the log cleaner rewrote.",
    },
    Described {
        name: CLEANER_REMOVED_BYTES,
        kind: Kind::Counter,
        labels: &[],
        help: "Bytes the log cleaner's rewrites removed.",
    },
    Described {
        name: METADATA_PROPOSE_DURATION,
        kind: Kind::Histogram,
        labels: &["result"],
        help: "Metadata proposals from this node, from proposing to the answer, by result (ok, rejected, error).",
    },
    Described {
        name: METADATA_PROPOSALS_IN_FLIGHT,
        kind: Kind::Gauge,
        labels: &[],
        help: "Metadata proposals from this node not answered yet.",
    },
    Described {
        name: METADATA_LEADER_CHANGES,
        kind: Kind::Counter,
        labels: &[],
        help: "Changes of the metadata leader this node saw (a new leader known).",
    },
    Described {
        name: switchyard_backend_api::telemetry::GROUP_COMMIT_COMMANDS,
        kind: Kind::Histogram,
        labels: &[],
        help: "Metadata commands made durable by one write of the backend's log on its leader (its group commit).",
    },
    Described {
        name: switchyard_backend_api::telemetry::SNAPSHOT_DURATION,
        kind: Kind::Histogram,
        labels: &[],
        help: "Taking a snapshot of the metadata state (encode and durable write); _count is the number taken.",
    },
    Described {
        name: scrape::METADATA_INFO,
        kind: Kind::Gauge,
        labels: &["backend", "node"],
        help: "1, labelled with the metadata backend and this node's id.",
    },
    Described {
        name: scrape::METADATA_ROLE,
        kind: Kind::Gauge,
        labels: &["role"],
        help: "1 for this node's role in the metadata backend (leader, follower, candidate, learner, unknown).",
    },
    Described {
        name: scrape::METADATA_EPOCH,
        kind: Kind::Gauge,
        labels: &[],
        help: "The metadata leadership epoch (Raft term, WAL epoch).",
    },
    Described {
        name: scrape::METADATA_READY,
        kind: Kind::Gauge,
        labels: &[],
        help: "1 when the metadata backend can serve (recovered, a leader known, caught up).",
    },
    Described {
        name: scrape::METADATA_LAST_INDEX,
        kind: Kind::Gauge,
        labels: &[],
        help: "Last entry of this node's metadata log.",
    },
    Described {
        name: scrape::METADATA_COMMITTED_INDEX,
        kind: Kind::Gauge,
        labels: &[],
        help: "Highest metadata log entry this node knows committed.",
    },
    Described {
        name: scrape::METADATA_APPLIED_INDEX,
        kind: Kind::Gauge,
        labels: &[],
        help: "Last metadata log entry this node applied.",
    },
    Described {
        name: scrape::METADATA_APPLY_LAG,
        kind: Kind::Gauge,
        labels: &[],
        help: "Committed entries this node has not applied yet.",
    },
    Described {
        name: scrape::METADATA_FOLLOWER_LAG,
        kind: Kind::Gauge,
        labels: &["follower"],
        help: "On the metadata leader: entries each follower is behind the leader's log.",
    },
];

/// Histogram buckets for durations, in seconds: 50 µs to 10 s.
const DURATION_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Histogram buckets for batch sizes.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// A recorder that renders what was recorded into it in the Prometheus text format, with
/// this crate's buckets and descriptions.
fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(switchyard_backend_api::telemetry::GROUP_COMMIT_COMMANDS.into()),
            BATCH_BUCKETS,
        )
}

/// Install the process-wide recorder the event metrics go to. Once per process; later calls
/// (and calls after another recorder was installed) leave things as they are.
pub fn install() -> Result<(), BuildError> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let recorder = builder()?.build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_ok() {
        let _ = HANDLE.set(handle);
        let events = || METRICS.iter().filter(|m| !scrape::is_state(m.name));
        describe(events());
        // Counters without labels exist from the start at 0, so that the first event shows
        // in `increase()` and `rate()` (Prometheus ignores a series' first sample there).
        for m in events().filter(|m| m.kind == Kind::Counter && m.labels.is_empty()) {
            metrics::counter!(m.name).absolute(0);
        }
    }
    Ok(())
}

/// Describe `metrics` to the current recorder (`# HELP` and `# TYPE` lines).
fn describe<'a>(metrics: impl Iterator<Item = &'a Described>) {
    for m in metrics {
        let unit = m.name.ends_with("_seconds").then_some(Unit::Seconds);
        match (m.kind, unit) {
            (Kind::Counter, _) => metrics::describe_counter!(m.name, m.help),
            (Kind::Gauge, _) => metrics::describe_gauge!(m.name, m.help),
            (Kind::Histogram, Some(unit)) => metrics::describe_histogram!(m.name, unit, m.help),
            (Kind::Histogram, None) => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::BTreeSet::new();
        for m in METRICS {
            assert!(m.name.starts_with("switchyard_"), "{}", m.name);
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn the_operations_guide_documents_every_metric() {
        let guide = include_str!("../../../docs/OPERATIONS.md");
        for m in METRICS {
            let row = format!("| `{}` |", m.name);
            assert!(guide.contains(&row), "docs/OPERATIONS.md has no row {row}");
        }
    }
}
