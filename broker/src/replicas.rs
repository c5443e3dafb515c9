//! The partitions this broker stores: a [`LogStore`] of partition logs, and per partition the
//! idempotent-producer state that guards appends.
//!
//! Idempotence (KIP-98): every batch from an idempotent producer carries its producer id, epoch
//! and a base sequence. Per (producer id, partition) the broker keeps the epoch and the last
//! five batches' sequence ranges and offsets: a retried batch is answered with its original
//! offsets and not appended again, a batch that skips sequence numbers is refused with
//! OUT_OF_ORDER_SEQUENCE_NUMBER, and one from an older epoch with INVALID_PRODUCER_EPOCH. The
//! state is rebuilt from the log when a partition is opened, so it survives restarts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use parking_lot::{Mutex, RwLock};
use tracing::{info, warn};

use crate::log::{BatchError, Batches, LogConfig, LogError, LogStore, PartitionLog};

/// Batches remembered per producer for duplicate detection (Kafka's
/// `max.in.flight.requests.per.connection` limit for idempotence).
const RETAINED_BATCHES: usize = 5;

/// A batch already in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Appended {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

#[derive(Debug, Default)]
struct Producer {
    epoch: i16,
    recent: VecDeque<Appended>,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Log start offset.
    pub log_start_offset: i64,
}

/// One partition stored here.
#[derive(Debug)]
pub struct Replica {
    log: Arc<PartitionLog>,
    producers: Mutex<HashMap<i64, Producer>>,
}

/// The Kafka error for a log error.
pub(crate) fn log_error(error: &LogError) -> ResponseError {
    match error {
        LogError::InvalidBatch(BatchError::UnsupportedMagic { .. }) => {
            ResponseError::UnsupportedForMessageFormat
        }
        LogError::InvalidBatch(_) | LogError::NoRecords => ResponseError::CorruptMessage,
        LogError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::OffsetOutOfRange { .. } | LogError::NotContiguous { .. } => {
            ResponseError::OffsetOutOfRange
        }
        LogError::Closed { .. } => ResponseError::NotLeaderOrFollower,
        LogError::InvalidTopic { .. } => ResponseError::InvalidTopicException,
        LogError::InvalidPartition { .. } => ResponseError::UnknownTopicOrPartition,
        _ => ResponseError::KafkaStorageError,
    }
}

impl Replica {
    fn open(log: Arc<PartitionLog>) -> Result<Self, LogError> {
        let producers = rebuild_producers(&log)?;
        Ok(Self {
            log,
            producers: Mutex::new(producers),
        })
    }

    /// The partition's log.
    pub fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }

    /// Append a Produce request's records, enforcing idempotent-producer sequences. Blocking:
    /// run it with `spawn_blocking`.
    pub fn append(
        &self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendResult, ResponseError> {
        let mut headers = Vec::new();
        for batch in Batches::new(records) {
            let batch = batch.map_err(|e| log_error(&LogError::InvalidBatch(e)))?;
            headers.push(*batch.header());
        }
        let idempotent: Vec<_> = headers.iter().filter(|h| h.producer_id >= 0).collect();
        let mut producers = self.producers.lock();
        if let [header] = idempotent.as_slice() {
            let last_sequence = add_sequence(header.base_sequence, header.record_count - 1);
            let producer = producers.get(&header.producer_id);
            match producer {
                Some(p) if header.producer_epoch < p.epoch => {
                    return Err(ResponseError::InvalidProducerEpoch);
                }
                Some(p) if header.producer_epoch == p.epoch => {
                    if let Some(dup) = p.recent.iter().find(|a| {
                        a.first_sequence == header.base_sequence && a.last_sequence == last_sequence
                    }) {
                        return Ok(AppendResult {
                            base_offset: dup.base_offset,
                            log_start_offset: self.log.log_start_offset(),
                        });
                    }
                    let expected = p
                        .recent
                        .back()
                        .map_or(0, |a| add_sequence(a.last_sequence, 1));
                    if header.base_sequence != expected {
                        return Err(ResponseError::OutOfOrderSequenceNumber);
                    }
                }
                // New producer, or a new epoch: sequences start over at 0.
                _ if header.base_sequence != 0 => {
                    return Err(ResponseError::OutOfOrderSequenceNumber);
                }
                _ => {}
            }
        } else if idempotent.len() > 1 {
            // Idempotent producers send one batch per partition per request.
            return Err(ResponseError::InvalidRecord);
        }
        let info = self
            .log
            .append(records, leader_epoch, now_ms)
            .map_err(|e| log_error(&e))?;
        if let [header] = idempotent.as_slice() {
            let producer = producers.entry(header.producer_id).or_default();
            remember(
                producer,
                header.producer_epoch,
                header.base_sequence,
                header.record_count,
                info.base_offset,
            );
        }
        Ok(AppendResult {
            base_offset: info.base_offset,
            log_start_offset: info.log_start_offset,
        })
    }
}

