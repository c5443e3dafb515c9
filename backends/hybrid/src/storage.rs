//! Offline access to a stopped node's metadata ([`Storage`]): the metadata is the WAL's (in
//! `<dir>/wal`, read as the `wal` backend reads it); the group's log in `<dir>/group` holds
//! no metadata. An initialised node's group is founded by its configured peers as a new
//! cluster's is, but in the imported epoch, and its WAL continues from the imported state
//! under the epochs the group's later terms give it.

use std::path::Path;

use switchyard_backend_api::{MetadataError, OpenContext, Storage, StoredState};
use switchyard_backend_wal::cluster_members;
use switchyard_backend_wal::storage as wal;

use crate::store::RocksLog;

/// [`Storage`] of a hybrid node's directory.
pub(crate) const STORAGE: Storage = Storage {
    holds,
    read: wal::read,
    init,
};

fn group_dir(dir: &Path) -> std::path::PathBuf {
    dir.join("group")
}

/// Whether the node holds a WAL or a group log.
fn holds(dir: &Path) -> Result<bool, MetadataError> {
    let group = group_dir(dir);
    let group_log = match std::fs::read_dir(&group) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(MetadataError::Storage(format!("{}: {e}", group.display()))),
    };
    Ok(group_log || wal::holds(dir)?)
}

/// The WAL from the state (its snapshot, no persisted epoch: the group's terms give it the
/// next) and a group founded by the configured nodes with its hard state in the state's
/// epoch, so the group's first election, and the WAL's first epoch, come after it.
fn init(context: &OpenContext, stored: &StoredState) -> Result<(), MetadataError> {
    let dir = &context.data_dir;
    if holds(dir)? {
        return Err(MetadataError::Storage(format!(
            "{} already holds hybrid metadata",
            dir.display()
        )));
    }
    let founders: Vec<(u64, String)> = cluster_members(context)?
        .into_iter()
        .map(|(id, addr)| (id.0, addr))
        .collect();
    let group = group_dir(dir);
    let failed =
        |e: &dyn std::fmt::Display| MetadataError::Storage(format!("{}: {e}", group.display()));
    let db = RocksLog::open_db(&group).map_err(|e| failed(&e))?;
    let mut log = RocksLog::load_from(db).map_err(|e| failed(&e))?;
    log.bootstrap_in_term(&founders, stored.epoch)
        .map_err(|e| failed(&e))?;
    drop(log);
    wal::write_snapshot(dir, stored)
}
