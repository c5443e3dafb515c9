//! The records inside a produced batch, checked as Kafka's `LogValidator` checks them before an
//! append: the batch's record count is the number of records its bytes hold, every record's
//! length, varints and key, value and header lengths agree with its bytes, offset deltas run
//! 0, 1, 2, …, and nothing follows the last record. Compressed batches are decompressed to be
//! checked — as a stream, never held whole, and at most [`MAX_DECOMPRESSED_BYTES`] of them, so a
//! small batch that inflates without end costs neither memory nor unbounded time.
//!
//! [`recompress`] rewrites a produced batch in a topic's `compression.type` ([`Codec`]), as
//! Kafka's `LogValidator` does when the producer used another codec: the records section of a
//! batch is the same bytes in every codec, so only it is decompressed and compressed again.
//!
//! Only produced batches are checked: a follower appends its leader's batches, which the leader
//! checked, byte for byte.

use std::io::{self, BufRead, BufReader, Read};

use crate::batch::{HEADER_LEN, RecordBatch};

/// The most bytes the records of one batch may decompress to.
pub const MAX_DECOMPRESSED_BYTES: u64 = 64 << 20;

/// Why a batch's records are invalid: Kafka's `INVALID_RECORD`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A record's fields do not parse or disagree with its length.
    #[error("record {index}: {reason}")]
    Malformed {
        /// The record's position in the batch.
        index: i32,
        /// What is wrong.
        reason: &'static str,
    },
    /// A record's offset delta is not its position in the batch.
    #[error("record {index} has offset delta {delta}")]
    OffsetDelta {
        /// The record's position in the batch.
        index: i32,
        /// Its offset delta.
        delta: i32,
    },
    /// Bytes follow the last record the batch counts.
    #[error("bytes follow the batch's {count} records")]
    TrailingBytes {
        /// The batch's record count.
        count: i32,
    },
    /// The records decompress to more than [`MAX_DECOMPRESSED_BYTES`].
    #[error("records decompress to more than {max} bytes")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// The compressed records do not decompress.
    #[error("records do not decompress: {0}")]
    Decompress(String),
    /// The attributes name a codec Kafka does not define.
    #[error("unknown compression codec {0}")]
    UnknownCodec(i16),
    /// A producer sent a control batch: only partition leaders write transaction markers.
    #[error("clients may not write control batches")]
    ControlBatch,
    /// A produced batch's `lastOffsetDelta` is not its record count less one (only a
    /// compacted batch spans more offsets than it has records).
    #[error("{count} records but lastOffsetDelta {last_offset_delta}")]
    OffsetSpan {
        /// The batch's record count.
        count: i32,
        /// Its `lastOffsetDelta`.
        last_offset_delta: i32,
    },
    /// A record without a key, on a compacted topic.
    #[error("record {index} has no key, which a compacted topic requires")]
    NoKey {
        /// The record's position in the batch.
        index: i32,
    },
}

