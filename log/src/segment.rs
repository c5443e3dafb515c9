//! One segment: a `.log` file of whole record batches starting at `base_offset`, its two sparse
//! indexes, recovery of both from the data, and positional reads.
//!
//! A segment's mutable state is a [`Summary`] plus the in-memory index entries, behind one
//! short `RwLock`: the appender publishes a new summary only after its bytes are written (and
//! fsynced, if the flush policy says so), and readers read the file only up to the published
//! size, with `pread` and no lock held.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;

use super::batch::{BatchHeader, HEADER_LEN, RecordBatch};
use super::epochs::Epochs;
use super::error::{LogError, io_err};
use super::index::{
    OffsetEntry, TimeEntry, decode_offset_index, decode_time_index, lookup_offset, lookup_time,
};

/// Extension of segment data files.
pub(crate) const LOG_EXT: &str = "log";
/// Extension of offset index files.
pub(crate) const INDEX_EXT: &str = "index";
/// Extension of time index files.
pub(crate) const TIME_INDEX_EXT: &str = "timeindex";
/// Kafka's "no timestamp".
pub(crate) const NO_TIMESTAMP: i64 = -1;

/// `<dir>/<base offset, 20 digits>.<ext>`.
pub(crate) fn segment_path(dir: &Path, base_offset: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

/// Fsyncs a directory, making file creations, renames and deletions in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Replaces `dir/name` with `contents` durably: a temp file written and fsynced, renamed over
/// it, the directory fsynced. A crash leaves the old file or the new one, never a mix.
pub(crate) fn replace_file(dir: &Path, name: &str, contents: &[u8]) -> Result<(), LogError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_err("write", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
    sync_dir(dir)
}

/// What is known about a segment's contents, enough to append the next batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    /// Bytes of whole batches in the file.
    pub(crate) size: u64,
    /// The offset after the last batch (the base offset when empty).
    pub(crate) next_offset: i64,
    /// The largest batch `maxTimestamp`, or [`NO_TIMESTAMP`].
    pub(crate) max_timestamp: i64,
    /// Base offset of the first batch that reached `max_timestamp`.
    pub(crate) offset_of_max_timestamp: i64,
    /// Bytes appended since the last offset-index entry.
    bytes_since_index: u64,
    last_offset_entry: Option<OffsetEntry>,
    last_time_entry: Option<TimeEntry>,
}

/// Index entries produced by appending or scanning batches, not yet published.
#[derive(Debug, Default)]
pub(crate) struct NewEntries {
    offsets: Vec<OffsetEntry>,
    times: Vec<TimeEntry>,
}

impl NewEntries {
    fn is_empty(&self) -> bool {
        self.offsets.is_empty() && self.times.is_empty()
    }
}

impl Summary {
    fn empty(base_offset: i64) -> Self {
        Self {
            size: 0,
            next_offset: base_offset,
            max_timestamp: NO_TIMESTAMP,
            offset_of_max_timestamp: base_offset,
            bytes_since_index: 0,
            last_offset_entry: None,
            last_time_entry: None,
        }
    }

    /// Accounts for the batch `header` of `size` bytes written at `position`, and adds index
    /// entries for it when `index_interval` bytes have passed since the last one.
    pub(crate) fn track(
        &mut self,
        base_offset: i64,
        position: u64,
        header: &BatchHeader,
        size: u64,
        index_interval: u32,
        new: &mut NewEntries,
    ) {
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
        if self.bytes_since_index >= u64::from(index_interval) {
            let relative = u32::try_from(header.base_offset - base_offset).ok();
            let position = u32::try_from(position).ok();
            if let (Some(relative_offset), Some(position)) = (relative, position) {
                let entry = OffsetEntry {
                    relative_offset,
                    position,
                };
                if self.last_offset_entry.is_none_or(|last| {
                    last.relative_offset < relative_offset && last.position < position
                }) {
                    self.last_offset_entry = Some(entry);
                    new.offsets.push(entry);
                    self.bytes_since_index = 0;
                    self.track_time(base_offset, new);
                }
            }
        }
        self.bytes_since_index += size;
        self.size = position + size;
        self.next_offset = header.next_offset();
    }

