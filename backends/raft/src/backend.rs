//! [`RaftBackend`]: opening (storage, listener, bootstrap), the [`MetadataBackend`] methods,
//! forwarding to the leader, readiness, shutdown.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::{ChangeMembers, RaftMetrics, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use switchyard_backend_api::{
    AppliedState, ChangeStream, ClusterMember, ClusterView, Guarantees, LogIndex, MembershipChange,
    MetadataBackend, MetadataCommand, MetadataError, NodeId, NodeIdentity, OpenContext, Outcome,
    PowerCut, Proposed, Readiness, Rejection, ReplicationProgress, Role, StateView,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::RaftConfig;
use crate::network::{self, Handler, ListenerIdentity, NetError, Network, Peer, Request, Response};
use crate::proposals::Pending;
use crate::store::{Db, LogStore, StateMachine};
use crate::types::{Node, Raft, TypeConfig, Written};
use crate::{GUARANTEES, NAME};

/// One node of the `raft` backend.
#[derive(Debug)]
pub struct RaftBackend {
    inner: Arc<Inner>,
    tasks: Mutex<Option<JoinSet<()>>>,
    /// The store: closed by [`MetadataBackend::shutdown`], cut by
    /// [`MetadataBackend::power_cut`].
    db: Db,
}

/// State shared by the backend and its tasks.
pub(crate) struct Inner {
    pub(crate) me: u64,
    pub(crate) config: RaftConfig,
    pub(crate) raft: Raft,
    pub(crate) applied: Arc<AppliedState>,
    /// The last applied raft log index (see [`StateMachine::raft_applied`]).
    raft_applied: Arc<watch::Sender<u64>>,
    /// Proposals on their way to the group-commit task.
    queue: mpsc::Sender<Pending>,
    cluster: watch::Sender<ClusterView>,
    pub(crate) shut_down: AtomicBool,
    network: Network,
    /// One reused connection per leader we forward to.
    forward: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<Peer>>>>,
    /// When an `AppendEntries` (a leader's entries or heartbeat) last arrived.
    heard_from_leader: Mutex<Instant>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("me", &self.me)
            .field("config", &self.config)
            .field("applied", &self.applied.applied_index())
            .field("shut_down", &self.shut_down)
            .finish_non_exhaustive()
    }
}

pub(crate) fn storage(e: impl std::fmt::Display) -> MetadataError {
    MetadataError::Storage(e.to_string())
}

pub(crate) fn timeout_error(what: &str, after: Duration) -> MetadataError {
    MetadataError::Timeout {
        what: what.to_owned(),
        after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
    }
}

/// Every node of the cluster → its address, this one included: the configured peers, with
/// this node at its own cluster address (the address it listens on); a node without peers is
/// the only member.
pub(crate) fn members(identity: &NodeIdentity) -> Result<BTreeMap<u64, String>, MetadataError> {
    let mut members: BTreeMap<u64, String> = identity
        .peers
        .iter()
        .map(|(id, a)| (id.0, a.clone()))
        .collect();
    if !identity.has_peers() {
        let addr = identity.cluster_addr.clone().unwrap_or_default();
        return Ok(BTreeMap::from([(identity.id.0, addr)]));
    }
    let own = identity
        .cluster_addr
        .clone()
        .or_else(|| members.get(&identity.id.0).cloned())
        .ok_or_else(|| {
            MetadataError::Config(format!(
                "node {} has peers but no cluster address; set its cluster listen address",
                identity.id
            ))
        })?;
    members.insert(identity.id.0, own);
    Ok(members)
}

/// Whether this node initializes a brand-new cluster (see [`RaftConfig::bootstrap`]).
fn bootstraps(config: &RaftConfig, me: u64, members: &BTreeMap<u64, String>) -> bool {
    match config.bootstrap {
        Some(explicit) => explicit,
        None => members.keys().next() == Some(&me),
    }
}

