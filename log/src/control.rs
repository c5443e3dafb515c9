//! Transaction markers (KIP-98): the control batches a partition leader appends when a
//! transaction commits or aborts. A marker is a batch of one control record, uncompressed,
//! with the transactional and control attribute bits set and the producer's id and epoch:
//!
//! ```text
//! key:   version i16 (0), type i16 (0 abort, 1 commit)
//! value: version i16 (0), coordinator epoch i32
//! ```
//!
//! Consumers never see control records as messages; a `read_committed` consumer uses the
//! markers, with the aborted transactions a Fetch response lists, to drop aborted data.

use crate::batch::{
    ATTR_CONTROL, ATTR_TRANSACTIONAL, ATTRIBUTES, CRC, HEADER_LEN, MAGIC_V2, MIN_BATCH_LENGTH,
    RecordBatch,
};
use crate::records::slice_varint;

/// What a marker ends a transaction with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// The transaction aborted: its records are not to be read by `read_committed`.
    Abort,
    /// The transaction committed.
    Commit,
}

impl Marker {
    fn kind(self) -> i16 {
        match self {
            Self::Abort => 0,
            Self::Commit => 1,
        }
    }
}

/// A marker batch for `producer_id` at `producer_epoch`, with base offset 0 (the log assigns
/// the real one) and `timestamp` as its time.
pub fn marker_batch(
    (producer_id, producer_epoch): (i64, i16),
    marker: Marker,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&marker.kind().to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    // attributes, timestamp delta 0, offset delta 0, key, value, no headers.
    let mut body = vec![0u8, 0, 0];
    body.push(zigzag(key.len()));
    body.extend_from_slice(&key);
    body.push(zigzag(value.len()));
    body.extend_from_slice(&value);
    body.push(0);
    let mut records = vec![zigzag(body.len())];
    records.extend_from_slice(&body);

    let mut out = Vec::with_capacity(HEADER_LEN + records.len());
    out.extend_from_slice(&0i64.to_be_bytes());
    let length = i32::try_from(MIN_BATCH_LENGTH + records.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.push(MAGIC_V2 as u8);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&(ATTR_TRANSACTIONAL | ATTR_CONTROL).to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&producer_id.to_be_bytes());
    out.extend_from_slice(&producer_epoch.to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&records);
    let crc = crc32c::crc32c(&out[ATTRIBUTES..]);
    out[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// The marker a control batch holds; `None` for any other batch, or a control record whose
/// key is not a marker's (Kafka ignores unknown control types).
pub fn marker_of(batch: &RecordBatch<'_>) -> Option<Marker> {
    let (key, _) = control_record(batch)?;
    match i16::from_be_bytes(key.get(2..4)?.try_into().ok()?) {
        0 => Some(Marker::Abort),
        1 => Some(Marker::Commit),
        _ => None,
    }
}

/// The coordinator epoch a marker batch carries; `None` for any other batch.
pub fn coordinator_epoch_of(batch: &RecordBatch<'_>) -> Option<i32> {
    marker_of(batch)?;
    let (_, value) = control_record(batch)?;
    Some(i32::from_be_bytes(value.get(2..6)?.try_into().ok()?))
}

/// The key and value of a control batch's first record.
fn control_record<'a>(batch: &RecordBatch<'a>) -> Option<(&'a [u8], &'a [u8])> {
    if !batch.header().is_control() || batch.header().compression() != 0 {
        return None;
    }
    let mut at = batch.bytes().get(HEADER_LEN..)?;
    let _length = slice_varint(&mut at)?;
    let (_attributes, rest) = at.split_first()?;
    at = rest;
    let _timestamp_delta = slice_varint(&mut at)?;
    let _offset_delta = slice_varint(&mut at)?;
    let key_length = usize::try_from(slice_varint(&mut at)?).ok()?;
    let key = at.get(..key_length)?;
    at = &at[key_length..];
    let value_length = usize::try_from(slice_varint(&mut at)?).ok()?;
    Some((key, at.get(..value_length)?))
}

/// A small non-negative length as a one-byte zigzag varint.
fn zigzag(n: usize) -> u8 {
    debug_assert!(n < 64, "marker fields are a few bytes");
    (n as u8) << 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::testing::producer_batch;
    use crate::records;

    #[test]
    fn markers_are_valid_control_batches_that_read_back() {
        for marker in [Marker::Abort, Marker::Commit] {
            let bytes = marker_batch((42, 3), marker, 7, 1_000);
            let batch = RecordBatch::parse(&bytes, 0).expect("a valid batch");
            let header = batch.header();
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch), (42, 3));
            assert_eq!((header.record_count, header.last_offset_delta), (1, 0));
            assert_eq!(marker_of(&batch), Some(marker));
            assert_eq!(coordinator_epoch_of(&batch), Some(7));
        }
    }

    #[test]
    fn data_batches_hold_no_marker() {
        let bytes = producer_batch((1, 0, 0), 5, &[b"v"]);
        let batch = RecordBatch::parse(&bytes, 0).expect("valid");
        assert_eq!(marker_of(&batch), None);
        assert_eq!(coordinator_epoch_of(&batch), None);
    }

    #[test]
    fn producers_may_not_write_markers() {
        let bytes = marker_batch((42, 0), Marker::Commit, 0, 1);
        let batch = RecordBatch::parse(&bytes, 0).expect("valid");
        assert_eq!(
            records::validate(&batch),
            Err(records::RecordError::ControlBatch)
        );
    }
}