    fn track_time(&mut self, base_offset: i64, new: &mut NewEntries) {
        let Ok(relative_offset) = u32::try_from(self.offset_of_max_timestamp - base_offset) else {
            return;
        };
        let entry = TimeEntry {
            timestamp: self.max_timestamp,
            relative_offset,
        };
        if self.last_time_entry.is_none_or(|last| {
            last.timestamp < entry.timestamp && last.relative_offset < relative_offset
        }) {
            self.last_time_entry = Some(entry);
            new.times.push(entry);
        }
    }
}

/// The published state of a segment.
#[derive(Debug)]
struct SegmentState {
    summary: Summary,
    offset_index: Vec<OffsetEntry>,
    time_index: Vec<TimeEntry>,
}

/// The open index files of the active segment, appended to as batches arrive.
#[derive(Debug)]
pub(crate) struct IndexFiles {
    offset: File,
    offset_path: PathBuf,
    time: File,
    time_path: PathBuf,
}

impl IndexFiles {
    /// Appends new entries to both files (not fsynced: indexes are rebuilt after a crash).
    pub(crate) fn append(&mut self, new: &NewEntries) -> Result<(), LogError> {
        let offsets: Vec<u8> = new.offsets.iter().flat_map(|e| e.encode()).collect();
        let times: Vec<u8> = new.times.iter().flat_map(|e| e.encode()).collect();
        self.offset
            .write_all(&offsets)
            .map_err(io_err("write", &self.offset_path))?;
        self.time
            .write_all(&times)
            .map_err(io_err("write", &self.time_path))
    }

    /// Fsyncs both files.
    pub(crate) fn sync(&self) -> Result<(), LogError> {
        self.offset
            .sync_data()
            .map_err(io_err("fsync", &self.offset_path))?;
        self.time
            .sync_data()
            .map_err(io_err("fsync", &self.time_path))
    }
}

/// What a scan of a segment's data found wrong, if anything.
struct ScanStop {
    position: u64,
    reason: String,
}

/// How [`Segment::recover`] treats a segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recovery {
    /// The log was shut down cleanly: index files may be trusted if they check out.
    pub(crate) clean: bool,
    /// This is the last segment: a bad tail is truncated rather than reported.
    pub(crate) active: bool,
    /// For the last segment: the flushed mark. Only batches at or past it may be cut; damage
    /// below it is reported as corruption.
    pub(crate) flushed: Option<i64>,
    /// `index.interval.bytes` for rebuilt indexes.
    pub(crate) index_interval: u32,
}

/// A range of whole batches of one segment: where they are in its data file.
#[derive(Debug)]
pub(crate) struct SegmentSlice {
    /// Position of the first batch in the data file.
    pub(crate) position: u64,
    /// Bytes of whole batches from `position`; 0 when no batch was taken.
    pub(crate) len: u64,
    /// The offset after the last batch taken, if any was.
    pub(crate) next_offset: Option<i64>,
    /// Whether the range stopped at the end of the segment's published data.
    pub(crate) at_end: bool,
}

/// Bytes read at once while walking batch headers after a small batch: the next few headers
/// come with one `pread`. After a larger batch only the next header is read, so walking large
/// batches copies next to nothing of them.
const HEADER_WINDOW: usize = 4096;

/// One segment of a partition log.
#[derive(Debug)]
pub(crate) struct Segment {
    base_offset: i64,
    path: PathBuf,
    file: File,
    state: RwLock<SegmentState>,
}

impl Segment {
    /// Creates an empty segment starting at `base_offset`, with empty index files.
    pub(crate) fn create(dir: &Path, base_offset: i64) -> Result<(Self, IndexFiles), LogError> {
        let path = segment_path(dir, base_offset, LOG_EXT);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        let segment = Self {
            base_offset,
            path,
            file,
            state: RwLock::new(SegmentState {
                summary: Summary::empty(base_offset),
                offset_index: Vec::new(),
                time_index: Vec::new(),
            }),
        };
        segment.write_indexes(&[], &[])?;
        sync_dir(dir)?;
        let index_files = segment.open_index_files()?;
        Ok((segment, index_files))
    }

