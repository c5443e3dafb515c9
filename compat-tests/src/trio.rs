//! [`TrioHarness`]: runs the shared conformance cases against a three-node cluster of a
//! backend that elects its leader.
//!
//! Where a case asks for one node without peers, this harness starts a whole three-node
//! cluster — node 1 in the given data directory, nodes 2 and 3 in sub-directories of it —
//! waits for it to elect a leader, and hands the case a [`Trio`] that proposes and reads
//! through that leader. Every write of every case is therefore committed by a quorum over
//! TCP; a graceful restart or a crash restarts or crashes all three nodes (they elect again
//! from their stores); and before a graceful shutdown the trio checks that both followers
//! reached the leader's state. Nodes the cases open *with* peers (the "lone node of three"
//! case) are opened as they are.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use figment::Figment;
use switchyard_backend_api::{
    ChangeStream, ClusterCredentials, ClusterView, Guarantees, LogIndex, MembershipChange,
    MetadataBackend, MetadataCommand, MetadataError, NodeId, NodeIdentity, OpenContext, Proposed,
    Registration, ReplicationProgress, StateView, find_backend, open_backend,
};
use tokio::sync::watch;

use crate::harness::{BackendHarness, DEADLINE, NodeSpec, reserve_addr};

/// Opens three-node clusters of a registered multi-node backend where the suite asks for one
/// node: with the backend's default configuration and declared guarantees unless told
/// otherwise ([`Self::with_config`], [`Self::declaring`]).
#[derive(Debug, Clone)]
pub struct TrioHarness {
    registration: &'static Registration,
    config: Figment,
    declared: Option<Guarantees>,
}

impl TrioHarness {
    /// Trios of the backend registered as `name` (which must elect its leader by itself).
    ///
    /// # Panics
    /// If no backend of that name is linked: a test setup error, reported with the names that
    /// are available.
    pub fn new(name: &str) -> Self {
        match find_backend(name) {
            Ok(registration) => Self {
                registration,
                config: Figment::new(),
                declared: None,
            },
            Err(e) => panic!("{e}"),
        }
    }

    /// Open every node with this backend table (`[metadata.<name>]`, focused).
    pub fn with_config(mut self, config: Figment) -> Self {
        self.config = config;
        self
    }

    /// The guarantees the nodes must report, when the configuration selects a mode that
    /// declares other than the registration's.
    pub fn declaring(mut self, guarantees: Guarantees) -> Self {
        self.declared = Some(guarantees);
        self
    }

    async fn open_node(
        &self,
        identity: NodeIdentity,
        data_dir: PathBuf,
        credentials: &ClusterCredentials,
    ) -> Result<Arc<dyn MetadataBackend>, MetadataError> {
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| MetadataError::Storage(format!("{}: {e}", data_dir.display())))?;
        let context = OpenContext {
            config: self.config.clone(),
            data_dir,
            node: identity,
            cluster_credentials: Some(credentials.clone()),
        };
        tokio::time::timeout(DEADLINE, open_backend(self.registration.name, context))
            .await
            .map_err(|_| MetadataError::Timeout {
                what: "open to return".into(),
                after_ms: u64::try_from(DEADLINE.as_millis()).unwrap_or(u64::MAX),
            })?
    }
}

fn setup(e: anyhow::Error) -> MetadataError {
    MetadataError::Storage(format!("{e:#}"))
}

/// The identity of node `id` among `peers`.
fn identity(id: u64, peers: &BTreeMap<NodeId, String>) -> NodeIdentity {
    NodeIdentity {
        id: NodeId(id),
        cluster_addr: peers.get(&NodeId(id)).cloned(),
        peers: peers.clone(),
    }
}

