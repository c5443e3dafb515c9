//! openraft's type configuration for this backend: the log carries [`MetadataCommand`]s and
//! answers with apply's verdict.

use std::io::Cursor;

use switchyard_backend_api::{MetadataCommand, Outcome, Rejection};

/// What applying one log entry answers: apply's verdict for a metadata command, `None` for
/// blank and membership entries.
pub(crate) type Applied = Option<Result<Outcome, Rejection>>;

/// A member as openraft stores it in the membership config: its cluster address.
pub(crate) type Node = openraft::BasicNode;

openraft::declare_raft_types!(
    /// The openraft type configuration of the `raft` backend.
    pub(crate) TypeConfig:
        D = MetadataCommand,
        R = Applied,
        NodeId = u64,
        Node = Node,
        SnapshotData = Cursor<Vec<u8>>,
);

/// openraft's handle, for this configuration.
pub(crate) type Raft = openraft::Raft<TypeConfig>;
