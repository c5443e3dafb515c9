//! Fetch: read whole batches up to the high watermark (up to the last stable offset for a
//! `read_committed` consumer, with the aborted transactions in the range read), honouring max
//! bytes, partition max bytes and min bytes, and long-polling up to max wait — woken when the
//! high watermark moves, never by a busy loop.
//!
//! A fetch with a replica id is a follower copying the partition: it must name the leader
//! epoch it follows in, it reads up to the log end offset (and is woken when the log grows),
//! and its fetch offset tells the leader how far the follower's log reaches.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures::future::select_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{BrokerId as KBrokerId, FetchRequest, FetchResponse, ProducerId};
use switchyard_backend_api::BrokerId;
use switchyard_log::LogSlices;
use tokio::sync::watch;
use tokio::time::Instant;

use switchyard_backend_api::warn_throttled;

use crate::broker::Broker;
use crate::kafka::dispatch::Client;
use crate::kafka::frame::FileRecords;
use crate::liveness;
use crate::txn_index::AbortedTxn;

/// `isolation_level` of a consumer that reads committed data only.
const READ_COMMITTED: i8 = 1;

/// One partition's read.
struct Read {
    index: i32,
    error: Option<ResponseError>,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    /// Whole batches, as ranges of the log's files; none when the read failed.
    records: Option<LogSlices>,
    /// For a `read_committed` fetch: the aborted transactions in the range read.
    aborted: Option<Vec<AbortedTxn>>,
}

pub(crate) async fn handle(
    broker: &Broker,
    client: &Client,
    version: i16,
    mut request: FetchRequest,
    files: &mut FileRecords,
) -> FetchResponse {
    let deadline =
        Instant::now() + Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0));
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    // `fetch.max.bytes` caps every response, whatever the request asks for.
    let max_bytes = usize::try_from(request.max_bytes)
        .unwrap_or(usize::MAX)
        .min(broker.settings().fetch_max_bytes as usize);
    merge_duplicates(&mut request);
    let follower = (request.replica_id.0 >= 0).then_some(BrokerId(request.replica_id.0));
    if let Some(follower) = follower {
        if !client.may_act_as(follower) || !liveness::speaks_for(broker, follower, client.ip).await
        {
            warn_throttled!(
                replica = %follower,
                from = %client.ip,
                principal = %client.principal,
                "replica fetch from a connection that is not that broker's; refused"
            );
            return refuse_all(&request, version, ResponseError::ClusterAuthorizationFailed);
        }
        note_follower_progress(broker, &request, follower).await;
    }
    loop {
        // Subscribe before reading, so an append between the read and the wait still wakes us.
        let mut watches: Vec<watch::Receiver<i64>> = Vec::new();
        for topic in &request.topics {
            for p in &topic.partitions {
                // Opens the partition's log if nothing has touched it yet, so even the first
                // fetch of a new partition can be woken by a produce.
                if let Ok((replica, _)) = broker
                    .led_replica(topic.topic.0.as_str(), p.partition)
                    .await
                {
                    watches.push(match follower {
                        Some(_) => replica.log().subscribe(),
                        None => replica.subscribe_high_watermark(),
                    });
                }
            }
        }
        let (topics, bytes, failed) = read_all(broker, &request, max_bytes, follower).await;
        if bytes >= min_bytes || failed || Instant::now() >= deadline || watches.is_empty() {
            return respond(topics, files);
        }
        let changed = watches.iter_mut().map(|w| Box::pin(w.changed()));
        if tokio::time::timeout_at(deadline, select_all(changed))
            .await
            .is_err()
        {
            let (topics, _, _) = read_all(broker, &request, max_bytes, follower).await;
            return respond(topics, files);
        }
    }
}

/// A partition listed twice (or more) in one request is read once: the first entry counts,
/// as Kafka's fetch sessions keep one entry per partition.
fn merge_duplicates(request: &mut FetchRequest) {
    let mut seen = HashSet::new();
    for topic in &mut request.topics {
        let name = topic.topic.0.clone();
        topic
            .partitions
            .retain(|p| seen.insert((name.clone(), p.partition)));
    }
    request.topics.retain(|t| !t.partitions.is_empty());
}

/// Every partition of `request` answered with `error` and no records (and the whole response,
/// from v7, which has a top-level error code).
fn refuse_all(request: &FetchRequest, version: i16, error: ResponseError) -> FetchResponse {
    let response = respond(
        request
            .topics
            .iter()
            .map(|t| {
                let reads = t
                    .partitions
                    .iter()
                    .map(|p| Read {
                        index: p.partition,
                        error: Some(error),
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1,
                        records: None,
                        aborted: None,
                    })
                    .collect();
                (t.topic.clone(), reads)
            })
            .collect(),
        &mut FileRecords::default(),
    );
    if version >= 7 {
        response.with_error_code(error.code())
    } else {
        response
    }
}

/// A follower's fetch offsets are its log end offsets: tell each partition's leadership, and
/// wake the ISR checks if the follower may join an ISR.
async fn note_follower_progress(broker: &Broker, request: &FetchRequest, follower: BrokerId) {
    let mut joins = false;
    for topic in &request.topics {
        for p in &topic.partitions {
            if let Ok((replica, epoch)) = broker
                .led_replica(topic.topic.0.as_str(), p.partition)
                .await
                && p.current_leader_epoch == epoch
                && p.fetch_offset <= replica.log().log_end_offset()
            {
                joins |= replica.follower_fetched(follower, p.fetch_offset, p.log_start_offset);
            }
        }
    }
    if joins {
        broker.isr_checks().notify_one();
    }
}

