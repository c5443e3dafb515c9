//! Kafka record batches (magic v2) as raw bytes: header access, validation, and splitting a
//! Produce request's `records` field into batches.
//!
//! The v2 layout, all integers big-endian:
//!
//! | offset | size | field | covered by the CRC |
//! |---:|---:|---|---|
//! | 0 | 8 | `baseOffset` | no — the log rewrites it on append |
//! | 8 | 4 | `batchLength` (bytes after this field) | no |
//! | 12 | 4 | `partitionLeaderEpoch` | no — the log rewrites it on append |
//! | 16 | 1 | `magic` (= 2) | no |
//! | 17 | 4 | `crc` (CRC-32C of everything from `attributes` to the end) | no |
//! | 21 | 2 | `attributes` | yes |
//! | 23 | 4 | `lastOffsetDelta` | yes |
//! | 27 | 8 | `baseTimestamp` | yes |
//! | 35 | 8 | `maxTimestamp` | yes |
//! | 43 | 8 | `producerId` | yes |
//! | 51 | 2 | `producerEpoch` | yes |
//! | 53 | 4 | `baseSequence` | yes |
//! | 57 | 4 | `recordCount` | yes |
//! | 61 | … | records (possibly compressed) | yes |
//!
//! The records themselves stay opaque here: the log stores batches as received.

/// Size of the fields before and including `batchLength`: a batch occupies
/// `LOG_OVERHEAD + batchLength` bytes.
pub const LOG_OVERHEAD: usize = 12;
/// Size of a v2 batch header, up to and including `recordCount`.
pub const HEADER_LEN: usize = 61;
/// The only record batch format the log accepts.
pub const MAGIC_V2: i8 = 2;
/// The smallest valid `batchLength`: a header with no records.
pub(crate) const MIN_BATCH_LENGTH: usize = HEADER_LEN - LOG_OVERHEAD;

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const PARTITION_LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
/// The bytes before `magic`: `baseOffset`, `batchLength`, `partitionLeaderEpoch`.
pub(crate) const PREFIX_LEN: usize = MAGIC;
pub(crate) const CRC: usize = 17;
pub(crate) const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORD_COUNT: usize = 57;

/// Attribute bit: the batch belongs to a transaction.
pub(crate) const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Attribute bit: the batch holds control records (transaction markers).
pub(crate) const ATTR_CONTROL: i16 = 0x20;
/// Attribute bits: the compression codec.
const ATTR_COMPRESSION: i16 = 0x07;

/// Why bytes are not a valid v2 record batch.
///
/// Every variant except [`BatchError::UnsupportedMagic`] means the bytes are damaged and maps to
/// Kafka's `CORRUPT_MESSAGE`; `UnsupportedMagic` maps to `UNSUPPORTED_FOR_MESSAGE_FORMAT`.
/// `position` is the byte offset of the batch within the buffer or file that was parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The buffer ends inside a batch.
    #[error("record batch at byte {position} is truncated: needs {needed} bytes, {available} left")]
    Truncated {
        /// Where the batch starts.
        position: u64,
        /// Bytes the batch needs (its header, or its declared length).
        needed: u64,
        /// Bytes left in the buffer from `position`.
        available: u64,
    },
    /// `batchLength` is smaller than a v2 header.
    #[error("record batch at byte {position} has an invalid length {length}")]
    InvalidLength {
        /// Where the batch starts.
        position: u64,
        /// The `batchLength` field.
        length: i32,
    },
    /// The batch is not magic v2 (v0/v1 message sets are not supported).
    #[error("record batch at byte {position} has magic {magic}; only magic 2 is supported")]
    UnsupportedMagic {
        /// Where the batch starts.
        position: u64,
        /// The `magic` byte.
        magic: i8,
    },
    /// The stored CRC-32C does not match the batch's contents.
    #[error(
        "record batch at byte {position} fails its CRC: stored {stored:#010x}, computed {computed:#010x}"
    )]
    CrcMismatch {
        /// Where the batch starts.
        position: u64,
        /// The `crc` field.
        stored: u32,
        /// The CRC-32C of the bytes.
        computed: u32,
    },
    /// `recordCount` is more than `lastOffsetDelta` allows (a compacted batch may hold fewer
    /// records than its offset range, never more).
    #[error(
        "record batch at byte {position} has {record_count} records but lastOffsetDelta {last_offset_delta}"
    )]
    RecordCountMismatch {
        /// Where the batch starts.
        position: u64,
        /// The `recordCount` field.
        record_count: i32,
        /// The `lastOffsetDelta` field.
        last_offset_delta: i32,
    },
}

