//! [`HybridBackend`]: the Raft group (who leads, at which term) tied to the metadata WAL
//! (what was written): opening, the [`MetadataBackend`] methods, the tasks that keep the WAL's
//! role and the in-sync set in step with the group, shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use raft::StateRole;
use switchyard_backend_api::{
    ChangeStream, ClusterMember, ClusterView, Guarantees, LogIndex, MembershipChange,
    MetadataBackend, MetadataCommand, MetadataError, NodeId, OpenContext, Proposed, Readiness,
    Role, StateView,
};
use switchyard_backend_wal::{Roles, WalBackend, WalOptions, cluster_members, connect_extension};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::HybridConfig;
use crate::driver::{Driver, DriverError, Ticks};
use crate::group::GroupCommand;
use crate::runner::{GroupView, Request, Runner};
use crate::store::RocksLog;
use crate::transport::{self, CallError, Caller, Dial, Handler};
use crate::{GUARANTEES, NAME};

/// Raft messages queued for the loop before a peer's connection waits.
const INBOX: usize = 4096;
/// How long opening the group's RocksDB may wait for a handle that a crashed node of this
/// process is still closing.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// One node of the `hybrid` backend.
#[derive(Debug)]
pub struct HybridBackend {
    inner: Arc<Inner>,
    runner: Mutex<Option<Runner>>,
    tasks: Mutex<Option<JoinSet<()>>>,
}

/// What the backend's tasks share.
#[derive(Debug)]
struct Inner {
    me: NodeId,
    config: HybridConfig,
    wal: WalBackend,
    group: watch::Receiver<GroupView>,
    requests: mpsc::Sender<Request>,
    caller: Caller,
    view: watch::Sender<ClusterView>,
    shut_down: AtomicBool,
}

fn storage(e: impl std::fmt::Display) -> MetadataError {
    MetadataError::Storage(e.to_string())
}

/// Open the group's log in `dir`, waiting out a lock still held by a crashed node of this
/// process; a brand-new log is bootstrapped with `founders` as the voters.
async fn open_log(dir: &Path, founders: Vec<(u64, String)>) -> Result<RocksLog, MetadataError> {
    let deadline = Instant::now() + LOCK_WAIT;
    let mut pause = Duration::from_millis(5);
    loop {
        let at = dir.to_path_buf();
        let founders = founders.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let mut log = RocksLog::open(&at)?;
            if log.is_pristine()? {
                log.bootstrap(&founders)?;
            }
            Ok::<_, DriverError>(log)
        })
        .await
        .map_err(storage)?;
        match opened {
            Ok(log) => return Ok(log),
            Err(e) if e.to_string().contains("lock") && Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(storage(format!("{}: {e}", dir.display()))),
        }
    }
}

impl HybridBackend {
    /// Open (or create) a node: the group's log from `data_dir/group` (a brand-new one holds
    /// every configured node as a voter), the metadata WAL from `data_dir/wal` with its roles
    /// driven by the group, the group's loop and transport. Returns without waiting for any
    /// peer or election; readiness is reported through [`MetadataBackend::cluster`].
    pub async fn open(context: OpenContext) -> Result<Self, MetadataError> {
        let config = HybridConfig::from_figment(&context.config)?;
        let me = context.node.id;
        let members = cluster_members(&context)?;
        let founders: Vec<(u64, String)> =
            members.iter().map(|(id, a)| (id.0, a.clone())).collect();
        let log = open_log(&context.data_dir.join("group"), founders).await?;
        let (applied, state) = log.applied();
        let ticks = Ticks {
            election: config.election_ticks,
            heartbeat: config.heartbeat_ticks,
        };
        let driver = Driver::new(me.0, log, applied, state, ticks).map_err(storage)?;

        let (extension, mut accepted) =
            mpsc::unbounded_channel::<(NodeId, tokio::net::TcpStream)>();
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        let mut options = WalOptions::default();
        options.config = Some(config.wal());
        options.roles = Roles::External { extension };
        let wal = WalBackend::open_with(context, options).await?;

        let max_frame = config.max_frame_bytes as usize;
        let dial = dialer(&config, me, &members);
        let mut tasks = JoinSet::new();
        let (inbox_tx, inbox) = mpsc::channel(INBOX);
        let outbox = transport::connect(
            &dial,
            me.0,
            members.keys().map(|id| id.0),
            max_frame,
            &mut tasks,
        );
        let runner = Runner::spawn(driver, inbox, outbox, Duration::from_millis(config.tick_ms));
        let view = watch::Sender::new(ClusterView {
            node: me,
            role: Role::Unknown,
            leader: None,
            epoch: 0,
            members: Vec::new(),
            readiness: Readiness::NotReady {
                reason: "starting".into(),
            },
        });
        let inner = Arc::new(Inner {
            me,
            caller: Caller::new(dial, max_frame),
            config,
            wal,
            group: runner.view(),
            requests: runner.requests(),
            view,
            shut_down: AtomicBool::new(false),
        });
        tasks.spawn(async move {
            while let Some((from, stream)) = accepted.recv().await {
                if incoming_tx.send((from.0, stream)).is_err() {
                    return;
                }
            }
        });
        tasks.spawn(transport::serve(
            incoming,
            me.0,
            max_frame,
            inbox_tx,
            handler(Arc::downgrade(&inner)),
        ));
        tasks.spawn(drive_roles(Arc::clone(&inner)));
        tasks.spawn(publish_view(Arc::clone(&inner)));
        tasks.spawn(report_in_sync(Arc::clone(&inner)));
        Ok(Self {
            inner,
            runner: Mutex::new(Some(runner)),
            tasks: Mutex::new(Some(tasks)),
        })
    }

