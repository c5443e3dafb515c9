//! The transactional APIs a producer uses — InitProducerId with a `transactional.id`,
//! AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn — answered by the transaction
//! coordinator of the id ([`crate::transactions`]); WriteTxnMarkers, which coordinators send
//! to partition leaders; and DescribeTransactions, ListTransactions.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{
    TopicData, TransactionState as DescribedState,
};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};
use switchyard_backend_api::{
    GenerationCheck, GroupId, MemberId, MetadataCommand, MetadataError, OffsetCommit, Outcome,
    Rejection,
};
use switchyard_log::control::Marker;
use tokio::time::Instant;

use crate::broker::{Broker, now_ms};
use crate::kafka::dispatch::Client;
use crate::kafka::errors::group_error;
use crate::kafka::handlers::kstr;
use crate::liveness;
use crate::transactions::write_marker;

/// How long a request waits for a commit or abort to complete before answering (EndTxn
/// answers success anyway: the outcome is decided; InitProducerId answers
/// CONCURRENT_TRANSACTIONS and the producer retries).
fn completion_deadline(broker: &Broker) -> Instant {
    Instant::now() + broker.metadata_timeout().min(Duration::from_secs(5))
}

/// The error a transactional request gets on this broker, if it may not coordinate `id`.
fn coordination(broker: &Broker, id: &str) -> Result<Arc<Broker>, ResponseError> {
    if let Some(error) = broker.coordination_error(id) {
        return Err(error);
    }
    broker
        .shared()
        .ok_or(ResponseError::CoordinatorNotAvailable)
}

/// InitProducerId with a `transactional.id`: the id's producer id at its next epoch (fencing
/// the previous one). A transaction the previous producer left open is aborted first.
pub(crate) async fn init_producer_id(
    broker: &Broker,
    transactional_id: &str,
    request: &InitProducerIdRequest,
) -> InitProducerIdResponse {
    let failed = |error: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    let broker = match coordination(broker, transactional_id) {
        Ok(broker) => broker,
        Err(error) => return failed(error),
    };
    let max = i64::try_from(broker.settings().transaction_max_timeout_ms).unwrap_or(i64::MAX);
    if request.transaction_timeout_ms <= 0 || i64::from(request.transaction_timeout_ms) > max {
        return failed(ResponseError::InvalidTransactionTimeout);
    }
    let mut current = (request.producer_id.0 >= 0 && request.producer_epoch >= 0)
        .then_some((request.producer_id.0, request.producer_epoch));
    let deadline = completion_deadline(&broker);
    loop {
        let command = MetadataCommand::InitTransactionalId {
            transactional_id: transactional_id.to_owned(),
            timeout_ms: request.transaction_timeout_ms,
            current,
            now_ms: now_ms(),
        };
        match broker.propose_applied(command).await {
            Ok(Outcome::TransactionalProducer {
                producer_id,
                producer_epoch,
            }) => {
                return InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(producer_id.0))
                    .with_producer_epoch(producer_epoch);
            }
            // The open transaction is being aborted (or a commit or abort is under way): once
            // it completes, ask again, as a new producer (the epoch moved on).
            Ok(Outcome::TransactionAborting { .. })
            | Err(MetadataError::Rejected(Rejection::ConcurrentTransactions { .. })) => {
                if !broker
                    .transactions()
                    .finish(&broker, transactional_id, deadline)
                    .await
                {
                    return failed(ResponseError::ConcurrentTransactions);
                }
                current = None;
            }
            Ok(_) => return failed(ResponseError::UnknownServerError),
            Err(error) => return failed(group_error(&error)),
        }
    }
}

/// The Kafka error of a transactional command's failure.
fn command_error(result: &Result<Outcome, MetadataError>) -> Option<ResponseError> {
    result.as_ref().err().map(group_error)
}

/// AddPartitionsToTxn, versions 0–3: the partitions join the producer's transaction.
pub(crate) async fn add_partitions(
    broker: &Broker,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let id = request.v3_and_below_transactional_id.0.to_string();
    let error = match coordination(broker, &id) {
        Err(error) => Some(error),
        Ok(broker) => {
            let partitions = request
                .v3_and_below_topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| (t.name.0.to_string(), u32::try_from(*p).unwrap_or(u32::MAX)))
                })
                .collect();
            let result = broker
                .propose(MetadataCommand::AddToTxn {
                    transactional_id: id,
                    producer_id: request.v3_and_below_producer_id.0,
                    producer_epoch: request.v3_and_below_producer_epoch,
                    partitions,
                    groups: Vec::new(),
                    now_ms: now_ms(),
                })
                .await;
            command_error(&result)
        }
    };
    let code = error.map_or(0, |e| e.code());
    add_partitions_refused(&request, |_| code)
}