/// Reads a big-endian integer of `N` bytes at `at`; the callers have checked the length.
fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// The fixed-size header of a v2 record batch, decoded.
///
/// Decoding a header checks nothing but its size; [`RecordBatch`] validates a whole batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// `baseOffset`: the offset of the first record.
    pub base_offset: i64,
    /// `batchLength`: bytes after the `batchLength` field.
    pub batch_length: i32,
    /// `partitionLeaderEpoch`.
    pub partition_leader_epoch: i32,
    /// `magic`.
    pub magic: i8,
    /// `crc`.
    pub crc: u32,
    /// `attributes`: compression, timestamp type, transactional and control bits.
    pub attributes: i16,
    /// `lastOffsetDelta`: last record's offset minus `baseOffset`.
    pub last_offset_delta: i32,
    /// `baseTimestamp`.
    pub base_timestamp: i64,
    /// `maxTimestamp`: the largest record timestamp in the batch.
    pub max_timestamp: i64,
    /// `producerId` (-1 when not idempotent).
    pub producer_id: i64,
    /// `producerEpoch`.
    pub producer_epoch: i16,
    /// `baseSequence` (-1 when not idempotent).
    pub base_sequence: i32,
    /// `recordCount`.
    pub record_count: i32,
}

impl BatchHeader {
    /// Decodes the first [`HEADER_LEN`] bytes of `bytes`, or `None` if there are fewer.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < HEADER_LEN {
            return None;
        }
        Some(Self {
            base_offset: i64::from_be_bytes(field(bytes, BASE_OFFSET)),
            batch_length: i32::from_be_bytes(field(bytes, BATCH_LENGTH)),
            partition_leader_epoch: i32::from_be_bytes(field(bytes, PARTITION_LEADER_EPOCH)),
            magic: i8::from_be_bytes(field(bytes, MAGIC)),
            crc: u32::from_be_bytes(field(bytes, CRC)),
            attributes: i16::from_be_bytes(field(bytes, ATTRIBUTES)),
            last_offset_delta: i32::from_be_bytes(field(bytes, LAST_OFFSET_DELTA)),
            base_timestamp: i64::from_be_bytes(field(bytes, BASE_TIMESTAMP)),
            max_timestamp: i64::from_be_bytes(field(bytes, MAX_TIMESTAMP)),
            producer_id: i64::from_be_bytes(field(bytes, PRODUCER_ID)),
            producer_epoch: i16::from_be_bytes(field(bytes, PRODUCER_EPOCH)),
            base_sequence: i32::from_be_bytes(field(bytes, BASE_SEQUENCE)),
            record_count: i32::from_be_bytes(field(bytes, RECORD_COUNT)),
        })
    }

    /// Total size of the batch in bytes, or `None` if `batchLength` is below a header's size.
    pub fn size(&self) -> Option<usize> {
        usize::try_from(self.batch_length)
            .ok()
            .filter(|len| *len >= MIN_BATCH_LENGTH)
            .map(|len| len + LOG_OVERHEAD)
    }

    /// The offset of the last record: `baseOffset + lastOffsetDelta`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// The offset right after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// The batch's first [`PREFIX_LEN`] bytes as this header has them: `baseOffset`,
    /// `batchLength` and `partitionLeaderEpoch`, the fields an append rewrites (all outside
    /// the CRC). Written in front of the rest of the batch's original bytes, they give the
    /// batch as stored.
    pub(crate) fn prefix(&self) -> [u8; PREFIX_LEN] {
        let mut prefix = [0u8; PREFIX_LEN];
        prefix[BASE_OFFSET..BATCH_LENGTH].copy_from_slice(&self.base_offset.to_be_bytes());
        prefix[BATCH_LENGTH..PARTITION_LEADER_EPOCH]
            .copy_from_slice(&self.batch_length.to_be_bytes());
        prefix[PARTITION_LEADER_EPOCH..MAGIC]
            .copy_from_slice(&self.partition_leader_epoch.to_be_bytes());
        prefix
    }

    /// The compression codec: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// Whether the batch holds control records.
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Checks what the header alone can tell: the length and the magic. `available` is the
    /// number of bytes from the start of the batch to the end of the buffer or file.
    pub(crate) fn check(&self, position: u64, available: u64) -> Result<usize, BatchError> {
        if self.magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic {
                position,
                magic: self.magic,
            });
        }
        let size = self.size().ok_or(BatchError::InvalidLength {
            position,
            length: self.batch_length,
        })?;
        if size as u64 > available {
            return Err(BatchError::Truncated {
                position,
                needed: size as u64,
                available,
            });
        }
        let count_ok = match self.record_count {
            0 => true,
            n if n > 0 => i64::from(n) <= i64::from(self.last_offset_delta) + 1,
            _ => false,
        };
        if !count_ok {
            return Err(BatchError::RecordCountMismatch {
                position,
                record_count: self.record_count,
                last_offset_delta: self.last_offset_delta,
            });
        }
        Ok(size)
    }
}