    fn check_running(&self) -> Result<(), MetadataError> {
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Err(MetadataError::ShutDown);
        }
        Ok(())
    }
}

/// Connections to peers: the WAL's extension handshake on their cluster address.
fn dialer(config: &HybridConfig, me: NodeId, members: &BTreeMap<NodeId, String>) -> Dial {
    let addrs = Arc::new(members.clone());
    let cluster_id = config.cluster_id.clone();
    let timeout = Duration::from_millis(config.propose_timeout_ms.clamp(200, 1_000));
    Arc::new(move |peer| {
        let addrs = Arc::clone(&addrs);
        let cluster_id = cluster_id.clone();
        Box::pin(async move {
            let addr = addrs.get(&NodeId(peer))?;
            connect_extension(addr, &cluster_id, me, NodeId(peer), timeout)
                .await
                .ok()
        })
    })
}

/// Answers proposals forwarded by peers, for as long as the backend lives.
fn handler(inner: Weak<Inner>) -> Handler {
    Arc::new(move |command| {
        let inner = inner.clone();
        Box::pin(async move {
            match inner.upgrade() {
                Some(inner) => {
                    let deadline = Instant::now() + inner.propose_timeout();
                    inner.propose(command, deadline, Forwarding::Refuse).await
                }
                None => Err(MetadataError::ShutDown),
            }
        })
    })
}

/// Whether a proposal that reaches a follower goes on to the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forwarding {
    /// A client's proposal: forward it.
    Forward,
    /// Already forwarded once: answer `NotLeader` instead of forwarding again.
    Refuse,
}

impl Inner {
    fn propose_timeout(&self) -> Duration {
        Duration::from_millis(self.config.propose_timeout_ms)
    }

    /// Whether this node's WAL serves as primary in the group's current term.
    fn wal_leads(&self, term: u64) -> bool {
        let wal = self.wal.cluster().borrow().clone();
        wal.role == Role::Leader && wal.leader == Some(self.me) && wal.epoch == term
    }

