//! The persisted term: the highest epoch this node has seen and the primary of that epoch.
//!
//! File `epoch` in the WAL directory, a sealed file (`sealed.rs`: checksummed, replaced
//! atomically). A node writes it before it acks anything from a new epoch, and before it
//! writes as primary in one.

use std::path::Path;

use serde::{Deserialize, Serialize};
use switchyard_backend_api::NodeId;

use crate::error::WalError;
use crate::sealed;

const FILE: &str = "epoch";

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
    sealed::load(dir, FILE)
}

/// Persist `term` atomically.
pub(crate) fn store(dir: &Path, term: &Term) -> Result<(), WalError> {
    sealed::store(dir, FILE, term)
}
