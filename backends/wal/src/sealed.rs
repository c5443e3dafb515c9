//! Small files sealed with a checksum and replaced atomically: the persisted term
//! (`term.rs`) and the persisted members (`membership.rs`).
//!
//! Layout: `crc32c: u32 LE | codec-encoded value` (the codec starts with a format-version
//! byte). A write goes to `<name>.tmp`, is fsynced, renamed over `<name>`, and the directory
//! is fsynced, so a crash leaves either the old file or the new one, never a torn one.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use switchyard_backend_api::codec;

use crate::error::WalError;
use crate::snapshot::sync_dir;

/// Read `dir/name`; `None` if it does not exist. A checksum or decoding failure is `Corrupt`.
pub(crate) fn load<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<Option<T>, WalError> {
    let path = dir.join(name);
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

/// Replace `dir/name` with `value`, durably and atomically.
pub(crate) fn store<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), WalError> {
    let body = codec::encode(value)?;
    let mut bytes = crc32c::crc32c(&body).to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp).map_err(|e| WalError::io(&tmp, e))?;
    file.write_all(&bytes).map_err(|e| WalError::io(&tmp, e))?;
    file.sync_all().map_err(|e| WalError::io(&tmp, e))?;
    let path = dir.join(name);
    fs::rename(&tmp, &path).map_err(|e| WalError::io(&path, e))?;
    sync_dir(dir)
}
