//! Produce: validate each partition's batches, check idempotent sequences, append to the
//! partition log, and with `acks=all` wait until the ISR has the batches (the high watermark
//! passed them), refusing with NOT_ENOUGH_REPLICAS when the ISR is below
//! `min.insync.replicas`. Metadata consensus is not on this path: a produce reads the local
//! metadata view and never proposes.

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use tokio::time::{Duration, Instant};

use crate::broker::{Broker, now_ms};

/// `acks` asking for the whole ISR.
const ACKS_ALL: i16 = -1;

/// Returns `None` for `acks = 0`: the client expects no response.
pub(crate) async fn handle(
    broker: &Broker,
    _version: i16,
    request: ProduceRequest,
) -> Option<ProduceResponse> {
    let refuse_all = if !matches!(request.acks, -1..=1) {
        Some(ResponseError::InvalidRequiredAcks)
    } else {
        None
    };
    let acks = request.acks;
    let deadline =
        Instant::now() + Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let topics = join_all(request.topic_data.into_iter().map(|topic| async move {
        let name = topic.name.0.as_str().to_owned();
        let partitions = join_all(topic.partition_data.into_iter().map(|p| {
            let name = name.clone();
            async move {
                let result = match refuse_all {
                    Some(error) => Err(error),
                    None => append(broker, &name, p.index, p.records, acks, deadline).await,
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
    acks: i16,
    deadline: Instant,
) -> Result<(i64, i64), ResponseError> {
    let records = records
        .filter(|r| !r.is_empty())
        .ok_or(ResponseError::CorruptMessage)?;
    let (replica, leader_epoch) = broker.led_replica(topic, partition).await?;
    if acks == ACKS_ALL
        && let Some((isr, min_insync)) = replica.insync()
        && isr < min_insync
    {
        return Err(ResponseError::NotEnoughReplicas);
    }
    let appended = tokio::task::spawn_blocking({
        let replica = std::sync::Arc::clone(&replica);
        move || replica.append(&records, leader_epoch, now_ms())
    })
    .await
    .map_err(|_| ResponseError::KafkaStorageError)??;
    if acks == ACKS_ALL && !acks_before_isr() {
        replica
            .wait_replicated(appended.last_offset + 1, leader_epoch, deadline)
            .await?;
    }
    Ok((appended.base_offset, appended.log_start_offset))
}

/// Whether this broker is the broken variant that acknowledges `acks=all` writes once they are
/// in the leader's log, before the ISR has them: only a `conformance` build started with
/// `SWITCHYARD_FLAW=acks-before-isr` is; the data-path fault runs must catch it.
fn acks_before_isr() -> bool {
    #[cfg(feature = "conformance")]
    {
        crate::conformance::flaw() == Some(crate::conformance::BrokerFlaw::AcksBeforeIsr)
    }
    #[cfg(not(feature = "conformance"))]
    {
        false
    }
}
