//! [`Node`]: what every task of one running backend shares.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use switchyard_backend_api::tls::ClusterStream;
use switchyard_backend_api::{
    AppliedState, ClusterCredentials, ClusterMember, ClusterView, MetadataCommand, MetadataError,
    NodeId, Proposed, Readiness, Role,
};
use tokio::sync::{Mutex, MutexGuard, mpsc, oneshot, watch};

use crate::applier::ApplyMsg;
use crate::config::WalConfig;
use crate::log::Shape;
use crate::progress::Progress;
use crate::replication::Control;
use crate::tail::Tail;
use crate::term::{self, Term};
use crate::writer::Request;

/// The nodes of the cluster as this node counts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Members {
    /// Every node → its cluster address (this one included).
    pub(crate) addrs: BTreeMap<NodeId, String>,
    /// The nodes that count toward a majority; the others are streamed to only.
    pub(crate) voters: BTreeSet<NodeId>,
}

impl Members {
    /// Every node a voter.
    pub(crate) fn voting(addrs: BTreeMap<NodeId, String>) -> Self {
        let voters = addrs.keys().copied().collect();
        Self { addrs, voters }
    }

    /// The voters and their addresses.
    pub(crate) fn voter_addrs(&self) -> BTreeMap<NodeId, String> {
        self.addrs
            .iter()
            .filter(|(id, _)| self.voters.contains(id))
            .map(|(id, addr)| (*id, addr.clone()))
            .collect()
    }

    /// Voters that make a majority.
    pub(crate) fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The cluster view's member list.
    fn view(&self) -> Vec<ClusterMember> {
        self.addrs
            .iter()
            .map(|(id, addr)| ClusterMember {
                id: *id,
                addr: (!addr.is_empty()).then(|| addr.clone()),
                voter: self.voters.contains(id),
            })
            .collect()
    }
}

/// Shared state of one node.
#[derive(Debug)]
pub(crate) struct Node {
    /// This node.
    pub(crate) me: NodeId,
    /// Configuration.
    pub(crate) config: WalConfig,
    /// The WAL directory.
    pub(crate) dir: PathBuf,
    /// The applied state.
    pub(crate) applied: Arc<AppliedState>,
    /// The writer thread's queue.
    pub(crate) writer: mpsc::UnboundedSender<Request>,
    /// The applier's queue.
    pub(crate) applier: mpsc::UnboundedSender<ApplyMsg>,
    /// The shape of the log written to its files, perhaps not durable yet.
    written: watch::Receiver<Arc<Shape>>,
    /// The durable log shape.
    pub(crate) durable: watch::Receiver<Arc<Shape>>,
    /// The records appended most recently as primary.
    pub(crate) tail: Arc<Tail>,
    /// Commit tracking.
    pub(crate) progress: Arc<Progress>,
    /// The role controller's queue.
    pub(crate) control: mpsc::UnboundedSender<Control>,
    /// With roles driven from outside: where accepted extension connections go.
    pub(crate) external: Option<mpsc::UnboundedSender<(NodeId, ClusterStream)>>,
    /// The cluster credentials; `None` only for a node that neither listens nor dials.
    credentials: Option<ClusterCredentials>,
    /// Held while a membership change runs on this primary: one change at a time.
    pub(crate) changing: Mutex<()>,
    members: watch::Sender<Arc<Members>>,
    term: Mutex<Term>,
    term_view: watch::Sender<Term>,
    cluster: watch::Sender<ClusterView>,
    shut_down: AtomicBool,
}

/// The parts [`Node::new`] needs.
#[derive(Debug)]
pub(crate) struct NodeParts {
    pub(crate) me: NodeId,
    pub(crate) config: WalConfig,
    pub(crate) members: Members,
    pub(crate) dir: PathBuf,
    pub(crate) applied: Arc<AppliedState>,
    pub(crate) writer: mpsc::UnboundedSender<Request>,
    pub(crate) applier: mpsc::UnboundedSender<ApplyMsg>,
    pub(crate) written: watch::Receiver<Arc<Shape>>,
    pub(crate) durable: watch::Receiver<Arc<Shape>>,
    pub(crate) tail: Arc<Tail>,
    pub(crate) progress: Arc<Progress>,
    pub(crate) control: mpsc::UnboundedSender<Control>,
    pub(crate) external: Option<mpsc::UnboundedSender<(NodeId, ClusterStream)>>,
    pub(crate) credentials: Option<ClusterCredentials>,
    pub(crate) term: Term,
}