/// Check the records of a produced `batch` (already checked for length, magic and CRC). A
/// control batch is refused: only partition leaders write transaction markers.
pub fn validate(batch: &RecordBatch<'_>) -> Result<(), RecordError> {
    let header = batch.header();
    if header.is_control() {
        return Err(RecordError::ControlBatch);
    }
    if i64::from(header.record_count) != i64::from(header.last_offset_delta) + 1 {
        return Err(RecordError::OffsetSpan {
            count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    validate_within(batch, MAX_DECOMPRESSED_BYTES)
}

/// Check that every record of a produced `batch` (already [`validate`]d) has a key, as a
/// compacted topic requires (Kafka refuses keyless records there with `INVALID_RECORD`).
pub fn require_keys(batch: &RecordBatch<'_>) -> Result<(), RecordError> {
    let plain = plain_records(batch)?;
    for (index, record) in (0..).zip(split(&plain)?) {
        if record.key.is_none() {
            return Err(RecordError::NoKey { index });
        }
    }
    Ok(())
}

/// The records section of `batch`, decompressed (at most [`MAX_DECOMPRESSED_BYTES`]).
pub(crate) fn plain_records(batch: &RecordBatch<'_>) -> Result<Vec<u8>, RecordError> {
    let mut plain = Vec::new();
    reader(batch, MAX_DECOMPRESSED_BYTES)?
        .take(MAX_DECOMPRESSED_BYTES + 1)
        .read_to_end(&mut plain)
        .map_err(decompress)?;
    if plain.len() as u64 > MAX_DECOMPRESSED_BYTES {
        return Err(RecordError::TooLarge {
            max: MAX_DECOMPRESSED_BYTES,
        });
    }
    Ok(plain)
}

/// One record of a batch, as compaction sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordView<'a> {
    /// Its offset less the batch's base offset.
    pub(crate) offset_delta: i64,
    /// Its key; `None` when null.
    pub(crate) key: Option<&'a [u8]>,
    /// Its value; `None` when null (a tombstone, on a compacted topic).
    pub(crate) value: Option<&'a [u8]>,
    /// The whole record, its length prefix included: what a batch keeping it holds.
    pub(crate) bytes: &'a [u8],
}

/// The records of an uncompressed records section (see [`plain_records`]).
pub(crate) fn split(plain: &[u8]) -> Result<Vec<RecordView<'_>>, RecordError> {
    let mut records = Vec::new();
    let mut rest = plain;
    let mut index = 0;
    while !rest.is_empty() {
        let malformed = |reason| RecordError::Malformed { index, reason };
        let start = rest;
        let length = slice_varint(&mut rest)
            .and_then(|l| usize::try_from(l).ok())
            .filter(|l| *l <= rest.len())
            .ok_or_else(|| malformed("invalid record length"))?;
        let prefix = start.len() - rest.len();
        let bytes = &start[..prefix + length];
        let mut body = &rest[..length];
        rest = &rest[length..];
        body = body.get(1..).ok_or_else(|| malformed("empty record"))?; // attributes
        slice_varint(&mut body).ok_or_else(|| malformed("invalid timestamp delta"))?;
        let offset_delta =
            slice_varint(&mut body).ok_or_else(|| malformed("invalid offset delta"))?;
        let key = slice_bytes(&mut body).ok_or_else(|| malformed("invalid key length"))?;
        let value = slice_bytes(&mut body).ok_or_else(|| malformed("invalid value length"))?;
        records.push(RecordView {
            offset_delta,
            key,
            value,
            bytes,
        });
        index += 1;
    }
    Ok(records)
}

/// A zigzag varint of at most ten bytes from the front of `at`.
pub(crate) fn slice_varint(at: &mut &[u8]) -> Option<i64> {
    let mut value: u64 = 0;
    for (i, byte) in at.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *at = &at[i + 1..];
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

/// A length-prefixed byte string (`-1`: null) from the front of `at`.
fn slice_bytes<'a>(at: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    let len = slice_varint(at)?;
    if len == -1 {
        return Some(None);
    }
    let len = usize::try_from(len).ok().filter(|l| *l <= at.len())?;
    let (bytes, rest) = at.split_at(len);
    *at = rest;
    Some(Some(bytes))
}

/// `records` (whole records, as [`RecordView::bytes`]) compressed with the codec whose
/// attribute bits are `codec`.
pub(crate) fn compress_with(records: &[u8], codec: i16) -> Result<Vec<u8>, RecordError> {
    let codec = match codec {
        NONE => return Ok(records.to_vec()),
        GZIP => Codec::Gzip,
        SNAPPY => Codec::Snappy,
        LZ4 => Codec::Lz4,
        ZSTD => Codec::Zstd,
        other => return Err(RecordError::UnknownCodec(other)),
    };
    compress(records, codec).map_err(decompress)
}

/// [`validate`], with `max` decompressed bytes allowed.
fn validate_within(batch: &RecordBatch<'_>, max: u64) -> Result<(), RecordError> {
    walk(reader(batch, max)?, batch.header().record_count, max)
}

/// The batch's records section, decompressed as it is read.
fn reader<'a>(batch: &RecordBatch<'a>, max: u64) -> Result<Box<dyn BufRead + 'a>, RecordError> {
    let records = batch.bytes().get(HEADER_LEN..).unwrap_or_default();
    Ok(match batch.header().compression() {
        NONE => Box::new(records),
        GZIP => Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(records))),
        SNAPPY => Box::new(BufReader::new(snappy(records, max)?)),
        LZ4 => Box::new(BufReader::new(
            lz4::Decoder::new(records).map_err(decompress)?,
        )),
        ZSTD => Box::new(BufReader::new(
            zstd::stream::read::Decoder::with_buffer(records).map_err(decompress)?,
        )),
        other => return Err(RecordError::UnknownCodec(other)),
    })
}

