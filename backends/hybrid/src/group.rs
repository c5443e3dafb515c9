//! What the Raft group decides — and nothing else: the members with their addresses, which
//! node leads the metadata stream at which term, and which followers' WAL is caught up.
//!
//! [`GroupState::apply`] is deterministic (no clock, no I/O): every node applies the same
//! committed entries in the same order and holds the same state.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A normal entry of the group's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum GroupCommand {
    /// `node` won the election of `term` and leads the metadata stream at epoch `term`.
    /// Proposed by the new leader as its first entry of the term.
    Lead {
        /// The leader.
        node: u64,
        /// Its Raft term, which is the WAL epoch.
        term: u64,
    },
    /// The followers whose WAL holds everything the leader of `term` acknowledged. Ignored
    /// unless `term` is the current leader's: a deposed leader's view is stale.
    InSync {
        /// The leader's term.
        term: u64,
        /// The caught-up followers (the leader is always in sync and not listed).
        followers: BTreeSet<u64>,
    },
}

/// The group's replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// Voters and learners → cluster address (as carried by their conf change).
    pub members: BTreeMap<u64, String>,
    /// The members that do not vote (yet).
    pub learners: BTreeSet<u64>,
    /// The metadata leader and its term, once its `Lead` entry committed.
    pub leader: Option<(u64, u64)>,
    /// The leader and the followers it last reported caught up.
    pub in_sync: BTreeSet<u64>,
}

impl GroupState {
    /// Apply one committed command.
    pub fn apply(&mut self, command: &GroupCommand) {
        match command {
            GroupCommand::Lead { node, term } => {
                if self.leader.is_none_or(|(_, at)| *term > at) {
                    self.leader = Some((*node, *term));
                    // A new leader starts alone in sync until it reports its followers.
                    self.in_sync = BTreeSet::from([*node]);
                }
            }
            GroupCommand::InSync { term, followers } => {
                if let Some((leader, at)) = self.leader
                    && at == *term
                {
                    self.in_sync = followers
                        .iter()
                        .copied()
                        .filter(|id| self.members.contains_key(id))
                        .chain([leader])
                        .collect();
                }
            }
        }
    }

    /// A member joined as a voter (or a learner became one); an empty `addr` keeps the one
    /// known.
    pub fn add_member(&mut self, id: u64, addr: String) {
        self.learners.remove(&id);
        self.set_addr(id, addr);
    }

    /// A member joined as a learner: streamed to, not counted.
    pub fn add_learner(&mut self, id: u64, addr: String) {
        self.learners.insert(id);
        self.set_addr(id, addr);
    }

    fn set_addr(&mut self, id: u64, addr: String) {
        let known = self.members.entry(id).or_default();
        if !addr.is_empty() {
            *known = addr;
        }
    }

    /// A member left: it is no longer in sync, and no longer the leader.
    pub fn remove_member(&mut self, id: u64) {
        self.members.remove(&id);
        self.learners.remove(&id);
        self.in_sync.remove(&id);
    }

    /// Whether `id` is a voting member.
    pub fn is_voter(&self, id: u64) -> bool {
        self.members.contains_key(&id) && !self.learners.contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_terms_win_and_stale_in_sync_reports_are_ignored() {
        let mut state = GroupState::default();
        state.add_member(1, "a".into());
        state.add_member(2, "b".into());
        state.add_member(3, "c".into());
        state.apply(&GroupCommand::Lead { node: 1, term: 2 });
        state.apply(&GroupCommand::InSync {
            term: 2,
            followers: BTreeSet::from([2, 9]),
        });
        assert_eq!(
            state.in_sync,
            BTreeSet::from([1, 2]),
            "unknown node 9 is dropped"
        );
        state.apply(&GroupCommand::Lead { node: 3, term: 4 });
        assert_eq!(state.leader, Some((3, 4)));
        assert_eq!(state.in_sync, BTreeSet::from([3]));
        // The deposed leader's report and an older Lead change nothing.
        state.apply(&GroupCommand::InSync {
            term: 2,
            followers: BTreeSet::from([1, 2]),
        });
        state.apply(&GroupCommand::Lead { node: 1, term: 3 });
        assert_eq!(state.leader, Some((3, 4)));
        assert_eq!(state.in_sync, BTreeSet::from([3]));
        state.remove_member(3);
        assert!(state.in_sync.is_empty());
    }
}
