//! One-number checkpoint files in a partition directory, each rewritten durably (temp file,
//! fsync, rename, directory fsync):
//! - [`HIGH_WATERMARK`] (`high-watermark`), written by the replica that owns the high
//!   watermark every `replica.high.watermark.checkpoint.interval.ms` when it moved, and on a
//!   clean shutdown. After a restart a replica starts from it (bounded by its log), so
//!   consumers and `ListOffsets` do not fall back to the log start until the followers fetch
//!   again, and a follower that must cut its log without an epoch to go by cuts no further
//!   than what was committed. The value on disk is never above the live high watermark at the
//!   time it was written, so it only ever understates what is committed.
//! - [`LOG_START`] (`log-start-offset`), written by the log before a DeleteRecords (or a
//!   follower copying its leader's) moves the log start offset inside a segment, so the move
//!   survives a restart.
//! - [`CLEANER_OFFSET`] (`cleaner-offset`), written by a compaction when it is done: the
//!   segments below it are clean (see `partition::cleaner`); lowered when the log is cut.
//!
//! A missing or unreadable file means "unknown".
//!
//! [`replace`] and [`remove`] do the same for a file of the caller's format (the broker's
//! producer-state snapshot).

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use super::error::{LogError, io_err};
use super::segment::{replace_file, sync_dir};

/// Replace `dir/name` with `contents` durably: a temp file written and fsynced, renamed over
/// it, the directory fsynced. A crash leaves the old file or the new one, never a mix.
pub fn replace(dir: &Path, name: &str, contents: &[u8]) -> Result<(), LogError> {
    replace_file(dir, name, contents)
}

/// Remove `dir/name`, if it exists, durably (the directory fsynced).
pub fn remove(dir: &Path, name: &str) -> Result<(), LogError> {
    let path = dir.join(name);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", &path)(e)),
    }
}

/// A checkpoint file: its name in the partition directory and its first line.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoint {
    /// The file name.
    pub file: &'static str,
    header: &'static str,
}

/// The high-watermark checkpoint.
pub const HIGH_WATERMARK: Checkpoint = Checkpoint {
    file: "high-watermark",
    header: "switchyard-high-watermark 1",
};

/// The log start offset set by DeleteRecords.
pub const LOG_START: Checkpoint = Checkpoint {
    file: "log-start-offset",
    header: "switchyard-log-start-offset 1",
};

/// Where the part of a compacted log the cleaner last covered ends.
pub const CLEANER_OFFSET: Checkpoint = Checkpoint {
    file: "cleaner-offset",
    header: "switchyard-cleaner-offset 1",
};

impl Checkpoint {
    /// The checkpointed value in `dir`, if there is a readable one.
    pub fn load(&self, dir: &Path) -> Option<i64> {
        let text = fs::read_to_string(dir.join(self.file)).ok()?;
        let mut lines = text.lines();
        if lines.next() != Some(self.header) {
            return None;
        }
        let value = lines.next()?.parse().ok()?;
        lines.next().is_none().then_some(value)
    }

    /// Write `value` as the checkpoint in `dir`, durably.
    pub fn store(&self, dir: &Path, value: i64) -> Result<(), LogError> {
        replace_file(
            dir,
            self.file,
            format!("{}\n{value}\n", self.header).as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::io_err;

    #[test]
    fn a_stored_checkpoint_loads_and_a_bad_one_is_unknown() -> Result<(), LogError> {
        let dir = tempfile::tempdir().map_err(io_err("create", Path::new("tmp")))?;
        for checkpoint in [HIGH_WATERMARK, LOG_START, CLEANER_OFFSET] {
            assert_eq!(checkpoint.load(dir.path()), None, "no file yet");
            checkpoint.store(dir.path(), 1234)?;
            assert_eq!(checkpoint.load(dir.path()), Some(1234));
            checkpoint.store(dir.path(), 1300)?;
            assert_eq!(checkpoint.load(dir.path()), Some(1300));
            let header = checkpoint.header;
            for bad in [
                String::new(),
                format!("{header}\n"),
                "other 1\n5\n".to_owned(),
                format!("{header}\nx\n"),
            ] {
                fs::write(dir.path().join(checkpoint.file), &bad)
                    .map_err(io_err("write", dir.path()))?;
                assert_eq!(checkpoint.load(dir.path()), None, "{bad:?}");
            }
        }
        assert_ne!(HIGH_WATERMARK.file, LOG_START.file);
        Ok(())
    }
}
