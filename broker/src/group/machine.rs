//! The group coordinator's state machine: every group's members, phase, waiting requests and
//! timers, with no I/O, no clock, no lock and no task of its own.
//!
//! [`Machine::handle`] takes the time, the local metadata state and one [`Event`] — a request,
//! the outcome of a proposal it asked for, or a tick of the clock — and returns [`Action`]s:
//! metadata commands to propose and replies to send. [`Machine::next_deadline`] says when it
//! next wants an [`Event::Tick`]. Time is a [`Duration`] since an epoch the caller picks. The
//! async driver ([`super::GroupCoordinator`]) runs it for the broker; `machine/sim.rs` runs it
//! under seeded schedules.
//!
//! The protocol is Kafka's classic one: Empty → PreparingRebalance (members (re)join; the join
//! phase ends when every known member has rejoined, or at the rebalance deadline — for a group
//! coming out of Empty after `group.initial.rebalance.delay.ms`) → CompletingRebalance (the
//! leader computes the assignment) → Stable. A member whose session runs out is removed in
//! every phase (except while its JoinGroup waits for the join phase to end), which starts a
//! rebalance.
//!
//! # Invariants
//! - A group with a proposal in flight decides nothing until the outcome arrives: requests for
//!   it queue and are handled in order afterwards, and of its timers only the reply deadlines
//!   of waiting requests fire meanwhile. So the in-memory generation is always one the
//!   metadata state committed.
//! - Every request gets exactly one reply.
//! - The machine acts only for groups the metadata state places on this broker: a request for
//!   another broker's group is refused, and a group that moved away is dropped — its waiting
//!   requests are answered NOT_COORDINATOR — before any of its timers fires.
//! - State exists only for groups that exist: a request naming an unknown group creates
//!   nothing, and an idle group (Empty, nothing waiting, no member id handed out) is dropped at
//!   the next housekeeping; it holds nothing the metadata state does not.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use switchyard_backend_api::{
    BrokerId, GroupId, GroupMember, MemberId, MetadataCommand, MetadataError, MetadataState,
    Outcome, Rejection,
};
use tracing::{debug, info, warn};

use crate::kafka::errors::group_error;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

/// How long past the rebalance timeout a JoinGroup waits for its join phase to end (whose
/// proposal may be slow) before it is answered REBALANCE_IN_PROGRESS.
const JOIN_GRACE: Duration = Duration::from_secs(5);

/// How often groups another broker now coordinates, and idle groups, are dropped.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(200);

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

/// What the machine needs to know of its broker's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// This broker: the machine serves the groups
    /// [`switchyard_backend_api::MetadataState::group_coordinator`] places here.
    pub broker: BrokerId,
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay: Duration,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// How long a follower's SyncGroup waits for the leader's assignment.
    pub sync_wait: Duration,
}

/// Names a request, so that its reply can find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Names a proposal the machine asked for, so that its outcome can find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProposalId(pub u64);

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

/// A SyncGroup as the coordinator sees it.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// Group.
    pub group: String,
    /// The generation the member synchronises.
    pub generation: i32,
    /// Member id.
    pub member_id: String,
    /// Static membership id, if the client sent one (v3+).
    pub group_instance_id: Option<String>,
    /// Protocol type, if the client sent one (v5+).
    pub protocol_type: Option<String>,
    /// Protocol, if the client sent one (v5+).
    pub protocol: Option<String>,
    /// The leader's assignment: member → assignment; empty from a follower.
    pub assignments: Vec<(String, Bytes)>,
}

/// A group request.
#[derive(Debug, Clone)]
pub enum Request {
    /// JoinGroup.
    Join {
        /// The request.
        join: JoinRequest,
        /// The id a new member gets (the machine draws no random numbers).
        fresh_member_id: String,
    },
    /// SyncGroup.
    Sync(SyncRequest),
    /// Heartbeat.
    Heartbeat {
        /// Group.
        group: String,
        /// The member's generation.
        generation: i32,
        /// Member id.
        member_id: String,
        /// Static membership id, if the client sent one (v3+).
        group_instance_id: Option<String>,
    },
    /// LeaveGroup, for each listed member: its id (empty to name a static member by its
    /// instance id alone) and static membership id.
    Leave {
        /// Group.
        group: String,
        /// Member ids with their instance ids.
        members: Vec<(String, Option<String>)>,
    },
    /// DeleteGroups, for one group: only an empty group is deleted, with its committed
    /// offsets.
    Delete {
        /// Group.
        group: String,
    },
}

impl Request {
    /// The group the request is for.
    pub fn group(&self) -> &str {
        match self {
            Self::Join { join, .. } => &join.group,
            Self::Sync(sync) => &sync.group,
            Self::Heartbeat { group, .. } | Self::Leave { group, .. } | Self::Delete { group } => {
                group
            }
        }
    }

    /// The reply that refuses this request with `error`.
    fn refusal(&self, error: ResponseError) -> Reply {
        match self {
            Self::Join { join, .. } => {
                Reply::Join(JoinResult::error(error, join.member_id.clone()))
            }
            Self::Sync(_) => Reply::Sync(SyncResult::error(error)),
            Self::Heartbeat { .. } => Reply::Heartbeat(Some(error)),
            Self::Leave { members, .. } => Reply::Leave(
                members
                    .iter()
                    .map(|(m, _)| (m.clone(), Some(error)))
                    .collect(),
            ),
            Self::Delete { .. } => Reply::Delete(Some(error)),
        }
    }
}

/// What happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// A request arrived.
    Request {
        /// Its id, which its reply carries.
        id: RequestId,
        /// The request.
        request: Request,
    },
    /// A proposal the machine asked for committed (with its outcome) or failed.
    Proposed {
        /// The proposal.
        proposal: ProposalId,
        /// What proposing it returned.
        result: Result<Outcome, MetadataError>,
    },
    /// Time passed, or the metadata state changed: fire what is due.
    Tick,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, Default, PartialEq)]
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
    /// A refused join.
    pub fn error(error: ResponseError, member_id: String) -> Self {
        Self {
            error: Some(error),
            generation: -1,
            member_id,
            ..Self::default()
        }
    }
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, Default, PartialEq)]
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
    /// A refused sync.
    pub fn error(error: ResponseError) -> Self {
        Self {
            error: Some(error),
            ..Self::default()
        }
    }
}

