//! [`Log`]: the segmented write-ahead log — recovery, appends, rolls, fsync, compaction and
//! reset. Owned by the writer thread (`writer.rs`); nothing else writes segment files.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use switchyard_backend_api::{LogIndex, PowerCut};

use crate::error::WalError;
use crate::record::{Position, Record};
use crate::segment::{list_segments, scan, segment_name};
use crate::snapshot::sync_dir;

/// What readers need to know about the log: the position it continues from, where each
/// epoch starts, and its last record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Shape {
    /// The position before the first record the log describes (the snapshot it continues).
    pub(crate) base: Position,
    /// The first record of each epoch after `base`, ascending.
    pub(crate) epochs: Vec<Position>,
    /// The last record (or `base` when there is none).
    pub(crate) last: Position,
}

impl Shape {
    fn fresh(base: Position) -> Self {
        Self {
            base,
            epochs: Vec::new(),
            last: base,
        }
    }

    /// The epoch of the record at `index`, if the log (or its base) describes it.
    pub(crate) fn epoch_at(&self, index: LogIndex) -> Option<u64> {
        if index == self.base.index {
            return Some(self.base.epoch);
        }
        if index < self.base.index || index > self.last.index {
            return None;
        }
        self.epochs
            .iter()
            .rev()
            .find(|p| p.index <= index)
            .map(|p| p.epoch)
    }

    /// Whether the record at `position` is in this log.
    pub(crate) fn contains(&self, position: Position) -> bool {
        self.epoch_at(position.index) == Some(position.epoch)
    }

    /// Index of the first record written in `epoch`, if any.
    pub(crate) fn first_of_epoch(&self, epoch: u64) -> Option<LogIndex> {
        self.epochs
            .iter()
            .find(|p| p.epoch == epoch)
            .map(|p| p.index)
    }

    fn push(&mut self, position: Position) {
        if self.last.epoch != position.epoch || self.epochs.is_empty() {
            self.epochs.push(position);
        }
        self.last = position;
    }
}

/// A recovered log and the records after the snapshot it continues, to replay.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// The log, ready to append.
    pub(crate) log: Log,
    /// Records with index above the snapshot's, in order.
    pub(crate) tail: Vec<Record>,
}

/// The write-ahead log.
#[derive(Debug)]
pub(crate) struct Log {
    dir: PathBuf,
    segment_bytes: u64,
    segments: Vec<LogIndex>,
    active: File,
    active_len: u64,
    buffer: Vec<u8>,
    unsynced: Vec<File>,
    dir_dirty: bool,
    shape: Shape,
    syncs: u64,
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        file: path.display().to_string(),
        offset,
        reason: reason.into(),
    }
}

/// Records read from every segment, checked for order.
struct Scanned {
    segments: Vec<LogIndex>,
    records: Vec<Record>,
}

fn scan_segments(dir: &Path) -> Result<Scanned, WalError> {
    let segments = list_segments(dir).map_err(|e| WalError::io(dir, e))?;
    let mut records: Vec<Record> = Vec::new();
    let mut expected: Option<LogIndex> = None;
    for (i, &first) in segments.iter().enumerate() {
        let path = dir.join(segment_name(first));
        let bytes = fs::read(&path).map_err(|e| WalError::io(&path, e))?;
        let scanned = scan(&bytes);
        if let Some(damage) = &scanned.damage {
            let last_segment = i + 1 == segments.len();
            if !last_segment || damage.followed_by_valid {
                let why = if damage.followed_by_valid {
                    "valid records follow it"
                } else {
                    "it is not in the last segment"
                };
                return Err(corrupt(
                    &path,
                    damage.offset,
                    format!("{}; not a torn tail because {why}", damage.reason),
                ));
            }
            tracing::warn!(
                file = %path.display(),
                offset = damage.offset,
                bytes = damage.bytes,
                reason = %damage.reason,
                "truncating the torn tail of the write-ahead log"
            );
            truncate(&path, scanned.valid_len)?;
        }
        if let Some(expected) = expected
            && first != expected
        {
            return Err(corrupt(
                &path,
                0,
                format!("segment starts at index {first}, the previous one ends before {expected}"),
            ));
        }
        let mut offset = 0;
        let mut next = first;
        for record in scanned.records {
            if record.index != next {
                return Err(corrupt(
                    &path,
                    offset,
                    format!("record has index {}, expected {next}", record.index),
                ));
            }
            if let Some(previous) = records.last()
                && record.epoch < previous.epoch
            {
                return Err(corrupt(
                    &path,
                    offset,
                    format!("epoch {} after epoch {}", record.epoch, previous.epoch),
                ));
            }
            record
                .decode_command()
                .map_err(|e| corrupt(&path, offset, format!("payload does not decode: {e}")))?;
            offset += record.frame_len() as u64;
            next += 1;
            records.push(record);
        }
        expected = Some(next);
    }
    Ok(Scanned { segments, records })
}

fn truncate(path: &Path, len: u64) -> Result<(), WalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| WalError::io(path, e))?;
    file.set_len(len).map_err(|e| WalError::io(path, e))?;
    file.sync_all().map_err(|e| WalError::io(path, e))
}

