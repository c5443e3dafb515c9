//! Log compaction (`cleanup.policy=compact`): [`PartitionLog::clean`] keeps, in the log's
//! closed segments, the newest record of every key, as Kafka's log cleaner does.
//!
//! # What a clean does
//! The *cleanable* segments are the closed ones (never the active segment) that lie wholly
//! below the offset the caller allows (the high watermark, or the last stable offset when a
//! transaction is open: nothing uncommitted or undecided is cleaned) and whose newest batch is
//! older than `min.compaction.lag.ms`; they end at the first segment that is not. Those the
//! last clean covered are *clean*; the rest are *dirty* (the `cleaner-offset` checkpoint holds
//! where the clean part ends). A clean:
//! 1. reads the dirty segments and maps every key to the offset of its newest record there
//!    (records of aborted transactions and control batches excepted);
//! 2. rewrites every cleanable segment, keeping a record only if it has a key, no newer record
//!    of its key is in the map, it is not in an aborted transaction, and it is not a tombstone
//!    (null value) whose batch is older than `delete.retention.ms`. Control batches
//!    (transaction markers) are always kept. A batch keeps its base offset, its offset span,
//!    producer fields and timestamps, and only the records it keeps (recompressed with its own
//!    codec); a batch with none left is dropped. Offsets never change: the log has gaps where
//!    records were removed, as a compacted Kafka log does;
//! 3. moves the checkpoint to the end of the cleanable segments.
//!
//! # Crash safety
//! Each segment is rewritten into `<base>.cleaned` beside it, fsynced, then its index files are
//! removed and `<base>.cleaned` is renamed over `<base>.log` and the directory fsynced; the
//! indexes are rebuilt from the new data. A crash leaves the old segment or the new one, never
//! a mix: a `.cleaned` file found on open is an unfinished rewrite and is deleted, and missing
//! index files are rebuilt. The checkpoint moves only after every segment is swapped; a clean
//! cut short is done again, which changes nothing already clean.
//!
//! # Concurrency
//! A clean reads without the append lock and takes it only to swap a segment in. A segment
//! that retention deleted or a follower's truncation replaced meanwhile is not swapped (its
//! rewrite is discarded). Readers holding the old segment keep reading its file, which stays
//! readable until they drop it.
//!
//! Nothing here reads the clock: the caller passes `now_ms`, and an [`CleanerHooks`] paces
//! the I/O (`log.cleaner.io.max.bytes.per.second`) and may stop a clean between its steps.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, ErrorKind, Write};
use std::path::Path;
use std::sync::Arc;

use super::PartitionLog;
use crate::batch::{BatchHeader, RecordBatch};
use crate::checkpoint::CLEANER_OFFSET;
use crate::error::{LogError, io_err};
use crate::records::{self, RecordError};
use crate::segment::{
    INDEX_EXT, LOG_EXT, NO_TIMESTAMP, Recovery, Segment, TIME_INDEX_EXT, segment_path, sync_dir,
};

/// Extension of a segment being rewritten.
pub(crate) const CLEANED_EXT: &str = "cleaned";

/// A transaction aborted in the partition: its producer's records from `first_offset` to
/// `last_offset` (the abort marker) are removed by a clean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedRange {
    /// The producer.
    pub producer_id: i64,
    /// The offset of its first batch in the transaction.
    pub first_offset: i64,
    /// The offset of the abort marker.
    pub last_offset: i64,
}

/// What a clean is told by its caller.
#[derive(Debug, Clone)]
pub struct CleanRequest {
    /// Nothing at or above this offset is cleaned: the high watermark, or the last stable
    /// offset if lower.
    pub clean_below: i64,
    /// The time now.
    pub now_ms: i64,
    /// The partition's aborted transactions.
    pub aborted: Vec<AbortedRange>,
    /// Bytes the key map may take (`log.cleaner.dedupe.buffer.size` shared among the cleaner's
    /// threads): once the dirty segments mapped so far fill it, the clean stops at the end of
    /// the last of them, and the next clean goes on from there. One segment is always mapped
    /// whole.
    pub map_bytes: usize,
}

/// The steps of a clean at which [`CleanerHooks::proceed`] is asked whether to go on: a test
/// stops there to leave the files as a crash at that point would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanStep {
    /// The key map is built; nothing is written yet.
    Mapped,
    /// A segment's rewrite is written and fsynced beside it (`<base>.cleaned`).
    Written {
        /// The segment's base offset.
        base_offset: i64,
    },
    /// A segment's old index files are removed; the rewrite is not yet renamed over it.
    IndexesRemoved {
        /// The segment's base offset.
        base_offset: i64,
    },
    /// A segment is swapped; the next one (or the checkpoint) is next.
    Swapped {
        /// The segment's base offset.
        base_offset: i64,
    },
}

