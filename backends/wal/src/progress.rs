//! [`Progress`]: the commit index, derived from durable positions.
//!
//! - Primary, `async` mode (or alone): the commit index is the local durable index.
//! - Primary, `sync` mode: the highest index durable on a majority of the voters, the primary
//!   included (acks of non-voting members are kept, not counted).
//! - Either way a primary only commits at or above its *floor*, the first record of its own
//!   epoch (its epoch marker): records of older epochs become committed with it, never by
//!   being counted alone (the rule Raft uses for entries of earlier terms).
//! - Follower: the primary's commit index, capped at what is durable locally.
//!
//! The applier (`applier.rs`) applies up to the commit index.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};

use switchyard_backend_api::{LogIndex, NodeId};
use tokio::sync::watch;

use crate::config::Mode;

#[derive(Debug, Clone, Copy)]
enum Stance {
    Primary { floor: LogIndex },
    Follower,
}

#[derive(Debug)]
struct State {
    stance: Stance,
    durable: LogIndex,
    acks: BTreeMap<NodeId, LogIndex>,
    voters: BTreeSet<NodeId>,
    leader_commit: LogIndex,
}

/// Durable positions of this node and (on a primary) its followers, and the commit index
/// they imply.
#[derive(Debug)]
pub(crate) struct Progress {
    mode: Mode,
    commit: watch::Sender<LogIndex>,
    /// Bumped on every follower ack, so a waiter for one follower wakes without polling.
    acked: watch::Sender<u64>,
    state: Mutex<State>,
}

impl Progress {
    /// Start as a follower with `durable` on disk and `applied` committed (already applied at
    /// recovery), counting `voters`.
    pub(crate) fn new(
        voters: BTreeSet<NodeId>,
        mode: Mode,
        durable: LogIndex,
        applied: LogIndex,
    ) -> Self {
        Self {
            mode,
            commit: watch::Sender::new(applied),
            acked: watch::Sender::new(0),
            state: Mutex::new(State {
                stance: Stance::Follower,
                durable,
                acks: BTreeMap::new(),
                voters,
                leader_commit: applied,
            }),
        }
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut state);
        let candidate = match state.stance {
            Stance::Primary { floor } => {
                let quorum = state.voters.len() / 2 + 1;
                let counted = if quorum <= 1 || self.mode == Mode::Async {
                    state.durable
                } else {
                    let mut durable: Vec<LogIndex> = state
                        .acks
                        .iter()
                        .filter(|(id, _)| state.voters.contains(id))
                        .map(|(_, index)| *index)
                        .collect();
                    durable.push(state.durable);
                    durable.sort_unstable_by(|a, b| b.cmp(a));
                    durable.get(quorum - 1).copied().unwrap_or(0)
                };
                if counted >= floor { counted } else { 0 }
            }
            Stance::Follower => state.leader_commit.min(state.durable),
        };
        self.commit.send_if_modified(|commit| {
            let advanced = candidate > *commit;
            if advanced {
                *commit = candidate;
            }
            advanced
        });
    }

    /// This node became primary; it commits from `floor` (its epoch marker) on.
    pub(crate) fn lead(&self, floor: LogIndex) {
        self.update(|s| {
            s.stance = Stance::Primary { floor };
            s.acks.clear();
        });
    }

    /// This node follows; the commit index now comes from the primary.
    pub(crate) fn follow(&self) {
        self.update(|s| {
            s.stance = Stance::Follower;
            s.acks.clear();
            s.leader_commit = 0;
        });
    }

    /// Records up to `index` are durable locally.
    pub(crate) fn local_durable(&self, index: LogIndex) {
        self.update(|s| s.durable = index);
    }

    /// Follower `node` has records up to `index` durable (primary only).
    pub(crate) fn ack(&self, node: NodeId, index: LogIndex) {
        self.update(|s| {
            let entry = s.acks.entry(node).or_default();
            *entry = (*entry).max(index);
        });
        self.acked.send_modify(|acks| *acks = acks.wrapping_add(1));
    }

    /// Wait until follower `node` has acknowledged records up to `index` as durable (primary
    /// only; the caller bounds the wait).
    pub(crate) async fn wait_acked(&self, node: NodeId, index: LogIndex) {
        let mut acked = self.acked.subscribe();
        while self.acks().get(&node).is_none_or(|acked| *acked < index) {
            if acked.changed().await.is_err() {
                return;
            }
        }
    }

    /// Count `voters` toward the majority from now on (the commit index never goes back).
    pub(crate) fn set_voters(&self, voters: BTreeSet<NodeId>) {
        self.update(|s| s.voters = voters);
    }

    /// The primary's commit index (follower only).
    pub(crate) fn leader_commit(&self, index: LogIndex) {
        self.update(|s| s.leader_commit = s.leader_commit.max(index));
    }

    /// A snapshot replaced the log: everything up to `index` is committed and durable, and
    /// nothing beyond it is known.
    pub(crate) fn reset(&self, index: LogIndex) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.durable = index;
        state.leader_commit = index;
        self.commit.send_replace(index);
    }

    /// The commit index.
    pub(crate) fn commit(&self) -> LogIndex {
        *self.commit.borrow()
    }

    /// Followers' acknowledged durable indexes, as a primary counts them (empty otherwise).
    pub(crate) fn acks(&self) -> BTreeMap<NodeId, LogIndex> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .acks
            .clone()
    }

    /// Watch the commit index.
    pub(crate) fn subscribe(&self) -> watch::Receiver<LogIndex> {
        self.commit.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(ids: &[u64]) -> BTreeSet<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    #[test]
    fn only_voters_count_and_new_voters_count_at_once() {
        let progress = Progress::new(voters(&[1, 2, 3]), Mode::Sync, 0, 0);
        progress.lead(1);
        progress.local_durable(6);
        progress.ack(NodeId(4), 6);
        assert_eq!(progress.commit(), 0, "a learner's ack does not count");
        progress.ack(NodeId(2), 2);
        assert_eq!(progress.commit(), 2);
        progress.set_voters(voters(&[1, 2, 3, 4, 5]));
        assert_eq!(
            progress.commit(),
            2,
            "1, 2 and 4 hold 2; the commit never goes back"
        );
        progress.ack(NodeId(2), 5);
        assert_eq!(progress.commit(), 5, "1, 2 and 4 hold 5 of five voters");
        progress.set_voters(voters(&[1]));
        assert_eq!(
            progress.commit(),
            6,
            "alone, the primary's own durability commits"
        );
    }

    #[test]
    fn sync_commit_needs_a_majority_and_the_floor() {
        let progress = Progress::new(voters(&[1, 2, 3]), Mode::Sync, 0, 0);
        progress.lead(3);
        progress.local_durable(5);
        assert_eq!(progress.commit(), 0);
        progress.ack(NodeId(2), 2);
        assert_eq!(progress.commit(), 0, "below the floor");
        progress.ack(NodeId(2), 4);
        assert_eq!(progress.commit(), 4);
        progress.ack(NodeId(3), 5);
        assert_eq!(progress.commit(), 5);
    }

    #[test]
    fn follower_commit_is_capped_by_local_durability() {
        let progress = Progress::new(voters(&[1, 2, 3]), Mode::Async, 0, 0);
        progress.leader_commit(9);
        assert_eq!(progress.commit(), 0);
        progress.local_durable(4);
        assert_eq!(progress.commit(), 4);
        progress.reset(2);
        assert_eq!(progress.commit(), 2);
    }
}
