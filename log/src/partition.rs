//! [`PartitionLog`]: the segments of one topic-partition, appends, reads, recovery, retention
//! and flushing.

use std::fs::{self, File};
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use super::batch::{BatchHeader, Batches, PREFIX_LEN};
use super::checkpoint::{CLEANER_OFFSET, LOG_START};
use super::config::LogConfig;
use super::epochs::{EpochStart, Epochs};
use super::error::{LogError, io_err};
use super::flushed::{self, FlushedMark};
use super::segment::{
    IndexFiles, LOG_EXT, NO_TIMESTAMP, NewEntries, Recovery, Segment, Summary,
    remove_orphan_indexes, sync_dir,
};

pub mod cleaner;

/// File whose presence says the log was closed cleanly: its index files can be trusted.
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

/// What [`PartitionLog::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset given to the first record (the Produce response's `base_offset`).
    pub base_offset: i64,
    /// Offset given to the last record.
    pub last_offset: i64,
    /// The largest `maxTimestamp` among the appended batches.
    pub max_timestamp: i64,
    /// The log start offset after the append (the Produce response's `log_start_offset`).
    pub log_start_offset: i64,
    /// Whether the batches were fsynced before the append returned.
    pub flushed: bool,
}

/// What [`PartitionLog::read`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    /// Whole record batches, as stored: the Fetch response's `records`. Empty when there is
    /// nothing at or after the requested offset.
    pub records: Vec<u8>,
    /// The first offset in the log when the read started.
    pub log_start_offset: i64,
    /// The log end offset when the read started.
    pub log_end_offset: i64,
}

/// What [`PartitionLog::slices_until`] returned: whole batches as ranges of segment files.
#[derive(Debug, Clone)]
pub struct LogSlices {
    /// In log order; empty when there is nothing at or after the requested offset.
    pub slices: Vec<FileSlice>,
    /// The first offset in the log when the read started.
    pub log_start_offset: i64,
    /// The log end offset when the read started.
    pub log_end_offset: i64,
}

impl LogSlices {
    /// Bytes of all the slices.
    pub fn len(&self) -> u64 {
        self.slices.iter().map(FileSlice::len).sum()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }
}

/// Whole batches of one segment: `len` bytes of its data file from `position`. Holds the
/// segment's file open.
#[derive(Debug, Clone)]
pub struct FileSlice {
    segment: Arc<Segment>,
    position: u64,
    len: u64,
}

impl FileSlice {
    /// Bytes in the slice.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the slice is empty (never, for slices a log returns).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The data file the slice is a range of.
    pub fn file(&self) -> &File {
        self.segment.file()
    }

    /// Where the slice starts in [`file`](Self::file).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Appends the slice's bytes to `out`.
    pub fn read_into(&self, out: &mut Vec<u8>) -> Result<(), LogError> {
        self.segment.read_range(self.position, self.len, out)
    }
}

/// The answer to a ListOffsets lookup by timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    /// Base offset of the first batch whose `maxTimestamp` is at least the target.
    pub offset: i64,
    /// That batch's `maxTimestamp`.
    pub timestamp: i64,
}

/// Why segments are deleted from the front of the log, for the log line that says so.
#[derive(Debug, Clone, Copy)]
enum Removal {
    Retention,
    DeletedRecords,
}

/// What [`PartitionLog::enforce_retention`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Segments deleted.
    pub deleted_segments: usize,
    /// Bytes of data deleted.
    pub deleted_bytes: u64,
    /// The log start offset afterwards.
    pub log_start_offset: i64,
}

/// The appender's state, behind the append lock.
#[derive(Debug)]
struct Writer {
    config: LogConfig,
    active: Arc<Segment>,
    index_files: IndexFiles,
    /// When the active segment took its first append in this process (for `segment.ms`).
    active_since_ms: Option<i64>,
    /// Records appended since the last fsync.
    unflushed_messages: u64,
    /// When the last fsync happened, or the first unflushed append if none did yet.
    last_flush_ms: Option<i64>,
    /// The offset below which everything is fsynced, kept on disk for recovery.
    flushed: FlushedMark,
    status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Open,
    /// A write failed part-way: no more appends until the log is reopened and recovered.
    Failed,
    Closed,
}