    /// Opens an existing segment and brings it and its indexes to a consistent state.
    ///
    /// After a clean shutdown the index files are trusted if they check out and only the
    /// batches after the last offset-index entry are read and CRC-checked. Otherwise every
    /// batch is read and checked and both indexes are rebuilt. A bad batch in the active
    /// segment truncates the file there (a torn tail); anywhere else it fails the open.
    pub(crate) fn recover(
        dir: &Path,
        base_offset: i64,
        recovery: Recovery,
    ) -> Result<Self, LogError> {
        let path = segment_path(dir, base_offset, LOG_EXT);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let file_len = file.metadata().map_err(io_err("stat", &path))?.len();
        let mut segment = Self {
            base_offset,
            path,
            file,
            state: RwLock::new(SegmentState {
                summary: Summary::empty(base_offset),
                offset_index: Vec::new(),
                time_index: Vec::new(),
            }),
        };
        if recovery.clean && segment.load_indexes(file_len, recovery.index_interval)? {
            return Ok(segment);
        }
        let mut summary = Summary::empty(base_offset);
        let mut new = NewEntries::default();
        let stop = segment.scan(&mut summary, &mut new, file_len, recovery.index_interval)?;
        if let Some(flushed) = recovery.flushed.filter(|f| summary.next_offset < *f) {
            let (position, reason) = stop.map_or_else(
                || (file_len, "the segment ends early".to_owned()),
                |stop| (stop.position, stop.reason),
            );
            return Err(LogError::Corrupt {
                path: segment.path,
                position,
                reason: format!(
                    "{reason}, below offset {flushed}, up to which the log was flushed: \
                     acknowledged data is damaged, not a torn tail"
                ),
            });
        }
        if let Some(stop) = stop {
            if !recovery.active {
                return Err(LogError::Corrupt {
                    path: segment.path,
                    position: stop.position,
                    reason: stop.reason,
                });
            }
            tracing::warn!(
                file = %segment.path.display(),
                position = stop.position,
                dropped_bytes = file_len - stop.position,
                reason = %stop.reason,
                "truncating the torn tail of the active segment"
            );
            segment
                .file
                .set_len(stop.position)
                .and_then(|()| segment.file.sync_all())
                .map_err(io_err("truncate", &segment.path))?;
        }
        segment.write_indexes(&new.offsets, &new.times)?;
        *segment.state.get_mut() = SegmentState {
            summary,
            offset_index: new.offsets,
            time_index: new.times,
        };
        Ok(segment)
    }

    /// Loads the index files and checks them against the data: entries in order and inside
    /// the file, the batch at the last offset entry where it says, and the batches after it
    /// valid and needing no new entry. Returns whether the indexes were accepted.
    fn load_indexes(&mut self, file_len: u64, index_interval: u32) -> Result<bool, LogError> {
        let read = |ext| {
            let path = self.path.with_extension(ext);
            match fs::read(&path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(err) => Err(io_err("read", path)(err)),
            }
        };
        let (Some(offset_bytes), Some(time_bytes)) = (read(INDEX_EXT)?, read(TIME_INDEX_EXT)?)
        else {
            return Ok(false);
        };
        let (Some(offsets), Some(times)) = (
            decode_offset_index(&offset_bytes),
            decode_time_index(&time_bytes),
        ) else {
            return Ok(false);
        };
        let last_offset = offsets.last().copied();
        let last_time = times.last().copied();
        let consistent = match (last_offset, last_time) {
            (Some(o), Some(t)) => {
                u64::from(o.position) < file_len && t.relative_offset <= o.relative_offset
            }
            (Some(o), None) => u64::from(o.position) < file_len,
            (None, None) => true,
            (None, Some(_)) => false,
        };
        if !consistent {
            return Ok(false);
        }
        let base = self.base_offset;
        let mut summary = Summary {
            size: last_offset.map_or(0, |o| u64::from(o.position)),
            next_offset: last_offset.map_or(base, |o| base + i64::from(o.relative_offset)),
            max_timestamp: last_time.map_or(NO_TIMESTAMP, |t| t.timestamp),
            offset_of_max_timestamp: last_time
                .map_or(base, |t| base + i64::from(t.relative_offset)),
            bytes_since_index: 0,
            last_offset_entry: last_offset,
            last_time_entry: last_time,
        };
        let mut new = NewEntries::default();
        if self
            .scan(&mut summary, &mut new, file_len, index_interval)?
            .is_some()
            || !new.is_empty()
        {
            return Ok(false);
        }
        *self.state.get_mut() = SegmentState {
            summary,
            offset_index: offsets,
            time_index: times,
        };
        Ok(true)
    }

