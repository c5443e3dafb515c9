//! Every API at every version the broker advertises, over real TCP: the list comes from the
//! broker's own ApiVersions answer, so an API or version added later is covered without
//! touching this file — and an API with no sample request here fails the test until it gets
//! one. Each sample names the test topic (answers with data) and things that do not exist
//! (answers with errors), and each response must decode at the version asked for.

use anyhow::{Context, bail, ensure};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::broker_heartbeat_request::BrokerHeartbeatRequest;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_snapshot_request::{
    PartitionSnapshot as FetchSnapshotPartition, SnapshotId as FetchSnapshotId,
    TopicSnapshot as FetchSnapshotTopic,
};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, DescribeTransactionsRequest, EndTxnRequest,
    ListTransactionsRequest, ProducerId, TransactionalId, TxnOffsetCommitRequest,
    WriteTxnMarkersRequest,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterUserScramCredentialsRequest, ApiKey, ApiVersionsRequest,
    ApiVersionsResponse, CreateAclsRequest, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteAclsRequest, DeleteGroupsRequest, DeleteRecordsRequest, DeleteTopicsRequest,
    DescribeAclsRequest, DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest,
    DescribeLogDirsRequest, DescribeProducersRequest, DescribeQuorumRequest,
    DescribeTopicPartitionsRequest, DescribeUserScramCredentialsRequest, ElectLeadersRequest,
    FetchRequest, FetchSnapshotRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    IncrementalAlterConfigsRequest, InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest,
    ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, OffsetForLeaderEpochRequest, ProduceRequest,
    RequestHeader, RequestKind, ResponseHeader, ResponseKind, SaslAuthenticateRequest,
    SaslHandshakeRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::support::{DEADLINE, record_batch, s, start_memory};

const TOPIC: &str = "every-api";
const MISSING: &str = "no-such-topic";

/// A Produce topic named as `version` names it: by name, or by id from version 13.
fn named_or_id(data: TopicProduceData, version: i16, name: &str, id: Uuid) -> TopicProduceData {
    if version >= 13 {
        data.with_topic_id(id)
    } else {
        data.with_name(topic(name))
    }
}

/// A Fetch topic named as `version` names it: by name, or by id from version 13.
fn fetch_topic(version: i16, name: &str, id: Uuid) -> FetchTopic {
    if version >= 13 {
        FetchTopic::default().with_topic_id(id)
    } else {
        FetchTopic::default().with_topic(topic(name))
    }
}

fn topic(name: &str) -> TopicName {
    TopicName(s(name))
}