impl Node {
    pub(crate) fn new(parts: NodeParts) -> Self {
        let view = ClusterView {
            node: parts.me,
            role: Role::Unknown,
            leader: None,
            epoch: parts.term.epoch,
            members: parts.members.view(),
            readiness: Readiness::NotReady {
                reason: "starting".into(),
            },
        };
        Self {
            me: parts.me,
            config: parts.config,
            changing: Mutex::new(()),
            members: watch::Sender::new(Arc::new(parts.members)),
            dir: parts.dir,
            applied: parts.applied,
            writer: parts.writer,
            applier: parts.applier,
            written: parts.written,
            durable: parts.durable,
            tail: parts.tail,
            progress: parts.progress,
            control: parts.control,
            external: parts.external,
            credentials: parts.credentials,
            term: Mutex::new(parts.term),
            term_view: watch::Sender::new(parts.term),
            cluster: watch::Sender::new(view),
            shut_down: AtomicBool::new(false),
        }
    }

    /// The current term, lock-free.
    pub(crate) fn term(&self) -> Term {
        *self.term_view.borrow()
    }

    /// Lock the term for a change that must not interleave with another (a promotion, a
    /// follower accepting a newer epoch, a primary starting to write).
    pub(crate) async fn lock_term(&self) -> TermGuard<'_> {
        TermGuard {
            node: self,
            guard: self.term.lock().await,
        }
    }

    /// Whether roles are driven from outside ([`crate::Roles::External`]).
    pub(crate) fn is_external(&self) -> bool {
        self.external.is_some()
    }

    /// What this node's links stream to followers when it leads. With roles driven from
    /// outside every leadership is a new epoch of an election, so records go out once
    /// written, their follower's fsync beside this node's: a tail this node loses in a power
    /// cut is then never taken for what a later leadership writes at the same index (that
    /// has a newer epoch). A static primary restarts in the epoch it had, so it sends only
    /// records already durable.
    pub(crate) fn streamed(&self) -> &watch::Receiver<Arc<Shape>> {
        if self.is_external() {
            &self.written
        } else {
            &self.durable
        }
    }

    /// The members now.
    pub(crate) fn members(&self) -> Arc<Members> {
        Arc::clone(&self.members.borrow())
    }

    /// Watch the members.
    pub(crate) fn watch_members(&self) -> watch::Receiver<Arc<Members>> {
        self.members.subscribe()
    }

    /// Replace the members: the commit index counts the new voters from now on, a primary
    /// opens links to added nodes and closes those to removed ones.
    pub(crate) fn set_members(&self, members: Members) {
        self.progress.set_voters(members.voters.clone());
        let view = members.view();
        self.members.send_replace(Arc::new(members));
        self.cluster.send_modify(|cluster| cluster.members = view);
    }

    /// The cluster address of `term`'s primary, where a follower passes writes and changes;
    /// `NotLeader` naming it when its address is unknown.
    pub(crate) fn primary_addr(&self, term: Term) -> Result<String, MetadataError> {
        self.members()
            .addrs
            .get(&term.primary)
            .filter(|addr| !addr.is_empty())
            .cloned()
            .ok_or(MetadataError::NotLeader {
                leader: Some(term.primary),
            })
    }

    /// The cluster credentials this node proves on every connection.
    pub(crate) fn credentials(&self) -> Result<&ClusterCredentials, MetadataError> {
        self.credentials.as_ref().ok_or_else(|| {
            MetadataError::Config(format!(
                "node {} has no cluster secret and cannot talk to other nodes",
                self.me
            ))
        })
    }

    /// The deadline of one network read or write.
    pub(crate) fn io_timeout(&self) -> Duration {
        Duration::from_millis(self.config.propose_timeout_ms.clamp(500, 5_000))
    }

    /// How long a proposal may wait.
    pub(crate) fn propose_timeout(&self) -> Duration {
        Duration::from_millis(self.config.propose_timeout_ms)
    }

    /// Ask the writer and wait for its answer.
    pub(crate) async fn ask_writer<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, MetadataError> {
        self.tell_writer(request)?
            .await
            .map_err(|_| MetadataError::ShutDown)
    }

    /// Queue a request for the writer thread; its answer arrives on the receiver.
    pub(crate) fn tell_writer<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<oneshot::Receiver<T>, MetadataError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(request(reply))
            .map_err(|_| MetadataError::ShutDown)?;
        Ok(answer)
    }

    /// Write `command` as this primary: wait (within the proposal timeout) until the primary
    /// is ready — taken over its epoch and, in `sync` mode, connected to a majority — then
    /// hand it to the writer and wait for it to be durable as the mode says and applied. A
    /// primary that cannot reach a majority fails with `Timeout` instead of hanging or
    /// writing what cannot commit.
    pub(crate) async fn propose_as_primary(
        &self,
        command: MetadataCommand,
    ) -> Result<Proposed, MetadataError> {
        let deadline = tokio::time::Instant::now() + self.propose_timeout();
        let mut views = self.cluster();
        let waited = tokio::time::timeout_at(deadline, views.wait_for(ClusterView::is_ready))
            .await
            .map(|r| r.map(drop));
        match waited {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(MetadataError::ShutDown),
            Err(_) => {
                let reason = match &views.borrow().readiness {
                    Readiness::NotReady { reason } => reason.clone(),
                    _ => "not ready".into(),
                };
                return Err(MetadataError::Timeout {
                    what: format!("the primary to be ready ({reason})"),
                    after_ms: self.config.propose_timeout_ms,
                });
            }
        }
        let answer = self.ask_writer(|reply| Request::Propose { command, reply });
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            // The writer or applier dropped the reply: this node stopped being primary (or
            // shut down) with the entry written but not known to be committed.
            Ok(Err(_)) if !self.is_shut_down() => Err(MetadataError::Timeout {
                what: "the proposal's outcome (this node stopped being primary)".into(),
                after_ms: 0,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(MetadataError::Timeout {
                what: "a majority to make the proposal durable".into(),
                after_ms: self.config.propose_timeout_ms,
            }),
        }
    }

    /// Change the published cluster view. Does nothing once shut down: the check runs under
    /// the watch's lock, so a task still finishing cannot report readiness after shutdown.
    pub(crate) fn set_view(&self, role: Role, leader: Option<NodeId>, readiness: Readiness) {
        let epoch = self.term().epoch;
        self.cluster.send_if_modified(|view| {
            if self.is_shut_down() {
                return false;
            }
            view.role = role;
            view.leader = leader;
            view.epoch = epoch;
            view.readiness = readiness;
            true
        });
    }

    /// The published cluster view.
    pub(crate) fn cluster(&self) -> watch::Receiver<ClusterView> {
        self.cluster.subscribe()
    }

    /// Whether [`Self::mark_shut_down`] ran.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    /// Refuse everything from now on.
    pub(crate) fn mark_shut_down(&self) {
        self.shut_down.store(true, Ordering::Release);
        self.cluster.send_modify(|view| {
            view.role = Role::Unknown;
            view.readiness = Readiness::NotReady {
                reason: "shut down".into(),
            };
        });
    }
}

/// The locked term.
#[derive(Debug)]
pub(crate) struct TermGuard<'a> {
    node: &'a Node,
    guard: MutexGuard<'a, Term>,
}

impl TermGuard<'_> {
    /// The term.
    pub(crate) fn get(&self) -> Term {
        *self.guard
    }

    /// Persist `term` (before anything is acked or written in it), then publish it.
    pub(crate) async fn set(&mut self, next: Term) -> Result<(), MetadataError> {
        let dir = self.node.dir.clone();
        tokio::task::spawn_blocking(move || term::store(&dir, &next))
            .await
            .map_err(|e| MetadataError::Storage(format!("persisting the epoch: {e}")))??;
        *self.guard = next;
        self.node.term_view.send_replace(next);
        self.node
            .cluster
            .send_modify(|view| view.epoch = next.epoch);
        Ok(())
    }
}
