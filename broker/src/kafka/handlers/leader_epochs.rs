//! OffsetForLeaderEpoch: where a leader epoch ends in the log of a partition this broker
//! leads. A consumer checks its position with it after a leader change (KIP-320): an end
//! offset below the position means the log it read from was cut. A follower finds with it
//! where its log diverged from the leader's.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::broker::Broker;

/// Kafka's "no such epoch" answer, for both the epoch and the end offset.
const UNDEFINED: i32 = -1;

pub(crate) async fn handle(
    broker: &Broker,
    _version: i16,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.topic.0.as_str().to_owned();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let answer = EpochEndOffset::default().with_partition(p.partition);
            partitions.push(
                match end_offset(
                    broker,
                    &name,
                    p.partition,
                    p.current_leader_epoch,
                    p.leader_epoch,
                )
                .await
                {
                    Ok((epoch, end)) => answer.with_leader_epoch(epoch).with_end_offset(end),
                    Err(error) => answer
                        .with_error_code(error.code())
                        .with_leader_epoch(UNDEFINED)
                        .with_end_offset(i64::from(UNDEFINED)),
                },
            );
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// The largest epoch at or below `leader_epoch` in the partition's log and where it ends, or
/// (-1, -1) if the log holds none. A `current_leader_epoch` other than -1 must be the
/// partition's leader epoch: an older one is fenced, a newer one not yet known here.
async fn end_offset(
    broker: &Broker,
    topic: &str,
    partition: i32,
    current_leader_epoch: i32,
    leader_epoch: i32,
) -> Result<(i32, i64), ResponseError> {
    let (replica, _) = broker
        .led_replica_in(topic, partition, current_leader_epoch)
        .await?;
    Ok(replica
        .log()
        .end_offset_for_epoch(leader_epoch)
        .unwrap_or((UNDEFINED, i64::from(UNDEFINED))))
}
