//! Command generators. `command_sequence` draws from a small universe of names and ids so that
//! commands collide and hit both the happy paths and the validation errors; `any_command` is
//! unconstrained, for totality.

use proptest::prelude::*;
use switchyard_backend_api::{
    BrokerEndpoint, BrokerId, ClusterId, GenerationCheck, GroupId, GroupMember, MemberId,
    MetadataCommand, NewTopic, OffsetCommit, PartitionOffsets, TopicId,
};

fn broker() -> impl Strategy<Value = BrokerId> {
    (-1i32..5).prop_map(BrokerId)
}

fn topic_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("c.d".to_owned()),
        Just("bad name".to_owned()),
    ]
}

fn topic_id() -> impl Strategy<Value = TopicId> {
    (0u8..6).prop_map(|n| TopicId(uuid::Uuid::from_bytes([n; 16])))
}

fn group() -> impl Strategy<Value = GroupId> {
    prop_oneof![Just(GroupId("g1".into())), Just(GroupId("g2".into()))]
}

fn member_id() -> impl Strategy<Value = MemberId> {
    (1u8..4).prop_map(|n| MemberId(format!("m{n}")))
}

fn member() -> impl Strategy<Value = GroupMember> {
    (member_id(), prop::collection::vec(any::<u8>(), 0..4)).prop_map(|(id, metadata)| GroupMember {
        id,
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "h".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        metadata,
        assignment: Vec::new(),
    })
}

/// Mostly valid replica lists (rotations over brokers 0..4), sometimes arbitrary ones.
fn assignments() -> impl Strategy<Value = Vec<Vec<BrokerId>>> {
    let valid = (1i32..4, 1i32..4, 0i32..4).prop_map(|(replication, partitions, shift)| {
        (0..partitions)
            .map(|p| {
                (0..replication)
                    .map(|r| BrokerId((p + r + shift) % 4))
                    .collect()
            })
            .collect()
    });
    let arbitrary = prop::collection::vec(prop::collection::vec(broker(), 0..4), 0..4);
    prop_oneof![3 => valid, 1 => arbitrary]
}

fn configs() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        (
            prop_oneof![Just(String::new()), Just("k1".into()), Just("k2".into())],
            "[a-z]{0,3}",
        ),
        0..3,
    )
}

fn offset_commit() -> impl Strategy<Value = OffsetCommit> {
    (topic_name(), 0u32..4, -1i64..100, prop::option::of(0i32..3)).prop_map(
        |(topic, partition, offset, leader_epoch)| OffsetCommit {
            topic,
            partition,
            offset,
            leader_epoch,
            metadata: String::new(),
        },
    )
}