/// Requests for `key` at `version`: the happy path and error paths. `None` when this file has
/// no sample for the API yet.
/// Sample requests of `key` at `version`; `topic_id` is the id of [`TOPIC`] (Fetch and
/// Produce name topics by id from version 13, and [`MISSING`] by an id nobody has).
fn samples(key: ApiKey, version: i16, topic_id: Uuid) -> anyhow::Result<Option<Vec<RequestKind>>> {
    let group = |name: &str| GroupId(s(name));
    let missing_id = Uuid::from_u128(7);
    let samples = match key {
        ApiKey::Produce => vec![RequestKind::Produce(
            ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(5_000)
                .with_topic_data(vec![
                    named_or_id(TopicProduceData::default(), version, TOPIC, topic_id)
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(record_batch(1, 1)?)),
                            PartitionProduceData::default()
                                .with_index(7)
                                .with_records(Some(record_batch(1, 1)?)),
                        ]),
                    named_or_id(TopicProduceData::default(), version, MISSING, missing_id)
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(record_batch(1, 1)?)),
                        ]),
                ]),
        )],
        ApiKey::Fetch => {
            let partition = |index: i32| {
                let p = FetchPartition::default()
                    .with_partition(index)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20);
                if version >= 9 {
                    p.with_current_leader_epoch(-1)
                } else {
                    p
                }
            };
            let mut request = FetchRequest::default()
                .with_replica_id((-1).into())
                .with_max_wait_ms(0)
                .with_min_bytes(0)
                .with_max_bytes(1 << 20)
                .with_topics(vec![
                    fetch_topic(version, TOPIC, topic_id)
                        .with_partitions(vec![partition(0), partition(7)]),
                    fetch_topic(version, MISSING, missing_id).with_partitions(vec![partition(0)]),
                ]);
            if version >= 7 {
                request = request.with_session_id(0).with_session_epoch(-1);
            }
            vec![RequestKind::Fetch(request)]
        }
        ApiKey::ListOffsets => [-1i64, -2, 0, -3, -4, -5]
            .into_iter()
            // -3, -4 and -5 came with versions 7, 8 and 9.
            .filter(|t| *t >= -2 || i64::from(version) >= 4 - t)
            .map(|timestamp| {
                RequestKind::ListOffsets(
                    ListOffsetsRequest::default()
                        .with_replica_id((-1).into())
                        .with_topics(vec![
                            ListOffsetsTopic::default()
                                .with_name(topic(TOPIC))
                                .with_partitions(vec![
                                    ListOffsetsPartition::default()
                                        .with_partition_index(0)
                                        .with_timestamp(timestamp),
                                    ListOffsetsPartition::default()
                                        .with_partition_index(7)
                                        .with_timestamp(timestamp),
                                ]),
                            ListOffsetsTopic::default()
                                .with_name(topic(MISSING))
                                .with_partitions(vec![
                                    ListOffsetsPartition::default()
                                        .with_partition_index(0)
                                        .with_timestamp(timestamp),
                                ]),
                        ]),
                )
            })
            .collect(),
        ApiKey::OffsetForLeaderEpoch => {
            let mut request = OffsetForLeaderEpochRequest::default().with_topics(
                [TOPIC, MISSING]
                    .into_iter()
                    .map(|name| {
                        OffsetForLeaderTopic::default()
                            .with_topic(topic(name))
                            .with_partitions(vec![
                                OffsetForLeaderPartition::default()
                                    .with_partition(0)
                                    .with_current_leader_epoch(-1)
                                    .with_leader_epoch(0),
                            ])
                    })
                    .collect(),
            );
            if version >= 3 {
                request = request.with_replica_id((-1).into());
            }
            vec![RequestKind::OffsetForLeaderEpoch(request)]
        }
        ApiKey::Metadata => {
            let named = MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic(TOPIC))),
            ]));
            let all = MetadataRequest::default().with_topics(if version == 0 {
                Some(Vec::new())
            } else {
                None
            });
            vec![RequestKind::Metadata(named), RequestKind::Metadata(all)]
        }
        ApiKey::OffsetCommit => {
            let mut partition = OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(1)
                .with_committed_metadata(Some(s("metadata")));
            // A real leader epoch, so OffsetFetch at every version answers with one stored.
            if version >= 6 {
                partition = partition.with_committed_leader_epoch(0);
            }
            let standalone = OffsetCommitRequest::default()
                .with_group_id(group("every-api-offsets"))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    OffsetCommitRequestTopic::default()
                        .with_name(topic(TOPIC))
                        .with_partitions(vec![partition.clone()]),
                    OffsetCommitRequestTopic::default()
                        .with_name(topic(MISSING))
                        .with_partitions(vec![partition.clone()]),
                ]);
            let stale_member = standalone
                .clone()
                .with_generation_id_or_member_epoch(3)
                .with_member_id(s("no-such-member"));
            vec![
                RequestKind::OffsetCommit(standalone),
                RequestKind::OffsetCommit(stale_member),
            ]
        }
        ApiKey::OffsetFetch => {
            let request = if version >= 8 {
                OffsetFetchRequest::default().with_groups(vec![
                    OffsetFetchRequestGroup::default()
                        .with_group_id(group("every-api-offsets"))
                        .with_topics(Some(vec![
                            OffsetFetchRequestTopics::default()
                                .with_name(topic(TOPIC))
                                .with_partition_indexes(vec![0, 7]),
                        ])),
                    OffsetFetchRequestGroup::default()
                        .with_group_id(group("no-such-group"))
                        .with_topics(None),
                ])
            } else {
                OffsetFetchRequest::default()
                    .with_group_id(group("every-api-offsets"))
                    .with_topics(Some(vec![
                        OffsetFetchRequestTopic::default()
                            .with_name(topic(TOPIC))
                            .with_partition_indexes(vec![0, 7]),
                    ]))
            };
            vec![RequestKind::OffsetFetch(request)]
        }
        ApiKey::FindCoordinator => {
            let request = if version >= 4 {
                FindCoordinatorRequest::default()
                    .with_coordinator_keys(vec![s("every-api-group"), s("another")])
            } else {
                FindCoordinatorRequest::default().with_key(s("every-api-group"))
            };
            vec![RequestKind::FindCoordinator(request)]
        }
        ApiKey::JoinGroup => {
            let mut request = JoinGroupRequest::default()
                .with_group_id(group(&format!("every-api-join-v{version}")))
                .with_session_timeout_ms(10_000)
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![
                    JoinGroupRequestProtocol::default()
                        .with_name(s("range"))
                        .with_metadata(Bytes::from_static(b"\x00\x01")),
                ]);
            if version >= 1 {
                request = request.with_rebalance_timeout_ms(10_000);
            }
            let unknown_member = request.clone().with_member_id(s("no-such-member"));
            vec![
                RequestKind::JoinGroup(request),
                RequestKind::JoinGroup(unknown_member),
            ]
        }
        ApiKey::Heartbeat => vec![RequestKind::Heartbeat(
            HeartbeatRequest::default()
                .with_group_id(group("no-such-group"))
                .with_generation_id(1)
                .with_member_id(s("no-such-member")),
        )],
        ApiKey::LeaveGroup => {
            let request = LeaveGroupRequest::default().with_group_id(group("no-such-group"));
            let request = if version >= 3 {
                request.with_members(vec![
                    MemberIdentity::default().with_member_id(s("no-such-member")),
                ])
            } else {
                request.with_member_id(s("no-such-member"))
            };
            vec![RequestKind::LeaveGroup(request)]
        }
        ApiKey::SyncGroup => {
            let mut request = kafka_protocol::messages::SyncGroupRequest::default()
                .with_group_id(group("no-such-group"))
                .with_generation_id(1)
                .with_member_id(s("no-such-member"));
            if version >= 5 {
                request = request
                    .with_protocol_type(Some(s("consumer")))
                    .with_protocol_name(Some(s("range")));
            }
            vec![RequestKind::SyncGroup(request)]
        }
        ApiKey::DescribeGroups => vec![RequestKind::DescribeGroups(
            DescribeGroupsRequest::default().with_groups(vec![
                group(&format!("every-api-join-v{version}")),
                group("no-such-group"),
            ]),
        )],
        ApiKey::ListGroups => {
            let mut filtered = ListGroupsRequest::default();
            if version >= 4 {
                filtered = filtered.with_states_filter(vec![s("Stable"), s("Empty")]);
            }
            if version >= 5 {
                filtered = filtered.with_types_filter(vec![s("consumer")]);
            }
            vec![
                RequestKind::ListGroups(ListGroupsRequest::default()),
                RequestKind::ListGroups(filtered),
            ]
        }
        ApiKey::ApiVersions => {
            let mut request = ApiVersionsRequest::default();
            if version >= 3 {
                request = request
                    .with_client_software_name(s("every-api"))
                    .with_client_software_version(s("1"));
            }
            vec![RequestKind::ApiVersions(request)]
        }
        ApiKey::CreateTopics => {
            let creatable = |name: &str, partitions: i32| {
                CreatableTopic::default()
                    .with_name(topic(name))
                    .with_num_partitions(partitions)
                    .with_replication_factor(1)
            };
            let request = CreateTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![
                    creatable(&format!("created-v{version}"), 1),
                    creatable(TOPIC, 1),
                    creatable("bad name!", 1),
                    creatable("too-many-partitions", i32::MAX),
                ]);
            let validate_only = request.clone().with_validate_only(true).with_topics(vec![
                creatable(&format!("validated-v{version}"), 2),
                creatable("too-many-partitions", i32::MAX),
            ]);
            vec![
                RequestKind::CreateTopics(request),
                RequestKind::CreateTopics(validate_only),
            ]
        }
        ApiKey::CreatePartitions => {
            let grow = |name: &str, count: i32| {
                CreatePartitionsTopic::default()
                    .with_name(topic(name))
                    .with_count(count)
            };
            let request = CreatePartitionsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![
                    grow(TOPIC, 8 + i32::from(version)),
                    grow(MISSING, 2),
                    grow("created-v0", 0),
                ]);
            let validate_only = CreatePartitionsRequest::default()
                .with_timeout_ms(5_000)
                .with_validate_only(true)
                .with_topics(vec![grow(TOPIC, 100), grow(TOPIC, 101)]);
            vec![
                RequestKind::CreatePartitions(request),
                RequestKind::CreatePartitions(validate_only),
            ]
        }
        ApiKey::DeleteTopics => {
            let names = [format!("created-v{version}"), MISSING.to_owned()];
            let request = DeleteTopicsRequest::default().with_timeout_ms(5_000);
            let request = if version >= 6 {
                let by_id = DeleteTopicState::default().with_topic_id(uuid::Uuid::new_v4());
                let mut topics: Vec<DeleteTopicState> = names
                    .iter()
                    .map(|n| DeleteTopicState::default().with_name(Some(topic(n))))
                    .collect();
                topics.push(by_id);
                request.with_topics(topics)
            } else {
                request.with_topic_names(names.iter().map(|n| topic(n)).collect())
            };
            vec![RequestKind::DeleteTopics(request)]
        }
        ApiKey::InitProducerId => {
            let mut request = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000);
            if version >= 3 {
                request = request
                    .with_producer_id((-1).into())
                    .with_producer_epoch(-1);
            }
            vec![RequestKind::InitProducerId(request)]
        }
        ApiKey::DescribeConfigs => {
            let resource = |kind: i8, name: &str| {
                DescribeConfigsResource::default()
                    .with_resource_type(kind)
                    .with_resource_name(s(name))
                    .with_configuration_keys(None)
            };
            let mut request = DescribeConfigsRequest::default()
                .with_resources(vec![
                    resource(2, TOPIC),
                    resource(2, MISSING),
                    resource(4, "1"),
                    resource(4, "99"),
                    resource(9, "unknown-type"),
                ])
                .with_include_synonyms(true);
            if version >= 3 {
                request = request.with_include_documentation(true);
            }
            vec![RequestKind::DescribeConfigs(request)]
        }
        ApiKey::AlterConfigs => {
            use kafka_protocol::messages::alter_configs_request::{
                AlterConfigsResource, AlterableConfig,
            };
            let resource = |kind: i8, name: &str, configs: &[(&str, &str)]| {
                AlterConfigsResource::default()
                    .with_resource_type(kind)
                    .with_resource_name(s(name))
                    .with_configs(
                        configs
                            .iter()
                            .map(|(k, v)| {
                                AlterableConfig::default()
                                    .with_name(s(k))
                                    .with_value(Some(s(v)))
                            })
                            .collect(),
                    )
            };
            let request = AlterConfigsRequest::default().with_resources(vec![
                resource(2, TOPIC, &[("retention.ms", "86400000")]),
                resource(2, MISSING, &[("retention.ms", "1")]),
                resource(2, TOPIC, &[("no.such.config", "1")]),
                resource(4, "1", &[("num.partitions", "3")]),
            ]);
            let validate_only = AlterConfigsRequest::default()
                .with_validate_only(true)
                .with_resources(vec![resource(2, TOPIC, &[("retention.ms", "bad")])]);
            vec![
                RequestKind::AlterConfigs(request),
                RequestKind::AlterConfigs(validate_only),
            ]
        }
        ApiKey::IncrementalAlterConfigs => {
            use kafka_protocol::messages::incremental_alter_configs_request::{
                AlterConfigsResource, AlterableConfig,
            };
            let config = |name: &str, operation: i8, value: Option<&str>| {
                AlterableConfig::default()
                    .with_name(s(name))
                    .with_config_operation(operation)
                    .with_value(value.map(s))
            };
            let resource = |kind: i8, name: &str, configs: Vec<AlterableConfig>| {
                AlterConfigsResource::default()
                    .with_resource_type(kind)
                    .with_resource_name(s(name))
                    .with_configs(configs)
            };
            let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
                resource(
                    2,
                    TOPIC,
                    vec![
                        config("retention.ms", 0, Some("3600000")),
                        config("segment.ms", 1, None),
                        config("cleanup.policy", 2, Some("delete")),
                    ],
                ),
                resource(2, MISSING, vec![config("retention.ms", 0, Some("1"))]),
                resource(2, "created-v0", vec![config("retention.ms", 3, Some("1"))]),
                resource(4, "", vec![config("num.partitions", 0, Some("2"))]),
            ]);
            let validate_only = request.clone().with_validate_only(true);
            vec![
                RequestKind::IncrementalAlterConfigs(request),
                RequestKind::IncrementalAlterConfigs(validate_only),
            ]
        }
        ApiKey::DescribeTopicPartitions => {
            use kafka_protocol::messages::describe_topic_partitions_request::{
                Cursor, TopicRequest,
            };
            let named = DescribeTopicPartitionsRequest::default()
                .with_response_partition_limit(1)
                .with_topics(vec![
                    TopicRequest::default().with_name(topic(TOPIC)),
                    TopicRequest::default().with_name(topic(MISSING)),
                ]);
            let all = DescribeTopicPartitionsRequest::default()
                .with_response_partition_limit(2000)
                .with_cursor(Some(
                    Cursor::default()
                        .with_topic_name(topic(TOPIC))
                        .with_partition_index(1),
                ));
            vec![
                RequestKind::DescribeTopicPartitions(named),
                RequestKind::DescribeTopicPartitions(all),
            ]
        }
        ApiKey::DescribeProducers => {
            use kafka_protocol::messages::describe_producers_request::TopicRequest;
            vec![RequestKind::DescribeProducers(
                DescribeProducersRequest::default().with_topics(vec![
                    TopicRequest::default()
                        .with_name(topic(TOPIC))
                        .with_partition_indexes(vec![0, 99]),
                    TopicRequest::default()
                        .with_name(topic(MISSING))
                        .with_partition_indexes(vec![0]),
                ]),
            )]
        }
        ApiKey::DescribeLogDirs => {
            use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
            vec![
                RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(None)),
                RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(Some(
                    vec![
                        DescribableLogDirTopic::default()
                            .with_topic(topic(TOPIC))
                            .with_partitions(vec![0, 5]),
                    ],
                ))),
            ]
        }
        ApiKey::ElectLeaders => {
            use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
            let mut samples = vec![RequestKind::ElectLeaders(
                ElectLeadersRequest::default()
                    .with_timeout_ms(5_000)
                    .with_topic_partitions(Some(vec![
                        TopicPartitions::default()
                            .with_topic(topic(TOPIC))
                            .with_partitions(vec![0, 99]),
                        TopicPartitions::default()
                            .with_topic(topic(MISSING))
                            .with_partitions(vec![0]),
                    ])),
            )];
            // Version 0 has no election type.
            if version >= 1 {
                samples.push(RequestKind::ElectLeaders(
                    ElectLeadersRequest::default()
                        .with_election_type(1)
                        .with_timeout_ms(5_000),
                ));
            }
            samples
        }
        ApiKey::DeleteRecords => {
            use kafka_protocol::messages::delete_records_request::{
                DeleteRecordsPartition, DeleteRecordsTopic,
            };
            vec![RequestKind::DeleteRecords(
                DeleteRecordsRequest::default()
                    .with_timeout_ms(5_000)
                    .with_topics(vec![
                        DeleteRecordsTopic::default()
                            .with_name(topic(TOPIC))
                            .with_partitions(vec![
                                DeleteRecordsPartition::default()
                                    .with_partition_index(0)
                                    .with_offset(-1),
                                DeleteRecordsPartition::default()
                                    .with_partition_index(1)
                                    .with_offset(1_000_000),
                                DeleteRecordsPartition::default()
                                    .with_partition_index(99)
                                    .with_offset(0),
                            ]),
                        DeleteRecordsTopic::default()
                            .with_name(topic(MISSING))
                            .with_partitions(vec![DeleteRecordsPartition::default()]),
                    ]),
            )]
        }
        ApiKey::OffsetDelete => {
            use kafka_protocol::messages::offset_delete_request::{
                OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
            };
            let topics = vec![
                OffsetDeleteRequestTopic::default()
                    .with_name(topic(TOPIC))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0),
                        OffsetDeleteRequestPartition::default().with_partition_index(99),
                    ]),
                OffsetDeleteRequestTopic::default()
                    .with_name(topic(MISSING))
                    .with_partitions(vec![OffsetDeleteRequestPartition::default()]),
            ];
            vec![
                RequestKind::OffsetDelete(
                    OffsetDeleteRequest::default()
                        .with_group_id(group("every-api-offsets"))
                        .with_topics(topics.clone()),
                ),
                RequestKind::OffsetDelete(
                    OffsetDeleteRequest::default()
                        .with_group_id(group("no-such-group"))
                        .with_topics(topics),
                ),
            ]
        }
        ApiKey::AddPartitionsToTxn => {
            use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
            vec![RequestKind::AddPartitionsToTxn(
                AddPartitionsToTxnRequest::default()
                    .with_v3_and_below_transactional_id(TransactionalId(s("every-api-txn")))
                    .with_v3_and_below_producer_id(ProducerId(12_345))
                    .with_v3_and_below_producer_epoch(0)
                    .with_v3_and_below_topics(vec![
                        AddPartitionsToTxnTopic::default()
                            .with_name(topic(TOPIC))
                            .with_partitions(vec![0, 99]),
                    ]),
            )]
        }
        ApiKey::AddOffsetsToTxn => vec![RequestKind::AddOffsetsToTxn(
            AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(s("every-api-txn")))
                .with_producer_id(ProducerId(12_345))
                .with_group_id(group("every-api-offsets")),
        )],
        ApiKey::TxnOffsetCommit => {
            use kafka_protocol::messages::txn_offset_commit_request::{
                TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
            };
            vec![RequestKind::TxnOffsetCommit(
                TxnOffsetCommitRequest::default()
                    .with_transactional_id(TransactionalId(s("every-api-txn")))
                    .with_group_id(group("every-api-offsets"))
                    .with_producer_id(ProducerId(12_345))
                    .with_generation_id(-1)
                    .with_topics(vec![
                        TxnOffsetCommitRequestTopic::default()
                            .with_name(topic(TOPIC))
                            .with_partitions(vec![
                                TxnOffsetCommitRequestPartition::default()
                                    .with_partition_index(0)
                                    .with_committed_offset(1),
                            ]),
                    ]),
            )]
        }
        ApiKey::EndTxn => vec![RequestKind::EndTxn(
            EndTxnRequest::default()
                .with_transactional_id(TransactionalId(s("every-api-txn")))
                .with_producer_id(ProducerId(12_345))
                .with_committed(true),
        )],
        ApiKey::WriteTxnMarkers => {
            use kafka_protocol::messages::write_txn_markers_request::{
                WritableTxnMarker, WritableTxnMarkerTopic,
            };
            vec![RequestKind::WriteTxnMarkers(
                WriteTxnMarkersRequest::default().with_markers(vec![
                    WritableTxnMarker::default()
                        .with_producer_id(ProducerId(12_345))
                        .with_topics(vec![
                            WritableTxnMarkerTopic::default()
                                .with_name(topic(TOPIC))
                                .with_partition_indexes(vec![0, 99]),
                        ]),
                ]),
            )]
        }
        ApiKey::DescribeTransactions => vec![RequestKind::DescribeTransactions(
            DescribeTransactionsRequest::default().with_transactional_ids(vec![
                TransactionalId(s("every-api-txn")),
                TransactionalId(s("no-such-txn")),
            ]),
        )],
        ApiKey::ListTransactions => vec![
            RequestKind::ListTransactions(ListTransactionsRequest::default()),
            RequestKind::ListTransactions(
                ListTransactionsRequest::default()
                    .with_state_filters(vec![s("Ongoing"), s("NoSuchState")]),
            ),
        ],
        ApiKey::DeleteGroups => vec![RequestKind::DeleteGroups(
            DeleteGroupsRequest::default().with_groups_names(vec![
                group("every-api-offsets"),
                group("no-such-group"),
                group(&format!("every-api-join-v{version}")),
            ]),
        )],
        ApiKey::DescribeCluster => vec![RequestKind::DescribeCluster(
            DescribeClusterRequest::default(),
        )],
        ApiKey::DescribeQuorum => vec![RequestKind::DescribeQuorum(
            DescribeQuorumRequest::default().with_topics(vec![
                TopicData::default()
                    .with_topic_name(topic("__cluster_metadata"))
                    .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
                TopicData::default()
                    .with_topic_name(topic(MISSING))
                    .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
            ]),
        )],
        ApiKey::FetchSnapshot => vec![RequestKind::FetchSnapshot(
            FetchSnapshotRequest::default()
                .with_replica_id((-1).into())
                .with_max_bytes(64)
                .with_topics(vec![
                    snapshot_of("__cluster_metadata", (-1, -1), 0),
                    snapshot_of("__cluster_metadata", (12_345, -1), 0),
                    snapshot_of(MISSING, (-1, -1), 0),
                ]),
        )],
        ApiKey::BrokerHeartbeat => vec![RequestKind::BrokerHeartbeat(
            BrokerHeartbeatRequest::default()
                .with_broker_id(1.into())
                .with_broker_epoch(1)
                .with_current_metadata_offset(0),
        )],
        // A PLAINTEXT listener answers SASL with ILLEGAL_SASL_STATE.
        ApiKey::SaslHandshake => vec![RequestKind::SaslHandshake(
            SaslHandshakeRequest::default().with_mechanism(s("SCRAM-SHA-512")),
        )],
        ApiKey::SaslAuthenticate => vec![RequestKind::SaslAuthenticate(
            SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from_static(b"n,,n=a,r=b")),
        )],
        ApiKey::DescribeUserScramCredentials => vec![
            RequestKind::DescribeUserScramCredentials(
                DescribeUserScramCredentialsRequest::default(),
            ),
            RequestKind::DescribeUserScramCredentials(
                DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
                    UserName::default().with_name(s("nobody")),
                    UserName::default().with_name(s("nobody")),
                ])),
            ),
        ],
        ApiKey::AlterUserScramCredentials => vec![RequestKind::AlterUserScramCredentials(
            AlterUserScramCredentialsRequest::default()
                .with_deletions(vec![
                    ScramCredentialDeletion::default()
                        .with_name(s("nobody"))
                        .with_mechanism(1),
                ])
                .with_upsertions(vec![
                    ScramCredentialUpsertion::default()
                        .with_name(s("alice"))
                        .with_mechanism(2)
                        .with_iterations(4096)
                        .with_salt(Bytes::from_static(b"salt"))
                        .with_salted_password(Bytes::from(vec![0u8; 64])),
                    ScramCredentialUpsertion::default()
                        .with_name(s("bob"))
                        .with_mechanism(9)
                        .with_iterations(4096),
                ]),
        )],
        ApiKey::CreateAcls => vec![RequestKind::CreateAcls(
            CreateAclsRequest::default().with_creations(vec![
                AclCreation::default()
                    .with_resource_type(2)
                    .with_resource_name(s(TOPIC))
                    .with_resource_pattern_type(3)
                    .with_principal(s("User:alice"))
                    .with_host(s("*"))
                    .with_operation(3)
                    .with_permission_type(3),
                // ANY is no binding: refused per creation.
                AclCreation::default()
                    .with_resource_type(1)
                    .with_resource_name(s(TOPIC))
                    .with_principal(s("User:alice"))
                    .with_host(s("*"))
                    .with_operation(1)
                    .with_permission_type(3),
            ]),
        )],
        ApiKey::DescribeAcls => vec![RequestKind::DescribeAcls(
            DescribeAclsRequest::default()
                .with_resource_type_filter(1)
                .with_pattern_type_filter(1)
                .with_operation(1)
                .with_permission_type(1),
        )],
        ApiKey::DeleteAcls => vec![RequestKind::DeleteAcls(
            DeleteAclsRequest::default().with_filters(vec![
                DeleteAclsFilter::default()
                    .with_resource_type_filter(2)
                    .with_resource_name_filter(Some(s(MISSING)))
                    .with_pattern_type_filter(2)
                    .with_operation(1)
                    .with_permission_type(1),
            ]),
        )],
        _ => return Ok(None),
    };
    Ok(Some(samples))
}