fn open_append(path: &Path) -> Result<(File, u64), WalError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| WalError::io(path, e))?;
    let len = file.metadata().map_err(|e| WalError::io(path, e))?.len();
    Ok((file, len))
}

impl Log {
    /// Recover the log in `dir` as the continuation of the snapshot at `base` (`Position`
    /// 0/0 without one). A torn tail of the last segment is truncated (with a warning);
    /// anything else that does not read back is an error naming the file and byte offset.
    /// Segments from a history the snapshot replaced (a follower reset interrupted by a
    /// crash) or wholly covered by it are deleted, with a warning.
    pub(crate) fn open(
        dir: &Path,
        segment_bytes: u64,
        base: Position,
    ) -> Result<Recovered, WalError> {
        fs::create_dir_all(dir).map_err(|e| WalError::io(dir, e))?;
        let Scanned { segments, records } = scan_segments(dir)?;
        let first = records.first().map(|r| r.index);
        let last = records.last().map(Record::position);
        let at_base = records.iter().find(|r| r.index == base.index);
        let stale = match (first, last) {
            (None, _) | (_, None) => segments.last().is_some_and(|&s| s != base.index + 1),
            (Some(first), Some(last)) => {
                if first > base.index + 1 {
                    let path = dir.join(segment_name(segments[0]));
                    return Err(corrupt(
                        &path,
                        0,
                        format!(
                            "the log starts at index {first} but the snapshot only covers up to {}",
                            base.index
                        ),
                    ));
                }
                last.index < base.index || at_base.is_some_and(|r| r.epoch != base.epoch)
            }
        };
        if stale {
            tracing::warn!(
                dir = %dir.display(),
                segments = segments.len(),
                snapshot_index = base.index,
                "discarding segments the snapshot replaced"
            );
            return Ok(Recovered {
                log: Self::reset_dir(dir, segment_bytes, &segments, base)?,
                tail: Vec::new(),
            });
        }
        let Some(&active_first) = segments.last() else {
            return Ok(Recovered {
                log: Self::reset_dir(dir, segment_bytes, &[], base)?,
                tail: Vec::new(),
            });
        };
        let tail: Vec<Record> = records
            .into_iter()
            .filter(|r| r.index > base.index)
            .collect();
        let mut shape = Shape::fresh(base);
        for record in &tail {
            shape.push(record.position());
        }
        let (active, active_len) = open_append(&dir.join(segment_name(active_first)))?;
        Ok(Recovered {
            log: Self {
                dir: dir.to_owned(),
                segment_bytes,
                segments,
                active,
                active_len,
                buffer: Vec::new(),
                unsynced: Vec::new(),
                dir_dirty: false,
                shape,
                syncs: 0,
            },
            tail,
        })
    }

