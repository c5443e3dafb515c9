//! The high-watermark checkpoint of a partition: the file `high-watermark` in its directory,
//! rewritten (temp file, fsync, rename, directory fsync) every
//! `replica.high.watermark.checkpoint.interval.ms` when the value moved, and on a clean
//! shutdown. After a restart a replica starts from it (bounded by its log), so consumers and
//! `ListOffsets` do not fall back to the log start until the followers fetch again, and a
//! follower that must cut its log without an epoch to go by cuts no further than what was
//! committed.
//!
//! The value on disk is never above the live high watermark at the time it was written, so it
//! only ever understates what is committed. A missing or unreadable file means "unknown".

use std::fs;
use std::path::Path;

use super::error::LogError;
use super::segment::replace_file;

/// The file name, in the partition directory.
pub const HIGH_WATERMARK_FILE: &str = "high-watermark";
const HEADER: &str = "switchyard-high-watermark 1";

/// The checkpointed high watermark in `dir`, if there is a readable one.
pub fn load(dir: &Path) -> Option<i64> {
    let text = fs::read_to_string(dir.join(HIGH_WATERMARK_FILE)).ok()?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return None;
    }
    let value = lines.next()?.parse().ok()?;
    lines.next().is_none().then_some(value)
}

/// Write `high_watermark` as the checkpoint of `dir`, durably.
pub fn store(dir: &Path, high_watermark: i64) -> Result<(), LogError> {
    replace_file(
        dir,
        HIGH_WATERMARK_FILE,
        format!("{HEADER}\n{high_watermark}\n").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::io_err;

    #[test]
    fn a_stored_checkpoint_loads_and_a_bad_one_is_unknown() -> Result<(), LogError> {
        let dir = tempfile::tempdir().map_err(io_err("create", Path::new("tmp")))?;
        assert_eq!(load(dir.path()), None, "no file yet");
        store(dir.path(), 1234)?;
        assert_eq!(load(dir.path()), Some(1234));
        store(dir.path(), 1300)?;
        assert_eq!(load(dir.path()), Some(1300));
        for bad in [
            "",
            "switchyard-high-watermark 1\n",
            "other 1\n5\n",
            "switchyard-high-watermark 1\nx\n",
        ] {
            fs::write(dir.path().join(HIGH_WATERMARK_FILE), bad)
                .map_err(io_err("write", dir.path()))?;
            assert_eq!(load(dir.path()), None, "{bad:?}");
        }
        Ok(())
    }
}