/// The reply to a [`Request`], of the same kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// To a JoinGroup.
    Join(JoinResult),
    /// To a SyncGroup.
    Sync(SyncResult),
    /// To a Heartbeat: its error, if any.
    Heartbeat(Option<ResponseError>),
    /// To a LeaveGroup: per member, its error if any.
    Leave(Vec<(String, Option<ResponseError>)>),
    /// To a DeleteGroups for one group: its error, if any.
    Delete(Option<ResponseError>),
}

/// What the machine asks its driver to do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Propose `command`, then feed the result back as [`Event::Proposed`].
    Propose {
        /// Names the proposal in its outcome.
        proposal: ProposalId,
        /// The command.
        command: MetadataCommand,
    },
    /// Answer a request.
    Reply {
        /// The request.
        request: RequestId,
        /// Its reply.
        reply: Reply,
    },
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
    /// When the session runs out unless the member heartbeats or joins.
    deadline: Duration,
}

/// A JoinGroup waiting for the join phase to end.
#[derive(Debug)]
struct WaitingJoin {
    /// Its request; `None` once it was answered for waiting too long (the member still counts
    /// as rejoined).
    request: Option<RequestId>,
    /// The member id it asked with (empty for a new member).
    asked_as: String,
    /// When it is answered REBALANCE_IN_PROGRESS if the phase has not ended.
    gives_up: Duration,
}

/// A follower's SyncGroup waiting for the leader's assignment.
#[derive(Debug)]
struct WaitingSync {
    request: RequestId,
    gives_up: Duration,
}

/// The proposal a group waits for.
#[derive(Debug)]
enum InFlight {
    /// `StartGeneration`, ending the join phase.
    Generation {
        protocol_type: Option<String>,
        protocol: Option<String>,
        leader: Option<String>,
        /// The members as the leader's JoinGroup lists them.
        listed: Vec<(String, Option<String>, Bytes)>,
        /// The LeaveGroup of the group's last member, answered once the group is empty (as
        /// Kafka's is: a DescribeGroups or DeleteGroups after it finds the group Empty).
        leave: Option<(RequestId, Reply)>,
    },
    /// `SetGroupAssignment`, from the leader's SyncGroup.
    Assignment {
        request: RequestId,
        member_id: String,
        assignments: Vec<(String, Bytes)>,
    },
    /// `DeleteGroups`, from a DeleteGroups request.
    Deletion { request: RequestId },
    /// `ReplaceStaticMember`: a static member rejoined a stable group under a new id.
    StaticRejoin {
        request: RequestId,
        old: String,
        new: String,
        join: JoinRequest,
    },
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
    issued: BTreeMap<String, Duration>,
    joins: BTreeMap<String, WaitingJoin>,
    syncs: BTreeMap<String, WaitingSync>,
    /// When the join phase ends at the latest (in PreparingRebalance).
    rebalance_deadline: Duration,
    /// Whether the current join phase is a new group's initial, delayed one: it does not end
    /// early when every known member has rejoined.
    initial_delay: bool,
    in_flight: Option<(ProposalId, InFlight)>,
    /// Requests that arrived while a proposal was in flight, in order.
    queued: VecDeque<(RequestId, Request)>,
    /// The group's entry in [`Machine::timers`].
    due: Option<Duration>,
    /// Deleted from the metadata: the machine drops it once the deletion is answered.
    deleted: bool,
}

/// Every group this broker coordinates, in memory.
#[derive(Debug)]
pub struct Machine {
    config: Config,
    groups: BTreeMap<String, Group>,
    /// Each group's next timer, by time.
    timers: BTreeSet<(Duration, String)>,
    /// The group each proposal in flight is for.
    proposals: BTreeMap<ProposalId, String>,
    /// Groups dropped here while their deletion was in flight: not loaded again until that
    /// proposal resolves, or a stale deletion could remove a group loaded afresh.
    deleting: BTreeSet<String>,
    next_proposal: u64,
    /// When foreign and idle groups are next dropped; `None` while no group is loaded.
    housekeeping: Option<Duration>,
    out: Vec<Action>,
}

/// What a group's transitions write to.
struct Cx<'a> {
    config: &'a Config,
    now: Duration,
    out: &'a mut Vec<Action>,
    proposals: &'a mut BTreeMap<ProposalId, String>,
    next_proposal: &'a mut u64,
}

impl Cx<'_> {
    fn reply(&mut self, request: RequestId, reply: Reply) {
        self.out.push(Action::Reply { request, reply });
    }

    fn propose(&mut self, group: &str, command: MetadataCommand) -> ProposalId {
        let proposal = ProposalId(*self.next_proposal);
        *self.next_proposal += 1;
        self.proposals.insert(proposal, group.to_owned());
        self.out.push(Action::Propose { proposal, command });
        proposal
    }
}

