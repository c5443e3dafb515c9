//! DeleteRecords: each partition's leader moves its log start offset, then waits (until the
//! request's timeout) for every in-sync replica to move its own, and answers with the low
//! watermark — the smallest log start offset over the ISR — as Kafka does.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use tokio::time::Instant;

use crate::broker::Broker;

pub(crate) async fn delete(
    broker: &Broker,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let deadline =
        Instant::now() + Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let result =
                DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
            partitions.push(
                match delete_one(
                    broker,
                    topic.name.0.as_str(),
                    p.partition_index,
                    p.offset,
                    deadline,
                )
                .await
                {
                    Ok(low_watermark) => result.with_low_watermark(low_watermark),
                    Err(error) => result.with_low_watermark(-1).with_error_code(error.code()),
                },
            );
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

async fn delete_one(
    broker: &Broker,
    topic: &str,
    partition: i32,
    offset: i64,
    deadline: Instant,
) -> Result<i64, ResponseError> {
    let (replica, epoch) = broker.led_replica(topic, partition).await?;
    let target = tokio::task::spawn_blocking({
        let replica = std::sync::Arc::clone(&replica);
        move || replica.delete_records(offset, epoch)
    })
    .await
    .map_err(|_| ResponseError::KafkaStorageError)??;
    Ok(replica.wait_deleted(target, epoch, deadline).await?)
}