fn leaf_command() -> impl Strategy<Value = MetadataCommand> {
    prop_oneof![
        prop_oneof![Just("x"), Just("y")].prop_map(|id| MetadataCommand::InitCluster {
            cluster_id: ClusterId(id.into())
        }),
        (
            broker(),
            prop_oneof![Just(String::new()), Just("h".to_owned())],
            prop::collection::vec(
                (prop_oneof![Just("A"), Just("B"), Just("")], 9092u16..9094),
                0..3
            )
        )
            .prop_map(|(id, host, listeners)| MetadataCommand::RegisterBroker {
                id,
                host,
                port: 9092,
                rack: None,
                listeners: listeners
                    .into_iter()
                    .map(|(name, port)| BrokerEndpoint {
                        name: name.into(),
                        host: "h".into(),
                        port
                    })
                    .collect(),
            }),
        (broker(), 0u64..4)
            .prop_map(|(id, incarnation)| MetadataCommand::FenceBroker { id, incarnation }),
        broker().prop_map(|id| MetadataCommand::UnregisterBroker { id }),
        prop::collection::vec(
            (topic_name(), topic_id(), assignments(), configs()).prop_map(
                |(name, id, assignments, configs)| NewTopic {
                    name,
                    id,
                    assignments,
                    configs
                }
            ),
            0..3
        )
        .prop_map(|topics| MetadataCommand::CreateTopics { topics }),
        prop::collection::vec(topic_name(), 0..3)
            .prop_map(|names| MetadataCommand::DeleteTopics { names }),
        (topic_name(), assignments()).prop_map(|(topic, assignments)| {
            MetadataCommand::CreatePartitions { topic, assignments }
        }),
        (
            topic_name(),
            configs(),
            prop::collection::vec(
                prop_oneof![Just("k1".to_owned()), Just(String::new())],
                0..2
            )
        )
            .prop_map(|(topic, set, remove)| MetadataCommand::AlterTopicConfigs {
                topic,
                set,
                remove
            }),
        (
            prop::option::of((0i32..4).prop_map(BrokerId)),
            configs(),
            prop::collection::vec(
                prop_oneof![Just("k1".to_owned()), Just(String::new())],
                0..2
            )
        )
            .prop_map(
                |(broker, set, remove)| MetadataCommand::AlterBrokerConfigs {
                    broker,
                    set,
                    remove
                }
            ),
        (
            prop_oneof![Just("t1"), Just("t2"), Just("")],
            -1i32..3,
            any::<bool>()
        )
            .prop_map(
                |(id, timeout_ms, hint)| MetadataCommand::InitTransactionalId {
                    transactional_id: id.into(),
                    timeout_ms,
                    current: hint.then_some((0, 0)),
                    now_ms: 0,
                }
            ),
        (
            prop_oneof![Just("t1"), Just("t2")],
            0i64..3,
            0i16..3,
            prop::collection::vec((topic_name(), 0u32..3), 0..3),
            0u8..8,
            group(),
            prop::collection::vec(offset_commit(), 0..3)
        )
            .prop_map(
                |(id, producer_id, producer_epoch, partitions, step, group, offsets)| {
                    let transactional_id = id.to_owned();
                    match step {
                        0 => MetadataCommand::AddToTxn {
                            transactional_id,
                            producer_id,
                            producer_epoch,
                            partitions,
                            groups: vec![group],
                            now_ms: 1,
                        },
                        5 => MetadataCommand::ExpireTransactionalId {
                            transactional_id,
                            producer_id,
                            producer_epoch,
                        },
                        4 => MetadataCommand::TxnOffsetCommit {
                            transactional_id,
                            producer_id,
                            producer_epoch,
                            group,
                            generation: None,
                            offsets,
                            now_ms: 4,
                        },
                        6 => MetadataCommand::CoordinatedTxnOffsetCommit {
                            coordinator: BrokerId(i32::from(producer_epoch)),
                            incarnation: 1,
                            transactional_id,
                            producer_id,
                            producer_epoch,
                            group,
                            generation: None,
                            offsets,
                            now_ms: 4,
                        },
                        1 | 2 => MetadataCommand::EndTxn {
                            transactional_id,
                            producer_id,
                            producer_epoch,
                            commit: step == 1,
                            now_ms: 2,
                        },
                        7 => MetadataCommand::CoordinatedEndTxn {
                            coordinator: BrokerId(i32::from(producer_epoch)),
                            incarnation: 1,
                            transactional_id,
                            producer_id,
                            producer_epoch,
                            commit: producer_id != 0,
                            now_ms: 2,
                        },
                        _ => MetadataCommand::CompleteTxn {
                            transactional_id,
                            producer_id,
                            producer_epoch,
                            now_ms: 3,
                        },
                    }
                }
            ),
        (
            topic_name(),
            0u32..2,
            0i32..2,
            prop_oneof![3 => (0u32..4).prop_map(|b| 1u8 << b), 1 => 0u8..16],
            prop::option::of(0usize..4),
            prop::collection::vec(broker(), 0..3)
        )
            .prop_map(
                |(topic, partition, partition_epoch, mask, leader, arbitrary)| {
                    // Mostly an ISR drawn from brokers 0..4 with the leader among it; sometimes an
                    // arbitrary list.
                    let isr: Vec<BrokerId> = if mask == 0 {
                        arbitrary
                    } else {
                        (0..4)
                            .filter(|b| mask & (1 << b) != 0)
                            .map(BrokerId)
                            .collect()
                    };
                    let leader = leader.and_then(|i| isr.get(i % isr.len().max(1)).copied());
                    MetadataCommand::AlterPartition {
                        topic,
                        partition,
                        partition_epoch,
                        leader,
                        isr,
                    }
                }
            ),
        prop::collection::vec(
            (topic_name(), 0u32..4, -1i64..50, -1i64..50).prop_map(
                |(topic, partition, high_watermark, log_start_offset)| PartitionOffsets {
                    topic,
                    partition,
                    high_watermark,
                    log_start_offset
                }
            ),
            0..3
        )
        .prop_map(|offsets| MetadataCommand::CheckpointPartitionOffsets { offsets }),
        (group(), 0i32..3, 0usize..4).prop_map(|(group, expected_generation, size)| {
            let members: Vec<GroupMember> = (1..=size)
                .map(|n| GroupMember {
                    id: MemberId(format!("m{n}")),
                    group_instance_id: None,
                    client_id: "c".into(),
                    client_host: "h".into(),
                    session_timeout_ms: 10_000,
                    rebalance_timeout_ms: 10_000,
                    metadata: vec![1],
                    assignment: Vec::new(),
                })
                .collect();
            MetadataCommand::StartGeneration {
                group,
                expected_generation,
                protocol_type: "consumer".into(),
                protocol: (size > 0).then(|| "range".into()),
                leader: (size > 0).then(|| MemberId("m1".into())),
                members,
            }
        }),
        (
            group(),
            0i32..4,
            prop::collection::vec(member(), 0..4),
            prop::option::of(member_id()),
            any::<bool>()
        )
            .prop_map(
                |(group, expected_generation, members, leader, with_protocol)| {
                    MetadataCommand::StartGeneration {
                        group,
                        expected_generation,
                        protocol_type: "consumer".into(),
                        protocol: with_protocol.then(|| "range".into()),
                        leader,
                        members,
                    }
                }
            ),
        (
            group(),
            0i32..4,
            prop_oneof![3 => Just(MemberId("m1".into())), 1 => member_id()],
            prop::collection::vec(
                (member_id(), prop::collection::vec(any::<u8>(), 0..3)),
                0..3
            )
        )
            .prop_map(|(group, generation, leader, assignments)| {
                MetadataCommand::SetGroupAssignment {
                    group,
                    generation,
                    leader,
                    assignments,
                }
            }),
        prop::collection::vec(group(), 0..3)
            .prop_map(|groups| MetadataCommand::DeleteGroups { groups }),
        (group(), 0i32..4)
            .prop_map(|(group, generation)| MetadataCommand::DeleteGroupAt { group, generation }),
        (group(), 0i32..4, member_id(), member_id()).prop_map(|(group, generation, old, new)| {
            MetadataCommand::ReplaceStaticMember {
                group,
                generation,
                group_instance_id: "instance".into(),
                old,
                new,
            }
        }),
        (
            group(),
            prop::collection::vec((topic_name(), 0u32..3), 0..3)
        )
            .prop_map(|(group, partitions)| MetadataCommand::DeleteOffsets { group, partitions }),
        (
            group(),
            prop::option::of((0i32..4, member_id())),
            prop::collection::vec(offset_commit(), 0..4),
            0i64..1000
        )
            .prop_map(|(group, generation, offsets, commit_timestamp_ms)| {
                MetadataCommand::CommitOffsets {
                    group,
                    generation: generation
                        .map(|(generation, member)| GenerationCheck { generation, member }),
                    offsets,
                    commit_timestamp_ms,
                }
            }),
        (0u32..5).prop_map(|count| MetadataCommand::AllocateProducerIds { count }),
        (
            (0i32..4, 0u64..4),
            group(),
            prop::option::of((0i32..4, member_id())),
            prop::collection::vec(offset_commit(), 0..4),
            0i64..1000
        )
            .prop_map(
                |((coordinator, incarnation), group, generation, offsets, commit_timestamp_ms)| {
                    MetadataCommand::CoordinatedCommitOffsets {
                        coordinator: BrokerId(coordinator),
                        incarnation,
                        group,
                        generation: generation
                            .map(|(generation, member)| GenerationCheck { generation, member }),
                        offsets,
                        commit_timestamp_ms,
                    }
                }
            ),
    ]
}