impl Machine {
    /// A machine with no group loaded.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            groups: BTreeMap::new(),
            timers: BTreeSet::new(),
            proposals: BTreeMap::new(),
            deleting: BTreeSet::new(),
            next_proposal: 0,
            housekeeping: None,
            out: Vec::new(),
        }
    }

    /// Take `event` at `now`, with `state` the local metadata state; what to do about it.
    pub fn handle(&mut self, now: Duration, state: &MetadataState, event: Event) -> Vec<Action> {
        match event {
            Event::Request { id, request } => self.request(now, state, id, request),
            Event::Proposed { proposal, result } => self.proposed(now, state, proposal, result),
            Event::Tick => self.tick(now, state),
        }
        std::mem::take(&mut self.out)
    }

    /// When the machine next wants an [`Event::Tick`], if ever.
    pub fn next_deadline(&self) -> Option<Duration> {
        let timer = self.timers.first().map(|(at, _)| *at);
        match (timer, self.housekeeping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Check that a commit at `generation` may be made now: the durable check is in apply;
    /// this refuses commits during a rebalance, as Kafka does. Loads the group if it exists.
    pub fn check_commit(
        &mut self,
        now: Duration,
        state: &MetadataState,
        group: &str,
        (generation, member_id, group_instance_id): (i32, &str, Option<&str>),
    ) -> Option<ResponseError> {
        if generation < 0 || !self.exists(state, group) {
            return None;
        }
        self.ensure_loaded(now, state, group);
        let g = self.groups.get(group)?;
        if g.fenced(member_id, group_instance_id) {
            return Some(ResponseError::FencedInstanceId);
        }
        (g.phase == Phase::PreparingRebalance && g.generation == generation)
            .then_some(ResponseError::RebalanceInProgress)
    }

    /// Describe a group, loading it if it exists; `None` if it does not.
    pub fn describe(
        &mut self,
        now: Duration,
        state: &MetadataState,
        group: &str,
    ) -> Option<GroupDescription> {
        if !self.exists(state, group) {
            return None;
        }
        self.ensure_loaded(now, state, group);
        let g = self.groups.get(group)?;
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

    /// Every group this broker coordinates, from the metadata state and the groups loaded
    /// here: id, protocol type, phase. (Clients list groups on every broker and merge.)
    pub fn list(&self, state: &MetadataState) -> Vec<(String, String, Phase)> {
        let mut listed = BTreeMap::new();
        for g in state.groups().filter(|g| self.coordinates(state, &g.id.0)) {
            let phase = if g.members.is_empty() {
                Phase::Empty
            } else {
                Phase::Stable
            };
            listed.insert(g.id.0.clone(), (g.protocol_type.clone(), phase));
        }
        for g in self
            .groups
            .values()
            .filter(|g| self.coordinates(state, &g.id))
        {
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

    fn coordinates(&self, state: &MetadataState, group: &str) -> bool {
        self.coordination(state, group).is_ok()
    }

    /// Whether this broker coordinates `group`, or the error a request for it gets.
    fn coordination(&self, state: &MetadataState, group: &str) -> Result<(), ResponseError> {
        match state.group_coordinator(group) {
            Some(b) if b.id == self.config.broker => Ok(()),
            Some(_) => Err(ResponseError::NotCoordinator),
            None => Err(ResponseError::CoordinatorNotAvailable),
        }
    }

    /// Whether `group` is loaded or exists in the metadata state.
    fn exists(&self, state: &MetadataState, group: &str) -> bool {
        self.groups.contains_key(group) || state.group(&GroupId(group.to_owned())).is_some()
    }

    /// Load group `id` from the metadata state unless it is in memory (or being deleted).
    fn ensure_loaded(&mut self, now: Duration, state: &MetadataState, id: &str) {
        if self.groups.contains_key(id) || self.deleting.contains(id) {
            return;
        }
        self.groups.insert(id.to_owned(), load(state, id, now));
        self.reschedule(id);
        self.housekeeping.get_or_insert(now + HOUSEKEEPING_INTERVAL);
    }

    /// Run `f` on group `id` with what its transitions write to, then re-file its timer.
    fn with_group<R>(
        &mut self,
        now: Duration,
        id: &str,
        f: impl FnOnce(&mut Group, &mut Cx<'_>) -> R,
    ) -> Option<R> {
        let Self {
            config,
            groups,
            proposals,
            next_proposal,
            out,
            ..
        } = self;
        let g = groups.get_mut(id)?;
        let mut cx = Cx {
            config,
            now,
            out,
            proposals,
            next_proposal,
        };
        let result = f(g, &mut cx);
        self.reschedule(id);
        Some(result)
    }

    /// File group `id` under its next timer.
    fn reschedule(&mut self, id: &str) {
        let Some(g) = self.groups.get_mut(id) else {
            return;
        };
        let due = g.next_due();
        if due != g.due {
            if let Some(old) = g.due {
                self.timers.remove(&(old, id.to_owned()));
            }
            if let Some(new) = due {
                self.timers.insert((new, id.to_owned()));
            }
            g.due = due;
        }
    }

    fn request(&mut self, now: Duration, state: &MetadataState, id: RequestId, request: Request) {
        let group = request.group().to_owned();
        let refused = self.coordination(state, &group).err().or_else(|| {
            self.deleting
                .contains(&group)
                .then_some(ResponseError::CoordinatorLoadInProgress)
        });
        if let Some(error) = refused {
            self.unload(&group, error);
            self.out.push(Action::Reply {
                request: id,
                reply: request.refusal(error),
            });
            return;
        }
        if let Request::Join { join, .. } = &request
            && let Some(error) = self.invalid_join(join)
        {
            self.out.push(Action::Reply {
                request: id,
                reply: request.refusal(error),
            });
            return;
        }
        // Only a JoinGroup brings a group into being.
        if !matches!(request, Request::Join { .. }) && !self.exists(state, &group) {
            let error = match request {
                Request::Delete { .. } => ResponseError::GroupIdNotFound,
                _ => ResponseError::UnknownMemberId,
            };
            self.out.push(Action::Reply {
                request: id,
                reply: request.refusal(error),
            });
            return;
        }
        self.ensure_loaded(now, state, &group);
        if let Some(g) = self.groups.get_mut(&group)
            && g.in_flight.is_some()
        {
            g.queued.push_back((id, request));
            return;
        }
        self.with_group(now, &group, |g, cx| match request {
            Request::Join {
                join,
                fresh_member_id,
            } => g.join(cx, id, join, fresh_member_id),
            Request::Sync(sync) => g.sync(cx, id, sync),
            Request::Heartbeat {
                generation,
                member_id,
                group_instance_id,
                ..
            } => g.heartbeat(cx, id, generation, &member_id, group_instance_id.as_deref()),
            Request::Leave { members, .. } => g.leave(cx, id, members),
            Request::Delete { .. } => g.delete(cx, id),
        });
    }

    /// Why a JoinGroup is refused before its group is looked at, if it is.
    fn invalid_join(&self, join: &JoinRequest) -> Option<ResponseError> {
        if join.group.is_empty() {
            Some(ResponseError::InvalidGroupId)
        } else if join.session_timeout_ms < self.config.min_session_timeout_ms
            || join.session_timeout_ms > self.config.max_session_timeout_ms
        {
            Some(ResponseError::InvalidSessionTimeout)
        } else if join.protocols.is_empty() || join.protocol_type.is_empty() {
            Some(ResponseError::InconsistentGroupProtocol)
        } else {
            None
        }
    }

    fn proposed(
        &mut self,
        now: Duration,
        state: &MetadataState,
        proposal: ProposalId,
        result: Result<Outcome, MetadataError>,
    ) {
        // A proposal of a group dropped meanwhile: its requests were answered then.
        let Some(id) = self.proposals.remove(&proposal) else {
            return;
        };
        if self.deleting.remove(&id) {
            return;
        }
        self.with_group(now, &id, |g, cx| g.proposed(cx, state, result));
        if self.groups.get(&id).is_some_and(|g| g.deleted)
            && let Some(g) = self.remove(&id)
        {
            // What waited for the deletion goes to a group that no longer exists.
            for (request_id, request) in g.queued {
                self.request(now, state, request_id, request);
            }
            return;
        }
        // What waited for the outcome happens now, in order, until another proposal starts.
        while let Some(g) = self.groups.get_mut(&id)
            && g.in_flight.is_none()
            && let Some((request_id, request)) = g.queued.pop_front()
        {
            self.request(now, state, request_id, request);
        }
        if self
            .groups
            .get(&id)
            .and_then(|g| g.due)
            .is_some_and(|due| due <= now)
        {
            self.fire(now, state, &id);
        }
    }

    fn tick(&mut self, now: Duration, state: &MetadataState) {
        let housekeeping = self.housekeeping.is_some_and(|at| at <= now);
        if housekeeping {
            let foreign: Vec<(String, ResponseError)> = self
                .groups
                .keys()
                .filter_map(|id| self.coordination(state, id).err().map(|e| (id.clone(), e)))
                .collect();
            for (id, error) in foreign {
                self.unload(&id, error);
            }
        }
        let due: Vec<String> = self
            .timers
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| id.clone())
            .collect();
        for id in due {
            self.fire(now, state, &id);
        }
        if housekeeping {
            let idle: Vec<String> = self
                .groups
                .values()
                .filter(|g| g.is_idle())
                .map(|g| g.id.clone())
                .collect();
            for id in idle {
                self.remove(&id);
            }
            self.housekeeping = (!self.groups.is_empty()).then_some(now + HOUSEKEEPING_INTERVAL);
        }
    }

    /// Fire group `id`'s due timers, unless it moved to another broker: then drop it.
    fn fire(&mut self, now: Duration, state: &MetadataState, id: &str) {
        match self.coordination(state, id) {
            Ok(()) => {
                self.with_group(now, id, Group::fire);
            }
            Err(error) => self.unload(id, error),
        }
    }

    /// Drop group `id`, which this broker no longer coordinates, answering every request
    /// waiting on it with `error`.
    fn unload(&mut self, id: &str, error: ResponseError) {
        let Some(g) = self.remove(id) else {
            return;
        };
        info!(group = %g.id, error = ?error, "group no longer coordinated here; dropping it");
        for join in g.joins.into_values() {
            if let Some(request) = join.request {
                self.out.push(Action::Reply {
                    request,
                    reply: Reply::Join(JoinResult::error(error, join.asked_as)),
                });
            }
        }
        for sync in g.syncs.into_values() {
            self.out.push(Action::Reply {
                request: sync.request,
                reply: Reply::Sync(SyncResult::error(error)),
            });
        }
        if let Some((proposal, in_flight)) = g.in_flight {
            let waiting = match in_flight {
                InFlight::Assignment { request, .. } => {
                    self.proposals.remove(&proposal);
                    Some((request, Reply::Sync(SyncResult::error(error))))
                }
                InFlight::Deletion { request } => {
                    // Kept: the group is not loaded again until the deletion resolves.
                    self.deleting.insert(g.id.clone());
                    Some((request, Reply::Delete(Some(error))))
                }
                InFlight::Generation { leave, .. } => {
                    self.proposals.remove(&proposal);
                    // The members left; only the empty generation did not reach the metadata.
                    leave
                }
                InFlight::StaticRejoin { request, join, .. } => {
                    self.proposals.remove(&proposal);
                    let refusal = JoinResult::error(error, join.member_id);
                    Some((request, Reply::Join(refusal)))
                }
            };
            if let Some((request, reply)) = waiting {
                self.out.push(Action::Reply { request, reply });
            }
        }
        for (request, queued) in g.queued {
            self.out.push(Action::Reply {
                request,
                reply: queued.refusal(error),
            });
        }
    }

    fn remove(&mut self, id: &str) -> Option<Group> {
        let g = self.groups.remove(id)?;
        if let Some(due) = g.due {
            self.timers.remove(&(due, id.to_owned()));
        }
        if self.groups.is_empty() {
            self.housekeeping = None;
        }
        Some(g)
    }
}

impl Group {
    /// Empty and holding nothing in flight: no members, waiting requests, proposal or issued
    /// member ids.
    fn is_idle(&self) -> bool {
        self.phase == Phase::Empty
            && self.members.is_empty()
            && self.joins.is_empty()
            && self.syncs.is_empty()
            && self.issued.is_empty()
            && self.in_flight.is_none()
            && self.queued.is_empty()
    }

    /// When the group next has something to do: a waiting request gives up; and, unless a
    /// proposal is in flight, a session or an issued member id runs out or the join phase
    /// reaches its deadline.
    fn next_due(&self) -> Option<Duration> {
        let replies = self
            .joins
            .values()
            .filter(|j| j.request.is_some())
            .map(|j| j.gives_up)
            .chain(self.syncs.values().map(|s| s.gives_up));
        if self.in_flight.is_some() {
            return replies.min();
        }
        replies
            .chain(self.issued.values().copied())
            .chain(
                self.members
                    .iter()
                    .filter(|(id, _)| !self.joins.contains_key(*id))
                    .map(|(_, m)| m.deadline),
            )
            .chain((self.phase == Phase::PreparingRebalance).then_some(self.rebalance_deadline))
            .min()
    }

    /// The JoinGroup answer that puts follower `member_id` in the current generation again,
    /// without a rebalance.
    fn current_join(&self, member_id: String) -> JoinResult {
        JoinResult {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id,
            members: Vec::new(),
        }
    }

    /// The member id of the static member with `group_instance_id`, if there is one.
    fn static_member(&self, group_instance_id: &str) -> Option<&String> {
        self.members
            .iter()
            .find(|(_, m)| m.group_instance_id.as_deref() == Some(group_instance_id))
            .map(|(id, _)| id)
    }

    /// Whether a request from `member_id` claiming `group_instance_id` comes from a fenced
    /// instance: the instance id belongs to another member now (KIP-345's
    /// `FENCED_INSTANCE_ID`).
    fn fenced(&self, member_id: &str, group_instance_id: Option<&str>) -> bool {
        group_instance_id
            .and_then(|i| self.static_member(i))
            .is_some_and(|id| id != member_id)
    }

    /// A static member's known instance joined again without its member id: it takes the
    /// new id `new`, and `old` (a previous process of the same instance) is fenced — its
    /// waiting requests are answered `FENCED_INSTANCE_ID`. Kept in memory only; the next
    /// generation records the new id.
    fn rename_static_member(&mut self, cx: &mut Cx<'_>, old: &str, new: &str) {
        let Some(member) = self.members.remove(old) else {
            return;
        };
        info!(group = %self.id, old, new, instance = ?member.group_instance_id, "static member rejoined; fencing its old member id");
        self.members.insert(new.to_owned(), member);
        if self.leader.as_deref() == Some(old) {
            self.leader = Some(new.to_owned());
        }
        if let Some(request) = self.joins.remove(old).and_then(|j| j.request) {
            let error = JoinResult::error(ResponseError::FencedInstanceId, old.to_owned());
            cx.reply(request, Reply::Join(error));
        }
        if let Some(sync) = self.syncs.remove(old) {
            let error = SyncResult::error(ResponseError::FencedInstanceId);
            cx.reply(sync.request, Reply::Sync(error));
        }
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    fn join(
        &mut self,
        cx: &mut Cx<'_>,
        request: RequestId,
        join: JoinRequest,
        fresh_member_id: String,
    ) {
        let refuse = |cx: &mut Cx<'_>, error, member_id| {
            cx.reply(request, Reply::Join(JoinResult::error(error, member_id)));
        };
        if !self.members.is_empty() || self.phase != Phase::Empty {
            let protocol_type_clash = self
                .protocol_type
                .as_ref()
                .is_some_and(|t| *t != join.protocol_type && !self.members.is_empty());
            let shared = self.members.values().all(|m| {
                m.protocols
                    .iter()
                    .any(|(name, _)| join.protocols.iter().any(|(p, _)| p == name))
            });
            if protocol_type_clash || !shared {
                return refuse(cx, ResponseError::InconsistentGroupProtocol, join.member_id);
            }
        }
        // A known member id whose instance id another member now holds is a fenced process.
        if !join.member_id.is_empty()
            && self.fenced(&join.member_id, join.group_instance_id.as_deref())
        {
            return refuse(cx, ResponseError::FencedInstanceId, join.member_id);
        }
        let known_instance = join
            .group_instance_id
            .as_deref()
            .and_then(|i| self.static_member(i))
            .cloned();
        if join.member_id.is_empty()
            && let Some(old) = known_instance
        {
            // A static member rejoining a stable group as it was, not as its leader, keeps
            // the generation (KIP-345): only its member id changes, through the metadata.
            let unchanged = self
                .members
                .get(&old)
                .is_some_and(|m| m.protocols == join.protocols);
            if self.phase == Phase::Stable
                && unchanged
                && self.leader.as_deref() != Some(old.as_str())
            {
                let command = MetadataCommand::ReplaceStaticMember {
                    group: GroupId(self.id.clone()),
                    generation: self.generation,
                    group_instance_id: join.group_instance_id.clone().unwrap_or_default(),
                    old: MemberId(old.clone()),
                    new: MemberId(fresh_member_id.clone()),
                };
                let proposal = cx.propose(&self.id, command);
                let in_flight = InFlight::StaticRejoin {
                    request,
                    old,
                    new: fresh_member_id,
                    join,
                };
                self.in_flight = Some((proposal, in_flight));
                return;
            }
            // Otherwise it rejoins under its new id, and the group rebalances.
            self.rename_static_member(cx, &old, &fresh_member_id);
            return self.join(
                cx,
                request,
                JoinRequest {
                    member_id: fresh_member_id,
                    ..join
                },
                String::new(),
            );
        }
        let member_id = if join.member_id.is_empty() {
            // A static member needs no second join: its instance id names it.
            if join.require_known_member_id && join.group_instance_id.is_none() {
                self.issued.insert(
                    fresh_member_id.clone(),
                    cx.now + millis(join.session_timeout_ms),
                );
                return refuse(cx, ResponseError::MemberIdRequired, fresh_member_id);
            }
            fresh_member_id
        } else if self.members.contains_key(&join.member_id)
            || self.issued.remove(&join.member_id).is_some()
        {
            join.member_id.clone()
        } else {
            return refuse(cx, ResponseError::UnknownMemberId, join.member_id);
        };
        let session_timeout = millis(join.session_timeout_ms);
        // A follower rejoining a stable group with the same protocols gets the current
        // generation back without a rebalance, as in Kafka.
        if self.phase == Phase::Stable
            && self.leader.as_deref() != Some(member_id.as_str())
            && let Some(member) = self
                .members
                .get_mut(&member_id)
                .filter(|m| m.protocols == join.protocols)
        {
            member.deadline = cx.now + member.session_timeout;
            return cx.reply(request, Reply::Join(self.current_join(member_id)));
        }
        let member = Member {
            group_instance_id: join.group_instance_id,
            client_id: join.client_id,
            client_host: join.client_host,
            session_timeout,
            rebalance_timeout: millis(join.rebalance_timeout_ms),
            protocol_type: join.protocol_type,
            protocols: join.protocols,
            assignment: self
                .members
                .get(&member_id)
                .map_or_else(Bytes::new, |m| m.assignment.clone()),
            deadline: cx.now + session_timeout,
        };
        self.members.insert(member_id.clone(), member);
        let waits = self
            .max_rebalance_timeout()
            .max(cx.config.initial_rebalance_delay);
        let waiting = WaitingJoin {
            request: Some(request),
            asked_as: join.member_id,
            gives_up: cx.now + waits + JOIN_GRACE,
        };
        if let Some(old) = self.joins.insert(member_id.clone(), waiting)
            && let Some(old) = old.request
        {
            let error = JoinResult::error(ResponseError::RebalanceInProgress, member_id);
            cx.reply(old, Reply::Join(error));
        }
        if self.phase != Phase::PreparingRebalance {
            self.prepare_rebalance(cx, "member joined");
        }
        if !self.initial_delay && self.joins.len() == self.members.len() {
            self.complete_join(cx);
        }
    }

    /// Enter PreparingRebalance, with the deadline of the join phase.
    fn prepare_rebalance(&mut self, cx: &mut Cx<'_>, reason: &str) {
        info!(group = %self.id, generation = self.generation, reason, "preparing rebalance");
        for sync in std::mem::take(&mut self.syncs).into_values() {
            let error = SyncResult::error(ResponseError::RebalanceInProgress);
            cx.reply(sync.request, Reply::Sync(error));
        }
        // A group coming out of Empty waits for more members (group.initial.rebalance.delay.ms).
        self.initial_delay = self.phase == Phase::Empty;
        self.phase = Phase::PreparingRebalance;
        let wait = if self.initial_delay {
            cx.config.initial_rebalance_delay
        } else {
            self.max_rebalance_timeout()
        };
        self.rebalance_deadline = cx.now + wait;
    }

    /// End the join phase: drop members that did not rejoin, choose the protocol and leader,
    /// and propose the generation; [`Self::proposed`] answers the joins.
    fn complete_join(&mut self, cx: &mut Cx<'_>) {
        self.members.retain(|id, _| self.joins.contains_key(id));
        // Every member left has just joined: its session starts afresh (it may have waited in
        // the join phase longer than its session timeout).
        for member in self.members.values_mut() {
            member.deadline = cx.now + member.session_timeout;
        }
        // A group whose last member left keeps its protocol type (an empty consumer group is
        // still a consumer group, as in Kafka).
        let protocol_type = self
            .members
            .values()
            .next()
            .map(|m| m.protocol_type.clone())
            .or_else(|| self.protocol_type.clone());
        let protocol = choose_protocol(&self.members);
        let leader = self
            .leader
            .clone()
            .filter(|l| self.members.contains_key(l))
            .or_else(|| self.members.keys().next().cloned());
        let members: Vec<GroupMember> = self
            .members
            .iter()
            .map(|(id, m)| GroupMember {
                id: MemberId(id.clone()),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                session_timeout_ms: i32::try_from(m.session_timeout.as_millis())
                    .unwrap_or(i32::MAX),
                rebalance_timeout_ms: i32::try_from(m.rebalance_timeout.as_millis())
                    .unwrap_or(i32::MAX),
                metadata: protocol
                    .as_ref()
                    .and_then(|p| m.protocols.iter().find(|(name, _)| name == p))
                    .map_or_else(Vec::new, |(_, meta)| meta.to_vec()),
                assignment: Vec::new(),
            })
            .collect();
        let listed = members
            .iter()
            .map(|m| {
                (
                    m.id.0.clone(),
                    m.group_instance_id.clone(),
                    Bytes::from(m.metadata.clone()),
                )
            })
            .collect();
        let command = MetadataCommand::StartGeneration {
            group: GroupId(self.id.clone()),
            expected_generation: self.generation,
            protocol_type: protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone().filter(|_| !members.is_empty()),
            leader: leader.clone().map(MemberId).filter(|_| !members.is_empty()),
            members,
        };
        let proposal = cx.propose(&self.id, command);
        let in_flight = InFlight::Generation {
            protocol_type,
            protocol,
            leader,
            listed,
            leave: None,
        };
        self.in_flight = Some((proposal, in_flight));
    }

    /// The outcome of the group's proposal in flight.
    fn proposed(
        &mut self,
        cx: &mut Cx<'_>,
        state: &MetadataState,
        result: Result<Outcome, MetadataError>,
    ) {
        match self.in_flight.take().map(|(_, in_flight)| in_flight) {
            Some(InFlight::Generation {
                protocol_type,
                protocol,
                leader,
                listed,
                leave,
            }) => {
                match result {
                    Ok(Outcome::GenerationStarted { generation }) => {
                        self.generation_started(
                            cx,
                            generation,
                            protocol_type,
                            protocol,
                            leader,
                            listed,
                        );
                    }
                    other => {
                        warn!(group = %self.id, result = ?other, "starting a generation failed");
                        let error = match &other {
                            Err(e) => group_error(e),
                            Ok(_) => ResponseError::UnknownServerError,
                        };
                        // Re-read the durable generation so the next attempt proposes from it.
                        // Members stay known so their next join is accepted.
                        self.generation = stored_generation(state, &self.id);
                        self.phase = Phase::Empty;
                        for (id, join) in std::mem::take(&mut self.joins) {
                            if let Some(request) = join.request {
                                cx.reply(request, Reply::Join(JoinResult::error(error, id)));
                            }
                        }
                        debug!(group = %self.id, "join phase abandoned");
                    }
                }
                if let Some((request, reply)) = leave {
                    cx.reply(request, reply);
                }
            }
            Some(InFlight::Assignment {
                request,
                member_id,
                assignments,
            }) => match result {
                Err(e) => {
                    warn!(group = %self.id, error = %e, "storing the assignment failed");
                    let error = group_error(&e);
                    for sync in std::mem::take(&mut self.syncs).into_values() {
                        cx.reply(sync.request, Reply::Sync(SyncResult::error(error)));
                    }
                    cx.reply(request, Reply::Sync(SyncResult::error(error)));
                }
                Ok(_) => {
                    let assigned: BTreeMap<String, Bytes> = assignments.into_iter().collect();
                    for (id, member) in &mut self.members {
                        member.assignment = assigned.get(id).cloned().unwrap_or_default();
                    }
                    self.phase = Phase::Stable;
                    info!(group = %self.id, generation = self.generation, members = self.members.len(), "group stable");
                    for (id, sync) in std::mem::take(&mut self.syncs) {
                        cx.reply(sync.request, Reply::Sync(self.assignment_of(&id)));
                    }
                    cx.reply(request, Reply::Sync(self.assignment_of(&member_id)));
                }
            },
            Some(InFlight::StaticRejoin {
                request,
                old,
                new,
                join,
            }) => match result {
                Ok(Outcome::StaticMemberReplaced) => {
                    self.rename_static_member(cx, &old, &new);
                    if let Some(member) = self.members.get_mut(&new) {
                        member.client_id = join.client_id;
                        member.client_host = join.client_host;
                        member.session_timeout = millis(join.session_timeout_ms);
                        member.rebalance_timeout = millis(join.rebalance_timeout_ms);
                        member.deadline = cx.now + member.session_timeout;
                    }
                    cx.reply(request, Reply::Join(self.current_join(new)));
                }
                other => {
                    warn!(group = %self.id, result = ?other, "replacing a static member failed");
                    let error = match &other {
                        Err(e) => group_error(e),
                        Ok(_) => ResponseError::UnknownServerError,
                    };
                    cx.reply(
                        request,
                        Reply::Join(JoinResult::error(error, join.member_id)),
                    );
                }
            },
            Some(InFlight::Deletion { request }) => {
                let error = match result {
                    Ok(Outcome::GroupsDeleted { .. }) => None,
                    Ok(_) => Some(ResponseError::UnknownServerError),
                    Err(MetadataError::Rejected(Rejection::NonEmptyGroup { .. })) => {
                        Some(ResponseError::NonEmptyGroup)
                    }
                    Err(MetadataError::Rejected(Rejection::GroupNotFound { .. })) => {
                        Some(ResponseError::GroupIdNotFound)
                    }
                    // Another coordinator moved the group on meanwhile.
                    Err(MetadataError::Rejected(Rejection::IllegalGeneration { .. })) => {
                        Some(ResponseError::NotCoordinator)
                    }
                    Err(e) => Some(group_error(&e)),
                };
                // Whatever the answer (a timeout may hide a committed deletion), a group the
                // state no longer holds is gone: nothing of it is kept here either.
                self.deleted = state.group(&GroupId(self.id.clone())).is_none();
                if self.deleted {
                    info!(group = %self.id, "group deleted");
                }
                cx.reply(request, Reply::Delete(error));
            }
            None => {}
        }
    }

    fn generation_started(
        &mut self,
        cx: &mut Cx<'_>,
        generation: i32,
        protocol_type: Option<String>,
        protocol: Option<String>,
        leader: Option<String>,
        listed: Vec<(String, Option<String>, Bytes)>,
    ) {
        self.generation = generation;
        self.protocol_type = protocol_type;
        self.protocol = protocol;
        self.leader = leader;
        for member in self.members.values_mut() {
            member.assignment = Bytes::new();
            member.deadline = cx.now + member.session_timeout;
        }
        self.phase = if self.members.is_empty() {
            Phase::Empty
        } else {
            Phase::CompletingRebalance
        };
        info!(group = %self.id, generation, members = self.members.len(), "join phase complete");
        let leader = self.leader.clone().unwrap_or_default();
        for (id, join) in std::mem::take(&mut self.joins) {
            let Some(request) = join.request else {
                continue;
            };
            let result = JoinResult {
                error: None,
                generation,
                protocol_type: self.protocol_type.clone(),
                protocol: self.protocol.clone(),
                leader: leader.clone(),
                members: if id == leader {
                    listed.clone()
                } else {
                    Vec::new()
                },
                member_id: id,
            };
            cx.reply(request, Reply::Join(result));
        }
    }

    fn sync(&mut self, cx: &mut Cx<'_>, request: RequestId, sync: SyncRequest) {
        let refuse = |cx: &mut Cx<'_>, error| {
            cx.reply(request, Reply::Sync(SyncResult::error(error)));
        };
        if self.fenced(&sync.member_id, sync.group_instance_id.as_deref()) {
            return refuse(cx, ResponseError::FencedInstanceId);
        }
        if !self.members.contains_key(&sync.member_id) {
            return refuse(cx, ResponseError::UnknownMemberId);
        }
        if self.generation != sync.generation {
            return refuse(cx, ResponseError::IllegalGeneration);
        }
        if sync
            .protocol_type
            .is_some_and(|t| Some(t) != self.protocol_type)
            || sync.protocol.is_some_and(|p| Some(p) != self.protocol)
        {
            return refuse(cx, ResponseError::InconsistentGroupProtocol);
        }
        match self.phase {
            Phase::Empty | Phase::PreparingRebalance => {
                return refuse(cx, ResponseError::RebalanceInProgress);
            }
            Phase::Stable => {
                return cx.reply(request, Reply::Sync(self.assignment_of(&sync.member_id)));
            }
            Phase::CompletingRebalance => {}
        }
        if self.leader.as_deref() == Some(sync.member_id.as_str()) {
            let command = MetadataCommand::SetGroupAssignment {
                group: GroupId(self.id.clone()),
                generation: sync.generation,
                leader: MemberId(sync.member_id.clone()),
                assignments: sync
                    .assignments
                    .iter()
                    .map(|(m, a)| (MemberId(m.clone()), a.to_vec()))
                    .collect(),
            };
            let proposal = cx.propose(&self.id, command);
            let in_flight = InFlight::Assignment {
                request,
                member_id: sync.member_id,
                assignments: sync.assignments,
            };
            self.in_flight = Some((proposal, in_flight));
            return;
        }
        let waiting = WaitingSync {
            request,
            gives_up: cx.now + cx.config.sync_wait,
        };
        if let Some(old) = self.syncs.insert(sync.member_id, waiting) {
            let error = SyncResult::error(ResponseError::RebalanceInProgress);
            cx.reply(old.request, Reply::Sync(error));
        }
    }

    fn heartbeat(
        &mut self,
        cx: &mut Cx<'_>,
        request: RequestId,
        generation: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) {
        if self.fenced(member_id, group_instance_id) {
            return cx.reply(
                request,
                Reply::Heartbeat(Some(ResponseError::FencedInstanceId)),
            );
        }
        let error = match self.members.get_mut(member_id) {
            None => Some(ResponseError::UnknownMemberId),
            Some(member) => {
                member.deadline = cx.now + member.session_timeout;
                if self.phase == Phase::PreparingRebalance {
                    Some(ResponseError::RebalanceInProgress)
                } else if self.generation != generation {
                    Some(ResponseError::IllegalGeneration)
                } else {
                    None
                }
            }
        };
        cx.reply(request, Reply::Heartbeat(error));
    }

    /// DeleteGroups: an empty group (no members, no rebalance) is deleted with its offsets
    /// through the metadata; any other answers NON_EMPTY_GROUP.
    fn delete(&mut self, cx: &mut Cx<'_>, request: RequestId) {
        if self.phase != Phase::Empty || !self.members.is_empty() || !self.joins.is_empty() {
            return cx.reply(request, Reply::Delete(Some(ResponseError::NonEmptyGroup)));
        }
        let command = MetadataCommand::DeleteGroupAt {
            group: GroupId(self.id.clone()),
            generation: self.generation,
        };
        let proposal = cx.propose(&self.id, command);
        self.in_flight = Some((proposal, InFlight::Deletion { request }));
    }

    fn leave(
        &mut self,
        cx: &mut Cx<'_>,
        request: RequestId,
        members: Vec<(String, Option<String>)>,
    ) {
        let mut results = Vec::new();
        let mut removed = false;
        for (asked, instance) in members {
            // A static member may be named by its instance id alone (an admin removing it).
            let member = match instance.as_deref().map(|i| self.static_member(i).cloned()) {
                Some(Some(id)) if asked.is_empty() || asked == id => id,
                Some(Some(_)) => {
                    results.push((asked, Some(ResponseError::FencedInstanceId)));
                    continue;
                }
                _ => asked.clone(),
            };
            if self.members.remove(&member).is_some() {
                if let Some(request) = self.joins.remove(&member).and_then(|j| j.request) {
                    let error = JoinResult::error(ResponseError::UnknownMemberId, member.clone());
                    cx.reply(request, Reply::Join(error));
                }
                if let Some(sync) = self.syncs.remove(&member) {
                    let error = SyncResult::error(ResponseError::RebalanceInProgress);
                    cx.reply(sync.request, Reply::Sync(error));
                }
                removed = true;
                results.push((asked, None));
            } else {
                results.push((asked, Some(ResponseError::UnknownMemberId)));
            }
        }
        let reply = Reply::Leave(results);
        if !removed {
            return cx.reply(request, reply);
        }
        if self.phase == Phase::PreparingRebalance {
            if self.joins.len() == self.members.len() && !self.initial_delay {
                self.complete_join(cx);
            }
        } else {
            self.prepare_rebalance(cx, "member left");
            if self.members.is_empty() || self.joins.len() == self.members.len() {
                self.initial_delay = false;
                self.complete_join(cx);
            }
        }
        match &mut self.in_flight {
            Some((_, InFlight::Generation { leave, .. })) if self.members.is_empty() => {
                *leave = Some((request, reply));
            }
            _ => cx.reply(request, reply),
        }
    }

    /// Fire what is due at `cx.now`.
    fn fire(&mut self, cx: &mut Cx<'_>) {
        let now = cx.now;
        for join in self.joins.values_mut().filter(|j| j.gives_up <= now) {
            if let Some(request) = join.request.take() {
                let error =
                    JoinResult::error(ResponseError::RebalanceInProgress, join.asked_as.clone());
                cx.reply(request, Reply::Join(error));
            }
        }
        let (gave_up, waiting) = std::mem::take(&mut self.syncs)
            .into_iter()
            .partition(|(_, s)| s.gives_up <= now);
        self.syncs = waiting;
        for sync in gave_up.into_values() {
            let error = SyncResult::error(ResponseError::RebalanceInProgress);
            cx.reply(sync.request, Reply::Sync(error));
        }
        if self.in_flight.is_some() {
            return;
        }
        self.issued.retain(|_, deadline| *deadline > now);
        self.expire_members(cx);
        if self.in_flight.is_none()
            && self.phase == Phase::PreparingRebalance
            && self.rebalance_deadline <= now
        {
            self.complete_join(cx);
        }
    }

    /// Remove the members whose session expired: in every phase, except that a member whose
    /// JoinGroup is waiting for the join phase to end is alive (as in Kafka).
    fn expire_members(&mut self, cx: &mut Cx<'_>) {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(id, m)| m.deadline <= cx.now && !self.joins.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        if expired.is_empty() {
            return;
        }
        for id in &expired {
            info!(group = %self.id, member = %id, phase = self.phase.as_str(), "session timed out; removing member");
            self.members.remove(id);
            if let Some(sync) = self.syncs.remove(id) {
                let error = SyncResult::error(ResponseError::RebalanceInProgress);
                cx.reply(sync.request, Reply::Sync(error));
            }
        }
        if self.phase != Phase::PreparingRebalance {
            self.prepare_rebalance(cx, "session timeout");
            self.initial_delay = false;
        }
        // The join phase waited for the expired members; it may be complete without them.
        if !self.initial_delay && self.joins.len() == self.members.len() {
            self.complete_join(cx);
        }
    }

    fn assignment_of(&self, member_id: &str) -> SyncResult {
        SyncResult {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            assignment: self
                .members
                .get(member_id)
                .map_or_else(Bytes::new, |m| m.assignment.clone()),
        }
    }
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn stored_generation(state: &MetadataState, id: &str) -> i32 {
    state
        .group(&GroupId(id.to_owned()))
        .map_or(0, |g| g.generation)
}

/// A group from the metadata state: its generation and members, whose session timers start
/// `now`.
fn load(state: &MetadataState, id: &str, now: Duration) -> Group {
    let stored = state.group(&GroupId(id.to_owned()));
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
        issued: BTreeMap::new(),
        joins: BTreeMap::new(),
        syncs: BTreeMap::new(),
        rebalance_deadline: now,
        initial_delay: false,
        in_flight: None,
        queued: VecDeque::new(),
        due: None,
        deleted: false,
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