/// One request on `stream`, its response decoded at `version`.
pub(crate) async fn call(
    stream: &mut TcpStream,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    request: &RequestKind,
) -> anyhow::Result<ResponseKind> {
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(s("every-api")))
        .encode(&mut frame, key.request_header_version(version))
        .context("encoding the request header")?;
    request
        .encode(&mut frame, version)
        .context("encoding the sample request (a bug in this test)")?;
    stream.write_u32(u32::try_from(frame.len())?).await?;
    stream.write_all(&frame).await?;
    let read = async {
        let length = stream.read_u32().await?;
        let mut response = vec![0; length as usize];
        stream.read_exact(&mut response).await?;
        anyhow::Ok(Bytes::from(response))
    };
    let mut response = tokio::time::timeout(DEADLINE, read)
        .await
        .context("no response within the deadline")?
        .context("the broker closed the connection instead of answering")?;
    let header = ResponseHeader::decode(&mut response, key.response_header_version(version))?;
    ensure!(
        header.correlation_id == correlation_id,
        "correlation id {} for {correlation_id}",
        header.correlation_id
    );
    let decoded = ResponseKind::decode(key, &mut response, version)
        .context("the response does not decode")?;
    ensure!(
        !response.has_remaining(),
        "{} bytes after the response",
        response.remaining()
    );
    Ok(decoded)
}

