//! [`Guarantees`]: what a backend promises, in a form the conformance suite checks and
//! `switchyard backends` prints.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What holds once `propose` has returned `Ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Durability {
    /// Nothing survives a restart.
    None,
    /// The entry is fsynced on the node that acknowledged it.
    LocalFsync,
    /// The entry is fsynced on a majority of the voters.
    QuorumFsync,
}

/// Which reads the backend serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ReadConsistency {
    /// Only local reads: a committed prefix, possibly stale on a follower.
    Local,
    /// Local reads, and linearizable reads through
    /// [`MetadataBackend::read_linearizable`](crate::MetadataBackend::read_linearizable).
    Linearizable,
}

/// How the backend survives the loss of the node that takes writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Failover {
    /// Single node: there is nothing to fail over to.
    None,
    /// An operator promotes a follower.
    Manual,
    /// The cluster elects a new leader by itself.
    Automatic,
}

/// Which acknowledged writes can be lost, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LossWindow {
    /// Everything is lost when the process stops.
    Everything,
    /// Writes acknowledged but not yet replicated are lost if the acknowledging node's disk is
    /// lost or it is replaced by a failover.
    UnreplicatedTail,
    /// No acknowledged write is lost while a majority of voters keeps its disk.
    Nothing,
}

/// A backend's declared guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guarantees {
    /// Durability on acknowledgement.
    pub durability: Durability,
    /// Read consistency offered.
    pub reads: ReadConsistency,
    /// Failover mode.
    pub failover: Failover,
    /// Loss window.
    pub loss_window: LossWindow,
    /// Whether the backend can run more than one node.
    pub multi_node: bool,
}

impl Guarantees {
    /// Whether an acknowledged write survives a restart (graceful or crash) of the node.
    pub fn survives_restart(&self) -> bool {
        !matches!(self.durability, Durability::None)
    }

    /// Whether `read_linearizable` is offered.
    pub fn linearizable_reads(&self) -> bool {
        matches!(self.reads, ReadConsistency::Linearizable)
    }

    /// How much is promised, for ordering declarations: greater is stronger, compared by
    /// durability, then read consistency, then failover, then the loss window.
    pub fn strength(&self) -> impl Ord + use<> {
        let durability = match self.durability {
            Durability::None => 0,
            Durability::LocalFsync => 1,
            Durability::QuorumFsync => 2,
        };
        let reads = match self.reads {
            ReadConsistency::Local => 0,
            ReadConsistency::Linearizable => 1,
        };
        let failover = match self.failover {
            Failover::None => 0,
            Failover::Manual => 1,
            Failover::Automatic => 2,
        };
        let loss = match self.loss_window {
            LossWindow::Everything => 0,
            LossWindow::UnreplicatedTail => 1,
            LossWindow::Nothing => 2,
        };
        (durability, reads, failover, loss)
    }
}

impl fmt::Display for Guarantees {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let durability = match self.durability {
            Durability::None => "none",
            Durability::LocalFsync => "local-fsync",
            Durability::QuorumFsync => "quorum-fsync",
        };
        let reads = match self.reads {
            ReadConsistency::Local => "local",
            ReadConsistency::Linearizable => "local+linearizable",
        };
        let failover = match self.failover {
            Failover::None => "none",
            Failover::Manual => "manual",
            Failover::Automatic => "automatic",
        };
        let loss = match self.loss_window {
            LossWindow::Everything => "everything-on-restart",
            LossWindow::UnreplicatedTail => "unreplicated-tail",
            LossWindow::Nothing => "nothing",
        };
        let nodes = if self.multi_node { "multi" } else { "single" };
        write!(
            f,
            "durability={durability} reads={reads} failover={failover} loss-window={loss} nodes={nodes}"
        )
    }
}
