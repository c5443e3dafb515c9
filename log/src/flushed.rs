//! The flushed mark of a partition: the file `flushed` in its directory holds the offset below
//! which every batch of the log was fsynced. Recovery may cut only what lies past it — a tail
//! that was never flushed can be torn by a crash, a flushed one cannot — so damage below the
//! mark is corruption: the partition stays offline instead of silently losing acknowledged
//! data.
//!
//! The mark is overwritten in place after each fsync of the active segment, and lowered before
//! any truncation; it is not itself fsynced. That keeps the cost to one small write per fsync
//! and is safe: the mark is written only after the data it covers is durable, so whatever a
//! crash or power cut leaves of it never covers more than the disk holds. A lost, torn or stale
//! mark only makes recovery more lenient (a missing mark means 0: nothing is known flushed).
//!
//! Format: a version byte (1), the offset as a big-endian `i64`, and the CRC-32C of those nine
//! bytes, big-endian.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use super::error::{LogError, io_err};

/// The file name, in the partition directory.
pub(crate) const FLUSHED_FILE: &str = "flushed";
const VERSION: u8 = 1;
const LEN: usize = 13;

/// The flushed mark of `dir`, if there is a readable one.
pub(crate) fn load(dir: &Path) -> Option<i64> {
    let bytes = std::fs::read(dir.join(FLUSHED_FILE)).ok()?;
    let bytes: [u8; LEN] = bytes.get(..LEN)?.try_into().ok()?;
    let crc = u32::from_be_bytes(bytes[9..].try_into().ok()?);
    if bytes[0] != VERSION || crc32c::crc32c(&bytes[..9]) != crc {
        return None;
    }
    Some(i64::from_be_bytes(bytes[1..9].try_into().ok()?))
}

/// The open mark file of a partition and the value last written to it.
#[derive(Debug)]
pub(crate) struct FlushedMark {
    file: File,
    offset: i64,
}

impl FlushedMark {
    /// Open (creating) the mark of `dir` and set it to `offset`, which must be durable.
    pub(crate) fn open(dir: &Path, offset: i64) -> Result<Self, LogError> {
        let path = dir.join(FLUSHED_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let mut mark = Self { file, offset: -1 };
        mark.set(offset)?;
        Ok(mark)
    }

    /// Everything below `offset` is durable now.
    pub(crate) fn set(&mut self, offset: i64) -> Result<(), LogError> {
        if offset == self.offset {
            return Ok(());
        }
        let mut bytes = [0u8; LEN];
        bytes[0] = VERSION;
        bytes[1..9].copy_from_slice(&offset.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[..9]);
        bytes[9..].copy_from_slice(&crc.to_be_bytes());
        self.file
            .write_all_at(&bytes, 0)
            .map_err(io_err("write", FLUSHED_FILE))?;
        self.offset = offset;
        Ok(())
    }

    /// Lower the mark to `offset` if it is above: call before cutting the log there.
    pub(crate) fn lower_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset < self.offset {
            self.set(offset)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_mark_loads_and_a_damaged_one_is_unknown() -> Result<(), LogError> {
        let dir = tempfile::tempdir().map_err(io_err("create", Path::new("tmp")))?;
        assert_eq!(load(dir.path()), None, "no file yet");
        let mut mark = FlushedMark::open(dir.path(), 7)?;
        assert_eq!(load(dir.path()), Some(7));
        mark.set(1_000_000)?;
        assert_eq!(load(dir.path()), Some(1_000_000));
        mark.lower_to(2_000_000)?;
        assert_eq!(load(dir.path()), Some(1_000_000), "lower_to never raises");
        mark.lower_to(5)?;
        assert_eq!(load(dir.path()), Some(5));
        let path = dir.path().join(FLUSHED_FILE);
        let mut bytes = std::fs::read(&path).map_err(io_err("read", &path))?;
        bytes[4] ^= 1;
        std::fs::write(&path, &bytes).map_err(io_err("write", &path))?;
        assert_eq!(load(dir.path()), None, "a flipped bit");
        std::fs::write(&path, &bytes[..5]).map_err(io_err("write", &path))?;
        assert_eq!(load(dir.path()), None, "torn");
        Ok(())
    }
}
