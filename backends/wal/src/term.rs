//! The persisted term: the highest epoch this node has seen and the primary of that epoch.
//!
//! File `epoch` in the WAL directory: `crc32c: u32 LE | codec-encoded Term`, replaced
//! atomically (temp file, fsync, rename, directory fsync). A node writes it before it acks
//! anything from a new epoch, and before it writes as primary in one.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use switchyard_backend_api::{NodeId, codec};

use crate::error::WalError;
use crate::snapshot::sync_dir;

const FILE: &str = "epoch";
const TMP: &str = "epoch.tmp";

/// An epoch and who is primary in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Term {
    /// The epoch; records written in it carry it.
    pub(crate) epoch: u64,
    /// The node that takes writes in this epoch.
    pub(crate) primary: NodeId,
}

/// The persisted term, if one was ever written.
pub(crate) fn load(dir: &Path) -> Result<Option<Term>, WalError> {
    let path = dir.join(FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(WalError::io(&path, e)),
    };
    let corrupt = |reason: String| WalError::Corrupt {
        file: path.display().to_string(),
        offset: 0,
        reason,
    };
    let Some((crc, body)) = bytes.split_first_chunk::<4>() else {
        return Err(corrupt("shorter than its checksum".into()));
    };
    if u32::from_le_bytes(*crc) != crc32c::crc32c(body) {
        return Err(corrupt("crc32c mismatch".into()));
    }
    codec::decode(body)
        .map(Some)
        .map_err(|e| corrupt(e.to_string()))
}

/// Persist `term` atomically.
pub(crate) fn store(dir: &Path, term: &Term) -> Result<(), WalError> {
    let body = codec::encode(term)?;
    let mut bytes = crc32c::crc32c(&body).to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let tmp = dir.join(TMP);
    let mut file = File::create(&tmp).map_err(|e| WalError::io(&tmp, e))?;
    file.write_all(&bytes).map_err(|e| WalError::io(&tmp, e))?;
    file.sync_all().map_err(|e| WalError::io(&tmp, e))?;
    let path = dir.join(FILE);
    fs::rename(&tmp, &path).map_err(|e| WalError::io(&path, e))?;
    sync_dir(dir)
}
