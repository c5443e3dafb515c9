//! Authorization of every request against the ACLs in the metadata state, with Kafka's
//! per-API rules (`kafka.authorizer_enabled`).
//!
//! A request is checked before its handler runs. One that concerns a single resource (a
//! group, the cluster) is refused whole with that API's authorization error. One that names
//! many topics is split: the topics the principal may not touch are taken out, the handler
//! answers the rest, and the refused ones are put back into the response with
//! `TOPIC_AUTHORIZATION_FAILED` — so a client sees the same answer as from Kafka. Metadata
//! for every topic lists only the topics the principal may describe.
//!
//! Super users (`kafka.super_users`) and the holders of the cluster secret (brokers, the
//! operator) are never refused.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_acls_response::DeleteAclsFilterResult;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse as DescribeProducersPartitionResponse,
    TopicResponse as DescribeProducersTopicResponse,
};
use kafka_protocol::messages::describe_topic_partitions_response::DescribeTopicPartitionsResponseTopic;
use kafka_protocol::messages::describe_transactions_response::TransactionState as DescribedTransaction;
use kafka_protocol::messages::elect_leaders_response::{
    PartitionResult as ElectLeadersPartitionResult, ReplicaElectionResult,
};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalAlterConfigsResourceResponse;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnResponse, AlterUserScramCredentialsResponse, BrokerHeartbeatResponse,
    CreateAclsResponse, DeleteAclsResponse, DescribeAclsResponse, DescribeClusterResponse,
    DescribeLogDirsResponse, DescribeQuorumResponse, DescribeTopicPartitionsResponse,
    DescribeUserScramCredentialsResponse, ElectLeadersResponse, EndTxnResponse,
    FetchSnapshotResponse, FindCoordinatorResponse, HeartbeatResponse, InitProducerIdResponse,
    JoinGroupResponse, LeaveGroupResponse, OffsetDeleteResponse, OffsetFetchResponse, RequestKind,
    ResponseKind, SyncGroupResponse, TopicName, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::StrBytes;
use switchyard_backend_api::StateView;
use switchyard_backend_api::security::{AclOperation, ResourceType};

use crate::broker::Broker;
use crate::kafka::dispatch::Client;
use crate::kafka::handlers::transactions::{add_partitions_refused, txn_offset_commit_refused};

/// The name of the one cluster resource.
const CLUSTER: &str = "kafka-cluster";
/// `DescribeConfigs` resource types.
const TOPIC_CONFIGS: i8 = 2;

/// What one request's principal may do.
pub(crate) struct Access {
    /// `false` when every request is allowed (the authorizer is off, or a super user).
    checked: bool,
    principal: String,
    host: String,
    allow_if_no_acl: bool,
    view: std::sync::Arc<StateView>,
}

impl Access {
    /// The access of `client` on `broker` now. Without the authorizer (or for a holder of the
    /// cluster secret) nothing is formatted: every request takes this path.
    pub(crate) fn of(broker: &Broker, client: &Client) -> Self {
        let settings = broker.settings();
        let mut access = Self {
            checked: false,
            principal: String::new(),
            host: String::new(),
            allow_if_no_acl: settings.allow_everyone_if_no_acl_found,
            view: broker.metadata(),
        };
        if settings.authorizer_enabled && !client.principal.holds_cluster_secret() {
            access.principal = client.principal.to_string();
            access.checked = !settings.super_users.contains(&access.principal);
            access.host = client.ip.to_string();
        }
        access
    }

    /// Whether the principal may do `operation` on `resource`/`name`.
    pub(crate) fn may(&self, operation: AclOperation, resource: ResourceType, name: &str) -> bool {
        !self.checked
            || self.view.state.acl_allows(
                &self.principal,
                &self.host,
                operation,
                resource,
                name,
                self.allow_if_no_acl,
            )
    }

    fn may_on_cluster(&self, operation: AclOperation) -> bool {
        self.may(operation, ResourceType::Cluster, CLUSTER)
    }

    fn may_on_topic(&self, operation: AclOperation, topic: &TopicName) -> bool {
        self.may(operation, ResourceType::Topic, topic.as_str())
    }

    fn may_on_group(&self, operation: AclOperation, group: &str) -> bool {
        self.may(operation, ResourceType::Group, group)
    }

    fn may_on_transactional_id(&self, operation: AclOperation, id: &str) -> bool {
        self.may(operation, ResourceType::TransactionalId, id)
    }

    /// Idempotent producing: `IDEMPOTENT_WRITE` on the cluster, or (Kafka 3+) `WRITE` on any
    /// topic.
    fn may_write_idempotently(&self) -> bool {
        self.may_on_cluster(AclOperation::IdempotentWrite)
            || self
                .view
                .state
                .topics()
                .any(|topic| self.may(AclOperation::Write, ResourceType::Topic, &topic.name))
    }
}

/// What to do with a request.
pub(crate) enum Gate {
    /// Run the handler on this (possibly narrowed) request, then [`patch`] its response.
    Pass(RequestKind, Patch),
    /// Answer this instead.
    Refuse(ResponseKind),
}