/// The log of one topic-partition: a directory of segments.
///
/// Safe to share as `Arc<PartitionLog>`. Appends (and retention, flush, close) are serialized
/// by one lock per partition; reads take a snapshot of the segment list and read with `pread`,
/// never waiting for an append's write or fsync. Every method does blocking file I/O: call it
/// from `tokio::task::spawn_blocking` (or `block_in_place`), not directly on a runtime thread.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    writer: Mutex<Writer>,
    /// Oldest first; the last one is the active segment. Never empty.
    segments: RwLock<Vec<Arc<Segment>>>,
    /// The log start offset: the first segment's base offset, or past it after DeleteRecords.
    /// Changed under the append lock.
    start: AtomicI64,
    log_end: watch::Sender<i64>,
    /// Where each leader epoch starts; changed under the append lock, after it.
    epochs: Mutex<Epochs>,
}

/// A batch's place in an append's buffer, and its header as it is stored (offset and leader
/// epoch as the append sets them).
#[derive(Debug)]
struct Placed {
    start: usize,
    size: usize,
    offsets: i64,
    header: BatchHeader,
}

/// How an append sets the offsets of its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Assign {
    /// As the partition's leader: offsets continue from the log end offset and every batch
    /// gets the leader epoch.
    Leader { epoch: i32 },
    /// As a follower copying the leader's log: batches keep their offsets and leader epochs,
    /// and must continue the log exactly.
    Replica,
}

/// A validated append, ready to be written: the caller's bytes, never copied — each batch is
/// written as its rewritten prefix ([`BatchHeader::prefix`]) and the rest of its own bytes.
#[derive(Debug)]
struct Pending<'a> {
    records: &'a [u8],
    placed: Vec<Placed>,
    record_count: u64,
}

impl PartitionLog {
    /// Opens the log in `dir`, creating the directory and an empty first segment if needed,
    /// and recovers it: index files without data are removed; after a clean shutdown the index
    /// files are trusted if they check out; otherwise, and for any segment whose indexes do
    /// not check out, every batch is CRC-checked and the indexes are rebuilt. A torn or
    /// corrupt tail of the last segment is truncated (logged as a warning); corruption
    /// anywhere else fails with [`LogError::Corrupt`] naming the file and position.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Self, LogError> {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        let names: Vec<String> = fs::read_dir(dir)
            .map_err(io_err("list", dir))?
            .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()
            .map_err(io_err("list", dir))?;
        cleaner::remove_unfinished(dir, &names)?;
        remove_orphan_indexes(dir, &names)?;
        let mut bases: Vec<i64> = names
            .iter()
            .filter_map(|name| name.strip_suffix(&format!(".{LOG_EXT}")))
            .filter(|stem| stem.len() == 20)
            .filter_map(|stem| stem.parse().ok())
            .collect();
        bases.sort_unstable();