/// An AddPartitionsToTxn (0–3) answer with `code(topic)` for every partition of each topic.
pub(crate) fn add_partitions_refused(
    request: &AddPartitionsToTxnRequest,
    code: impl Fn(&TopicName) -> i16,
) -> AddPartitionsToTxnResponse {
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(
        request
            .v3_and_below_topics
            .iter()
            .map(|t| {
                AddPartitionsToTxnTopicResult::default()
                    .with_name(t.name.clone())
                    .with_results_by_partition(
                        t.partitions
                            .iter()
                            .map(|p| {
                                AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(*p)
                                    .with_partition_error_code(code(&t.name))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// AddOffsetsToTxn: the group's offsets will commit with the transaction.
pub(crate) async fn add_offsets(
    broker: &Broker,
    request: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let id = request.transactional_id.0.to_string();
    let error = match coordination(broker, &id) {
        Err(error) => Some(error),
        Ok(broker) => {
            let result = broker
                .propose(MetadataCommand::AddToTxn {
                    transactional_id: id,
                    producer_id: request.producer_id.0,
                    producer_epoch: request.producer_epoch,
                    partitions: Vec::new(),
                    groups: vec![GroupId(request.group_id.0.to_string())],
                    now_ms: now_ms(),
                })
                .await;
            command_error(&result)
        }
    };
    AddOffsetsToTxnResponse::default().with_error_code(error.map_or(0, |e| e.code()))
}

/// TxnOffsetCommit, sent to the group's coordinator: the offsets are held with the
/// transaction (in the metadata) and become the group's committed offsets when it commits;
/// refused (NOT_COORDINATOR) if this broker no longer coordinates the group when they apply.
pub(crate) async fn txn_offset_commit(
    broker: &Broker,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let error = match broker.coordination_error(request.group_id.0.as_str()) {
        Some(error) => Some(error),
        None => {
            let max = broker.settings().offset_metadata_max_bytes;
            let too_large = request
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .any(|p| p.committed_metadata.as_ref().is_some_and(|m| m.len() > max));
            if too_large {
                Some(ResponseError::OffsetMetadataTooLarge)
            } else {
                let generation = (request.generation_id >= 0).then(|| GenerationCheck {
                    generation: request.generation_id,
                    member: MemberId(request.member_id.to_string()),
                });
                let offsets = request
                    .topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(|p| OffsetCommit {
                            topic: t.name.0.to_string(),
                            partition: u32::try_from(p.partition_index).unwrap_or(u32::MAX),
                            offset: p.committed_offset,
                            leader_epoch: (p.committed_leader_epoch >= 0)
                                .then_some(p.committed_leader_epoch),
                            metadata: p
                                .committed_metadata
                                .as_ref()
                                .map(ToString::to_string)
                                .unwrap_or_default(),
                        })
                    })
                    .collect();
                // Fenced by this broker's coordination, as an OffsetCommit is: held up past
                // the group's move, it cannot land in the producer's next transaction.
                let result = broker
                    .propose(MetadataCommand::CoordinatedTxnOffsetCommit {
                        coordinator: broker.id(),
                        incarnation: broker.incarnation(),
                        transactional_id: request.transactional_id.0.to_string(),
                        producer_id: request.producer_id.0,
                        producer_epoch: request.producer_epoch,
                        group: GroupId(request.group_id.0.to_string()),
                        generation,
                        offsets,
                        now_ms: now_ms(),
                    })
                    .await;
                command_error(&result)
            }
        }
    };
    txn_offset_commit_refused(&request, error.map_or(0, |e| e.code()))
}

/// A TxnOffsetCommit answer with `code` for every partition.
pub(crate) fn txn_offset_commit_refused(
    request: &TxnOffsetCommitRequest,
    code: i16,
) -> TxnOffsetCommitResponse {
    TxnOffsetCommitResponse::default().with_topics(
        request
            .topics
            .iter()
            .map(|t| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// EndTxn: the transaction commits or aborts. Answered once the decision is in the metadata;
/// the markers are written meanwhile, and the answer waits a little for them, so the
/// producer's next transaction need not retry.
pub(crate) async fn end_txn(broker: &Broker, request: EndTxnRequest) -> EndTxnResponse {
    let id = request.transactional_id.0.to_string();
    let error = match coordination(broker, &id) {
        Err(error) => Some(error),
        Ok(broker) => {
            // Applied here before the completion starts: it reads the transaction's partitions
            // from this node's view. Fenced by this broker's coordination: read late (after a
            // pause or a partition, its producer gone on to the next coordinator and its next
            // transaction), it cannot end that transaction.
            let result = broker
                .propose_applied(MetadataCommand::CoordinatedEndTxn {
                    coordinator: broker.id(),
                    incarnation: broker.incarnation(),
                    transactional_id: id.clone(),
                    producer_id: request.producer_id.0,
                    producer_epoch: request.producer_epoch,
                    commit: request.committed,
                    now_ms: now_ms(),
                })
                .await;
            if result.is_ok() {
                broker
                    .transactions()
                    .finish(&broker, &id, completion_deadline(&broker))
                    .await;
            }
            command_error(&result)
        }
    };
    EndTxnResponse::default().with_error_code(error.map_or(0, |e| e.code()))
}

/// WriteTxnMarkers, from a transaction coordinator (another broker): append each marker to
/// the partitions this broker leads, once the ISR has it.
pub(crate) async fn write_txn_markers(
    broker: &Broker,
    client: &Client,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let from_broker = {
        let mut from_broker = false;
        let ids: Vec<_> = broker.metadata().state.brokers().map(|b| b.id).collect();
        for id in ids {
            if client.may_act_as(id) && liveness::speaks_for(broker, id, client.ip).await {
                from_broker = true;
                break;
            }
        }
        from_broker
    };
    let mut markers = Vec::with_capacity(request.markers.len());
    for marker in request.markers {
        let producer = (marker.producer_id.0, marker.producer_epoch);
        let kind = if marker.transaction_result {
            Marker::Commit
        } else {
            Marker::Abort
        };
        let mut topics = Vec::with_capacity(marker.topics.len());
        for topic in marker.topics {
            let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
            for index in topic.partition_indexes {
                let result = if from_broker {
                    write_marker(
                        broker,
                        topic.name.0.as_str(),
                        index,
                        producer,
                        kind,
                        marker.coordinator_epoch,
                    )
                    .await
                } else {
                    Err(ResponseError::ClusterAuthorizationFailed)
                };
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(result.err().map_or(0, |e| e.code())),
                );
            }
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(topic.name)
                    .with_partitions(partitions),
            );
        }
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(marker.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(markers)
}

/// DescribeTransactions: each transactional id's state, from its coordinator.
pub(crate) fn describe(
    broker: &Broker,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let view = broker.metadata();
    let states = request
        .transactional_ids
        .into_iter()
        .map(|id| {
            let described = DescribedState::default().with_transactional_id(id.clone());
            if let Some(error) = broker.coordination_error(id.0.as_str()) {
                return described.with_error_code(error.code());
            }
            let Some(txn) = view.state.transaction(id.0.as_str()) else {
                return described.with_error_code(ResponseError::TransactionalIdNotFound.code());
            };
            let mut topics: Vec<TopicData> = Vec::new();
            for (topic, partition) in &txn.partitions {
                let index = i32::try_from(*partition).unwrap_or(i32::MAX);
                match topics.last_mut() {
                    Some(t) if t.topic.0.as_str() == topic => t.partitions.push(index),
                    _ => topics.push(
                        TopicData::default()
                            .with_topic(TopicName(kstr(topic.clone())))
                            .with_partitions(vec![index]),
                    ),
                }
            }
            described
                .with_transaction_state(kstr(txn.status.as_str()))
                .with_transaction_timeout_ms(txn.timeout_ms)
                .with_transaction_start_time_ms(txn.started_ms)
                .with_producer_id(ProducerId(txn.producer_id))
                .with_producer_epoch(txn.producer_epoch)
                .with_topics(topics)
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

/// The states ListTransactions filters by.
const STATES: [&str; 6] = [
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
];

/// ListTransactions, versions 0–1: the transactional ids this broker coordinates, filtered by
/// state, producer id and (v1) how long their transaction has been open.
pub(crate) fn list(broker: &Broker, request: ListTransactionsRequest) -> ListTransactionsResponse {
    if !broker.is_registered() {
        return ListTransactionsResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code());
    }
    let unknown: Vec<_> = request
        .state_filters
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let now = now_ms();
    let view = broker.metadata();
    let states = view
        .state
        .transactions()
        .filter(|(id, _)| broker.coordination_error(id).is_none())
        .filter(|(_, txn)| {
            request.state_filters.is_empty()
                || request
                    .state_filters
                    .iter()
                    .any(|s| s.as_str() == txn.status.as_str())
        })
        .filter(|(_, txn)| {
            request.producer_id_filters.is_empty()
                || request
                    .producer_id_filters
                    .iter()
                    .any(|p| p.0 == txn.producer_id)
        })
        .filter(|(_, txn)| {
            request.duration_filter < 0
                || (txn.started_ms >= 0 && now - txn.started_ms >= request.duration_filter)
        })
        .map(|(id, txn)| {
            ListedState::default()
                .with_transactional_id(TransactionalId(kstr(id.clone())))
                .with_producer_id(ProducerId(txn.producer_id))
                .with_transaction_state(kstr(txn.status.as_str()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}