/// One whole, validated v2 record batch, borrowed from a buffer.
#[derive(Debug, Clone, Copy)]
pub struct RecordBatch<'a> {
    header: BatchHeader,
    bytes: &'a [u8],
}

impl<'a> RecordBatch<'a> {
    /// This batch with `records` as its records section, written with `codec`:
    /// `batchLength`, the compression bits of `attributes` and the CRC change; every other
    /// field is kept.
    pub(crate) fn with_records(&self, codec: i16, records: &[u8]) -> Vec<u8> {
        self.with_counted_records(codec, records, self.header.record_count)
    }

    /// [`Self::with_records`] holding `count` records (some of the batch's, as compaction
    /// keeps them): `recordCount` changes too; the offsets the batch spans do not.
    pub(crate) fn with_counted_records(&self, codec: i16, records: &[u8], count: i32) -> Vec<u8> {
        let bytes = self.bytes;
        let mut out = Vec::with_capacity(HEADER_LEN + records.len());
        out.extend_from_slice(&bytes[..HEADER_LEN]);
        let length = i32::try_from(MIN_BATCH_LENGTH + records.len()).unwrap_or(i32::MAX);
        out[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
        let attributes = i16::from_be_bytes(field(bytes, ATTRIBUTES));
        let attributes = (attributes & !ATTR_COMPRESSION) | (codec & ATTR_COMPRESSION);
        out[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        out[RECORD_COUNT..RECORD_COUNT + 4].copy_from_slice(&count.to_be_bytes());
        out.extend_from_slice(records);
        let crc = crc32c::crc32c(&out[ATTRIBUTES..]);
        out[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Validates the batch at the start of `buf` — length, magic, CRC-32C, record count — and
    /// returns it. `position` is where `buf` starts in the enclosing buffer or file, used only
    /// in errors. Bytes after the batch are ignored.
    pub fn parse(buf: &'a [u8], position: u64) -> Result<Self, BatchError> {
        let available = buf.len() as u64;
        let header = BatchHeader::decode(buf).ok_or(BatchError::Truncated {
            position,
            needed: HEADER_LEN as u64,
            available,
        })?;
        let size = header.check(position, available)?;
        let bytes = &buf[..size];
        let computed = crc32c::crc32c(&bytes[ATTRIBUTES..]);
        if computed != header.crc {
            return Err(BatchError::CrcMismatch {
                position,
                stored: header.crc,
                computed,
            });
        }
        Ok(Self { header, bytes })
    }

    /// The decoded header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch, header included, exactly as received.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Size of the batch in bytes.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }
}

/// Splits concatenated record batches — a Produce request's `records` field — validating each.
///
/// Yields every batch in order; after the first error it yields that error and then nothing.
/// An empty buffer yields nothing.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    buf: &'a [u8],
    position: usize,
    failed: bool,
}

impl<'a> Batches<'a> {
    /// Iterates over the batches in `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            position: 0,
            failed: false,
        }
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<RecordBatch<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.buf.len() {
            return None;
        }
        match RecordBatch::parse(&self.buf[self.position..], self.position as u64) {
            Ok(batch) => {
                self.position += batch.size();
                Some(Ok(batch))
            }
            Err(err) => {
                self.failed = true;
                Some(Err(err))
            }
        }
    }
}

/// Builds real v2 batches for tests: records with a null key, the given values, offset deltas
/// `0..n` and timestamp deltas 0, so `maxTimestamp == baseTimestamp`.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::*;

