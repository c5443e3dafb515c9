//! Response frames whose record data stays in the partition logs' segment files until it is
//! written: a Fetch response is encoded as encoded bytes interleaved with ranges of segment
//! files, and a plaintext connection sends those ranges with `sendfile` — the records go from
//! the page cache to the socket without being copied through the broker. A TLS connection
//! must encrypt them, so it reads them.
//!
//! The fetch handler puts a placeholder in each partition's `records` ([`FileRecords::hold`])
//! and keeps the file ranges beside the response; [`encode_fetch`] encodes the response with
//! the protocol crate's encoders and replaces each placeholder by its ranges. A placeholder is
//! known by identity (the address of its own one-byte allocation), never by its content.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchResponse, ResponseHeader};
use kafka_protocol::protocol::Encodable;
use switchyard_log::{FileSlice, LogSlices};

/// The first Fetch version with flexible (compact) encodings.
const FLEXIBLE: i16 = 12;

/// One response frame (without its length prefix): bytes and ranges of segment files, in
/// order.
#[derive(Debug, Default)]
pub(crate) struct Frame {
    parts: Vec<Part>,
    len: u64,
}

/// A piece of a [`Frame`].
#[derive(Debug)]
pub(crate) enum Part {
    Bytes(Bytes),
    File(FileSlice),
}

impl Frame {
    /// The frame's length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The pieces, in the order they are sent.
    pub(crate) fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The frame's bytes, files read: what a client receives.
    #[cfg(test)]
    pub(crate) fn flatten(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for part in &self.parts {
            match part {
                Part::Bytes(bytes) => out.extend_from_slice(bytes),
                Part::File(slice) => slice.read_into(&mut out).expect("read slice"),
            }
        }
        out
    }

    fn push_bytes(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.len += bytes.len() as u64;
            self.parts.push(Part::Bytes(bytes));
        }
    }

    fn push_file(&mut self, slice: FileSlice) {
        self.len += slice.len();
        self.parts.push(Part::File(slice));
    }
}

impl From<Bytes> for Frame {
    fn from(bytes: Bytes) -> Self {
        let mut frame = Self::default();
        frame.push_bytes(bytes);
        frame
    }
}

/// The record data of a Fetch response that stays in the logs' files, by placeholder.
#[derive(Debug, Default)]
pub(crate) struct FileRecords {
    held: HashMap<usize, (Bytes, LogSlices)>,
}

impl FileRecords {
    /// A placeholder for `slices`, to put in a partition's `records`.
    pub(crate) fn hold(&mut self, slices: LogSlices) -> Bytes {
        let placeholder = Bytes::from(vec![0u8]);
        self.held
            .insert(placeholder.as_ptr() as usize, (placeholder.clone(), slices));
        placeholder
    }

    /// Whether no records are held.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The slices `records` is the placeholder of, if it is one.
    fn take(&mut self, records: &Bytes) -> Option<LogSlices> {
        let key = records.as_ptr() as usize;
        match self.held.get(&key) {
            Some((placeholder, _)) if placeholder.len() == records.len() => {
                self.held.remove(&key).map(|(_, slices)| slices)
            }
            _ => None,
        }
    }
}

/// Encodes a Fetch response of `version` with its header; every placeholder of `files` in it
/// is replaced by its file ranges.
pub(crate) fn encode_fetch(
    header: &ResponseHeader,
    header_version: i16,
    response: &FetchResponse,
    version: i16,
    mut files: FileRecords,
) -> anyhow::Result<Frame> {
    let mut frame = Frame::default();
    let mut out = BytesMut::new();
    header.encode(&mut out, header_version)?;
    // The response without topics, split where its topic array goes.
    let empty = response.clone().with_responses(Vec::new());
    let mut top = BytesMut::new();
    empty.encode(&mut top, version)?;
    let array_at = 4 + if version >= 7 { 6 } else { 0 };
    out.extend_from_slice(&top[..array_at]);
    put_array_len(&mut out, version, response.responses.len())?;
    for topic in &response.responses {
        encode_topic(&mut out, &mut frame, topic, version, &mut files)?;
    }
    out.extend_from_slice(&top[array_at + empty_array_len(version)..]);
    frame.push_bytes(out.freeze());
    Ok(frame)
}

