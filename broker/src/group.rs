//! The consumer group coordinator.
//!
//! Joins, syncs, heartbeats and session timers live here, in memory; every durable fact — a new
//! generation with its members, the leader's assignment — is a metadata proposal
//! (`StartGeneration`, `SetGroupAssignment`), so the group survives a restart and every node
//! sees the same generation. A group is loaded from the metadata state the first time it is
//! touched.
//!
//! The state machine follows Kafka's classic protocol: Empty → PreparingRebalance (members
//! (re)join; the join completes when every known member has rejoined, or at the rebalance
//! deadline — for a new group after `group.initial.rebalance.delay.ms`) → CompletingRebalance
//! (the leader computes the assignment) → Stable. Members that stop heartbeating for their
//! session timeout are removed, which starts a rebalance.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex as StdMutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use switchyard_backend_api::{
    Broker as StoredBroker, GroupId, GroupMember, MemberId, MetadataCommand, MetadataState, Outcome,
};
use tokio::sync::{Mutex, Notify, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::config::KafkaSettings;
use crate::kafka::errors::group_error;

/// How often session timers are checked.
const SESSION_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// A group's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No members.
    Empty,
    /// Members are (re)joining.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Assigned.
    Stable,
}

impl Phase {
    /// Kafka's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
        }
    }
}

/// A JoinGroup as the coordinator sees it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Group.
    pub group: String,
    /// Member id; empty for a new member.
    pub member_id: String,
    /// Static membership id.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Protocol type.
    pub protocol_type: String,
    /// Supported protocols with their metadata, in preference order.
    pub protocols: Vec<(String, Bytes)>,
    /// Whether the client understands MEMBER_ID_REQUIRED (JoinGroup v4+).
    pub require_known_member_id: bool,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    /// Error, if any.
    pub error: Option<ResponseError>,
    /// Generation.
    pub generation: i32,
    /// Protocol type.
    pub protocol_type: Option<String>,
    /// Chosen protocol.
    pub protocol: Option<String>,
    /// Leader member id.
    pub leader: String,
    /// The member's id.
    pub member_id: String,
    /// Members with their metadata (for the leader only).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    fn error(error: ResponseError, member_id: String) -> Self {
        Self {
            error: Some(error),
            generation: -1,
            member_id,
            ..Self::default()
        }
    }
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    /// Error, if any.
    pub error: Option<ResponseError>,
    /// Protocol type.
    pub protocol_type: Option<String>,
    /// Chosen protocol.
    pub protocol: Option<String>,
    /// The member's assignment.
    pub assignment: Bytes,
}

impl SyncResult {
    fn error(error: ResponseError) -> Self {
        Self {
            error: Some(error),
            ..Self::default()
        }
    }
}

/// A described group.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// Phase.
    pub phase: Phase,
    /// Protocol type.
    pub protocol_type: String,
    /// Chosen protocol.
    pub protocol: String,
    /// Members: id, instance id, client id, host, metadata, assignment.
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

#[derive(Debug)]
struct Member {
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    deadline: Instant,
}

#[derive(Debug)]
struct Group {
    id: String,
    phase: Phase,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, allowed to join once before their
    /// deadline (the session timeout the join asked for), then forgotten.
    issued: HashMap<String, Instant>,
    joins: BTreeMap<String, oneshot::Sender<JoinResult>>,
    syncs: BTreeMap<String, oneshot::Sender<SyncResult>>,
    /// Wakes the task that completes the current join phase.
    join_complete: Arc<Notify>,
    /// Whether the current join phase is a new group's initial, delayed one.
    initial_delay: bool,
}

/// The coordinator of every group this broker serves.
#[derive(Debug)]
pub struct GroupCoordinator {
    broker: Weak<Broker>,
    groups: StdMutex<HashMap<String, Arc<Mutex<Group>>>>,
    initial_delay: Duration,
    min_session: i32,
    max_session: i32,
}