/// What the caller of [`PartitionLog::clean`] does between its reads and writes.
pub trait CleanerHooks {
    /// `bytes` were read or written: wait as long as the I/O budget needs.
    fn throttle(&mut self, bytes: u64);
    /// Whether to go on past `step`; `false` ends the clean there, leaving its files as they
    /// are.
    fn proceed(&mut self, _step: CleanStep) -> bool {
        true
    }
}

/// How much of a log a clean would work on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cleanable {
    /// Bytes of the cleanable segments the last clean covered.
    pub clean_bytes: u64,
    /// Bytes of the cleanable segments written since.
    pub dirty_bytes: u64,
    /// The newest batch timestamp of the oldest dirty segment (`None` when nothing is dirty or
    /// it has no timestamp): how long its records have waited to be compacted.
    pub oldest_dirty_timestamp: Option<i64>,
}

impl Cleanable {
    /// Dirty bytes over all cleanable bytes (`min.cleanable.dirty.ratio` compares with it);
    /// 0 when nothing is cleanable.
    pub fn dirty_ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / total as f64
        }
    }
}

/// What a clean did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanOutcome {
    /// Segments rewritten.
    pub segments: usize,
    /// Their bytes before.
    pub bytes_before: u64,
    /// Their bytes after.
    pub bytes_after: u64,
    /// Records removed.
    pub records_removed: u64,
    /// Where the clean part of the log now ends (`None`: the clean was stopped by its hooks
    /// or found nothing dirty, and the checkpoint did not move).
    pub cleaned_to: Option<i64>,
}

/// The cleanable segments, oldest first, and where the clean part ends.
struct Plan {
    segments: Vec<Arc<Segment>>,
    /// The base offset of the segment after the last cleanable one.
    end: i64,
    first_dirty: i64,
}

impl PartitionLog {
    /// How much a clean of the segments below `clean_below` (see [`CleanRequest`]) would
    /// work on, at `now_ms`.
    pub fn cleanable(&self, clean_below: i64, now_ms: i64) -> Cleanable {
        let plan = self.plan(clean_below, now_ms);
        let mut cleanable = Cleanable {
            clean_bytes: 0,
            dirty_bytes: 0,
            oldest_dirty_timestamp: None,
        };
        for (segment, end) in plan.with_ends() {
            let summary = segment.summary();
            if end > plan.first_dirty {
                if cleanable.dirty_bytes == 0 && summary.max_timestamp != NO_TIMESTAMP {
                    cleanable.oldest_dirty_timestamp = Some(summary.max_timestamp);
                }
                cleanable.dirty_bytes += summary.size;
            } else {
                cleanable.clean_bytes += summary.size;
            }
        }
        cleanable
    }

