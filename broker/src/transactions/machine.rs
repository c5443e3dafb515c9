//! What a transaction coordinator has to do, decided from the metadata alone (no I/O, no
//! clock): the driver in [`super`] feeds it the state, the time and the completions it has in
//! flight, and carries out the actions.

use std::collections::HashSet;

use switchyard_backend_api::{BrokerId, MetadataState, Transaction, TxnStatus};
use switchyard_log::control::Marker;

/// One thing to do for one transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The transaction stayed open past its timeout: abort it (`AbortExpiredTxn` at the
    /// producer id and epoch seen), which fences the producer.
    Expire {
        /// The transactional id.
        transactional_id: String,
        /// The producer id and epoch the transaction is open at.
        producer: (i64, i16),
    },
    /// The transaction is being committed or aborted: write its markers to its partitions,
    /// then complete it (`CompleteTxn`).
    Complete(Completion),
    /// The transactional id was idle longer than `transactional.id.expiration.ms`: forget it
    /// (`ExpireTransactionalId` at the producer id and epoch seen).
    Forget {
        /// The transactional id.
        transactional_id: String,
        /// The producer id and epoch it holds.
        producer: (i64, i16),
    },
}

/// How long an idle transactional id stays known.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `transactional.id.expiration.ms`.
    pub id_expiration_ms: i64,
}

/// A commit or abort whose markers are to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The transactional id.
    pub transactional_id: String,
    /// The producer id and epoch the markers carry.
    pub producer: (i64, i16),
    /// Commit or abort.
    pub marker: Marker,
    /// The transaction's marker epoch: the coordinator epoch its markers carry.
    pub marker_epoch: i32,
    /// The partitions in the transaction.
    pub partitions: Vec<(String, u32)>,
}

impl Completion {
    /// The completion `txn` (of `transactional_id`) waits for, if it is being completed.
    pub fn of(transactional_id: &str, txn: &Transaction) -> Option<Self> {
        let marker = match txn.status {
            TxnStatus::PrepareCommit => Marker::Commit,
            TxnStatus::PrepareAbort => Marker::Abort,
            _ => return None,
        };
        Some(Self {
            transactional_id: transactional_id.to_owned(),
            producer: (txn.producer_id, txn.producer_epoch),
            marker,
            marker_epoch: txn.marker_epoch,
            partitions: txn.partitions.clone(),
        })
    }

    /// Whether `state` still has this completion to do.
    pub fn pending_in(&self, state: &MetadataState) -> bool {
        state
            .transaction(&self.transactional_id)
            .and_then(|txn| Self::of(&self.transactional_id, txn))
            .is_some_and(|c| c == *self)
    }
}

