//! The backend registry. Each backend crate submits one [`Registration`] with
//! `inventory::submit!`; the broker links the crates it was built with and opens a backend by
//! name. A registration carries everything the broker needs to know about a backend — how to
//! open it, what it promises, the modes it runs in and its command-line administration — so
//! the broker never names one.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use figment::Figment;

use crate::auth::{ClusterCredentials, MAKE_A_SECRET};
use crate::backend::{ClusterView, MembershipChange, MetadataBackend, StateView};
use crate::error::MetadataError;
use crate::guarantees::Guarantees;
use crate::ids::NodeId;

/// The future a backend constructor returns.
pub type OpenFuture =
    Pin<Box<dyn Future<Output = Result<Arc<dyn MetadataBackend>, MetadataError>> + Send>>;

/// The future an administrative request returns.
pub type AdminFuture<T> = Pin<Box<dyn Future<Output = Result<T, MetadataError>> + Send>>;

/// Who this node is in the backend's cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// This node's id.
    pub id: NodeId,
    /// Address this node listens on for backend traffic, if it talks to peers.
    pub cluster_addr: Option<String>,
    /// Every node of the cluster (this one included, when listed) → its cluster address.
    /// Empty for a single node.
    pub peers: BTreeMap<NodeId, String>,
}

impl NodeIdentity {
    /// A node with no peers.
    pub fn single(id: NodeId) -> Self {
        Self {
            id,
            cluster_addr: None,
            peers: BTreeMap::new(),
        }
    }

    /// Whether other nodes are configured besides this one.
    pub fn has_peers(&self) -> bool {
        self.peers.keys().any(|id| *id != self.id)
    }
}

/// Everything a constructor receives.
#[derive(Debug, Clone)]
pub struct OpenContext {
    /// The backend's own configuration table (`metadata.<name>`), focused so that its keys are
    /// at the top level. Extract with defaults; reject keys you do not know.
    pub config: Figment,
    /// Directory the backend owns; created by the caller.
    pub data_dir: PathBuf,
    /// This node.
    pub node: NodeIdentity,
    /// What every connection between nodes proves (`crate::auth`: the cluster secret, and
    /// TLS when configured); required by a node that has peers or a cluster address.
    pub cluster_credentials: Option<ClusterCredentials>,
}

impl OpenContext {
    /// The cluster credentials, or a `Config` error saying how to make a secret: for a backend
    /// about to open a cluster port or dial a peer.
    pub fn require_credentials(&self) -> Result<ClusterCredentials, MetadataError> {
        self.cluster_credentials.clone().ok_or_else(|| {
            MetadataError::Config(format!(
                "node {} talks to other nodes, which needs a cluster secret: {MAKE_A_SECRET}",
                self.node.id
            ))
        })
    }
}

/// What an administrative request from the command line receives: the configuration of a
/// cluster it is not part of.
#[derive(Debug, Clone)]
pub struct AdminContext {
    /// The backend's own configuration table, as [`OpenContext::config`].
    pub config: Figment,
    /// Every node of the cluster → its cluster address.
    pub peers: BTreeMap<NodeId, String>,
    /// The cluster's secret (and TLS identity, when cluster TLS is on): the command proves it
    /// to every node it asks.
    pub credentials: ClusterCredentials,
}

impl AdminContext {
    /// The peers in the order a membership change asks them: `target` last, because it is not
    /// a member yet or is about to leave.
    pub fn peers_asking_last(&self, target: NodeId) -> Vec<(u64, String)> {
        let mut nodes: Vec<(u64, String)> = self
            .peers
            .iter()
            .filter(|(id, _)| **id != target)
            .map(|(id, addr)| (id.0, addr.clone()))
            .collect();
        nodes.extend(self.peers.get(&target).map(|addr| (target.0, addr.clone())));
        nodes
    }

    /// The cluster address of `node`, or a configuration error naming it.
    pub fn address_of(&self, node: NodeId) -> Result<&str, MetadataError> {
        self.peers.get(&node).map(String::as_str).ok_or_else(|| {
            MetadataError::Config(format!("node {node} is not in the configured peers"))
        })
    }
}

/// The cluster administration a backend offers from the command line (`switchyard cluster`).
/// An operation left `None` is refused as unsupported.
#[derive(Clone, Copy)]
pub struct Admin {
    /// `switchyard cluster promote N`: make node N take metadata writes (manual failover);
    /// returns the new epoch.
    pub promote: Option<fn(AdminContext, NodeId) -> AdminFuture<u64>>,
    /// `switchyard cluster add-node` / `remove-node`: change the membership online; returns
    /// the leader's view once it shows the committed membership.
    pub change_membership: Option<fn(AdminContext, MembershipChange) -> AdminFuture<ClusterView>>,
}

impl Admin {
    /// No administration from the command line.
    pub const NONE: Self = Self {
        promote: None,
        change_membership: None,
    };

