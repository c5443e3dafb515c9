//! [`HybridBackend`]: the Raft group (who leads, at which term) tied to the metadata WAL
//! (what was written): opening, the [`MetadataBackend`] methods, the tasks that keep the WAL's
//! role and the in-sync set in step with the group, shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use raft::StateRole;
use switchyard_backend_api::{
    ChangeStream, ClusterCredentials, ClusterMember, ClusterView, Guarantees, LogIndex,
    MembershipChange, MetadataBackend, MetadataCommand, MetadataError, NodeId, OpenContext,
    PowerCut, Proposed, Readiness, ReplicationProgress, Role, StateView,
};
use switchyard_backend_wal::{
    Roles, WalBackend, WalMember, WalOptions, cluster_members, connect_extension,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::HybridConfig;
use crate::driver::{Driver, DriverError, Ticks};
use crate::group::GroupCommand;
use crate::runner::{GroupView, Request, Runner};
use crate::store::RocksLog;
use crate::transport::{self, Answer, Call, CallError, Caller, Dial, Handler, Outbox};
use crate::{GUARANTEES, NAME};

/// Raft messages queued for the loop before a peer's connection waits.
const INBOX: usize = 4096;

/// One node of the `hybrid` backend.
#[derive(Debug)]
pub struct HybridBackend {
    inner: Arc<Inner>,
    runner: Mutex<Option<Runner>>,
    tasks: Mutex<Option<JoinSet<()>>>,
}

/// Member → cluster address, as the group last applied it (the configured peers before).
type Addrs = Arc<RwLock<BTreeMap<NodeId, String>>>;

/// What the backend's tasks share.
#[derive(Debug)]
struct Inner {
    me: NodeId,
    config: HybridConfig,
    wal: WalBackend,
    group: watch::Receiver<GroupView>,
    requests: mpsc::Sender<Request>,
    caller: Caller,
    outbox: Outbox,
    addrs: Addrs,
    /// The configured peers: their addresses win over the ones the group recorded.
    configured: BTreeMap<NodeId, String>,
    view: watch::Sender<ClusterView>,
    shut_down: AtomicBool,
}

fn storage(e: impl std::fmt::Display) -> MetadataError {
    MetadataError::Storage(e.to_string())
}

/// Open the group's log in `dir`, waiting out a lock still held by a crashed node of this
/// process (`switchyard_rocksdb::open_retrying`); a brand-new log is bootstrapped with
/// `founders` as the voters, if given.
async fn open_log(
    dir: &Path,
    founders: Option<Vec<(u64, String)>>,
) -> Result<RocksLog, MetadataError> {
    let failed = |e: &dyn std::fmt::Display| storage(format!("{}: {e}", dir.display()));
    let at = dir.to_path_buf();
    let db = switchyard_rocksdb::open_retrying(switchyard_rocksdb::LOCK_WAIT, move || {
        RocksLog::open_db(&at)
    })
    .await
    .map_err(|e| failed(&e))?;
    let loaded = tokio::task::spawn_blocking(move || {
        let mut log = RocksLog::load_from(db)?;
        if let Some(founders) = founders
            && log.is_pristine()?
        {
            log.bootstrap(&founders)?;
        }
        Ok::<_, DriverError>(log)
    })
    .await
    .map_err(storage)?;
    loaded.map_err(|e| failed(&e))
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
        let founders = config.bootstrap.then_some(founders);
        let log = open_log(&context.data_dir.join("group"), founders).await?;
        let (applied, state) = log.applied();
        let ticks = Ticks {
            election: config.election_ticks,
            heartbeat: config.heartbeat_ticks,
        };
        let driver = Driver::new(me.0, log, applied, state, ticks).map_err(storage)?;

        let credentials = if context.node.has_peers() || context.node.cluster_addr.is_some() {
            Some(context.require_credentials()?)
        } else {
            context.cluster_credentials.clone()
        };
        let (extension, incoming) = mpsc::unbounded_channel();
        let mut options = WalOptions::default();
        options.config = Some(config.wal());
        options.roles = Roles::External { extension };
        let wal = WalBackend::open_with(context, options).await?;

        let max_frame = config.max_frame_bytes as usize;
        let addrs: Addrs = Arc::new(RwLock::new(members.clone()));
        let dial = dialer(&config, me, &addrs, credentials);
        let mut tasks = JoinSet::new();
        let (inbox_tx, inbox) = mpsc::channel(INBOX);
        let outbox = transport::connect(&dial, me.0, members.keys().map(|id| id.0), max_frame);
        let runner = Runner::spawn(
            driver,
            inbox,
            outbox.clone(),
            Duration::from_millis(config.tick_ms),
        );
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
            outbox,
            addrs,
            configured: members.clone(),
            config,
            wal,
            group: runner.view(),
            requests: runner.requests(),
            view,
            shut_down: AtomicBool::new(false),
        });
        tasks.spawn(transport::serve(
            incoming,
            me.0,
            max_frame,
            inbox_tx,
            handler(Arc::downgrade(&inner)),
        ));
        tasks.spawn(drive_roles(Arc::clone(&inner)));
        tasks.spawn(follow_members(Arc::clone(&inner)));
        tasks.spawn(publish_view(Arc::clone(&inner)));
        tasks.spawn(report_in_sync(Arc::clone(&inner)));
        Ok(Self {
            inner,
            runner: Mutex::new(Some(runner)),
            tasks: Mutex::new(Some(tasks)),
        })
    }

    /// The group as this node applied it: role, term, members, metadata leader, in-sync set.
    pub fn group(&self) -> watch::Receiver<GroupView> {
        self.inner.group.clone()
    }

    fn check_running(&self) -> Result<(), MetadataError> {
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Err(MetadataError::ShutDown);
        }
        Ok(())
    }
}