/// The refused parts of a narrowed request, to put back into its response.
#[derive(Default)]
pub(crate) enum Patch {
    /// Nothing was refused.
    #[default]
    None,
    /// Topics and partitions refused with the error code given:
    /// `TOPIC_AUTHORIZATION_FAILED`, or `TRANSACTIONAL_ID_AUTHORIZATION_FAILED` for every
    /// partition when the request's transactional id was refused.
    Produce(Vec<(TopicName, Vec<i32>)>, i16),
    /// Same for Fetch.
    Fetch(Vec<(TopicName, Vec<i32>)>),
    /// Same for ListOffsets.
    ListOffsets(Vec<(TopicName, Vec<i32>)>),
    /// OffsetCommit: refused topics and partitions, `GROUP_AUTHORIZATION_FAILED` when the
    /// group was refused, else `TOPIC_AUTHORIZATION_FAILED`.
    OffsetCommit {
        /// The refused topics and partitions.
        refused: Vec<(TopicName, Vec<i32>)>,
        /// Whether the whole request was refused for its group.
        group: bool,
    },
    /// Metadata: topics named and refused; `all` when every topic was asked for (the
    /// response is filtered).
    Metadata { refused: Vec<TopicName>, all: bool },
    /// CreateTopics results to add.
    CreateTopics(Vec<CreatableTopicResult>),
    /// DescribeTopicPartitions: topics named and refused; `all` when every topic was asked
    /// for (the response is filtered).
    DescribeTopicPartitions { refused: Vec<TopicName>, all: bool },
    /// DeleteTopics results to add.
    DeleteTopics(Vec<DeletableTopicResult>),
    /// CreatePartitions results to add.
    CreatePartitions(Vec<CreatePartitionsTopicResult>),
    /// AlterConfigs results to add.
    AlterConfigs(Vec<AlterConfigsResourceResponse>),
    /// IncrementalAlterConfigs results to add.
    IncrementalAlterConfigs(Vec<IncrementalAlterConfigsResourceResponse>),
    /// DescribeConfigs results to add.
    DescribeConfigs(Vec<DescribeConfigsResult>),
    /// DescribeGroups results to add.
    DescribeGroups(Vec<DescribedGroup>),
    /// DeleteGroups results to add.
    DeleteGroups(Vec<DeletableGroupResult>),
    /// OffsetDelete topics to add.
    OffsetDelete(Vec<OffsetDeleteResponseTopic>),
    /// DescribeProducers topics to add.
    DescribeProducers(Vec<DescribeProducersTopicResponse>),
    /// DeleteRecords topics to add.
    DeleteRecords(Vec<DeleteRecordsTopicResult>),
    /// ListGroups: keep only groups the principal may describe.
    ListGroups,
    /// OffsetFetch: topics the principal may not describe answer
    /// `TOPIC_AUTHORIZATION_FAILED`.
    OffsetFetch,
    /// DescribeTransactions results to add.
    DescribeTransactions(Vec<DescribedTransaction>),
    /// ListTransactions: only the transactional ids the principal may describe are listed.
    ListTransactions,
}

fn denied(error: ResponseError) -> i16 {
    error.code()
}

/// A DescribeTopicPartitions topic the principal may not describe.
fn refused_topic_partitions(name: TopicName) -> DescribeTopicPartitionsResponseTopic {
    DescribeTopicPartitionsResponseTopic::default()
        .with_name(Some(name))
        .with_error_code(denied(ResponseError::TopicAuthorizationFailed))
}

/// Keep the items `allowed` lets through; for each other one, what `refusal` makes of it.
fn narrow<T, R>(
    items: &mut Vec<T>,
    allowed: impl Fn(&T) -> bool,
    refusal: impl Fn(&T) -> R,
) -> Vec<R> {
    let mut refused = Vec::new();
    items.retain(|item| {
        let ok = allowed(item);
        if !ok {
            refused.push(refusal(item));
        }
        ok
    });
    refused
}

