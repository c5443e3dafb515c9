//! [`LogConfig`]: segment size and age, index density, retention, fsync policy and batch size
//! limit of one partition log, with Kafka's defaults and topic config names.

use std::collections::BTreeMap;

use crate::records::Codec;

/// When appended data is forced to disk (`fdatasync` of the active segment), modelled on
/// Kafka's `flush.messages` and `flush.ms`.
///
/// An append fsyncs when either limit is reached; with both `None` the log fsyncs only when a
/// segment rolls, on [`PartitionLog::flush`](super::PartitionLog::flush) and on close, and
/// leaves the rest to the operating system.
///
/// The default fsyncs on every append (`every_messages = Some(1)`): a single node has no
/// replica to recover from, so `acks=all` means durable only if the data is on disk when the
/// Produce response leaves. It costs one fsync per Produce request per partition — the disk's
/// flush latency becomes the floor of produce latency. Kafka's own default (`flush.messages`
/// and `flush.ms` unlimited) trades that durability for throughput and relies on replication;
/// set both to `None` (or large values) to do the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Fsync once this many records have been appended since the last fsync
    /// (`flush.messages`).
    pub every_messages: Option<u64>,
    /// Fsync on append once this many milliseconds have passed since the last fsync
    /// (`flush.ms`). An idle log is flushed only if someone calls
    /// [`PartitionLog::flush_if_due`](super::PartitionLog::flush_if_due) periodically.
    pub every_ms: Option<u64>,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        Self {
            every_messages: Some(1),
            every_ms: None,
        }
    }
}

/// Settings of one partition log. [`Default`] gives Kafka's defaults, except the
/// [`FlushPolicy`].
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Roll to a new segment before the active one would exceed this size (`segment.bytes`,
    /// default 1 GiB). A single append larger than this still goes into one segment.
    pub segment_bytes: u32,
    /// Roll to a new segment once the active one has taken appends for this long
    /// (`segment.ms`, default 7 days). Measured from the segment's first append in this
    /// process, by the `now_ms` appends pass in; after a restart the active segment's age
    /// starts again at its next append.
    pub segment_ms: u64,
    /// Bytes of batches between two offset-index entries (`index.interval.bytes`, default
    /// 4096; 0 indexes every batch).
    pub index_interval_bytes: u32,
    /// Delete the oldest segments while the log is larger than this (`retention.bytes`,
    /// default `None`: unlimited).
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest timestamp is older than this (`retention.ms`, default 7
    /// days; `None`: unlimited).
    pub retention_ms: Option<u64>,
    /// When appends are fsynced (`flush.messages`, `flush.ms`).
    pub flush: FlushPolicy,
    /// The largest record batch accepted (`max.message.bytes`, default 1048588).
    pub max_message_bytes: u32,
    /// The codec batches are stored with (`compression.type`); `None` keeps the producer's
    /// (`producer`), else the leader recompresses batches written with another codec.
    pub compression: Option<Codec>,
    /// `cleanup.policy`: whether retention deletes old segments and whether the cleaner
    /// compacts the log.
    pub cleanup: CleanupPolicy,
    /// A log is compacted once this fraction of its cleanable bytes is dirty
    /// (`min.cleanable.dirty.ratio`, default 0.5).
    pub min_cleanable_dirty_ratio: f64,
    /// A record is not compacted until it is this old (`min.compaction.lag.ms`, default 0).
    pub min_compaction_lag_ms: u64,
    /// A log with a dirty record older than this is compacted whatever its dirty ratio
    /// (`max.compaction.lag.ms`, default unlimited).
    pub max_compaction_lag_ms: u64,
    /// Tombstones are kept this long after they are written, so a consumer reading the
    /// log sees the deletion (`delete.retention.ms`, default 1 day).
    pub delete_retention_ms: u64,
}

/// `cleanup.policy`: `delete`, `compact`, or both (`compact,delete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// Retention (`retention.ms`, `retention.bytes`) deletes old segments.
    pub delete: bool,
    /// The cleaner keeps the newest record of every key.
    pub compact: bool,
}