fn raft_config(config: &RaftConfig) -> Result<openraft::Config, MetadataError> {
    openraft::Config {
        cluster_name: config.cluster_id.clone(),
        heartbeat_interval: config.heartbeat_ms,
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        install_snapshot_timeout: config.rpc_timeout_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
        snapshot_max_chunk_size: config.snapshot_chunk_bytes,
        // Purge the log right behind each snapshot: lagging followers get the snapshot.
        max_in_snapshot_log_to_keep: 0,
        // Entries are whole groups of proposals (up to `batch_max_bytes` each); keep one
        // AppendEntries well inside a frame.
        max_payload_entries: (u64::from(config.max_frame_bytes / 2)
            / u64::try_from(config.batch_max_bytes).unwrap_or(u64::MAX))
        .max(1),
        ..Default::default()
    }
    .validate()
    .map_err(|e| MetadataError::Config(format!("metadata.raft: {e}")))
}

impl RaftBackend {
    /// Open (or create) a node: open RocksDB under `data_dir/raft`, start openraft, the peer
    /// listener (when the node has a cluster address) and the readiness watcher, and return
    /// without waiting for any peer or election. A brand-new node that the bootstrap rule
    /// designates initializes the cluster in the background.
    pub async fn open(context: OpenContext) -> Result<Self, MetadataError> {
        let config = RaftConfig::from_figment(&context.config)?;
        let members = members(&context.node)?;
        let me = context.node.id.0;
        let dir = context.data_dir.join("raft");
        std::fs::create_dir_all(&dir).map_err(|e| storage(format!("{}: {e}", dir.display())))?;
        let db = Db::open(&dir, switchyard_rocksdb::LOCK_WAIT)
            .await
            .map_err(|e| storage(format!("{}: {e}", dir.display())))?;
        let pristine = db.is_pristine().map_err(storage)?;
        let log = LogStore::new(db.clone());
        let sm = StateMachine::open(db.clone()).map_err(storage)?;
        let applied = sm.applied();
        let raft_applied = sm.raft_applied();

        let talks = context.node.cluster_addr.is_some() || context.node.has_peers();
        let credentials = if talks {
            Some(context.require_credentials()?)
        } else {
            context.cluster_credentials.clone()
        };
        let listener = match (
            members.get(&me).filter(|addr| !addr.is_empty()),
            &credentials,
        ) {
            (Some(addr), Some(credentials)) if talks => {
                let listener = TcpListener::bind(addr).await.map_err(|e| {
                    MetadataError::Network(format!("binding the cluster address {addr}: {e}"))
                })?;
                Some((listener, credentials.clone()))
            }
            _ => None,
        };
        let network = Network {
            me,
            cluster_id: config.cluster_id.clone(),
            peers: Arc::new(members.clone()),
            max_frame_bytes: config.max_frame_bytes,
            credentials,
        };
        let raft = Raft::new(
            me,
            Arc::new(raft_config(&config)?),
            network.clone(),
            log,
            sm,
        )
        .await
        .map_err(|e| storage(format!("starting openraft: {e}")))?;
        tracing::info!(
            node = me,
            dir = %dir.display(),
            applied = applied.applied_index(),
            pristine,
            "opened the raft store"
        );

        let cluster = watch::Sender::new(ClusterView {
            node: NodeId(me),
            role: Role::Unknown,
            leader: None,
            epoch: 0,
            members: Vec::new(),
            readiness: Readiness::NotReady {
                reason: "starting".into(),
            },
        });
        let (queue, queued) = mpsc::channel(config.batch_max_proposals.max(1) * 4);
        let inner = Arc::new(Inner {
            me,
            config,
            raft,
            applied,
            raft_applied,
            queue,
            cluster,
            shut_down: AtomicBool::new(false),
            network,
            forward: Mutex::new(HashMap::new()),
            heard_from_leader: Mutex::new(Instant::now()),
        });

        let mut tasks = JoinSet::new();
        if let Some((listener, credentials)) = listener {
            let identity = ListenerIdentity {
                me,
                cluster_id: inner.config.cluster_id.clone(),
                max_frame_bytes: inner.config.max_frame_bytes,
                credentials,
            };
            tasks.spawn(network::serve(listener, identity, Arc::clone(&inner)));
        }
        tasks.spawn(Arc::clone(&inner).watch_readiness());
        tasks.spawn(Arc::clone(&inner).watch_leader());
        tasks.spawn(Arc::clone(&inner).run_proposals(queued));
        if pristine && bootstraps(&inner.config, me, &members) {
            tasks.spawn(Arc::clone(&inner).bootstrap(members));
        }
        Ok(Self {
            inner,
            tasks: Mutex::new(Some(tasks)),
            db,
        })
    }

