//! `switchyard produce` and `switchyard consume`: records in and out of a topic for quick
//! checks, over Produce and Fetch to each partition's leader.
//!
//! Produce partitions as Kafka's clients do: a record with a key goes to
//! `murmur2(key) % partitions` (so it lands where a Java or librdkafka client would put it),
//! records without one all go to one partition picked at random (the "sticky" partitioner),
//! unless `--partition` names one. Consume reads `read_uncommitted`, like
//! `kafka-console-consumer` by default: records of open and aborted transactions are shown.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{BrokerId, FetchRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use serde::Serialize;

use super::table::Table;
use super::{Client, EARLIEST, LATEST, Metadata, OpsError, Report, error_name, list_offsets};

const PRODUCE_VERSION: i16 = 9;
const FETCH_VERSION: i16 = 12;
/// Records per Produce request.
const CHUNK: usize = 1_000;
/// How long a Fetch waits for new records.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// Bytes asked per partition and per Fetch.
const FETCH_BYTES: i32 = 4 << 20;
/// Attempts for a request that fails retriably (a leader moving).
const ATTEMPTS: usize = 10;

/// Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`), which its default
/// partitioner applies to record keys.
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Kafka hashes the length as a Java int.
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner gives `key` among `partitions`.
fn partition_of(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// One partition's share of a produce.
#[derive(Debug, Clone, Serialize)]
pub struct Appended {
    /// Partition.
    pub partition: i32,
    /// Records written.
    pub records: usize,
    /// Offset of the first.
    pub first_offset: i64,
    /// Offset of the last.
    pub last_offset: i64,
}

/// `produce`.
#[derive(Debug, Clone, Serialize)]
pub struct Produced {
    /// The topic.
    pub topic: String,
    /// What went where.
    pub partitions: Vec<Appended>,
}

impl Report for Produced {
    fn text(&self) -> String {
        let mut table = Table::new(&[
            "TOPIC",
            "PARTITION",
            "RECORDS",
            "FIRST-OFFSET",
            "LAST-OFFSET",
        ]);
        for p in &self.partitions {
            table.row(vec![
                self.topic.clone(),
                p.partition.to_string(),
                p.records.to_string(),
                p.first_offset.to_string(),
                p.last_offset.to_string(),
            ]);
        }
        table.render()
    }
}

fn encode(key: Option<&Bytes>, values: &[Bytes]) -> Result<Bytes, OpsError> {
    let now = crate::broker::now_ms();
    // One batch: the encoder starts a new one where `offset - sequence` changes, and the
    // batch's base sequence is its first record's, -1 without a producer id.
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i64::try_from(i).unwrap_or(i64::MAX),
            sequence: i32::try_from(i).unwrap_or(i32::MAX).wrapping_sub(1),
            timestamp: now,
            key: key.cloned(),
            value: Some(value.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| OpsError::Invalid(format!("encoding records: {e}")))?;
    Ok(buf.freeze())
}

/// Append `values` to `topic` with `acks` (-1: all in-sync replicas), each with `key`, to
/// `partition` or where Kafka's default partitioner puts them; `sent` hears how many records
/// each acknowledged request carried.
pub async fn produce(
    client: &mut Client,
    topic: &str,
    partition: Option<i32>,
    key: Option<&str>,
    values: Vec<Bytes>,
    acks: i16,
    mut sent: impl FnMut(usize),
) -> Result<Produced, OpsError> {
    let mut metadata = client.metadata(Some(&[topic.to_owned()])).await?;
    let count = i32::try_from(metadata.leaders(topic)?.len()).unwrap_or(i32::MAX);
    let key = key.map(|k| Bytes::from(k.to_owned()));
    let target = match (partition, &key) {
        (Some(p), _) if (0..count).contains(&p) => p,
        (Some(p), _) => {
            return Err(OpsError::Invalid(format!(
                "{topic} has partitions 0..{count}, not {p}"
            )));
        }
        (None, Some(k)) => partition_of(k, count),
        (None, None) => {
            let mut random = [0u8; 4];
            getrandom::fill(&mut random)
                .map_err(|e| OpsError::Invalid(format!("choosing a partition: {e}")))?;
            i32::try_from(u32::from_le_bytes(random) % count.max(1).unsigned_abs()).unwrap_or(0)
        }
    };
    let timeout = i32::try_from(client.timeout().as_millis()).unwrap_or(i32::MAX);
    let mut appended: Option<Appended> = None;
    for chunk in values.chunks(CHUNK) {
        let records = encode(key.as_ref(), chunk)?;
        let request = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(timeout)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from(topic.to_owned())))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(target)
                            .with_records(Some(records)),
                    ]),
            ]);
        let base = send_produce(client, &mut metadata, topic, target, &request).await?;
        sent(chunk.len());
        let last = base + i64::try_from(chunk.len()).unwrap_or(i64::MAX) - 1;
        match appended.as_mut() {
            Some(a) => {
                a.records += chunk.len();
                a.last_offset = last;
            }
            None => {
                appended = Some(Appended {
                    partition: target,
                    records: chunk.len(),
                    first_offset: base,
                    last_offset: last,
                });
            }
        }
    }
    Ok(Produced {
        topic: topic.to_owned(),
        partitions: appended.into_iter().collect(),
    })
}

