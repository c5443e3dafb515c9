//! [`WalBackend`]: opening (recovery), the [`MetadataBackend`] implementation, shutdown.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use switchyard_backend_api::tls::ClusterStream;
use switchyard_backend_api::{
    AppliedState, ChangeStream, ClusterView, Guarantees, LogIndex, MembershipChange,
    MetadataBackend, MetadataCommand, MetadataError, NodeId, OpenContext, PowerCut, Proposed,
    ReplicationProgress, StateView,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::applier::{self, ApplyMsg, Pending, Snapshots};
use crate::config::{Mode, WalConfig};
use crate::log::{Log, Recovered};
use crate::membership;
use crate::node::{Members, Node, NodeParts};
use crate::progress::Progress;
use crate::record::Position;
use crate::replication::{self, Control};
use crate::snapshot::{self, Snapshot};
use crate::tail::Tail;
use crate::term::{self, Term};
use crate::writer::{self, Published, Request, Writer};
use crate::{ASYNC_GUARANTEES, NAME, SYNC_GUARANTEES};

/// One node of the `wal` backend.
#[derive(Debug)]
pub struct WalBackend {
    node: Arc<Node>,
    guarantees: Guarantees,
    tasks: Mutex<Option<JoinSet<()>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// How [`WalBackend::open_with`] opens a node.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct WalOptions {
    /// Use this configuration instead of extracting `[metadata.wal]` from the context.
    pub config: Option<WalConfig>,
    /// Who decides which node is primary.
    pub roles: Roles,
}

/// Who decides which node is primary, and in which epoch.
#[derive(Debug, Default)]
#[non_exhaustive]
pub enum Roles {
    /// The `wal` backend: `[metadata.wal].primary` leads a new cluster, later primaries are
    /// chosen by manual promotion.
    #[default]
    Static,
    /// An embedding backend elects the primary and calls [`WalBackend::lead_at`] and
    /// [`WalBackend::follow`]; nothing leads until it does, promotion is refused, and
    /// extension connections on the cluster address ([`crate::connect_extension`]) are
    /// handed to `extension` with the id of the member that opened them.
    External {
        /// Receives accepted extension connections.
        extension: mpsc::UnboundedSender<(NodeId, ClusterStream)>,
    },
}

/// A member of the cluster as [`WalBackend::set_members`] takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalMember {
    /// Its cluster address.
    pub addr: String,
    /// Whether it counts toward a majority (else it is streamed to only).
    pub voter: bool,
}

/// Replication as a primary sees it: the commit index and each follower's acknowledged
/// durable index.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Replication {
    /// This node's commit index.
    pub commit: LogIndex,
    /// Follower → the highest index it acknowledged as durable in this leadership (empty
    /// unless this node leads).
    pub followers: BTreeMap<NodeId, LogIndex>,
}

/// Every node of the cluster → its address, this one included; a lone node maps to its own
/// (possibly empty) address. A node with peers but no cluster address is a `Config` error.
pub fn cluster_members(context: &OpenContext) -> Result<BTreeMap<NodeId, String>, MetadataError> {
    let identity = &context.node;
    let mut members = identity.peers.clone();
    if !identity.has_peers() {
        let addr = identity.cluster_addr.clone().unwrap_or_default();
        return Ok(BTreeMap::from([(identity.id, addr)]));
    }
    let own = identity
        .cluster_addr
        .clone()
        .or_else(|| members.get(&identity.id).cloned())
        .ok_or_else(|| {
            MetadataError::Config(format!(
                "node {} has peers but no cluster address; set its cluster listen address",
                identity.id
            ))
        })?;
    members.insert(identity.id, own);
    Ok(members)
}

pub(crate) fn recover(
    dir: &Path,
    segment_bytes: u64,
) -> Result<(Option<Snapshot>, Recovered), MetadataError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| MetadataError::Storage(format!("{}: {e}", dir.display())))?;
    let snapshot = snapshot::load_latest(dir)?.map(|(snapshot, _)| snapshot);
    let base = snapshot
        .as_ref()
        .map(|s| s.position)
        .unwrap_or(Position::default());
    let recovered = Log::open(dir, segment_bytes, base)?;
    Ok((snapshot, recovered))
}

impl WalBackend {
    /// Open (or create) a node: recover the snapshot and log from `data_dir/wal`, start the
    /// writer thread, the applier, the role controller and the cluster listener, and return
    /// without waiting for any peer. Readiness is reported through [`MetadataBackend::cluster`].
    pub async fn open(context: OpenContext) -> Result<Self, MetadataError> {
        Self::open_with(context, WalOptions::default()).await
    }

