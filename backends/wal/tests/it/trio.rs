//! [`TrioHarness`]: runs the shared conformance cases against a three-node cluster.
//!
//! The shared cases open their nodes with `TestCluster::single`, i.e. one node without
//! peers. For such a node this harness starts a whole three-node cluster instead — the
//! node asked for is node 1, the primary, in the given data directory; nodes 2 and 3 live
//! in sub-directories of it — and hands the cases a [`Trio`] that proposes and reads
//! through the primary. Every write of every case therefore goes through replication
//! (and in `sync` mode waits for a follower's fsync); a graceful restart or a crash
//! restarts or crashes all three nodes; and before a graceful shutdown the trio checks that
//! both followers reached the primary's state. Nodes the cases open *with* peers (the
//! "lone node of three" case) are opened as they are.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use figment::Figment;
use switchyard_backend_api::{
    ChangeStream, ClusterView, Guarantees, LogIndex, MembershipChange, MetadataBackend,
    MetadataCommand, MetadataError, NodeId, NodeIdentity, OpenContext, Proposed, StateView,
    open_backend,
};
use switchyard_compat_tests::{BackendHarness, DEADLINE, NodeSpec};
use tokio::sync::watch;

/// Opens three-node `wal` clusters where the suite asks for one node.
#[derive(Debug, Clone)]
pub(crate) struct TrioHarness {
    config: Figment,
    declared: Guarantees,
}

impl TrioHarness {
    /// A harness with this `[metadata.wal]` table, whose nodes declare `declared`.
    pub(crate) fn new(config: Figment, declared: Guarantees) -> Self {
        Self { config, declared }
    }

    async fn open_one(
        &self,
        identity: NodeIdentity,
        data_dir: std::path::PathBuf,
    ) -> Result<Arc<dyn MetadataBackend>, MetadataError> {
        open_backend(
            "wal",
            OpenContext {
                config: self.config.clone(),
                data_dir,
                node: identity,
            },
        )
        .await
    }
}

fn reserve_addr() -> Result<String, MetadataError> {
    switchyard_compat_tests::reserve_addr().map_err(|e| MetadataError::Network(format!("{e:#}")))
}

#[async_trait]
impl BackendHarness for TrioHarness {
    fn backend(&self) -> &'static str {
        "wal"
    }

    fn max_nodes(&self) -> usize {
        5
    }

    fn declared(&self) -> Guarantees {
        self.declared
    }

    async fn open(&self, node: &NodeSpec) -> Result<Arc<dyn MetadataBackend>, MetadataError> {
        if node.identity.has_peers() {
            return self
                .open_one(node.identity.clone(), node.data_dir.clone())
                .await;
        }
        let mut peers = BTreeMap::new();
        for id in 1..=3 {
            peers.insert(NodeId(id), reserve_addr()?);
        }
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
            let data_dir = if id == 1 {
                node.data_dir.clone()
            } else {
                node.data_dir.join(format!("replica-{id}"))
            };
            std::fs::create_dir_all(&data_dir)
                .map_err(|e| MetadataError::Storage(e.to_string()))?;
            let identity = NodeIdentity {
                id: NodeId(id),
                cluster_addr: peers.get(&NodeId(id)).cloned(),
                peers: peers.clone(),
            };
            nodes.push(self.open_one(identity, data_dir).await?);
        }
        let primary = nodes.remove(0);
        Ok(Arc::new(Trio {
            primary,
            followers: nodes,
            checked: AtomicBool::new(false),
        }))
    }
}

/// A three-node cluster seen through its primary.
#[derive(Debug)]
pub(crate) struct Trio {
    primary: Arc<dyn MetadataBackend>,
    followers: Vec<Arc<dyn MetadataBackend>>,
    checked: AtomicBool,
}

impl Trio {
    /// Both followers reach the primary's applied index with the same state.
    async fn check_converged(&self) -> Result<(), MetadataError> {
        let target = self.primary.local();
        for follower in &self.followers {
            let view = follower
                .wait_applied(target.applied_index, DEADLINE)
                .await?;
            if view.state != target.state {
                return Err(MetadataError::Storage(format!(
                    "follower {} diverged from the primary at index {}",
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