    /// Propose on the leader's WAL: here when this node leads, else through the leader (once).
    /// Waits for an election or a takeover in progress until `deadline`.
    async fn propose(
        &self,
        command: MetadataCommand,
        deadline: Instant,
        forwarding: Forwarding,
    ) -> Result<Proposed, MetadataError> {
        let mut group = self.group.clone();
        let mut wal = self.wal.cluster();
        loop {
            let (role, leader, term) = {
                let view = group.borrow_and_update();
                (view.role, view.leader, view.term)
            };
            wal.borrow_and_update();
            if role == StateRole::Leader {
                if self.wal_leads(term) {
                    return self.wal.propose(command).await;
                }
            } else if leader != 0 && leader != self.me.0 {
                if forwarding == Forwarding::Refuse {
                    return Err(MetadataError::NotLeader {
                        leader: Some(NodeId(leader)),
                    });
                }
                let remaining = deadline.saturating_duration_since(Instant::now());
                match self.caller.call(leader, command.clone(), remaining).await {
                    Ok(Ok(proposed)) => {
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        self.wal.wait_applied(proposed.index, remaining).await?;
                        return Ok(proposed);
                    }
                    // Not proposed: wait for the group to name another leader.
                    Ok(Err(MetadataError::NotLeader { .. })) | Err(CallError::NotSent(_)) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(CallError::Unknown(peer)) => {
                        return Err(MetadataError::Timeout {
                            what: format!("the outcome of the proposal forwarded to node {peer}"),
                            after_ms: self.config.propose_timeout_ms,
                        });
                    }
                }
            }
            let changed = async {
                tokio::select! {
                    changed = group.changed() => changed.is_ok(),
                    changed = wal.changed() => changed.is_ok(),
                }
            };
            match tokio::time::timeout_at(deadline, changed).await {
                Ok(true) => {}
                Ok(false) => return Err(MetadataError::ShutDown),
                Err(_) => {
                    return Err(MetadataError::Timeout {
                        what: "a metadata leader to take the proposal".into(),
                        after_ms: self.config.propose_timeout_ms,
                    });
                }
            }
        }
    }
}

/// What the WAL is told to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WalRole {
    Lead(u64),
    Follow(u64, Option<NodeId>),
}

/// Keep the WAL's role in step with the group: lead epoch `T` once this node's own `Lead`
/// entry of term `T` is applied while it is still leader of `T`; otherwise follow the known
/// leader of the current term (which fences an older primary) or, with none known, stop
/// writing.
async fn drive_roles(inner: Arc<Inner>) {
    let mut group = inner.group.clone();
    let mut told = None;
    loop {
        let wanted = {
            let view = group.borrow_and_update();
            if view.role == StateRole::Leader {
                (view.state.leader == Some((inner.me.0, view.term)))
                    .then_some(WalRole::Lead(view.term))
            } else {
                let leader = (view.leader != 0).then_some(NodeId(view.leader));
                Some(WalRole::Follow(view.term, leader))
            }
        };
        if wanted.is_some() && wanted != told {
            let result = match wanted {
                Some(WalRole::Lead(term)) => inner.wal.lead_at(term),
                Some(WalRole::Follow(term, leader)) => inner.wal.follow(term, leader),
                None => Ok(()),
            };
            if result.is_err() {
                return;
            }
            told = wanted;
        }
        if group.changed().await.is_err() {
            return;
        }
    }
}

fn role_of(role: StateRole) -> Role {
    match role {
        StateRole::Leader => Role::Leader,
        StateRole::Follower => Role::Follower,
        StateRole::Candidate | StateRole::PreCandidate => Role::Candidate,
    }
}

/// The node's cluster view, from the group (role, leader, members) and the WAL (epoch and
/// whether it serves or follows caught up).
fn merged_view(me: NodeId, group: &GroupView, wal: &ClusterView) -> ClusterView {
    let leader = (group.leader != 0).then_some(NodeId(group.leader));
    let readiness = if let Some(reason) = &group.stopped {
        Readiness::NotReady {
            reason: format!("the group's loop stopped: {reason}"),
        }
    } else if leader.is_none() {
        Readiness::NotReady {
            reason: format!("electing a metadata leader (term {})", group.term),
        }
    } else if group.role == StateRole::Leader
        && !(wal.leader == Some(me) && wal.epoch == group.term)
    {
        Readiness::NotReady {
            reason: format!("taking over the metadata log at epoch {}", group.term),
        }
    } else {
        wal.readiness.clone()
    };
    ClusterView {
        node: me,
        role: role_of(group.role),
        leader,
        epoch: wal.epoch,
        members: group
            .state
            .members
            .iter()
            .map(|(id, addr)| ClusterMember {
                id: NodeId(*id),
                addr: (!addr.is_empty()).then(|| addr.clone()),
                voter: true,
            })
            .collect(),
        readiness,
    }
}