fn batch_of<S: Strategy<Value = MetadataCommand>>(
    inner: S,
    len: std::ops::Range<usize>,
) -> impl Strategy<Value = MetadataCommand> {
    prop::collection::vec(inner, len).prop_map(|commands| MetadataCommand::Batch { commands })
}

/// One command from the small universe; sometimes a batch, rarely a nested one.
fn command() -> impl Strategy<Value = MetadataCommand> {
    let nested = batch_of(
        prop_oneof![4 => leaf_command().boxed(), 1 => batch_of(leaf_command(), 0..3).boxed()],
        0..3,
    );
    // Topics are the parents of partitions and offsets: create them more often than they are
    // deleted so later commands find them.
    let create_topic =
        (topic_name(), topic_id(), assignments()).prop_map(|(name, id, assignments)| {
            MetadataCommand::CreateTopics {
                topics: vec![NewTopic {
                    name,
                    id,
                    assignments,
                    configs: Vec::new(),
                }],
            }
        });
    prop_oneof![
        12 => leaf_command().boxed(),
        3 => create_topic.boxed(),
        2 => batch_of(leaf_command(), 0..4).boxed(),
        1 => nested.boxed(),
    ]
}

/// A sequence of colliding commands, after registering brokers 0..4 so that topics can be
/// created; registrations stay weighted up so fenced or removed brokers come back.
pub(crate) fn command_sequence() -> impl Strategy<Value = Vec<MetadataCommand>> {
    let register = |id| MetadataCommand::RegisterBroker {
        id: BrokerId(id),
        host: "h".into(),
        port: 9092,
        rack: None,
        listeners: Vec::new(),
    };
    let tail = prop::collection::vec(
        prop_oneof![1 => (0i32..4).prop_map(register), 6 => command()],
        0..60,
    );
    tail.prop_map(move |tail| (0..4).map(register).chain(tail).collect())
}