    /// Report the node not ready for `reason` and take its tasks (dropping them aborts them).
    fn stop_serving(&self, reason: &str) -> Option<JoinSet<()>> {
        self.inner.cluster.send_modify(|view| {
            view.role = Role::Unknown;
            view.readiness = Readiness::NotReady {
                reason: reason.into(),
            };
        });
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn check_running(&self) -> Result<(), MetadataError> {
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Err(MetadataError::ShutDown);
        }
        Ok(())
    }
}

impl Drop for RaftBackend {
    /// A dropped node (a crash, in tests) stops its tasks; openraft stops once its last handle
    /// is gone, and the database closes after it.
    fn drop(&mut self) {
        let tasks = self
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(tasks);
    }
}

impl Inner {
    pub(crate) fn propose_timeout(&self) -> Duration {
        Duration::from_millis(self.config.propose_timeout_ms)
    }

    /// Initialize a brand-new cluster with `members` as voters, unless a reachable peer
    /// already belongs to an initialized cluster (then this node waits to be added instead).
    async fn bootstrap(self: Arc<Self>, members: BTreeMap<u64, String>) {
        let rpc_timeout = Duration::from_millis(self.config.rpc_timeout_ms);
        for (&id, _) in members.iter().filter(|(id, _)| **id != self.me) {
            let mut peer = self.network.peer(id, None);
            if let Ok(true) = peer.probe(rpc_timeout).await {
                tracing::warn!(
                    node = self.me,
                    peer = id,
                    "not initializing: a peer already belongs to an initialized cluster"
                );
                return;
            }
        }
        let nodes: BTreeMap<u64, Node> = members
            .into_iter()
            .map(|(id, addr)| (id, Node { addr }))
            .collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => tracing::info!(node = self.me, "initialized a new raft cluster"),
            Err(error) => tracing::warn!(node = self.me, %error, "initializing the cluster"),
        }
    }

    /// End a dead leader's lease early. openraft 0.9 has a follower that heard from a leader
    /// wait out the leader's lease (`election_timeout_max_ms`) and then its own election
    /// timeout before it campaigns: 1.2–1.6 s with the defaults. A node that has not heard
    /// from the last leader it knew for two heartbeats connects to that leader's cluster
    /// address; if the connection is refused — nothing listens there: the process is gone —
    /// it campaigns at once, at most once per term. A survivor still within the lease refuses
    /// the first campaign, but its own campaign ends its lease; the next heartbeat's campaign
    /// (a higher term) then wins, as does the higher node id of two in one term. A leader
    /// that is alive but slow, stopped or cut off still accepts connections (or the attempt
    /// times out), so only the election timeouts depose it.
    async fn watch_leader(self: Arc<Self>) {
        let heartbeat = Duration::from_millis(self.config.heartbeat_ms.max(1));
        let mut check = tokio::time::interval(heartbeat);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let metrics = self.raft.metrics();
        let mut known: Option<(u64, String)> = None;
        let mut campaigned_in: Option<u64> = None;
        loop {
            check.tick().await;
            let term = {
                let m = metrics.borrow();
                if let Some(leader) = m.current_leader.filter(|l| *l != self.me)
                    && let Some(node) = m.membership_config.membership().get_node(&leader)
                {
                    known = Some((leader, node.addr.clone()));
                }
                if !matches!(m.state, ServerState::Follower | ServerState::Candidate) {
                    continue;
                }
                m.current_term
            };
            let Some((leader, addr)) = &known else {
                continue;
            };
            let silent = self
                .heard_from_leader
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .elapsed();
            if silent < heartbeat * 2 || campaigned_in == Some(term) {
                continue;
            }
            let attempt = tokio::time::timeout(heartbeat, tokio::net::TcpStream::connect(addr));
            let Ok(Err(error)) = attempt.await else {
                continue;
            };
            if error.kind() != std::io::ErrorKind::ConnectionRefused {
                continue;
            }
            tracing::info!(
                node = self.me,
                leader,
                %addr,
                term,
                "the leader refuses connections; campaigning without waiting out its lease"
            );
            campaigned_in = Some(term);
            if let Err(error) = self.raft.trigger().elect().await {
                tracing::warn!(node = self.me, %error, "could not start an election");
            }
        }
    }

    /// Publish the cluster view when a metrics change changes it, until openraft stops. A leader
    /// also checks every `election_timeout_min_ms` that a majority still answers it (openraft
    /// leaders do not step down by themselves): one cut off from its quorum reports itself
    /// not ready until a majority answers again.
    async fn watch_readiness(self: Arc<Self>) {
        let mut metrics = self.raft.metrics();
        // The term in which this node was last seen caught up with a known leader.
        let mut ready_term: Option<u64> = None;
        let mut check = tokio::time::interval(Duration::from_millis(
            self.config.election_timeout_min_ms.max(1),
        ));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut quorum_lost = false;
        loop {
            let m = metrics.borrow_and_update().clone();
            let mut readiness = self.readiness(&m, &mut ready_term).await;
            if quorum_lost && m.state == ServerState::Leader {
                readiness = Readiness::NotReady {
                    reason: format!(
                        "leading term {} without a quorum: no majority answered within {} ms",
                        m.current_term,
                        2 * self.config.election_timeout_max_ms
                    ),
                };
            }
            // Checked under the view's lock: shutting down sets `shut_down` before it
            // publishes "not ready", so a view computed before that cannot overwrite it.
            // Watchers hear only of changes: most metrics changes (every write's append and
            // apply) leave the view as it was.
            let mut stopped = false;
            self.cluster.send_if_modified(|current| {
                stopped = self.shut_down.load(Ordering::Acquire);
                let next = view(self.me, &m, readiness);
                let changed = !stopped && *current != next;
                if changed {
                    *current = next;
                }
                changed
            });
            if stopped {
                return;
            }
            tokio::select! {
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = check.tick() => {
                    quorum_lost = m.state == ServerState::Leader && !self.majority_answers().await;
                }
            }
        }
    }

    /// Whether a majority confirms this node's leadership (a heartbeat round, as for a
    /// linearizable read) within twice the longest election timeout: a loaded node is not
    /// taken for a cut-off one.
    async fn majority_answers(&self) -> bool {
        let within = Duration::from_millis(2 * self.config.election_timeout_max_ms);
        matches!(
            tokio::time::timeout(within, self.raft.ensure_linearizable()).await,
            Ok(Ok(_))
        )
    }

    async fn readiness(
        &self,
        m: &RaftMetrics<u64, Node>,
        ready_term: &mut Option<u64>,
    ) -> Readiness {
        if m.current_leader.is_none() || m.state == ServerState::Shutdown {
            *ready_term = None;
            return Readiness::NotReady {
                reason: "no raft leader known".into(),
            };
        }
        if *ready_term == Some(m.current_term) {
            return Readiness::Ready;
        }
        let committed = self
            .raft
            .with_raft_state(|st| st.committed.map(|c| c.index))
            .await
            .ok()
            .flatten();
        let applied = m.last_applied.map(|l| l.index);
        if applied >= committed {
            *ready_term = Some(m.current_term);
            Readiness::Ready
        } else {
            Readiness::NotReady {
                reason: format!(
                    "catching up: applied {} of committed {}",
                    applied.unwrap_or(0),
                    committed.unwrap_or(0)
                ),
            }
        }
    }

    /// Wait until openraft's metrics change (a leader appears, a term passes), at most until
    /// `deadline`; a short pause bounds the wait when nothing changes (an unreachable leader).
    pub(crate) async fn await_change(&self, deadline: Instant) {
        let mut metrics = self.raft.metrics();
        // A cloned receiver may hold an unseen version; only later changes count.
        metrics.borrow_and_update();
        let pause = Instant::now() + Duration::from_millis(self.config.heartbeat_ms);
        let _ = tokio::time::timeout_at(deadline.min(pause), metrics.changed()).await;
    }

    fn forward_peer(&self, leader: u64) -> Arc<tokio::sync::Mutex<Peer>> {
        let mut pool = self.forward.lock().unwrap_or_else(PoisonError::into_inner);
        let node = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned();
        Arc::clone(pool.entry(leader).or_insert_with(|| {
            Arc::new(tokio::sync::Mutex::new(
                self.network.peer(leader, node.as_ref()),
            ))
        }))
    }

    /// One call to the leader on the reused forwarding connection.
    pub(crate) async fn call_leader(
        &self,
        leader: u64,
        request: &Request,
        deadline: Instant,
    ) -> Result<Response, NetError> {
        let peer = self.forward_peer(leader);
        let mut peer = peer.lock().await;
        let left = deadline.saturating_duration_since(Instant::now());
        peer.call(request, left).await
    }

    /// Wait until this node applied raft log entry `index`, then return the view.
    async fn wait_raft_applied(
        &self,
        index: u64,
        timeout: Duration,
    ) -> Result<Arc<StateView>, MetadataError> {
        let mut applied = self.raft_applied.subscribe();
        match tokio::time::timeout(timeout, applied.wait_for(|applied| *applied >= index)).await {
            Ok(Ok(_)) => Ok(self.applied.view()),
            Ok(Err(_)) => Err(MetadataError::ShutDown),
            Err(_) => Err(timeout_error(
                &format!("raft entry {index} to apply"),
                timeout,
            )),
        }
    }

    /// The read index confirmed by the leader, this node or another; retried until `deadline`.
    async fn read_index_until(&self, deadline: Instant) -> Result<u64, MetadataError> {
        loop {
            let leader = match self.raft.ensure_linearizable().await {
                Ok(read) => return Ok(read.map_or(0, |l| l.index)),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => f.leader_id,
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => None,
                Err(RaftError::Fatal(e)) => return Err(self.fatal(e)),
            };
            if let Some(leader) = leader.filter(|l| *l != self.me) {
                match self
                    .call_leader(leader, &Request::ReadIndex, deadline)
                    .await
                {
                    Ok(Response::ReadIndex(Ok(index))) => return Ok(index),
                    Ok(Response::ReadIndex(Err(e))) if !e.is_retriable() => return Err(e),
                    Ok(Response::ReadIndex(Err(_))) | Err(_) => {}
                    Ok(_) => {
                        return Err(MetadataError::Network(
                            "unexpected response to ReadIndex".into(),
                        ));
                    }
                }
            }
            self.await_change(deadline).await;
        }
    }

    pub(crate) fn fatal(&self, error: openraft::error::Fatal<u64>) -> MetadataError {
        if self.shut_down.load(Ordering::Acquire)
            || matches!(error, openraft::error::Fatal::Stopped)
        {
            MetadataError::ShutDown
        } else {
            storage(error)
        }
    }

    pub(crate) fn not_leader(leader: Option<u64>) -> MetadataError {
        MetadataError::NotLeader {
            leader: leader.map(NodeId),
        }
    }
}