/// Connections to peers: the cluster handshake proving `credentials` and the WAL's extension
/// handshake on their cluster address. A node without credentials has no peers to dial.
fn dialer(
    config: &HybridConfig,
    me: NodeId,
    addrs: &Addrs,
    credentials: Option<ClusterCredentials>,
) -> Dial {
    let addrs = Arc::clone(addrs);
    let cluster_id = config.cluster_id.clone();
    let timeout = Duration::from_millis(config.propose_timeout_ms.clamp(200, 1_000));
    Arc::new(move |peer| {
        let addr = addrs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&NodeId(peer))
            .cloned();
        let cluster_id = cluster_id.clone();
        let credentials = credentials.clone();
        Box::pin(async move {
            connect_extension(
                &addr?,
                &cluster_id,
                credentials.as_ref()?,
                me,
                NodeId(peer),
                timeout,
            )
            .await
            .ok()
        })
    })
}

/// Answers calls from peers (forwarded proposals and membership changes) and operators
/// (membership changes only), for as long as the backend lives.
fn handler(inner: Weak<Inner>) -> Handler {
    Arc::new(move |from, call| {
        let inner = inner.clone();
        Box::pin(async move {
            let Some(inner) = inner.upgrade() else {
                return match call {
                    Call::Propose(_) => Answer::Proposed(Err(MetadataError::ShutDown)),
                    Call::ChangeMembership(_) => Answer::Membership(Err(MetadataError::ShutDown)),
                };
            };
            match call {
                Call::Propose(_) if from == 0 => {
                    Answer::Proposed(Err(MetadataError::Unsupported {
                        what: "proposals from outside the cluster".into(),
                    }))
                }
                Call::Propose(command) => {
                    let deadline = Instant::now() + inner.propose_timeout();
                    Answer::Proposed(inner.propose(command, deadline, Forwarding::Refuse).await)
                }
                Call::ChangeMembership(change) => {
                    let deadline = Instant::now() + inner.membership_timeout();
                    // An operator's request may reach a follower, which forwards it once.
                    let forwarding = if from == 0 {
                        Forwarding::Forward
                    } else {
                        Forwarding::Refuse
                    };
                    Answer::Membership(inner.change_membership(change, deadline, forwarding).await)
                }
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

/// Whether `members` include a majority of `voters`.
fn majority_of(voters: &BTreeSet<u64>, members: &BTreeSet<u64>) -> bool {
    voters.intersection(members).count() > voters.len() / 2
}

impl Inner {
    fn propose_timeout(&self) -> Duration {
        Duration::from_millis(self.config.propose_timeout_ms)
    }

    /// A membership change waits for a learner to catch up and for two group entries.
    fn membership_timeout(&self) -> Duration {
        self.propose_timeout() * 3
    }

    fn timeout(&self, what: String) -> MetadataError {
        MetadataError::Timeout {
            what,
            after_ms: self.config.propose_timeout_ms.saturating_mul(3),
        }
    }

    async fn request(&self, request: Request) -> Result<(), MetadataError> {
        self.requests
            .send(request)
            .await
            .map_err(|_| MetadataError::ShutDown)
    }

    /// Wait until the group view satisfies `done`.
    async fn wait_group(
        &self,
        deadline: Instant,
        what: &str,
        done: impl Fn(&GroupView) -> bool,
    ) -> Result<(), MetadataError> {
        let mut group = self.group.clone();
        match tokio::time::timeout_at(deadline, group.wait_for(|v| done(v))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(MetadataError::ShutDown),
            Err(_) => Err(self.timeout(what.into())),
        }
    }

    /// This node and the followers whose acknowledged WAL position reached the commit index.
    fn caught_up(&self) -> BTreeSet<u64> {
        let replication = self.wal.replication();
        replication
            .followers
            .iter()
            .filter(|(_, durable)| **durable >= replication.commit)
            .map(|(id, _)| id.0)
            .chain([self.me.0])
            .collect()
    }

    /// Wait until `ready` holds, checking once per tick (followers' acknowledgements have no
    /// notification of their own).
    async fn wait_until(
        &self,
        deadline: Instant,
        what: &str,
        ready: impl Fn() -> bool,
    ) -> Result<(), MetadataError> {
        let mut ticker = tokio::time::interval(Duration::from_millis(self.config.tick_ms));
        loop {
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.timeout(what.into()));
            }
            ticker.tick().await;
        }
    }

    /// Make `change` on the leader (here, or forwarded once). Waits for elections and for the
    /// change itself until `deadline`.
    async fn change_membership(
        &self,
        change: MembershipChange,
        deadline: Instant,
        forwarding: Forwarding,
    ) -> Result<ClusterView, MetadataError> {
        let mut group = self.group.clone();
        loop {
            let (role, leader, term) = {
                let view = group.borrow_and_update();
                (view.role, view.leader, view.term)
            };
            if role == StateRole::Leader && self.wal_leads(term) {
                match self.change_here(change.clone(), deadline).await {
                    // Leadership moved away first (removing this node): ask the new leader.
                    Err(MetadataError::NotLeader { .. }) => {}
                    other => return other,
                }
            } else if leader != 0 && leader != self.me.0 {
                if forwarding == Forwarding::Refuse {
                    return Err(MetadataError::NotLeader {
                        leader: Some(NodeId(leader)),
                    });
                }
                let remaining = deadline.saturating_duration_since(Instant::now());
                let call = Call::ChangeMembership(change.clone());
                match self.caller.call(leader, call, remaining).await {
                    Ok(Answer::Membership(Err(MetadataError::NotLeader { .. })))
                    | Err(CallError::NotSent(_)) => {}
                    Ok(Answer::Membership(result)) => return result,
                    Ok(Answer::Proposed(_)) => {
                        return Err(MetadataError::Network(format!(
                            "node {leader} answered another call"
                        )));
                    }
                    Err(CallError::Unknown(peer)) => {
                        return Err(self.timeout(format!(
                            "the outcome of the membership change forwarded to node {peer}"
                        )));
                    }
                }
            }
            match tokio::time::timeout_at(deadline, group.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(MetadataError::ShutDown),
                Err(_) => return Err(self.timeout("a metadata leader to take the change".into())),
            }
        }
    }

    /// The leader's side of a membership change, one voter at a time. A node joins as a
    /// learner, becomes a voter once its WAL caught up, and only while the caught-up members
    /// are a majority of the new voters; a node leaves under the same rule, after handing
    /// leadership away if it leads.
    async fn change_here(
        &self,
        change: MembershipChange,
        deadline: Instant,
    ) -> Result<ClusterView, MetadataError> {
        let state = self.group.borrow().state.clone();
        let voters: BTreeSet<u64> = state
            .members
            .keys()
            .copied()
            .filter(|id| state.is_voter(*id))
            .collect();
        match change {
            MembershipChange::AddNode { id, addr } => {
                if id.0 == 0 || addr.is_empty() {
                    return Err(MetadataError::Config(format!(
                        "adding node {id} at {addr:?}: node ids start at 1 and an address is needed"
                    )));
                }
                if state.is_voter(id.0) {
                    return Ok(self.current_view());
                }
                if !state.members.contains_key(&id.0) {
                    let learner = Request::Add {
                        id: id.0,
                        addr: addr.clone(),
                        learner: true,
                    };
                    self.request(learner).await?;
                    self.wait_group(deadline, "the new node to join as a learner", |v| {
                        v.state.members.contains_key(&id.0)
                    })
                    .await?;
                }
                let mut next = voters.clone();
                next.insert(id.0);
                self.wait_until(deadline, &format!("node {id} to catch up"), || {
                    let caught = self.caught_up();
                    caught.contains(&id.0) && majority_of(&next, &caught)
                })
                .await?;
                self.request(Request::Add {
                    id: id.0,
                    addr,
                    learner: false,
                })
                .await?;
                self.wait_group(deadline, "the new node to become a voter", |v| {
                    v.state.is_voter(id.0)
                })
                .await?;
            }
            MembershipChange::RemoveNode { id } => {
                if !state.members.contains_key(&id.0) {
                    return Err(MetadataError::Config(format!(
                        "node {id} is not a member of this cluster"
                    )));
                }
                if id == self.me {
                    let caught = self.caught_up();
                    let Some(&successor) =
                        voters.iter().find(|v| **v != id.0 && caught.contains(v))
                    else {
                        return Err(MetadataError::NotReady {
                            reason: format!(
                                "node {id} leads and no other voter is caught up to take over"
                            ),
                        });
                    };
                    self.request(Request::Transfer { id: successor }).await?;
                    self.wait_group(deadline, "leadership to move before the removal", |v| {
                        v.role != StateRole::Leader
                    })
                    .await?;
                    return Err(MetadataError::NotLeader { leader: None });
                }
                let mut next = voters.clone();
                next.remove(&id.0);
                self.wait_until(
                    deadline,
                    &format!("a caught-up majority without node {id}"),
                    || majority_of(&next, &self.caught_up()),
                )
                .await?;
                self.request(Request::Remove { id: id.0 }).await?;
                self.wait_group(deadline, "the removal to apply", |v| {
                    !v.state.members.contains_key(&id.0)
                })
                .await?;
            }
            MembershipChange::Promote { id } => {
                return Err(MetadataError::Unsupported {
                    what: format!(
                        "promoting node {id} (the hybrid backend elects its leader; there is \
                         nothing to promote)"
                    ),
                });
            }
            _ => {
                return Err(MetadataError::Unsupported {
                    what: "this membership change".into(),
                });
            }
        }
        Ok(self.current_view())
    }

    fn current_view(&self) -> ClusterView {
        merged_view(self.me, &self.group.borrow(), &self.wal.cluster().borrow())
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
                let call = Call::Propose(command.clone());
                match self.caller.call(leader, call, remaining).await {
                    Ok(Answer::Proposed(Ok(proposed))) => {
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        self.wal.wait_applied(proposed.index, remaining).await?;
                        return Ok(proposed);
                    }
                    // Not proposed: wait for the group to name another leader.
                    Ok(Answer::Proposed(Err(MetadataError::NotLeader { .. })))
                    | Err(CallError::NotSent(_)) => {}
                    Ok(Answer::Proposed(Err(e))) => return Err(e),
                    Ok(Answer::Membership(_)) => {
                        return Err(MetadataError::Network(format!(
                            "node {leader} answered another call"
                        )));
                    }
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

/// The node's cluster view, from the group (role, leader, term, members) and the WAL (whether
/// it serves or follows caught up). The epoch is the group's term, which is the WAL epoch the
/// term's leader writes in: a node elected in a new term reports that term (not ready until
/// its WAL took over), never the old epoch it has not led.
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
        epoch: group.term,
        members: group
            .state
            .members
            .iter()
            .map(|(id, addr)| ClusterMember {
                id: NodeId(*id),
                addr: (!addr.is_empty()).then(|| addr.clone()),
                voter: group.state.is_voter(*id),
            })
            .collect(),
        readiness,
    }
}

/// Keep the WAL's members, the dial addresses and the Raft senders in step with the group's
/// applied membership (a node that has not received the group's state yet keeps the
/// configured peers). A member's configured address wins over the one the group recorded
/// (a node may move between restarts); members added online use the recorded one.
async fn follow_members(inner: Arc<Inner>) {
    let mut group = inner.group.clone();
    let mut applied = None;
    loop {
        let members = {
            let view = group.borrow_and_update();
            (view.state.members.clone(), view.state.learners.clone())
        };
        if !members.0.is_empty() && applied.as_ref() != Some(&members) {
            let (addrs, learners) = &members;
            let mut next = BTreeMap::new();
            {
                let mut known = inner.addrs.write().unwrap_or_else(PoisonError::into_inner);
                for (id, addr) in addrs {
                    let id = NodeId(*id);
                    let addr = match inner.configured.get(&id) {
                        Some(configured) if !configured.is_empty() => configured.clone(),
                        _ if addr.is_empty() => known.get(&id).cloned().unwrap_or_default(),
                        _ => addr.clone(),
                    };
                    next.insert(id, addr);
                }
                known.clone_from(&next);
            }
            inner.outbox.set_peers(addrs.keys().copied());
            let wal_members = next
                .into_iter()
                .map(|(id, addr)| {
                    let voter = !learners.contains(&id.0);
                    (id, WalMember { addr, voter })
                })
                .collect();
            if inner.wal.set_members(wal_members).is_err() {
                return;
            }
            applied = Some(members);
        }
        if group.changed().await.is_err() {
            return;
        }
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
        command.check_size()?;
        let deadline = Instant::now() + self.inner.propose_timeout();
        self.inner
            .propose(command, deadline, Forwarding::Forward)
            .await
    }

    async fn propose_as_leader(&self, command: MetadataCommand) -> Result<Proposed, MetadataError> {
        self.check_running()?;
        command.check_size()?;
        let deadline = Instant::now() + self.inner.propose_timeout();
        self.inner
            .propose(command, deadline, Forwarding::Refuse)
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

    async fn progress(&self) -> ReplicationProgress {
        // The metadata stream is the WAL's; the raft-rs group only elects its leader.
        self.inner.wal.progress().await
    }

    async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<ClusterView, MetadataError> {
        self.check_running()?;
        let deadline = Instant::now() + self.inner.membership_timeout();
        self.inner
            .change_membership(change, deadline, Forwarding::Forward)
            .await
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
        self.inner.outbox.set_peers([]);
        self.inner.wal.shutdown().await
    }

    /// The metadata stream's WAL loses its unsynced bytes as the `wal` backend's power cut
    /// has it; the group's own log in RocksDB is not modelled (its writes stay as a crash
    /// leaves them), so this cuts the part that holds acknowledged metadata.
    fn power_cut(&self, keep_bytes: u64) -> Result<PowerCut, MetadataError> {
        if self.inner.shut_down.swap(true, Ordering::AcqRel) {
            return Err(MetadataError::ShutDown);
        }
        self.inner.outbox.set_peers([]);
        self.inner.wal.power_cut(keep_bytes)
    }
}

impl Drop for HybridBackend {
    /// A crash in the harness's sense: the group's loop and the tasks stop, and the WAL's
    /// writer has exited, before the directories can be opened again.
    fn drop(&mut self) {
        self.inner.shut_down.store(true, Ordering::Release);
        self.inner.outbox.set_peers([]);
        self.inner.wal.halt();
    }
}