/// The codecs of a batch's `attributes`.
const NONE: i16 = 0;
const GZIP: i16 = 1;
const SNAPPY: i16 = 2;
const LZ4: i16 = 3;
const ZSTD: i16 = 4;

/// The block size of Kafka's (xerial) snappy framing.
const SNAPPY_BLOCK: usize = 32 * 1024;
/// The xerial framing's header: magic, version 1, compatible version 1.
const SNAPPY_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

/// `batch` (already checked by [`validate`]) with its records written with the topic's
/// `compression.type` when the producer used another codec, as Kafka's `LogValidator`
/// recompresses: the records are decompressed (at most [`MAX_DECOMPRESSED_BYTES`]) and
/// compressed again, each at Kafka's default level; every header field but the length, the
/// codec and the CRC is kept. `None` when the batch already uses `codec`, or is a control
/// batch (those are never recompressed).
pub fn recompress(batch: &RecordBatch<'_>, codec: Codec) -> Result<Option<Vec<u8>>, RecordError> {
    let target = codec.attribute();
    if batch.header().compression() == target || batch.header().is_control() {
        return Ok(None);
    }
    let plain = plain_records(batch)?;
    let compressed = compress(&plain, codec).map_err(decompress)?;
    Ok(Some(batch.with_records(target, &compressed)))
}

fn compress(plain: &[u8], codec: Codec) -> io::Result<Vec<u8>> {
    use io::Write;
    Ok(match codec {
        Codec::None => plain.to_vec(),
        Codec::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            encoder.write_all(plain)?;
            encoder.finish()?
        }
        Codec::Snappy => {
            let mut out = SNAPPY_HEADER.to_vec();
            let mut encoder = snap::raw::Encoder::new();
            for block in plain.chunks(SNAPPY_BLOCK) {
                let compressed = encoder.compress_vec(block).map_err(io::Error::other)?;
                let length = u32::try_from(compressed.len()).map_err(io::Error::other)?;
                out.extend_from_slice(&length.to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            out
        }
        Codec::Lz4 => {
            let mut encoder = lz4::EncoderBuilder::new()
                .block_mode(lz4::BlockMode::Independent)
                .build(Vec::new())?;
            encoder.write_all(plain)?;
            let (out, finished) = encoder.finish();
            finished?;
            out
        }
        Codec::Zstd => zstd::stream::encode_all(plain, 3)?,
    })
}

/// A codec a topic's `compression.type` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// `uncompressed`.
    None,
    /// `gzip`.
    Gzip,
    /// `snappy`.
    Snappy,
    /// `lz4`.
    Lz4,
    /// `zstd`.
    Zstd,
}

impl Codec {
    /// The codec's bits in a batch's `attributes`.
    pub fn attribute(self) -> i16 {
        match self {
            Self::None => NONE,
            Self::Gzip => GZIP,
            Self::Snappy => SNAPPY,
            Self::Lz4 => LZ4,
            Self::Zstd => ZSTD,
        }
    }
}

fn decompress(error: io::Error) -> RecordError {
    RecordError::Decompress(error.to_string())
}

/// The xerial framing Kafka's snappy codec writes: a 16-byte header, then blocks of a 4-byte
/// big-endian length and raw snappy bytes. Without the header, one raw snappy block (as the
/// Java client also accepts). Each block's declared size is checked before it is inflated.
fn snappy(compressed: &[u8], max: u64) -> Result<io::Cursor<Vec<u8>>, RecordError> {
    const XERIAL: &[u8] = b"\x82SNAPPY\x00";
    let blocks: Vec<&[u8]> = if compressed.starts_with(XERIAL) {
        let mut rest = compressed
            .get(16..)
            .ok_or(RecordError::Decompress("snappy header truncated".into()))?;
        let mut blocks = Vec::new();
        while !rest.is_empty() {
            let (length, tail) = rest
                .split_first_chunk::<4>()
                .ok_or(RecordError::Decompress(
                    "snappy block length truncated".into(),
                ))?;
            let length = u32::from_be_bytes(*length) as usize;
            let block = tail
                .get(..length)
                .ok_or(RecordError::Decompress("snappy block truncated".into()))?;
            blocks.push(block);
            rest = &tail[length..];
        }
        blocks
    } else {
        vec![compressed]
    };
    let mut out = Vec::new();
    let mut decoder = snap::raw::Decoder::new();
    for block in blocks {
        let size =
            snap::raw::decompress_len(block).map_err(|e| RecordError::Decompress(e.to_string()))?;
        if (out.len() + size) as u64 > max {
            return Err(RecordError::TooLarge { max });
        }
        let start = out.len();
        out.resize(start + size, 0);
        decoder
            .decompress(block, &mut out[start..])
            .map_err(|e| RecordError::Decompress(e.to_string()))?;
    }
    Ok(io::Cursor::new(out))
}