/// A proposal's answer from its metadata log position, the leadership that wrote it and
/// apply's verdict.
pub(crate) fn verdict(
    index: LogIndex,
    term: u64,
    leader: u64,
    result: Result<Outcome, Rejection>,
) -> Result<Proposed, MetadataError> {
    match result {
        Ok(outcome) => Ok(Proposed {
            index,
            epoch: term,
            leader: NodeId(leader),
            outcome,
        }),
        Err(rejection) => Err(MetadataError::Rejected(rejection)),
    }
}

fn view(me: u64, m: &RaftMetrics<u64, Node>, readiness: Readiness) -> ClusterView {
    let role = match m.state {
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Candidate => Role::Candidate,
        ServerState::Learner => Role::Learner,
        _ => Role::Unknown,
    };
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, node)| ClusterMember {
            id: NodeId(*id),
            addr: Some(node.addr.clone()).filter(|a| !a.is_empty()),
            voter: voters.contains(id),
        })
        .collect();
    ClusterView {
        node: NodeId(me),
        role,
        leader: m.current_leader.map(NodeId),
        epoch: m.current_term,
        members,
        readiness,
    }
}

impl Handler for Inner {
    async fn initialized(&self) -> bool {
        self.raft.is_initialized().await.unwrap_or(false)
    }

