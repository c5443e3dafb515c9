//! The [`MetadataBackend`] trait and the views it hands out.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::applied::ChangeStream;
use crate::command::{MetadataCommand, Outcome};
use crate::error::MetadataError;
use crate::guarantees::Guarantees;
use crate::ids::{LogIndex, NodeId};
use crate::state::MetadataState;

/// A consistent state at one applied log position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateView {
    /// Index of the last entry applied into `state` (0 before anything applied).
    pub applied_index: LogIndex,
    /// The state after applying every entry up to `applied_index`.
    pub state: MetadataState,
}

/// An acknowledged proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposed {
    /// Log position of the command.
    pub index: LogIndex,
    /// The epoch (term) of the leadership that wrote the command into the log.
    pub epoch: u64,
    /// The node that wrote it, as leader of `epoch`.
    pub leader: NodeId,
    /// What apply produced.
    pub outcome: Outcome,
}

/// What a simulated power cut ([`MetadataBackend::power_cut`]) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PowerCut {
    /// Bytes written since the last sync when the power went.
    pub unsynced_bytes: u64,
    /// Of those, how many reached the disk.
    pub kept_bytes: u64,
}

/// A node's role in its backend's cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Role {
    /// Takes writes.
    Leader,
    /// Replicates from the leader; forwards or refuses writes.
    Follower,
    /// Standing for election.
    Candidate,
    /// Receives the log but does not vote.
    Learner,
    /// Not yet part of a cluster it can see (starting, or cut off).
    Unknown,
}

/// Whether the backend can serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Readiness {
    /// Recovered, a leader is known, and the local state can be read.
    Ready,
    /// Not yet; the reason says what it waits for.
    NotReady {
        /// What it waits for.
        reason: String,
    },
}

/// One member of the backend's cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    /// Node id.
    pub id: NodeId,
    /// Cluster address, for backends that talk to peers.
    pub addr: Option<String>,
    /// Whether it votes (or counts toward the write quorum).
    pub voter: bool,
}

/// This node's view of the backend cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This node.
    pub node: NodeId,
    /// This node's role.
    pub role: Role,
    /// The node that takes writes, if known.
    pub leader: Option<NodeId>,
    /// The leadership epoch (Raft term, WAL epoch); 0 where the backend has none.
    pub epoch: u64,
    /// Members, by id.
    pub members: Vec<ClusterMember>,
    /// Whether the node can serve.
    pub readiness: Readiness,
}

impl ClusterView {
    /// Whether [`ClusterView::readiness`] is [`Readiness::Ready`].
    pub fn is_ready(&self) -> bool {
        matches!(self.readiness, Readiness::Ready)
    }
}

/// How far this node's metadata log is written, committed and applied, and (on the leader)
/// how far each follower has it: what the broker exports as the backend's replication
/// metrics, with the same meaning for every backend. Indexes are positions in the backend's
/// own log (a Raft log also holds membership and blank entries, so they may run ahead of
/// [`StateView::applied_index`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationProgress {
    /// The last entry in this node's log.
    pub last_index: u64,
    /// The highest entry this node knows committed.
    pub committed: u64,
    /// The last entry this node applied.
    pub applied: u64,
    /// On the leader: each follower's highest entry known to match the leader's log (durable
    /// there where the backend waits for it). Empty on other nodes and on a lone node.
    pub followers: Vec<(NodeId, u64)>,
}

/// A membership change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MembershipChange {
    /// Add a node (as a learner first where the backend distinguishes) and make it a voter once
    /// it has caught up.
    AddNode {
        /// Node id.
        id: NodeId,
        /// Its cluster address.
        addr: String,
    },
    /// Remove a node.
    RemoveNode {
        /// Node id.
        id: NodeId,
    },
    /// Make a node the one that takes writes (manual failover), bumping the epoch.
    Promote {
        /// Node id.
        id: NodeId,
    },
}

impl MembershipChange {
    /// The node the change is about.
    pub fn node(&self) -> NodeId {
        match self {
            Self::AddNode { id, .. } | Self::RemoveNode { id } | Self::Promote { id } => *id,
        }
    }
}