    /// Compact the cleanable segments (see the module documentation). Blocking; one clean
    /// of a log at a time (the caller's cleaner runs them one after another).
    pub fn clean(
        &self,
        request: &CleanRequest,
        hooks: &mut dyn CleanerHooks,
    ) -> Result<CleanOutcome, LogError> {
        let plan = self.plan(request.clean_below, request.now_ms);
        let mut outcome = CleanOutcome::default();
        if plan.end <= plan.first_dirty {
            return Ok(outcome);
        }
        let delete_retention_ms = self.writer.lock().config.delete_retention_ms;
        let tombstones_before = request
            .now_ms
            .saturating_sub(i64::try_from(delete_retention_ms).unwrap_or(i64::MAX));
        let aborted = |header: &BatchHeader| {
            header.is_transactional()
                && request.aborted.iter().any(|a| {
                    a.producer_id == header.producer_id
                        && (a.first_offset..=a.last_offset).contains(&header.base_offset)
                })
        };
        let mut newest: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut map_bytes = 0;
        let mut full_at = None;
        for (segment, end) in plan.with_ends() {
            if end <= plan.first_dirty {
                continue;
            }
            if map_bytes > request.map_bytes {
                full_at = Some(segment.base_offset());
                break;
            }
            for_each_batch(&segment, hooks, |batch| {
                let header = batch.header();
                if header.is_control() || aborted(header) {
                    return Ok(0);
                }
                let plain = records::plain_records(batch).map_err(invalid(&segment))?;
                for record in records::split(&plain).map_err(invalid(&segment))? {
                    if let Some(key) = record.key {
                        let offset = header.base_offset + record.offset_delta;
                        let entry = newest.entry(key.to_vec()).or_insert_with(|| {
                            map_bytes += key.len() + MAP_ENTRY_OVERHEAD;
                            offset
                        });
                        *entry = (*entry).max(offset);
                    }
                }
                Ok(0)
            })?;
        }
        let mut plan = plan;
        if let Some(offset) = full_at {
            // The map is full: clean up to the segments mapped so far.
            plan.end_at(offset);
        }
        if !hooks.proceed(CleanStep::Mapped) {
            return Ok(outcome);
        }
        // Per producer: whether a record of its transaction since its last marker was kept.
        let mut transaction_kept: HashMap<i64, bool> = HashMap::new();
        for segment in &plan.segments {
            let base_offset = segment.base_offset();
            let cleaned = segment_path(&self.dir, base_offset, CLEANED_EXT);
            let mut out =
                BufWriter::new(File::create(&cleaned).map_err(io_err("create", &cleaned))?);
            let mut written: u64 = 0;
            for_each_batch(segment, hooks, |batch| {
                let header = batch.header();
                let kept = if header.is_control() {
                    // A marker goes last: once no record of its transaction is left and it is
                    // older than `delete.retention.ms`, as a tombstone.
                    let data_left = transaction_kept
                        .remove(&header.producer_id)
                        .unwrap_or(false);
                    (data_left || header.max_timestamp >= tombstones_before)
                        .then(|| batch.bytes().to_vec())
                } else if aborted(header) {
                    outcome.records_removed += u64::try_from(header.record_count).unwrap_or(0);
                    None
                } else {
                    let plain = records::plain_records(batch).map_err(invalid(segment))?;
                    let all = records::split(&plain).map_err(invalid(segment))?;
                    let keep: Vec<_> = all
                        .iter()
                        .filter(|record| {
                            let offset = header.base_offset + record.offset_delta;
                            record.key.is_some_and(|key| {
                                newest.get(key).is_none_or(|&newer| newer <= offset)
                            }) && !(record.value.is_none()
                                && header.max_timestamp < tombstones_before)
                        })
                        .collect();
                    outcome.records_removed += (all.len() - keep.len()) as u64;
                    if keep.len() == all.len() {
                        Some(batch.bytes().to_vec())
                    } else if keep.is_empty() {
                        None
                    } else {
                        let plain: Vec<u8> = keep.iter().flat_map(|r| r.bytes).copied().collect();
                        let codec = header.compression();
                        let compressed =
                            records::compress_with(&plain, codec).map_err(invalid(segment))?;
                        let count = i32::try_from(keep.len()).unwrap_or(i32::MAX);
                        Some(batch.with_counted_records(codec, &compressed, count))
                    }
                };
                let Some(bytes) = kept else {
                    return Ok(0);
                };
                if header.is_transactional() && !header.is_control() {
                    transaction_kept.insert(header.producer_id, true);
                }
                out.write_all(&bytes).map_err(io_err("write", &cleaned))?;
                written += bytes.len() as u64;
                Ok(bytes.len() as u64)
            })?;
            out.into_inner()
                .map_err(|e| io_err("write", &cleaned)(e.into_error()))?
                .sync_all()
                .map_err(io_err("fsync", &cleaned))?;
            if !hooks.proceed(CleanStep::Written { base_offset }) {
                return Ok(outcome);
            }
            let before = segment.summary().size;
            match self.swap(segment, &cleaned, hooks)? {
                Swap::Done => {}
                Swap::Gone => {
                    remove_if_there(&cleaned)?;
                    continue;
                }
                Swap::Stopped => return Ok(outcome),
            }
            outcome.segments += 1;
            outcome.bytes_before += before;
            outcome.bytes_after += written;
            if !hooks.proceed(CleanStep::Swapped { base_offset }) {
                return Ok(outcome);
            }
        }
        CLEANER_OFFSET.store(&self.dir, plan.end)?;
        outcome.cleaned_to = Some(plan.end);
        Ok(outcome)
    }

    /// The cleanable segments below `clean_below` at `now_ms`.
    fn plan(&self, clean_below: i64, now_ms: i64) -> Plan {
        let lag_ms = self.writer.lock().config.min_compaction_lag_ms;
        let newest_allowed = now_ms.saturating_sub(i64::try_from(lag_ms).unwrap_or(i64::MAX));
        let all = self.segments.read().clone();
        let mut segments = Vec::new();
        let mut end = all.first().map_or(0, |s| s.base_offset());
        for pair in all.windows(2) {
            let (segment, next) = (&pair[0], &pair[1]);
            let max_timestamp = segment.summary().max_timestamp;
            if next.base_offset() > clean_below || max_timestamp > newest_allowed {
                break;
            }
            segments.push(Arc::clone(segment));
            end = next.base_offset();
        }
        let first_dirty = CLEANER_OFFSET.load(&self.dir).unwrap_or(i64::MIN).min(end);
        Plan {
            segments,
            end,
            first_dirty,
        }
    }

