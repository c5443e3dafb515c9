//! [`Driver`]: one node's raft-rs `RawNode`, driven without I/O of its own. The caller ticks
//! it, steps incoming messages into it, proposes through it, and calls [`Driver::on_ready`]
//! after each of those; `on_ready` runs every pending Ready in raft-rs's required order.
//!
//! ### To ensure correctness:
//! For each Ready, strictly in this order (the predecessor persisted entries but never
//! applied them; committed entries arrive both in the `Ready` and in the `LightReady` that
//! `advance` returns, and both are applied here):
//! 1. persist the snapshot, the new entries and the hard state ([`GroupLog::persist`]),
//!    synced when raft-rs asks for it;
//! 2. send the messages — a leader's early ones and the ones that had to wait for step 1;
//! 3. apply the committed entries, in log order, each exactly once;
//! 4. `advance`, persist the new commit index, send its messages, apply its committed entries,
//!    then `advance_apply`.
//!
//! A leader whose `Lead` entry for its term is not yet proposed proposes it after the Ready
//! rounds, never between `ready()` and `advance()`.

use prost::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, HardState, Message,
    Snapshot,
};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole, Storage};
use switchyard_backend_api::codec;

use crate::group::{GroupCommand, GroupState};

/// Why the driver stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// raft-rs refused a call.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// Persisting the log failed; the node must stop (it may not ack past a failed write).
    #[error("raft log storage: {0}")]
    Storage(String),
    /// A committed entry did not decode.
    #[error("committed entry {index}: {reason}")]
    Corrupt {
        /// Its index.
        index: u64,
        /// What was wrong.
        reason: String,
    },
}

/// Where a node keeps its Raft log: raft-rs reads it through [`Storage`], the driver writes
/// it through these methods.
pub trait GroupLog: Storage {
    /// Make `snapshot` (unless empty), `entries` and `hard_state` (if changed) durable —
    /// synced to disk when `sync` — and visible through [`Storage`].
    fn persist(
        &mut self,
        snapshot: &Snapshot,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<(), DriverError>;

    /// Record the commit index `advance` reported (durability not required: it is re-learnt
    /// from the leader).
    fn set_commit(&mut self, commit: u64) -> Result<(), DriverError>;

    /// Record the membership after a conf change applied.
    fn set_conf_state(&mut self, conf_state: ConfState) -> Result<(), DriverError>;

    /// Record how far the driver applied and the group state there (where a restart resumes,
    /// and what a snapshot sent to a lagging or new node holds).
    fn save_applied(&mut self, applied: u64, state: &GroupState) -> Result<(), DriverError>;
}

impl GroupLog for MemStorage {
    fn persist(
        &mut self,
        snapshot: &Snapshot,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        _sync: bool,
    ) -> Result<(), DriverError> {
        let mut core = self.wl();
        if !snapshot.is_empty() {
            core.apply_snapshot(snapshot.clone())?;
        }
        core.append(entries)?;
        if let Some(hard_state) = hard_state {
            core.set_hardstate(hard_state.clone());
        }
        Ok(())
    }

    fn set_commit(&mut self, commit: u64) -> Result<(), DriverError> {
        self.wl().mut_hard_state().set_commit(commit);
        Ok(())
    }

    fn set_conf_state(&mut self, conf_state: ConfState) -> Result<(), DriverError> {
        self.wl().set_conf_state(conf_state);
        Ok(())
    }

    /// Nothing to record: a memory log does not outlive its driver.
    fn save_applied(&mut self, _applied: u64, _state: &GroupState) -> Result<(), DriverError> {
        Ok(())
    }
}

/// Timing of the group, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticks {
    /// Ticks without a leader's message before a follower campaigns.
    pub election: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat: usize,
}

/// What one [`Driver::on_ready`] call changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Commands applied, with their log index, in order.
    pub commands: Vec<(u64, GroupCommand)>,
    /// Whether the membership changed.
    pub members_changed: bool,
    /// The role, leader id and term after this round, when they changed.
    pub role: Option<(StateRole, u64, u64)>,
}

/// One node of the group.
pub struct Driver<S: GroupLog> {
    raw: RawNode<S>,
    state: GroupState,
    applied: u64,
    /// The term whose `Lead` entry this node proposed as leader.
    lead_proposed: Option<u64>,
}

impl<S: GroupLog> std::fmt::Debug for Driver<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("id", &self.raw.raft.id)
            .field("term", &self.raw.raft.term)
            .field("role", &self.raw.raft.state)
            .field("applied", &self.applied)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// The logger raft-rs writes to: discarded (the driver reports what matters).
fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

impl<S: GroupLog> Driver<S> {
    /// A node `id` over `log`, resuming after `applied` with the group `state` it had then (a
    /// fresh node: 0 and the default state).
    pub fn new(
        id: u64,
        log: S,
        applied: u64,
        state: GroupState,
        ticks: Ticks,
    ) -> Result<Self, DriverError> {
        let config = Config {
            id,
            election_tick: ticks.election,
            // Randomized in [1, 1.5) × the election timeout rather than raft-rs's [1, 2):
            // failover sooner, and the bound a delayed heartbeat must pass is the same
            // (docs/BACKENDS.md has the measurements).
            min_election_tick: ticks.election,
            max_election_tick: ticks.election + ticks.election.div_ceil(2),
            heartbeat_tick: ticks.heartbeat,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Config::default()
        };
        config.validate()?;
        let raw = RawNode::new(&config, log, &logger())?;
        Ok(Self {
            raw,
            state,
            applied,
            lead_proposed: None,
        })
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.raw.raft.id
    }

    /// The replicated group state as this node applied it.
    pub fn state(&self) -> &GroupState {
        &self.state
    }

    /// The index of the last applied entry.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// This node's role, the leader it knows (0: none) and its term.
    pub fn role(&self) -> (StateRole, u64, u64) {
        (
            self.raw.raft.state,
            self.raw.raft.leader_id,
            self.raw.raft.term,
        )
    }

    /// The leader this node follows, its term, and the ticks since it last heard from that
    /// leader; `None` unless it is a follower that knows its leader.
    pub fn following(&self) -> Option<(u64, u64, usize)> {
        let raft = &self.raw.raft;
        (raft.state == StateRole::Follower && raft.leader_id != raft::INVALID_ID).then_some((
            raft.leader_id,
            raft.term,
            raft.election_elapsed,
        ))
    }

    /// Ticks between a leader's heartbeats.
    pub fn heartbeat_ticks(&self) -> usize {
        self.raw.raft.heartbeat_timeout()
    }

    /// The log, to read what was persisted.
    pub fn log(&self) -> &S {
        self.raw.store()
    }

    /// One tick of the logical clock.
    pub fn tick(&mut self) {
        self.raw.tick();
    }

    /// Start an election now (a sole voter need not wait for its election timeout).
    pub fn campaign(&mut self) -> Result<(), DriverError> {
        Ok(self.raw.campaign()?)
    }

