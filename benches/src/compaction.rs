//! The log cleaner's throughput: a partition log of a compacted topic is written (not timed),
//! then compacted once with [`PartitionLog::clean`] (timed), as the broker's cleaner does,
//! without pacing.
//!
//! The log holds [`KEYS`] keys updated [`UPDATES`] times each, round after round, in batches
//! of [`RECORDS_PER_BATCH`] records of [`VALUE_BYTES`]-byte values (uncompressed, as a Kafka
//! client's encoder writes them), in segments of [`SEGMENT_BYTES`]: a compaction reads every
//! closed segment twice (the key map, then the rewrite) and writes back one record per key.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use kafka_protocol::records::{Record, TimestampType};
use switchyard_log::{
    CleanRequest, CleanerHooks, CleanupPolicy, FlushPolicy, LogConfig, PartitionLog,
};
use tempfile::TempDir;

use crate::kafka::encode_uncompressed;

/// Distinct keys.
pub const KEYS: u64 = 1_000;
/// Updates of each key.
pub const UPDATES: u64 = 64;
/// Records per appended batch.
pub const RECORDS_PER_BATCH: u64 = 100;
/// Bytes of each value.
pub const VALUE_BYTES: usize = 100;
/// The topic's `segment.bytes`.
const SEGMENT_BYTES: u32 = 1 << 20;
/// Leader epoch of the appends.
const EPOCH: i32 = 0;

/// A freshly written, never compacted log in a temp dir.
#[derive(Debug)]
pub struct DirtyLog {
    log: PartitionLog,
    // Declared last: the log's files are in it.
    _dir: TempDir,
}

impl DirtyLog {
    /// Write the log (see the module documentation); fsynced once at the end, not per append.
    pub fn write() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-compaction-")
            .tempdir()
            .context("creating the log's temp dir")?;
        let config = LogConfig {
            segment_bytes: SEGMENT_BYTES,
            retention_ms: None,
            flush: FlushPolicy {
                every_messages: None,
                every_ms: None,
            },
            cleanup: CleanupPolicy {
                delete: false,
                compact: true,
            },
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir.path(), config).context("opening the log")?;
        let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
        let total = KEYS * UPDATES;
        let mut next = 0;
        while next < total {
            let records: Vec<Record> = (next..(next + RECORDS_PER_BATCH).min(total))
                .map(|n| Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: i64::try_from(n - next).unwrap_or(0),
                    sequence: -1,
                    timestamp: 0,
                    key: Some(Bytes::from(format!("key-{:05}", n % KEYS))),
                    value: Some(value.clone()),
                    headers: Default::default(),
                })
                .collect();
            next += records.len() as u64;
            let batch = encode_uncompressed(&records)?;
            log.append(&batch, EPOCH, 0).context("appending")?;
        }
        log.flush(0).context("flushing")?;
        Ok(Self { log, _dir: dir })
    }

    /// Bytes of its closed segments: what one compaction cleans.
    pub fn cleanable_bytes(&self) -> u64 {
        let cleanable = self.log.cleanable(self.log.log_end_offset(), 0);
        cleanable.clean_bytes + cleanable.dirty_bytes
    }

    /// Compact it once; how long that took.
    pub fn compact(&self) -> anyhow::Result<Duration> {
        let request = CleanRequest {
            clean_below: self.log.log_end_offset(),
            now_ms: 0,
            aborted: Vec::new(),
            map_bytes: usize::MAX,
        };
        let start = Instant::now();
        let outcome = self.log.clean(&request, &mut Unpaced)?;
        let elapsed = start.elapsed();
        anyhow::ensure!(
            outcome.cleaned_to.is_some() && outcome.bytes_after < outcome.bytes_before,
            "the compaction did nothing: {outcome:?}"
        );
        Ok(elapsed)
    }
}

/// `iterations` compactions, each of a log written for it; the time the compactions took.
pub fn compactions(iterations: u64) -> anyhow::Result<Duration> {
    let mut total = Duration::ZERO;
    for _ in 0..iterations {
        total += DirtyLog::write()?.compact()?;
    }
    Ok(total)
}

/// No pacing.
struct Unpaced;

impl CleanerHooks for Unpaced {
    fn throttle(&mut self, _bytes: u64) {}
}
