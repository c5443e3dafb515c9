//! The `memory` backend: one node, state in process memory, nothing durable. It is the reference
//! model the conformance suite holds every other backend to, and it follows
//! `docs/WRITING_A_BACKEND.md` step by step.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::applied::{AppliedState, ChangeStream};
use crate::backend::{
    ClusterMember, ClusterView, MembershipChange, MetadataBackend, Proposed, Readiness,
    ReplicationProgress, Role, StateView,
};
use crate::command::MetadataCommand;
use crate::error::MetadataError;
use crate::guarantees::{Durability, Failover, Guarantees, LossWindow, ReadConsistency};
use crate::ids::{LogIndex, NodeId};
use crate::registry::{Admin, OpenContext, OpenFuture, Registration};

/// Registry name.
pub const NAME: &str = "memory";

/// What `memory` promises: nothing survives the process, reads are trivially linearizable.
pub const GUARANTEES: Guarantees = Guarantees {
    durability: Durability::None,
    reads: ReadConsistency::Linearizable,
    failover: Failover::None,
    loss_window: LossWindow::Everything,
    multi_node: false,
};

inventory::submit! {
    Registration {
        name: NAME,
        description: "in-process reference backend; single node, loses everything on restart",
        guarantees: GUARANTEES,
        modes: &[],
        admin: Admin::NONE,
        storage: None,
        open,
    }
}

fn open(context: OpenContext) -> OpenFuture {
    Box::pin(async move {
        if context.node.has_peers() {
            return Err(MetadataError::Config(
                "the memory backend runs a single node; remove the peers".into(),
            ));
        }
        let backend: Arc<dyn MetadataBackend> = Arc::new(MemoryBackend::new(context.node.id));
        Ok(backend)
    })
}

/// The in-memory backend.
#[derive(Debug)]
pub struct MemoryBackend {
    applied: AppliedState,
    cluster: watch::Sender<ClusterView>,
    shut_down: AtomicBool,
}

impl MemoryBackend {
    /// A fresh, empty node; ready at once.
    pub fn new(node: NodeId) -> Self {
        let view = ClusterView {
            node,
            role: Role::Leader,
            leader: Some(node),
            epoch: 0,
            members: vec![ClusterMember {
                id: node,
                addr: None,
                voter: true,
            }],
            readiness: Readiness::Ready,
        };
        Self {
            applied: AppliedState::new(StateView::default()),
            cluster: watch::Sender::new(view),
            shut_down: AtomicBool::new(false),
        }
    }

    fn check_running(&self) -> Result<(), MetadataError> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(MetadataError::ShutDown);
        }
        Ok(())
    }
}

#[async_trait]
impl MetadataBackend for MemoryBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn guarantees(&self) -> Guarantees {
        GUARANTEES
    }

    async fn propose(&self, command: MetadataCommand) -> Result<Proposed, MetadataError> {
        self.check_running()?;
        command.check_size()?;
        let (index, result) = self.applied.apply_next(&command);
        let view = self.cluster.borrow();
        Ok(Proposed {
            index,
            epoch: view.epoch,
            leader: view.node,
            outcome: result?,
        })
    }

    /// The one node always writes itself.
    async fn propose_as_leader(&self, command: MetadataCommand) -> Result<Proposed, MetadataError> {
        self.propose(command).await
    }

    fn local(&self) -> Arc<StateView> {
        self.applied.view()
    }

    async fn read_linearizable(&self) -> Result<Arc<StateView>, MetadataError> {
        self.check_running()?;
        Ok(self.applied.view())
    }

    fn subscribe(&self) -> ChangeStream {
        self.applied.subscribe()
    }

    async fn wait_applied(
        &self,
        index: LogIndex,
        timeout: Duration,
    ) -> Result<Arc<StateView>, MetadataError> {
        self.applied.wait_applied(index, timeout).await
    }

    async fn progress(&self) -> ReplicationProgress {
        // Applying is committing here: one node, nothing replicated, nothing written first.
        let applied = self.applied.applied_index();
        ReplicationProgress {
            last_index: applied,
            committed: applied,
            applied,
            followers: Vec::new(),
        }
    }

    fn cluster(&self) -> watch::Receiver<ClusterView> {
        self.cluster.subscribe()
    }

    async fn change_membership(
        &self,
        _change: MembershipChange,
    ) -> Result<ClusterView, MetadataError> {
        Err(MetadataError::Unsupported {
            what: "membership changes (memory is single-node)".into(),
        })
    }

    async fn shutdown(&self) -> Result<(), MetadataError> {
        self.shut_down.store(true, Ordering::Release);
        self.cluster.send_modify(|view| {
            view.role = Role::Unknown;
            view.readiness = Readiness::NotReady {
                reason: "shut down".into(),
            };
        });
        Ok(())
    }
}
