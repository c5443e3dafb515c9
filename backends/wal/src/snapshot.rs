//! State snapshots: `snapshot-<index, 20 digits>.snap` beside the segments.
//!
//! File: `magic "SWSN" | crc32c: u32 LE (over the rest) | version: u8 | epoch: u64 LE |
//! index: u64 LE | StateView::to_bytes()`. `epoch` and `index` are the position of the last
//! record the state includes, so the log can continue from it. The same bytes travel to a
//! follower that catches up by snapshot.
//!
//! Written atomically: `snapshot.tmp`, fsync, rename, fsync of the directory. Then older
//! snapshots are deleted.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use switchyard_backend_api::{LogIndex, StateView};

use crate::error::WalError;
use crate::record::Position;

const MAGIC: &[u8; 4] = b"SWSN";
const VERSION: u8 = 1;
const HEADER: usize = 4 + 4 + 1 + 8 + 8;
const TMP: &str = "snapshot.tmp";

/// A decoded snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// Position of the last record included.
    pub(crate) position: Position,
    /// The state at that position.
    pub(crate) view: StateView,
}

/// File name of the snapshot covering up to `index`.
pub(crate) fn snapshot_name(index: LogIndex) -> String {
    format!("snapshot-{index:020}.snap")
}

fn parse_snapshot_name(name: &str) -> Option<LogIndex> {
    let digits = name.strip_prefix("snapshot-")?.strip_suffix(".snap")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encode `view` (whose last record has epoch `epoch`) as snapshot file bytes.
pub(crate) fn encode(epoch: u64, view: &StateView) -> Result<Vec<u8>, WalError> {
    let body = view.to_bytes()?;
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0; 4]);
    out.push(VERSION);
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&view.applied_index.to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decode snapshot file bytes; `origin` names them in errors.
pub(crate) fn decode(bytes: &[u8], origin: &str) -> Result<Snapshot, WalError> {
    let bad = |reason: String| WalError::Corrupt {
        file: origin.to_owned(),
        offset: 0,
        reason,
    };
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return Err(bad("not a snapshot (bad magic or too short)".into()));
    }
    let mut crc = [0; 4];
    crc.copy_from_slice(&bytes[4..8]);
    let stored = u32::from_le_bytes(crc);
    let computed = crc32c::crc32c(&bytes[8..]);
    if stored != computed {
        return Err(bad(format!(
            "crc32c mismatch (stored {stored:#010x}, computed {computed:#010x})"
        )));
    }
    if bytes[8] != VERSION {
        return Err(bad(format!("snapshot version {}", bytes[8])));
    }
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[9..17]);
    let epoch = u64::from_le_bytes(word);
    word.copy_from_slice(&bytes[17..25]);
    let index = u64::from_le_bytes(word);
    let view = StateView::from_bytes(&bytes[HEADER..])?;
    if view.applied_index != index {
        return Err(bad(format!(
            "header says index {index}, state says {}",
            view.applied_index
        )));
    }
    Ok(Snapshot {
        position: Position { epoch, index },
        view,
    })
}

/// fsync a directory so a rename or unlink in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WalError::io(dir, e))
}

/// Write `bytes` (from [`encode`]) as the snapshot for `index`, atomically, then delete every
/// other snapshot: the one just written is authoritative (after a follower installs an older
/// snapshot from the primary, its own newer ones belong to a discarded history).
pub(crate) fn write(dir: &Path, index: LogIndex, bytes: &[u8]) -> Result<PathBuf, WalError> {
    let tmp = dir.join(TMP);
    let mut file = File::create(&tmp).map_err(|e| WalError::io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| WalError::io(&tmp, e))?;
    file.sync_all().map_err(|e| WalError::io(&tmp, e))?;
    drop(file);
    let path = dir.join(snapshot_name(index));
    fs::rename(&tmp, &path).map_err(|e| WalError::io(&path, e))?;
    sync_dir(dir)?;
    for (other, old_path) in list(dir)? {
        if other != index {
            fs::remove_file(&old_path).map_err(|e| WalError::io(&old_path, e))?;
        }
    }
    Ok(path)
}

fn list(dir: &Path) -> Result<Vec<(LogIndex, PathBuf)>, WalError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| WalError::io(dir, e))? {
        let entry = entry.map_err(|e| WalError::io(dir, e))?;
        if let Some(index) = entry.file_name().to_str().and_then(parse_snapshot_name) {
            found.push((index, entry.path()));
        }
    }
    found.sort_unstable_by_key(|(index, _)| *index);
    Ok(found)
}

/// The newest snapshot that decodes, with its file bytes. A newer one that does not decode is
/// reported with a warning and skipped; if the log no longer covers the gap, opening the log
/// fails on it.
pub(crate) fn load_latest(dir: &Path) -> Result<Option<(Snapshot, Vec<u8>)>, WalError> {
    for (_, path) in list(dir)?.into_iter().rev() {
        let bytes = fs::read(&path).map_err(|e| WalError::io(&path, e))?;
        match decode(&bytes, &path.display().to_string()) {
            Ok(snapshot) => return Ok(Some((snapshot, bytes))),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "skipping unreadable snapshot")
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_load_and_detect_damage() -> Result<(), WalError> {
        let dir = tempfile::tempdir().map_err(|e| WalError::io(Path::new("tmp"), e))?;
        let view = StateView {
            applied_index: 9,
            ..StateView::default()
        };
        let bytes = encode(2, &view)?;
        write(dir.path(), 9, &bytes)?;
        write(
            dir.path(),
            12,
            &encode(
                2,
                &StateView {
                    applied_index: 12,
                    ..view.clone()
                },
            )?,
        )?;
        let loaded = load_latest(dir.path())?.map(|(s, _)| s.position);
        assert_eq!(
            loaded,
            Some(Position {
                epoch: 2,
                index: 12
            })
        );
        assert!(!dir.path().join(snapshot_name(9)).exists());

        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(decode(&flipped, "x").is_err());
        Ok(())
    }
}