impl GroupCoordinator {
    /// A coordinator for `broker`.
    pub(crate) fn new(broker: Weak<Broker>, settings: &KafkaSettings) -> Self {
        Self {
            broker,
            groups: StdMutex::new(HashMap::new()),
            initial_delay: Duration::from_millis(settings.group_initial_rebalance_delay_ms),
            min_session: settings.group_min_session_timeout_ms,
            max_session: settings.group_max_session_timeout_ms,
        }
    }

    fn broker(&self) -> Option<Arc<Broker>> {
        self.broker.upgrade()
    }

    /// The runtime of `id`, loaded from the metadata state on first use.
    fn group(&self, broker: &Broker, id: &str) -> Arc<Mutex<Group>> {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            groups
                .entry(id.to_owned())
                .or_insert_with(|| Arc::new(Mutex::new(load(broker, id)))),
        )
    }

    /// The runtime of `id` if the group exists, in memory or in the metadata state; a request
    /// naming a group that does not exist creates nothing.
    fn existing(&self, broker: &Broker, id: &str) -> Option<Arc<Mutex<Group>>> {
        {
            let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(group) = groups.get(id) {
                return Some(Arc::clone(group));
            }
        }
        broker
            .metadata()
            .state
            .group(&GroupId(id.to_owned()))
            .is_some()
            .then(|| self.group(broker, id))
    }

    /// Forget the runtime of every group in `idle` that is still idle and that no request is
    /// using: it holds nothing the metadata state does not, and is loaded again when touched.
    fn evict(&self, idle: &[String]) {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        for id in idle {
            let unused = groups.get(id).is_some_and(|group| {
                Arc::strong_count(group) == 1 && group.try_lock().is_ok_and(|g| g.is_idle())
            });
            if unused {
                groups.remove(id);
            }
        }
    }

    /// Drop the runtime of every group another broker coordinates now, so that if a group
    /// comes back here it is loaded afresh from the metadata state.
    pub(crate) fn unload_foreign(&self, broker: &Broker) {
        let view = broker.metadata();
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        groups.retain(|id, _| coordinator_of(&view.state, id).is_some_and(|b| b.id == broker.id()));
    }

    /// Groups with a runtime on this broker.
    fn loaded(&self) -> Vec<Arc<Mutex<Group>>> {
        let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        groups.values().cloned().collect()
    }

    /// Handle a JoinGroup; returns when the join phase completes.
    pub async fn join(&self, request: JoinRequest) -> JoinResult {
        let Some(broker) = self.broker() else {
            return JoinResult::error(ResponseError::CoordinatorNotAvailable, request.member_id);
        };
        if request.group.is_empty() {
            return JoinResult::error(ResponseError::InvalidGroupId, request.member_id);
        }
        if request.session_timeout_ms < self.min_session
            || request.session_timeout_ms > self.max_session
        {
            return JoinResult::error(ResponseError::InvalidSessionTimeout, request.member_id);
        }
        if request.protocols.is_empty() || request.protocol_type.is_empty() {
            return JoinResult::error(ResponseError::InconsistentGroupProtocol, request.member_id);
        }
        let group = self.group(&broker, &request.group);
        let (tx, rx) = oneshot::channel();
        let rebalance_timeout;
        {
            let mut g = group.lock().await;
            if !g.members.is_empty() || g.phase != Phase::Empty {
                let protocol_type_clash = g
                    .protocol_type
                    .as_ref()
                    .is_some_and(|t| *t != request.protocol_type && !g.members.is_empty());
                let shared = g.members.values().all(|m| {
                    m.protocols
                        .iter()
                        .any(|(name, _)| request.protocols.iter().any(|(p, _)| p == name))
                });
                if protocol_type_clash || !shared {
                    return JoinResult::error(
                        ResponseError::InconsistentGroupProtocol,
                        request.member_id,
                    );
                }
            }
            let member_id = if request.member_id.is_empty() {
                let id = format!("{}-{}", request.client_id, uuid::Uuid::new_v4());
                if request.require_known_member_id {
                    g.issued.insert(
                        id.clone(),
                        Instant::now() + millis(request.session_timeout_ms),
                    );
                    return JoinResult::error(ResponseError::MemberIdRequired, id);
                }
                id
            } else if g.members.contains_key(&request.member_id)
                || g.issued.remove(&request.member_id).is_some()
            {
                request.member_id.clone()
            } else {
                return JoinResult::error(ResponseError::UnknownMemberId, request.member_id);
            };
            let session_timeout = millis(request.session_timeout_ms);
            // A follower rejoining a stable group with the same protocols gets the current
            // generation back without a rebalance, as in Kafka.
            if g.phase == Phase::Stable
                && g.leader.as_deref() != Some(member_id.as_str())
                && g.members
                    .get(&member_id)
                    .is_some_and(|m| m.protocols == request.protocols)
            {
                let generation = g.generation;
                let (protocol_type, protocol, leader) = (
                    g.protocol_type.clone(),
                    g.protocol.clone(),
                    g.leader.clone(),
                );
                if let Some(member) = g.members.get_mut(&member_id) {
                    member.deadline = Instant::now() + member.session_timeout;
                }
                return JoinResult {
                    error: None,
                    generation,
                    protocol_type,
                    protocol,
                    leader: leader.unwrap_or_default(),
                    member_id,
                    members: Vec::new(),
                };
            }
            let member = Member {
                group_instance_id: request.group_instance_id.clone(),
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                session_timeout,
                rebalance_timeout: millis(request.rebalance_timeout_ms),
                protocol_type: request.protocol_type.clone(),
                protocols: request.protocols.clone(),
                assignment: g
                    .members
                    .get(&member_id)
                    .map_or_else(Bytes::new, |m| m.assignment.clone()),
                deadline: Instant::now() + session_timeout,
            };
            g.members.insert(member_id.clone(), member);
            if let Some(old) = g.joins.insert(member_id.clone(), tx) {
                let _ = old.send(JoinResult::error(
                    ResponseError::RebalanceInProgress,
                    member_id.clone(),
                ));
            }
            if g.phase != Phase::PreparingRebalance {
                self.prepare_rebalance(&broker, &group, &mut g, "member joined");
            }
            rebalance_timeout = g
                .members
                .values()
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or_default()
                .max(self.initial_delay);
            if !g.initial_delay && g.joins.len() == g.members.len() {
                g.join_complete.notify_one();
            }
        }
        match tokio::time::timeout(rebalance_timeout + Duration::from_secs(5), rx).await {
            Ok(Ok(result)) => result,
            _ => JoinResult::error(ResponseError::RebalanceInProgress, request.member_id),
        }
    }

    /// Enter PreparingRebalance and start the task that completes the join phase.
    fn prepare_rebalance(
        &self,
        broker: &Arc<Broker>,
        handle: &Arc<Mutex<Group>>,
        g: &mut Group,
        reason: &str,
    ) {
        info!(group = %g.id, generation = g.generation, reason, "preparing rebalance");
        for (_, sync) in std::mem::take(&mut g.syncs) {
            let _ = sync.send(SyncResult::error(ResponseError::RebalanceInProgress));
        }
        // A group coming out of Empty waits for more members (group.initial.rebalance.delay.ms).
        g.initial_delay = g.phase == Phase::Empty;
        g.phase = Phase::PreparingRebalance;
        g.join_complete = Arc::new(Notify::new());
        let wait = if g.initial_delay {
            self.initial_delay
        } else {
            g.members
                .values()
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or_default()
        };
        let notify = Arc::clone(&g.join_complete);
        let broker = Arc::clone(broker);
        let handle = Arc::clone(handle);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(wait, notify.notified()).await;
            let mut g = handle.lock().await;
            if g.phase == Phase::PreparingRebalance && Arc::ptr_eq(&g.join_complete, &notify) {
                complete_join(&broker, &mut g).await;
            }
        });
    }

    /// Handle a SyncGroup; a follower waits for the leader's assignment.
    pub async fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        protocol_type: Option<&str>,
        protocol: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncResult {
        let Some(broker) = self.broker() else {
            return SyncResult::error(ResponseError::CoordinatorNotAvailable);
        };
        let Some(group) = self.existing(&broker, group_id) else {
            return SyncResult::error(ResponseError::UnknownMemberId);
        };
        let rx = {
            let mut g = group.lock().await;
            if !g.members.contains_key(member_id) {
                return SyncResult::error(ResponseError::UnknownMemberId);
            }
            if g.generation != generation {
                return SyncResult::error(ResponseError::IllegalGeneration);
            }
            if protocol_type.is_some_and(|t| Some(t) != g.protocol_type.as_deref())
                || protocol.is_some_and(|p| Some(p) != g.protocol.as_deref())
            {
                return SyncResult::error(ResponseError::InconsistentGroupProtocol);
            }
            match g.phase {
                Phase::Empty | Phase::PreparingRebalance => {
                    return SyncResult::error(ResponseError::RebalanceInProgress);
                }
                Phase::Stable => return assignment_of(&g, member_id),
                Phase::CompletingRebalance => {}
            }
            if g.leader.as_deref() == Some(member_id) {
                let command = MetadataCommand::SetGroupAssignment {
                    group: GroupId(g.id.clone()),
                    generation,
                    leader: MemberId(member_id.to_owned()),
                    assignments: assignments
                        .iter()
                        .map(|(m, a)| (MemberId(m.clone()), a.to_vec()))
                        .collect(),
                };
                if let Err(e) = broker.propose(command).await {
                    warn!(group = %g.id, error = %e, "storing the assignment failed");
                    let error = group_error(&e);
                    for (_, sync) in std::mem::take(&mut g.syncs) {
                        let _ = sync.send(SyncResult::error(error));
                    }
                    return SyncResult::error(error);
                }
                let assigned: BTreeMap<String, Bytes> = assignments.into_iter().collect();
                for (id, member) in g.members.iter_mut() {
                    member.assignment = assigned.get(id).cloned().unwrap_or_default();
                }
                g.phase = Phase::Stable;
                info!(group = %g.id, generation, members = g.members.len(), "group stable");
                for (id, sync) in std::mem::take(&mut g.syncs) {
                    let _ = sync.send(assignment_of(&g, &id));
                }
                return assignment_of(&g, member_id);
            }
            let (tx, rx) = oneshot::channel();
            g.syncs.insert(member_id.to_owned(), tx);
            rx
        };
        match tokio::time::timeout(broker.metadata_timeout() * 6, rx).await {
            Ok(Ok(result)) => result,
            _ => SyncResult::error(ResponseError::RebalanceInProgress),
        }
    }

    /// Handle a Heartbeat.
    pub async fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
    ) -> Option<ResponseError> {
        let broker = self.broker()?;
        let Some(group) = self.existing(&broker, group_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        let mut g = group.lock().await;
        let phase = g.phase;
        let current = g.generation;
        let Some(member) = g.members.get_mut(member_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        member.deadline = Instant::now() + member.session_timeout;
        if phase == Phase::PreparingRebalance {
            return Some(ResponseError::RebalanceInProgress);
        }
        if current != generation {
            return Some(ResponseError::IllegalGeneration);
        }
        None
    }

    /// Handle a LeaveGroup for each member; returns a result per member.
    pub async fn leave(
        &self,
        group_id: &str,
        members: Vec<String>,
    ) -> Vec<(String, Option<ResponseError>)> {
        let Some(broker) = self.broker() else {
            return members
                .into_iter()
                .map(|m| (m, Some(ResponseError::CoordinatorNotAvailable)))
                .collect();
        };
        let Some(group) = self.existing(&broker, group_id) else {
            return members
                .into_iter()
                .map(|m| (m, Some(ResponseError::UnknownMemberId)))
                .collect();
        };
        let mut g = group.lock().await;
        let mut results = Vec::new();
        let mut removed = false;
        for member in members {
            if g.members.remove(&member).is_some() {
                if let Some(join) = g.joins.remove(&member) {
                    let _ = join.send(JoinResult::error(
                        ResponseError::UnknownMemberId,
                        member.clone(),
                    ));
                }
                g.syncs.remove(&member);
                removed = true;
                results.push((member, None));
            } else {
                results.push((member, Some(ResponseError::UnknownMemberId)));
            }
        }
        if removed {
            if g.phase == Phase::PreparingRebalance {
                if g.joins.len() == g.members.len() && !g.initial_delay {
                    g.join_complete.notify_one();
                }
            } else {
                self.prepare_rebalance(&broker, &group, &mut g, "member left");
                if g.members.is_empty() || g.joins.len() == g.members.len() {
                    g.initial_delay = false;
                    g.join_complete.notify_one();
                }
            }
        }
        results
    }

    /// Check that a commit may be made by `member_id` at `generation`: the durable check is in
    /// apply; this refuses commits during a rebalance, as Kafka does.
    pub async fn check_commit(&self, group_id: &str, generation: i32) -> Option<ResponseError> {
        if generation < 0 {
            return None;
        }
        let broker = self.broker()?;
        let group = self.existing(&broker, group_id)?;
        let g = group.lock().await;
        (g.phase == Phase::PreparingRebalance && g.generation == generation)
            .then_some(ResponseError::RebalanceInProgress)
    }

    /// Describe a group (loading it from metadata if needed); `None` if it does not exist.
    pub async fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let broker = self.broker()?;
        let exists = broker
            .metadata()
            .state
            .group(&GroupId(group_id.to_owned()))
            .is_some();
        let loaded = {
            let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
            groups.contains_key(group_id)
        };
        if !exists && !loaded {
            return None;
        }
        let group = self.group(&broker, group_id);
        let g = group.lock().await;
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupDescription {
            phase: g.phase,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            members: g
                .members
                .iter()
                .map(|(id, m)| {
                    let metadata = m
                        .protocols
                        .iter()
                        .find(|(p, _)| *p == protocol)
                        .map_or_else(Bytes::new, |(_, meta)| meta.clone());
                    (
                        id.clone(),
                        m.group_instance_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        metadata,
                        m.assignment.clone(),
                    )
                })
                .collect(),
            protocol,
        })
    }

    /// Every group this broker coordinates, from the metadata state and the runtimes loaded
    /// here: id, protocol type, phase. (Clients list groups on every broker and merge.)
    pub async fn list(&self) -> Vec<(String, String, Phase)> {
        let Some(broker) = self.broker() else {
            return Vec::new();
        };
        self.unload_foreign(&broker);
        let view = broker.metadata();
        let mut listed = BTreeMap::new();
        for g in view
            .state
            .groups()
            .filter(|g| coordinator_of(&view.state, &g.id.0).is_some_and(|b| b.id == broker.id()))
        {
            let phase = if g.members.is_empty() {
                Phase::Empty
            } else {
                Phase::Stable
            };
            listed.insert(g.id.0.clone(), (g.protocol_type.clone(), phase));
        }
        for group in self.loaded() {
            let g = group.lock().await;
            listed.insert(
                g.id.clone(),
                (g.protocol_type.clone().unwrap_or_default(), g.phase),
            );
        }
        listed
            .into_iter()
            .map(|(id, (protocol_type, phase))| (id, protocol_type, phase))
            .collect()
    }

    /// Remove members whose session expired, rebalancing their groups; forget member ids
    /// handed out and never used; evict idle groups. Runs until the broker is dropped.
    pub async fn run_session_timers(broker: Weak<Broker>) {
        let mut tick = tokio::time::interval(SESSION_CHECK_INTERVAL);
        loop {
            tick.tick().await;
            let Some(b) = broker.upgrade() else { return };
            let coordinator = b.groups();
            coordinator.unload_foreign(&b);
            let mut idle = Vec::new();
            for group in coordinator.loaded() {
                let mut g = group.lock().await;
                let now = Instant::now();
                g.issued.retain(|_, deadline| *deadline > now);
                coordinator.expire_members(&b, &group, &mut g, now);
                if g.is_idle() {
                    idle.push(g.id.clone());
                }
            }
            coordinator.evict(&idle);
        }
    }

    /// Remove the members of `g` whose session expired: in every phase, except that a member
    /// whose JoinGroup is waiting for the join phase to complete is alive (as in Kafka).
    fn expire_members(
        &self,
        broker: &Arc<Broker>,
        handle: &Arc<Mutex<Group>>,
        g: &mut Group,
        now: Instant,
    ) {
        let expired: Vec<String> = g
            .members
            .iter()
            .filter(|(id, m)| m.deadline <= now && !g.joins.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        if expired.is_empty() {
            return;
        }
        for id in &expired {
            info!(group = %g.id, member = %id, phase = g.phase.as_str(), "session timed out; removing member");
            g.members.remove(id);
            g.syncs.remove(id);
        }
        if g.phase != Phase::PreparingRebalance {
            self.prepare_rebalance(broker, handle, g, "session timeout");
            g.initial_delay = false;
        }
        // The join phase waited for the expired members; it may be complete without them.
        if !g.initial_delay && g.joins.len() == g.members.len() {
            g.join_complete.notify_one();
        }
    }
}