fn add_sequence(sequence: i32, delta: i32) -> i32 {
    // Sequences wrap from i32::MAX to 0.
    let next = i64::from(sequence) + i64::from(delta);
    (next % (i64::from(i32::MAX) + 1)) as i32
}

fn remember(
    producer: &mut Producer,
    epoch: i16,
    base_sequence: i32,
    record_count: i32,
    base_offset: i64,
) {
    if epoch != producer.epoch {
        producer.epoch = epoch;
        producer.recent.clear();
    }
    producer.recent.push_back(Appended {
        first_sequence: base_sequence,
        last_sequence: add_sequence(base_sequence, record_count - 1),
        base_offset,
    });
    while producer.recent.len() > RETAINED_BATCHES {
        producer.recent.pop_front();
    }
}

/// Producer state from the batch headers in the log.
fn rebuild_producers(log: &PartitionLog) -> Result<HashMap<i64, Producer>, LogError> {
    let mut producers: HashMap<i64, Producer> = HashMap::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let read = log.read(offset, 1 << 20)?;
        if read.records.is_empty() {
            break;
        }
        let mut next = offset;
        for batch in Batches::new(&read.records) {
            let header = *batch.map_err(LogError::InvalidBatch)?.header();
            if header.producer_id >= 0 {
                let producer = producers.entry(header.producer_id).or_default();
                remember(
                    producer,
                    header.producer_epoch,
                    header.base_sequence,
                    header.record_count,
                    header.base_offset,
                );
            }
            next = header.base_offset + i64::from(header.last_offset_delta) + 1;
        }
        if next <= offset {
            break;
        }
        offset = next;
    }
    Ok(producers)
}

/// Every partition stored on this broker.
#[derive(Debug)]
pub struct Replicas {
    store: LogStore,
    open: RwLock<BTreeMap<(String, i32), Arc<Replica>>>,
}

impl Replicas {
    /// Open (and recover) every partition log under `data_dir/logs`.
    pub fn open(data_dir: &Path) -> Result<Self, LogError> {
        Ok(Self {
            store: LogStore::open(data_dir, LogConfig::default())?,
            open: RwLock::new(BTreeMap::new()),
        })
    }

    /// The replica of `topic`/`partition`, opening or creating its log with the topic's
    /// configuration. Blocking.
    pub fn get_or_open(
        &self,
        topic: &str,
        partition: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<Arc<Replica>, ResponseError> {
        if let Some(replica) = self.open.read().get(&(topic.to_owned(), partition)) {
            return Ok(Arc::clone(replica));
        }
        let config = LogConfig::default()
            .with_overrides(configs)
            .map_err(|_| ResponseError::InvalidConfig)?;
        let log = self
            .store
            .get_or_create(topic, partition, config)
            .map_err(|e| log_error(&e))?;
        let mut open = self.open.write();
        if let Some(replica) = open.get(&(topic.to_owned(), partition)) {
            return Ok(Arc::clone(replica));
        }
        let replica = Arc::new(Replica::open(log).map_err(|e| {
            warn!(topic, partition, error = %e, "cannot rebuild producer state");
            log_error(&e)
        })?);
        open.insert((topic.to_owned(), partition), Arc::clone(&replica));
        Ok(replica)
    }

    /// The replica if its log is open or on disk; `None` if this broker stores nothing for it.
    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Replica>> {
        self.open
            .read()
            .get(&(topic.to_owned(), partition))
            .cloned()
    }

    /// Delete every partition log of `topic`. Blocking.
    pub fn delete_topic(&self, topic: &str) {
        self.open.write().retain(|(t, _), _| t != topic);
        match self.store.delete_topic(topic) {
            Ok(partitions) if !partitions.is_empty() => {
                info!(topic, ?partitions, "deleted partition logs");
            }
            Ok(_) => {}
            Err(e) => warn!(topic, error = %e, "deleting partition logs failed"),
        }
    }

    /// Topics with logs on disk.
    pub fn stored_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.store.logs().into_iter().map(|(t, _, _)| t).collect();
        topics.dedup();
        topics
    }

    /// Enforce retention and time-based flushes on every log. Blocking.
    pub fn maintain(&self, now_ms: i64) {
        for (topic, partition, log) in self.store.logs() {
            if let Err(e) = log.enforce_retention(now_ms) {
                warn!(topic, partition, error = %e, "retention failed");
            }
            if let Err(e) = log.flush_if_due(now_ms) {
                warn!(topic, partition, error = %e, "flush failed");
            }
        }
    }

    /// Flush and close every log (clean shutdown). Blocking.
    pub fn close(&self, now_ms: i64) {
        if let Err(e) = self.store.close(now_ms) {
            warn!(error = %e, "closing partition logs failed");
        }
    }
}
