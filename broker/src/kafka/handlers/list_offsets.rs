//! ListOffsets: earliest (-2), latest (-1: the high watermark), the record with the largest
//! timestamp (-3, v7+), the earliest local offset (-4, v8+: the earliest, as every segment is
//! local), the latest tiered offset (-5, v9+: none, `-1`, as nothing is tiered), and the first
//! offset at or after a timestamp among the records below the high watermark. For a
//! `read_committed` request the last stable offset takes the high watermark's place.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use tracing::warn;

use crate::broker::Broker;

const LATEST: i64 = -1;
/// `isolation_level` of a consumer that reads committed data only: offsets answer up to the
/// last stable offset.
const READ_COMMITTED: i8 = 1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

/// The first version that takes each special timestamp past earliest and latest.
const SPECIAL_SINCE: [(i64, i16); 3] =
    [(MAX_TIMESTAMP, 7), (EARLIEST_LOCAL, 8), (LATEST_TIERED, 9)];

pub(crate) async fn handle(
    broker: &Broker,
    version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut topics = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.as_str().to_owned();
        let mut partitions = Vec::new();
        for p in topic.partitions {
            let response =
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
            let too_new = SPECIAL_SINCE
                .iter()
                .any(|(t, since)| p.timestamp == *t && version < *since);
            let result = if too_new {
                Err(ResponseError::UnsupportedVersion)
            } else {
                let committed = request.isolation_level == READ_COMMITTED;
                let at = (p.partition_index, p.current_leader_epoch);
                lookup(broker, &name, at, p.timestamp, committed).await
            };
            partitions.push(match result {
                Ok((offset, timestamp, leader_epoch)) => response
                    .with_offset(offset)
                    .with_timestamp(timestamp)
                    // v4 added the field; older versions cannot carry it.
                    .with_leader_epoch(if version >= 4 { leader_epoch } else { -1 }),
                Err(error) => response
                    .with_error_code(error.code())
                    .with_offset(-1)
                    .with_timestamp(-1)
                    .with_leader_epoch(-1),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// The first record at or after offset `from` in `batch` whose timestamp is at least
/// `timestamp`: the log finds the batch, Kafka answers with the record. `None` if the batch
/// does not decode.
fn first_record_at(batch: &[u8], timestamp: i64, from: i64) -> Option<(i64, i64)> {
    let mut bytes = Bytes::copy_from_slice(batch);
    match RecordBatchDecoder::decode(&mut bytes) {
        Ok(set) => set
            .records
            .iter()
            .find(|r| r.offset >= from && r.timestamp >= timestamp)
            .map(|r| (r.offset, r.timestamp)),
        Err(e) => {
            warn!(error = %e, "cannot decode a stored batch for a timestamp lookup");
            None
        }
    }
}

/// The offset (and its timestamp and leader epoch) ListOffsets answers for `timestamp` in
/// `topic`'s partition `at.0`, led here in the leader epoch `at.1` names (-1: any).
async fn lookup(
    broker: &Broker,
    topic: &str,
    at: (i32, i32),
    timestamp: i64,
    committed: bool,
) -> Result<(i64, i64, i32), ResponseError> {
    let (partition, current_leader_epoch) = at;
    let (replica, leader_epoch) = broker
        .led_replica_in(topic, partition, current_leader_epoch)
        .await?;
    let log = replica.log().clone();
    // What the consumer may read: below the high watermark, or below the last stable offset
    // for `read_committed`.
    let high_watermark = replica.high_watermark();
    let high_watermark = if committed {
        replica.last_stable_offset().min(high_watermark)
    } else {
        high_watermark
    };
    if timestamp == LATEST_TIERED {
        return Ok((-1, -1, -1));
    }
    let found = tokio::task::spawn_blocking(move || {
        let found = match timestamp {
            LATEST => return Ok(Some((high_watermark, -1))),
            EARLIEST | EARLIEST_LOCAL => return Ok(Some((log.log_start_offset(), -1))),
            MAX_TIMESTAMP => log.max_timestamp(),
            t if t >= 0 => log.offset_for_timestamp(t)?,
            _ => return Ok(None),
        };
        match found {
            Some(batch) if batch.offset < high_watermark => {
                let target = if timestamp == MAX_TIMESTAMP {
                    batch.timestamp
                } else {
                    timestamp
                };
                log.read(batch.offset, 1).map(|read| {
                    Some(
                        first_record_at(&read.records, target, batch.offset)
                            .unwrap_or((batch.offset, batch.timestamp)),
                    )
                })
            }
            _ => Ok(None),
        }
    })
    .await
    .map_err(|_| ResponseError::KafkaStorageError)?
    .map_err(|e| crate::kafka::errors::log_error(&e))?;
    match (found, timestamp) {
        (Some((offset, ts)), _) => Ok((offset, ts, leader_epoch)),
        (None, t) if t >= 0 || t == MAX_TIMESTAMP => Ok((-1, -1, leader_epoch)),
        (None, _) => Err(ResponseError::InvalidRequest),
    }
}
