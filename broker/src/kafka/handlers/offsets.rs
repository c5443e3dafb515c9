//! OffsetCommit, OffsetFetch and OffsetDelete, through the metadata backend: one
//! `CoordinatedCommitOffsets` (`DeleteOffsets`) command per request, reads from the local
//! view.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Buf;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Message};
use switchyard_backend_api::{
    GenerationCheck, GroupId, MemberId, MetadataCommand, MetadataError, MetadataState,
    OffsetCommit, Rejection,
};

use crate::broker::{Broker, now_ms};
use crate::group::{GroupDescription, Phase};
use crate::kafka::errors::group_error;
use crate::kafka::handlers::kstr;

pub(crate) async fn commit(
    broker: &Broker,
    _version: i16,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = request.group_id.0.as_str().to_owned();
    let view = broker.metadata();
    let max_metadata = broker.settings().offset_metadata_max_bytes;
    // (topic, partition) → error decided before proposing.
    let mut errors: BTreeMap<(String, i32), ResponseError> = BTreeMap::new();
    let mut offsets = Vec::new();
    for topic in &request.topics {
        let name = topic.name.0.as_str();
        for p in &topic.partitions {
            let metadata = p.committed_metadata.as_ref().map_or("", |m| m.as_str());
            let error = if u32::try_from(p.partition_index)
                .ok()
                .and_then(|index| view.state.partition(name, index))
                .is_none()
            {
                Some(ResponseError::UnknownTopicOrPartition)
            } else if metadata.len() > max_metadata {
                Some(ResponseError::OffsetMetadataTooLarge)
            } else {
                None
            };
            match error {
                Some(e) => {
                    errors.insert((name.to_owned(), p.partition_index), e);
                }
                None => offsets.push(OffsetCommit {
                    topic: name.to_owned(),
                    partition: p.partition_index as u32,
                    offset: p.committed_offset,
                    leader_epoch: (p.committed_leader_epoch >= 0)
                        .then_some(p.committed_leader_epoch),
                    metadata: metadata.to_owned(),
                }),
            }
        }
    }
    let generation = request.generation_id_or_member_epoch;
    let shared_error = if let Some(e) = broker.coordination_error(&group) {
        Some(e)
    } else if let Some(e) = broker.groups().check_commit(
        &group,
        generation,
        request.member_id.as_str(),
        request.group_instance_id.as_ref().map(|i| i.as_str()),
    ) {
        Some(e)
    } else if offsets.is_empty() {
        None
    } else {
        // Fenced by this broker's coordination: a commit that lands after this broker stopped
        // coordinating the group (a client that gave up on it committed through the next
        // coordinator meanwhile) is refused, not applied over newer offsets.
        let command = MetadataCommand::CoordinatedCommitOffsets {
            coordinator: broker.id(),
            incarnation: broker.incarnation(),
            group: GroupId(group.clone()),
            generation: (generation >= 0).then(|| GenerationCheck {
                generation,
                member: MemberId(request.member_id.as_str().to_owned()),
            }),
            offsets,
            commit_timestamp_ms: now_ms(),
        };
        broker.propose(command).await.err().map(|e| match e {
            // Kafka's answer when a commit is too large to write as one record.
            MetadataError::CommandTooLarge { .. } => ResponseError::InvalidCommitOffsetSize,
            e => group_error(&e),
        })
    };
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.as_str().to_owned();
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let error = errors
                        .get(&(name.clone(), p.partition_index))
                        .copied()
                        .or(shared_error);
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.map_or(0, |e| e.code()))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One committed offset as OffsetFetch reports it: partition, offset, leader epoch, metadata.
type Committed = (i32, i64, i32, String);

/// Committed offsets of one group: for the asked partitions, or every committed one.
fn group_offsets(
    state: &MetadataState,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, Vec<Committed>)> {
    let group = GroupId(group.to_owned());
    let lookup = |topic: &str, partition: i32| {
        u32::try_from(partition)
            .ok()
            .and_then(|p| state.committed_offset(&group, topic, p))
            .map_or((-1, -1, String::new()), |o| {
                (o.offset, o.leader_epoch.unwrap_or(-1), o.metadata.clone())
            })
    };
    match topics {
        Some(topics) => topics
            .into_iter()
            .map(|(topic, partitions)| {
                let rows = partitions
                    .into_iter()
                    .map(|p| {
                        let (offset, epoch, metadata) = lookup(&topic, p);
                        (p, offset, epoch, metadata)
                    })
                    .collect();
                (topic, rows)
            })
            .collect(),
        None => {
            let mut by_topic: BTreeMap<String, Vec<Committed>> = BTreeMap::new();
            for (key, o) in state.group_offsets(&group) {
                by_topic.entry(key.topic.clone()).or_default().push((
                    key.partition as i32,
                    o.offset,
                    o.leader_epoch.unwrap_or(-1),
                    o.metadata.clone(),
                ));
            }
            by_topic.into_iter().collect()
        }
    }
}

/// One group's answer, for any version: the group-level error, and per topic the rows —
/// the committed offsets asked for (or all of them), or, when there is an error, nothing,
/// except before v2 (no group-level error code) where each asked partition carries it.
struct GroupAnswer {
    error: Option<ResponseError>,
    partition_error: Option<ResponseError>,
    rows: Vec<(String, Vec<Committed>)>,
}