fn encode_topic(
    out: &mut BytesMut,
    frame: &mut Frame,
    topic: &FetchableTopicResponse,
    version: i16,
    files: &mut FileRecords,
) -> anyhow::Result<()> {
    let empty = topic.clone().with_partitions(Vec::new());
    let mut encoded = BytesMut::new();
    empty.encode(&mut encoded, version)?;
    // The topic's name (a string, compact from v12) or, from v13, its id (a UUID).
    let name = topic.topic.len();
    let array_at = match version {
        ..FLEXIBLE => 2 + name,
        FLEXIBLE => uvarint_len(u32::try_from(name + 1)?) + name,
        _ => 16,
    };
    out.extend_from_slice(&encoded[..array_at]);
    put_array_len(out, version, topic.partitions.len())?;
    for partition in &topic.partitions {
        let slices = partition.records.as_ref().and_then(|r| files.take(r));
        match slices {
            Some(slices) => encode_partition_from_files(out, frame, partition, version, slices)?,
            None => partition.encode(out, version)?,
        }
    }
    out.extend_from_slice(&encoded[array_at + empty_array_len(version)..]);
    Ok(())
}

/// A partition whose records are file ranges: encoded with empty records, split where they
/// go, and the ranges put between the two halves. Where the records go is where that encoding
/// and the one with null records (as long, other bytes) first differ.
fn encode_partition_from_files(
    out: &mut BytesMut,
    frame: &mut Frame,
    partition: &PartitionData,
    version: i16,
    slices: LogSlices,
) -> anyhow::Result<()> {
    let mut encoded = BytesMut::new();
    partition
        .clone()
        .with_records(Some(Bytes::new()))
        .encode(&mut encoded, version)?;
    let mut null = BytesMut::new();
    partition
        .clone()
        .with_records(None)
        .encode(&mut null, version)?;
    let records_at = encoded
        .iter()
        .zip(null.iter())
        .position(|(a, b)| a != b)
        .ok_or_else(|| anyhow::anyhow!("records not found in the partition's encoding"))?;
    out.extend_from_slice(&encoded[..records_at]);
    put_bytes_len(out, version, usize::try_from(slices.len())?)?;
    frame.push_bytes(out.split().freeze());
    for slice in slices.slices {
        frame.push_file(slice);
    }
    out.extend_from_slice(&encoded[records_at + empty_array_len(version)..]);
    Ok(())
}

/// The length of an array of `len` elements, as `version` encodes it.
fn put_array_len(out: &mut BytesMut, version: i16, len: usize) -> anyhow::Result<()> {
    put_bytes_len(out, version, len)
}