    /// Reads and CRC-checks batches from `summary.size` to `file_len`, tracking each into
    /// `summary` and `new`. Stops at the first batch that is incomplete, invalid, or starts
    /// below the previous one's end, and says where and why.
    fn scan(
        &self,
        summary: &mut Summary,
        new: &mut NewEntries,
        file_len: u64,
        index_interval: u32,
    ) -> Result<Option<ScanStop>, LogError> {
        let mut buf = Vec::new();
        while summary.size < file_len {
            let position = summary.size;
            let available = file_len - position;
            let mut head = [0u8; HEADER_LEN];
            let head_len = head
                .len()
                .min(usize::try_from(available).unwrap_or(HEADER_LEN));
            self.file
                .read_exact_at(&mut head[..head_len], position)
                .map_err(io_err("read", &self.path))?;
            let checked = BatchHeader::decode(&head[..head_len])
                .ok_or_else(|| {
                    format!("{available} trailing bytes are shorter than a batch header")
                })
                .and_then(|header| {
                    header
                        .check(position, available)
                        .map(|size| (header, size))
                        .map_err(|err| err.to_string())
                });
            let (header, size) = match checked {
                Ok(ok) => ok,
                Err(reason) => return Ok(Some(ScanStop { position, reason })),
            };
            buf.resize(size, 0);
            self.file
                .read_exact_at(&mut buf, position)
                .map_err(io_err("read", &self.path))?;
            if let Err(err) = RecordBatch::parse(&buf, position) {
                let reason = err.to_string();
                return Ok(Some(ScanStop { position, reason }));
            }
            // Compaction leaves gaps between batches; offsets never go back.
            if header.base_offset < summary.next_offset {
                let reason = format!(
                    "batch has base offset {}, below the previous batch's end {}",
                    header.base_offset, summary.next_offset
                );
                return Ok(Some(ScanStop { position, reason }));
            }
            summary.track(
                self.base_offset,
                position,
                &header,
                size as u64,
                index_interval,
                new,
            );
        }
        Ok(None)
    }

    /// Replaces both index files with the given entries, fsynced.
    fn write_indexes(&self, offsets: &[OffsetEntry], times: &[TimeEntry]) -> Result<(), LogError> {
        let offset_bytes: Vec<u8> = offsets.iter().flat_map(|e| e.encode()).collect();
        let time_bytes: Vec<u8> = times.iter().flat_map(|e| e.encode()).collect();
        for (ext, bytes) in [(INDEX_EXT, offset_bytes), (TIME_INDEX_EXT, time_bytes)] {
            let path = self.path.with_extension(ext);
            let mut file = File::create(&path).map_err(io_err("create", &path))?;
            file.write_all(&bytes)
                .and_then(|()| file.sync_data())
                .map_err(io_err("write", &path))?;
        }
        Ok(())
    }

    /// Opens the index files for appending, as the active segment does.
    pub(crate) fn open_index_files(&self) -> Result<IndexFiles, LogError> {
        let open = |ext| {
            let path = self.path.with_extension(ext);
            OpenOptions::new()
                .append(true)
                .create(true)
                .open(&path)
                .map(|file| (file, path.clone()))
                .map_err(io_err("open", path))
        };
        let (offset, offset_path) = open(INDEX_EXT)?;
        let (time, time_path) = open(TIME_INDEX_EXT)?;
        Ok(IndexFiles {
            offset,
            offset_path,
            time,
            time_path,
        })
    }

    /// The offset of the first batch.
    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// The segment's data file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The published summary.
    pub(crate) fn summary(&self) -> Summary {
        self.state.read().summary
    }