impl CleanupPolicy {
    /// Kafka's default: `delete`.
    pub const DELETE: Self = Self {
        delete: true,
        compact: false,
    };

    /// The policy a `cleanup.policy` value names: a comma-separated list of `delete` and
    /// `compact`, at least one.
    pub fn parse(value: &str) -> Option<Self> {
        let mut policy = Self {
            delete: false,
            compact: false,
        };
        for part in value.split(',') {
            match part.trim() {
                "delete" => policy.delete = true,
                "compact" => policy.compact = true,
                _ => return None,
            }
        }
        Some(policy)
    }
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * DAY_MS,
            index_interval_bytes: 4096,
            retention_bytes: None,
            retention_ms: Some(7 * DAY_MS),
            flush: FlushPolicy::default(),
            max_message_bytes: 1_048_588,
            compression: None,
            cleanup: CleanupPolicy::DELETE,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX as u64,
            delete_retention_ms: DAY_MS,
        }
    }
}

/// A topic config value that [`LogConfig::with_overrides`] cannot use. Maps to Kafka's
/// `INVALID_CONFIG`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?} for topic config {key}: {reason}")]
pub struct LogConfigError {
    /// The config name, e.g. `segment.bytes`.
    pub key: String,
    /// The value given.
    pub value: String,
    /// What a valid value looks like.
    pub reason: &'static str,
}

/// The smallest `segment.bytes` Kafka accepts.
const MIN_SEGMENT_BYTES: i64 = 14;

impl LogConfig {
    /// Returns this config with Kafka topic config overrides applied: `segment.bytes`,
    /// `segment.ms`, `index.interval.bytes`, `retention.bytes`, `retention.ms`,
    /// `flush.messages`, `flush.ms`, `max.message.bytes`, `compression.type`,
    /// `cleanup.policy`, `min.cleanable.dirty.ratio`, `min.compaction.lag.ms`,
    /// `max.compaction.lag.ms` and `delete.retention.ms`. Other keys are not the log's and
    /// are ignored.
    ///
    /// As in Kafka, `-1` means unlimited for `retention.bytes` and `retention.ms`, and
    /// `9223372036854775807` (Kafka's default) means never for `flush.messages` and
    /// `flush.ms`.
    pub fn with_overrides(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, LogConfigError> {
        let mut config = self.clone();
        for (key, value) in overrides {
            let parsed = value.trim().parse::<i64>();
            let invalid = |reason| LogConfigError {
                key: key.clone(),
                value: value.clone(),
                reason,
            };
            let int = |min: i64, max: i64, reason| match parsed {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(invalid(reason)),
            };
            let i32_max = i64::from(i32::MAX);
            match key.as_str() {
                "segment.bytes" => {
                    let n = int(MIN_SEGMENT_BYTES, i32_max, "an integer in 14..=2147483647")?;
                    config.segment_bytes = to_u32(n);
                }
                "segment.ms" => {
                    config.segment_ms = to_u64(int(1, i64::MAX, "a positive integer")?);
                }
                "index.interval.bytes" => {
                    config.index_interval_bytes = to_u32(int(0, i32_max, "a non-negative int32")?);
                }
                "max.message.bytes" => {
                    config.max_message_bytes = to_u32(int(0, i32_max, "a non-negative int32")?);
                }
                "retention.bytes" => {
                    let n = int(-1, i64::MAX, "-1 (unlimited) or a non-negative integer")?;
                    config.retention_bytes = (n >= 0).then(|| to_u64(n));
                }
                "retention.ms" => {
                    let n = int(-1, i64::MAX, "-1 (unlimited) or a non-negative integer")?;
                    config.retention_ms = (n >= 0).then(|| to_u64(n));
                }
                "flush.messages" => {
                    let n = int(1, i64::MAX, "a positive integer")?;
                    config.flush.every_messages = (n < i64::MAX).then(|| to_u64(n));
                }
                "compression.type" => {
                    config.compression = match value.trim() {
                        "producer" => None,
                        "uncompressed" => Some(Codec::None),
                        "gzip" => Some(Codec::Gzip),
                        "snappy" => Some(Codec::Snappy),
                        "lz4" => Some(Codec::Lz4),
                        "zstd" => Some(Codec::Zstd),
                        _ => {
                            return Err(invalid(
                                "one of producer, uncompressed, gzip, snappy, lz4, zstd",
                            ));
                        }
                    };
                }
                "flush.ms" => {
                    let n = int(0, i64::MAX, "a non-negative integer")?;
                    config.flush.every_ms = (n < i64::MAX).then(|| to_u64(n));
                }
                "cleanup.policy" => {
                    config.cleanup = CleanupPolicy::parse(value)
                        .ok_or_else(|| invalid("delete, compact, or both separated by a comma"))?;
                }
                "min.cleanable.dirty.ratio" => {
                    config.min_cleanable_dirty_ratio = value
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|r| (0.0..=1.0).contains(r))
                        .ok_or_else(|| invalid("a number from 0 to 1"))?;
                }
                "min.compaction.lag.ms" => {
                    config.min_compaction_lag_ms =
                        to_u64(int(0, i64::MAX, "a non-negative integer")?);
                }
                "max.compaction.lag.ms" => {
                    config.max_compaction_lag_ms = to_u64(int(1, i64::MAX, "a positive integer")?);
                }
                "delete.retention.ms" => {
                    config.delete_retention_ms =
                        to_u64(int(0, i64::MAX, "a non-negative integer")?);
                }
                _ => {}
            }
        }
        Ok(config)
    }
}