    /// Swap `segment` for its rewrite at `cleaned`, under the append lock, unless it was
    /// deleted or replaced meanwhile.
    fn swap(
        &self,
        segment: &Arc<Segment>,
        cleaned: &Path,
        hooks: &mut dyn CleanerHooks,
    ) -> Result<Swap, LogError> {
        let writer = self.writer.lock();
        let position = {
            let segments = self.segments.read();
            segments.iter().position(|s| Arc::ptr_eq(s, segment))
        };
        let Some(position) = position else {
            return Ok(Swap::Gone);
        };
        let base_offset = segment.base_offset();
        for ext in [INDEX_EXT, TIME_INDEX_EXT] {
            remove_if_there(&segment_path(&self.dir, base_offset, ext))?;
        }
        if !hooks.proceed(CleanStep::IndexesRemoved { base_offset }) {
            return Ok(Swap::Stopped);
        }
        let path = segment_path(&self.dir, base_offset, LOG_EXT);
        fs::rename(cleaned, &path).map_err(io_err("rename", cleaned))?;
        sync_dir(&self.dir)?;
        let swapped = Segment::recover(
            &self.dir,
            base_offset,
            Recovery {
                clean: false,
                active: false,
                flushed: None,
                index_interval: writer.config.index_interval_bytes,
            },
        )?;
        self.segments.write()[position] = Arc::new(swapped);
        Ok(Swap::Done)
    }
}

/// What [`PartitionLog::swap`] did.
enum Swap {
    Done,
    /// The segment was deleted or replaced meanwhile: the rewrite is not used.
    Gone,
    /// The hooks stopped the clean before the rename.
    Stopped,
}

/// What one key costs the key map beyond its bytes (the entry, its offset, the allocation).
const MAP_ENTRY_OVERHEAD: usize = 64;

impl Plan {
    /// Clean only the segments below `offset` (a segment boundary).
    fn end_at(&mut self, offset: i64) {
        self.segments.retain(|s| s.base_offset() < offset);
        self.end = offset;
    }

    /// Each cleanable segment with the base offset of the segment after it.
    fn with_ends(&self) -> impl Iterator<Item = (Arc<Segment>, i64)> + '_ {
        self.segments.iter().enumerate().map(|(i, segment)| {
            let end = self
                .segments
                .get(i + 1)
                .map_or(self.end, |next| next.base_offset());
            (Arc::clone(segment), end)
        })
    }
}

/// Call `each` with every batch of `segment`, in order, throttled by the bytes read and the
/// bytes `each` says it wrote.
fn for_each_batch(
    segment: &Segment,
    hooks: &mut dyn CleanerHooks,
    mut each: impl FnMut(&RecordBatch<'_>) -> Result<u64, LogError>,
) -> Result<(), LogError> {
    let limit = segment.summary().size;
    let mut position = 0;
    while position < limit {
        let bytes = segment.batch_at(position, limit)?;
        let batch = RecordBatch::parse(&bytes, position).map_err(LogError::InvalidBatch)?;
        let written = each(&batch)?;
        hooks.throttle(bytes.len() as u64 + written);
        position += bytes.len() as u64;
    }
    Ok(())
}

/// A record the cleaner cannot read: the segment is damaged.
fn invalid(segment: &Segment) -> impl Fn(RecordError) -> LogError + '_ {
    move |e| LogError::Corrupt {
        path: segment.path().to_path_buf(),
        position: 0,
        reason: format!("a batch's records do not read: {e}"),
    }
}

fn remove_if_there(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("delete", path)(e)),
    }
}