    /// Take a message from a peer. Messages from unknown peers and stale responses are
    /// dropped, as raft-rs asks.
    pub fn step(&mut self, message: Message) -> Result<(), DriverError> {
        match self.raw.step(message) {
            Ok(()) | Err(raft::Error::StepPeerNotFound | raft::Error::StepLocalMsg) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Propose a command; only a leader's proposal can commit.
    pub fn propose(&mut self, command: &GroupCommand) -> Result<(), DriverError> {
        let data = codec::encode(command).map_err(|e| DriverError::Storage(e.to_string()))?;
        Ok(self.raw.propose(Vec::new(), data)?)
    }

    /// Propose adding `id` (as a voter, or a learner) at `addr`.
    pub fn propose_add(&mut self, id: u64, addr: &str, learner: bool) -> Result<(), DriverError> {
        let change_type = if learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        let mut change = ConfChange::default();
        change.set_change_type(change_type);
        change.node_id = id;
        change.context = addr.as_bytes().to_vec();
        Ok(self.raw.propose_conf_change(Vec::new(), change)?)
    }

    /// Ask the leader to hand leadership to `id` (a voter); ignored elsewhere.
    pub fn transfer_leader(&mut self, id: u64) {
        self.raw.transfer_leader(id);
    }

    /// Propose removing `id`.
    pub fn propose_remove(&mut self, id: u64) -> Result<(), DriverError> {
        let mut change = ConfChange::default();
        change.set_change_type(ConfChangeType::RemoveNode);
        change.node_id = id;
        Ok(self.raw.propose_conf_change(Vec::new(), change)?)
    }

    /// Run every pending Ready (see the module docs for the order); `send` gets each batch of
    /// outgoing messages at the point raft-rs allows sending it.
    pub fn on_ready(&mut self, send: &mut dyn FnMut(Vec<Message>)) -> Result<Applied, DriverError> {
        let mut round = Applied::default();
        let before = self.role();
        loop {
            self.ready_rounds(send, &mut round)?;
            if !self.propose_lead()? {
                break;
            }
        }
        let after = self.role();
        if after != before {
            round.role = Some(after);
        }
        Ok(round)
    }

    /// Every pending Ready, in order.
    fn ready_rounds(
        &mut self,
        send: &mut dyn FnMut(Vec<Message>),
        round: &mut Applied,
    ) -> Result<(), DriverError> {
        while self.raw.has_ready() {
            let mut ready = self.raw.ready();
            // 1. Persist.
            self.raw.mut_store().persist(
                ready.snapshot(),
                ready.entries(),
                ready.hs(),
                ready.must_sync(),
            )?;
            if !ready.snapshot().is_empty() {
                self.install(ready.snapshot())?;
                round.members_changed = true;
            }
            // 2. Send.
            send(ready.take_messages());
            send(ready.take_persisted_messages());
            // 3. Apply.
            self.apply(ready.take_committed_entries(), round)?;
            // 4. Advance.
            let mut light = self.raw.advance(ready);
            if let Some(commit) = light.commit_index() {
                self.raw.mut_store().set_commit(commit)?;
            }
            send(light.take_messages());
            self.apply(light.take_committed_entries(), round)?;
            self.raw.advance_apply();
            self.raw
                .mut_store()
                .save_applied(self.applied, &self.state)?;
        }
        Ok(())
    }

    /// A leader proposes `Lead { me, term }` once per term; whether it just did.
    fn propose_lead(&mut self) -> Result<bool, DriverError> {
        let (role, _, term) = self.role();
        if role != StateRole::Leader || self.lead_proposed == Some(term) {
            return Ok(false);
        }
        self.lead_proposed = Some(term);
        let me = self.id();
        self.propose(&GroupCommand::Lead { node: me, term })?;
        Ok(true)
    }

    /// Replace the group state with a snapshot's.
    fn install(&mut self, snapshot: &Snapshot) -> Result<(), DriverError> {
        let index = snapshot.get_metadata().index;
        let state: GroupState =
            codec::decode(snapshot.get_data()).map_err(|e| DriverError::Corrupt {
                index,
                reason: format!("snapshot: {e}"),
            })?;
        self.state = state;
        self.applied = index;
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>, round: &mut Applied) -> Result<(), DriverError> {
        for entry in entries {
            let index = entry.index;
            if index <= self.applied {
                continue;
            }
            let corrupt = |reason: String| DriverError::Corrupt { index, reason };
            match entry.get_entry_type() {
                // A new leader's empty entry.
                EntryType::EntryNormal if entry.get_data().is_empty() => {}
                EntryType::EntryNormal => {
                    let command: GroupCommand =
                        codec::decode(entry.get_data()).map_err(|e| corrupt(e.to_string()))?;
                    self.state.apply(&command);
                    round.commands.push((index, command));
                }
                EntryType::EntryConfChange => {
                    let mut change = ConfChange::default();
                    change
                        .merge(entry.get_data())
                        .map_err(|e| corrupt(e.to_string()))?;
                    self.apply_change(&change)?;
                    round.members_changed = true;
                }
                EntryType::EntryConfChangeV2 => {
                    let mut change = ConfChangeV2::default();
                    change
                        .merge(entry.get_data())
                        .map_err(|e| corrupt(e.to_string()))?;
                    let conf_state = self.raw.apply_conf_change(&change)?;
                    self.raw.mut_store().set_conf_state(conf_state)?;
                    for single in change.get_changes() {
                        self.record_change(single.get_change_type(), single.node_id, "");
                    }
                    round.members_changed = true;
                }
            }
            self.applied = index;
        }
        Ok(())
    }

    fn apply_change(&mut self, change: &ConfChange) -> Result<(), DriverError> {
        let conf_state = self.raw.apply_conf_change(change)?;
        self.raw.mut_store().set_conf_state(conf_state)?;
        let addr = String::from_utf8_lossy(change.get_context()).into_owned();
        self.record_change(change.get_change_type(), change.node_id, &addr);
        Ok(())
    }

    fn record_change(&mut self, change_type: ConfChangeType, id: u64, addr: &str) {
        match change_type {
            ConfChangeType::AddNode => self.state.add_member(id, addr.to_owned()),
            ConfChangeType::AddLearnerNode => self.state.add_learner(id, addr.to_owned()),
            ConfChangeType::RemoveNode => self.state.remove_member(id),
        }
    }
}