    fn varint(out: &mut Vec<u8>, value: i64) {
        let mut v = ((value << 1) ^ (value >> 63)) as u64;
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    /// A batch of `values.len()` records with base offset 0 and the given timestamp.
    pub fn batch(timestamp: i64, values: &[&[u8]]) -> Vec<u8> {
        producer_batch((-1, -1, -1), timestamp, values)
    }

    /// Like [`batch`], from an idempotent producer: (producer id, epoch, base sequence).
    pub fn producer_batch(producer: (i64, i16, i32), timestamp: i64, values: &[&[u8]]) -> Vec<u8> {
        build(producer, 0, timestamp, values)
    }

    /// A batch of records with keys, whose value `None` is a tombstone (null value), with base
    /// offset 0 and the given timestamp.
    pub fn keyed_batch(timestamp: i64, records: &[(&[u8], Option<&[u8]>)]) -> Vec<u8> {
        let records: Vec<_> = records
            .iter()
            .map(|(key, value)| (Some(*key), *value))
            .collect();
        encode((-1, -1, -1), 0, timestamp, &records)
    }

    /// Like [`keyed_batch`], from producer (id, epoch, base sequence) in its transaction.
    pub fn keyed_transactional_batch(
        producer: (i64, i16, i32),
        timestamp: i64,
        records: &[(&[u8], Option<&[u8]>)],
    ) -> Vec<u8> {
        let records: Vec<_> = records
            .iter()
            .map(|(key, value)| (Some(*key), *value))
            .collect();
        encode(producer, ATTR_TRANSACTIONAL, timestamp, &records)
    }

    /// Like [`producer_batch`], in the producer's transaction.
    pub fn transactional_batch(
        producer: (i64, i16, i32),
        timestamp: i64,
        values: &[&[u8]],
    ) -> Vec<u8> {
        build(producer, ATTR_TRANSACTIONAL, timestamp, values)
    }

    fn build(
        (producer_id, producer_epoch, base_sequence): (i64, i16, i32),
        attributes: i16,
        timestamp: i64,
        values: &[&[u8]],
    ) -> Vec<u8> {
        let records: Vec<_> = values.iter().map(|value| (None, Some(*value))).collect();
        encode(
            (producer_id, producer_epoch, base_sequence),
            attributes,
            timestamp,
            &records,
        )
    }

    /// A record's key and value, `None` being null.
    type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

    /// A batch of these records.
    fn encode(
        (producer_id, producer_epoch, base_sequence): (i64, i16, i32),
        attributes: i16,
        timestamp: i64,
        values: &[KeyValue<'_>],
    ) -> Vec<u8> {
        let mut records = Vec::new();
        for (delta, (key, value)) in values.iter().enumerate() {
            let mut body = vec![0u8]; // record attributes
            varint(&mut body, 0); // timestamp delta
            varint(&mut body, delta as i64); // offset delta
            for field in [key, value] {
                match field {
                    Some(bytes) => {
                        varint(&mut body, bytes.len() as i64);
                        body.extend_from_slice(bytes);
                    }
                    None => varint(&mut body, -1),
                }
            }
            varint(&mut body, 0); // no headers
            varint(&mut records, body.len() as i64);
            records.extend_from_slice(&body);
        }
        let count = values.len() as i32;
        let mut out = Vec::with_capacity(HEADER_LEN + records.len());
        out.extend_from_slice(&0i64.to_be_bytes());
        out.extend_from_slice(&((MIN_BATCH_LENGTH + records.len()) as i32).to_be_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes());
        out.push(MAGIC_V2 as u8);
        out.extend_from_slice(&0u32.to_be_bytes()); // crc, below
        out.extend_from_slice(&attributes.to_be_bytes());
        out.extend_from_slice(&(count - 1).to_be_bytes());
        out.extend_from_slice(&timestamp.to_be_bytes());
        out.extend_from_slice(&timestamp.to_be_bytes());
        out.extend_from_slice(&producer_id.to_be_bytes());
        out.extend_from_slice(&producer_epoch.to_be_bytes());
        out.extend_from_slice(&base_sequence.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(&records);
        let crc = crc32c::crc32c(&out[ATTRIBUTES..]);
        out[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testing::batch;
    use super::*;

    #[test]
    fn parses_a_valid_batch() {
        let bytes = batch(1_000, &[b"a", b"bc", b"def"]);
        let parsed = RecordBatch::parse(&bytes, 0).expect("valid batch");
        let header = parsed.header();
        assert_eq!(header.record_count, 3);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.max_timestamp, 1_000);
        assert_eq!(header.compression(), 0);
        assert!(!header.is_transactional());
        assert!(!header.is_control());
        assert_eq!(parsed.size(), bytes.len());
    }

    #[test]
    fn a_rewritten_prefix_keeps_the_crc_valid() {
        let bytes = batch(1, &[b"x"]);
        let mut header = *RecordBatch::parse(&bytes, 0).expect("valid").header();
        header.base_offset = 42;
        header.partition_leader_epoch = 7;
        let mut rewritten = header.prefix().to_vec();
        rewritten.extend_from_slice(&bytes[PREFIX_LEN..]);
        let parsed = RecordBatch::parse(&rewritten, 0).expect("still valid");
        assert_eq!(parsed.header().base_offset, 42);
        assert_eq!(parsed.header().partition_leader_epoch, 7);
        assert_eq!(parsed.header().batch_length, header.batch_length);
        assert_eq!(rewritten.len(), bytes.len());
    }

    #[test]
    fn rejects_a_crc_mismatch() {
        let mut bytes = batch(1, &[b"hello"]);
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        let err = RecordBatch::parse(&bytes, 5).expect_err("corrupt");
        assert!(
            matches!(err, BatchError::CrcMismatch { position: 5, .. }),
            "{err}"
        );
    }

    #[test]
    fn rejects_other_magic() {
        let mut bytes = batch(1, &[b"x"]);
        bytes[MAGIC] = 1;
        assert_eq!(
            RecordBatch::parse(&bytes, 0).expect_err("magic 1"),
            BatchError::UnsupportedMagic {
                position: 0,
                magic: 1
            }
        );
    }

    #[test]
    fn rejects_truncation_and_bad_lengths() {
        let bytes = batch(1, &[b"abc"]);
        let err = RecordBatch::parse(&bytes[..bytes.len() - 1], 0).expect_err("short");
        assert!(matches!(err, BatchError::Truncated { .. }), "{err}");
        let err = RecordBatch::parse(&bytes[..20], 0).expect_err("short header");
        assert!(
            matches!(err, BatchError::Truncated { needed: 61, .. }),
            "{err}"
        );
        let mut bad = bytes.clone();
        bad[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&10i32.to_be_bytes());
        let err = RecordBatch::parse(&bad, 0).expect_err("tiny length");
        assert!(
            matches!(err, BatchError::InvalidLength { length: 10, .. }),
            "{err}"
        );
    }

    #[test]
    fn rejects_a_record_count_mismatch() {
        let mut bytes = batch(1, &[b"a", b"b"]);
        bytes[RECORD_COUNT..RECORD_COUNT + 4].copy_from_slice(&5i32.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[ATTRIBUTES..]);
        bytes[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        let err = RecordBatch::parse(&bytes, 0).expect_err("count");
        assert!(
            matches!(
                err,
                BatchError::RecordCountMismatch {
                    record_count: 5,
                    last_offset_delta: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn splits_concatenated_batches_and_stops_at_the_first_error() {
        let a = batch(1, &[b"a"]);
        let b = batch(2, &[b"b", b"c"]);
        let mut buf = [a.clone(), b.clone()].concat();
        let sizes: Vec<usize> = Batches::new(&buf)
            .map(|batch| batch.map(|batch| batch.size()))
            .collect::<Result<_, _>>()
            .expect("both valid");
        assert_eq!(sizes, vec![a.len(), b.len()]);

        buf.extend_from_slice(&[0u8; 7]);
        let results: Vec<_> = Batches::new(&buf).collect();
        assert_eq!(results.len(), 3);
        assert!(matches!(
            results[2],
            Err(BatchError::Truncated { position, .. }) if position == (a.len() + b.len()) as u64
        ));
        assert_eq!(Batches::new(&[]).count(), 0);
    }
}