/// A reader that counts what it has read and refuses to go past `max` bytes.
struct Counted<R> {
    inner: R,
    read: u64,
    max: u64,
}

/// Why a read in [`walk`] stopped.
enum Stop {
    /// The bytes ran out.
    End,
    /// More than the limit.
    TooLarge,
    /// The decoder failed.
    Io(io::Error),
}

impl<R: BufRead> Counted<R> {
    fn byte(&mut self) -> Result<u8, Stop> {
        let mut one = [0u8; 1];
        match self.inner.read(&mut one) {
            Ok(1) => {
                self.count(1)?;
                Ok(one[0])
            }
            Ok(_) => Err(Stop::End),
            Err(e) => Err(Stop::Io(e)),
        }
    }

    fn count(&mut self, n: u64) -> Result<(), Stop> {
        self.read += n;
        if self.read > self.max {
            return Err(Stop::TooLarge);
        }
        Ok(())
    }

    /// A zigzag varint of at most `max_bytes` bytes.
    fn varint(&mut self, max_bytes: u32) -> Result<Option<i64>, Stop> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(Some((value >> 1) as i64 ^ -((value & 1) as i64)));
            }
        }
        Ok(None)
    }

    /// Skip `n` bytes; false if fewer were left.
    fn skip(&mut self, n: u64) -> Result<bool, Stop> {
        let skipped =
            io::copy(&mut (&mut self.inner).take(n), &mut io::sink()).map_err(Stop::Io)?;
        self.count(skipped)?;
        Ok(skipped == n)
    }
}

