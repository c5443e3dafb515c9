//! The leader-epoch cache of a partition log: the offset at which each leader epoch's batches
//! start. It answers OffsetForLeaderEpoch (where an epoch ends in this log) and tells a
//! follower whose log diverged from its leader's where to cut it.
//!
//! Kept in memory and in the file `leader-epochs` of the partition directory, rewritten
//! (temp file, fsync, rename, directory fsync) whenever an entry is added or dropped. An entry
//! is stored *before* the first batch of its epoch is written, so after a crash the file may
//! name an epoch that never reached the log — opening drops entries at or past the log end
//! offset — but never lacks one that did. A missing or unreadable file is rebuilt from the
//! batches' `partitionLeaderEpoch` fields.

use std::fs;
use std::path::Path;

use super::error::{LogError, io_err};
use super::segment::replace_file;

/// The file name, in the partition directory.
pub(crate) const EPOCHS_FILE: &str = "leader-epochs";
const HEADER: &str = "switchyard-leader-epochs 1";

/// Where a leader epoch's batches start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochStart {
    /// The leader epoch.
    pub epoch: i32,
    /// The offset of its first batch.
    pub start_offset: i64,
}

/// The cache: entries increasing in both epoch and start offset.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Epochs {
    entries: Vec<EpochStart>,
}

impl Epochs {
    /// The stored cache of `dir` without the entries at or past `log_end`, or `None` if there
    /// is no file or it does not parse (then rebuild it from the batches).
    pub(crate) fn load(dir: &Path, log_end: i64) -> Result<Option<Self>, LogError> {
        let path = dir.join(EPOCHS_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Ok(None);
        }
        let mut epochs = Self::default();
        for line in lines {
            let mut fields = line.split(' ');
            let (Some(epoch), Some(start), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Ok(None);
            };
            let (Ok(epoch), Ok(start_offset)) = (epoch.parse(), start.parse()) else {
                return Ok(None);
            };
            if !epochs.observe(epoch, start_offset) {
                return Ok(None);
            }
        }
        epochs.truncate(log_end);
        Ok(Some(epochs))
    }

    /// Note a batch of `epoch` at `offset`: a new entry if `epoch` is newer than the last one
    /// (negative epochs, "unknown", are ignored). Returns whether an entry was added.
    pub(crate) fn observe(&mut self, epoch: i32, offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        match self.entries.last() {
            Some(last) if last.epoch >= epoch || last.start_offset >= offset => false,
            _ => {
                self.entries.push(EpochStart {
                    epoch,
                    start_offset: offset,
                });
                true
            }
        }
    }

    /// Drop the entries of epochs that start at or past `end` (the log was cut there).
    /// Returns whether any was dropped.
    pub(crate) fn truncate(&mut self, end: i64) -> bool {
        let keep = self.entries.partition_point(|e| e.start_offset < end);
        let dropped = keep < self.entries.len();
        self.entries.truncate(keep);
        dropped
    }

    /// The entries, oldest first.
    pub(crate) fn entries(&self) -> &[EpochStart] {
        &self.entries
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `epoch` that this log holds, and
    /// the offset where it ends (the next epoch's start, or `log_end` for the latest). `None`
    /// when every epoch here is newer than `epoch` (Kafka answers -1, -1).
    pub(crate) fn end_of(&self, epoch: i32, log_end: i64) -> Option<(i32, i64)> {
        let at = self.entries.partition_point(|e| e.epoch <= epoch);
        let found = at.checked_sub(1).map(|i| self.entries[i])?;
        let end = self
            .entries
            .get(at)
            .map_or(log_end, |next| next.start_offset);
        Some((found.epoch, end))
    }

    /// Write the cache to `dir` durably.
    pub(crate) fn store(&self, dir: &Path) -> Result<(), LogError> {
        let mut text = String::from(HEADER);
        text.push('\n');
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        replace_file(dir, EPOCHS_FILE, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epochs(entries: &[(i32, i64)]) -> Epochs {
        let mut e = Epochs::default();
        for &(epoch, offset) in entries {
            assert!(e.observe(epoch, offset));
        }
        e
    }

    #[test]
    fn the_end_of_an_epoch_is_where_the_next_one_starts() {
        let e = epochs(&[(1, 0), (3, 10), (4, 25)]);
        assert_eq!(e.end_of(0, 40), None);
        assert_eq!(e.end_of(1, 40), Some((1, 10)));
        assert_eq!(
            e.end_of(2, 40),
            Some((1, 10)),
            "an epoch this log never had"
        );
        assert_eq!(e.end_of(3, 40), Some((3, 25)));
        assert_eq!(
            e.end_of(4, 40),
            Some((4, 40)),
            "the latest ends at the log end"
        );
        assert_eq!(e.end_of(9, 40), Some((4, 40)));
    }

    #[test]
    fn only_newer_epochs_at_later_offsets_are_entries() {
        let mut e = epochs(&[(2, 5)]);
        assert!(!e.observe(2, 9), "same epoch");
        assert!(!e.observe(1, 9), "older epoch");
        assert!(!e.observe(3, 5), "same offset");
        assert!(!e.observe(-1, 9), "unknown epoch");
        assert!(e.observe(3, 9));
        assert_eq!(e.entries().len(), 2);
    }

    #[test]
    fn stored_caches_load_without_entries_past_the_log_end() -> Result<(), LogError> {
        let dir = tempfile::tempdir().map_err(io_err("create", Path::new("tmp")))?;
        assert_eq!(Epochs::load(dir.path(), 100)?, None, "no file yet");
        let e = epochs(&[(1, 0), (2, 30), (5, 60)]);
        e.store(dir.path())?;
        assert_eq!(Epochs::load(dir.path(), 100)?, Some(e));
        assert_eq!(
            Epochs::load(dir.path(), 60)?,
            Some(epochs(&[(1, 0), (2, 30)])),
            "an epoch stored before its first batch, which a crash then lost"
        );
        fs::write(
            dir.path().join(EPOCHS_FILE),
            "switchyard-leader-epochs 1\n1 0\n1 5\n",
        )
        .map_err(io_err("write", dir.path()))?;
        assert_eq!(
            Epochs::load(dir.path(), 100)?,
            None,
            "not increasing: rebuild"
        );
        fs::write(dir.path().join(EPOCHS_FILE), "garbage").map_err(io_err("write", dir.path()))?;
        assert_eq!(Epochs::load(dir.path(), 100)?, None, "unreadable: rebuild");
        Ok(())
    }
}