/// Converts a value already checked to be in `0..=u32::MAX`.
fn to_u32(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Converts a value already checked to be non-negative.
fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_are_kafkas_with_fsync_per_append() {
        let config = LogConfig::default();
        assert_eq!(config.segment_bytes, 1 << 30);
        assert_eq!(config.retention_ms, Some(604_800_000));
        assert_eq!(config.retention_bytes, None);
        assert_eq!(config.flush.every_messages, Some(1));
        assert_eq!(config.flush.every_ms, None);
    }

    #[test]
    fn applies_kafka_topic_config_names() {
        let config = LogConfig::default()
            .with_overrides(&overrides(&[
                ("segment.bytes", "1024"),
                ("segment.ms", "60000"),
                ("index.interval.bytes", "0"),
                ("retention.bytes", "4096"),
                ("retention.ms", "-1"),
                ("flush.messages", "9223372036854775807"),
                ("flush.ms", "1000"),
                ("max.message.bytes", "2048"),
                ("cleanup.policy", "delete"),
                ("compression.type", "zstd"),
            ]))
            .expect("valid overrides");
        assert_eq!(config.segment_bytes, 1024);
        assert_eq!(config.segment_ms, 60_000);
        assert_eq!(config.index_interval_bytes, 0);
        assert_eq!(config.retention_bytes, Some(4096));
        assert_eq!(config.retention_ms, None);
        assert_eq!(
            config.flush,
            FlushPolicy {
                every_messages: None,
                every_ms: Some(1000)
            }
        );
        assert_eq!(config.max_message_bytes, 2048);
        assert_eq!(config.compression, Some(Codec::Zstd));
    }

    #[test]
    fn rejects_bad_values_naming_the_key() {
        for (key, value) in [
            ("segment.bytes", "10"),
            ("segment.bytes", "4294967296"),
            ("segment.ms", "0"),
            ("retention.bytes", "-2"),
            ("retention.ms", "soon"),
            ("flush.messages", "0"),
            ("max.message.bytes", "-1"),
            ("compression.type", "brotli"),
        ] {
            let err = LogConfig::default()
                .with_overrides(&overrides(&[(key, value)]))
                .expect_err("invalid");
            assert_eq!(err.key, key);
            assert_eq!(err.value, value);
            assert!(err.to_string().contains(key), "{err}");
        }
    }
}