/// Send one Produce to the partition's leader, following it if it moves; the base offset.
async fn send_produce(
    client: &mut Client,
    metadata: &mut Metadata,
    topic: &str,
    partition: i32,
    request: &ProduceRequest,
) -> Result<i64, OpsError> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let leader = metadata
            .leaders(topic)?
            .into_iter()
            .find(|(p, _)| *p == partition)
            .and_then(|(_, l)| l);
        let attempt = match leader {
            Some(leader) => produce_at(client, &leader, topic, partition, request).await,
            None => Err(OpsError::refused(format!("{topic}/{partition}"), 5, None)),
        };
        match attempt {
            Ok(base) => return Ok(base),
            Err(e) if e.is_retriable() => {
                last = Some(e);
                // The leader moved or is being elected: ask again after a metadata refresh,
                // which waits on the cluster's answer, not on a timer.
                *metadata = client.metadata(Some(&[topic.to_owned()])).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| OpsError::Invalid("no attempt made".into())))
}

async fn produce_at(
    client: &mut Client,
    leader: &str,
    topic: &str,
    partition: i32,
    request: &ProduceRequest,
) -> Result<i64, OpsError> {
    let response = client.call_at(leader, request, PRODUCE_VERSION).await?;
    let answer = response
        .responses
        .iter()
        .flat_map(|t| t.partition_responses.iter())
        .find(|p| p.index == partition)
        .ok_or_else(|| OpsError::Invalid(format!("no answer for {topic}/{partition}")))?;
    if answer.error_code != 0 {
        return Err(OpsError::refused(
            format!("producing to {topic}/{partition}"),
            answer.error_code,
            answer.error_message.as_ref(),
        ));
    }
    Ok(answer.base_offset)
}

/// Where `consume` starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The log start offset.
    Start,
    /// The high watermark: only records produced from now on.
    End,
    /// This offset.
    Offset(i64),
}

impl std::str::FromStr for StartAt {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "start" => Ok(Self::Start),
            "end" => Ok(Self::End),
            other => other
                .parse::<i64>()
                .ok()
                .filter(|o| *o >= 0)
                .map(Self::Offset)
                .ok_or_else(|| format!("expected start, end or an offset, got {other:?}")),
        }
    }
}

/// What to consume.
#[derive(Debug, Clone)]
pub struct Consume {
    /// The topic.
    pub topic: String,
    /// Partitions (every one when empty).
    pub partitions: Vec<i32>,
    /// Where to start.
    pub start: StartAt,
    /// Stop after this many records.
    pub max: Option<usize>,
    /// Stop at the high watermarks seen when it started.
    pub until_end: bool,
}

/// One record consumed.
#[derive(Debug, Clone, Serialize)]
pub struct Consumed {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp, ms since the epoch.
    pub timestamp: i64,
    /// Key, as UTF-8 (lossy).
    pub key: Option<String>,
    /// Value, as UTF-8 (lossy).
    pub value: Option<String>,
    /// Headers, as UTF-8 (lossy).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Option<String>>,
}

fn lossy(bytes: Option<&Bytes>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(b).into_owned())
}

/// The complete batches at the front of `records` (a Fetch may end inside one), decoded.
fn decode(mut records: Bytes) -> Result<Vec<Record>, OpsError> {
    let mut out = Vec::new();
    while records.len() >= 12 {
        let length = i32::from_be_bytes([records[8], records[9], records[10], records[11]]);
        let Some(size) = usize::try_from(length).ok().map(|l| l + 12) else {
            break;
        };
        if size > records.len() {
            break;
        }
        let mut batch = records.split_to(size);
        let set = RecordBatchDecoder::decode(&mut batch)
            .map_err(|e| OpsError::Invalid(format!("decoding a record batch: {e}")))?;
        out.extend(set.records);
    }
    Ok(out)
}