    /// Writes `parts`, one after another, at `position` (the published size) without
    /// publishing them, with `pwritev` until all are written: one call writes at most
    /// `IOV_MAX` parts (rustix passes no more), and may write less. Consumes `parts`.
    pub(crate) fn write_all_at(
        &self,
        mut parts: &mut [IoSlice<'_>],
        mut position: u64,
    ) -> Result<(), LogError> {
        while !parts.is_empty() {
            let written = match rustix::io::pwritev(&self.file, parts, position) {
                Ok(0) => Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => Ok(n),
                Err(rustix::io::Errno::INTR) => continue,
                Err(errno) => Err(io::Error::from(errno)),
            }
            .map_err(io_err("write", &self.path))?;
            position += written as u64;
            IoSlice::advance_slices(&mut parts, written);
        }
        Ok(())
    }

    /// Cuts the data file back to `size` bytes (dropping an unpublished partial write).
    pub(crate) fn truncate(&self, size: u64) -> Result<(), LogError> {
        self.file
            .set_len(size)
            .map_err(io_err("truncate", &self.path))
    }

    /// Fsyncs the data file, timing it into `switchyard_log_fsync_duration_seconds`.
    pub(crate) fn sync(&self) -> Result<(), LogError> {
        let started = std::time::Instant::now();
        let synced = self.file.sync_data().map_err(io_err("fsync", &self.path));
        metrics::histogram!(crate::FSYNC_DURATION).record(started.elapsed());
        synced
    }

    /// Makes appended batches visible to readers.
    pub(crate) fn publish(&self, summary: Summary, new: NewEntries) {
        let mut state = self.state.write();
        state.summary = summary;
        state.offset_index.extend(new.offsets);
        state.time_index.extend(new.times);
    }

    /// Deletes the segment's files: the data first, so that a crash part-way leaves at worst
    /// index files without data, which opening removes.
    pub(crate) fn delete_files(&self) -> Result<(), LogError> {
        for ext in [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT] {
            let path = self.path.with_extension(ext);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(io_err("delete", path)(err)),
            }
        }
        Ok(())
    }

    fn corrupt(&self, position: u64, reason: impl Into<String>) -> LogError {
        LogError::Corrupt {
            path: self.path.clone(),
            position,
            reason: reason.into(),
        }
    }

    /// Reads the header of the batch at `position` and its size, checking that it lies within
    /// `limit` bytes of data.
    fn header_at(&self, position: u64, limit: u64) -> Result<(BatchHeader, u64), LogError> {
        let mut head = [0u8; HEADER_LEN];
        if limit.saturating_sub(position) < HEADER_LEN as u64 {
            return Err(self.corrupt(position, "batch header runs past the end of the data"));
        }
        self.file
            .read_exact_at(&mut head, position)
            .map_err(io_err("read", &self.path))?;
        let header = BatchHeader::decode(&head)
            .ok_or_else(|| self.corrupt(position, "short batch header"))?;
        let size = header
            .size()
            .map(|size| size as u64)
            .filter(|size| position + size <= limit)
            .ok_or_else(|| self.corrupt(position, "batch length runs past the end of the data"))?;
        Ok((header, size))
    }

