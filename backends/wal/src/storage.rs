//! Offline access to a stopped node's log ([`Storage`]): the state it would recover, and a
//! fresh log that starts from a given state (a backend switch, a restore).
//!
//! An initialised node holds one snapshot, `snapshot-<index>.snap` at the state's applied
//! index and epoch, and the persisted epoch: the same epoch, with the configured primary. No
//! segment (the log is created empty behind the snapshot on open) and no members adopted
//! online (the configured peers are the members). The primary writes on in that epoch, as
//! after a restart; a promotion starts the next.

use std::path::Path;

use switchyard_backend_api::{
    AppliedState, MetadataError, NodeId, OpenContext, Storage, StoredState,
};

use crate::backend::{cluster_members, recover};
use crate::config::WalConfig;
use crate::snapshot;
use crate::term::{self, Term};

/// [`Storage`] of the log in `<dir>/wal`.
pub const STORAGE: Storage = Storage { holds, read, init };

/// The log's directory within the backend's directory.
pub(crate) fn log_dir(dir: &Path) -> std::path::PathBuf {
    dir.join("wal")
}

/// Whether `<dir>/wal` holds anything: a snapshot, a segment, an epoch or members.
pub fn holds(dir: &Path) -> Result<bool, MetadataError> {
    let dir = log_dir(dir);
    match std::fs::read_dir(&dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(MetadataError::Storage(format!("{}: {e}", dir.display()))),
    }
}

/// What `open` recovers from `<dir>/wal`: the newest snapshot with every record after it
/// applied (the records a node applies when it opens), and the epoch of the last of them.
/// Recovery repairs the directory as `open` would (a torn tail is cut off).
pub fn read(dir: &Path) -> Result<StoredState, MetadataError> {
    if !holds(dir)? {
        return Err(MetadataError::Storage(format!(
            "{} holds no write-ahead log",
            log_dir(dir).display()
        )));
    }
    let (snapshot, recovered) = recover(&log_dir(dir), WalConfig::default().segment_bytes)?;
    let mut epoch = snapshot.as_ref().map_or(0, |s| s.position.epoch);
    let applied = AppliedState::new(snapshot.map(|s| s.view).unwrap_or_default());
    for record in recovered.tail {
        epoch = record.epoch;
        match record.decode_command()? {
            None => applied.skip_to(record.index),
            // A rejected command uses its position and changes nothing, as when applied on
            // open.
            Some(command) => drop(applied.apply(record.index, &command)?),
        }
    }
    Ok(StoredState {
        view: applied.view().as_ref().clone(),
        epoch,
    })
}

/// Write the state as the only snapshot of a new `<dir>/wal`, and its epoch as the persisted
/// one with the configured primary (`primary`, else the lowest node id) as its primary.
pub fn init(context: &OpenContext, stored: &StoredState) -> Result<(), MetadataError> {
    let members = cluster_members(context)?;
    let primary = match WalConfig::from_figment(&context.config)?.primary {
        Some(id) => NodeId(id),
        None => members.keys().next().copied().unwrap_or(context.node.id),
    };
    write_snapshot(&context.data_dir, stored)?;
    let term = Term {
        epoch: stored.epoch,
        primary,
    };
    term::store(&log_dir(&context.data_dir), &term)?;
    Ok(())
}

/// Create `<dir>/wal` holding only `stored` as its snapshot (at its applied index, with its
/// epoch), for a backend that persists the epoch itself.
pub fn write_snapshot(dir: &Path, stored: &StoredState) -> Result<(), MetadataError> {
    if holds(dir)? {
        return Err(MetadataError::Storage(format!(
            "{} already holds a write-ahead log",
            log_dir(dir).display()
        )));
    }
    let dir = log_dir(dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| MetadataError::Storage(format!("{}: {e}", dir.display())))?;
    let bytes = snapshot::encode(stored.epoch, &stored.view)?;
    snapshot::write(&dir, stored.view.applied_index, &bytes)?;
    Ok(())
}