    async fn handle(&self, request: Request) -> Response {
        match request {
            Request::AppendEntries(rpc) => {
                *self
                    .heard_from_leader
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Instant::now();
                Response::AppendEntries(self.raft.append_entries(rpc).await)
            }
            Request::Vote(rpc) => Response::Vote(self.raft.vote(rpc).await),
            Request::InstallSnapshot(rpc) => {
                Response::InstallSnapshot(self.raft.install_snapshot(rpc).await)
            }
            Request::Propose(commands) => Response::Propose(self.propose_here(commands).await),
            Request::ChangeMembership { change, forwarding } => {
                Response::ChangeMembership(self.change_membership(change, forwarding).await)
            }
            Request::ReadIndex => Response::ReadIndex(self.read_index_here().await),
        }
    }
}

impl Inner {
    /// A follower's read-index request: confirm leadership with a quorum, answer the index.
    async fn read_index_here(&self) -> Result<u64, MetadataError> {
        let timeout = self.propose_timeout();
        match tokio::time::timeout(timeout, self.raft.get_read_log_id()).await {
            Ok(Ok((read, _))) => Ok(read.map_or(0, |l| l.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(Self::not_leader(f.leader_id))
            }
            Ok(Err(RaftError::APIError(e))) => Err(MetadataError::NotReady {
                reason: e.to_string(),
            }),
            Ok(Err(RaftError::Fatal(e))) => Err(self.fatal(e)),
            Err(_) => Err(timeout_error("the read index", timeout)),
        }
    }
}

/// Whether a membership change that reaches a follower goes on to the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Forwarding {
    /// Forward it to the leader (a local caller, or an operator's request).
    ToLeader,
    /// Answer `NotLeader` (a request another node already forwarded).
    Never,
}

