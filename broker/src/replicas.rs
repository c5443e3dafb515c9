//! The partitions this broker stores: a [`LogStore`] of partition logs, and per partition the
//! idempotent-producer state that guards appends.
//!
//! Idempotence (KIP-98): every batch from an idempotent producer carries its producer id, epoch
//! and a base sequence. Per (producer id, partition) the broker keeps the epoch and the last
//! five batches' sequence ranges and offsets: a retried batch is answered with its original
//! offsets and not appended again, a batch that skips sequence numbers is refused with
//! OUT_OF_ORDER_SEQUENCE_NUMBER, and one from an older epoch with INVALID_PRODUCER_EPOCH. The
//! state is rebuilt from the log when a partition is opened, so it survives restarts, and a
//! follower keeps it from the batches it copies, so a retry reaching a new leader after a
//! failover is still recognised. Opening a partition reads only the batches after its last
//! producer-state snapshot ([`snapshot`]), written with the high-watermark checkpoint.
//!
//! Each replica also holds its high watermark: on the leader it follows the ISR's progress
//! ([`Leadership`]), on a follower it is the leader's, as its last fetch reported it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use switchyard_backend_api::BrokerId;
use switchyard_log::control::{Marker, coordinator_epoch_of, marker_batch};
use switchyard_log::{
    BatchHeader, Batches, CleanOutcome, LogConfig, LogConfigError, LogError, LogStore,
    PartitionLog, RecordBatch, checkpoint, records,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cleaner::CleanerStats;
use crate::replication::{LeaderView, Leadership};
use crate::txn_index::{AbortedTxn, TxnIndex};

mod snapshot;

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

#[derive(Debug, Default, PartialEq, Eq)]
struct Producer {
    epoch: i16,
    recent: VecDeque<Appended>,
    /// The largest batch timestamp seen from it: its state expires
    /// `producer.id.expiration.ms` after that, as in Kafka.
    last_timestamp: i64,
    /// The coordinator epoch of its last transaction marker here. The coordinator numbers
    /// each transaction's markers (the transaction's marker epoch), so a marker whose epoch is
    /// not past this one is a copy of a marker written already, or of an older one.
    coordinator_epoch: Option<i32>,
}

/// An idempotent producer whose state a partition keeps (DescribeProducers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    /// Producer id.
    pub producer_id: i64,
    /// Its epoch.
    pub epoch: i16,
    /// The sequence of its last record in the log.
    pub last_sequence: i32,
    /// The largest batch timestamp seen from it.
    pub last_timestamp: i64,
    /// The coordinator epoch of its last transaction marker here, if it has one.
    pub coordinator_epoch: Option<i32>,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// Log start offset.
    pub log_start_offset: i64,
}

/// One partition stored here.
#[derive(Debug)]
pub struct Replica {
    log: Arc<PartitionLog>,
    producers: Mutex<HashMap<i64, Producer>>,
    /// The transactions open and aborted in the log; locked after `producers`.
    txns: Mutex<TxnIndex>,
    high_watermark: watch::Sender<i64>,
    /// On the leader: the smallest log start offset over the ISR (what DeleteRecords waits
    /// for); also woken when the leadership ends.
    low_watermark: watch::Sender<i64>,
    /// The high watermark last written to the partition's checkpoint file (`None`: nothing
    /// written by this replica yet); held while writing, so writes do not interleave.
    checkpointed: Mutex<Option<i64>>,
    /// The offset of the producer-state snapshot on disk, if this replica knows of one; held
    /// while writing or removing it, and taken before `producers`.
    snapshotted: Mutex<Option<i64>>,
    /// The epoch fence. Every write to the log holds it shared and checks it; a change of role
    /// takes it exclusively, so no write of an older role lands after the change.
    role: RwLock<Role>,
    /// Set while this broker leads the partition.
    leadership: Mutex<Option<Leadership>>,
    /// What the log cleaner last did here.
    cleaner: Mutex<CleanerStats>,
}

/// The newest leader epoch a replica was told of, and whether this broker leads in it.
#[derive(Debug, Clone, Copy)]
struct Role {
    epoch: i32,
    leading: bool,
}