        let flushed_mark = flushed::load(dir);
        let recovery = |active: bool| Recovery {
            clean,
            active,
            flushed: flushed_mark.filter(|_| active),
            index_interval: config.index_interval_bytes,
        };
        let mut segments = Vec::with_capacity(bases.len().max(1));
        let (active, index_files) = match bases.split_last() {
            None => Segment::create(dir, 0)?,
            Some((&last, older)) => {
                for (i, &base) in older.iter().enumerate() {
                    let segment = Segment::recover(dir, base, recovery(false))?;
                    let next_base = bases[i + 1];
                    let summary = segment.summary();
                    // Compaction may have removed a segment's last batches: it may end
                    // before the next one starts, never after.
                    if summary.next_offset > next_base {
                        return Err(LogError::Corrupt {
                            path: segment.path().to_path_buf(),
                            position: summary.size,
                            reason: format!(
                                "segment ends at offset {} but the next one starts at {next_base}",
                                summary.next_offset
                            ),
                        });
                    }
                    segments.push(Arc::new(segment));
                }
                let segment = Segment::recover(dir, last, recovery(true))?;
                let index_files = segment.open_index_files()?;
                (segment, index_files)
            }
        };
        let active = Arc::new(active);
        segments.push(Arc::clone(&active));
        if clean {
            fs::remove_file(&marker).map_err(io_err("delete", &marker))?;
            sync_dir(dir)?;
        }
        let end = active.summary().next_offset;
        // What recovery kept may still be only in the page cache (a process crash keeps it
        // there): make it durable before the flushed mark covers it.
        if !clean {
            active.sync()?;
        }
        let flushed = FlushedMark::open(dir, end)?;
        let epochs = match Epochs::load(dir, end)? {
            Some(epochs) => epochs,
            None => {
                let mut epochs = Epochs::default();
                for segment in &segments {
                    segment.collect_epochs(&mut epochs)?;
                }
                epochs.store(dir)?;
                epochs
            }
        };
        let first_base = segments.first().map_or(0, |s| s.base_offset());
        let start = LOG_START
            .load(dir)
            .map_or(first_base, |checkpoint| checkpoint.max(first_base))
            .min(end);
        let (log_end, _) = watch::channel(end);
        Ok(Self {
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer {
                config,
                active,
                index_files,
                active_since_ms: None,
                unflushed_messages: 0,
                last_flush_ms: None,
                flushed,
                status: Status::Open,
            }),
            segments: RwLock::new(segments),
            start: AtomicI64::new(start),
            log_end,
            epochs: Mutex::new(epochs),
        })
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The offset of the first record still in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.start.load(Ordering::Acquire)
    }

    /// The offset the next appended record will get.
    pub fn log_end_offset(&self) -> i64 {
        *self.log_end.borrow()
    }

    /// Follows the log end offset: the receiver changes after every append becomes readable.
    /// A Fetch long-poll waits on it instead of polling.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.log_end.subscribe()
    }

    /// Total bytes of segment data.
    pub fn size_bytes(&self) -> u64 {
        self.segments.read().iter().map(|s| s.summary().size).sum()
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.segments.read().len()
    }

    /// The current configuration.
    pub fn config(&self) -> LogConfig {
        self.writer.lock().config.clone()
    }

    /// Replaces the configuration (after a topic config change); applies from the next append.
    pub fn set_config(&self, config: LogConfig) {
        self.writer.lock().config = config;
    }

    /// Appends the concatenated v2 record batches in `records` (a Produce request's `records`
    /// field) as one unit and returns the offsets they got.
    ///
    /// Every batch is validated first (length, magic, CRC-32C, record count, `max.message.bytes`);
    /// if any fails nothing is written. Batches are stored as received except for two fields
    /// outside the CRC: `baseOffset`, rewritten so offsets continue from the log end offset,
    /// and `partitionLeaderEpoch`, set to `leader_epoch`. `now_ms` drives `segment.ms` and
    /// `flush.ms`.
    ///
    /// ### When it returns
    /// The batches are readable and the log end offset has advanced. They are on disk if
    /// [`AppendInfo::flushed`] — always under the default [`FlushPolicy`](super::FlushPolicy).
    /// A failed write leaves the log [`LogError::Offline`] until it is reopened.
    pub fn append(
        &self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.append_as(
            records,
            Assign::Leader {
                epoch: leader_epoch,
            },
            now_ms,
        )
    }

    /// Appends record batches fetched from the partition's leader, byte for byte: they keep
    /// the offsets and leader epochs the leader gave them. Validated as [`Self::append`]
    /// validates, and besides the first batch must start at or after the log end offset and
    /// each following one at or after the previous one's end ([`LogError::NotContiguous`]
    /// otherwise): a compacted leader log has gaps where records were removed.
    pub fn append_replicated(&self, records: &[u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        self.append_as(records, Assign::Replica, now_ms)
    }

    fn append_as(
        &self,
        records: &[u8],
        assign: Assign,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let mut first_base = None;
        let mut expected_next = None;
        let mut expected_before: Option<i64> = None;
        let mut batch_epochs = Vec::new();
        let mut placed = Vec::new();
        let mut record_count: u64 = 0;
        let mut max_timestamp = NO_TIMESTAMP;
        for batch in Batches::new(records) {
            let batch = batch?;
            let header = batch.header();
            if header.record_count == 0 {
                return Err(LogError::NoRecords);
            }
            if assign == Assign::Replica {
                if let Some(expected) = expected_next
                    && header.base_offset < expected
                {
                    return Err(LogError::NotContiguous {
                        expected,
                        got: header.base_offset,
                    });
                }
                first_base.get_or_insert(header.base_offset);
                expected_before = expected_next;
                expected_next = Some(header.next_offset());
                batch_epochs.push((header.partition_leader_epoch, header.base_offset));
            }
            record_count += u64::try_from(header.record_count).unwrap_or(0);
            max_timestamp = max_timestamp.max(header.max_timestamp);
            placed.push(Placed {
                start: placed.last().map_or(0, |p: &Placed| p.start + p.size),
                size: batch.size(),
                offsets: match assign {
                    Assign::Leader { .. } => i64::from(header.record_count),
                    // With the gap before it.
                    Assign::Replica => {
                        header.next_offset() - expected_before.unwrap_or(header.base_offset)
                    }
                },
                header: *header,
            });
        }
        if placed.is_empty() {
            return Err(LogError::NoRecords);
        }
        let mut pending = Pending {
            records,
            placed,
            record_count,
        };

        let mut writer = self.writer.lock();
        self.check_open(&writer)?;
        let max = writer.config.max_message_bytes;
        if let Some(p) = pending.placed.iter().find(|p| p.size > max as usize) {
            return Err(LogError::BatchTooLarge { size: p.size, max });
        }
        let offsets: i64 = pending.placed.iter().map(|p| p.offsets).sum();
        self.maybe_roll(&mut writer, records.len() as u64, offsets, now_ms)?;
        writer.active_since_ms.get_or_insert(now_ms);

        let active = Arc::clone(&writer.active);
        let mut summary = active.summary();
        let position = summary.size;
        let base_offset = summary.next_offset;
        if let Some(got) = first_base
            && got < base_offset
        {
            return Err(LogError::NotContiguous {
                expected: base_offset,
                got,
            });
        }
        // A gap before the first batch (its records were compacted away on the leader).
        let mut next = first_base.unwrap_or(base_offset);
        // Stored before the batches are written: see `epochs`.
        {
            let mut epochs = self.epochs.lock();
            let added = match assign {
                Assign::Leader { epoch } => epochs.observe(epoch, base_offset),
                Assign::Replica => batch_epochs.iter().fold(false, |added, &(epoch, offset)| {
                    epochs.observe(epoch, offset) | added
                }),
            };
            if added {
                epochs.store(&self.dir)?;
            }
        }
        for p in &mut pending.placed {
            if let Assign::Leader { epoch } = assign {
                p.header.base_offset = next;
                p.header.partition_leader_epoch = epoch;
            }
            next += p.offsets;
        }
        let result = Self::write(&mut writer, &active, &pending, &mut summary, now_ms);
        let (flushed, new) = match result {
            Ok(done) => done,
            Err(err) => {
                writer.status = Status::Failed;
                // Best effort: drop the partial write now; recovery on reopen does it anyway.
                if let Err(truncate) = active.truncate(position) {
                    tracing::warn!(error = %truncate, "cannot drop a partial append");
                }
                return Err(err);
            }
        };
        active.publish(summary, new);
        self.log_end.send_replace(next);
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            max_timestamp,
            log_start_offset: self.log_start_offset(),
            flushed,
        })
    }

    /// Writes an append's bytes and index entries and fsyncs per the flush policy, without
    /// publishing. Returns whether it fsynced, and the new index entries.
    fn write(
        writer: &mut Writer,
        active: &Segment,
        pending: &Pending<'_>,
        summary: &mut Summary,
        now_ms: i64,
    ) -> Result<(bool, NewEntries), LogError> {
        let position = summary.size;
        let prefixes: Vec<[u8; PREFIX_LEN]> =
            pending.placed.iter().map(|p| p.header.prefix()).collect();
        let mut parts: Vec<IoSlice<'_>> = pending
            .placed
            .iter()
            .zip(&prefixes)
            .flat_map(|(p, prefix)| {
                [
                    IoSlice::new(prefix),
                    IoSlice::new(&pending.records[p.start + PREFIX_LEN..p.start + p.size]),
                ]
            })
            .collect();
        active.write_all_at(&mut parts, position)?;
        let mut new = NewEntries::default();
        let interval = writer.config.index_interval_bytes;
        for p in &pending.placed {
            summary.track(
                active.base_offset(),
                position + p.start as u64,
                &p.header,
                p.size as u64,
                interval,
                &mut new,
            );
        }
        writer.index_files.append(&new)?;
        writer.unflushed_messages += pending.record_count;
        let since = *writer.last_flush_ms.get_or_insert(now_ms);
        let policy = writer.config.flush;
        let due = policy
            .every_messages
            .is_some_and(|n| writer.unflushed_messages >= n)
            || policy.every_ms.is_some_and(|ms| {
                now_ms.saturating_sub(since) >= i64::try_from(ms).unwrap_or(i64::MAX)
            });
        if due {
            active.sync()?;
            writer.flushed.set(summary.next_offset)?;
            writer.unflushed_messages = 0;
            writer.last_flush_ms = Some(now_ms);
        }
        Ok((due, new))
    }

    /// Rolls to a new segment if the active one is not empty and the append would push it past
    /// `segment.bytes`, it is older than `segment.ms`, or its relative offsets would overflow.
    fn maybe_roll(
        &self,
        writer: &mut Writer,
        bytes: u64,
        offsets: i64,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let summary = writer.active.summary();
        if summary.size == 0 {
            return Ok(());
        }
        let config = &writer.config;
        let by_size = summary.size + bytes > u64::from(config.segment_bytes);
        let by_time = writer.active_since_ms.is_some_and(|since| {
            now_ms.saturating_sub(since) >= i64::try_from(config.segment_ms).unwrap_or(i64::MAX)
        });
        let last_relative = summary.next_offset + offsets - 1 - writer.active.base_offset();
        let by_offset = last_relative > i64::from(u32::MAX);
        if !(by_size || by_time || by_offset) {
            return Ok(());
        }
        // The old segment is durable before the new one exists: only the last segment can
        // ever have a torn tail.
        writer.active.sync()?;
        writer.index_files.sync()?;
        writer.flushed.set(summary.next_offset)?;
        let (segment, index_files) = Segment::create(&self.dir, summary.next_offset)?;
        let segment = Arc::new(segment);
        self.segments.write().push(Arc::clone(&segment));
        writer.active = segment;
        writer.index_files = index_files;
        writer.active_since_ms = None;
        writer.unflushed_messages = 0;
        writer.last_flush_ms = Some(now_ms);
        Ok(())
    }

    /// Reads whole batches from the one holding `from_offset`, up to `max_bytes` (but at least
    /// one batch), up to the log end offset. Reading at the log end offset returns nothing.
    pub fn read(&self, from_offset: i64, max_bytes: usize) -> Result<LogRead, LogError> {
        self.read_until(from_offset, max_bytes, i64::MAX)
    }

    /// Like [`read`](Self::read), but returns only batches that start below `end_offset` —
    /// pass the high watermark when serving consumers.
    pub fn read_until(
        &self,
        from_offset: i64,
        max_bytes: usize,
        end_offset: i64,
    ) -> Result<LogRead, LogError> {
        let slices = self.slices_until(from_offset, max_bytes, end_offset)?;
        let mut records = Vec::with_capacity(usize::try_from(slices.len()).unwrap_or(0));
        for slice in &slices.slices {
            slice.read_into(&mut records)?;
        }
        Ok(LogRead {
            records,
            log_start_offset: slices.log_start_offset,
            log_end_offset: slices.log_end_offset,
        })
    }

    /// The batches [`read_until`](Self::read_until) would return, as ranges of the segment
    /// files instead of bytes: a fetch sends them from the files (`sendfile`) without reading
    /// them. Each slice keeps its segment's file open, so a segment deleted or replaced
    /// meanwhile (retention, compaction) is still read as it was.
    pub fn slices_until(
        &self,
        from_offset: i64,
        max_bytes: usize,
        end_offset: i64,
    ) -> Result<LogSlices, LogError> {
        let log_end_offset = self.log_end_offset();
        let segments = {
            let segments = self.segments.read();
            let first = segments
                .partition_point(|s| s.base_offset() <= from_offset)
                .saturating_sub(1);
            segments[first..].to_vec()
        };
        let log_start_offset = self.log_start_offset();
        if from_offset < log_start_offset || from_offset > log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset: from_offset,
                log_start_offset,
                log_end_offset,
            });
        }
        let end = end_offset.min(log_end_offset);
        let mut slices = Vec::new();
        let mut taken = 0u64;
        let mut from = from_offset;
        for segment in segments {
            let remaining = (max_bytes as u64).saturating_sub(taken);
            if from >= end || (taken > 0 && remaining == 0) {
                break;
            }
            let Some(position) = segment.find_batch(from)? else {
                continue;
            };
            let remaining = usize::try_from(remaining).unwrap_or(usize::MAX);
            let slice = segment.slice_batches(position, remaining, taken == 0, end)?;
            if slice.len > 0 {
                taken += slice.len;
                slices.push(FileSlice {
                    position: slice.position,
                    len: slice.len,
                    segment,
                });
            }
            match slice.next_offset {
                Some(next) if slice.at_end => from = next,
                _ => break,
            }
        }
        Ok(LogSlices {
            slices,
            log_start_offset,
            log_end_offset,
        })
    }

    /// ListOffsets by timestamp: the first batch whose `maxTimestamp` is at least `timestamp`,
    /// or `None` if there is none (Kafka then answers with offset -1).
    ///
    /// The offset is the batch's base offset (or the log start offset, when that is inside the
    /// batch): records in the batch before the one that reached `timestamp` are included. The
    /// Kafka layer may refine it by decoding that batch.
    pub fn offset_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<TimestampOffset>, LogError> {
        let segments = self.segments.read().clone();
        for segment in segments {
            if segment.summary().max_timestamp < timestamp {
                continue;
            }
            if let Some((offset, timestamp)) = segment.find_timestamp(timestamp)? {
                return Ok(Some(TimestampOffset {
                    offset: offset.max(self.log_start_offset()),
                    timestamp,
                }));
            }
        }
        Ok(None)
    }

    /// ListOffsets with `-3` (KIP-734): the first batch holding the log's largest timestamp —
    /// its base offset (or the log start offset, when that is inside it) and that timestamp;
    /// `None` when no batch has a timestamp.
    pub fn max_timestamp(&self) -> Option<TimestampOffset> {
        let segments = self.segments.read().clone();
        let mut best: Option<TimestampOffset> = None;
        for summary in segments.iter().map(|s| s.summary()) {
            if summary.max_timestamp != NO_TIMESTAMP
                && best.is_none_or(|b| summary.max_timestamp > b.timestamp)
            {
                best = Some(TimestampOffset {
                    offset: summary.offset_of_max_timestamp,
                    timestamp: summary.max_timestamp,
                });
            }
        }
        best.map(|b| TimestampOffset {
            offset: b.offset.max(self.log_start_offset()),
            ..b
        })
    }

    /// Removes every batch from the one holding `offset` on — a follower whose log diverged
    /// from its leader's cuts it back to where the two agree — and returns the new log end
    /// offset: `offset` when it is a batch boundary, else the base offset of the batch
    /// holding it.
    ///
    /// Later segments are deleted newest first, so a crash part-way leaves a longer log but
    /// never a gap; the segment holding `offset` is cut at that batch and reopened as the
    /// active segment with its indexes rebuilt. An `offset` at or past the log end offset
    /// changes nothing; one before the log start offset empties the log and restarts it at
    /// `offset`. A failure part-way leaves the log [`LogError::Offline`] until it is reopened
    /// (which recovers whatever the files then hold).
    pub fn truncate_to(&self, offset: i64, now_ms: i64) -> Result<i64, LogError> {
        let mut writer = self.writer.lock();
        self.check_open(&writer)?;
        let end = self.log_end_offset();
        if offset >= end {
            return Ok(end);
        }
        let kept = self
            .segments
            .read()
            .partition_point(|s| s.base_offset() <= offset);
        let cut = self.cut(&mut writer, offset, kept, now_ms);
        if cut.is_err() {
            writer.status = Status::Failed;
        }
        cut
    }

    /// Empties the log and restarts it at `offset`: a follower so far behind its leader that
    /// the leader no longer holds what it would fetch next starts over at the leader's log
    /// start offset. Returns `offset`. Failure takes the log offline as
    /// [`Self::truncate_to`]'s does.
    pub fn restart_at(&self, offset: i64, now_ms: i64) -> Result<i64, LogError> {
        let mut writer = self.writer.lock();
        self.check_open(&writer)?;
        let cut = self.cut(&mut writer, offset, 0, now_ms);
        if cut.is_err() {
            writer.status = Status::Failed;
        }
        cut
    }

    /// The body of [`Self::truncate_to`] and [`Self::restart_at`], under their lock: keeps
    /// the segments before `kept`, cutting the last of them at `offset`; none kept restarts
    /// the log at `offset`.
    fn cut(
        &self,
        writer: &mut Writer,
        offset: i64,
        kept: usize,
        now_ms: i64,
    ) -> Result<i64, LogError> {
        let end = self.log_end_offset();
        let segments = self.segments.read().clone();
        // No segment starts at or before `offset`: the whole log goes.
        let reset = kept == 0;
        // Below anything the cut may remove, before it removes anything: a crash part-way
        // must not leave a mark above what the files hold.
        let floor = kept
            .checked_sub(1)
            .map_or(offset, |i| segments[i].base_offset());
        writer.flushed.lower_to(floor)?;
        for segment in segments[kept..].iter().rev() {
            segment.delete_files()?;
        }
        let (active, index_files) = match kept.checked_sub(1).map(|i| &segments[i]) {
            Some(holder) => {
                let position = match holder.find_batch(offset)? {
                    Some(position) => position,
                    None => holder.summary().size,
                };
                sync_dir(&self.dir)?;
                holder.truncate(position)?;
                holder.sync()?;
                let recovered = Segment::recover(
                    &self.dir,
                    holder.base_offset(),
                    Recovery {
                        clean: false,
                        active: true,
                        flushed: None,
                        index_interval: writer.config.index_interval_bytes,
                    },
                )?;
                let index_files = recovered.open_index_files()?;
                (recovered, index_files)
            }
            None => {
                sync_dir(&self.dir)?;
                Segment::create(&self.dir, offset)?
            }
        };
        let active = Arc::new(active);
        {
            let mut list = self.segments.write();
            list.truncate(kept.saturating_sub(1));
            list.push(Arc::clone(&active));
        }
        let new_end = active.summary().next_offset;
        {
            let mut epochs = self.epochs.lock();
            if epochs.truncate(if reset { i64::MIN } else { new_end }) {
                epochs.store(&self.dir)?;
            }
        }
        tracing::info!(
            dir = %self.dir.display(),
            requested = offset,
            from = end,
            to = new_end,
            "truncated the log"
        );
        let start = if reset {
            offset
        } else {
            self.log_start_offset().min(new_end)
        };
        // A checkpoint above the new start would move it up again at the next open.
        if LOG_START.load(&self.dir).is_some_and(|kept| kept != start) {
            LOG_START.store(&self.dir, start)?;
        }
        // What is written again past the cut is dirty.
        if CLEANER_OFFSET
            .load(&self.dir)
            .is_some_and(|clean| clean > floor)
        {
            CLEANER_OFFSET.store(&self.dir, floor)?;
        }
        self.start.store(start, Ordering::Release);
        writer.active = active;
        writer.index_files = index_files;
        writer.active_since_ms = None;
        writer.unflushed_messages = 0;
        writer.last_flush_ms = Some(now_ms);
        // Everything kept is durable: the cut segment was synced, the others were on roll.
        writer.flushed.set(new_end)?;
        self.log_end.send_replace(new_end);
        Ok(new_end)
    }

    /// Where each leader epoch's batches start, oldest first.
    pub fn leader_epochs(&self) -> Vec<EpochStart> {
        self.epochs.lock().entries().to_vec()
    }

    /// OffsetForLeaderEpoch: the largest leader epoch at or below `epoch` that this log holds,
    /// and the offset where its batches end (where the next epoch starts, or the log end
    /// offset for the latest). `None` when every epoch here is newer than `epoch`.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        let epochs = self.epochs.lock();
        epochs.end_of(epoch, self.log_end_offset())
    }

    fn check_open(&self, writer: &Writer) -> Result<(), LogError> {
        match writer.status {
            Status::Open => Ok(()),
            Status::Failed => Err(LogError::Offline {
                path: self.dir.clone(),
            }),
            Status::Closed => Err(LogError::Closed {
                path: self.dir.clone(),
            }),
        }
    }

    /// Fsyncs the active segment and its indexes.
    pub fn flush(&self, now_ms: i64) -> Result<(), LogError> {
        let mut writer = self.writer.lock();
        Self::flush_locked(&mut writer, now_ms)
    }

    /// Fsyncs if `flush.ms` has passed since the last fsync with records unflushed. Call it
    /// periodically so an idle log honours `flush.ms`.
    pub fn flush_if_due(&self, now_ms: i64) -> Result<bool, LogError> {
        let mut writer = self.writer.lock();
        let due = match (writer.config.flush.every_ms, writer.last_flush_ms) {
            (Some(ms), Some(last)) => {
                writer.unflushed_messages > 0
                    && now_ms.saturating_sub(last) >= i64::try_from(ms).unwrap_or(i64::MAX)
            }
            _ => false,
        };
        if due {
            Self::flush_locked(&mut writer, now_ms)?;
        }
        Ok(due)
    }

    fn flush_locked(writer: &mut Writer, now_ms: i64) -> Result<(), LogError> {
        writer.active.sync()?;
        writer.index_files.sync()?;
        let end = writer.active.summary().next_offset;
        writer.flushed.set(end)?;
        writer.unflushed_messages = 0;
        writer.last_flush_ms = Some(now_ms);
        Ok(())
    }

    /// Deletes the oldest segments — never the active one — that `retention.ms` or
    /// `retention.bytes` no longer keep, and advances the log start offset past them.
    ///
    /// A segment is expired by time when its largest `maxTimestamp` is more than `retention.ms`
    /// before `now_ms`; by size while the log without it would still hold at least
    /// `retention.bytes`. Only a prefix of segments is deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionOutcome, LogError> {
        let writer = self.writer.lock();
        let segments = self.segments.read().clone();
        // A log whose policy is `compact` alone keeps its segments (the cleaner shrinks them).
        let candidates = if writer.config.cleanup.delete {
            &segments[..segments.len().saturating_sub(1)]
        } else {
            &[]
        };
        let mut by_time = 0;
        if let Some(ms) = writer.config.retention_ms {
            let ms = i64::try_from(ms).unwrap_or(i64::MAX);
            by_time = candidates
                .iter()
                .take_while(|s| now_ms.saturating_sub(s.summary().max_timestamp) > ms)
                .count();
        }
        let mut by_size = 0;
        if let Some(limit) = writer.config.retention_bytes {
            let mut total: u64 = segments.iter().map(|s| s.summary().size).sum();
            for segment in candidates {
                let size = segment.summary().size;
                if total - size < limit {
                    break;
                }
                total -= size;
                by_size += 1;
            }
        }
        let (deleted_segments, deleted_bytes) =
            self.remove_prefix(by_time.max(by_size), Removal::Retention)?;
        drop(writer);
        Ok(RetentionOutcome {
            deleted_segments,
            deleted_bytes,
            log_start_offset: self.log_start_offset(),
        })
    }

    /// DeleteRecords: moves the log start offset up to `offset` — records below it are no
    /// longer served — and deletes the segments wholly below it. Returns the log start offset
    /// afterwards; one at or past `offset` already changes nothing.
    ///
    /// The new start is written to the `log-start-offset` checkpoint (durably) before anything
    /// is deleted or served differently, so it survives a restart. An `offset` past the log
    /// end offset fails with [`LogError::OffsetOutOfRange`]; the caller bounds it by the high
    /// watermark first, as Kafka does.
    pub fn advance_start(&self, offset: i64) -> Result<i64, LogError> {
        let writer = self.writer.lock();
        self.check_open(&writer)?;
        let start = self.log_start_offset();
        if offset <= start {
            return Ok(start);
        }
        let end = self.log_end_offset();
        if offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: start,
                log_end_offset: end,
            });
        }
        LOG_START.store(&self.dir, offset)?;
        self.start.store(offset, Ordering::Release);
        tracing::info!(dir = %self.dir.display(), from = start, to = offset, "moved the log start offset");
        let below = self
            .segments
            .read()
            .windows(2)
            .take_while(|pair| pair[1].base_offset() <= offset)
            .count();
        self.remove_prefix(below, Removal::DeletedRecords)?;
        drop(writer);
        Ok(offset)
    }

    /// Deletes the first `count` segments (never the active one); under the append lock.
    /// Returns how many and their bytes of data.
    fn remove_prefix(&self, count: usize, why: Removal) -> Result<(usize, u64), LogError> {
        let removed: Vec<Arc<Segment>> = {
            let mut segments = self.segments.write();
            let count = count.min(segments.len().saturating_sub(1));
            segments.drain(..count).collect()
        };
        let mut deleted_bytes = 0;
        for segment in &removed {
            deleted_bytes += segment.summary().size;
            segment.delete_files()?;
            tracing::info!(
                file = %segment.path().display(),
                base_offset = segment.base_offset(),
                reason = ?why,
                "deleted segment"
            );
        }
        if !removed.is_empty() {
            sync_dir(&self.dir)?;
            let first_base = self.segments.read().first().map_or(0, |s| s.base_offset());
            self.start.fetch_max(first_base, Ordering::AcqRel);
        }
        Ok((removed.len(), deleted_bytes))
    }

    /// Flushes, marks the log as cleanly shut down (so the next open trusts its indexes) and
    /// refuses further appends. Reads keep working. Closing twice is harmless; a log that
    /// failed a write is closed without the mark, so the next open recovers it fully.
    pub fn close(&self, now_ms: i64) -> Result<(), LogError> {
        let mut writer = self.writer.lock();
        match writer.status {
            Status::Closed => return Ok(()),
            Status::Failed => {
                writer.status = Status::Closed;
                return Ok(());
            }
            Status::Open => {}
        }
        writer.status = Status::Closed;
        Self::flush_locked(&mut writer, now_ms)?;
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        fs::File::create(&marker)
            .and_then(|f| f.sync_all())
            .map_err(io_err("create", &marker))?;
        sync_dir(&self.dir)
    }

    /// Refuses further appends without flushing or marking a clean shutdown, as before the
    /// log's directory is deleted.
    pub(crate) fn abandon(&self) {
        self.writer.lock().status = Status::Closed;
    }
}

#[cfg(test)]
impl PartitionLog {
    pub(crate) fn segments_for_test(&self) -> Vec<Arc<Segment>> {
        self.segments.read().clone()
    }
}