impl Inner {
    /// Add or remove a node; on a follower, forward to the leader when `forwarding` allows.
    /// Returns the leader's cluster view once it shows the committed membership.
    pub(crate) async fn change_membership(
        &self,
        change: MembershipChange,
        forwarding: Forwarding,
    ) -> Result<ClusterView, MetadataError> {
        let timeout = self.propose_timeout();
        let deadline = Instant::now() + timeout;
        loop {
            let leader = match self.change_membership_here(&change, deadline).await? {
                Ok(response) => return self.show_membership(response, timeout).await,
                Err(leader) => leader,
            };
            match leader.filter(|l| *l != self.me) {
                Some(leader) if forwarding == Forwarding::ToLeader => {
                    let request = Request::ChangeMembership {
                        change: change.clone(),
                        forwarding: Forwarding::Never,
                    };
                    match self.call_leader(leader, &request, deadline).await {
                        Ok(Response::ChangeMembership(result)) => return result,
                        Ok(_) => {
                            return Err(MetadataError::Network(
                                "unexpected response to ChangeMembership".into(),
                            ));
                        }
                        Err(e) if Instant::now() >= deadline => return Err(e.into()),
                        // The leader may be gone: wait for leadership to change, then ask
                        // again (a change that did commit is then refused as already made).
                        Err(_) => self.await_change(deadline).await,
                    }
                }
                Some(leader) => return Err(Inner::not_leader(Some(leader))),
                // No leader known yet (an election is running): wait for one.
                None if Instant::now() < deadline => self.await_change(deadline).await,
                None => return Err(Inner::not_leader(None)),
            }
        }
    }