    /// The bytes of the batch at `position`, whose end is within `limit` bytes of data.
    pub(crate) fn batch_at(&self, position: u64, limit: u64) -> Result<Vec<u8>, LogError> {
        let (_, size) = self.header_at(position, limit)?;
        let mut buf = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)];
        self.file
            .read_exact_at(&mut buf, position)
            .map_err(io_err("read", &self.path))?;
        Ok(buf)
    }

    /// Note every batch's leader epoch in `epochs`, walking the batch headers in order.
    pub(crate) fn collect_epochs(&self, epochs: &mut Epochs) -> Result<(), LogError> {
        let limit = self.summary().size;
        let mut position = 0;
        while position < limit {
            let (header, size) = self.header_at(position, limit)?;
            epochs.observe(header.partition_leader_epoch, header.base_offset);
            position += size;
        }
        Ok(())
    }

    /// The position of the batch holding `offset`, or `None` if the segment ends before it.
    /// Starts from the offset index and reads batch headers forward.
    pub(crate) fn find_batch(&self, offset: i64) -> Result<Option<u64>, LogError> {
        let (mut position, limit) = {
            let state = self.state.read();
            if offset >= state.summary.next_offset {
                return Ok(None);
            }
            let relative = u32::try_from((offset - self.base_offset).max(0)).unwrap_or(u32::MAX);
            let start = lookup_offset(&state.offset_index, relative).map_or(0, |e| e.position);
            (u64::from(start), state.summary.size)
        };
        while position < limit {
            let (header, size) = self.header_at(position, limit)?;
            if header.last_offset() >= offset {
                return Ok(Some(position));
            }
            position += size;
        }
        Ok(None)
    }

    /// The first batch whose `maxTimestamp` is at least `timestamp`: its base offset and max
    /// timestamp. Starts from the time index.
    pub(crate) fn find_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        let (start, limit) = {
            let state = self.state.read();
            if state.summary.max_timestamp < timestamp {
                return Ok(None);
            }
            let entry = lookup_time(&state.time_index, timestamp);
            let start = entry.map_or(self.base_offset, |e| {
                self.base_offset + i64::from(e.relative_offset)
            });
            (start, state.summary.size)
        };
        let Some(mut position) = self.find_batch(start)? else {
            return Ok(None);
        };
        while position < limit {
            let (header, size) = self.header_at(position, limit)?;
            if header.max_timestamp >= timestamp {
                return Ok(Some((header.base_offset, header.max_timestamp)));
            }
            position += size;
        }
        Ok(None)
    }

    /// The whole batches from `position` that fit in `max_bytes` and start below
    /// `end_offset`, found by walking their headers (the data itself is not read). With
    /// `at_least_one`, the first batch is taken even if it is larger than `max_bytes`, so a
    /// consumer always makes progress.
    pub(crate) fn slice_batches(
        &self,
        position: u64,
        max_bytes: usize,
        at_least_one: bool,
        end_offset: i64,
    ) -> Result<SegmentSlice, LogError> {
        let limit = self.summary().size;
        let max_bytes = max_bytes as u64;
        let mut window = Vec::new();
        let mut window_at = 0u64;
        let mut end = position;
        let mut next_offset = None;
        let mut small = true;
        while end < limit {
            let header = self.header_in_window(&mut window, &mut window_at, end, limit, small)?;
            let size = header
                .size()
                .map(|size| size as u64)
                .filter(|size| end + size <= limit)
                .ok_or_else(|| self.corrupt(end, "batch length runs past the end of the data"))?;
            let first = end == position;
            let fits = end + size - position <= max_bytes || (first && at_least_one);
            if header.base_offset >= end_offset || !fits {
                break;
            }
            end += size;
            next_offset = Some(header.next_offset());
            small = size <= HEADER_WINDOW as u64;
        }
        Ok(SegmentSlice {
            position,
            len: end - position,
            next_offset,
            at_end: end >= limit,
        })
    }

    /// The batch header at `position`, from `window` (bytes of the data file from
    /// `window_at`) when it holds it, else read into it: a window's worth after a `small`
    /// batch, the header alone after a large one.
    fn header_in_window(
        &self,
        window: &mut Vec<u8>,
        window_at: &mut u64,
        position: u64,
        limit: u64,
        small: bool,
    ) -> Result<BatchHeader, LogError> {
        if limit.saturating_sub(position) < HEADER_LEN as u64 {
            return Err(self.corrupt(position, "batch header runs past the end of the data"));
        }
        let held = position >= *window_at
            && position + HEADER_LEN as u64 <= *window_at + window.len() as u64;
        if !held {
            let want = if small { HEADER_WINDOW } else { HEADER_LEN };
            let len = want.min(usize::try_from(limit - position).unwrap_or(usize::MAX));
            window.resize(len, 0);
            self.file
                .read_exact_at(window, position)
                .map_err(io_err("read", &self.path))?;
            *window_at = position;
        }
        let at = usize::try_from(position - *window_at).unwrap_or(usize::MAX);
        BatchHeader::decode(&window[at..])
            .ok_or_else(|| self.corrupt(position, "short batch header"))
    }

    /// `len` bytes of the data file from `position`, appended to `out`.
    pub(crate) fn read_range(
        &self,
        position: u64,
        len: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), LogError> {
        let start = out.len();
        out.resize(start + usize::try_from(len).unwrap_or(usize::MAX), 0);
        self.file
            .read_exact_at(&mut out[start..], position)
            .map_err(io_err("read", &self.path))
    }

    /// The data file, for sending a range of it without reading it (`sendfile`).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }
}

/// Index entries only the tests look at.
#[cfg(test)]
impl Segment {
    pub(crate) fn index_entries(&self) -> (Vec<OffsetEntry>, Vec<TimeEntry>) {
        let state = self.state.read();
        (state.offset_index.clone(), state.time_index.clone())
    }
}

/// Removes index files that have no data file beside them.
pub(crate) fn remove_orphan_indexes(dir: &Path, names: &[String]) -> Result<(), LogError> {
    for name in names {
        let path = dir.join(name);
        let is_index = [INDEX_EXT, TIME_INDEX_EXT]
            .iter()
            .any(|ext| path.extension().is_some_and(|e| e == *ext));
        if is_index && !path.with_extension(LOG_EXT).exists() {
            fs::remove_file(&path).map_err(io_err("delete", &path))?;
        }
    }
    Ok(())
}