/// Publish the merged view whenever the group or the WAL changes.
async fn publish_view(inner: Arc<Inner>) {
    let mut group = inner.group.clone();
    let mut wal = inner.wal.cluster();
    loop {
        let next = merged_view(
            inner.me,
            &group.borrow_and_update(),
            &wal.borrow_and_update(),
        );
        inner.view.send_if_modified(|view| {
            let changed = *view != next && !inner.shut_down.load(Ordering::Acquire);
            if changed {
                *view = next;
            }
            changed
        });
        tokio::select! {
            changed = group.changed() => if changed.is_err() { return },
            changed = wal.changed() => if changed.is_err() { return },
        }
    }
}

/// On the leader, every `in_sync_check_ms`: the followers whose acknowledged WAL position
/// reached the commit index of the previous check are in sync; record the set in the group
/// when it differs from the one recorded.
async fn report_in_sync(inner: Arc<Inner>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(inner.config.in_sync_check_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading = None;
    let mut threshold: LogIndex = 0;
    loop {
        ticker.tick().await;
        let (term, recorded) = {
            let view = inner.group.borrow();
            let leads = view.role == StateRole::Leader
                && view.state.leader == Some((inner.me.0, view.term));
            (leads.then_some(view.term), view.state.in_sync.clone())
        };
        let Some(term) = term.filter(|t| inner.wal_leads(*t)) else {
            leading = None;
            continue;
        };
        let replication = inner.wal.replication();
        if leading != Some(term) {
            leading = Some(term);
            threshold = replication.commit;
        }
        let followers: BTreeSet<u64> = replication
            .followers
            .iter()
            .filter(|(_, durable)| **durable >= threshold)
            .map(|(id, _)| id.0)
            .collect();
        threshold = replication.commit;
        let mut current = recorded;
        current.remove(&inner.me.0);
        if followers != current {
            let command = GroupCommand::InSync { term, followers };
            if inner
                .requests
                .send(Request::Propose(command))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

#[async_trait]
impl MetadataBackend for HybridBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn guarantees(&self) -> Guarantees {
        GUARANTEES
    }

    async fn propose(&self, command: MetadataCommand) -> Result<Proposed, MetadataError> {
        self.check_running()?;
        let deadline = Instant::now() + self.inner.propose_timeout();
        self.inner
            .propose(command, deadline, Forwarding::Forward)
            .await
    }

    fn local(&self) -> Arc<StateView> {
        self.inner.wal.local()
    }

    async fn read_linearizable(&self) -> Result<Arc<StateView>, MetadataError> {
        self.check_running()?;
        Err(MetadataError::Unsupported {
            what: "linearizable reads (the hybrid backend serves local reads only)".into(),
        })
    }

    fn subscribe(&self) -> ChangeStream {
        self.inner.wal.subscribe()
    }

    async fn wait_applied(
        &self,
        index: LogIndex,
        timeout: Duration,
    ) -> Result<Arc<StateView>, MetadataError> {
        self.inner.wal.wait_applied(index, timeout).await
    }

    fn cluster(&self) -> watch::Receiver<ClusterView> {
        self.inner.view.subscribe()
    }

    async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<ClusterView, MetadataError> {
        self.check_running()?;
        let what = match change {
            MembershipChange::Promote { id } => format!(
                "promoting node {id} (the hybrid backend elects its leader; there is nothing \
                 to promote)"
            ),
            _ => "adding or removing nodes with the hybrid backend (its membership is the \
                  configured peers)"
                .into(),
        };
        Err(MetadataError::Unsupported { what })
    }

    async fn shutdown(&self) -> Result<(), MetadataError> {
        self.inner.shut_down.store(true, Ordering::Release);
        self.inner.view.send_modify(|view| {
            view.role = Role::Unknown;
            view.readiness = Readiness::NotReady {
                reason: "shut down".into(),
            };
        });
        let tasks = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut tasks) = tasks {
            tasks.shutdown().await;
        }
        let runner = self
            .runner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut runner) = runner {
            runner.kill().await;
        }
        self.inner.wal.shutdown().await
    }
}

impl Drop for HybridBackend {
    /// A crash in the harness's sense: the group's loop and the tasks stop, and the WAL's
    /// writer has exited, before the directories can be opened again.
    fn drop(&mut self) {
        self.inner.shut_down.store(true, Ordering::Release);
        self.inner.wal.halt();
    }
}