    /// Apply `change` through openraft on this node, until `deadline`: the committed response,
    /// or `Err(leader)` when this node does not lead.
    async fn change_membership_here(
        &self,
        change: &MembershipChange,
        deadline: Instant,
    ) -> Result<Result<ClientWriteResponse<TypeConfig>, Option<u64>>, MetadataError> {
        let raft = &self.raft;
        let timeout = self.propose_timeout();
        let result = match change.clone() {
            MembershipChange::AddNode { id, addr } => {
                tokio::time::timeout_at(deadline, async {
                    raft.add_learner(id.0, Node { addr }, true).await?;
                    raft.change_membership(
                        ChangeMembers::AddVoterIds(BTreeSet::from([id.0])),
                        false,
                    )
                    .await
                })
                .await
            }
            MembershipChange::RemoveNode { id } => {
                let known = raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .get_node(&id.0)
                    .is_some();
                if !known {
                    return Err(MetadataError::Config(format!(
                        "node {id} is not a member of this cluster"
                    )));
                }
                tokio::time::timeout_at(
                    deadline,
                    raft.change_membership(
                        ChangeMembers::RemoveVoters(BTreeSet::from([id.0])),
                        false,
                    ),
                )
                .await
            }
            MembershipChange::Promote { .. } => {
                return Err(MetadataError::Unsupported {
                    what: "promotion: raft elects its leader automatically".into(),
                });
            }
            _ => {
                return Err(MetadataError::Unsupported {
                    what: "this membership change".into(),
                });
            }
        };
        match result {
            Ok(Ok(response)) => Ok(Ok(response)),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Ok(Err(f.leader_id))
            }
            Ok(Err(RaftError::APIError(e))) => Err(MetadataError::Config(e.to_string())),
            Ok(Err(RaftError::Fatal(e))) => Err(self.fatal(e)),
            Err(_) => Err(timeout_error("the membership change to commit", timeout)),
        }
    }

    /// The cluster view once this (leader) node applied a committed membership change and its
    /// watcher published it.
    async fn show_membership(
        &self,
        response: ClientWriteResponse<TypeConfig>,
        timeout: Duration,
    ) -> Result<ClusterView, MetadataError> {
        self.wait_raft_applied(response.log_id.index, timeout)
            .await?;
        let wanted: Option<BTreeSet<(u64, bool)>> = response.membership.as_ref().map(|m| {
            let voters: BTreeSet<u64> = m.voter_ids().collect();
            m.nodes()
                .map(|(id, _)| (*id, voters.contains(id)))
                .collect()
        });
        let mut views = self.cluster.subscribe();
        let seen = tokio::time::timeout(
            timeout,
            views.wait_for(|v| {
                wanted.as_ref().is_none_or(|wanted| {
                    let have: BTreeSet<(u64, bool)> =
                        v.members.iter().map(|m| (m.id.0, m.voter)).collect();
                    *wanted == have
                })
            }),
        )
        .await;
        match seen {
            Ok(Ok(view)) => Ok(view.clone()),
            Ok(Err(_)) => Err(MetadataError::ShutDown),
            Err(_) => Err(timeout_error("the new membership to show", timeout)),
        }
    }
}