/// A replicated store of [`MetadataState`].
///
/// Used as `Arc<dyn MetadataBackend>`. Every method returns within the backend's configured
/// deadlines: none waits for consensus without one.
#[async_trait]
pub trait MetadataBackend: Send + Sync + fmt::Debug + 'static {
    /// Registry name (`memory`, `wal`, `raft`, `hybrid`).
    fn name(&self) -> &'static str;

    /// What this backend promises. Equal to its registration's guarantees.
    fn guarantees(&self) -> Guarantees;

    /// Append `command` to the metadata log and apply it.
    ///
    /// ### To ensure correctness:
    /// - Returns `Ok` only once the command is durable as [`Guarantees::durability`] says and
    ///   has been applied on this node: `self.local().applied_index >= proposed.index` holds
    ///   when it returns (read-your-writes on the proposing node).
    /// - Returns `Err(Rejected(r))` when apply refused the command; the log position is used and
    ///   every replica reaches the same verdict.
    /// - On a node that cannot take writes, the command is forwarded to the leader (the result
    ///   is then as above), or the call fails with `NotLeader { leader }`. It is never written
    ///   locally.
    /// - `Timeout` leaves the outcome unknown: the command may still apply. Commands are
    ///   designed so that a retry is safe (compare-and-set on generations and epochs).
    /// - Commands proposed one after another by one caller apply in that order.
    async fn propose(&self, command: MetadataCommand) -> Result<Proposed, MetadataError>;

    /// As [`Self::propose`], but only as the node that writes: never forwarded. For a decision
    /// only the current leader may take — fencing a broker whose session it watched expire —
    /// so that a node that lost the lead cannot have it applied through the next leader.
    ///
    /// ### To ensure correctness:
    /// - On a node that does not lead, fails with `NotLeader { leader }` (or, while no leader
    ///   is known, a retriable error) and writes nothing; the command reaches no other node.
    /// - A deposed leader that wrote it before learning so sees it dropped or never
    ///   committed: `NotLeader` or `Timeout`, as for `propose`.
    /// - Otherwise as `propose`.
    async fn propose_as_leader(&self, command: MetadataCommand) -> Result<Proposed, MetadataError>;

    /// The latest locally applied state. Lock-free and cheap: no I/O, no await, no consensus.
    /// A committed prefix of the log, possibly behind the leader on a follower.
    fn local(&self) -> Arc<StateView>;

    /// A state that reflects every write acknowledged before this call began.
    ///
    /// ### To ensure correctness:
    /// - Backends whose guarantees say [`ReadConsistency::Local`](crate::ReadConsistency::Local)
    ///   return `Unsupported`.
    /// - Otherwise the returned view's `applied_index` is at least the commit index the leader
    ///   confirmed (read-index) after the call started.
    async fn read_linearizable(&self) -> Result<Arc<StateView>, MetadataError>;

    /// Every entry applied on this node from now on, in log order, each exactly once.
    ///
    /// A subscriber that falls too far behind receives
    /// [`StreamError::Lagged`](crate::StreamError::Lagged) and should re-read [`Self::local`].
    fn subscribe(&self) -> ChangeStream;

    /// Wait until this node has applied `index`, then return the local view. Fails with
    /// `Timeout` after `timeout`, or `ShutDown`. Waits on a notification, never by polling.
    async fn wait_applied(
        &self,
        index: LogIndex,
        timeout: Duration,
    ) -> Result<Arc<StateView>, MetadataError>;

    /// This node's cluster view, updated as roles, leaders and readiness change. Watchers are
    /// notified only when the view changes, not on every write.
    fn cluster(&self) -> watch::Receiver<ClusterView>;

    /// This node's replication progress: written, committed and applied indexes, and each
    /// follower's on the leader. Cheap (no consensus, no disk I/O); for monitoring.
    async fn progress(&self) -> ReplicationProgress;

    /// Change cluster membership. Single-node backends return `Unsupported`.
    ///
    /// ### To ensure correctness:
    /// - Returns once the change is committed; the returned view includes it.
    /// - Removing or adding one node at a time never leaves two majorities.
    async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<ClusterView, MetadataError>;

    /// Stop background tasks and close storage. Everything acknowledged stays as durable as
    /// declared. Later calls fail with `ShutDown`. Idempotent.
    async fn shutdown(&self) -> Result<(), MetadataError>;

    /// Fault injection for the conformance suite: stop at once as a power cut would. Of the
    /// bytes written since the last sync, the first `keep_bytes` reach the disk (possibly
    /// tearing a record) and the rest are lost; nothing is synced on the way out. The node
    /// is then as after a crash and is reopened from its data directory.
    ///
    /// ### To ensure correctness:
    /// - Nothing acknowledged may depend on bytes this drops: an acknowledgement follows the
    ///   sync the backend declares.
    ///
    /// Backends without a model of their unsynced bytes return `Unsupported` and leave the
    /// node running (the default).
    fn power_cut(&self, keep_bytes: u64) -> Result<PowerCut, MetadataError> {
        let _ = keep_bytes;
        Err(MetadataError::Unsupported {
            what: "simulating a power cut".into(),
        })
    }

    /// Wait until the node reports [`Readiness::Ready`], or fail with `Timeout`.
    async fn wait_ready(&self, timeout: Duration) -> Result<ClusterView, MetadataError> {
        let mut views = self.cluster();
        let waited = tokio::time::timeout(timeout, views.wait_for(ClusterView::is_ready)).await;
        match waited {
            Ok(Ok(view)) => Ok(view.clone()),
            Ok(Err(_)) => Err(MetadataError::ShutDown),
            Err(_) => Err(MetadataError::Timeout {
                what: "readiness".into(),
                after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }
}
