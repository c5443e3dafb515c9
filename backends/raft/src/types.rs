//! openraft's type configuration for this backend: each log entry carries the
//! [`Proposals`] one group commit gathered, and answers with each one's position and verdict.

use std::io::Cursor;

use serde::{Deserialize, Serialize};
use switchyard_backend_api::{LogIndex, MetadataCommand, Outcome, Rejection};

/// The payload of one normal log entry: independent proposals that arrived together, applied
/// in order. Each takes its own metadata log position and gets its own verdict; a rejected one
/// changes nothing and does not affect the others (unlike [`MetadataCommand::Batch`], which is
/// all-or-nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Proposals(pub(crate) Vec<MetadataCommand>);

/// What applying one log entry answers: per proposal, in order, its metadata log position and
/// apply's verdict. Empty for blank and membership entries.
pub(crate) type Applied = Vec<(LogIndex, Result<Outcome, Rejection>)>;

/// A committed group entry: the leadership that wrote it (its term and leader) and what
/// applying it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Written {
    /// Term of the leader that appended the entry.
    pub(crate) term: u64,
    /// That leader.
    pub(crate) leader: u64,
    /// Per proposal, its position and verdict.
    pub(crate) applied: Applied,
}

impl Written {
    /// From openraft's answer to a client write.
    pub(crate) fn from_response(response: openraft::raft::ClientWriteResponse<TypeConfig>) -> Self {
        Self {
            term: response.log_id.leader_id.term,
            leader: response.log_id.leader_id.node_id,
            applied: response.data,
        }
    }
}

/// A member as openraft stores it in the membership config: its cluster address.
pub(crate) type Node = openraft::BasicNode;

openraft::declare_raft_types!(
    /// The openraft type configuration of the `raft` backend.
    pub(crate) TypeConfig:
        D = Proposals,
        R = Applied,
        NodeId = u64,
        Node = Node,
        SnapshotData = Cursor<Vec<u8>>,
);

/// openraft's handle, for this configuration.
pub(crate) type Raft = openraft::Raft<TypeConfig>;
