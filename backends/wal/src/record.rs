//! One log record and its frame, the unit both the segment files and the replication stream
//! carry.
//!
//! Frame: `len: u32 LE | crc32c: u32 LE | format_version: u8 | epoch: u64 LE | index: u64 LE |
//! payload`, where `len` counts everything after the CRC and the CRC covers the same bytes.
//! The payload is `MetadataCommand::to_bytes()`, or empty for an *epoch marker*: the record a
//! new primary writes first in its epoch, which applies no command (see `replication/takeover.rs`).

use serde::{Deserialize, Serialize};
use switchyard_backend_api::{CodecError, LogIndex, MetadataCommand, codec};

/// The frame layout version this build writes and reads.
pub(crate) const RECORD_FORMAT: u8 = 1;

/// Bytes before the body: length and CRC.
const PREFIX: usize = 8;

/// Body bytes before the payload: version, epoch, index.
const FIXED_BODY: usize = 1 + 8 + 8;

/// Largest body a frame may claim; a corrupt length cannot make recovery read further.
const MAX_BODY: usize = FIXED_BODY + codec::MAX_DECODE_BYTES;

/// A position in the log: the index of a record and the epoch of the primary that wrote it.
/// Ordered by epoch first, then index — the "more up to date" order used at promotion.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub(crate) struct Position {
    /// Epoch of the record.
    pub(crate) epoch: u64,
    /// Index of the record (0: before the first record).
    pub(crate) index: LogIndex,
}

/// One log record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Epoch of the primary that wrote it.
    pub(crate) epoch: u64,
    /// Log index.
    pub(crate) index: LogIndex,
    /// Encoded command; empty for an epoch marker.
    pub(crate) payload: Vec<u8>,
}

impl Record {
    /// A record carrying `command`.
    pub(crate) fn command(
        epoch: u64,
        index: LogIndex,
        command: &MetadataCommand,
    ) -> Result<Self, CodecError> {
        Ok(Self {
            epoch,
            index,
            payload: command.to_bytes()?,
        })
    }

    /// The first record of a primary's epoch; it carries no command.
    pub(crate) fn marker(epoch: u64, index: LogIndex) -> Self {
        Self {
            epoch,
            index,
            payload: Vec::new(),
        }
    }

    /// Its position.
    pub(crate) fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            index: self.index,
        }
    }

    /// The command, or `None` for an epoch marker.
    pub(crate) fn decode_command(&self) -> Result<Option<MetadataCommand>, CodecError> {
        if self.payload.is_empty() {
            return Ok(None);
        }
        MetadataCommand::from_bytes(&self.payload).map(Some)
    }

    /// Bytes this record takes in a segment.
    pub(crate) fn frame_len(&self) -> usize {
        PREFIX + FIXED_BODY + self.payload.len()
    }

    /// Append the frame to `out`.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let body_len = FIXED_BODY + self.payload.len();
        let start = out.len();
        // `len` is bounded by MAX_BODY when decoding; commands are far below u32::MAX.
        out.extend_from_slice(&u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.push(RECORD_FORMAT);
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.payload);
        let crc = crc32c::crc32c(&out[start + PREFIX..]);
        out[start + 4..start + PREFIX].copy_from_slice(&crc.to_le_bytes());
    }
}

/// What the bytes at one offset hold.
#[derive(Debug)]
pub(crate) enum Frame {
    /// A whole, valid record using `len` bytes.
    Record {
        /// The record.
        record: Record,
        /// Bytes consumed.
        len: usize,
    },
    /// The frame runs past the end of the input (a write cut short, or a corrupt length).
    Incomplete {
        /// Why.
        reason: String,
    },
    /// The frame is whole but wrong (CRC mismatch, impossible length, unknown version).
    Invalid {
        /// Why.
        reason: String,
    },
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// Decode the frame at the start of `bytes`.
pub(crate) fn decode_frame(bytes: &[u8]) -> Frame {
    if bytes.len() < PREFIX {
        return Frame::Incomplete {
            reason: format!("{} bytes left, a frame header needs {PREFIX}", bytes.len()),
        };
    }
    let body_len = le_u32(bytes, 0) as usize;
    if !(FIXED_BODY..=MAX_BODY).contains(&body_len) {
        return Frame::Invalid {
            reason: format!("impossible record length {body_len}"),
        };
    }
    let Some(body) = bytes.get(PREFIX..PREFIX + body_len) else {
        return Frame::Incomplete {
            reason: format!(
                "record of {body_len} bytes but only {} follow",
                bytes.len() - PREFIX
            ),
        };
    };
    let stored = le_u32(bytes, 4);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Frame::Invalid {
            reason: format!("crc32c mismatch (stored {stored:#010x}, computed {computed:#010x})"),
        };
    }
    if body[0] != RECORD_FORMAT {
        return Frame::Invalid {
            reason: format!(
                "record format {} (this build reads {RECORD_FORMAT})",
                body[0]
            ),
        };
    }
    Frame::Record {
        record: Record {
            epoch: le_u64(body, 1),
            index: le_u64(body, 9),
            payload: body[FIXED_BODY..].to_vec(),
        },
        len: PREFIX + body_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_backend_api::ClusterId;

    fn sample() -> Result<Record, CodecError> {
        Record::command(
            3,
            42,
            &MetadataCommand::InitCluster {
                cluster_id: ClusterId("c".into()),
            },
        )
    }

    #[test]
    fn frame_round_trips() -> Result<(), CodecError> {
        let record = sample()?;
        let mut bytes = Vec::new();
        record.encode_into(&mut bytes);
        assert_eq!(bytes.len(), record.frame_len());
        match decode_frame(&bytes) {
            Frame::Record { record: back, len } => {
                assert_eq!(back, record);
                assert_eq!(len, bytes.len());
            }
            other => panic!("{other:?}"),
        }
        Ok(())
    }

    #[test]
    fn cut_and_flipped_frames_are_detected() -> Result<(), CodecError> {
        let mut bytes = Vec::new();
        sample()?.encode_into(&mut bytes);
        assert!(matches!(
            decode_frame(&bytes[..bytes.len() - 1]),
            Frame::Incomplete { .. }
        ));
        assert!(matches!(
            decode_frame(&bytes[..3]),
            Frame::Incomplete { .. }
        ));
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        assert!(matches!(decode_frame(&bytes), Frame::Invalid { .. }));
        assert!(matches!(decode_frame(&[0; 16]), Frame::Invalid { .. }));
        Ok(())
    }
}
