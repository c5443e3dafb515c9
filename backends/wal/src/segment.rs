//! Segment files: naming, scanning for recovery, and a cursor that reads records back for
//! replication.
//!
//! A segment is `wal-<index of its first record, 20 digits>.log` holding whole frames back to
//! back (see `record.rs`).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use switchyard_backend_api::LogIndex;

use crate::record::{Frame, Record, decode_frame};

/// File name of the segment whose first record has index `first`.
pub(crate) fn segment_name(first: LogIndex) -> String {
    format!("wal-{first:020}.log")
}

/// The first index named by a segment file name, if `name` is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<LogIndex> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, by first index.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<LogIndex>> {
    let mut firsts = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_segment_name) {
            firsts.push(first);
        }
    }
    firsts.sort_unstable();
    Ok(firsts)
}

/// Where a segment stops holding valid records, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Byte offset of the first bad frame.
    pub(crate) offset: u64,
    /// Bytes from there to the end of the file.
    pub(crate) bytes: u64,
    /// What is wrong with the frame.
    pub(crate) reason: String,
    /// Whether a valid frame exists anywhere after it: then this is not a torn tail but
    /// corruption in the middle of the log.
    pub(crate) followed_by_valid: bool,
}

/// The result of reading one segment from its start.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Every valid record before the first damage, in file order.
    pub(crate) records: Vec<Record>,
    /// Bytes up to the end of the last valid record.
    pub(crate) valid_len: u64,
    /// The first bad frame, if any.
    pub(crate) damage: Option<Damage>,
}

/// Read every frame of a segment's bytes.
pub(crate) fn scan(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        match decode_frame(&bytes[offset..]) {
            Frame::Record { record, len } => {
                records.push(record);
                offset += len;
            }
            Frame::Incomplete { reason } | Frame::Invalid { reason } => {
                return Scan {
                    records,
                    valid_len: offset as u64,
                    damage: Some(Damage {
                        offset: offset as u64,
                        bytes: (bytes.len() - offset) as u64,
                        reason,
                        followed_by_valid: valid_frame_after(bytes, offset + 1),
                    }),
                };
            }
        }
    }
    Scan {
        records,
        valid_len: offset as u64,
        damage: None,
    }
}

/// Whether any offset from `from` on starts a valid frame. A CRC32C match on garbage is a
/// 1-in-4-billion event per offset, so a hit means real records follow the damage.
fn valid_frame_after(bytes: &[u8], from: usize) -> bool {
    (from..bytes.len()).any(|at| matches!(decode_frame(&bytes[at..]), Frame::Record { .. }))
}

/// What a [`Cursor`] read.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// Records in order (possibly none yet).
    Records(Vec<Record>),
    /// The segment holding the next record was deleted by a snapshot: the reader must switch
    /// to a snapshot.
    Compacted,
}

/// Reads records in index order from the segment files, following rolls, without
/// coordinating with the writer: it only ever hands out whole frames up to an index the
/// caller knows to be durable.
#[derive(Debug)]
pub(crate) struct Cursor {
    dir: PathBuf,
    segment: LogIndex,
    offset: u64,
    next: LogIndex,
}

impl Cursor {
    /// A cursor whose first record will be `next`, or `None` if no retained segment holds it
    /// (it was compacted into a snapshot).
    pub(crate) fn open(dir: &Path, next: LogIndex) -> io::Result<Option<Self>> {
        let segments = list_segments(dir)?;
        let Some(&segment) = segments.iter().rev().find(|&&first| first <= next) else {
            return Ok(None);
        };
        Ok(Some(Self {
            dir: dir.to_owned(),
            segment,
            offset: 0,
            next,
        }))
    }

    /// Index of the next record this cursor returns.
    pub(crate) fn next(&self) -> LogIndex {
        self.next
    }

    /// Records from the cursor on, up to and including `upto`, at most about `max_bytes` of
    /// frames. Returns an empty list when nothing up to `upto` is readable yet.
    pub(crate) fn read(&mut self, upto: LogIndex, max_bytes: usize) -> io::Result<Chunk> {
        let mut out = Vec::new();
        while self.next <= upto && out.is_empty() {
            let path = self.dir.join(segment_name(self.segment));
            let mut file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Chunk::Compacted),
                Err(e) => return Err(e),
            };
            let bytes = read_frames_at(&mut file, self.offset, max_bytes)?;
            let mut used = 0;
            let mut size = 0;
            while let Frame::Record { record, len } = decode_frame(&bytes[used..]) {
                if record.index > upto {
                    break;
                }
                used += len;
                if record.index >= self.next {
                    self.next = record.index + 1;
                    size += len;
                    out.push(record);
                }
                if size >= max_bytes {
                    break;
                }
            }
            self.offset += used as u64;
            if out.is_empty() && !self.advance_segment()? {
                break;
            }
        }
        Ok(Chunk::Records(out))
    }

    /// Move to the segment that starts at `next`, if the current one has been rolled past.
    fn advance_segment(&mut self) -> io::Result<bool> {
        let segments = list_segments(&self.dir)?;
        if segments.contains(&self.next) && self.segment != self.next {
            self.segment = self.next;
            self.offset = 0;
            return Ok(true);
        }
        Ok(false)
    }
}

/// Read at least `want` bytes from `offset` (fewer at the end of the file), and more if the
/// first frame there is larger, so that a whole frame is always returned when one exists.
fn read_frames_at(file: &mut File, offset: u64, want: usize) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut header = [0; 4];
    let mut got = 0;
    while got < header.len() {
        match file.read(&mut header[got..])? {
            0 => break,
            n => got += n,
        }
    }
    let first_frame = 8 + u32::from_le_bytes(header) as usize;
    let limit = want.max(first_frame.min(MAX_FRAME_READ)) as u64;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Upper bound for one read of a single frame; matches the largest body a frame may claim.
const MAX_FRAME_READ: usize = 8 + 17 + switchyard_backend_api::codec::MAX_DECODE_BYTES;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_name(7), "wal-00000000000000000007.log");
        assert_eq!(parse_segment_name(&segment_name(123_456)), Some(123_456));
        assert_eq!(parse_segment_name("wal-7.log"), None);
        assert_eq!(parse_segment_name("snapshot-7.snap"), None);
    }

    #[test]
    fn scan_tells_torn_tail_from_corrupt_middle() {
        let mut bytes = Vec::new();
        for index in 1..=3 {
            Record::marker(1, index).encode_into(&mut bytes);
        }
        let one = bytes.len() / 3;

        let torn = scan(&bytes[..bytes.len() - 2]);
        assert_eq!(torn.records.len(), 2);
        let damage = torn.damage.as_ref().map(|d| d.followed_by_valid);
        assert_eq!(damage, Some(false));
        assert_eq!(torn.valid_len, 2 * one as u64);

        let mut corrupt = bytes.clone();
        corrupt[one + 10] ^= 1;
        let scanned = scan(&corrupt);
        assert_eq!(scanned.records.len(), 1);
        let damage = scanned
            .damage
            .as_ref()
            .map(|d| (d.offset, d.followed_by_valid));
        assert_eq!(damage, Some((one as u64, true)));
    }
}
