//! Leader elections beyond failover: the ones an operator asks for (ElectLeaders) and the
//! automatic preferred-leader rebalancing, so a restarted broker gets its leaderships back.
//!
//! Each election is one `AlterPartition` metadata command, fenced by the partition epoch it was
//! planned at, so an election planned against a view that moved on is refused and planned
//! again rather than applied to a partition it no longer fits:
//! - **preferred**: the first assigned replica becomes leader if it is live and in the ISR
//!   (`PREFERRED_LEADER_NOT_AVAILABLE` otherwise, `ELECTION_NOT_NEEDED` if it already leads);
//! - **unclean**, only when an operator asks for it: a partition without a leader gets one —
//!   a live ISR member if there is one, else the first live assigned replica, whose log
//!   becomes the partition's (what it lacks of the old ISR's is lost, as in Kafka);
//!   `ELECTION_NOT_NEEDED` if the partition has a leader, `ELIGIBLE_LEADERS_NOT_AVAILABLE`
//!   if no replica is live.
//!
//! The rebalancer runs on the metadata leader's broker every
//! `leader.imbalance.check.interval.seconds` when `auto.leader.rebalance.enable` is on: a live
//! broker that leads fewer than `100 - leader.imbalance.per.broker.percentage` % of the
//! partitions it is the preferred replica of gets them back by preferred elections, as Kafka's
//! controller does.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use switchyard_backend_api::{
    BrokerId, LogIndex, MetadataCommand, MetadataError, MetadataState, Rejection, StateView,
};
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::kafka::errors::metadata_error;

/// Which leader an election picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Election {
    /// The preferred (first assigned) replica, if it is live and in sync.
    Preferred,
    /// Any live replica of a partition without a leader.
    Unclean,
}

/// How many times an election is planned again after its partition changed under it.
const ATTEMPTS: usize = 3;

/// The `AlterPartition` that makes `election`'s leader lead `partition` of `topic` in
/// `state`, or the Kafka error saying why there is none to make.
pub(crate) fn plan(
    state: &MetadataState,
    topic: &str,
    partition: u32,
    election: Election,
) -> Result<MetadataCommand, ResponseError> {
    let p = state
        .partition(topic, partition)
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    let live = |b: &BrokerId| state.broker(*b).is_some_and(|b| !b.fenced);
    let (leader, isr) = match election {
        Election::Preferred => {
            let preferred = *p
                .replicas
                .front()
                .ok_or(ResponseError::PreferredLeaderNotAvailable)?;
            if p.leader == Some(preferred) {
                return Err(ResponseError::ElectionNotNeeded);
            }
            if !live(&preferred) || !p.isr.contains(&preferred) {
                return Err(ResponseError::PreferredLeaderNotAvailable);
            }
            (preferred, p.isr.iter().copied().collect())
        }
        Election::Unclean => {
            if p.leader.is_some() {
                return Err(ResponseError::ElectionNotNeeded);
            }
            let in_sync: Vec<BrokerId> = p.isr.iter().copied().filter(live).collect();
            match in_sync.first() {
                Some(&leader) => (leader, in_sync),
                None => {
                    let leader = p
                        .replicas
                        .iter()
                        .copied()
                        .find(live)
                        .ok_or(ResponseError::EligibleLeadersNotAvailable)?;
                    (leader, vec![leader])
                }
            }
        }
    };
    Ok(MetadataCommand::AlterPartition {
        topic: topic.to_owned(),
        partition,
        partition_epoch: p.partition_epoch,
        leader: Some(leader),
        isr,
    })
}

/// The outcome of one partition's election: nothing, or a Kafka error with a message.
pub(crate) type ElectionResult = Result<(), (ResponseError, String)>;

/// Run `election` for each of `partitions` (topic, index), planned against a linearizable
/// read of the metadata (the local view where the backend has no such reads) and planned
/// again (up to [`ATTEMPTS`] times) against a newer view when the partition changed in
/// between. Returns each partition's outcome, in order.
pub(crate) async fn elect(
    broker: &Broker,
    partitions: &[(String, i32)],
    election: Election,
) -> Vec<ElectionResult> {
    let mut results: Vec<Option<ElectionResult>> = vec![None; partitions.len()];
    let mut seen = None;
    for _ in 0..ATTEMPTS {
        let pending: Vec<usize> = (0..partitions.len())
            .filter(|i| results[*i].is_none())
            .collect();
        if pending.is_empty() {
            break;
        }
        let state = match fresh_state(broker, seen).await {
            Ok(view) => {
                seen = Some(view.applied_index);
                view.state.clone()
            }
            Err(e) => {
                for i in pending {
                    results[i] = Some(Err((metadata_error(&e), e.to_string())));
                }
                break;
            }
        };
        for i in pending {
            let (topic, index) = &partitions[i];
            let command = match u32::try_from(*index) {
                Ok(index) => plan(&state, topic, index, election),
                Err(_) => Err(ResponseError::UnknownTopicOrPartition),
            };
            results[i] = match command {
                Err(error) => Some(Err((error, explain(error).to_owned()))),
                Ok(command) => match broker.propose(command).await {
                    Ok(_) => Some(Ok(())),
                    // Changed since the read (a failover, an ISR change): plan it again.
                    Err(MetadataError::Rejected(Rejection::StalePartitionEpoch { .. })) => None,
                    Err(e) => Some(Err((metadata_error(&e), e.to_string()))),
                },
            };
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err((
                    ResponseError::NotController,
                    "the partition kept changing while it was elected".to_owned(),
                ))
            })
        })
        .collect()
}