/// What broker `me` has to do at `now_ms` as coordinator of the transactional ids `state`
/// places on it: complete every transaction being completed (unless `in_flight` already
/// is), expire every transaction open longer than its timeout, and forget every id idle
/// longer than `limits.id_expiration_ms`.
pub fn due(
    state: &MetadataState,
    me: BrokerId,
    now_ms: i64,
    in_flight: &HashSet<String>,
    limits: Limits,
) -> Vec<Action> {
    state
        .transactions()
        .filter(|(id, _)| !in_flight.contains(id.as_str()))
        .filter(|(id, _)| state.group_coordinator(id).is_some_and(|b| b.id == me))
        .filter_map(|(id, txn)| {
            if let Some(completion) = Completion::of(id, txn) {
                return Some(Action::Complete(completion));
            }
            let producer = (txn.producer_id, txn.producer_epoch);
            if txn.status == TxnStatus::Ongoing {
                let expired = now_ms.saturating_sub(txn.started_ms) > i64::from(txn.timeout_ms);
                return expired.then(|| Action::Expire {
                    transactional_id: id.clone(),
                    producer,
                });
            }
            let idle = now_ms.saturating_sub(txn.updated_ms) > limits.id_expiration_ms;
            idle.then(|| Action::Forget {
                transactional_id: id.clone(),
                producer,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use switchyard_backend_api::{MetadataCommand, NewTopic, TopicId};

    use super::*;

    fn command(state: &mut MetadataState, command: MetadataCommand) {
        state.apply(&command).expect("applies");
    }

    /// One live broker (1) with a topic, and transactional ids `a` (open since 1 000 with a
    /// 10 s timeout) and `b` (committing).
    fn state() -> MetadataState {
        let mut state = MetadataState::default();
        command(
            &mut state,
            MetadataCommand::RegisterBroker {
                id: BrokerId(1),
                host: "h".into(),
                port: 9092,
                rack: None,
                listeners: Vec::new(),
            },
        );
        command(
            &mut state,
            MetadataCommand::CreateTopics {
                topics: vec![NewTopic {
                    name: "t".into(),
                    id: TopicId(uuid::Uuid::new_v4()),
                    assignments: vec![vec![BrokerId(1)]],
                    configs: Vec::new(),
                }],
            },
        );
        for (id, commit) in [("a", None), ("b", Some(true))] {
            command(
                &mut state,
                MetadataCommand::InitTransactionalId {
                    transactional_id: id.into(),
                    timeout_ms: 10_000,
                    current: None,
                    now_ms: 0,
                },
            );
            let txn = state.transaction(id).expect("initialized").clone();
            command(
                &mut state,
                MetadataCommand::AddToTxn {
                    transactional_id: id.into(),
                    producer_id: txn.producer_id,
                    producer_epoch: txn.producer_epoch,
                    partitions: vec![("t".into(), 0)],
                    groups: Vec::new(),
                    now_ms: 1_000,
                },
            );
            if let Some(commit) = commit {
                command(
                    &mut state,
                    MetadataCommand::EndTxn {
                        transactional_id: id.into(),
                        producer_id: txn.producer_id,
                        producer_epoch: txn.producer_epoch,
                        commit,
                        now_ms: 2_000,
                    },
                );
            }
        }
        state
    }

    #[test]
    fn completes_what_is_prepared_and_expires_what_is_late() {
        let state = state();
        let me = BrokerId(1);
        let b = state.transaction("b").expect("b").clone();
        let complete_b = Action::Complete(Completion {
            transactional_id: "b".into(),
            producer: (b.producer_id, b.producer_epoch),
            marker: Marker::Commit,
            marker_epoch: 1,
            partitions: vec![("t".into(), 0)],
        });
        let limits = Limits {
            id_expiration_ms: 50_000,
        };
        let due = |state: &MetadataState, me, now, busy: &HashSet<String>| {
            due(state, me, now, busy, limits)
        };
        assert_eq!(
            due(&state, me, 11_000, &HashSet::new()),
            vec![complete_b.clone()]
        );
        let a = state.transaction("a").expect("a").clone();
        assert_eq!(
            due(&state, me, 11_001, &HashSet::new()),
            vec![
                Action::Expire {
                    transactional_id: "a".into(),
                    producer: (a.producer_id, a.producer_epoch),
                },
                complete_b.clone(),
            ]
        );
        let busy: HashSet<String> = ["b".to_owned()].into();
        assert_eq!(due(&state, me, 0, &busy), Vec::new(), "in flight already");
        assert_eq!(
            due(&state, BrokerId(2), 99_999, &HashSet::new()),
            Vec::new(),
            "another broker coordinates nothing here"
        );
        let Action::Complete(completion) = complete_b else {
            unreachable!()
        };
        assert!(completion.pending_in(&state));
        let mut done = state.clone();
        command(
            &mut done,
            MetadataCommand::CompleteTxn {
                transactional_id: "b".into(),
                producer_id: b.producer_id,
                producer_epoch: b.producer_epoch,
                now_ms: 3_000,
            },
        );
        assert!(!completion.pending_in(&done));
        // Once completed, "b" is idle: forgotten after the expiration, counted from then.
        assert!(
            !due(&done, me, 53_000, &HashSet::new())
                .iter()
                .any(|a| matches!(a, Action::Forget { .. }))
        );
        assert!(
            due(&done, me, 53_001, &HashSet::new()).contains(&Action::Forget {
                transactional_id: "b".into(),
                producer: (b.producer_id, b.producer_epoch),
            })
        );
    }
}