/// The response to `topics`' reads; the records read are held in `files`, the response
/// carrying their placeholders.
fn respond(
    topics: Vec<(kafka_protocol::messages::TopicName, Vec<Read>)>,
    files: &mut FileRecords,
) -> FetchResponse {
    FetchResponse::default().with_responses(
        topics
            .into_iter()
            .map(|(name, reads)| {
                FetchableTopicResponse::default()
                    .with_topic(name)
                    .with_partitions(
                        reads
                            .into_iter()
                            .map(|r| {
                                PartitionData::default()
                                    .with_partition_index(r.index)
                                    .with_error_code(r.error.map_or(0, |e| e.code()))
                                    .with_high_watermark(r.high_watermark)
                                    .with_last_stable_offset(r.last_stable_offset)
                                    .with_log_start_offset(r.log_start_offset)
                                    .with_aborted_transactions(r.aborted.map(|aborted| {
                                        aborted
                                            .into_iter()
                                            .map(|a| {
                                                AbortedTransaction::default()
                                                    .with_producer_id(ProducerId(a.producer_id))
                                                    .with_first_offset(a.first_offset)
                                            })
                                            .collect()
                                    }))
                                    .with_preferred_read_replica(KBrokerId(-1))
                                    .with_records(Some(
                                        r.records
                                            .filter(|slices| !slices.is_empty())
                                            .map_or_else(Bytes::new, |slices| files.hold(slices)),
                                    ))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

/// Read every requested partition; returns the reads, the bytes read and whether any
/// partition failed.
async fn read_all(
    broker: &Broker,
    request: &FetchRequest,
    max_bytes: usize,
    follower: Option<BrokerId>,
) -> (
    Vec<(kafka_protocol::messages::TopicName, Vec<Read>)>,
    usize,
    bool,
) {
    let mut total = 0usize;
    let mut failed = false;
    let mut topics = Vec::new();
    for topic in &request.topics {
        let name = topic.topic.0.as_str();
        let mut reads = Vec::new();
        for p in &topic.partitions {
            let budget = max_bytes.saturating_sub(total);
            let partition_max = usize::try_from(p.partition_max_bytes)
                .unwrap_or(0)
                .min(budget);
            let read = read_partition(
                broker,
                name,
                p,
                partition_max,
                total == 0,
                follower,
                request.isolation_level,
            )
            .await;
            total += read
                .records
                .as_ref()
                .map_or(0, |r| usize::try_from(r.len()).unwrap_or(usize::MAX));
            failed |= read.error.is_some();
            reads.push(read);
        }
        topics.push((topic.topic.clone(), reads));
    }
    (topics, total, failed)
}

async fn read_partition(
    broker: &Broker,
    topic: &str,
    p: &kafka_protocol::messages::fetch_request::FetchPartition,
    max_bytes: usize,
    first: bool,
    follower: Option<BrokerId>,
    isolation_level: i8,
) -> Read {
    let (partition, offset) = (p.partition, p.fetch_offset);
    let empty = |error| Read {
        index: partition,
        error: Some(error),
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        records: None,
        aborted: None,
    };
    // The leader epoch the fetcher expects must be the current one (KIP-320); a follower must
    // also be a replica.
    let led = broker
        .led_replica_in(topic, partition, p.current_leader_epoch)
        .await;
    let replica = match led {
        Ok((replica, _)) if follower.is_some_and(|f| !replica.assigned(f)) => {
            return empty(ResponseError::NotLeaderOrFollower);
        }
        Ok((replica, _)) => replica,
        Err(error) => return empty(error),
    };
    // Kafka returns at least one batch when this is the first partition with data, even past
    // max bytes, so consumers always make progress.
    let max_bytes = if first { max_bytes.max(1) } else { max_bytes };
    let log = replica.log().clone();
    let high_watermark = replica.high_watermark();
    let last_stable_offset = replica.last_stable_offset().min(high_watermark);
    let committed = follower.is_none() && isolation_level == READ_COMMITTED;
    let read = tokio::task::spawn_blocking(move || {
        let end = if follower.is_some() {
            log.log_end_offset()
        } else if committed {
            last_stable_offset
        } else {
            high_watermark
        };
        if max_bytes == 0 {
            return Ok((None, log.log_start_offset(), high_watermark));
        }
        log.slices_until(offset, max_bytes, end).map(|slices| {
            let log_start_offset = slices.log_start_offset;
            (Some(slices), log_start_offset, high_watermark)
        })
    })
    .await;
    match read {
        Ok(Ok((records, log_start_offset, high_watermark))) => Read {
            index: partition,
            error: None,
            high_watermark,
            last_stable_offset,
            log_start_offset,
            aborted: committed.then(|| replica.aborted_transactions(offset, last_stable_offset)),
            records,
        },
        Ok(Err(e)) => {
            let mut r = empty(crate::kafka::errors::log_error(&e));
            r.high_watermark = replica.high_watermark();
            r.last_stable_offset = replica.last_stable_offset();
            r.log_start_offset = replica.log().log_start_offset();
            r
        }
        Err(_) => empty(ResponseError::KafkaStorageError),
    }
}