/// The metadata to plan against: a linearizable read where the backend offers one; else the
/// local view, after it moved past `seen` (the view a refused plan was made against) —
/// waited for on the backend's notification, within the metadata timeout.
async fn fresh_state(
    broker: &Broker,
    seen: Option<LogIndex>,
) -> Result<Arc<StateView>, MetadataError> {
    let backend = broker.backend();
    let timeout = broker.metadata_timeout();
    if backend.guarantees().linearizable_reads() {
        return match tokio::time::timeout(timeout, backend.read_linearizable()).await {
            Ok(view) => view,
            Err(_) => Err(MetadataError::Timeout {
                what: "a linearizable read of the metadata".to_owned(),
                after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        };
    }
    match seen {
        Some(index) => backend.wait_applied(index + 1, timeout).await,
        None => Ok(backend.local()),
    }
}

fn explain(error: ResponseError) -> &'static str {
    match error {
        ResponseError::ElectionNotNeeded => "the partition already has the leader asked for",
        ResponseError::PreferredLeaderNotAvailable => {
            "the preferred replica is not live or not in the ISR"
        }
        ResponseError::EligibleLeadersNotAvailable => "no replica of the partition is live",
        ResponseError::UnknownTopicOrPartition => "no such topic or partition",
        _ => "",
    }
}

/// The partitions a preferred election would move, per broker over the imbalance threshold:
/// for each live broker, the partitions whose preferred replica it is and that it does not
/// lead, when they are more than `percentage` % of its preferred partitions.
pub(crate) fn imbalanced(state: &MetadataState, percentage: u64) -> Vec<(String, i32)> {
    let mut moves = Vec::new();
    for broker in state.live_brokers() {
        let mut preferred = 0u64;
        let mut elsewhere = Vec::new();
        for topic in state.topics() {
            for (index, p) in topic.partitions.iter().enumerate() {
                if p.replicas.front() != Some(&broker.id) {
                    continue;
                }
                preferred += 1;
                if p.leader != Some(broker.id) {
                    elsewhere.push((topic.name.clone(), i32::try_from(index).unwrap_or(i32::MAX)));
                }
            }
        }
        if preferred > 0 && elsewhere.len() as u64 * 100 > percentage * preferred {
            moves.extend(elsewhere);
        }
    }
    moves
}

/// The automatic preferred-leader rebalancing (see the module docs). Runs until the broker
/// stops; does nothing when `auto_leader_rebalance_enable` is off.
pub async fn run_rebalancer(broker: Arc<Broker>) {
    let settings = broker.settings();
    if !settings.auto_leader_rebalance_enable {
        return;
    }
    let percentage = settings.leader_imbalance_per_broker_percentage;
    let interval = Duration::from_secs(settings.leader_imbalance_check_interval_seconds);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !(broker.is_registered() && broker.is_metadata_leader()) {
            continue;
        }
        let moves = imbalanced(&broker.metadata().state, percentage);
        if moves.is_empty() {
            continue;
        }
        let results = elect(&broker, &moves, Election::Preferred).await;
        for ((topic, partition), result) in moves.iter().zip(results) {
            match result {
                Ok(()) => {
                    info!(%topic, partition, "moved leadership back to the preferred replica")
                }
                Err((ResponseError::PreferredLeaderNotAvailable, _)) => {
                    debug!(%topic, partition, "preferred replica not in sync yet");
                }
                Err((error, message)) => {
                    warn!(%topic, partition, %error, message, "preferred election failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_backend_api::{NewTopic, TopicId};

    fn state_with(leaders: &[(Vec<i32>, Option<i32>, Vec<i32>)]) -> MetadataState {
        let mut state = MetadataState::default();
        let mut apply = |command| {
            state.apply(&command).expect("applies");
        };
        for id in 1..=3 {
            apply(MetadataCommand::RegisterBroker {
                id: BrokerId(id),
                host: "h".into(),
                port: 9092,
                rack: None,
                listeners: Vec::new(),
            });
        }
        apply(MetadataCommand::CreateTopics {
            topics: vec![NewTopic {
                name: "t".into(),
                id: TopicId(uuid::Uuid::new_v4()),
                assignments: leaders
                    .iter()
                    .map(|(replicas, _, _)| replicas.iter().map(|b| BrokerId(*b)).collect())
                    .collect(),
                configs: Vec::new(),
            }],
        });
        for (i, (_, leader, isr)) in leaders.iter().enumerate() {
            let p = state.partition("t", i as u32).expect("partition").clone();
            state
                .apply(&MetadataCommand::AlterPartition {
                    topic: "t".into(),
                    partition: i as u32,
                    partition_epoch: p.partition_epoch,
                    leader: leader.map(BrokerId),
                    isr: isr.iter().map(|b| BrokerId(*b)).collect(),
                })
                .expect("alters");
        }
        state
    }

    #[test]
    fn a_preferred_election_needs_the_preferred_replica_live_and_in_sync() {
        let mut state = state_with(&[
            (vec![1, 2, 3], Some(2), vec![1, 2, 3]),
            (vec![1, 2, 3], Some(1), vec![1, 2, 3]),
            (vec![1, 2, 3], Some(2), vec![2, 3]),
        ]);
        let command = plan(&state, "t", 0, Election::Preferred).expect("elects");
        assert!(
            matches!(&command, MetadataCommand::AlterPartition { leader: Some(BrokerId(1)), isr, .. } if isr.len() == 3),
            "{command:?}"
        );
        assert_eq!(
            plan(&state, "t", 1, Election::Preferred).err(),
            Some(ResponseError::ElectionNotNeeded)
        );
        assert_eq!(
            plan(&state, "t", 2, Election::Preferred).err(),
            Some(ResponseError::PreferredLeaderNotAvailable),
            "not in the ISR"
        );
        assert_eq!(
            plan(&state, "t", 7, Election::Preferred).err(),
            Some(ResponseError::UnknownTopicOrPartition)
        );
        state.apply(&command).expect("the planned command applies");
        assert_eq!(
            state.partition("t", 0).expect("p").leader,
            Some(BrokerId(1))
        );
        assert!(
            state.apply(&command).is_err(),
            "a second copy is fenced by the partition epoch"
        );
    }

    #[test]
    fn an_unclean_election_is_only_for_leaderless_partitions_and_takes_any_live_replica() {
        let mut state = state_with(&[(vec![1, 2, 3], Some(1), vec![1, 2, 3])]);
        assert_eq!(
            plan(&state, "t", 0, Election::Unclean).err(),
            Some(ResponseError::ElectionNotNeeded)
        );
        let incarnation =
            |state: &MetadataState, id| state.broker(BrokerId(id)).expect("b").incarnation;
        for id in [1, 2] {
            let incarnation = incarnation(&state, id);
            state
                .apply(&MetadataCommand::FenceBroker {
                    id: BrokerId(id),
                    incarnation,
                })
                .expect("fences");
        }
        // Broker 3 is the live ISR member left: it leads after the fence; fence it too.
        let incarnation = incarnation(&state, 3);
        state
            .apply(&MetadataCommand::FenceBroker {
                id: BrokerId(3),
                incarnation,
            })
            .expect("fences");
        assert_eq!(state.partition("t", 0).expect("p").leader, None);
        assert_eq!(
            plan(&state, "t", 0, Election::Unclean).err(),
            Some(ResponseError::EligibleLeadersNotAvailable)
        );
        // Broker 1 comes back; it is not in the ISR (3 is, fenced): only unclean elects it.
        state
            .apply(&MetadataCommand::RegisterBroker {
                id: BrokerId(1),
                host: "h".into(),
                port: 9092,
                rack: None,
                listeners: Vec::new(),
            })
            .expect("registers");
        assert_eq!(
            state.partition("t", 0).expect("p").leader,
            None,
            "1 may not lead cleanly"
        );
        let command = plan(&state, "t", 0, Election::Unclean).expect("elects");
        assert!(
            matches!(&command, MetadataCommand::AlterPartition { leader: Some(BrokerId(1)), isr, .. } if *isr == [BrokerId(1)]),
            "{command:?}"
        );
    }

    #[test]
    fn imbalance_counts_preferred_partitions_led_elsewhere() {
        let state = state_with(&[
            (vec![1, 2, 3], Some(2), vec![1, 2, 3]),
            (vec![1, 2, 3], Some(1), vec![1, 2, 3]),
            (vec![2, 3, 1], Some(2), vec![1, 2, 3]),
            (vec![3, 1, 2], Some(3), vec![1, 2, 3]),
        ]);
        // Broker 1 leads one of its two preferred partitions: 50 % imbalance.
        assert_eq!(imbalanced(&state, 10), vec![("t".to_owned(), 0)]);
        assert_eq!(imbalanced(&state, 50), Vec::<(String, i32)>::new());
    }
}