    /// [`Self::open`] with `options`: a configuration given directly and roles driven from
    /// outside (the `hybrid` backend).
    pub async fn open_with(
        context: OpenContext,
        options: WalOptions,
    ) -> Result<Self, MetadataError> {
        let config = match options.config {
            Some(config) => {
                config.validate()?;
                config
            }
            None => WalConfig::from_figment(&context.config)?,
        };
        let external = match options.roles {
            Roles::Static => None,
            Roles::External { extension } => Some(extension),
        };
        let configured = cluster_members(&context)?;
        let me = context.node.id;
        let dir = context.data_dir.join("wal");
        let segment_bytes = config.segment_bytes;
        let recovery_dir = dir.clone();
        let (snapshot, recovered) =
            tokio::task::spawn_blocking(move || recover(&recovery_dir, segment_bytes))
                .await
                .map_err(|e| MetadataError::Storage(format!("recovery task: {e}")))??;
        let state_dir = dir.clone();
        let (term, adopted) = tokio::task::spawn_blocking(move || {
            Ok::<_, crate::error::WalError>((
                term::load(&state_dir)?,
                membership::load(&state_dir)?,
            ))
        })
        .await
        .map_err(|e| MetadataError::Storage(format!("reading the epoch and members: {e}")))??;
        // Members adopted online outrank the configured peers (static roles only: an
        // embedding backend sets the members itself).
        let members = match adopted.filter(|_| external.is_none()) {
            Some(adopted) => {
                if adopted != configured {
                    tracing::info!(
                        ?adopted,
                        ?configured,
                        "using the members adopted online, not the configured peers"
                    );
                }
                adopted
            }
            None => configured,
        };
        let primary = match config.primary {
            _ if external.is_some() => me,
            Some(id) if !members.contains_key(&NodeId(id)) => {
                return Err(MetadataError::Config(format!(
                    "metadata.wal.primary = {id} is not a node of this cluster"
                )));
            }
            Some(id) => NodeId(id),
            None => members.keys().next().copied().unwrap_or(me),
        };
        let term = term.unwrap_or(Term { epoch: 0, primary });

        let base = snapshot.as_ref().map(|s| s.position).unwrap_or_default();
        let applied = Arc::new(AppliedState::new(
            snapshot.map(|s| s.view).unwrap_or_default(),
        ));
        let Recovered { log, tail } = recovered;
        let shape = Arc::new(log.shape().clone());
        tracing::info!(
            dir = %dir.display(),
            snapshot = base.index,
            last = shape.last.index,
            epoch = term.epoch,
            primary = %term.primary,
            "recovered the write-ahead log"
        );
        let members = Members::voting(members);
        let progress = Arc::new(Progress::new(
            members.voters.clone(),
            config.mode,
            shape.last.index,
            base.index,
        ));
        let (written_tx, written) = watch::channel(Arc::clone(&shape));
        let recent = Arc::new(Tail::default());
        let (durable_tx, durable) = watch::channel(shape);
        let (applier_tx, applier_rx) = mpsc::unbounded_channel();
        let (writer_tx, writer_rx) = mpsc::unbounded_channel();
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let mut entries = Vec::with_capacity(tail.len());
        for record in tail {
            entries.push(Pending {
                index: record.index,
                epoch: record.epoch,
                command: record.decode_command()?,
                reply: None,
            });
        }
        let _ = applier_tx.send(ApplyMsg::Entries(entries));
        let writer_thread = writer::spawn(
            Writer::new(
                log,
                applier_tx.clone(),
                Published {
                    written: written_tx,
                    durable: durable_tx,
                    tail: Arc::clone(&recent),
                },
                Arc::clone(&progress),
            ),
            writer_rx,
        )
        .map_err(|e| MetadataError::Storage(format!("starting the writer thread: {e}")))?;

        let guarantees = match config.mode {
            Mode::Sync => SYNC_GUARANTEES,
            Mode::Async => ASYNC_GUARANTEES,
        };
        let listen_addr = members.addrs.get(&me).cloned().filter(|a| !a.is_empty());
        let listens = members.addrs.len() > 1 || context.node.has_peers() || external.is_some();
        let credentials = if (listens && listen_addr.is_some()) || context.node.has_peers() {
            Some(context.require_credentials()?)
        } else {
            context.cluster_credentials.clone()
        };
        let snapshots = Snapshots {
            every: config.snapshot_every,
            last: base.index,
            shape: durable.clone(),
            writer: writer_tx.clone(),
        };
        let node = Arc::new(Node::new(NodeParts {
            me,
            config,
            members,
            dir,
            applied: Arc::clone(&applied),
            writer: writer_tx,
            applier: applier_tx,
            written,
            durable,
            tail: recent,
            progress: Arc::clone(&progress),
            control: control_tx,
            external,
            credentials,
            term,
        }));
        let mut tasks = JoinSet::new();
        tasks.spawn(applier::run(
            me,
            applied,
            applier_rx,
            progress.subscribe(),
            snapshots,
        ));
        tasks.spawn(replication::control(Arc::clone(&node), control_rx));
        if let Some(addr) = listen_addr.filter(|_| listens) {
            // Bind now so the node is reachable when `open` returns; a node reopened in the
            // same process may find its old listener still closing, then the task retries.
            let bound = match replication::bind(&addr) {
                Ok(listener) => Some(listener),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "cluster address busy; binding in the background");
                    None
                }
            };
            tasks.spawn(replication::listen(Arc::clone(&node), addr, bound));
        }
        Ok(Self {
            node,
            guarantees,
            tasks: Mutex::new(Some(tasks)),
            writer_thread: Mutex::new(Some(writer_thread)),
        })
    }

    fn check_running(&self) -> Result<(), MetadataError> {
        if self.node.is_shut_down() {
            return Err(MetadataError::ShutDown);
        }
        Ok(())
    }

    /// External roles: become primary in exactly `epoch`, which the embedding backend's
    /// election gave this node. Refused (logged) unless `epoch` is newer than the persisted
    /// one or is it with this node as primary. The takeover then runs as after a promotion:
    /// a majority welcomes the epoch, the most up-to-date log among them is fetched, the
    /// marker is written, and [`MetadataBackend::cluster`] reports ready. Returns at once.
    pub fn lead_at(&self, epoch: u64) -> Result<(), MetadataError> {
        self.check_running()?;
        self.node
            .control
            .send(Control::LeadAt { epoch })
            .map_err(|_| MetadataError::ShutDown)
    }

    /// External roles: stop writing as primary (unless `leader` is this node in the epoch
    /// it leads), and record that `leader` leads `epoch` when that is newer, which fences
    /// an older primary's next message. Returns at once.
    pub fn follow(&self, epoch: u64, leader: Option<NodeId>) -> Result<(), MetadataError> {
        self.check_running()?;
        self.node
            .control
            .send(Control::Follow { epoch, leader })
            .map_err(|_| MetadataError::ShutDown)
    }

    /// External roles: replace the members (id → address and whether it votes). A primary
    /// opens links to added members and closes those to removed ones; from now on a majority
    /// of the new voters commits. The caller makes each change safe (one voter at a time, a
    /// new voter caught up first).
    pub fn set_members(&self, members: BTreeMap<NodeId, WalMember>) -> Result<(), MetadataError> {
        self.check_running()?;
        if !self.node.is_external() {
            return Err(MetadataError::Unsupported {
                what: "changing the members of a wal cluster (its membership is the configured \
                       peers)"
                    .into(),
            });
        }
        let voters = members
            .iter()
            .filter(|(_, m)| m.voter)
            .map(|(id, _)| *id)
            .collect();
        let addrs = members.into_iter().map(|(id, m)| (id, m.addr)).collect();
        self.node.set_members(Members { addrs, voters });
        Ok(())
    }

    /// The commit index and, on a primary, its followers' acknowledged durable indexes.
    pub fn replication(&self) -> Replication {
        Replication {
            commit: self.node.progress.commit(),
            followers: self.node.progress.acks(),
        }
    }

    /// Stop the writer thread after it syncs what it has.
    fn stop_writer(&self) -> Option<std::thread::JoinHandle<()>> {
        let _ = self.node.writer.send(Request::Stop);
        self.writer_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

#[async_trait]
impl MetadataBackend for WalBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn guarantees(&self) -> Guarantees {
        self.guarantees
    }

    async fn propose(&self, command: MetadataCommand) -> Result<Proposed, MetadataError> {
        self.check_running()?;
        command.check_size()?;
        let term = self.node.term();
        if term.primary == self.node.me {
            self.node.propose_as_primary(command).await
        } else if self.node.is_external() {
            // The embedding backend forwards its own proposals.
            Err(MetadataError::NotLeader {
                leader: Some(term.primary),
            })
        } else {
            replication::forward_proposal(&self.node, term, command).await
        }
    }

    async fn propose_as_leader(&self, command: MetadataCommand) -> Result<Proposed, MetadataError> {
        self.check_running()?;
        command.check_size()?;
        let term = self.node.term();
        if term.primary == self.node.me {
            self.node.propose_as_primary(command).await
        } else {
            Err(MetadataError::NotLeader {
                leader: Some(term.primary),
            })
        }
    }

    fn local(&self) -> Arc<StateView> {
        self.node.applied.view()
    }

    async fn read_linearizable(&self) -> Result<Arc<StateView>, MetadataError> {
        self.check_running()?;
        Err(MetadataError::Unsupported {
            what: "linearizable reads (the wal backend serves local reads only)".into(),
        })
    }

    fn subscribe(&self) -> ChangeStream {
        self.node.applied.subscribe()
    }

    async fn wait_applied(
        &self,
        index: LogIndex,
        timeout: Duration,
    ) -> Result<Arc<StateView>, MetadataError> {
        self.node.applied.wait_applied(index, timeout).await
    }

    fn cluster(&self) -> watch::Receiver<ClusterView> {
        self.node.cluster()
    }

    async fn progress(&self) -> ReplicationProgress {
        ReplicationProgress {
            last_index: self.node.durable.borrow().last.index,
            committed: self.node.progress.commit(),
            applied: self.node.applied.applied_index(),
            followers: self.node.progress.acks().into_iter().collect(),
        }
    }

    async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<ClusterView, MetadataError> {
        self.check_running()?;
        match change {
            MembershipChange::Promote { id } if id == self.node.me => {
                let (reply, result) = tokio::sync::oneshot::channel();
                self.node
                    .control
                    .send(Control::Promote { reply })
                    .map_err(|_| MetadataError::ShutDown)?;
                result.await.map_err(|_| MetadataError::ShutDown)??;
                Ok(self.node.cluster().borrow().clone())
            }
            MembershipChange::Promote { id } => Err(MetadataError::Unsupported {
                what: format!(
                    "promoting node {id} from node {}: call it on node {id} itself (or use \
                     request_promotion with its cluster address)",
                    self.node.me
                ),
            }),
            _ if self.node.is_external() => Err(MetadataError::Unsupported {
                what: "adding or removing nodes of a wal log whose members are set by its \
                       embedding backend"
                    .into(),
            }),
            change => {
                let term = self.node.term();
                if term.primary == self.node.me {
                    return membership::change_as_primary(&self.node, change).await;
                }
                // A follower passes the change to the primary it follows.
                let addr = self.node.primary_addr(term)?;
                let config = &self.node.config;
                let timeout = Duration::from_millis(
                    config.catch_up_timeout_ms + 2 * config.propose_timeout_ms,
                );
                let from = (self.node.credentials()?, self.node.me);
                membership::ask_change(
                    &addr,
                    &config.cluster_id,
                    from,
                    term.primary,
                    &change,
                    timeout,
                )
                .await
            }
        }
    }

    /// Halt as [`WalBackend::halt`] does, except that the writer thread stops where it is
    /// instead of syncing: proposals it holds are never acknowledged, and of their bytes the
    /// first `keep_bytes` reach the active segment (a torn tail that recovery truncates).
    fn power_cut(&self, keep_bytes: u64) -> Result<PowerCut, MetadataError> {
        self.check_running()?;
        let (reply, mut cut) = tokio::sync::oneshot::channel();
        self.stop_with(Request::PowerCut {
            keep: keep_bytes,
            reply,
        });
        cut.try_recv()
            .map_err(|_| MetadataError::Storage("the writer stopped before the power cut".into()))
    }

    async fn shutdown(&self) -> Result<(), MetadataError> {
        self.node.mark_shut_down();
        let tasks = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut tasks) = tasks {
            tasks.shutdown().await;
        }
        if let Some(thread) = self.stop_writer() {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| MetadataError::Storage(format!("joining the writer: {e}")))?
                .map_err(|_| MetadataError::Storage("the writer thread panicked".into()))?;
        }
        Ok(())
    }
}

impl Drop for WalBackend {
    fn drop(&mut self) {
        self.halt();
    }
}

impl WalBackend {
    /// Stop at once, as a crash would in the harness's sense (what `Drop` does): no graceful
    /// shutdown, but the tasks are told to stop and the writer thread has exited when this
    /// returns, so the directory can be opened again — also while something else still holds
    /// this value.
    pub fn halt(&self) {
        self.stop_with(Request::Stop);
    }

    /// Refuse everything from now on, stop the tasks, hand the writer its `last` request
    /// and wait until its thread has exited.
    fn stop_with(&self, last: Request) {
        self.node.mark_shut_down();
        drop(
            self.tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let _ = self.node.writer.send(last);
        let thread = self
            .writer_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}