/// Delete the `.cleaned` files an interrupted clean left in `dir` (see the module
/// documentation).
pub(crate) fn remove_unfinished(dir: &Path, names: &[String]) -> Result<(), LogError> {
    let mut removed = false;
    for name in names {
        if Path::new(name)
            .extension()
            .is_some_and(|e| e == CLEANED_EXT)
        {
            let path = dir.join(name);
            tracing::warn!(file = %path.display(), "removing an unfinished compaction rewrite");
            remove_if_there(&path)?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::batch::Batches;
    use crate::batch::testing::keyed_batch;
    use crate::config::{CleanupPolicy, LogConfig};

    const EPOCH: i32 = 1;
    /// Tombstones live this long in these tests.
    const RETENTION_MS: u64 = 1_000;

    fn compacted(segment_bytes: u32) -> LogConfig {
        LogConfig {
            segment_bytes,
            index_interval_bytes: 0,
            retention_ms: None,
            cleanup: CleanupPolicy {
                delete: false,
                compact: true,
            },
            delete_retention_ms: RETENTION_MS,
            ..LogConfig::default()
        }
    }

    /// Paces nothing; stops at the `stop_at`-th step asked about (counting from 0), if any.
    #[derive(Default)]
    struct Hooks {
        stop_at: Option<usize>,
        steps: Vec<CleanStep>,
        bytes: u64,
    }

    impl CleanerHooks for Hooks {
        fn throttle(&mut self, bytes: u64) {
            self.bytes += bytes;
        }

        fn proceed(&mut self, step: CleanStep) -> bool {
            self.steps.push(step);
            self.stop_at != Some(self.steps.len() - 1)
        }
    }

    /// A record read back: its offset, key and value (`None`: a tombstone).
    type Read = (i64, Vec<u8>, Option<Vec<u8>>);

    fn read_records(log: &PartitionLog) -> Vec<Read> {
        let mut out = Vec::new();
        let mut next = log.log_start_offset();
        loop {
            let read = log.read(next, 1 << 16).expect("read");
            if read.records.is_empty() {
                return out;
            }
            for batch in Batches::new(&read.records) {
                let batch = batch.expect("valid batch");
                let header = batch.header();
                let plain = records::plain_records(&batch).expect("records");
                for record in records::split(&plain).expect("split") {
                    out.push((
                        header.base_offset + record.offset_delta,
                        record.key.expect("keyed").to_vec(),
                        record.value.map(<[u8]>::to_vec),
                    ));
                }
                next = header.next_offset();
            }
        }
    }

    /// `keys` keys written `rounds` times each, round after round, one record per batch at
    /// timestamp 0 (value `k<key>-<round>`), then a tombstone for each key in `deleted` at
    /// `tombstone_ms`, then one more batch so that the tombstones' segment closes. Returns
    /// every record appended, by offset.
    fn fill(
        log: &PartitionLog,
        keys: usize,
        rounds: usize,
        deleted: &[usize],
        tombstone_ms: i64,
    ) -> BTreeMap<i64, (Vec<u8>, Option<Vec<u8>>)> {
        let mut written = BTreeMap::new();
        let mut append = |key: Vec<u8>, value: Option<Vec<u8>>, ts: i64| {
            let bytes = keyed_batch(ts, &[(&key, value.as_deref())]);
            let info = log.append(&bytes, EPOCH, 0).expect("append");
            written.insert(info.base_offset, (key, value));
        };
        for round in 0..rounds {
            for key in 0..keys {
                let value = format!("k{key}-{round}").into_bytes();
                append(format!("k{key}").into_bytes(), Some(value), 0);
            }
        }
        for key in deleted {
            append(format!("k{key}").into_bytes(), None, tombstone_ms);
        }
        // Fills the segment the tombstones are in so that it closes.
        for filler in 0..40 {
            append(
                b"filler".to_vec(),
                Some(format!("{filler}").into_bytes()),
                tombstone_ms,
            );
        }
        written
    }

    /// Every record read from `log` was appended at that offset, offsets increase, and every
    /// key's newest appended record below `clean_below` is there (or, for a tombstone, was
    /// removed when `tombstones_removed`).
    fn check(
        log: &PartitionLog,
        written: &BTreeMap<i64, (Vec<u8>, Option<Vec<u8>>)>,
        tombstones_removed: bool,
    ) -> Vec<Read> {
        let read = read_records(log);
        for pair in read.windows(2) {
            assert!(pair[0].0 < pair[1].0, "offsets increase: {pair:?}");
        }
        for (offset, key, value) in &read {
            assert_eq!(
                written.get(offset),
                Some(&(key.clone(), value.clone())),
                "offset {offset} holds what was appended there"
            );
        }
        let mut newest: BTreeMap<&[u8], (i64, &Option<Vec<u8>>)> = BTreeMap::new();
        for (offset, (key, value)) in written {
            newest.insert(key, (*offset, value));
        }
        for (key, (offset, value)) in newest {
            let present = read.iter().any(|(o, _, _)| *o == offset);
            if value.is_none() && tombstones_removed {
                assert!(!present, "tombstone of {key:?} removed");
                assert!(
                    !read.iter().any(|(_, k, _)| k.as_slice() == key),
                    "no record of deleted key {key:?} left"
                );
            } else {
                assert!(present, "newest record of {key:?} at {offset} kept");
            }
        }
        read
    }

    fn request(log: &PartitionLog, now_ms: i64) -> CleanRequest {
        CleanRequest {
            clean_below: log.log_end_offset(),
            now_ms,
            aborted: Vec::new(),
            map_bytes: usize::MAX,
        }
    }

    fn size(log: &PartitionLog) -> u64 {
        log.size_bytes()
    }

    #[test]
    fn compaction_keeps_the_newest_record_of_every_key_at_its_offset() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = PartitionLog::open(dir.path(), compacted(4096)).expect("open");
        let written = fill(&log, 100, 10, &[3, 7], 0);
        assert!(log.segment_count() > 5);
        let before = size(&log);
        let cleanable = log.cleanable(log.log_end_offset(), 0);
        assert_eq!(cleanable.clean_bytes, 0);
        assert!((cleanable.dirty_ratio() - 1.0).abs() < f64::EPSILON);

        let mut hooks = Hooks::default();
        let outcome = log.clean(&request(&log, 0), &mut hooks).expect("clean");
        assert!(outcome.segments > 0);
        assert!(outcome.bytes_after < outcome.bytes_before);
        assert!(
            size(&log) < before / 3,
            "{} of {before} bytes left",
            size(&log)
        );
        assert!(
            hooks.bytes >= outcome.bytes_before,
            "reads and writes are paced"
        );
        assert_eq!(
            outcome.cleaned_to,
            Some(
                log.segments
                    .read()
                    .last()
                    .map(|s| s.base_offset())
                    .expect("active")
            )
        );
        // Tombstones are younger than `delete.retention.ms`: kept, with what they delete gone.
        let read = check(&log, &written, false);
        let keys: std::collections::BTreeSet<_> = read.iter().map(|(_, k, _)| k.clone()).collect();
        assert_eq!(keys.len(), 101, "every key and the filler");
        assert_eq!(
            log.cleanable(log.log_end_offset(), 0).dirty_bytes,
            0,
            "all clean"
        );
        let again = log
            .clean(&request(&log, 0), &mut Hooks::default())
            .expect("clean");
        assert_eq!(again.segments, 0, "nothing dirty");

        // Past `delete.retention.ms`, the tombstones go too; a reopened log reads the same.
        let late = i64::try_from(RETENTION_MS).expect("small") + 1;
        let segments = log.segments.read().len();
        log.append(&keyed_batch(late, &[(b"k1", Some(b"new"))]), EPOCH, late)
            .expect("append");
        assert!(log.segments.read().len() >= segments);
        let mut written = written;
        written.insert(
            log.log_end_offset() - 1,
            (b"k1".to_vec(), Some(b"new".to_vec())),
        );
        fill_until_roll(&log, &mut written, late);
        let outcome = log
            .clean(&request(&log, late), &mut Hooks::default())
            .expect("clean");
        assert!(outcome.records_removed > 0);
        let read = check(&log, &written, true);
        drop(log);
        let log = PartitionLog::open(dir.path(), compacted(4096)).expect("reopen");
        assert_eq!(read_records(&log), read);
    }

    /// Append filler records at `ts` until the active segment rolls.
    fn fill_until_roll(
        log: &PartitionLog,
        written: &mut BTreeMap<i64, (Vec<u8>, Option<Vec<u8>>)>,
        ts: i64,
    ) {
        let segments = log.segment_count();
        let mut n = 0;
        while log.segment_count() == segments {
            let value = format!("more-{n}").into_bytes();
            let info = log
                .append(&keyed_batch(ts, &[(b"filler", Some(&value))]), EPOCH, ts)
                .expect("append");
            written.insert(info.base_offset, (b"filler".to_vec(), Some(value)));
            n += 1;
        }
    }

    fn copy_dir(from: &Path, to: &Path) {
        for entry in fs::read_dir(from).expect("list") {
            let entry = entry.expect("entry");
            fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }

    #[test]
    fn a_clean_stopped_at_any_step_leaves_a_log_that_opens_whole() {
        let original = tempfile::tempdir().expect("temp dir");
        let log = PartitionLog::open(original.path(), compacted(4096)).expect("open");
        let written = fill(&log, 50, 6, &[1], 0);
        drop(log);
        let probe = tempfile::tempdir().expect("temp dir");
        copy_dir(original.path(), probe.path());
        let mut all = Hooks::default();
        let log = PartitionLog::open(probe.path(), compacted(4096)).expect("open");
        log.clean(&request(&log, 0), &mut all).expect("clean");
        let expected = check(&log, &written, false);
        let steps = all.steps.len();
        assert!(
            all.steps
                .iter()
                .any(|s| matches!(s, CleanStep::IndexesRemoved { .. })),
            "{:?}",
            all.steps
        );

        for stop_at in 0..steps {
            let dir = tempfile::tempdir().expect("temp dir");
            copy_dir(original.path(), dir.path());
            let log = PartitionLog::open(dir.path(), compacted(4096)).expect("open");
            let mut hooks = Hooks {
                stop_at: Some(stop_at),
                ..Hooks::default()
            };
            let outcome = log.clean(&request(&log, 0), &mut hooks).expect("clean");
            assert_eq!(
                outcome.cleaned_to,
                None,
                "stopped at {:?}",
                hooks.steps.last()
            );
            // As a kill -9 there leaves it: no close.
            drop(log);
            let log = PartitionLog::open(dir.path(), compacted(4096))
                .unwrap_or_else(|e| panic!("reopen after a stop at {:?}: {e}", hooks.steps.last()));
            let leftovers: Vec<_> = fs::read_dir(dir.path())
                .expect("list")
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == CLEANED_EXT))
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
            check(&log, &written, false);
            log.clean(&request(&log, 0), &mut Hooks::default())
                .expect("clean again");
            assert_eq!(
                check(&log, &written, false),
                expected,
                "after a stop at step {stop_at}"
            );
        }
    }

    #[test]
    fn a_follower_copies_a_compacted_log_with_its_gaps() {
        let dir = tempfile::tempdir().expect("temp dir");
        let leader = PartitionLog::open(dir.path(), compacted(4096)).expect("open");
        let written = fill(&leader, 30, 5, &[], 0);
        leader
            .clean(&request(&leader, 0), &mut Hooks::default())
            .expect("clean");
        let expected = check(&leader, &written, false);

        let follower_dir = tempfile::tempdir().expect("temp dir");
        let follower = PartitionLog::open(follower_dir.path(), compacted(2048)).expect("open");
        let mut next = 0;
        while next < leader.log_end_offset() {
            let read = leader.read(next, 700).expect("read");
            let end = follower.append_replicated(&read.records, 0).expect("copy");
            next = end.last_offset + 1;
        }
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
        assert_eq!(read_records(&follower), expected);
        drop(follower);
        let follower = PartitionLog::open(follower_dir.path(), compacted(2048)).expect("reopen");
        assert_eq!(read_records(&follower), expected);
        // Overlapping or going back is still refused.
        let again = leader.read(0, 700).expect("read");
        assert!(matches!(
            follower.append_replicated(&again.records, 0),
            Err(LogError::NotContiguous { .. })
        ));
    }

    #[test]
    fn recent_records_and_the_uncommitted_tail_wait() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = LogConfig {
            min_compaction_lag_ms: 500,
            ..compacted(4096)
        };
        let log = PartitionLog::open(dir.path(), config).expect("open");
        let written = fill(&log, 40, 5, &[], 0);
        // Everything was written at 0: nothing is 500 ms old at 100.
        let early = log
            .clean(&request(&log, 100), &mut Hooks::default())
            .expect("clean");
        assert_eq!(early.segments, 0);
        // Nothing at or above `clean_below`: only segments wholly below offset 10 (none).
        let below = CleanRequest {
            clean_below: 10,
            now_ms: 1_000,
            aborted: Vec::new(),
            map_bytes: usize::MAX,
        };
        assert_eq!(
            log.clean(&below, &mut Hooks::default())
                .expect("clean")
                .segments,
            0
        );
        let later = log
            .clean(&request(&log, 1_000), &mut Hooks::default())
            .expect("clean");
        assert!(later.segments > 0);
        check(&log, &written, false);
    }

    #[test]
    fn aborted_records_go_and_markers_go_last() {
        use crate::batch::testing::keyed_transactional_batch;
        use crate::control::{Marker, marker_batch};

        let dir = tempfile::tempdir().expect("temp dir");
        let log = PartitionLog::open(dir.path(), compacted(4096)).expect("open");
        let append = |bytes: &[u8]| log.append(bytes, EPOCH, 0).expect("append").base_offset;
        append(&keyed_batch(0, &[(b"a", Some(b"a=committed-before"))]));
        // Producer 7's transaction writes a newer `a` and `b`, then aborts.
        let first = append(&keyed_transactional_batch(
            (7, 0, 0),
            0,
            &[(b"a", Some(b"a=aborted")), (b"b", Some(b"b=aborted"))],
        ));
        let abort = append(&marker_batch((7, 0), Marker::Abort, 0, 0));
        // Producer 8's transaction writes `c` and commits.
        append(&keyed_transactional_batch(
            (8, 0, 0),
            0,
            &[(b"c", Some(b"c=committed"))],
        ));
        let commit = append(&marker_batch((8, 0), Marker::Commit, 0, 0));
        fill_until_roll(&log, &mut BTreeMap::new(), 0);
        let request = CleanRequest {
            clean_below: log.log_end_offset(),
            now_ms: 0,
            aborted: vec![AbortedRange {
                producer_id: 7,
                first_offset: first,
                last_offset: abort,
            }],
            map_bytes: usize::MAX,
        };
        let outcome = log.clean(&request, &mut Hooks::default()).expect("clean");
        assert!(outcome.records_removed >= 2);
        let read = read_records(&log);
        let value_of = |key: &[u8]| {
            read.iter()
                .filter(|(_, k, _)| k.as_slice() == key)
                .map(|(_, _, v)| v.clone())
                .next_back()
        };
        assert_eq!(
            value_of(b"a"),
            Some(Some(b"a=committed-before".to_vec())),
            "the aborted update does not hide the committed value"
        );
        assert_eq!(value_of(b"b"), None, "aborted records are gone");
        assert_eq!(value_of(b"c"), Some(Some(b"c=committed".to_vec())));
        // Both markers are still there: younger than `delete.retention.ms`.
        assert_eq!(markers_of(&log), vec![abort, commit]);

        // Past `delete.retention.ms`, the abort marker, with no record of its transaction
        // left, goes; the commit marker of a transaction whose record stays does not.
        let late = i64::try_from(RETENTION_MS).expect("small") + 1;
        fill_until_roll(&log, &mut BTreeMap::new(), late);
        let request = CleanRequest {
            now_ms: late,
            clean_below: log.log_end_offset(),
            ..request
        };
        log.clean(&request, &mut Hooks::default()).expect("clean");
        assert_eq!(markers_of(&log), vec![commit]);
        assert_eq!(
            read_records(&log)
                .iter()
                .filter(|(_, k, _)| k == b"c")
                .count(),
            1
        );
    }

    /// The offsets of the control batches in `log`.
    fn markers_of(log: &PartitionLog) -> Vec<i64> {
        let mut markers = Vec::new();
        let mut next = log.log_start_offset();
        while next < log.log_end_offset() {
            let records = log.read(next, 1 << 16).expect("read").records;
            for batch in Batches::new(&records) {
                let batch = batch.expect("valid");
                if batch.header().is_control() {
                    markers.push(batch.header().base_offset);
                }
                next = batch.header().next_offset();
            }
        }
        markers
    }

    #[test]
    fn a_full_key_map_cleans_part_and_the_next_clean_goes_on() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = PartitionLog::open(dir.path(), compacted(4096)).expect("open");
        let written = fill(&log, 100, 8, &[], 0);
        let end = log.segments.read().last().expect("active").base_offset();
        // Room for a few keys: every clean maps one dirty segment.
        let small = CleanRequest {
            map_bytes: 1,
            ..request(&log, 0)
        };
        let first = log.clean(&small, &mut Hooks::default()).expect("clean");
        let first_end = first.cleaned_to.expect("cleaned part");
        assert!(first_end < end, "{first_end} of {end}");
        check(&log, &written, false);
        let mut cleans = 1;
        while log.cleanable(log.log_end_offset(), 0).dirty_bytes > 0 {
            let outcome = log.clean(&small, &mut Hooks::default()).expect("clean");
            assert!(outcome.cleaned_to.is_some_and(|to| to > first_end));
            cleans += 1;
            assert!(cleans < 100, "no progress");
        }
        assert!(cleans > 2);
        assert_eq!(CLEANER_OFFSET.load(dir.path()), Some(end));
        check(&log, &written, false);
    }

    #[test]
    fn a_cut_makes_the_rewritten_part_dirty_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = PartitionLog::open(dir.path(), compacted(4096)).expect("open");
        fill(&log, 40, 5, &[], 0);
        let outcome = log
            .clean(&request(&log, 0), &mut Hooks::default())
            .expect("clean");
        let cleaned_to = outcome.cleaned_to.expect("cleaned");
        log.truncate_to(cleaned_to / 2, 0).expect("truncate");
        let lowered = CLEANER_OFFSET.load(dir.path()).expect("checkpoint");
        assert!(lowered <= cleaned_to / 2, "{lowered} > {}", cleaned_to / 2);
    }
}