/// Read `spec.topic` as `spec` says, calling `emit` for every record in offset order per
/// partition; returns how many were read. Runs until `spec.max` records, or the end with
/// `spec.until_end`, or forever.
pub async fn consume(
    client: &mut Client,
    spec: &Consume,
    mut emit: impl FnMut(&Consumed),
) -> Result<usize, OpsError> {
    let topic = spec.topic.as_str();
    let mut metadata = client.metadata(Some(&[topic.to_owned()])).await?;
    let all: Vec<i32> = metadata
        .leaders(topic)?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let partitions: Vec<i32> = if spec.partitions.is_empty() {
        all
    } else {
        for p in &spec.partitions {
            if !all.contains(p) {
                return Err(OpsError::Invalid(format!("{topic} has no partition {p}")));
            }
        }
        spec.partitions.clone()
    };
    let keys: Vec<(String, i32)> = partitions.iter().map(|p| (topic.to_owned(), *p)).collect();
    let mut positions: HashMap<i32, i64> = match spec.start {
        StartAt::Offset(o) => partitions.iter().map(|p| (*p, o)).collect(),
        StartAt::Start | StartAt::End => {
            let at = if spec.start == StartAt::Start {
                EARLIEST
            } else {
                LATEST
            };
            list_offsets(client, &metadata, &keys, at)
                .await?
                .into_iter()
                .map(|((_, p), o)| (p, o))
                .collect()
        }
    };
    let ends: HashMap<i32, i64> = if spec.until_end {
        list_offsets(client, &metadata, &keys, LATEST)
            .await?
            .into_iter()
            .map(|((_, p), o)| (p, o))
            .collect()
    } else {
        HashMap::new()
    };
    let done = |positions: &HashMap<i32, i64>| {
        spec.until_end
            && positions
                .iter()
                .all(|(p, o)| ends.get(p).is_none_or(|end| o >= end))
    };
    let mut read = 0usize;
    let mut failures = 0usize;
    while !done(&positions) && spec.max.is_none_or(|m| read < m) {
        let mut by_leader: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (p, leader) in metadata.leaders(topic)? {
            if let (Some(leader), true) = (leader, positions.contains_key(&p)) {
                by_leader.entry(leader).or_default().push(p);
            }
        }
        let mut refresh = by_leader.values().map(Vec::len).sum::<usize>() < positions.len();
        for (leader, led) in by_leader {
            match fetch(client, &leader, topic, &led, &positions).await {
                Ok(batches) => {
                    for (partition, records) in batches {
                        for record in records {
                            let position = positions.entry(partition).or_insert(0);
                            if record.offset < *position {
                                continue;
                            }
                            *position = record.offset + 1;
                            if record.control {
                                continue;
                            }
                            if spec.max.is_some_and(|m| read >= m) {
                                break;
                            }
                            read += 1;
                            emit(&Consumed {
                                topic: topic.to_owned(),
                                partition,
                                offset: record.offset,
                                timestamp: record.timestamp,
                                key: lossy(record.key.as_ref()),
                                value: lossy(record.value.as_ref()),
                                headers: record
                                    .headers
                                    .iter()
                                    .map(|(k, v)| (k.to_string(), lossy(v.as_ref())))
                                    .collect(),
                            });
                        }
                    }
                }
                Err(e) if e.is_retriable() && failures < ATTEMPTS => {
                    failures += 1;
                    refresh = true;
                }
                Err(e) => return Err(e),
            }
        }
        if refresh {
            metadata = client.metadata(Some(&[topic.to_owned()])).await?;
        }
    }
    Ok(read)
}

/// One Fetch of `partitions` from their leader at `positions`: the records of each.
async fn fetch(
    client: &mut Client,
    leader: &str,
    topic: &str,
    partitions: &[i32],
    positions: &HashMap<i32, i64>,
) -> Result<Vec<(i32, Vec<Record>)>, OpsError> {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(i32::try_from(FETCH_WAIT.as_millis()).unwrap_or(500))
        .with_min_bytes(1)
        .with_max_bytes(FETCH_BYTES)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from(topic.to_owned())))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|p| {
                            FetchPartition::default()
                                .with_partition(*p)
                                .with_current_leader_epoch(-1)
                                .with_fetch_offset(positions.get(p).copied().unwrap_or(0))
                                .with_last_fetched_epoch(-1)
                                .with_log_start_offset(-1)
                                .with_partition_max_bytes(FETCH_BYTES)
                        })
                        .collect(),
                ),
        ]);
    let response = client.call_at(leader, &request, FETCH_VERSION).await?;
    if response.error_code != 0 {
        return Err(OpsError::refused(
            format!("fetching {topic}"),
            response.error_code,
            None,
        ));
    }
    let mut out = Vec::new();
    for t in response.responses {
        for p in t.partitions {
            if p.error_code != 0 {
                return Err(OpsError::Refused {
                    what: format!("fetching {topic}/{}", p.partition_index),
                    error: error_name(p.error_code),
                    code: p.error_code,
                    message: String::new(),
                });
            }
            let records = match p.records {
                Some(bytes) => decode(bytes)?,
                None => Vec::new(),
            };
            out.push((p.partition_index, records));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_as_in_kafka() {
        // Kafka's own test vectors (UtilsTest.testMurmur2).
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
        assert!((0..6).contains(&partition_of(b"any key", 6)));
    }

    #[test]
    fn a_fetch_that_ends_inside_a_batch_yields_the_whole_ones() {
        let one = encode(None, &[Bytes::from_static(b"a"), Bytes::from_static(b"b")])
            .unwrap_or_else(|e| panic!("{e}"));
        let header = switchyard_log::BatchHeader::decode(&one)
            .unwrap_or_else(|| panic!("no batch header in {one:?}"));
        assert_eq!(
            (header.size(), header.record_count, header.base_sequence),
            (Some(one.len()), 2, -1),
            "one batch of both records, without a sequence"
        );
        let mut two = BytesMut::from(&one[..]);
        two.extend_from_slice(&one[..one.len() - 3]);
        let records = decode(two.freeze()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(records.len(), 2, "{} bytes: {records:?}", one.len());
        assert_eq!(records[1].value.as_deref(), Some(&b"b"[..]));
    }
}