/// FetchSnapshot's ask for partition 0 of `name`: snapshot `(end_offset, epoch)` from
/// `position`.
fn snapshot_of(name: &str, (end_offset, epoch): (i64, i32), position: i64) -> FetchSnapshotTopic {
    FetchSnapshotTopic::default()
        .with_name(topic(name))
        .with_partitions(vec![
            FetchSnapshotPartition::default()
                .with_partition(0)
                .with_snapshot_id(
                    FetchSnapshotId::default()
                        .with_end_offset(end_offset)
                        .with_epoch(epoch),
                )
                .with_position(position),
        ])
}

/// Create [`TOPIC`] with one partition; its id.
async fn create_topic(stream: &mut TcpStream) -> anyhow::Result<Uuid> {
    let create = RequestKind::CreateTopics(
        CreateTopicsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(topic(TOPIC))
                    .with_num_partitions(1)
                    .with_replication_factor(1),
            ]),
    );
    let ResponseKind::CreateTopics(created) =
        call(stream, ApiKey::CreateTopics, 7, 1, &create).await?
    else {
        bail!("CreateTopics answered with another response kind");
    };
    created
        .topics
        .first()
        .map(|t| t.topic_id)
        .context("no topic created")
}

async fn advertised(stream: &mut TcpStream) -> anyhow::Result<Vec<(ApiKey, i16, i16)>> {
    let request = RequestKind::ApiVersions(
        ApiVersionsRequest::default()
            .with_client_software_name(s("every-api"))
            .with_client_software_version(s("1")),
    );
    let ResponseKind::ApiVersions(response) =
        call(stream, ApiKey::ApiVersions, 3, 0, &request).await?
    else {
        bail!("ApiVersions answered with another response kind");
    };
    let ApiVersionsResponse { api_keys, .. } = response;
    api_keys
        .iter()
        .map(|api| {
            let key = ApiKey::try_from(api.api_key)
                .map_err(|()| anyhow::anyhow!("unknown API key {} advertised", api.api_key))?;
            Ok((key, api.min_version, api.max_version))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_api_and_version_answers_a_decodable_response() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start_memory(&dir, &[("group_initial_rebalance_delay_ms", 0)]).await?;
    let mut stream = TcpStream::connect(node.kafka_addr()).await?;
    let topic_id = create_topic(&mut stream).await?;

    let apis = advertised(&mut stream).await?;
    ensure!(apis.len() >= 20, "only {} APIs advertised", apis.len());
    let mut failures = Vec::new();
    let mut correlation_id = 10;
    for (key, min, max) in apis {
        ensure!(min <= max, "{key:?} advertises {min}..{max}");
        for version in min..=max {
            let Some(requests) = samples(key, version, topic_id)? else {
                failures.push(format!("{key:?}: no sample request in every_api.rs"));
                break;
            };
            for (i, request) in requests.iter().enumerate() {
                correlation_id += 1;
                if let Err(e) = call(&mut stream, key, version, correlation_id, request).await {
                    failures.push(format!("{key:?} v{version} sample {i}: {e:#}"));
                    // The broker closed the connection; continue on a fresh one.
                    stream = TcpStream::connect(node.kafka_addr()).await?;
                }
            }
        }
    }
    node.shutdown().await?;
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Produce and Fetch 13+ name topics by id: the broker answers by id, serves the records, and
/// refuses an id nobody has with UNKNOWN_TOPIC_ID; ListOffsets 7+ finds the record with the
/// largest timestamp, 9+ answers the latest tiered offset with none, and an older version
/// asking for either is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_named_by_id_and_the_newer_list_offsets() -> anyhow::Result<()> {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let unknown_topic_id = 100;
    let dir = tempfile::tempdir()?;
    let node = start_memory(&dir, &[]).await?;
    let mut stream = TcpStream::connect(node.kafka_addr()).await?;
    let id = create_topic(&mut stream).await?;
    let missing = Uuid::from_u128(7);

    let produce = |topic_id: Uuid| -> anyhow::Result<RequestKind> {
        Ok(RequestKind::Produce(
            ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(5_000)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_topic_id(topic_id)
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(record_batch(3, 10)?)),
                        ]),
                ]),
        ))
    };
    let ResponseKind::Produce(produced) =
        call(&mut stream, ApiKey::Produce, 13, 2, &produce(id)?).await?
    else {
        bail!("Produce answered with another response kind");
    };
    let answered = &produced.responses[0];
    ensure!(answered.topic_id == id, "{produced:?}");
    ensure!(
        answered.partition_responses[0].error_code == 0,
        "{produced:?}"
    );
    let ResponseKind::Produce(refused) =
        call(&mut stream, ApiKey::Produce, 13, 3, &produce(missing)?).await?
    else {
        bail!("Produce answered with another response kind");
    };
    ensure!(
        refused.responses[0].topic_id == missing
            && refused.responses[0].partition_responses[0].error_code == unknown_topic_id,
        "{refused:?}"
    );

    let fetch = RequestKind::Fetch(
        FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic_id(id)
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(-1)
                            .with_partition_max_bytes(1 << 20),
                    ]),
                FetchTopic::default()
                    .with_topic_id(missing)
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(-1),
                    ]),
            ]),
    );
    let ResponseKind::Fetch(fetched) = call(&mut stream, ApiKey::Fetch, 17, 4, &fetch).await?
    else {
        bail!("Fetch answered with another response kind");
    };
    let [served, unknown] = fetched.responses.as_slice() else {
        bail!("two topics expected: {fetched:?}");
    };
    ensure!(
        served.topic_id == id && served.topic.0.is_empty(),
        "{served:?}"
    );
    let partition = &served.partitions[0];
    ensure!(
        partition.error_code == 0
            && partition.high_watermark == 3
            && partition.records.as_ref().is_some_and(|r| !r.is_empty()),
        "{partition:?}"
    );
    ensure!(
        unknown.topic_id == missing && unknown.partitions[0].error_code == unknown_topic_id,
        "{unknown:?}"
    );

    let list = |timestamp: i64| {
        RequestKind::ListOffsets(
            ListOffsetsRequest::default()
                .with_replica_id((-1).into())
                .with_topics(vec![
                    ListOffsetsTopic::default()
                        .with_name(topic(TOPIC))
                        .with_partitions(vec![
                            ListOffsetsPartition::default()
                                .with_partition_index(0)
                                .with_timestamp(timestamp),
                        ]),
                ]),
        )
    };
    for (version, timestamp, expected) in [
        // Every record has timestamp 1000: the first one holds the largest.
        (9, -3, (0, 0, 1_000)),
        (9, -4, (0, 0, -1)),
        (9, -5, (0, -1, -1)),
        (6, -3, (35, -1, -1)),
        (8, -5, (35, -1, -1)),
    ] {
        let ResponseKind::ListOffsets(listed) = call(
            &mut stream,
            ApiKey::ListOffsets,
            version,
            5,
            &list(timestamp),
        )
        .await?
        else {
            bail!("ListOffsets answered with another response kind");
        };
        let p = &listed.topics[0].partitions[0];
        ensure!(
            (p.error_code, p.offset, p.timestamp) == expected,
            "v{version} {timestamp}: {p:?}"
        );
    }
    node.shutdown().await?;
    Ok(())
}