#[async_trait]
impl MetadataBackend for RaftBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn guarantees(&self) -> Guarantees {
        GUARANTEES
    }

    async fn propose(&self, command: MetadataCommand) -> Result<Proposed, MetadataError> {
        self.check_running()?;
        command.check_size()?;
        let timeout = self.inner.propose_timeout();
        let deadline = Instant::now() + timeout;
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            command,
            deadline,
            reply,
        };
        let proposed = async {
            self.inner
                .queue
                .send(pending)
                .await
                .map_err(|_| MetadataError::ShutDown)?;
            answer.await.map_err(|_| MetadataError::ShutDown)?
        };
        tokio::time::timeout_at(deadline, proposed)
            .await
            .unwrap_or_else(|_| Err(timeout_error("the proposal to commit", timeout)))
    }

    /// An entry of its own, written here past the group-commit queue (whose groups are
    /// forwarded when this node does not lead).
    async fn propose_as_leader(&self, command: MetadataCommand) -> Result<Proposed, MetadataError> {
        self.check_running()?;
        command.check_size()?;
        let Written {
            term,
            leader,
            applied,
        } = self.inner.propose_here(vec![command]).await?;
        let Ok([(index, result)]) = <[_; 1]>::try_from(applied) else {
            return Err(storage("an entry of one proposal answered another count"));
        };
        self.inner
            .applied
            .wait_applied(index, self.inner.propose_timeout())
            .await?;
        verdict(index, term, leader, result)
    }

    fn local(&self) -> Arc<StateView> {
        self.inner.applied.view()
    }

    async fn read_linearizable(&self) -> Result<Arc<StateView>, MetadataError> {
        self.check_running()?;
        let timeout = self.inner.propose_timeout();
        let deadline = Instant::now() + timeout;
        let index = tokio::time::timeout_at(deadline, self.inner.read_index_until(deadline))
            .await
            .unwrap_or_else(|_| Err(timeout_error("a linearizable read index", timeout)))?;
        let left = deadline.saturating_duration_since(Instant::now());
        self.inner.wait_raft_applied(index, left).await
    }

    fn subscribe(&self) -> ChangeStream {
        self.inner.applied.subscribe()
    }

    async fn wait_applied(
        &self,
        index: LogIndex,
        timeout: Duration,
    ) -> Result<Arc<StateView>, MetadataError> {
        self.inner.applied.wait_applied(index, timeout).await
    }

    fn cluster(&self) -> watch::Receiver<ClusterView> {
        self.inner.cluster.subscribe()
    }

    async fn progress(&self) -> ReplicationProgress {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let applied = metrics.last_applied.map_or(0, |l| l.index);
        let committed = self
            .inner
            .raft
            .with_raft_state(|st| st.committed.map(|c| c.index))
            .await
            .ok()
            .flatten()
            .unwrap_or(applied);
        let followers = metrics
            .replication
            .iter()
            .flatten()
            .filter(|(id, _)| **id != self.inner.me)
            .map(|(id, matched)| (NodeId(*id), matched.map_or(0, |l| l.index)))
            .collect();
        ReplicationProgress {
            last_index: metrics.last_log_index.unwrap_or(0),
            committed,
            applied,
            followers,
        }
    }

    async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<ClusterView, MetadataError> {
        self.check_running()?;
        self.inner
            .change_membership(change, Forwarding::ToLeader)
            .await
    }

    /// Cut the power as [`Db::power_cut`] does, then stop as a crash would: the tasks end,
    /// and openraft, whose next disk access fails, stops with the node's last handle.
    fn power_cut(&self, keep_bytes: u64) -> Result<PowerCut, MetadataError> {
        self.check_running()?;
        let cut = self
            .db
            .power_cut(keep_bytes)
            .map_err(|e| storage(format!("cutting the power: {e}")))?;
        self.inner.shut_down.store(true, Ordering::Release);
        drop(self.stop_serving("power cut"));
        Ok(cut)
    }

    async fn shutdown(&self) -> Result<(), MetadataError> {
        if self.inner.shut_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some(mut tasks) = self.stop_serving("shut down") {
            tasks.shutdown().await;
        }
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| storage(format!("stopping openraft: {e}")))?;
        // The handle may outlive the shutdown; the database must not stay open with it.
        self.db.close().map_err(storage)
    }
}
