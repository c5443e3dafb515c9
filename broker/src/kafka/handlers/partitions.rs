//! CreatePartitions: more partitions for existing topics, placed like a new topic's (round
//! robin over the live brokers, continuing where the topic's partitions end) or as the request
//! assigns them, each topic one `CreatePartitions` proposal. Planned on the metadata leader's
//! broker, as CreateTopics is; `validate_only` applies the proposal to a copy of the state and
//! answers with its verdict.

use std::collections::BTreeSet;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use switchyard_backend_api::{BrokerId, MetadataCommand, MetadataState};

use crate::broker::Broker;
use crate::kafka::dispatch::Client;
use crate::kafka::handlers::topics::{
    TopicError, answered_by_leader, assign, partition_budget, placeable, within,
};
use crate::kafka::handlers::{kstr, propose_or_validate};

/// CreatePartitions, versions 0–3 (their fields are the same; v2 is flexible).
pub(crate) async fn create(
    broker: &Broker,
    client: &Client,
    version: i16,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let refuse = |error, message: &str| refuse_all(&request, error, message);
    if let Some(response) = answered_by_leader(
        broker,
        client,
        version,
        &request,
        request.timeout_ms,
        refuse,
    )
    .await
    {
        if !request.validate_only {
            // The partitions the leader's broker added, as this broker's view must show them.
            let added: Vec<(&str, usize)> = response
                .results
                .iter()
                .filter(|r| r.error_code == 0)
                .filter_map(|r| {
                    let asked = request.topics.iter().find(|t| t.name == r.name)?;
                    Some((r.name.0.as_str(), usize::try_from(asked.count).ok()?))
                })
                .collect();
            broker
                .wait_local(
                    |state| {
                        added.iter().all(|(topic, count)| {
                            state
                                .topic(topic)
                                .is_some_and(|t| t.partitions.len() >= *count)
                        })
                    },
                    broker.metadata_timeout(),
                )
                .await;
        }
        return response;
    }
    if !broker.is_registered() {
        return refuse_all(
            &request,
            ResponseError::NotController,
            "metadata is not ready yet",
        );
    }
    let brokers = placeable(broker).await;
    let mut names = BTreeSet::new();
    let duplicates: BTreeSet<&str> = request
        .topics
        .iter()
        .map(|t| t.name.0.as_str())
        .filter(|name| !names.insert(*name))
        .collect();
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let name = topic.name.0.as_str();
        let outcome = if duplicates.contains(name) {
            Err((
                ResponseError::InvalidRequest,
                format!("topic {name} is listed twice"),
            ))
        } else {
            add(broker, &brokers, topic, request.validate_only).await
        };
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        results.push(match outcome {
            Ok(()) => result,
            Err((error, message)) => result
                .with_error_code(error.code())
                .with_error_message(Some(kstr(message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// Plan one topic's new partitions and propose them (or, for `validate_only`, apply them to
/// a copy of the state).
async fn add(
    broker: &Broker,
    brokers: &[BrokerId],
    topic: &CreatePartitionsTopic,
    validate_only: bool,
) -> Result<(), TopicError> {
    let view = broker.metadata();
    let command = plan(broker, &view.state, brokers, topic)?;
    propose_or_validate(broker, &view.state, command, validate_only).await
}

/// The `CreatePartitions` command for one topic: Kafka's checks, then the replica lists.
fn plan(
    broker: &Broker,
    state: &MetadataState,
    brokers: &[BrokerId],
    request: &CreatePartitionsTopic,
) -> Result<MetadataCommand, TopicError> {
    let name = request.name.0.as_str();
    let topic = state.topic(name).ok_or_else(|| {
        (
            ResponseError::UnknownTopicOrPartition,
            format!("topic {name} does not exist"),
        )
    })?;
    let current = topic.partitions.len();
    let wanted = usize::try_from(request.count).unwrap_or(0);
    if wanted <= current {
        let message = if wanted == current {
            format!("topic {name} already has {current} partitions")
        } else {
            format!(
                "topic {name} currently has {current} partitions, which is higher than the \
                 requested {}",
                request.count
            )
        };
        return Err((ResponseError::InvalidPartitions, message));
    }
    let added = wanted - current;
    within(partition_budget(broker, state), added)?;
    let assignments = match &request.assignments {
        Some(assignments) => {
            if assignments.len() != added {
                return Err((
                    ResponseError::InvalidReplicaAssignment,
                    format!(
                        "increasing the number of partitions by {added} but {} assignments \
                         provided",
                        assignments.len()
                    ),
                ));
            }
            assignments
                .iter()
                .map(|a| a.broker_ids.iter().map(|b| BrokerId(b.0)).collect())
                .collect()
        }
        None => assign(
            brokers,
            u32::try_from(added).unwrap_or(u32::MAX),
            topic.replication_factor,
            current,
        )?,
    };
    Ok(MetadataCommand::CreatePartitions {
        topic: name.to_owned(),
        assignments,
    })
}

/// Every topic of `request` answered with `error`.
fn refuse_all(
    request: &CreatePartitionsRequest,
    error: ResponseError,
    message: &str,
) -> CreatePartitionsResponse {
    CreatePartitionsResponse::default().with_results(
        request
            .topics
            .iter()
            .map(|t| {
                CreatePartitionsTopicResult::default()
                    .with_name(t.name.clone())
                    .with_error_code(error.code())
                    .with_error_message(Some(kstr(message)))
            })
            .collect(),
    )
}