/// FetchSnapshot of `__cluster_metadata` serves the metadata export file in chunks: `(-1, -1)`
/// takes an export, its id fetches the rest from a position; the whole is the metadata (the
/// cluster id DescribeCluster names, the topic just created). An id the broker does not hold
/// answers SNAPSHOT_NOT_FOUND, a position past the end POSITION_OUT_OF_RANGE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_snapshot_serves_the_metadata_export_in_chunks() -> anyhow::Result<()> {
    use kafka_protocol::error::ResponseError;
    use switchyard_backend_api::export::{MetadataExport, Source};

    let dir = tempfile::tempdir()?;
    let node = start_memory(&dir, &[]).await?;
    let mut stream = TcpStream::connect(node.kafka_addr()).await?;
    create_topic(&mut stream).await?;
    let request = |end_offset: i64, epoch: i32, position: i64| {
        RequestKind::FetchSnapshot(
            FetchSnapshotRequest::default()
                .with_replica_id((-1).into())
                .with_max_bytes(100)
                .with_topics(vec![snapshot_of(
                    "__cluster_metadata",
                    (end_offset, epoch),
                    position,
                )]),
        )
    };
    let mut correlation_id = 0;
    let mut fetch = async |end_offset, epoch, position| -> anyhow::Result<_> {
        correlation_id += 1;
        let answer = call(
            &mut stream,
            ApiKey::FetchSnapshot,
            1,
            correlation_id,
            &request(end_offset, epoch, position),
        )
        .await?;
        let ResponseKind::FetchSnapshot(response) = answer else {
            bail!("FetchSnapshot answered with another response kind");
        };
        response
            .topics
            .into_iter()
            .next()
            .and_then(|t| t.partitions.into_iter().next())
            .context("no partition in the answer")
    };

    let first = fetch(-1, -1, 0).await?;
    ensure!(first.error_code == 0, "error {}", first.error_code);
    let id = (first.snapshot_id.end_offset, first.snapshot_id.epoch);
    let size = usize::try_from(first.size)?;
    ensure!(
        first.unaligned_records.len() == 100 && size > 200,
        "size {size}"
    );
    let mut file = first.unaligned_records.to_vec();
    while file.len() < size {
        let chunk = fetch(id.0, id.1, i64::try_from(file.len())?).await?;
        ensure!(chunk.error_code == 0, "error {}", chunk.error_code);
        ensure!(
            !chunk.unaligned_records.is_empty(),
            "empty chunk at {}",
            file.len()
        );
        file.extend_from_slice(&chunk.unaligned_records);
    }
    let export = MetadataExport::from_file_bytes(&file)?;
    // memory reads are linearizable.
    ensure!(export.backend == "memory" && export.source == Source::Linearizable);
    ensure!(i64::try_from(export.view.applied_index)? == id.0);
    ensure!(
        export.view.state.topic(TOPIC).is_some(),
        "the topic is not in the export"
    );

    let unknown = fetch(id.0 + 1, id.1, 0).await?;
    ensure!(unknown.error_code == ResponseError::SnapshotNotFound.code());
    let past = fetch(id.0, id.1, i64::try_from(size)? + 1).await?;
    ensure!(past.error_code == ResponseError::PositionOutOfRange.code());
    node.shutdown().await?;
    Ok(())
}