/// The broker that coordinates `group`: among the live brokers, the one with the highest
/// rendezvous hash of the group id and its broker id. Every node that has applied the same
/// brokers picks the same one, and when a broker is fenced only its own groups move.
pub fn coordinator_of<'a>(state: &'a MetadataState, group: &str) -> Option<&'a StoredBroker> {
    state
        .live_brokers()
        .max_by_key(|b| (rendezvous(group, b.id.0), b.id))
}

/// FNV-1a over the group id and the broker id, finished with the SplitMix64 mix: stable across
/// builds and platforms (unlike `std`'s hasher).
fn rendezvous(group: &str, broker: i32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in group.bytes().chain(broker.to_be_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn assignment_of(g: &Group, member_id: &str) -> SyncResult {
    SyncResult {
        error: None,
        protocol_type: g.protocol_type.clone(),
        protocol: g.protocol.clone(),
        assignment: g
            .members
            .get(member_id)
            .map_or_else(Bytes::new, |m| m.assignment.clone()),
    }
}

impl Group {
    /// Empty and holding nothing in flight: no members, joins, syncs or issued member ids.
    fn is_idle(&self) -> bool {
        self.phase == Phase::Empty
            && self.members.is_empty()
            && self.joins.is_empty()
            && self.syncs.is_empty()
            && self.issued.is_empty()
    }
}

/// A group's runtime from the metadata state: its generation and members, whose session timers
/// start now.
fn load(broker: &Broker, id: &str) -> Group {
    let view = broker.metadata();
    let stored = view.state.group(&GroupId(id.to_owned()));
    let now = Instant::now();
    let members = stored.map_or_else(BTreeMap::new, |g| {
        g.members
            .values()
            .map(|m| {
                let session_timeout = millis(m.session_timeout_ms);
                let member = Member {
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout,
                    rebalance_timeout: millis(m.rebalance_timeout_ms),
                    protocol_type: g.protocol_type.clone(),
                    protocols: g
                        .protocol
                        .iter()
                        .map(|p| (p.clone(), Bytes::from(m.metadata.clone())))
                        .collect(),
                    assignment: Bytes::from(m.assignment.clone()),
                    deadline: now + session_timeout,
                };
                (m.id.0.clone(), member)
            })
            .collect()
    });
    let phase = match stored {
        Some(g) if !g.members.is_empty() && g.assignment_complete => Phase::Stable,
        Some(g) if !g.members.is_empty() => Phase::CompletingRebalance,
        _ => Phase::Empty,
    };
    Group {
        id: id.to_owned(),
        phase,
        generation: stored.map_or(0, |g| g.generation),
        protocol_type: stored
            .map(|g| g.protocol_type.clone())
            .filter(|t| !t.is_empty()),
        protocol: stored.and_then(|g| g.protocol.clone()),
        leader: stored.and_then(|g| g.leader.as_ref().map(|l| l.0.clone())),
        members,
        issued: HashMap::new(),
        joins: BTreeMap::new(),
        syncs: BTreeMap::new(),
        join_complete: Arc::new(Notify::new()),
        initial_delay: false,
    }
}

/// End the join phase: drop members that did not rejoin, choose the protocol and leader,
/// record the generation through the metadata backend, answer every waiting join.
async fn complete_join(broker: &Broker, g: &mut Group) {
    let joined: HashSet<String> = g.joins.keys().cloned().collect();
    g.members.retain(|id, _| joined.contains(id));
    // Every member left has just joined: its session starts afresh (it may have waited in
    // the join phase longer than its session timeout).
    let now = Instant::now();
    for member in g.members.values_mut() {
        member.deadline = now + member.session_timeout;
    }
    let expected_generation = g.generation;
    let protocol_type = g.members.values().next().map(|m| m.protocol_type.clone());
    let protocol = choose_protocol(&g.members);
    let leader = g
        .leader
        .clone()
        .filter(|l| g.members.contains_key(l))
        .or_else(|| g.members.keys().next().cloned());
    let members: Vec<GroupMember> = g
        .members
        .iter()
        .map(|(id, m)| GroupMember {
            id: MemberId(id.clone()),
            group_instance_id: m.group_instance_id.clone(),
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            session_timeout_ms: i32::try_from(m.session_timeout.as_millis()).unwrap_or(i32::MAX),
            rebalance_timeout_ms: i32::try_from(m.rebalance_timeout.as_millis())
                .unwrap_or(i32::MAX),
            metadata: protocol
                .as_ref()
                .and_then(|p| m.protocols.iter().find(|(name, _)| name == p))
                .map_or_else(Vec::new, |(_, meta)| meta.to_vec()),
            assignment: Vec::new(),
        })
        .collect();
    let command = MetadataCommand::StartGeneration {
        group: GroupId(g.id.clone()),
        expected_generation,
        protocol_type: protocol_type.clone().unwrap_or_default(),
        protocol: protocol.clone().filter(|_| !members.is_empty()),
        leader: leader.clone().map(MemberId).filter(|_| !members.is_empty()),
        members: members.clone(),
    };
    match broker.propose(command).await {
        Ok(Outcome::GenerationStarted { generation }) => {
            g.generation = generation;
            g.protocol_type = protocol_type;
            g.protocol = protocol.clone();
            g.leader = leader.clone();
            let now = Instant::now();
            for member in g.members.values_mut() {
                member.assignment = Bytes::new();
                member.deadline = now + member.session_timeout;
            }
            g.phase = if g.members.is_empty() {
                Phase::Empty
            } else {
                Phase::CompletingRebalance
            };
            info!(group = %g.id, generation, members = g.members.len(), "join phase complete");
            let leader = leader.unwrap_or_default();
            let listed: Vec<(String, Option<String>, Bytes)> = members
                .iter()
                .map(|m| {
                    (
                        m.id.0.clone(),
                        m.group_instance_id.clone(),
                        Bytes::from(m.metadata.clone()),
                    )
                })
                .collect();
            for (id, join) in std::mem::take(&mut g.joins) {
                let _ = join.send(JoinResult {
                    error: None,
                    generation,
                    protocol_type: g.protocol_type.clone(),
                    protocol: protocol.clone(),
                    leader: leader.clone(),
                    members: if id == leader {
                        listed.clone()
                    } else {
                        Vec::new()
                    },
                    member_id: id,
                });
            }
        }
        other => {
            let error = match &other {
                Err(e) => group_error(e),
                Ok(_) => ResponseError::UnknownServerError,
            };
            warn!(group = %g.id, result = ?other, "starting a generation failed");
            // Re-read the durable generation so the next attempt proposes from it.
            // Members stay known so their next join is accepted.
            g.generation = load(broker, &g.id).generation;
            g.phase = Phase::Empty;
            for (id, join) in std::mem::take(&mut g.joins) {
                let _ = join.send(JoinResult::error(error, id));
            }
            debug!(group = %g.id, "join phase abandoned");
        }
    }
}

/// The protocol every member supports that most members list first among those.
fn choose_protocol(members: &BTreeMap<String, Member>) -> Option<String> {
    let first = members.values().next()?;
    let candidates: Vec<&String> = first
        .protocols
        .iter()
        .map(|(name, _)| name)
        .filter(|name| {
            members
                .values()
                .all(|m| m.protocols.iter().any(|(p, _)| p == *name))
        })
        .collect();
    let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
    for member in members.values() {
        if let Some((vote, _)) = member
            .protocols
            .iter()
            .find(|(p, _)| candidates.contains(&p))
        {
            *votes.entry(vote).or_default() += 1;
        }
    }
    candidates
        .into_iter()
        .max_by_key(|c| (votes.get(c).copied().unwrap_or(0), std::cmp::Reverse(*c)))
        .cloned()
}

#[cfg(test)]
mod tests {
    use switchyard_backend_api::{BrokerId, MetadataCommand};

    use super::*;

    fn state_with(brokers: &[i32]) -> MetadataState {
        let mut state = MetadataState::default();
        for id in brokers {
            let registered = state.apply(&MetadataCommand::RegisterBroker {
                id: BrokerId(*id),
                host: "localhost".into(),
                port: 9092,
                rack: None,
            });
            assert!(registered.is_ok(), "{registered:?}");
        }
        state
    }

    fn coordinators(state: &MetadataState, groups: &[String]) -> Vec<Option<i32>> {
        groups
            .iter()
            .map(|g| coordinator_of(state, g).map(|b| b.id.0))
            .collect()
    }

    #[test]
    fn every_live_broker_coordinates_some_groups_and_only_a_fenced_brokers_groups_move() {
        let groups: Vec<String> = (0..300).map(|i| format!("group-{i}")).collect();
        let mut state = state_with(&[1, 2, 3]);
        let before = coordinators(&state, &groups);
        assert_eq!(before, coordinators(&state_with(&[3, 1, 2]), &groups));
        for id in [1, 2, 3] {
            let count = before.iter().filter(|c| **c == Some(id)).count();
            assert!(count > 50, "broker {id} coordinates {count} of 300 groups");
        }
        let incarnation = state.broker(BrokerId(2)).map_or(0, |b| b.incarnation);
        let fenced = state.apply(&MetadataCommand::FenceBroker {
            id: BrokerId(2),
            incarnation,
        });
        assert!(fenced.is_ok(), "{fenced:?}");
        let after = coordinators(&state, &groups);
        for (b, a) in before.iter().zip(&after) {
            assert_ne!(*a, Some(2));
            if *b != Some(2) {
                assert_eq!(a, b, "a group of a live broker moved");
            }
        }
        assert_eq!(
            coordinators(&MetadataState::default(), &groups[..1]),
            [None]
        );
    }
}
