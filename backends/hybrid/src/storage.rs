//! Offline access to a stopped node's metadata ([`Storage`]): the metadata is the WAL's (in
//! `<dir>/wal`, read and initialised as the `wal` backend does); the group's log in
//! `<dir>/group` holds no metadata. An initialised node has no group log: it founds the group
//! with its configured peers as a new cluster does, and the WAL continues from the imported
//! state under the epochs the new group's terms give it.

use std::path::Path;

use switchyard_backend_api::{MetadataError, NodeIdentity, StateView, Storage};
use switchyard_backend_wal::storage as wal;

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

fn init(dir: &Path, node: &NodeIdentity, view: &StateView) -> Result<(), MetadataError> {
    if holds(dir)? {
        return Err(MetadataError::Storage(format!(
            "{} already holds hybrid metadata",
            dir.display()
        )));
    }
    wal::init(dir, node, view)
}
