//! Deliberately broken backends, for testing the checkers: each wraps a real backend and
//! breaks one promise. A fault run over a [`BrokenHarness`] must fail the check that promise
//! is about; a suite that passed them would prove nothing.
//!
//! Never use these outside tests.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use switchyard_backend_api::{
    ChangeStream, ClusterView, Guarantees, LogIndex, MembershipChange, MetadataBackend,
    MetadataCommand, MetadataError, Outcome, PowerCut, Proposed, ReadConsistency,
    ReplicationProgress, StateView,
};
use tokio::sync::watch;

use crate::harness::{BackendHarness, NodeSpec};

/// The promise a variant breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// `propose` acknowledges at once, before the command is replicated, made durable or
    /// even validated; the real proposal runs in the background.
    AckBeforeCommit,
    /// `read_linearizable` returns the local view, which on a follower (or a deposed leader)
    /// may miss acknowledged writes, while the harness declares linearizable reads.
    StaleReads,
}

/// A harness that opens `inner`'s nodes wrapped with `flaw`.
pub struct BrokenHarness<H> {
    inner: H,
    flaw: Flaw,
}

impl<H: BackendHarness> std::fmt::Debug for BrokenHarness<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokenHarness")
            .field("backend", &self.inner.backend())
            .field("flaw", &self.flaw)
            .finish()
    }
}

impl<H: BackendHarness> BrokenHarness<H> {
    /// Wrap `inner`'s nodes with `flaw`.
    pub fn new(inner: H, flaw: Flaw) -> Self {
        Self { inner, flaw }
    }
}

#[async_trait]
impl<H: BackendHarness> BackendHarness for BrokenHarness<H> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn max_nodes(&self) -> usize {
        self.inner.max_nodes()
    }

    fn declared(&self) -> Guarantees {
        let declared = self.inner.declared();
        match self.flaw {
            Flaw::AckBeforeCommit => declared,
            Flaw::StaleReads => Guarantees {
                reads: ReadConsistency::Linearizable,
                ..declared
            },
        }
    }

    async fn open(&self, node: &NodeSpec) -> Result<Arc<dyn MetadataBackend>, MetadataError> {
        let inner = self.inner.open(node).await?;
        Ok(Arc::new(Broken {
            inner,
            flaw: self.flaw,
        }))
    }
}

#[derive(Debug)]
struct Broken {
    inner: Arc<dyn MetadataBackend>,
    flaw: Flaw,
}

#[async_trait]
impl MetadataBackend for Broken {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn guarantees(&self) -> Guarantees {
        self.inner.guarantees()
    }

    async fn propose_as_leader(&self, command: MetadataCommand) -> Result<Proposed, MetadataError> {
        if self.flaw != Flaw::AckBeforeCommit {
            return self.inner.propose_as_leader(command).await;
        }
        self.propose(command).await
    }

    async fn propose(&self, command: MetadataCommand) -> Result<Proposed, MetadataError> {
        if self.flaw != Flaw::AckBeforeCommit {
            return self.inner.propose(command).await;
        }
        let outcome = match &command {
            MetadataCommand::CreateTopics { topics } => Outcome::TopicsCreated {
                results: topics.iter().map(|t| Ok(t.id)).collect(),
            },
            MetadataCommand::DeleteTopics { names } => Outcome::TopicsDeleted {
                results: names
                    .iter()
                    .map(|_| Ok(switchyard_backend_api::TopicId(uuid::Uuid::nil())))
                    .collect(),
            },
            MetadataCommand::CommitOffsets { offsets, .. } => Outcome::OffsetsCommitted {
                count: u32::try_from(offsets.len()).unwrap_or(u32::MAX),
            },
            _ => return self.inner.propose(command).await,
        };
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            // Bounded, so that a crashed node's backend is released soon after.
            let _ = tokio::time::timeout(Duration::from_secs(1), inner.propose(command)).await;
        });
        let view = self.inner.cluster().borrow().clone();
        Ok(Proposed {
            index: self.inner.local().applied_index,
            epoch: view.epoch,
            leader: view.node,
            outcome,
        })
    }

    fn local(&self) -> Arc<StateView> {
        self.inner.local()
    }

    async fn read_linearizable(&self) -> Result<Arc<StateView>, MetadataError> {
        match self.flaw {
            Flaw::StaleReads => Ok(self.inner.local()),
            Flaw::AckBeforeCommit => self.inner.read_linearizable().await,
        }
    }

    fn subscribe(&self) -> ChangeStream {
        self.inner.subscribe()
    }

    async fn wait_applied(
        &self,
        index: LogIndex,
        timeout: Duration,
    ) -> Result<Arc<StateView>, MetadataError> {
        self.inner.wait_applied(index, timeout).await
    }

    fn cluster(&self) -> watch::Receiver<ClusterView> {
        self.inner.cluster()
    }

    async fn progress(&self) -> ReplicationProgress {
        self.inner.progress().await
    }

    async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<ClusterView, MetadataError> {
        self.inner.change_membership(change).await
    }

    async fn shutdown(&self) -> Result<(), MetadataError> {
        self.inner.shutdown().await
    }

    fn power_cut(&self, keep_bytes: u64) -> Result<PowerCut, MetadataError> {
        self.inner.power_cut(keep_bytes)
    }
}