/// The length of non-null bytes (or of an array), as `version` encodes it: an `INT32`, or
/// from v12 an unsigned varint of the length plus one.
fn put_bytes_len(out: &mut BytesMut, version: i16, len: usize) -> anyhow::Result<()> {
    if version >= FLEXIBLE {
        let mut value = u32::try_from(len + 1)?;
        while value >= 0x80 {
            out.put_u8((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        out.put_u8(value as u8);
    } else {
        out.put_i32(i32::try_from(len)?);
    }
    Ok(())
}

/// Bytes of the unsigned varint of `value`.
fn uvarint_len(value: u32) -> usize {
    (32 - value.max(1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes of an empty array's (or empty bytes') length in `version`.
fn empty_array_len(version: i16) -> usize {
    if version >= FLEXIBLE { 1 } else { 4 }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, EpochEndOffset, LeaderIdAndEpoch, NodeEndpoint,
    };
    use kafka_protocol::messages::{BrokerId, ProducerId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use switchyard_log::batch::testing::batch;
    use switchyard_log::{LogConfig, PartitionLog};

    use super::*;

    /// A log of several small segments, so that a read spans segment files.
    fn log(dir: &std::path::Path) -> PartitionLog {
        let config = LogConfig {
            segment_bytes: 600,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir, config).expect("open log");
        for i in 0..12u8 {
            let value = vec![i; 40 + usize::from(i) * 7];
            log.append(&batch(1_000, &[&value, b"second"]), 3, 1_000)
                .expect("append");
        }
        log
    }

    fn partition(index: i32, version: i16, records: Option<Bytes>) -> PartitionData {
        let mut p = PartitionData::default()
            .with_partition_index(index)
            .with_high_watermark(24)
            .with_last_stable_offset(20)
            .with_log_start_offset(if version >= 5 { 2 } else { 0 })
            .with_aborted_transactions((index % 2 == 0).then(|| {
                (0..index)
                    .map(|i| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(i64::from(i)))
                            .with_first_offset(7)
                    })
                    .collect()
            }))
            .with_preferred_read_replica(BrokerId(if version >= 11 { 2 } else { -1 }))
            .with_records(records);
        if version >= 12 && index == 1 {
            p = p
                .with_diverging_epoch(EpochEndOffset::default().with_epoch(2).with_end_offset(9))
                .with_current_leader(
                    LeaderIdAndEpoch::default()
                        .with_leader_id(BrokerId(1))
                        .with_leader_epoch(3),
                );
        }
        p
    }

    /// Every version's frame, records from the files, is byte for byte the protocol crate's
    /// encoding of the same response with the records in memory — with several topics and
    /// partitions, partitions without records, aborted transactions (null or not), tagged
    /// fields and topic names long enough for a two-byte varint.
    #[test]
    fn a_frame_is_the_response_with_its_records_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log(dir.path());
        let long_name = "t".repeat(200);
        for version in 4..=17 {
            let mut files = FileRecords::default();
            let mut in_memory = Vec::new();
            let mut held = Vec::new();
            for (topic, name) in ["events", long_name.as_str()].into_iter().enumerate() {
                let mut memory_parts = Vec::new();
                let mut held_parts = Vec::new();
                for index in 0..4 {
                    let from = (topic as i64) * 3 + i64::from(index) * 4;
                    let read = log.read_until(from, 500, 22).expect("read");
                    let slices = log.slices_until(from, 500, 22).expect("slices");
                    assert_eq!(slices.len(), read.records.len() as u64);
                    let (memory, placeholder) = match index {
                        3 => (None, None),
                        2 => (Some(Bytes::new()), Some(Bytes::new())),
                        _ => (Some(Bytes::from(read.records)), Some(files.hold(slices))),
                    };
                    memory_parts.push(partition(index, version, memory));
                    held_parts.push(partition(index, version, placeholder));
                }
                let topic = |parts| {
                    let t = FetchableTopicResponse::default().with_partitions(parts);
                    if version >= 13 {
                        t.with_topic_id(uuid::Uuid::from_u128(7 + name.len() as u128))
                    } else {
                        t.with_topic(TopicName(StrBytes::from_string(name.to_owned())))
                    }
                };
                in_memory.push(topic(memory_parts));
                held.push(topic(held_parts));
            }
            let response = |topics| {
                let r = FetchResponse::default()
                    .with_throttle_time_ms(5)
                    .with_responses(topics);
                let r = if version >= 7 {
                    r.with_error_code(0).with_session_id(9)
                } else {
                    r
                };
                if version >= 16 {
                    r.with_node_endpoints(vec![
                        NodeEndpoint::default()
                            .with_node_id(BrokerId(1))
                            .with_host(StrBytes::from_static_str("localhost"))
                            .with_port(9092),
                    ])
                } else {
                    r
                }
            };
            let header = ResponseHeader::default().with_correlation_id(41);
            let header_version = if version >= 12 { 1 } else { 0 };
            let mut expected = BytesMut::new();
            header
                .encode(&mut expected, header_version)
                .expect("header");
            response(in_memory)
                .encode(&mut expected, version)
                .expect("encode");
            let frame = encode_fetch(&header, header_version, &response(held), version, files)
                .expect("frame");
            assert!(
                frame.parts().iter().any(|p| matches!(p, Part::File(_))),
                "v{version}: records come from the files"
            );
            assert_eq!(frame.len(), expected.len() as u64, "v{version}");
            assert_eq!(frame.flatten(), expected.to_vec(), "v{version}");
        }
    }

    /// Records that merely look like a placeholder (the same byte, another allocation) are
    /// sent as they are.
    #[test]
    fn only_the_placeholder_itself_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log(dir.path());
        let mut files = FileRecords::default();
        let _held = files.hold(log.slices_until(0, 100, 24).expect("slices"));
        let lookalike = Bytes::from(vec![0u8]);
        let response = FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![partition(0, 11, Some(lookalike))]),
        ]);
        let header = ResponseHeader::default();
        let mut expected = BytesMut::new();
        header.encode(&mut expected, 0).expect("header");
        response.encode(&mut expected, 11).expect("encode");
        let frame = encode_fetch(&header, 0, &response, 11, files).expect("frame");
        assert_eq!(frame.flatten(), expected.to_vec());
    }
}
