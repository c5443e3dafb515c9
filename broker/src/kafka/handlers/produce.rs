//! Produce: validate each partition's batches, check idempotent sequences, append to the
//! partition log. Metadata consensus is not on this path: a produce reads the local metadata
//! view and never proposes.

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use crate::broker::{Broker, now_ms};

/// Returns `None` for `acks = 0`: the client expects no response.
pub(crate) async fn handle(
    broker: &Broker,
    _version: i16,
    request: ProduceRequest,
) -> Option<ProduceResponse> {
    let refuse_all = if request.transactional_id.is_some() {
        Some(ResponseError::TransactionalIdAuthorizationFailed)
    } else if !matches!(request.acks, -1..=1) {
        Some(ResponseError::InvalidRequiredAcks)
    } else {
        None
    };
    let acks = request.acks;
    let topics = join_all(request.topic_data.into_iter().map(|topic| async move {
        let name = topic.name.0.as_str().to_owned();
        let partitions = join_all(topic.partition_data.into_iter().map(|p| {
            let name = name.clone();
            async move {
                let result = match refuse_all {
                    Some(error) => Err(error),
                    None => append(broker, &name, p.index, p.records).await,
                };
                let response = PartitionProduceResponse::default()
                    .with_index(p.index)
                    .with_log_append_time_ms(-1);
                match result {
                    Ok((base_offset, log_start_offset)) => response
                        .with_base_offset(base_offset)
                        .with_log_start_offset(log_start_offset),
                    Err(error) => response
                        .with_error_code(error.code())
                        .with_base_offset(-1)
                        .with_log_start_offset(-1),
                }
            }
        }))
        .await;
        TopicProduceResponse::default()
            .with_name(topic.name)
            .with_partition_responses(partitions)
    }))
    .await;
    (acks != 0).then(|| ProduceResponse::default().with_responses(topics))
}

async fn append(
    broker: &Broker,
    topic: &str,
    partition: i32,
    records: Option<Bytes>,
) -> Result<(i64, i64), ResponseError> {
    let records = records
        .filter(|r| !r.is_empty())
        .ok_or(ResponseError::CorruptMessage)?;
    let (replica, leader_epoch) = broker.led_replica(topic, partition).await?;
    let appended =
        tokio::task::spawn_blocking(move || replica.append(&records, leader_epoch, now_ms()))
            .await
            .map_err(|_| ResponseError::KafkaStorageError)??;
    Ok((appended.base_offset, appended.log_start_offset))
}