    /// Delete `segments` (newest first, so an interruption never leaves a gap at the front)
    /// and start an empty log continuing `base`.
    fn reset_dir(
        dir: &Path,
        segment_bytes: u64,
        segments: &[LogIndex],
        base: Position,
    ) -> Result<Self, WalError> {
        for first in segments.iter().rev() {
            let path = dir.join(segment_name(*first));
            fs::remove_file(&path).map_err(|e| WalError::io(&path, e))?;
        }
        let first = base.index + 1;
        let path = dir.join(segment_name(first));
        let (active, active_len) = open_append(&path)?;
        sync_dir(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            segment_bytes,
            segments: vec![first],
            active,
            active_len,
            buffer: Vec::new(),
            unsynced: Vec::new(),
            dir_dirty: false,
            shape: Shape::fresh(base),
            syncs: 0,
        })
    }

    /// The log's shape, including records appended but not yet synced.
    pub(crate) fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The directory holding the segments.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Check that `records` continue the log, without appending them.
    pub(crate) fn check_continues(&self, records: &[Record]) -> Result<(), WalError> {
        let mut last = self.shape.last;
        for record in records {
            if record.index != last.index + 1 || record.epoch < last.epoch {
                return Err(WalError::OutOfOrder(format!(
                    "record {}/{} after {}/{}",
                    record.epoch, record.index, last.epoch, last.index
                )));
            }
            last = record.position();
        }
        Ok(())
    }

    /// Append `records` (buffered; durable after [`Self::sync`]). They must continue the log.
    pub(crate) fn append(&mut self, records: &[Record]) -> Result<(), WalError> {
        self.check_continues(records)?;
        for record in records {
            if self.active_len > 0 && self.active_len >= self.segment_bytes {
                self.roll(record.index)?;
            }
            let before = self.buffer.len();
            record.encode_into(&mut self.buffer);
            self.active_len += (self.buffer.len() - before) as u64;
            self.shape.push(record.position());
        }
        Ok(())
    }

    /// Start a new segment whose first record is `first`.
    fn roll(&mut self, first: LogIndex) -> Result<(), WalError> {
        self.write_buffer()?;
        let path = self.dir.join(segment_name(first));
        let (file, len) = open_append(&path)?;
        let old = std::mem::replace(&mut self.active, file);
        self.unsynced.push(old);
        self.active_len = len;
        self.segments.push(first);
        self.dir_dirty = true;
        Ok(())
    }

    /// Write what is buffered to the active segment without syncing it: readable from the
    /// file from then on, durable after [`Self::sync`].
    pub(crate) fn write_buffer(&mut self) -> Result<(), WalError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let result = self.active.write_all(&self.buffer);
        self.buffer.clear();
        result.map_err(|e| WalError::io(&self.active_path(), e))
    }

    fn active_path(&self) -> PathBuf {
        let first = self
            .segments
            .last()
            .copied()
            .unwrap_or(self.shape.base.index + 1);
        self.dir.join(segment_name(first))
    }

    /// Write what is buffered and make everything appended durable: one `fdatasync` of the
    /// active segment (plus any segment rolled away from since the last sync, and the
    /// directory when a segment was created).
    pub(crate) fn sync(&mut self) -> Result<(), WalError> {
        self.write_buffer()?;
        for file in self.unsynced.drain(..) {
            file.sync_data().map_err(|e| WalError::io(&self.dir, e))?;
        }
        self.active
            .sync_data()
            .map_err(|e| WalError::io(&self.active_path(), e))?;
        if self.dir_dirty {
            sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        self.syncs += 1;
        Ok(())
    }

    /// What a power cut leaves of the bytes appended since the last sync: the first `keep`
    /// reach the active segment (a torn write), the rest are lost; nothing is synced.
    pub(crate) fn power_cut(&mut self, keep: u64) -> Result<PowerCut, WalError> {
        let unsynced = self.buffer.len();
        let kept = usize::try_from(keep).unwrap_or(usize::MAX).min(unsynced);
        let written = self.active.write_all(&self.buffer[..kept]);
        self.buffer.clear();
        written.map_err(|e| WalError::io(&self.active_path(), e))?;
        Ok(PowerCut {
            unsynced_bytes: unsynced as u64,
            kept_bytes: kept as u64,
        })
    }

    /// How many times [`Self::sync`] made the log durable.
    #[cfg(test)]
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs
    }

    /// Delete the segments whose every record is at or below `upto` (covered by a snapshot).
    /// The active segment is kept. Returns how many were deleted.
    pub(crate) fn compact(&mut self, upto: LogIndex) -> Result<usize, WalError> {
        let covered = self
            .segments
            .windows(2)
            .take_while(|pair| pair[1] <= upto + 1)
            .count();
        for first in self.segments.drain(..covered) {
            let path = self.dir.join(segment_name(first));
            fs::remove_file(&path).map_err(|e| WalError::io(&path, e))?;
        }
        if covered > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(covered)
    }

    /// Throw the whole log away and continue from a snapshot at `base` (follower catch-up).
    pub(crate) fn reset(&mut self, base: Position) -> Result<(), WalError> {
        self.buffer.clear();
        self.unsynced.clear();
        *self = Self::reset_dir(&self.dir, self.segment_bytes, &self.segments, base)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn markers(epoch: u64, from: LogIndex, to: LogIndex) -> Vec<Record> {
        (from..=to).map(|i| Record::marker(epoch, i)).collect()
    }

    #[test]
    fn appends_roll_recover_and_compact() -> Result<(), WalError> {
        let dir = tempfile::tempdir().map_err(|e| WalError::io(Path::new("tmp"), e))?;
        let mut log = Log::open(dir.path(), 64, Position::default())?.log;
        log.append(&markers(1, 1, 10))?;
        log.sync()?;
        assert!(log.segments.len() > 2, "{:?}", log.segments);
        assert!(log.append(&markers(1, 12, 12)).is_err());
        drop(log);

        let recovered = Log::open(dir.path(), 64, Position::default())?;
        assert_eq!(recovered.tail.len(), 10);
        let mut log = recovered.log;
        assert_eq!(
            log.shape().last,
            Position {
                epoch: 1,
                index: 10
            }
        );
        log.append(&markers(2, 11, 12))?;
        assert_eq!(log.shape().epoch_at(11), Some(2));
        assert_eq!(log.shape().epoch_at(10), Some(1));
        assert_eq!(log.shape().first_of_epoch(2), Some(11));
        log.sync()?;
        let deleted = log.compact(6)?;
        assert!(deleted > 0);
        assert!(log.segments[0] <= 7);

        let base = Position { epoch: 1, index: 6 };
        let recovered = Log::open(dir.path(), 64, base)?;
        assert_eq!(recovered.tail.first().map(|r| r.index), Some(7));
        Ok(())
    }

    #[test]
    fn segments_of_another_history_are_discarded() -> Result<(), WalError> {
        let dir = tempfile::tempdir().map_err(|e| WalError::io(Path::new("tmp"), e))?;
        let mut log = Log::open(dir.path(), 1 << 20, Position::default())?.log;
        log.append(&markers(1, 1, 5))?;
        log.sync()?;
        drop(log);
        let base = Position { epoch: 2, index: 3 };
        let recovered = Log::open(dir.path(), 1 << 20, base)?;
        assert!(recovered.tail.is_empty());
        assert_eq!(recovered.log.shape().last, base);
        Ok(())
    }
}