/// Any command at all: arbitrary ids, names, counts and offsets.
pub(crate) fn any_command() -> impl Strategy<Value = MetadataCommand> {
    let any_assignments = prop::collection::vec(
        prop::collection::vec(any::<i32>().prop_map(BrokerId), 0..3),
        0..3,
    );
    prop_oneof![
        (any::<i32>(), ".{0,5}", ".{0,3}").prop_map(|(id, host, name)| {
            MetadataCommand::RegisterBroker {
                id: BrokerId(id),
                host: host.clone(),
                port: 1,
                rack: None,
                listeners: vec![BrokerEndpoint {
                    name,
                    host,
                    port: 2,
                }],
            }
        }),
        (any::<i32>(), any::<u64>()).prop_map(|(id, incarnation)| MetadataCommand::FenceBroker {
            id: BrokerId(id),
            incarnation
        }),
        (".{0,300}", any::<u128>(), any_assignments.clone()).prop_map(|(name, id, assignments)| {
            MetadataCommand::CreateTopics {
                topics: vec![NewTopic {
                    name,
                    id: TopicId(uuid::Uuid::from_u128(id)),
                    assignments,
                    configs: vec![],
                }],
            }
        }),
        (".{0,3}", any_assignments).prop_map(|(topic, assignments)| {
            MetadataCommand::CreatePartitions { topic, assignments }
        }),
        (
            ".{0,3}",
            any::<u32>(),
            any::<i32>(),
            prop::option::of(any::<i32>())
        )
            .prop_map(|(topic, partition, partition_epoch, leader)| {
                MetadataCommand::AlterPartition {
                    topic,
                    partition,
                    partition_epoch,
                    leader: leader.map(BrokerId),
                    isr: vec![],
                }
            }),
        (any::<i32>(), ".{0,3}").prop_map(|(g, group)| MetadataCommand::StartGeneration {
            group: GroupId(group),
            expected_generation: g,
            protocol_type: String::new(),
            protocol: None,
            leader: None,
            members: vec![],
        }),
        (".{0,3}", any::<u32>(), any::<i64>(), any::<i64>()).prop_map(
            |(topic, partition, a, b)| {
                MetadataCommand::CheckpointPartitionOffsets {
                    offsets: vec![PartitionOffsets {
                        topic,
                        partition,
                        high_watermark: a,
                        log_start_offset: b,
                    }],
                }
            }
        ),
        any::<u32>().prop_map(|count| MetadataCommand::AllocateProducerIds { count }),
        command(),
    ]
}