/// Parse `count` records from `records` and check nothing follows them.
fn walk<R: BufRead>(records: R, count: i32, max: u64) -> Result<(), RecordError> {
    let mut reader = Counted {
        inner: records,
        read: 0,
        max,
    };
    for index in 0..count {
        let malformed = |reason| RecordError::Malformed { index, reason };
        let stop = |stop: Stop| match stop {
            Stop::End => malformed("the batch ends inside the record"),
            Stop::TooLarge => RecordError::TooLarge { max },
            Stop::Io(e) => decompress(e),
        };
        let length = reader
            .varint(5)
            .map_err(stop)?
            .filter(|l| *l >= 0)
            .ok_or_else(|| malformed("invalid record length"))?;
        let start = reader.read;
        reader.byte().map_err(stop)?; // attributes
        reader
            .varint(10)
            .map_err(stop)?
            .ok_or_else(|| malformed("invalid timestamp delta"))?;
        let delta = reader
            .varint(5)
            .map_err(stop)?
            .ok_or_else(|| malformed("invalid offset delta"))?;
        if delta != i64::from(index) {
            return Err(RecordError::OffsetDelta {
                index,
                delta: i32::try_from(delta).unwrap_or(i32::MAX),
            });
        }
        // Key and value: -1 is null.
        for what in ["invalid key length", "invalid value length"] {
            let len = reader
                .varint(5)
                .map_err(stop)?
                .filter(|l| *l >= -1)
                .ok_or_else(|| malformed(what))?;
            if len > 0 && !reader.skip(len as u64).map_err(stop)? {
                return Err(malformed("the batch ends inside the record"));
            }
        }
        let headers = reader
            .varint(5)
            .map_err(stop)?
            .filter(|h| *h >= 0)
            .ok_or_else(|| malformed("invalid header count"))?;
        for _ in 0..headers {
            // A header key is never null; a header value may be.
            for (what, least) in [
                ("invalid header key length", 0),
                ("invalid header value length", -1),
            ] {
                let len = reader
                    .varint(5)
                    .map_err(stop)?
                    .filter(|l| *l >= least)
                    .ok_or_else(|| malformed(what))?;
                if len > 0 && !reader.skip(len as u64).map_err(stop)? {
                    return Err(malformed("the batch ends inside the record"));
                }
            }
        }
        if reader.read - start != length as u64 {
            return Err(malformed("the record's length does not match its fields"));
        }
    }
    match reader.byte() {
        Err(Stop::End) => Ok(()),
        Ok(_) => Err(RecordError::TrailingBytes { count }),
        Err(Stop::TooLarge) => Err(RecordError::TooLarge { max }),
        Err(Stop::Io(e)) => Err(decompress(e)),
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    use super::*;
    use crate::batch::RecordBatch;

    fn encoded(compression: Compression, values: &[&[u8]]) -> Vec<u8> {
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
                offset: i as i64,
                // The encoder puts records whose offset minus sequence agree in one batch.
                sequence: i as i32,
                timestamp: 1_000 + i as i64,
                key: Some(Bytes::from_static(b"key")),
                value: Some(Bytes::copy_from_slice(value)),
                headers: [(
                    kafka_protocol::protocol::StrBytes::from_static_str("h"),
                    Some(Bytes::from_static(b"v")),
                )]
                .into_iter()
                .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encodes");
        buf.to_vec()
    }

    /// Set the record count (and last offset delta) and fix the CRC, as an attacker would.
    fn with_count(mut bytes: Vec<u8>, count: i32) -> Vec<u8> {
        bytes[23..27].copy_from_slice(&(count - 1).to_be_bytes());
        bytes[57..61].copy_from_slice(&count.to_be_bytes());
        let length = i32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let end = 12 + usize::try_from(length).expect("positive");
        let crc = crc32c::crc32c(&bytes[21..end]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    fn check(bytes: &[u8]) -> Result<(), RecordError> {
        validate(
            &RecordBatch::parse(bytes, 0)
                .unwrap_or_else(|e| panic!("the batch header is invalid: {e}")),
        )
    }

    #[test]
    fn valid_batches_pass_in_every_codec() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bytes = encoded(compression, &[b"a", b"bb", b""]);
            assert_eq!(check(&bytes), Ok(()), "{compression:?}");
        }
    }

    /// Every codec to every codec: Kafka's decoder reads the same records back, every header
    /// field but length, codec and CRC is kept, and the result passes validation.
    #[test]
    fn recompression_keeps_the_records_and_the_header() {
        use kafka_protocol::records::RecordBatchDecoder;
        let codecs = [
            (Compression::None, Codec::None),
            (Compression::Gzip, Codec::Gzip),
            (Compression::Snappy, Codec::Snappy),
            (Compression::Lz4, Codec::Lz4),
            (Compression::Zstd, Codec::Zstd),
        ];
        let big = vec![b'z'; 100_000]; // more than one snappy block
        let values: [&[u8]; 4] = [b"a", b"bb", b"", &big];
        let decoded = |bytes: &[u8]| {
            RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(bytes))
                .expect("decodes")
                .records
        };
        for (from, _) in codecs {
            let original = encoded(from, &values);
            let batch = RecordBatch::parse(&original, 0).expect("valid");
            for (_, to) in codecs {
                let Some(rewritten) = recompress(&batch, to).expect("recompresses") else {
                    assert_eq!(batch.header().compression(), to.attribute());
                    continue;
                };
                let parsed = RecordBatch::parse(&rewritten, 0).expect("valid batch");
                assert_eq!(
                    parsed.header().compression(),
                    to.attribute(),
                    "{from:?} -> {to:?}"
                );
                assert_eq!(check(&rewritten), Ok(()), "{from:?} -> {to:?}");
                assert_eq!(
                    decoded(&rewritten),
                    decoded(&original),
                    "{from:?} -> {to:?}"
                );
                let (old, new) = (batch.header(), parsed.header());
                assert_eq!(
                    (
                        old.base_offset,
                        old.partition_leader_epoch,
                        old.last_offset_delta
                    ),
                    (
                        new.base_offset,
                        new.partition_leader_epoch,
                        new.last_offset_delta
                    )
                );
                assert_eq!(
                    (old.base_timestamp, old.max_timestamp, old.producer_id),
                    (new.base_timestamp, new.max_timestamp, new.producer_id)
                );
                assert_eq!(
                    (old.producer_epoch, old.base_sequence, old.record_count),
                    (new.producer_epoch, new.base_sequence, new.record_count)
                );
                assert_eq!(old.attributes & !0x07, new.attributes & !0x07);
            }
        }
    }

    /// A valid CRC over a batch claiming 2^31 - 1 records in a few bytes used to move the log
    /// end by 2^31.
    #[test]
    fn a_record_count_the_bytes_do_not_hold_is_refused() {
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let bytes = with_count(encoded(compression, &[b"a"]), i32::MAX);
            assert!(
                matches!(check(&bytes), Err(RecordError::Malformed { index: 1, .. })),
                "{compression:?}: {:?}",
                check(&bytes)
            );
        }
        let bytes = with_count(encoded(Compression::None, &[b"a", b"b"]), 1);
        assert_eq!(check(&bytes), Err(RecordError::TrailingBytes { count: 1 }));
    }

    #[test]
    fn junk_records_with_a_valid_crc_are_refused() {
        let mut bytes = encoded(Compression::None, &[b"a"]);
        let end = bytes.len();
        // The value length varint of the only record, made to claim more than is there.
        for b in &mut bytes[HEADER_LEN + 1..end] {
            *b = 0x7f;
        }
        let bytes = with_count(bytes, 1);
        assert!(
            matches!(
                check(&bytes),
                Err(RecordError::Malformed { .. }) | Err(RecordError::OffsetDelta { .. })
            ),
            "{:?}",
            check(&bytes)
        );
    }

    #[test]
    fn offset_deltas_must_run_in_order() {
        let mut bytes = encoded(Compression::None, &[b"a", b"b"]);
        // Record 0: length varint (1 byte), attributes, timestamp delta 0 (1 byte), then the
        // offset delta: make it 1 (zigzag 2).
        bytes[HEADER_LEN + 3] = 2;
        let bytes = with_count(bytes, 2);
        assert_eq!(
            check(&bytes),
            Err(RecordError::OffsetDelta { index: 0, delta: 1 })
        );
    }

    fn zigzag(out: &mut Vec<u8>, value: i64) {
        let mut v = ((value << 1) ^ (value >> 63)) as u64;
        while v >= 0x80 {
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// One record whose value is `value_len` zeros, gzipped into a batch.
    fn gzip_bomb(value_len: usize) -> Vec<u8> {
        use std::io::Write as _;
        let mut body = vec![0u8]; // attributes
        zigzag(&mut body, 0); // timestamp delta
        zigzag(&mut body, 0); // offset delta
        zigzag(&mut body, -1); // null key
        zigzag(&mut body, value_len as i64);
        body.resize(body.len() + value_len, 0);
        zigzag(&mut body, 0); // no headers
        let mut record = Vec::new();
        zigzag(&mut record, body.len() as i64);
        record.extend_from_slice(&body);
        let mut compressed = Vec::new();
        let mut encoder =
            flate2::write::GzEncoder::new(&mut compressed, flate2::Compression::fast());
        encoder.write_all(&record).expect("compresses");
        encoder.finish().expect("compresses");
        let mut batch = encoded(Compression::Gzip, &[b"a"]);
        batch.truncate(HEADER_LEN);
        batch.extend_from_slice(&compressed);
        let length = i32::try_from(batch.len() - 12).expect("fits");
        batch[8..12].copy_from_slice(&length.to_be_bytes());
        with_count(batch, 1)
    }

    #[test]
    fn a_compressed_bomb_stops_at_the_limit() {
        let limit = 1 << 20;
        let fits = gzip_bomb(1 << 19);
        let parsed = RecordBatch::parse(&fits, 0).expect("valid header");
        assert_eq!(validate_within(&parsed, limit), Ok(()));
        let bomb = gzip_bomb(4 << 20);
        assert!(bomb.len() < 64 << 10, "{} compressed bytes", bomb.len());
        let parsed = RecordBatch::parse(&bomb, 0).expect("valid header");
        assert_eq!(
            validate_within(&parsed, limit),
            Err(RecordError::TooLarge { max: limit })
        );
    }
}