#[async_trait]
impl BackendHarness for TrioHarness {
    fn backend(&self) -> &'static str {
        self.registration.name
    }

    fn max_nodes(&self) -> usize {
        5
    }

    fn declared(&self) -> Guarantees {
        self.declared.unwrap_or(self.registration.guarantees)
    }

    async fn open(&self, node: &NodeSpec) -> Result<Arc<dyn MetadataBackend>, MetadataError> {
        if node.identity.has_peers() {
            return self
                .open_node(
                    node.identity.clone(),
                    node.data_dir.clone(),
                    &node.credentials,
                )
                .await;
        }
        let mut peers = BTreeMap::new();
        for id in 1..=3 {
            peers.insert(NodeId(id), reserve_addr().map_err(setup)?);
        }
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
            let data_dir = if id == 1 {
                node.data_dir.clone()
            } else {
                node.data_dir.join(format!("replica-{id}"))
            };
            nodes.push(
                self.open_node(identity(id, &peers), data_dir, &node.credentials)
                    .await?,
            );
        }
        let leader = elected(&nodes).await?;
        let primary = nodes.remove(leader);
        Ok(Arc::new(Trio {
            primary,
            followers: nodes,
            checked: AtomicBool::new(false),
        }))
    }
}

/// Wait until one of `nodes` is a ready leader; its position.
async fn elected(nodes: &[Arc<dyn MetadataBackend>]) -> Result<usize, MetadataError> {
    let mut watches: Vec<_> = nodes.iter().map(|n| n.cluster()).collect();
    let wait = async {
        loop {
            for (position, watch) in watches.iter().enumerate() {
                let view = watch.borrow();
                if view.is_ready() && view.leader == Some(view.node) {
                    return Ok(position);
                }
            }
            let changed = watches.iter_mut().map(|w| Box::pin(w.changed()));
            let (result, _, _) = futures::future::select_all(changed).await;
            result.map_err(|_| MetadataError::ShutDown)?;
        }
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .unwrap_or(Err(MetadataError::Timeout {
            what: "a leader of the trio".into(),
            after_ms: u64::try_from(DEADLINE.as_millis()).unwrap_or(u64::MAX),
        }))
}

/// A three-node cluster seen through its leader.
#[derive(Debug)]
struct Trio {
    primary: Arc<dyn MetadataBackend>,
    followers: Vec<Arc<dyn MetadataBackend>>,
    checked: AtomicBool,
}

impl Trio {
    /// Both followers reach the leader's applied index with the same state.
    async fn check_converged(&self) -> Result<(), MetadataError> {
        let target = self.primary.local();
        for follower in &self.followers {
            let view = follower
                .wait_applied(target.applied_index, DEADLINE)
                .await?;
            if view.state != target.state {
                return Err(MetadataError::Storage(format!(
                    "follower {} diverged from the leader at index {}",
                    follower.cluster().borrow().node,
                    target.applied_index
                )));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl MetadataBackend for Trio {
    fn name(&self) -> &'static str {
        self.primary.name()
    }

    fn guarantees(&self) -> Guarantees {
        self.primary.guarantees()
    }

    async fn propose(&self, command: MetadataCommand) -> Result<Proposed, MetadataError> {
        self.primary.propose(command).await
    }

    async fn propose_as_leader(&self, command: MetadataCommand) -> Result<Proposed, MetadataError> {
        self.primary.propose_as_leader(command).await
    }

    fn local(&self) -> Arc<StateView> {
        self.primary.local()
    }

    async fn read_linearizable(&self) -> Result<Arc<StateView>, MetadataError> {
        self.primary.read_linearizable().await
    }

    fn subscribe(&self) -> ChangeStream {
        self.primary.subscribe()
    }

    async fn wait_applied(
        &self,
        index: LogIndex,
        timeout: Duration,
    ) -> Result<Arc<StateView>, MetadataError> {
        self.primary.wait_applied(index, timeout).await
    }

    fn cluster(&self) -> watch::Receiver<ClusterView> {
        self.primary.cluster()
    }

    async fn progress(&self) -> ReplicationProgress {
        self.primary.progress().await
    }

    async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<ClusterView, MetadataError> {
        self.primary.change_membership(change).await
    }

    async fn shutdown(&self) -> Result<(), MetadataError> {
        if !self.checked.swap(true, Ordering::AcqRel) {
            self.check_converged().await?;
        }
        for follower in &self.followers {
            follower.shutdown().await?;
        }
        self.primary.shutdown().await
    }
}