    /// The operations offered, by their `switchyard cluster` names.
    pub fn operations(&self) -> Vec<&'static str> {
        let mut operations = Vec::new();
        if self.promote.is_some() {
            operations.push("promote");
        }
        if self.change_membership.is_some() {
            operations.extend(["add-node", "remove-node"]);
        }
        operations
    }
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.operations()).finish()
    }
}

/// What a stopped node's data directory holds: the state it recovers on open and the epoch
/// (Raft term, WAL epoch) of the last entry that state includes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredState {
    /// The state and the metadata index it was applied up to.
    pub view: StateView,
    /// The epoch of the last entry `view` includes; 0 before any.
    pub epoch: u64,
}

/// Offline access to a node's metadata in its data directory, for `switchyard metadata
/// export` and `import`: a backend switch moves the state between two backends' formats. The
/// node is stopped; the functions block (call them off an async runtime's workers).
///
/// ### To ensure correctness:
/// - `read` returns exactly the state the backend's `open` would recover from `dir` and apply
///   (a committed prefix of the cluster's log), never an entry `open` would discard.
/// - After `init`, `read` returns the given state (the epoch too), and `open` with the same
///   context recovers the given view without any other node's help. A cluster whose every
///   node was initialised from the same state elects a leader as a new cluster would, in a
///   later epoch (or, for a static primary, the same); its entries follow
///   `view.applied_index`.
/// - `init` refuses a directory for which `holds` is true, and writes nothing then.
#[derive(Clone, Copy)]
pub struct Storage {
    /// Whether `dir` (the directory [`OpenContext::data_dir`] names) holds this backend's
    /// metadata.
    pub holds: fn(&Path) -> Result<bool, MetadataError>,
    /// The state a stopped node would recover from `dir`.
    pub read: fn(&Path) -> Result<StoredState, MetadataError>,
    /// Initialise the context's data directory so that its node (and, when the same state is
    /// given to each, every node of its cluster) opens at that state, with the context's
    /// configuration and peers.
    pub init: fn(&OpenContext, &StoredState) -> Result<(), MetadataError>,
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Storage")
    }
}

/// One way to run a backend that promises something different from its default: a setting of
/// its own configuration table and the guarantees the backend declares under it. The
/// conformance run checks each mode against its own declaration.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    /// Short name, shown as `backend (mode)`.
    pub name: &'static str,
    /// The keys of the backend's table that select the mode, with their values.
    pub config: &'static [(&'static str, &'static str)],
    /// What the backend promises in this mode.
    pub guarantees: Guarantees,
}

/// A backend's entry in the registry.
pub struct Registration {
    /// Registry name; also the `--metadata-backend` value and the feature suffix.
    pub name: &'static str,
    /// One line for `switchyard backends`.
    pub description: &'static str,
    /// Declared guarantees of the default configuration; the opened backend reports the same.
    pub guarantees: Guarantees,
    /// Every mode the backend runs in, the default first; empty when it has only one.
    pub modes: &'static [Mode],
    /// Administration from the command line.
    pub admin: Admin,
    /// Offline access to a stopped node's metadata; `None` for a backend that keeps none on
    /// disk.
    pub storage: Option<Storage>,
    /// Open (or create) the backend. Returns without waiting for any quorum: readiness is
    /// observed through [`MetadataBackend::cluster`].
    pub open: fn(OpenContext) -> OpenFuture,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("name", &self.name)
            .field("guarantees", &self.guarantees)
            .field("modes", &self.modes)
            .field("admin", &self.admin)
            .field("storage", &self.storage.is_some())
            .finish_non_exhaustive()
    }
}

inventory::collect!(Registration);

/// Every backend linked into this binary, by name.
pub fn available_backends() -> Vec<&'static Registration> {
    let mut all: Vec<_> = inventory::iter::<Registration>.into_iter().collect();
    all.sort_by_key(|r| r.name);
    all
}

/// The registration named `name`, or `UnknownBackend` listing the available names.
pub fn find_backend(name: &str) -> Result<&'static Registration, MetadataError> {
    let all = available_backends();
    all.iter()
        .find(|r| r.name == name)
        .copied()
        .ok_or_else(|| MetadataError::UnknownBackend {
            name: name.to_owned(),
            available: all.iter().map(|r| r.name.to_owned()).collect(),
        })
}

/// Open the backend named `name`.
pub async fn open_backend(
    name: &str,
    context: OpenContext,
) -> Result<Arc<dyn MetadataBackend>, MetadataError> {
    let registration = find_backend(name)?;
    (registration.open)(context).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_name_lists_what_is_available() {
        let err = find_backend("nope").err();
        let Some(MetadataError::UnknownBackend { name, available }) = err else {
            panic!("expected UnknownBackend, got {err:?}");
        };
        assert_eq!(name, "nope");
        assert!(available.contains(&"memory".to_owned()));
        let message = MetadataError::UnknownBackend { name, available }.to_string();
        assert!(message.contains("available: memory"), "{message}");
    }
}