/// Why a follower's write to its log was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FollowError {
    /// The partition moved on: this broker leads it now, or a newer leader epoch is known.
    #[error("not following leader epoch {followed} any more (epoch {epoch}, leading: {leading})")]
    Stale {
        /// The epoch the write came from.
        followed: i32,
        /// The newest epoch known.
        epoch: i32,
        /// Whether this broker leads.
        leading: bool,
    },
    /// The log refused it.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Why a partition operation failed. `kafka::errors` maps each to its Kafka error code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionError {
    /// This broker does not lead the partition in the epoch the caller acted in (or the
    /// leadership ended while it waited).
    #[error("not the leader of the partition in leader epoch {epoch}")]
    NotLeader {
        /// The leader epoch the caller acted in.
        epoch: i32,
    },
    /// The write reached the high watermark but the ISR had shrunk below
    /// `min.insync.replicas` by then.
    #[error("the ISR has {isr} replicas, fewer than min.insync.replicas {min}")]
    NotEnoughReplicasAfterAppend {
        /// Replicas in sync.
        isr: usize,
        /// The topic's `min.insync.replicas`.
        min: usize,
    },
    /// The write did not reach the high watermark before the request's deadline.
    #[error("the write was not replicated to the ISR in time")]
    ReplicationTimedOut,
    /// A batch from an idempotent producer's older epoch.
    #[error("producer {producer_id} epoch {epoch} is older than its current epoch {current}")]
    StaleProducerEpoch {
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The newest epoch seen.
        current: i16,
    },
    /// A transaction marker older than the producer's last marker here.
    #[error(
        "producer {producer_id}'s marker of coordinator epoch {coordinator_epoch} is older than \
         its last one here ({current})"
    )]
    StaleCoordinatorEpoch {
        /// The producer.
        producer_id: i64,
        /// The marker's coordinator epoch.
        coordinator_epoch: i32,
        /// The coordinator epoch of the producer's last marker.
        current: i32,
    },
    /// A batch whose base sequence does not continue the producer's last one.
    #[error("producer {producer_id} sent sequence {got}, expected {expected}")]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The sequence that would continue.
        expected: i32,
        /// The batch's base sequence.
        got: i32,
    },
    /// More than one batch of an idempotent producer in one partition's records.
    #[error("{batches} idempotent batches for one partition in one request")]
    TooManyIdempotentBatches {
        /// How many.
        batches: usize,
    },
    /// The topic's configuration does not make a log configuration.
    #[error(transparent)]
    InvalidConfig(#[from] LogConfigError),
    /// The partition log refused or failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

impl Replica {
    /// The producers whose state this partition keeps, by producer id.
    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        let producers = self.producers.lock();
        let mut active: Vec<ActiveProducer> = producers
            .iter()
            .filter_map(|(id, p)| {
                Some(ActiveProducer {
                    producer_id: *id,
                    epoch: p.epoch,
                    last_sequence: p.recent.back()?.last_sequence,
                    last_timestamp: p.last_timestamp,
                    coordinator_epoch: p.coordinator_epoch,
                })
            })
            .collect();
        active.sort_by_key(|p| p.producer_id);
        active
    }

    /// The replica of an open log, with the producer state recovered from it (see
    /// [`recover_producers`]). Blocking.
    pub(crate) fn open(log: Arc<PartitionLog>) -> Result<Self, LogError> {
        let recovered = recover_producers(&log)?;
        debug!(
            dir = %log.dir().display(),
            read_from = recovered.read_from,
            log_end = log.log_end_offset(),
            "producer state recovered"
        );
        // After a restart: the last checkpoint (never above what was committed), within the
        // log; rises as the ISR (or the leader, on a follower) reports progress.
        let start = log.log_start_offset();
        let checkpointed = checkpoint::HIGH_WATERMARK
            .load(log.dir())
            .unwrap_or(start)
            .max(start)
            .min(log.log_end_offset());
        let high_watermark = watch::Sender::new(checkpointed);
        Ok(Self {
            log,
            producers: Mutex::new(recovered.producers),
            txns: Mutex::new(recovered.txns),
            high_watermark,
            low_watermark: watch::Sender::new(start),
            checkpointed: Mutex::new(None),
            snapshotted: Mutex::new(recovered.snapshot),
            role: RwLock::new(Role {
                epoch: -1,
                leading: false,
            }),
            leadership: Mutex::new(None),
            cleaner: Mutex::new(CleanerStats::default()),
        })
    }

    /// What the log cleaner last did to this replica's log.
    pub fn cleaner_stats(&self) -> CleanerStats {
        *self.cleaner.lock()
    }

    /// The log cleaner found the log this dirty.
    pub(crate) fn note_dirty_ratio(&self, ratio: f64) {
        self.cleaner.lock().dirty_ratio = ratio;
    }

    /// The log cleaner cleaned the log at `now_ms`.
    pub(crate) fn note_clean(&self, now_ms: i64, outcome: &CleanOutcome) {
        let mut stats = self.cleaner.lock();
        if outcome.cleaned_to.is_some() {
            stats.last_clean_ms = Some(now_ms);
            stats.dirty_ratio = 0.0;
        }
        let removed = outcome.bytes_before.saturating_sub(outcome.bytes_after);
        stats.bytes_cleaned += outcome.bytes_before;
        stats.bytes_removed += removed;
        metrics::counter!(crate::telemetry::CLEANER_CLEANED_BYTES).increment(outcome.bytes_before);
        metrics::counter!(crate::telemetry::CLEANER_REMOVED_BYTES).increment(removed);
    }

    /// The high watermark: consumers read below it.
    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    /// The last stable offset: the high watermark, or the first offset of the earliest
    /// transaction still open, if lower — but never below the log start offset (retention or
    /// DeleteRecords may have removed an open transaction's first records). A
    /// `read_committed` consumer reads below it.
    pub fn last_stable_offset(&self) -> i64 {
        let high_watermark = self.high_watermark();
        self.txns
            .lock()
            .first_unstable()
            .map_or(high_watermark, |first| {
                first.max(self.log.log_start_offset()).min(high_watermark)
            })
    }

    /// The aborted transactions a read of `[from, to)` may hold records of.
    pub fn aborted_transactions(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.txns.lock().aborted_between(from, to)
    }

    /// Where `producer_id`'s open transaction starts in this partition, if it has one.
    pub fn open_transaction_start(&self, producer_id: i64) -> Option<i64> {
        self.txns.lock().open_since(producer_id)
    }

    /// Write the high watermark to the partition's checkpoint file if it moved since the last
    /// write. Blocking.
    pub fn checkpoint_high_watermark(&self) -> Result<(), LogError> {
        let mut checkpointed = self.checkpointed.lock();
        let hw = self.high_watermark();
        if *checkpointed != Some(hw) {
            checkpoint::HIGH_WATERMARK.store(self.log.dir(), hw)?;
            *checkpointed = Some(hw);
        }
        Ok(())
    }

    /// Write the producer-state snapshot if the log moved since the last one. Blocking.
    pub fn snapshot_producers(&self) -> Result<(), LogError> {
        let mut snapshotted = self.snapshotted.lock();
        let (offset, bytes) = {
            // Every append holds `producers` while it writes the log and updates the state:
            // under it, the log end offset and the state agree.
            let producers = self.producers.lock();
            let txns = self.txns.lock();
            let offset = self.log.log_end_offset();
            if *snapshotted == Some(offset) {
                return Ok(());
            }
            (offset, snapshot::encode(offset, &producers, &txns))
        };
        snapshot::store(self.log.dir(), &bytes)?;
        *snapshotted = Some(offset);
        Ok(())
    }

    /// Follows the high watermark; also woken when the leadership ends.
    pub fn subscribe_high_watermark(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// `me` leads the partition as `view` says: starts a leadership at a new leader epoch
    /// (waking produce requests of an older one, which then fail), else takes the newer ISR.
    /// A view older than the newest epoch known here changes nothing.
    pub fn lead(&self, me: BrokerId, view: LeaderView) {
        // Every request of a leader passes here: the fence is taken exclusively only when the
        // role changes, so appends in flight do not hold up the others.
        {
            let role = self.role.read();
            if role.leading && role.epoch == view.leader_epoch {
                self.take_view(me, view);
                return;
            }
            if view.leader_epoch <= role.epoch {
                return;
            }
        }
        let mut role = self.role.write();
        if view.leader_epoch < role.epoch || (view.leader_epoch == role.epoch && !role.leading) {
            return;
        }
        *role = Role {
            epoch: view.leader_epoch,
            leading: true,
        };
        self.take_view(me, view);
    }

    /// Start or update the leadership state from `view`; under the fence, shared or not.
    fn take_view(&self, me: BrokerId, view: LeaderView) {
        let now = Instant::now();
        let mut leadership = self.leadership.lock();
        match leadership.as_mut() {
            // A view older than the leadership held (read before it) changes nothing.
            Some(l)
                if l.leader_epoch() > view.leader_epoch
                    || (l.leader_epoch() == view.leader_epoch
                        && l.partition_epoch() >= view.partition_epoch) => {}
            Some(l) if l.leader_epoch() == view.leader_epoch => l.update(view, now),
            _ => {
                *leadership = Some(Leadership::new(me, view, self.log.log_end_offset(), now));
                self.high_watermark.send_modify(|_| {});
            }
        }
        self.advance_high_watermark(leadership.as_ref());
        self.refresh_low_watermark(leadership.as_ref());
    }

    /// The metadata, at `leader_epoch`, has another leader (or none) for the partition: this
    /// replica follows in that epoch. A leadership of that epoch or older ends, and produce
    /// requests waiting for the ISR wake and fail; a newer one (from a later view) stays.
    pub fn follow(&self, leader_epoch: i32) {
        let mut role = self.role.write();
        if leader_epoch < role.epoch || (leader_epoch == role.epoch && role.leading) {
            return;
        }
        let was_leading = role.leading;
        *role = Role {
            epoch: leader_epoch,
            leading: false,
        };
        if was_leading {
            *self.leadership.lock() = None;
            self.high_watermark.send_modify(|_| {});
            self.low_watermark.send_modify(|_| {});
        }
    }

    /// The leader epoch this broker leads the partition in, if it does.
    pub fn led_epoch(&self) -> Option<i32> {
        let role = self.role.read();
        role.leading.then_some(role.epoch)
    }

    /// Check, under the fence, that this replica follows in `epoch`.
    fn following(role: &Role, epoch: i32) -> Result<(), FollowError> {
        if role.leading || role.epoch != epoch {
            return Err(FollowError::Stale {
                followed: epoch,
                epoch: role.epoch,
                leading: role.leading,
            });
        }
        Ok(())
    }

    /// Whether `broker` is a replica of the partition led here.
    pub fn assigned(&self, broker: BrokerId) -> bool {
        self.leadership
            .lock()
            .as_ref()
            .is_some_and(|l| l.assigned(broker))
    }

    /// While this replica leads: its replica count, ISR size, and each follower's lag behind
    /// the log end offset in messages (`None` for a follower that has not fetched in this
    /// leadership).
    pub fn leader_stats(&self) -> Option<LeaderStats> {
        let log_end = self.log.log_end_offset();
        self.leadership.lock().as_ref().map(|l| LeaderStats {
            replicas: l.replica_count(),
            isr: l.isr_len(),
            follower_lag: l
                .follower_offsets()
                .map(|(id, end)| (id, end.map(|end| (log_end - end).max(0))))
                .collect(),
        })
    }

    /// The ISR size and `min.insync.replicas` of the leadership held here.
    pub fn insync(&self) -> Option<(usize, usize)> {
        self.leadership
            .lock()
            .as_ref()
            .map(|l| (l.isr_len(), l.min_insync()))
    }

    fn advance_high_watermark(&self, leadership: Option<&Leadership>) {
        let Some(candidate) = leadership.and_then(|l| l.high_watermark(self.log.log_end_offset()))
        else {
            return;
        };
        self.high_watermark.send_if_modified(|hw| {
            let advanced = candidate > *hw;
            if advanced {
                *hw = candidate;
            }
            advanced
        });
    }

    fn refresh_low_watermark(&self, leadership: Option<&Leadership>) {
        let Some(low) = leadership.and_then(|l| l.low_watermark(self.log.log_start_offset()))
        else {
            return;
        };
        self.low_watermark.send_if_modified(|current| {
            let changed = *current != low;
            *current = low;
            changed
        });
    }

    /// The leader notes a fetch by `follower` at `fetch_offset`, its log starting at
    /// `log_start`; returns whether the follower may now join the ISR.
    pub fn follower_fetched(&self, follower: BrokerId, fetch_offset: i64, log_start: i64) -> bool {
        let mut leadership = self.leadership.lock();
        let Some(l) = leadership.as_mut() else {
            return false;
        };
        let joins = l.record_fetch(
            follower,
            fetch_offset,
            log_start,
            self.log.log_end_offset(),
            self.high_watermark(),
            Instant::now(),
        );
        self.advance_high_watermark(leadership.as_ref());
        self.refresh_low_watermark(leadership.as_ref());
        joins
    }

    /// DeleteRecords on the leader of `leader_epoch`: moves the log start offset up to
    /// `offset` (`-1`: the high watermark) and returns the offset asked for. An offset past
    /// the high watermark, or negative, is out of range, as in Kafka. Blocking.
    pub fn delete_records(&self, offset: i64, leader_epoch: i32) -> Result<i64, PartitionError> {
        let role = self.role.read();
        if !(role.leading && role.epoch == leader_epoch) {
            return Err(PartitionError::NotLeader {
                epoch: leader_epoch,
            });
        }
        let high_watermark = self.high_watermark();
        let target = if offset == -1 { high_watermark } else { offset };
        if !(0..=high_watermark).contains(&target) {
            return Err(PartitionError::Log(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log.log_start_offset(),
                log_end_offset: high_watermark,
            }));
        }
        self.log.advance_start(target)?;
        self.refresh_low_watermark(self.leadership.lock().as_ref());
        Ok(target)
    }

    /// Wait until every member of the ISR has moved its log start offset to `offset` while
    /// this broker leads in `epoch`, until `deadline`; returns the low watermark then (what a
    /// DeleteRecords response carries).
    pub async fn wait_deleted(
        &self,
        offset: i64,
        epoch: i32,
        deadline: Instant,
    ) -> Result<i64, PartitionError> {
        let mut low = self.low_watermark.subscribe();
        loop {
            if self.led_epoch() != Some(epoch) {
                return Err(PartitionError::NotLeader { epoch });
            }
            let current = *low.borrow_and_update();
            if current >= offset {
                return Ok(current);
            }
            match tokio::time::timeout_at(deadline, low.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(PartitionError::NotLeader { epoch }),
                Err(_) => return Err(PartitionError::ReplicationTimedOut),
            }
        }
    }

    /// On a follower in `leader_epoch`: the leader's log start offset, as far as this log
    /// reaches — records the leader deleted go here too. Blocking.
    pub fn follow_log_start(
        &self,
        leader_epoch: i32,
        leader_start: i64,
    ) -> Result<(), FollowError> {
        let role = self.role.read();
        Self::following(&role, leader_epoch)?;
        let target = leader_start.min(self.log.log_end_offset());
        if target > self.log.log_start_offset() {
            let start = self.log.advance_start(target)?;
            self.high_watermark.send_if_modified(|hw| {
                let changed = *hw < start;
                *hw = (*hw).max(start);
                changed
            });
        }
        Ok(())
    }

    /// The ISR the followers' progress calls for (or a change in flight that got no answer),
    /// with the partition epoch to propose it at; the change is then counted as in flight
    /// until the metadata moves on or [`Self::isr_change_refused`].
    pub fn isr_change(
        &self,
        lag: std::time::Duration,
        live: impl Fn(BrokerId) -> bool,
    ) -> Option<(i32, Vec<BrokerId>)> {
        let mut leadership = self.leadership.lock();
        let l = leadership.as_mut()?;
        let isr = l.wanted_isr(self.high_watermark(), Instant::now(), lag, live)?;
        l.propose(isr.clone());
        let epoch = l.partition_epoch();
        self.advance_high_watermark(leadership.as_ref());
        Some((epoch, isr))
    }

    /// The ISR change proposed at `partition_epoch` was refused: it did not apply.
    pub fn isr_change_refused(&self, partition_epoch: i32) {
        let mut leadership = self.leadership.lock();
        if let Some(l) = leadership.as_mut()
            && l.partition_epoch() == partition_epoch
        {
            l.proposal_failed();
            self.advance_high_watermark(leadership.as_ref());
        }
    }

    /// The ISR change proposed at `partition_epoch` got no answer: it may have applied. It
    /// stays in flight, and the next [`Self::isr_change`] proposes it again.
    pub fn isr_change_unknown(&self, partition_epoch: i32) {
        if let Some(l) = self.leadership.lock().as_mut()
            && l.partition_epoch() == partition_epoch
        {
            l.proposal_unknown();
        }
    }

    /// On a follower in `leader_epoch`: the leader's high watermark, as far as this log
    /// reaches. Ignored once the replica no longer follows in that epoch.
    pub fn follow_high_watermark(&self, leader_epoch: i32, leader_high_watermark: i64) {
        let role = self.role.read();
        if Self::following(&role, leader_epoch).is_err() {
            return;
        }
        let hw = leader_high_watermark.min(self.log.log_end_offset());
        self.high_watermark.send_if_modified(|current| {
            let changed = *current != hw;
            *current = hw;
            changed
        });
    }

    /// Wait until the high watermark reaches `offset` while this broker leads in `epoch`,
    /// until `deadline`: what a produce with `acks=all` waits for. Then fails with
    /// [`PartitionError::NotEnoughReplicasAfterAppend`] if the ISR is below
    /// `min.insync.replicas`.
    pub async fn wait_replicated(
        &self,
        offset: i64,
        epoch: i32,
        deadline: Instant,
    ) -> Result<(), PartitionError> {
        let mut hw = self.high_watermark.subscribe();
        loop {
            let reached = *hw.borrow_and_update() >= offset;
            match self.insync() {
                Some(_) if self.led_epoch() != Some(epoch) => {
                    return Err(PartitionError::NotLeader { epoch });
                }
                None => return Err(PartitionError::NotLeader { epoch }),
                Some((isr, min)) if reached && isr < min => {
                    return Err(PartitionError::NotEnoughReplicasAfterAppend { isr, min });
                }
                Some(_) if reached => return Ok(()),
                Some(_) => {}
            }
            match tokio::time::timeout_at(deadline, hw.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(PartitionError::NotLeader { epoch }),
                Err(_) => return Err(PartitionError::ReplicationTimedOut),
            }
        }
    }

    /// The partition's log.
    pub fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }

    /// Forget the idempotent producers whose latest batch timestamp is at least
    /// `expiration_ms` before `now_ms` (`producer.id.expiration.ms`): a producer that comes
    /// back after that starts over at sequence 0, as in Kafka. Returns how many were dropped.
    pub fn expire_producers(&self, now_ms: i64, expiration_ms: u64) -> usize {
        let expiration = i64::try_from(expiration_ms).unwrap_or(i64::MAX);
        let mut producers = self.producers.lock();
        let before = producers.len();
        producers.retain(|_, p| now_ms.saturating_sub(p.last_timestamp) < expiration);
        before - producers.len()
    }

    /// Append a Produce request's records, enforcing idempotent-producer sequences. Blocking:
    /// run it with `spawn_blocking`.
    pub fn append(
        &self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendResult, PartitionError> {
        // Held until the append is done: a change of role waits for it.
        let role = self.role.read();
        if !(role.leading && role.epoch == leader_epoch) {
            return Err(PartitionError::NotLeader {
                epoch: leader_epoch,
            });
        }
        let mut headers = Vec::new();
        let config = self.log.config();
        let codec = config.compression;
        // The batches as stored: in the topic's codec when it names one (Kafka's
        // recompression on append), else as produced.
        let mut stored: Option<Vec<u8>> = None;
        let mut at = 0;
        for batch in Batches::new(records) {
            let batch = batch.map_err(LogError::InvalidBatch)?;
            records::validate(&batch).map_err(LogError::InvalidRecords)?;
            if config.cleanup.compact {
                records::require_keys(&batch).map_err(LogError::InvalidRecords)?;
            }
            headers.push(*batch.header());
            let rewritten = match codec {
                Some(codec) => {
                    records::recompress(&batch, codec).map_err(LogError::InvalidRecords)?
                }
                None => None,
            };
            match (rewritten, stored.as_mut()) {
                (Some(bytes), Some(out)) => out.extend_from_slice(&bytes),
                (Some(bytes), None) => {
                    let mut out = records[..at].to_vec();
                    out.extend_from_slice(&bytes);
                    stored = Some(out);
                }
                (None, Some(out)) => out.extend_from_slice(batch.bytes()),
                (None, None) => {}
            }
            at += batch.size();
        }
        let records = stored.as_deref().unwrap_or(records);
        let idempotent: Vec<_> = headers.iter().filter(|h| h.producer_id >= 0).collect();
        let mut producers = self.producers.lock();
        if let [header] = idempotent.as_slice() {
            let last_sequence = add_sequence(header.base_sequence, header.record_count - 1);
            let producer = producers.get(&header.producer_id);
            match producer {
                Some(p) if header.producer_epoch < p.epoch => {
                    return Err(PartitionError::StaleProducerEpoch {
                        producer_id: header.producer_id,
                        epoch: header.producer_epoch,
                        current: p.epoch,
                    });
                }
                Some(p) if header.producer_epoch == p.epoch => {
                    if let Some(dup) = p.recent.iter().find(|a| {
                        a.first_sequence == header.base_sequence && a.last_sequence == last_sequence
                    }) {
                        return Ok(AppendResult {
                            base_offset: dup.base_offset,
                            last_offset: dup.base_offset + i64::from(header.record_count) - 1,
                            log_start_offset: self.log.log_start_offset(),
                        });
                    }
                    let expected = p
                        .recent
                        .back()
                        .map_or(0, |a| add_sequence(a.last_sequence, 1));
                    if header.base_sequence != expected {
                        return Err(PartitionError::OutOfOrderSequence {
                            producer_id: header.producer_id,
                            expected,
                            got: header.base_sequence,
                        });
                    }
                }
                // New producer, or a new epoch: sequences start over at 0.
                _ if header.base_sequence != 0 => {
                    return Err(PartitionError::OutOfOrderSequence {
                        producer_id: header.producer_id,
                        expected: 0,
                        got: header.base_sequence,
                    });
                }
                _ => {}
            }
        } else if idempotent.len() > 1 {
            // Idempotent producers send one batch per partition per request.
            return Err(PartitionError::TooManyIdempotentBatches {
                batches: idempotent.len(),
            });
        }
        let info = self.log.append(records, leader_epoch, now_ms)?;
        if let [header] = idempotent.as_slice() {
            let producer = producers.entry(header.producer_id).or_default();
            remember(producer, header, info.base_offset);
        }
        if headers.iter().any(|h| h.is_transactional()) {
            let mut txns = self.txns.lock();
            let mut offset = info.base_offset;
            for batch in Batches::new(records).flatten() {
                txns.track(&batch, offset);
                offset += i64::from(batch.header().last_offset_delta) + 1;
            }
        }
        drop(producers);
        self.advance_high_watermark(self.leadership.lock().as_ref());
        Ok(AppendResult {
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            log_start_offset: info.log_start_offset,
        })
    }

    /// Append a transaction marker for `producer` (id, epoch) on the leader of `leader_epoch`:
    /// what WriteTxnMarkers asks of a partition leader. A marker of an epoch older than the
    /// producer's here is refused (the producer was fenced since), and so is one whose
    /// coordinator epoch is below that of the producer's last marker here (a late copy of an
    /// older transaction's). One whose coordinator epoch equals it is a copy of that marker,
    /// late or retried, and is not written again: it would end the transaction open now.
    /// Returns the log end offset the ISR has to reach for the marker to count. Blocking.
    pub fn append_marker(
        &self,
        producer: (i64, i16),
        marker: Marker,
        coordinator_epoch: i32,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<i64, PartitionError> {
        let role = self.role.read();
        if !(role.leading && role.epoch == leader_epoch) {
            return Err(PartitionError::NotLeader {
                epoch: leader_epoch,
            });
        }
        let mut producers = self.producers.lock();
        if let Some(p) = producers.get(&producer.0) {
            if producer.1 < p.epoch {
                return Err(PartitionError::StaleProducerEpoch {
                    producer_id: producer.0,
                    epoch: producer.1,
                    current: p.epoch,
                });
            }
            if let Some(last) = p.coordinator_epoch {
                // Marker epochs wrap: the nearer way round decides which is later.
                match coordinator_epoch.wrapping_sub(last) {
                    0 => return Ok(self.log.log_end_offset()),
                    behind if behind < 0 => {
                        return Err(PartitionError::StaleCoordinatorEpoch {
                            producer_id: producer.0,
                            coordinator_epoch,
                            current: last,
                        });
                    }
                    _ => {}
                }
            }
        }
        let bytes = marker_batch(producer, marker, coordinator_epoch, now_ms);
        let info = self.log.append(&bytes, leader_epoch, now_ms)?;
        let batch = RecordBatch::parse(&bytes, 0).map_err(LogError::InvalidBatch)?;
        remember_marker(producers.entry(producer.0).or_default(), &batch);
        let mut txns = self.txns.lock();
        txns.track(&batch, info.base_offset);
        txns.trim(self.log.log_start_offset());
        drop(txns);
        drop(producers);
        self.advance_high_watermark(self.leadership.lock().as_ref());
        Ok(info.last_offset + 1)
    }

    /// Append batches fetched from the leader of `leader_epoch` as they are (offsets and
    /// epochs kept), and follow the idempotent producers in them; refused unless this replica
    /// still follows in that epoch. Returns the new log end offset. Blocking.
    pub fn append_replicated(
        &self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<i64, FollowError> {
        let role = self.role.read();
        Self::following(&role, leader_epoch)?;
        let mut producers = self.producers.lock();
        let info = self.log.append_replicated(records, now_ms)?;
        let mut txns = self.txns.lock();
        for batch in Batches::new(records) {
            observe(
                &mut producers,
                &mut txns,
                &batch.map_err(LogError::InvalidBatch)?,
            );
        }
        Ok(info.last_offset + 1)
    }

    /// Cut the log back to `offset` (see [`PartitionLog::truncate_to`]) while following in
    /// `leader_epoch`, and rebuild the producer state from what remains. Returns the new log
    /// end offset. Blocking.
    pub fn truncate_to(
        &self,
        offset: i64,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<i64, FollowError> {
        self.rewrite(leader_epoch, |log| log.truncate_to(offset, now_ms))
    }

    /// Empty the log and restart it at `offset` (see [`PartitionLog::restart_at`]) while
    /// following in `leader_epoch`. Blocking.
    pub fn restart_at(
        &self,
        offset: i64,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<i64, FollowError> {
        self.rewrite(leader_epoch, |log| log.restart_at(offset, now_ms))
    }

    fn rewrite(
        &self,
        leader_epoch: i32,
        cut: impl FnOnce(&PartitionLog) -> Result<i64, LogError>,
    ) -> Result<i64, FollowError> {
        let role = self.role.read();
        Self::following(&role, leader_epoch)?;
        // The snapshot describes the log before the cut, which may grow again past its offset
        // with other batches: gone, durably, first.
        let mut snapshotted = self.snapshotted.lock();
        snapshot::remove(self.log.dir())?;
        *snapshotted = None;
        let mut producers = self.producers.lock();
        let mut txns = self.txns.lock();
        let end = cut(&self.log)?;
        *producers = HashMap::new();
        *txns = TxnIndex::default();
        let start = self.log.log_start_offset();
        read_producers(&self.log, start, &mut producers, &mut txns)?;
        self.high_watermark.send_if_modified(|hw| {
            let bounded = (*hw).max(start).min(end);
            let changed = bounded != *hw;
            *hw = bounded;
            changed
        });
        Ok(end)
    }
}

fn add_sequence(sequence: i32, delta: i32) -> i32 {
    // Sequences wrap from i32::MAX to 0.
    let next = i64::from(sequence) + i64::from(delta);
    (next % (i64::from(i32::MAX) + 1)) as i32
}

/// Note a batch of `producer`'s stored at `base_offset`. Its last sequence follows from its
/// offset span (`lastOffsetDelta`), not its record count: a compacted batch keeps its span and
/// sequences but may hold fewer records.
fn remember(producer: &mut Producer, header: &BatchHeader, base_offset: i64) {
    let (epoch, base_sequence, span) = (
        header.producer_epoch,
        header.base_sequence,
        header.last_offset_delta,
    );
    producer.last_timestamp = producer.last_timestamp.max(header.max_timestamp);
    if epoch != producer.epoch {
        producer.epoch = epoch;
        producer.recent.clear();
    }
    producer.recent.push_back(Appended {
        first_sequence: base_sequence,
        last_sequence: add_sequence(base_sequence, span),
        base_offset,
    });
    while producer.recent.len() > RETAINED_BATCHES {
        producer.recent.pop_front();
    }
}

/// A transaction marker of `producer`'s: a newer epoch (the coordinator fenced the producer)
/// starts its sequences over; the sequences of the same epoch go on. Its coordinator epoch
/// is the producer's last.
fn remember_marker(producer: &mut Producer, marker: &RecordBatch<'_>) {
    let header = marker.header();
    producer.coordinator_epoch = coordinator_epoch_of(marker).or(producer.coordinator_epoch);
    producer.last_timestamp = producer.last_timestamp.max(header.max_timestamp);
    if header.producer_epoch > producer.epoch {
        producer.epoch = header.producer_epoch;
        producer.recent.clear();
    }
}

/// Note a batch stored at its own base offset (copied from the leader, or read back from the
/// log) in the producer and transaction state.
fn observe(producers: &mut HashMap<i64, Producer>, txns: &mut TxnIndex, batch: &RecordBatch<'_>) {
    let header = batch.header();
    if header.producer_id >= 0 {
        let producer = producers.entry(header.producer_id).or_default();
        if header.is_control() {
            remember_marker(producer, batch);
        } else {
            remember(producer, header, header.base_offset);
        }
    }
    txns.track(batch, header.base_offset);
}

/// Producer and transaction state recovered when a partition opens.
#[derive(Debug)]
struct Recovered {
    producers: HashMap<i64, Producer>,
    txns: TxnIndex,
    /// The offset of the snapshot left on disk, if any.
    snapshot: Option<i64>,
    /// Where reading the log started: the snapshot's offset, or the log start.
    read_from: i64,
}

/// Producer and transaction state of `log`: its snapshot and the batches after it, when the
/// snapshot describes a part of the log that is still there; else all the log's batches. A
/// snapshot above the log end (a tail crash recovery cut off was in it) is removed; an
/// unreadable one is ignored (and replaced by the next). Blocking.
fn recover_producers(log: &PartitionLog) -> Result<Recovered, LogError> {
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    let dir = log.dir();
    let (found, kept) = match snapshot::load(dir) {
        Ok(None) => (None, None),
        Ok(Some(s)) if s.offset > end => {
            warn!(
                dir = %dir.display(),
                snapshot = s.offset,
                log_end = end,
                "producer snapshot is past the log end; removed, reading the whole log"
            );
            snapshot::remove(dir)?;
            (None, None)
        }
        // Retention or DeleteRecords removed batches after it.
        Ok(Some(s)) if s.offset < start => (None, Some(s.offset)),
        Ok(Some(s)) => {
            let offset = s.offset;
            (Some(s), Some(offset))
        }
        Err(reason) => {
            warn!(dir = %dir.display(), %reason, "producer snapshot unusable; reading the whole log");
            (None, None)
        }
    };
    let (mut producers, mut txns, read_from) = match found {
        Some(s) => (s.producers, s.txns, s.offset),
        None => (HashMap::new(), TxnIndex::default(), start),
    };
    txns.trim(start);
    read_producers(log, read_from, &mut producers, &mut txns)?;
    Ok(Recovered {
        producers,
        txns,
        snapshot: kept,
        read_from,
    })
}

/// Add the batches of `log` from `from` on to the producer and transaction state.
fn read_producers(
    log: &PartitionLog,
    from: i64,
    producers: &mut HashMap<i64, Producer>,
    txns: &mut TxnIndex,
) -> Result<(), LogError> {
    let mut offset = from;
    let end = log.log_end_offset();
    while offset < end {
        let read = log.read(offset, 1 << 20)?;
        if read.records.is_empty() {
            break;
        }
        let mut next = offset;
        for batch in Batches::new(&read.records) {
            let batch = batch.map_err(LogError::InvalidBatch)?;
            observe(producers, txns, &batch);
            next = batch.header().next_offset();
        }
        if next <= offset {
            break;
        }
        offset = next;
    }
    Ok(())
}

/// A led partition's replication, for metrics ([`Replica::leader_stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderStats {
    /// Assigned replicas.
    pub replicas: usize,
    /// In-sync replicas, as the metadata has them.
    pub isr: usize,
    /// Each follower and how many messages it is behind the leader's log end offset.
    pub follower_lag: Vec<(BrokerId, Option<i64>)>,
}

/// Every partition stored on this broker.
#[derive(Debug)]
pub struct Replicas {
    store: LogStore,
    /// The log configuration of a topic without overrides.
    base: LogConfig,
    open: RwLock<BTreeMap<(String, i32), Arc<Replica>>>,
}

impl Replicas {
    /// Open (and recover) every partition log under `data_dir/logs`; `base` is the log
    /// configuration of a topic without overrides (the broker's defaults).
    pub fn open(data_dir: &Path, base: LogConfig) -> Result<Self, LogError> {
        Ok(Self {
            store: LogStore::open(data_dir, base.clone())?,
            base,
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
    ) -> Result<Arc<Replica>, PartitionError> {
        if let Some(replica) = self.open.read().get(&(topic.to_owned(), partition)) {
            return Ok(Arc::clone(replica));
        }
        let config = self.base.with_overrides(configs)?;
        let log = self.store.get_or_create(topic, partition, config.clone())?;
        // A log opened at start-up runs with the broker's defaults until its topic's
        // configuration is known: here.
        if log.config() != config {
            log.set_config(config);
        }
        let mut open = self.open.write();
        if let Some(replica) = open.get(&(topic.to_owned(), partition)) {
            return Ok(Arc::clone(replica));
        }
        let replica = Arc::new(Replica::open(log).map_err(|e| {
            warn!(topic, partition, error = %e, "cannot rebuild producer state");
            e
        })?);
        open.insert((topic.to_owned(), partition), Arc::clone(&replica));
        Ok(replica)
    }

    /// The log configuration of a topic without overrides: the broker's defaults.
    pub fn base_config(&self) -> &LogConfig {
        &self.base
    }

    /// The directory every partition log lives under (`<data_dir>/logs`).
    pub fn logs_dir(&self) -> &Path {
        self.store.root()
    }

    /// The replica if its log is open; `None` if nothing opened it since start.
    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Replica>> {
        self.open
            .read()
            .get(&(topic.to_owned(), partition))
            .cloned()
    }

    /// Every open replica with its topic and partition.
    pub fn open_replicas(&self) -> Vec<(String, i32, Arc<Replica>)> {
        self.open
            .read()
            .iter()
            .map(|((t, p), r)| (t.clone(), *p, Arc::clone(r)))
            .collect()
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

    /// The replica of `topic`/`partition` has a log on disk (open as a replica or not).
    pub fn is_stored(&self, topic: &str, partition: i32) -> bool {
        self.store.get(topic, partition).is_some()
    }

    /// Enforce retention and time-based flushes on the log of every open replica (a log not
    /// opened as a replica since start-up does not know its topic's configuration yet, and
    /// takes no appends), and forget idempotent producers not heard from for
    /// `producer_expiration_ms`. Blocking.
    pub fn maintain(&self, now_ms: i64, producer_expiration_ms: u64) {
        for (topic, partition, replica) in self.open_replicas() {
            let log = replica.log();
            match log.enforce_retention(now_ms) {
                Ok(outcome) => {
                    metrics::counter!(crate::telemetry::RETENTION_DELETED_BYTES)
                        .increment(outcome.deleted_bytes);
                }
                Err(e) => warn!(topic, partition, error = %e, "retention failed"),
            }
            if let Err(e) = log.flush_if_due(now_ms) {
                warn!(topic, partition, error = %e, "flush failed");
            }
        }
        for (_, _, replica) in self.open_replicas() {
            replica.expire_producers(now_ms, producer_expiration_ms);
        }
    }

    /// Checkpoint the high watermark and snapshot the producer state of every open replica
    /// whose watermark or log moved. Blocking.
    pub fn checkpoint_replicas(&self) {
        for (topic, partition, replica) in self.open_replicas() {
            // Not a replica of a topic deleted since the listing (its directory may already
            // belong to a topic created again under the same name).
            let current = self
                .get(&topic, partition)
                .is_some_and(|r| Arc::ptr_eq(&r, &replica));
            if !current {
                continue;
            }
            if let Err(e) = replica.checkpoint_high_watermark() {
                warn!(topic, partition, error = %e, "high-watermark checkpoint failed");
            }
            if let Err(e) = replica.snapshot_producers() {
                warn!(topic, partition, error = %e, "producer snapshot failed");
            }
        }
    }

    /// Checkpoint the high watermarks and producer state, then flush and close every log
    /// (clean shutdown).
    /// Blocking.
    pub fn close(&self, now_ms: i64) {
        self.checkpoint_replicas();
        if let Err(e) = self.store.close(now_ms) {
            warn!(error = %e, "closing partition logs failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use switchyard_log::batch::testing::{producer_batch, transactional_batch};

    const LEADER: BrokerId = BrokerId(1);
    const FOLLOWER: BrokerId = BrokerId(2);
    const EPOCH: i32 = 4;

    fn replica(dir: &Path) -> Arc<Replica> {
        let log = PartitionLog::open(dir, LogConfig::default()).expect("open log");
        Arc::new(Replica::open(Arc::new(log)).expect("open replica"))
    }

    fn view(leader_epoch: i32, isr: &[BrokerId], min_insync: usize) -> LeaderView {
        LeaderView {
            leader_epoch,
            partition_epoch: 0,
            replicas: vec![LEADER, FOLLOWER],
            isr: isr.to_vec(),
            min_insync,
        }
    }

    fn plain(values: &[&[u8]]) -> Vec<u8> {
        producer_batch((-1, -1, -1), 0, values)
    }

    #[tokio::test]
    async fn acks_all_waits_for_the_isr_and_fails_when_the_leadership_ends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let r = replica(dir.path());
        r.lead(LEADER, view(EPOCH, &[LEADER, FOLLOWER], 2));
        let appended = r.append(&plain(&[b"a", b"b"]), EPOCH, 0).expect("append");
        assert_eq!((appended.base_offset, appended.last_offset), (0, 1));
        assert_eq!(r.high_watermark(), 0, "the follower has not fetched");
        let deadline = Instant::now() + Duration::from_secs(30);
        let waiting = tokio::spawn({
            let r = Arc::clone(&r);
            async move { r.wait_replicated(2, EPOCH, deadline).await }
        });
        assert!(!r.follower_fetched(FOLLOWER, 0, 0));
        assert_eq!(r.high_watermark(), 0);
        r.follower_fetched(FOLLOWER, 2, 0);
        assert_eq!(r.high_watermark(), 2);
        assert!(matches!(waiting.await.expect("join"), Ok(())));

        r.append(&plain(&[b"c"]), EPOCH, 0).expect("append");
        let waiting = tokio::spawn({
            let r = Arc::clone(&r);
            async move { r.wait_replicated(3, EPOCH, deadline).await }
        });
        // A view from before this leadership changes nothing; the metadata moving on does.
        r.follow(EPOCH - 1);
        assert_eq!(r.led_epoch(), Some(EPOCH));
        r.follow(EPOCH + 1);
        assert!(matches!(
            waiting.await.expect("join"),
            Err(PartitionError::NotLeader { epoch: EPOCH })
        ));
        // The epoch fence: no write of the old leadership lands, nor does a stale view bring
        // it back.
        assert!(matches!(
            r.append(&plain(&[b"d"]), EPOCH, 0),
            Err(PartitionError::NotLeader { epoch: EPOCH })
        ));
        r.lead(LEADER, view(EPOCH, &[LEADER, FOLLOWER], 2));
        assert_eq!(r.led_epoch(), None);
        assert_eq!(r.log().log_end_offset(), 3);
    }

    #[test]
    fn idempotent_producer_state_expires_after_its_latest_batch() {
        let dir = tempfile::tempdir().expect("temp dir");
        let r = replica(dir.path());
        r.lead(LEADER, view(EPOCH, &[LEADER], 1));
        let first = producer_batch((7, 0, 0), 1_000, &[b"a"]);
        r.append(&first, EPOCH, 1_000).expect("append");
        r.append(&producer_batch((7, 0, 1), 5_000, &[b"b"]), EPOCH, 5_000)
            .expect("append");
        // A retry is recognised while the state is kept.
        let retried = r.append(&first, EPOCH, 5_001).expect("retry");
        assert_eq!(retried.base_offset, 0, "a duplicate is not written twice");
        assert_eq!(r.expire_producers(5_000 + 9_999, 10_000), 0);
        assert_eq!(r.expire_producers(5_000 + 10_000, 10_000), 1);
        // Forgotten: the producer must start over at sequence 0.
        assert!(matches!(
            r.append(&producer_batch((7, 0, 2), 20_000, &[b"c"]), EPOCH, 20_000),
            Err(PartitionError::OutOfOrderSequence {
                producer_id: 7,
                expected: 0,
                got: 2
            })
        ));
        assert!(
            r.append(&producer_batch((7, 0, 0), 20_000, &[b"c"]), EPOCH, 20_000)
                .is_ok()
        );
    }

    #[test]
    fn the_high_watermark_survives_a_restart_through_its_checkpoint() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let r = replica(dir.path());
            r.lead(LEADER, view(EPOCH, &[LEADER], 1));
            r.append(&plain(&[b"a", b"b", b"c"]), EPOCH, 0)
                .expect("append");
            assert_eq!(r.high_watermark(), 3);
            r.checkpoint_high_watermark().expect("checkpoint");
            r.append(&plain(&[b"d"]), EPOCH, 0).expect("append");
        }
        // Reopened: the checkpoint, not the log start and not the unconfirmed log end.
        let r = replica(dir.path());
        assert_eq!(r.high_watermark(), 3);
        assert_eq!(r.log().log_end_offset(), 4);
    }

    #[test]
    fn a_follower_refuses_writes_of_an_epoch_it_no_longer_follows() {
        let dir = tempfile::tempdir().expect("temp dir");
        let r = replica(dir.path());
        r.follow(EPOCH);
        let leader_dir = tempfile::tempdir().expect("temp dir");
        let leader = replica(leader_dir.path());
        leader.lead(LEADER, view(EPOCH, &[LEADER], 1));
        leader.append(&plain(&[b"a"]), EPOCH, 0).expect("append");
        let copied = leader.log().read(0, 1 << 20).expect("read").records;
        r.follow(EPOCH + 1);
        // A fetch loop of the old epoch finishing late: refused, the log untouched.
        assert!(matches!(
            r.append_replicated(&copied, EPOCH, 0),
            Err(FollowError::Stale { followed: EPOCH, epoch, leading: false }) if epoch == EPOCH + 1
        ));
        assert!(matches!(
            r.truncate_to(0, EPOCH, 0),
            Err(FollowError::Stale { .. })
        ));
        assert_eq!(r.log().log_end_offset(), 0);
        assert_eq!(r.append_replicated(&copied, EPOCH + 1, 0).expect("copy"), 1);
        // Leading now: follower writes are refused too.
        r.lead(FOLLOWER, view(EPOCH + 2, &[FOLLOWER], 1));
        assert!(matches!(
            r.append_replicated(&copied, EPOCH + 2, 0),
            Err(FollowError::Stale { leading: true, .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn acks_all_times_out_and_reports_a_shrunken_isr() {
        let dir = tempfile::tempdir().expect("temp dir");
        let r = replica(dir.path());
        r.lead(LEADER, view(EPOCH, &[LEADER, FOLLOWER], 2));
        r.append(&plain(&[b"a"]), EPOCH, 0).expect("append");
        let waited = r
            .wait_replicated(1, EPOCH, Instant::now() + Duration::from_secs(5))
            .await;
        assert!(matches!(waited, Err(PartitionError::ReplicationTimedOut)));
        // The follower left the ISR: the batch is committed, on fewer replicas than asked for.
        let mut shrunk = view(EPOCH, &[LEADER], 2);
        shrunk.partition_epoch = 1;
        r.lead(LEADER, shrunk);
        assert_eq!(r.high_watermark(), 1);
        let waited = r
            .wait_replicated(1, EPOCH, Instant::now() + Duration::from_secs(5))
            .await;
        assert!(matches!(
            waited,
            Err(PartitionError::NotEnoughReplicasAfterAppend { isr: 1, min: 2 })
        ));
    }

    #[test]
    fn a_new_leader_recognises_a_retry_of_a_batch_it_copied() {
        let dirs = [
            tempfile::tempdir().expect("temp dir"),
            tempfile::tempdir().expect("temp dir"),
        ];
        let old = replica(dirs[0].path());
        let new = replica(dirs[1].path());
        old.lead(LEADER, view(EPOCH, &[LEADER, FOLLOWER], 1));
        let first = producer_batch((7, 0, 0), 0, &[b"a", b"b"]);
        old.append(&first, EPOCH, 0).expect("append");
        let copied = old.log().read(0, 1 << 20).expect("read").records;
        new.follow(EPOCH);
        assert_eq!(
            new.append_replicated(&copied, EPOCH, 0).expect("replicate"),
            2
        );
        new.follow_high_watermark(EPOCH, 2);
        assert_eq!(new.high_watermark(), 2);

        // The old leader dies before answering; the producer retries at the new one.
        new.lead(FOLLOWER, view(EPOCH + 1, &[FOLLOWER], 1));
        let retried = new.append(&first, EPOCH + 1, 0).expect("retry");
        assert_eq!((retried.base_offset, retried.last_offset), (0, 1));
        assert_eq!(new.log().log_end_offset(), 2, "not written twice");
        let next = new
            .append(&producer_batch((7, 0, 2), 0, &[b"c"]), EPOCH + 1, 0)
            .expect("next");
        assert_eq!(next.base_offset, 2);
        // A sequence gap is still refused.
        assert!(matches!(
            new.append(&producer_batch((7, 0, 9), 0, &[b"d"]), EPOCH + 1, 0),
            Err(PartitionError::OutOfOrderSequence {
                expected: 3,
                got: 9,
                ..
            })
        ));

        // Following again, cut back below the copied batch: its producer state goes with it.
        new.follow(EPOCH + 2);
        assert_eq!(new.truncate_to(0, EPOCH + 2, 0).expect("truncate"), 0);
        assert_eq!(new.high_watermark(), 0);
        new.lead(FOLLOWER, view(EPOCH + 3, &[FOLLOWER], 1));
        let again = new
            .append(&first, EPOCH + 3, 0)
            .expect("append after the cut");
        assert_eq!(again.base_offset, 0);
        assert_eq!(new.log().log_end_offset(), 2);
    }

    /// Seed 1006 of the data-path soak found producer 1000's batch of sequences 49..=131
    /// twice in partition 0's log: under epoch 0, unacknowledged, and again under epoch 1 from
    /// sequence 0, after librdkafka bumped the epoch. That second copy is a new write by the
    /// protocol; what the broker owes is that a retry of a written batch that is not yet
    /// acknowledged — while the original waits for the ISR, several at once (an old
    /// connection's copy and the new connection's retry), or after the ISR fell below
    /// `min.insync.replicas` — gets the original offsets, never an error or a second copy.
    #[tokio::test]
    async fn retries_of_a_written_unacknowledged_batch_get_its_offsets() {
        const PID: i64 = 1000;
        let dir = tempfile::tempdir().expect("temp dir");
        let r = replica(dir.path());
        r.lead(LEADER, view(EPOCH, &[LEADER, FOLLOWER], 2));
        let values: Vec<Vec<u8>> = (0..132).map(|n| format!("p1-{n}").into_bytes()).collect();
        let values: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        r.append(&producer_batch((PID, 0, 0), 0, &values[..42]), EPOCH, 0)
            .expect("append");
        r.append(&producer_batch((PID, 0, 42), 0, &values[42..49]), EPOCH, 0)
            .expect("append");
        r.follower_fetched(FOLLOWER, 49, 0);
        assert_eq!(r.high_watermark(), 49);

        let batch = producer_batch((PID, 0, 49), 0, &values[49..]);
        let original = r.append(&batch, EPOCH, 0).expect("append");
        assert_eq!((original.base_offset, original.last_offset), (49, 131));
        let deadline = Instant::now() + Duration::from_secs(30);
        let waiting = tokio::spawn({
            let r = Arc::clone(&r);
            async move { r.wait_replicated(132, EPOCH, deadline).await }
        });

        // Retried while the original waits for the ISR.
        assert_eq!(r.append(&batch, EPOCH, 0).expect("retry"), original);
        // Several copies at once.
        let concurrent: Vec<_> = std::thread::scope(|s| {
            let copies: Vec<_> = (0..4)
                .map(|_| s.spawn(|| r.append(&batch, EPOCH, 0)))
                .collect();
            copies
                .into_iter()
                .map(|c| c.join().expect("join"))
                .collect()
        });
        for answer in concurrent {
            assert_eq!(answer.expect("concurrent retry"), original);
        }
        assert_eq!(r.log().log_end_offset(), 132, "written once");

        // The followers are fenced: the ISR is the leader alone, below min.insync.replicas.
        // The original is answered NOT_ENOUGH_REPLICAS_AFTER_APPEND (retriable, as in Kafka)...
        let mut shrunk = view(EPOCH, &[LEADER], 2);
        shrunk.partition_epoch = 1;
        r.lead(LEADER, shrunk);
        assert!(matches!(
            waiting.await.expect("join"),
            Err(PartitionError::NotEnoughReplicasAfterAppend { isr: 1, min: 2 })
        ));
        // ...and its retry is still recognised.
        assert_eq!(
            r.append(&batch, EPOCH, 0).expect("retry below min.insync"),
            original
        );
        assert_eq!(r.log().log_end_offset(), 132, "still written once");

        // The ISR whole again: the retry is acknowledged at the original offsets, and the
        // producer's sequence goes on after it.
        let mut whole = view(EPOCH, &[LEADER, FOLLOWER], 2);
        whole.partition_epoch = 2;
        r.lead(LEADER, whole);
        r.follower_fetched(FOLLOWER, 132, 0);
        assert_eq!(r.append(&batch, EPOCH, 0).expect("retry"), original);
        r.wait_replicated(original.last_offset + 1, EPOCH, deadline)
            .await
            .expect("replicated");
        let next = r
            .append(&producer_batch((PID, 0, 132), 0, &[b"p1-323"]), EPOCH, 0)
            .expect("next");
        assert_eq!(next.base_offset, 132);

        // What the run saw at offsets 274..=356 instead: the same records under a bumped epoch
        // from sequence 0 — a new write by the protocol, which no broker can tell apart.
        let resent = r
            .append(&producer_batch((PID, 1, 0), 0, &values[49..]), EPOCH, 0)
            .expect("new epoch");
        assert_eq!(resent.base_offset, 133);
    }

    #[test]
    fn transactions_bound_the_last_stable_offset_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let r = replica(dir.path());
        r.lead(LEADER, view(EPOCH, &[LEADER], 1));
        r.append(&plain(&[b"before"]), EPOCH, 0).expect("plain");
        r.append(
            &transactional_batch((7, 0, 0), 0, &[b"t1", b"t2"]),
            EPOCH,
            0,
        )
        .expect("open a transaction");
        r.append(&plain(&[b"during"]), EPOCH, 0).expect("plain");
        assert_eq!(r.high_watermark(), 4);
        assert_eq!(r.last_stable_offset(), 1, "held at the open transaction");
        assert_eq!(r.open_transaction_start(7), Some(1));
        r.delete_records(2, EPOCH).expect("delete records");
        assert_eq!(r.last_stable_offset(), 2, "not below the log start");
        let end = r
            .append_marker((7, 0), Marker::Abort, 1, EPOCH, 0)
            .expect("abort marker");
        assert_eq!(end, 5, "past the marker at 4");
        assert_eq!(r.last_stable_offset(), 5, "stable again");
        let aborted = AbortedTxn {
            producer_id: 7,
            first_offset: 1,
            last_offset: 4,
        };
        assert_eq!(r.aborted_transactions(0, 5), vec![aborted]);
        // A batch of the producer's same epoch continues its sequence after the marker.
        r.append(&transactional_batch((7, 0, 2), 0, &[b"t3"]), EPOCH, 0)
            .expect("next transaction");
        assert_eq!(r.last_stable_offset(), 5);
        // A marker of an older epoch than the producer's is refused; a newer one fences it.
        r.append_marker((7, 1), Marker::Commit, 2, EPOCH, 0)
            .expect("commit at a newer epoch");
        let stale = r
            .append(&transactional_batch((7, 0, 3), 0, &[b"zombie"]), EPOCH, 0)
            .expect_err("fenced");
        assert!(
            matches!(stale, PartitionError::StaleProducerEpoch { current: 1, .. }),
            "{stale}"
        );
        assert!(matches!(
            r.append_marker((7, 0), Marker::Abort, 3, EPOCH, 0),
            Err(PartitionError::StaleProducerEpoch { .. })
        ));
        let bad = r
            .append(&marker_batch((8, 0), Marker::Commit, 0, 0), EPOCH, 0)
            .expect_err("clients may not write markers");
        assert!(
            matches!(bad, PartitionError::Log(LogError::InvalidRecords(_))),
            "{bad}"
        );
        let end = r.log().log_end_offset();
        drop(r);

        let reopened = replica(dir.path());
        reopened.lead(LEADER, view(EPOCH + 1, &[LEADER], 1));
        assert_eq!(reopened.log().log_end_offset(), end);
        assert_eq!(reopened.aborted_transactions(0, end), vec![aborted]);
        assert_eq!(reopened.open_transaction_start(7), None);
        assert_eq!(reopened.last_stable_offset(), reopened.high_watermark());
    }

    /// A marker the coordinator sent again (its answer was lost) or that arrives late, after
    /// the producer's next transaction has begun here, ends nothing: a copy of the last marker
    /// (same coordinator epoch) is not written again but waits for the same replication, an
    /// older one is refused. The next transaction's own marker ends it. The producer state
    /// holds the last marker's epoch across a reopen, from the log and from the snapshot.
    #[test]
    fn a_late_copy_of_a_marker_does_not_end_the_next_transaction() {
        let dir = tempfile::tempdir().expect("temp dir");
        let r = replica(dir.path());
        r.lead(LEADER, view(EPOCH, &[LEADER], 1));
        r.append(&transactional_batch((7, 0, 0), 0, &[b"t1"]), EPOCH, 0)
            .expect("first transaction");
        let first = r
            .append_marker((7, 0), Marker::Commit, 4, EPOCH, 0)
            .expect("its commit");
        assert_eq!(first, 2);
        let retry = r.append_marker((7, 0), Marker::Commit, 4, EPOCH, 0);
        assert_eq!(retry.expect("a retry"), 2, "the marker written already");
        r.append(&transactional_batch((7, 0, 1), 0, &[b"t2"]), EPOCH, 0)
            .expect("next transaction");
        assert_eq!(r.open_transaction_start(7), Some(2));
        let late = r.append_marker((7, 0), Marker::Commit, 4, EPOCH, 0);
        assert_eq!(
            late.expect("a late copy"),
            3,
            "not written: the log end as it was"
        );
        let older = r.append_marker((7, 0), Marker::Abort, 3, EPOCH, 0);
        assert!(
            matches!(
                older,
                Err(PartitionError::StaleCoordinatorEpoch {
                    coordinator_epoch: 3,
                    current: 4,
                    ..
                })
            ),
            "{older:?}"
        );
        assert_eq!(r.log().log_end_offset(), 3, "neither copy was written");
        assert_eq!(r.open_transaction_start(7), Some(2), "still open");
        assert_eq!(r.last_stable_offset(), 2);
        let expected = state_from_the_log(&r);
        assert_same_state(&r, &expected);
        r.snapshot_producers().expect("snapshot");
        drop(r);

        let reopened = replica(dir.path());
        assert_same_state(&reopened, &expected);
        reopened.lead(LEADER, view(EPOCH + 1, &[LEADER], 1));
        let late = reopened.append_marker((7, 0), Marker::Commit, 4, EPOCH + 1, 0);
        assert_eq!(
            late.expect("a late copy"),
            3,
            "still a copy after the reopen"
        );
        let end = reopened
            .append_marker((7, 0), Marker::Commit, 5, EPOCH + 1, 0)
            .expect("the next transaction's commit");
        assert_eq!(end, 4);
        assert_eq!(reopened.open_transaction_start(7), None);
        // Marker epochs wrap: after i32::MAX comes i32::MIN.
        reopened
            .append(&transactional_batch((7, 0, 2), 0, &[b"t3"]), EPOCH + 1, 0)
            .expect("third transaction");
        reopened
            .append_marker((7, 0), Marker::Abort, i32::MAX, EPOCH + 1, 0)
            .expect("a far later epoch");
        reopened
            .append(&transactional_batch((7, 0, 3), 0, &[b"t4"]), EPOCH + 1, 0)
            .expect("fourth transaction");
        reopened
            .append_marker((7, 0), Marker::Commit, i32::MIN, EPOCH + 1, 0)
            .expect("the epoch after i32::MAX");
        assert_eq!(reopened.open_transaction_start(7), None);
    }

    /// A leader with two idempotent producers, an aborted and an open transaction.
    fn busy_replica(dir: &Path) -> Arc<Replica> {
        let r = replica(dir);
        r.lead(LEADER, view(EPOCH, &[LEADER], 1));
        r.append(&producer_batch((5, 0, 0), 10, &[b"a", b"b"]), EPOCH, 0)
            .expect("idempotent");
        r.append(&transactional_batch((7, 0, 0), 20, &[b"t1"]), EPOCH, 0)
            .expect("transaction");
        r.append_marker((7, 0), Marker::Abort, 1, EPOCH, 0)
            .expect("abort");
        r.append(&producer_batch((6, 2, 0), 30, &[b"c"]), EPOCH, 0)
            .expect("idempotent");
        r.append(&transactional_batch((7, 0, 1), 40, &[b"t2"]), EPOCH, 0)
            .expect("open transaction");
        r
    }

    /// What reading the whole log gives.
    fn state_from_the_log(r: &Replica) -> (HashMap<i64, Producer>, TxnIndex) {
        let mut producers = HashMap::new();
        let mut txns = TxnIndex::default();
        read_producers(
            r.log(),
            r.log().log_start_offset(),
            &mut producers,
            &mut txns,
        )
        .expect("read");
        (producers, txns)
    }

    fn assert_same_state(r: &Replica, expected: &(HashMap<i64, Producer>, TxnIndex)) {
        assert_eq!(*r.producers.lock(), expected.0, "producers");
        assert_eq!(*r.txns.lock(), expected.1, "transactions");
    }

    #[test]
    fn producer_state_reopens_from_its_snapshot_and_the_batches_after_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let r = busy_replica(dir.path());
        r.snapshot_producers().expect("snapshot");
        let snapshot_at = r.log().log_end_offset();
        r.append(&producer_batch((5, 0, 2), 50, &[b"d"]), EPOCH, 0)
            .expect("after the snapshot");
        r.append_marker((7, 0), Marker::Commit, 2, EPOCH, 0)
            .expect("commit after the snapshot");
        let expected = state_from_the_log(&r);
        assert_same_state(&r, &expected);
        drop(r);

        let log = Arc::new(PartitionLog::open(dir.path(), LogConfig::default()).expect("open"));
        let recovered = recover_producers(&log).expect("recover");
        assert_eq!(
            recovered.read_from, snapshot_at,
            "read only after the snapshot"
        );
        assert_eq!(recovered.snapshot, Some(snapshot_at));
        assert_eq!((recovered.producers, recovered.txns), expected);
        drop(log);
        let reopened = replica(dir.path());
        assert_same_state(&reopened, &expected);
        // A retry of the batch appended after the snapshot is still recognised.
        reopened.lead(LEADER, view(EPOCH + 1, &[LEADER], 1));
        let end = reopened.log().log_end_offset();
        reopened
            .append(&producer_batch((5, 0, 2), 50, &[b"d"]), EPOCH + 1, 0)
            .expect("retry");
        assert_eq!(reopened.log().log_end_offset(), end, "not appended again");
    }

    #[test]
    fn an_unusable_snapshot_falls_back_to_the_whole_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let r = busy_replica(dir.path());
        let expected = state_from_the_log(&r);
        let end = r.log().log_end_offset();
        drop(r);
        let path = dir.path().join(snapshot::FILE);

        // Damaged: ignored, and replaced by the next snapshot.
        std::fs::write(&path, b"SYPS\0\x01garbage").expect("write");
        let r = replica(dir.path());
        assert_same_state(&r, &expected);
        r.snapshot_producers().expect("snapshot");
        let stored = snapshot::load(dir.path())
            .expect("readable")
            .expect("there");
        assert_eq!(stored.offset, end);
        drop(r);

        // Past the log end (the tail it saw was cut by crash recovery): removed.
        let past = snapshot::encode(end + 5, &HashMap::new(), &TxnIndex::default());
        std::fs::write(&path, past).expect("write");
        let r = replica(dir.path());
        assert_same_state(&r, &expected);
        assert!(!path.exists(), "a snapshot past the log end is removed");
    }

    #[test]
    fn a_follower_cutting_its_log_removes_the_snapshot_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let leader_dir = tempfile::tempdir().expect("temp dir");
        let leader = busy_replica(leader_dir.path());
        let copied = leader.log().read(0, 1 << 20).expect("read").records;
        let r = replica(dir.path());
        r.follow(EPOCH);
        r.append_replicated(&copied, EPOCH, 0).expect("copy");
        r.snapshot_producers().expect("snapshot");
        let path = dir.path().join(snapshot::FILE);
        assert!(path.exists());
        // Cut before the abort marker at 3: the transaction at 2 is open again.
        assert_eq!(r.truncate_to(3, EPOCH, 0).expect("truncate"), 3);
        assert!(!path.exists(), "the snapshot described the cut batches");
        let expected = state_from_the_log(&r);
        assert_same_state(&r, &expected);
        assert_eq!(r.aborted_transactions(0, 10), Vec::new());
        assert_eq!(r.open_transaction_start(7), Some(2));
    }
}
