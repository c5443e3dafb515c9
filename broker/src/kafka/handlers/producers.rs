//! InitProducerId for idempotent producers (producer ids come from blocks allocated through
//! the metadata backend; a transactional producer's goes to its transaction coordinator,
//! [`super::transactions`]), and DescribeProducers.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProducerId,
};
use tracing::warn;

use crate::broker::Broker;
use crate::kafka::errors::metadata_error;

pub(crate) async fn init_producer_id(
    broker: &Broker,
    _version: i16,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(id) = &request.transactional_id {
        return super::transactions::init_producer_id(broker, id.0.as_str(), &request).await;
    }
    // A producer that had an id asks for a new epoch of it after a fatal sequence error
    // (KIP-360); give it the next epoch, or a fresh id when the epoch space is used up.
    if request.producer_id.0 >= 0
        && request.producer_epoch >= 0
        && request.producer_epoch < i16::MAX - 1
    {
        return response
            .with_producer_id(request.producer_id)
            .with_producer_epoch(request.producer_epoch + 1);
    }
    match broker.next_producer_id().await {
        Ok(id) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            warn!(error = %e, "producer id allocation failed");
            let code = match metadata_error(&e) {
                ResponseError::NotController | ResponseError::LeaderNotAvailable => {
                    ResponseError::CoordinatorNotAvailable
                }
                other => other,
            };
            response.with_error_code(code.code())
        }
    }
}

/// DescribeProducers, version 0: the idempotent and transactional producers each partition's
/// leader keeps state for, with where each one's open transaction starts there.
pub(crate) async fn describe(
    broker: &Broker,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
        for index in topic.partition_indexes {
            let response = PartitionResponse::default().with_partition_index(index);
            partitions.push(
                match broker.led_replica(topic.name.0.as_str(), index).await {
                    Ok((replica, _)) => response.with_active_producers(
                        replica
                            .active_producers()
                            .into_iter()
                            .map(|p| {
                                ProducerState::default()
                                    .with_producer_id(ProducerId(p.producer_id))
                                    .with_producer_epoch(i32::from(p.epoch))
                                    .with_last_sequence(p.last_sequence)
                                    .with_last_timestamp(p.last_timestamp)
                                    .with_coordinator_epoch(p.coordinator_epoch.unwrap_or(-1))
                                    .with_current_txn_start_offset(
                                        replica.open_transaction_start(p.producer_id).unwrap_or(-1),
                                    )
                            })
                            .collect(),
                    ),
                    Err(error) => response.with_error_code(error.code()),
                },
            );
        }
        topics.push(
            TopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}