/// Check `request` against `access`.
pub(crate) fn gate(access: &Access, request: RequestKind) -> Gate {
    use AclOperation::*;
    let cluster = |operation| access.may_on_cluster(operation);
    let cluster_refusal = ResponseError::ClusterAuthorizationFailed;
    let group_refusal = denied(ResponseError::GroupAuthorizationFailed);
    let txn_refusal = denied(ResponseError::TransactionalIdAuthorizationFailed);
    // A config resource: a topic's, or the broker's (the cluster's).
    let may_alter_configs = |resource_type: i8, name: &StrBytes| {
        if resource_type == TOPIC_CONFIGS {
            access.may(AlterConfigs, ResourceType::Topic, name.as_str())
        } else {
            cluster(AlterConfigs)
        }
    };
    let config_refusal = |resource_type: i8| {
        if resource_type == TOPIC_CONFIGS {
            denied(ResponseError::TopicAuthorizationFailed)
        } else {
            denied(cluster_refusal)
        }
    };
    match request {
        RequestKind::DeleteRecords(mut r) => {
            let refused = narrow(
                &mut r.topics,
                |t| access.may_on_topic(Delete, &t.name),
                |t| {
                    DeleteRecordsTopicResult::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    DeleteRecordsPartitionResult::default()
                                        .with_partition_index(p.partition_index)
                                        .with_low_watermark(-1)
                                        .with_error_code(denied(
                                            ResponseError::TopicAuthorizationFailed,
                                        ))
                                })
                                .collect(),
                        )
                },
            );
            Gate::Pass(RequestKind::DeleteRecords(r), Patch::DeleteRecords(refused))
        }
        RequestKind::DescribeProducers(mut r) => {
            let refused = narrow(
                &mut r.topics,
                |t| access.may_on_topic(Read, &t.name),
                |t| {
                    DescribeProducersTopicResponse::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partition_indexes
                                .iter()
                                .map(|index| {
                                    DescribeProducersPartitionResponse::default()
                                        .with_partition_index(*index)
                                        .with_error_code(denied(
                                            ResponseError::TopicAuthorizationFailed,
                                        ))
                                })
                                .collect(),
                        )
                },
            );
            Gate::Pass(
                RequestKind::DescribeProducers(r),
                Patch::DescribeProducers(refused),
            )
        }
        RequestKind::Produce(mut r) => {
            // A transactional producer needs WRITE on its transactional id too.
            let txn_allowed = r
                .transactional_id
                .as_ref()
                .is_none_or(|id| access.may_on_transactional_id(Write, id.as_str()));
            let refused = narrow(
                &mut r.topic_data,
                |t| txn_allowed && access.may_on_topic(Write, &t.name),
                |t| {
                    (
                        t.name.clone(),
                        t.partition_data.iter().map(|p| p.index).collect(),
                    )
                },
            );
            let code = if txn_allowed {
                denied(ResponseError::TopicAuthorizationFailed)
            } else {
                txn_refusal
            };
            Gate::Pass(RequestKind::Produce(r), Patch::Produce(refused, code))
        }
        RequestKind::Fetch(mut r) if r.replica_id.0 < 0 => {
            let refused = narrow(
                &mut r.topics,
                |t| access.may_on_topic(Read, &t.topic),
                |t| {
                    (
                        t.topic.clone(),
                        t.partitions.iter().map(|p| p.partition).collect(),
                    )
                },
            );
            Gate::Pass(RequestKind::Fetch(r), Patch::Fetch(refused))
        }
        RequestKind::ListOffsets(mut r) => {
            let refused = narrow(
                &mut r.topics,
                |t| access.may_on_topic(Describe, &t.name),
                |t| {
                    (
                        t.name.clone(),
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                    )
                },
            );
            Gate::Pass(RequestKind::ListOffsets(r), Patch::ListOffsets(refused))
        }
        RequestKind::Metadata(mut r) => {
            let creatable = |name: &TopicName| cluster(Create) || access.may_on_topic(Create, name);
            match r.topics.as_mut() {
                None => Gate::Pass(
                    RequestKind::Metadata(r),
                    Patch::Metadata {
                        refused: Vec::new(),
                        all: true,
                    },
                ),
                Some(topics) => {
                    let mut refused = Vec::new();
                    topics.retain(|t| match &t.name {
                        Some(name) if !access.may_on_topic(Describe, name) => {
                            refused.push(name.clone());
                            false
                        }
                        _ => true,
                    });
                    if !topics.iter().filter_map(|t| t.name.as_ref()).all(creatable) {
                        r.allow_auto_topic_creation = false;
                    }
                    Gate::Pass(
                        RequestKind::Metadata(r),
                        Patch::Metadata {
                            refused,
                            all: false,
                        },
                    )
                }
            }
        }
        RequestKind::DescribeTopicPartitions(mut r) => {
            if r.topics.is_empty() {
                // Every topic: the response keeps those the principal may describe.
                return Gate::Pass(
                    RequestKind::DescribeTopicPartitions(r),
                    Patch::DescribeTopicPartitions {
                        refused: Vec::new(),
                        all: true,
                    },
                );
            }
            let refused = narrow(
                &mut r.topics,
                |t| access.may_on_topic(Describe, &t.name),
                |t| t.name.clone(),
            );
            if r.topics.is_empty() {
                // No topic left to ask for, which would mean every topic: answer here.
                return Gate::Refuse(ResponseKind::DescribeTopicPartitions(
                    DescribeTopicPartitionsResponse::default()
                        .with_topics(refused.into_iter().map(refused_topic_partitions).collect()),
                ));
            }
            Gate::Pass(
                RequestKind::DescribeTopicPartitions(r),
                Patch::DescribeTopicPartitions {
                    refused,
                    all: false,
                },
            )
        }
        RequestKind::CreateTopics(mut r) => {
            let refused = narrow(
                &mut r.topics,
                |t| cluster(Create) || access.may_on_topic(Create, &t.name),
                |t| {
                    CreatableTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(denied(ResponseError::TopicAuthorizationFailed))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                },
            );
            Gate::Pass(RequestKind::CreateTopics(r), Patch::CreateTopics(refused))
        }
        RequestKind::CreatePartitions(mut r) => {
            let refused = narrow(
                &mut r.topics,
                |t| access.may_on_topic(Alter, &t.name),
                |t| {
                    CreatePartitionsTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(denied(ResponseError::TopicAuthorizationFailed))
                },
            );
            Gate::Pass(
                RequestKind::CreatePartitions(r),
                Patch::CreatePartitions(refused),
            )
        }
        RequestKind::AlterConfigs(mut r) => {
            let refused = narrow(
                &mut r.resources,
                |resource| may_alter_configs(resource.resource_type, &resource.resource_name),
                |resource| {
                    AlterConfigsResourceResponse::default()
                        .with_error_code(config_refusal(resource.resource_type))
                        .with_resource_type(resource.resource_type)
                        .with_resource_name(resource.resource_name.clone())
                },
            );
            Gate::Pass(RequestKind::AlterConfigs(r), Patch::AlterConfigs(refused))
        }
        RequestKind::IncrementalAlterConfigs(mut r) => {
            let refused = narrow(
                &mut r.resources,
                |resource| may_alter_configs(resource.resource_type, &resource.resource_name),
                |resource| {
                    IncrementalAlterConfigsResourceResponse::default()
                        .with_error_code(config_refusal(resource.resource_type))
                        .with_resource_type(resource.resource_type)
                        .with_resource_name(resource.resource_name.clone())
                },
            );
            Gate::Pass(
                RequestKind::IncrementalAlterConfigs(r),
                Patch::IncrementalAlterConfigs(refused),
            )
        }
        RequestKind::DeleteTopics(mut r) => {
            let refuse = |name: &TopicName| {
                DeletableTopicResult::default()
                    .with_name(Some(name.clone()))
                    .with_error_code(denied(ResponseError::TopicAuthorizationFailed))
            };
            let mut refused = narrow(
                &mut r.topic_names,
                |name| access.may_on_topic(Delete, name),
                |name| refuse(name),
            );
            r.topics.retain(|t| {
                let name = t.name.clone().or_else(|| {
                    access
                        .view
                        .state
                        .topic_by_id(switchyard_backend_api::TopicId(t.topic_id))
                        .map(|topic| TopicName(StrBytes::from(topic.name.clone())))
                });
                match name {
                    Some(name) if !access.may_on_topic(Delete, &name) => {
                        refused.push(refuse(&name).with_topic_id(t.topic_id));
                        false
                    }
                    _ => true,
                }
            });
            Gate::Pass(RequestKind::DeleteTopics(r), Patch::DeleteTopics(refused))
        }
        RequestKind::DescribeConfigs(mut r) => {
            let topic =
                |resource: &DescribeConfigsResource| resource.resource_type == TOPIC_CONFIGS;
            let refused = narrow(
                &mut r.resources,
                |resource| {
                    if topic(resource) {
                        let name = resource.resource_name.as_str();
                        access.may(DescribeConfigs, ResourceType::Topic, name)
                    } else {
                        cluster(DescribeConfigs)
                    }
                },
                |resource| {
                    let error = if topic(resource) {
                        ResponseError::TopicAuthorizationFailed
                    } else {
                        ResponseError::ClusterAuthorizationFailed
                    };
                    DescribeConfigsResult::default()
                        .with_error_code(error.code())
                        .with_resource_type(resource.resource_type)
                        .with_resource_name(resource.resource_name.clone())
                },
            );
            Gate::Pass(
                RequestKind::DescribeConfigs(r),
                Patch::DescribeConfigs(refused),
            )
        }
        RequestKind::OffsetCommit(mut r) => {
            // Refused for its group: every topic goes, and the patch answers each partition
            // GROUP_AUTHORIZATION_FAILED.
            let group = access.may_on_group(Read, r.group_id.as_str());
            let refused = narrow(
                &mut r.topics,
                |t| group && access.may_on_topic(Read, &t.name),
                |t| {
                    (
                        t.name.clone(),
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                    )
                },
            );
            Gate::Pass(
                RequestKind::OffsetCommit(r),
                Patch::OffsetCommit {
                    refused,
                    group: !group,
                },
            )
        }
        RequestKind::OffsetFetch(r) => {
            let groups: Vec<String> = if r.groups.is_empty() {
                vec![r.group_id.to_string()]
            } else {
                r.groups.iter().map(|g| g.group_id.to_string()).collect()
            };
            if groups.iter().any(|g| !access.may_on_group(Describe, g)) {
                return Gate::Refuse(ResponseKind::OffsetFetch(
                    OffsetFetchResponse::default().with_error_code(group_refusal),
                ));
            }
            Gate::Pass(RequestKind::OffsetFetch(r), Patch::OffsetFetch)
        }
        RequestKind::JoinGroup(r) if !access.may_on_group(Read, r.group_id.as_str()) => {
            Gate::Refuse(ResponseKind::JoinGroup(
                JoinGroupResponse::default().with_error_code(group_refusal),
            ))
        }
        RequestKind::SyncGroup(r) if !access.may_on_group(Read, r.group_id.as_str()) => {
            Gate::Refuse(ResponseKind::SyncGroup(
                SyncGroupResponse::default().with_error_code(group_refusal),
            ))
        }
        RequestKind::Heartbeat(r) if !access.may_on_group(Read, r.group_id.as_str()) => {
            Gate::Refuse(ResponseKind::Heartbeat(
                HeartbeatResponse::default().with_error_code(group_refusal),
            ))
        }
        RequestKind::LeaveGroup(r) if !access.may_on_group(Read, r.group_id.as_str()) => {
            Gate::Refuse(ResponseKind::LeaveGroup(
                LeaveGroupResponse::default().with_error_code(group_refusal),
            ))
        }
        RequestKind::FindCoordinator(r) => {
            let keys: Vec<&StrBytes> = if r.coordinator_keys.is_empty() {
                vec![&r.key]
            } else {
                r.coordinator_keys.iter().collect()
            };
            // Groups need DESCRIBE on the group, transactional ids on the transactional id.
            let (ok, refusal) = match r.key_type {
                0 => (
                    keys.iter()
                        .all(|k| access.may_on_group(Describe, k.as_str())),
                    group_refusal,
                ),
                1 => (
                    keys.iter()
                        .all(|k| access.may_on_transactional_id(Describe, k.as_str())),
                    txn_refusal,
                ),
                _ => (true, group_refusal),
            };
            if ok {
                return Gate::Pass(RequestKind::FindCoordinator(r), Patch::None);
            }
            let coordinators = r
                .coordinator_keys
                .iter()
                .map(|key| {
                    kafka_protocol::messages::find_coordinator_response::Coordinator::default()
                        .with_key(key.clone())
                        .with_node_id((-1).into())
                        .with_port(-1)
                        .with_error_code(refusal)
                })
                .collect();
            Gate::Refuse(ResponseKind::FindCoordinator(
                FindCoordinatorResponse::default()
                    .with_error_code(refusal)
                    .with_node_id((-1).into())
                    .with_port(-1)
                    .with_coordinators(coordinators),
            ))
        }
        RequestKind::OffsetDelete(r) if !access.may_on_group(Delete, r.group_id.as_str()) => {
            Gate::Refuse(ResponseKind::OffsetDelete(
                OffsetDeleteResponse::default().with_error_code(group_refusal),
            ))
        }
        RequestKind::OffsetDelete(mut r) => {
            let refused = narrow(
                &mut r.topics,
                |t| access.may_on_topic(Read, &t.name),
                |t| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(denied(
                                            ResponseError::TopicAuthorizationFailed,
                                        ))
                                })
                                .collect(),
                        )
                },
            );
            Gate::Pass(RequestKind::OffsetDelete(r), Patch::OffsetDelete(refused))
        }
        RequestKind::DeleteGroups(mut r) => {
            let refused = narrow(
                &mut r.groups_names,
                |g| access.may_on_group(Delete, g.as_str()),
                |g| {
                    DeletableGroupResult::default()
                        .with_group_id(g.clone())
                        .with_error_code(group_refusal)
                },
            );
            Gate::Pass(RequestKind::DeleteGroups(r), Patch::DeleteGroups(refused))
        }
        RequestKind::DescribeGroups(mut r) => {
            let refused = narrow(
                &mut r.groups,
                |g| access.may_on_group(Describe, g.as_str()),
                |g| {
                    DescribedGroup::default()
                        .with_group_id(g.clone())
                        .with_error_code(group_refusal)
                },
            );
            Gate::Pass(
                RequestKind::DescribeGroups(r),
                Patch::DescribeGroups(refused),
            )
        }
        RequestKind::ListGroups(r) if !cluster(Describe) => {
            Gate::Pass(RequestKind::ListGroups(r), Patch::ListGroups)
        }
        RequestKind::InitProducerId(r)
            if r.transactional_id.is_none() && !access.may_write_idempotently() =>
        {
            Gate::Refuse(ResponseKind::InitProducerId(
                InitProducerIdResponse::default()
                    .with_error_code(cluster_refusal.code())
                    .with_producer_id((-1).into())
                    .with_producer_epoch(-1),
            ))
        }
        RequestKind::InitProducerId(r)
            if r
                .transactional_id
                .as_ref()
                .is_some_and(|id| !access.may_on_transactional_id(Write, id.as_str())) =>
        {
            Gate::Refuse(ResponseKind::InitProducerId(
                InitProducerIdResponse::default()
                    .with_error_code(txn_refusal)
                    .with_producer_id((-1).into())
                    .with_producer_epoch(-1),
            ))
        }
        RequestKind::AddPartitionsToTxn(r) => {
            if !access.may_on_transactional_id(Write, r.v3_and_below_transactional_id.as_str()) {
                return Gate::Refuse(ResponseKind::AddPartitionsToTxn(add_partitions_refused(
                    &r,
                    |_| txn_refusal,
                )));
            }
            if r.v3_and_below_topics
                .iter()
                .all(|t| access.may_on_topic(Write, &t.name))
            {
                return Gate::Pass(RequestKind::AddPartitionsToTxn(r), Patch::None);
            }
            Gate::Refuse(ResponseKind::AddPartitionsToTxn(add_partitions_refused(
                &r,
                |topic| {
                    if access.may_on_topic(Write, topic) {
                        denied(ResponseError::OperationNotAttempted)
                    } else {
                        denied(ResponseError::TopicAuthorizationFailed)
                    }
                },
            )))
        }
        RequestKind::AddOffsetsToTxn(r)
            if !access.may_on_transactional_id(Write, r.transactional_id.as_str())
                || !access.may_on_group(Read, r.group_id.as_str()) =>
        {
            let code = if access.may_on_transactional_id(Write, r.transactional_id.as_str()) {
                group_refusal
            } else {
                txn_refusal
            };
            Gate::Refuse(ResponseKind::AddOffsetsToTxn(
                AddOffsetsToTxnResponse::default().with_error_code(code),
            ))
        }
        RequestKind::TxnOffsetCommit(r) => {
            let code = if !access.may_on_transactional_id(Write, r.transactional_id.as_str()) {
                txn_refusal
            } else if !access.may_on_group(Read, r.group_id.as_str()) {
                group_refusal
            } else if !r.topics.iter().all(|t| access.may_on_topic(Read, &t.name)) {
                denied(ResponseError::TopicAuthorizationFailed)
            } else {
                return Gate::Pass(RequestKind::TxnOffsetCommit(r), Patch::None);
            };
            Gate::Refuse(ResponseKind::TxnOffsetCommit(txn_offset_commit_refused(
                &r, code,
            )))
        }
        RequestKind::EndTxn(r)
            if !access.may_on_transactional_id(Write, r.transactional_id.as_str()) =>
        {
            Gate::Refuse(ResponseKind::EndTxn(
                EndTxnResponse::default().with_error_code(txn_refusal),
            ))
        }
        RequestKind::WriteTxnMarkers(r) if !cluster(ClusterAction) => {
            Gate::Refuse(ResponseKind::WriteTxnMarkers(
                WriteTxnMarkersResponse::default().with_markers(
                    r.markers
                        .iter()
                        .map(|m| {
                            WritableTxnMarkerResult::default()
                                .with_producer_id(m.producer_id)
                                .with_topics(
                                    m.topics
                                        .iter()
                                        .map(|t| {
                                            WritableTxnMarkerTopicResult::default()
                                                .with_name(t.name.clone())
                                                .with_partitions(
                                                    t.partition_indexes
                                                        .iter()
                                                        .map(|p| {
                                                            WritableTxnMarkerPartitionResult::default()
                                                                .with_partition_index(*p)
                                                                .with_error_code(
                                                                    cluster_refusal.code(),
                                                                )
                                                        })
                                                        .collect(),
                                                )
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
            ))
        }
        RequestKind::DescribeTransactions(mut r) => {
            let refused = narrow(
                &mut r.transactional_ids,
                |id| access.may_on_transactional_id(Describe, id.as_str()),
                |id| {
                    DescribedTransaction::default()
                        .with_transactional_id(id.clone())
                        .with_error_code(txn_refusal)
                },
            );
            Gate::Pass(
                RequestKind::DescribeTransactions(r),
                Patch::DescribeTransactions(refused),
            )
        }
        RequestKind::ListTransactions(r) => {
            Gate::Pass(RequestKind::ListTransactions(r), Patch::ListTransactions)
        }
        RequestKind::DescribeCluster(_) if !cluster(Describe) => {
            Gate::Refuse(ResponseKind::DescribeCluster(
                DescribeClusterResponse::default().with_error_code(cluster_refusal.code()),
            ))
        }
        RequestKind::DescribeQuorum(_) if !cluster(Describe) => {
            Gate::Refuse(ResponseKind::DescribeQuorum(
                DescribeQuorumResponse::default().with_error_code(cluster_refusal.code()),
            ))
        }
        // The whole metadata, credentials' salted hashes included: for operators only.
        RequestKind::FetchSnapshot(_) if !cluster(ClusterAction) => {
            Gate::Refuse(ResponseKind::FetchSnapshot(
                FetchSnapshotResponse::default().with_error_code(cluster_refusal.code()),
            ))
        }
        RequestKind::BrokerHeartbeat(_) if !cluster(ClusterAction) => {
            Gate::Refuse(ResponseKind::BrokerHeartbeat(
                BrokerHeartbeatResponse::default().with_error_code(cluster_refusal.code()),
            ))
        }
        RequestKind::ElectLeaders(r) if !cluster(Alter) => {
            let refused = |p: &i32| {
                ElectLeadersPartitionResult::default()
                    .with_partition_id(*p)
                    .with_error_code(cluster_refusal.code())
            };
            Gate::Refuse(ResponseKind::ElectLeaders(
                ElectLeadersResponse::default()
                    .with_error_code(cluster_refusal.code())
                    .with_replica_election_results(
                        r.topic_partitions
                            .iter()
                            .flatten()
                            .map(|t| {
                                ReplicaElectionResult::default()
                                    .with_topic(t.topic.clone())
                                    .with_partition_result(
                                        t.partitions.iter().map(refused).collect(),
                                    )
                            })
                            .collect(),
                    ),
            ))
        }
        RequestKind::DescribeLogDirs(_) if !cluster(Describe) => {
            Gate::Refuse(ResponseKind::DescribeLogDirs(
                DescribeLogDirsResponse::default().with_error_code(cluster_refusal.code()),
            ))
        }
        RequestKind::DescribeAcls(_) if !cluster(Describe) => {
            Gate::Refuse(ResponseKind::DescribeAcls(
                DescribeAclsResponse::default().with_error_code(cluster_refusal.code()),
            ))
        }
        RequestKind::CreateAcls(r) if !cluster(Alter) => Gate::Refuse(ResponseKind::CreateAcls(
            CreateAclsResponse::default().with_results(
                r.creations
                    .iter()
                    .map(|_| AclCreationResult::default().with_error_code(cluster_refusal.code()))
                    .collect(),
            ),
        )),
        RequestKind::DeleteAcls(r) if !cluster(Alter) => Gate::Refuse(ResponseKind::DeleteAcls(
            DeleteAclsResponse::default().with_filter_results(
                r.filters
                    .iter()
                    .map(|_| {
                        DeleteAclsFilterResult::default().with_error_code(cluster_refusal.code())
                    })
                    .collect(),
            ),
        )),
        RequestKind::DescribeUserScramCredentials(_) if !cluster(Describe) => {
            Gate::Refuse(ResponseKind::DescribeUserScramCredentials(
                DescribeUserScramCredentialsResponse::default()
                    .with_error_code(cluster_refusal.code()),
            ))
        }
        RequestKind::AlterUserScramCredentials(r) if !cluster(Alter) => {
            let users: std::collections::BTreeSet<String> = r
                .deletions
                .iter()
                .map(|d| d.name.to_string())
                .chain(r.upsertions.iter().map(|u| u.name.to_string()))
                .collect();
            Gate::Refuse(ResponseKind::AlterUserScramCredentials(
                AlterUserScramCredentialsResponse::default().with_results(
                    users
                        .into_iter()
                        .map(|user| {
                            AlterUserScramCredentialsResult::default()
                                .with_user(StrBytes::from(user))
                                .with_error_code(cluster_refusal.code())
                        })
                        .collect(),
                ),
            ))
        }
        other => Gate::Pass(other, Patch::None),
    }
}

/// Put the refused parts of a narrowed request back into its response.
pub(crate) fn patch(access: &Access, response: ResponseKind, patch: Patch) -> ResponseKind {
    let topic_refusal = denied(ResponseError::TopicAuthorizationFailed);
    match (response, patch) {
        (response, Patch::None) => response,
        (ResponseKind::Produce(mut r), Patch::Produce(refused, code)) => {
            r.responses
                .extend(refused.into_iter().map(|(name, partitions)| {
                    TopicProduceResponse::default()
                        .with_name(name)
                        .with_partition_responses(
                            partitions
                                .into_iter()
                                .map(|index| {
                                    PartitionProduceResponse::default()
                                        .with_index(index)
                                        .with_error_code(code)
                                        .with_base_offset(-1)
                                        .with_log_append_time_ms(-1)
                                        .with_log_start_offset(-1)
                                })
                                .collect(),
                        )
                }));
            ResponseKind::Produce(r)
        }
        (ResponseKind::Fetch(mut r), Patch::Fetch(refused)) => {
            r.responses
                .extend(refused.into_iter().map(|(topic, partitions)| {
                    FetchableTopicResponse::default()
                        .with_topic(topic)
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|index| {
                                    PartitionData::default()
                                        .with_partition_index(index)
                                        .with_error_code(topic_refusal)
                                        .with_high_watermark(-1)
                                        .with_last_stable_offset(-1)
                                        .with_log_start_offset(-1)
                                })
                                .collect(),
                        )
                }));
            ResponseKind::Fetch(r)
        }
        (ResponseKind::ListOffsets(mut r), Patch::ListOffsets(refused)) => {
            r.topics
                .extend(refused.into_iter().map(|(name, partitions)| {
                    ListOffsetsTopicResponse::default()
                        .with_name(name)
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|index| {
                                    ListOffsetsPartitionResponse::default()
                                        .with_partition_index(index)
                                        .with_error_code(topic_refusal)
                                        .with_timestamp(-1)
                                        .with_offset(-1)
                                })
                                .collect(),
                        )
                }));
            ResponseKind::ListOffsets(r)
        }
        (ResponseKind::OffsetCommit(mut r), Patch::OffsetCommit { refused, group }) => {
            let code = if group {
                denied(ResponseError::GroupAuthorizationFailed)
            } else {
                topic_refusal
            };
            r.topics
                .extend(refused.into_iter().map(|(name, partitions)| {
                    OffsetCommitResponseTopic::default()
                        .with_name(name)
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|index| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(index)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                }));
            ResponseKind::OffsetCommit(r)
        }
        (ResponseKind::Metadata(mut r), Patch::Metadata { refused, all }) => {
            if all {
                r.topics.retain(|t| {
                    t.name
                        .as_ref()
                        .is_none_or(|name| access.may_on_topic(AclOperation::Describe, name))
                });
            }
            r.topics.extend(refused.into_iter().map(|name| {
                MetadataResponseTopic::default()
                    .with_name(Some(name))
                    .with_error_code(topic_refusal)
            }));
            ResponseKind::Metadata(r)
        }
        (
            ResponseKind::DescribeTopicPartitions(mut r),
            Patch::DescribeTopicPartitions { refused, all },
        ) => {
            if all {
                r.topics.retain(|t| {
                    t.name
                        .as_ref()
                        .is_none_or(|name| access.may_on_topic(AclOperation::Describe, name))
                });
            }
            r.topics
                .extend(refused.into_iter().map(refused_topic_partitions));
            ResponseKind::DescribeTopicPartitions(r)
        }
        (ResponseKind::CreateTopics(mut r), Patch::CreateTopics(refused)) => {
            r.topics.extend(refused);
            ResponseKind::CreateTopics(r)
        }
        (ResponseKind::DeleteTopics(mut r), Patch::DeleteTopics(refused)) => {
            r.responses.extend(refused);
            ResponseKind::DeleteTopics(r)
        }
        (ResponseKind::DeleteRecords(mut r), Patch::DeleteRecords(refused)) => {
            r.topics.extend(refused);
            ResponseKind::DeleteRecords(r)
        }
        (ResponseKind::DescribeProducers(mut r), Patch::DescribeProducers(refused)) => {
            r.topics.extend(refused);
            ResponseKind::DescribeProducers(r)
        }
        (ResponseKind::OffsetDelete(mut r), Patch::OffsetDelete(refused)) => {
            // A group-level error answers for every topic; the refused ones are added only
            // to a response that lists topics.
            if r.error_code == 0 {
                r.topics.extend(refused);
            }
            ResponseKind::OffsetDelete(r)
        }
        (ResponseKind::DeleteGroups(mut r), Patch::DeleteGroups(refused)) => {
            r.results.extend(refused);
            ResponseKind::DeleteGroups(r)
        }
        (ResponseKind::CreatePartitions(mut r), Patch::CreatePartitions(refused)) => {
            r.results.extend(refused);
            ResponseKind::CreatePartitions(r)
        }
        (ResponseKind::AlterConfigs(mut r), Patch::AlterConfigs(refused)) => {
            r.responses.extend(refused);
            ResponseKind::AlterConfigs(r)
        }
        (ResponseKind::IncrementalAlterConfigs(mut r), Patch::IncrementalAlterConfigs(refused)) => {
            r.responses.extend(refused);
            ResponseKind::IncrementalAlterConfigs(r)
        }
        (ResponseKind::DescribeConfigs(mut r), Patch::DescribeConfigs(refused)) => {
            r.results.extend(refused);
            ResponseKind::DescribeConfigs(r)
        }
        (ResponseKind::DescribeGroups(mut r), Patch::DescribeGroups(refused)) => {
            r.groups.extend(refused);
            ResponseKind::DescribeGroups(r)
        }
        (ResponseKind::DescribeTransactions(mut r), Patch::DescribeTransactions(refused)) => {
            r.transaction_states.extend(refused);
            ResponseKind::DescribeTransactions(r)
        }
        (ResponseKind::ListTransactions(mut r), Patch::ListTransactions) => {
            r.transaction_states.retain(|t| {
                access.may_on_transactional_id(AclOperation::Describe, t.transactional_id.as_str())
            });
            ResponseKind::ListTransactions(r)
        }
        (ResponseKind::ListGroups(mut r), Patch::ListGroups) => {
            r.groups
                .retain(|g| access.may_on_group(AclOperation::Describe, g.group_id.as_str()));
            ResponseKind::ListGroups(r)
        }
        (ResponseKind::OffsetFetch(mut r), Patch::OffsetFetch) => {
            for topic in &mut r.topics {
                if !access.may_on_topic(AclOperation::Describe, &topic.name) {
                    for partition in &mut topic.partitions {
                        partition.error_code = topic_refusal;
                        partition.committed_offset = -1;
                        partition.metadata = None;
                    }
                }
            }
            for group in &mut r.groups {
                for topic in &mut group.topics {
                    if !access.may_on_topic(AclOperation::Describe, &topic.name) {
                        for partition in &mut topic.partitions {
                            partition.error_code = topic_refusal;
                            partition.committed_offset = -1;
                            partition.metadata = None;
                        }
                    }
                }
            }
            ResponseKind::OffsetFetch(r)
        }
        (response, _) => response,
    }
}