fn answer_group(
    broker: &Broker,
    state: &MetadataState,
    version: i16,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> GroupAnswer {
    let error = broker.coordination_error(group);
    let rows = match (error, wanted) {
        (None, wanted) => group_offsets(state, group, wanted),
        (Some(_), Some(wanted)) if version < 2 => wanted
            .into_iter()
            .map(|(topic, partitions)| {
                let rows = partitions
                    .into_iter()
                    .map(|p| (p, -1, -1, String::new()))
                    .collect();
                (topic, rows)
            })
            .collect(),
        (Some(_), _) => Vec::new(),
    };
    GroupAnswer {
        error,
        partition_error: error.filter(|_| version < 2),
        rows,
    }
}

pub(crate) async fn fetch(
    broker: &Broker,
    version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let view = broker.metadata();
    // A `read_committed` consumer asks (v7+) not to be given an offset a transaction is
    // about to commit: such a partition answers UNSTABLE_OFFSET_COMMIT, and it retries.
    let unstable = |group: &str, topic: &str, partition: i32| {
        request.require_stable
            && u32::try_from(partition).is_ok_and(|p| {
                view.state
                    .pending_txn_offset(&GroupId(group.to_owned()), topic, p)
            })
    };
    if version >= 8 {
        let groups = request
            .groups
            .iter()
            .map(|g| {
                let wanted = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.as_str().to_owned(), t.partition_indexes.clone()))
                        .collect()
                });
                let answer =
                    answer_group(broker, &view.state, version, g.group_id.0.as_str(), wanted);
                let topics = answer
                    .rows
                    .into_iter()
                    .map(|(topic, rows)| {
                        let partitions = rows
                            .into_iter()
                            .map(|(p, offset, epoch, metadata)| {
                                let partition = OffsetFetchResponsePartitions::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(Some(kstr(metadata)));
                                if unstable(g.group_id.0.as_str(), &topic, p) {
                                    partition
                                        .with_committed_offset(-1)
                                        .with_error_code(ResponseError::UnstableOffsetCommit.code())
                                } else {
                                    partition
                                }
                            })
                            .collect();
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(kstr(topic)))
                            .with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_topics(topics)
                    .with_error_code(answer.error.map_or(0, |e| e.code()))
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = request.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.as_str().to_owned(), t.partition_indexes.clone()))
            .collect()
    });
    let answer = answer_group(
        broker,
        &view.state,
        version,
        request.group_id.0.as_str(),
        wanted,
    );
    let partition_error = answer.partition_error.map_or(0, |e| e.code());
    let topics = answer
        .rows
        .into_iter()
        .map(|(topic, rows)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(kstr(topic.clone())))
                .with_partitions(
                    rows.into_iter()
                        .map(|(p, offset, epoch, metadata)| {
                            let partition = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(Some(kstr(metadata)))
                                .with_error_code(partition_error);
                            if unstable(request.group_id.0.as_str(), &topic, p) {
                                partition
                                    .with_committed_offset(-1)
                                    .with_error_code(ResponseError::UnstableOffsetCommit.code())
                            } else {
                                partition
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default()
        .with_topics(topics)
        .with_error_code(answer.error.map_or(0, |e| e.code()))
}

/// OffsetDelete, version 0: the group's committed offsets of the listed partitions go, except
/// those of topics a member of a non-empty consumer group subscribes to
/// (GROUP_SUBSCRIBED_TO_TOPIC), as Kafka does; one `DeleteOffsets` proposal.
pub(crate) async fn delete(broker: &Broker, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = request.group_id.0.as_str();
    let refused =
        |error: ResponseError| OffsetDeleteResponse::default().with_error_code(error.code());
    if let Some(error) = broker.coordination_error(group) {
        return refused(error);
    }
    let Some(described) = broker.groups().describe(group) else {
        return refused(ResponseError::GroupIdNotFound);
    };
    let subscribed = subscriptions(&described);
    let view = broker.metadata();
    let mut deleted = Vec::new();
    let topics: Vec<OffsetDeleteResponseTopic> = request
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.0.as_str();
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let index = p.partition_index;
                    let known = u32::try_from(index)
                        .ok()
                        .filter(|i| view.state.partition(name, *i).is_some());
                    let error = match known {
                        None => ResponseError::UnknownTopicOrPartition.code(),
                        Some(_) if subscribed.contains(name) => {
                            ResponseError::GroupSubscribedToTopic.code()
                        }
                        Some(i) => {
                            deleted.push((name.to_owned(), i));
                            0
                        }
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(error)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    if !deleted.is_empty() {
        let command = MetadataCommand::DeleteOffsets {
            group: GroupId(group.to_owned()),
            partitions: deleted,
        };
        if let Err(e) = broker.propose(command).await {
            return refused(match &e {
                MetadataError::Rejected(Rejection::GroupNotFound { .. }) => {
                    ResponseError::GroupIdNotFound
                }
                other => group_error(other),
            });
        }
    }
    OffsetDeleteResponse::default().with_topics(topics)
}

/// The topics the members of a non-empty consumer group subscribe to, from their protocol
/// metadata (ConsumerProtocolSubscription); nothing for an empty group or another protocol.
fn subscriptions(group: &GroupDescription) -> BTreeSet<String> {
    if group.phase == Phase::Empty || group.protocol_type != "consumer" {
        return BTreeSet::new();
    }
    let mut topics = BTreeSet::new();
    for (_, _, _, _, metadata, _) in &group.members {
        let mut bytes = metadata.clone();
        if bytes.len() < 2 {
            continue;
        }
        let version = bytes.get_i16();
        let version = version.clamp(0, ConsumerProtocolSubscription::VERSIONS.max);
        if let Ok(subscription) = ConsumerProtocolSubscription::decode(&mut bytes, version) {
            topics.extend(subscription.topics.iter().map(ToString::to_string));
        }
    }
    topics
}
