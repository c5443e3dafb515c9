//! The producer-state snapshot of a partition (`producer-snapshot` in its directory): the
//! idempotent producers, the open transactions and the aborted-transaction index as of one
//! offset of the log, so that opening the partition reads only the batches after that offset
//! instead of the whole log (Kafka's `.snapshot` files play this part, with the aborted
//! transactions in `.txnindex` files per segment).
//!
//! The replica writes it every `replica.high.watermark.checkpoint.interval.ms` when the log
//! moved, and on a clean shutdown, durably (temp file, rename, directory fsync). It describes
//! the log below its offset, so it is removed (durably) before a follower cuts its log, and
//! one found above the log end on open (a tail the crash recovery cut off) is removed too:
//! the log may grow past that offset again with other batches.
//!
//! Format (big-endian): `SYPS`, version `u16` (2), CRC-32C `u32` of the rest, then the offset
//! `i64`; producers `u32` count × (id `i64`, epoch `i16`, last timestamp `i64`, last marker's
//! coordinator epoch (`u8` 0 when none, else 1 and the `i32`), batches `u8` count × (first
//! sequence `i32`, last sequence `i32`, base offset `i64`)); open transactions
//! `u32` count × (producer id `i64`, first offset `i64`); aborted transactions `u32` count ×
//! (producer id `i64`, first offset `i64`, marker offset `i64`). A file that does not parse
//! whole, fails its checksum or has another version (version 1 had no coordinator epochs) is
//! ignored with a warning: the state is then rebuilt from the whole log.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;

use bytes::{Buf, BufMut};
use switchyard_log::{LogError, checkpoint};

use super::{Appended, Producer, RETAINED_BATCHES};
use crate::txn_index::{AbortedTxn, TxnIndex};

/// The file's name in the partition directory.
pub(super) const FILE: &str = "producer-snapshot";
const MAGIC: &[u8; 4] = b"SYPS";
const VERSION: u16 = 2;

/// Producer and transaction state as of `offset`: what reading the log below it yields.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Snapshot {
    pub(super) offset: i64,
    pub(super) producers: HashMap<i64, Producer>,
    pub(super) txns: TxnIndex,
}

/// The bytes of the snapshot of `producers` and `txns` at `offset`.
pub(super) fn encode(offset: i64, producers: &HashMap<i64, Producer>, txns: &TxnIndex) -> Vec<u8> {
    let mut body = Vec::new();
    body.put_i64(offset);
    let mut ids: Vec<_> = producers.keys().copied().collect();
    ids.sort_unstable();
    body.put_u32(count(ids.len()));
    for id in ids {
        let producer = &producers[&id];
        body.put_i64(id);
        body.put_i16(producer.epoch);
        body.put_i64(producer.last_timestamp);
        match producer.coordinator_epoch {
            None => body.put_u8(0),
            Some(epoch) => {
                body.put_u8(1);
                body.put_i32(epoch);
            }
        }
        // At most RETAINED_BATCHES, which fits.
        body.put_u8(u8::try_from(producer.recent.len()).unwrap_or(u8::MAX));
        for batch in producer.recent.iter().take(usize::from(u8::MAX)) {
            body.put_i32(batch.first_sequence);
            body.put_i32(batch.last_sequence);
            body.put_i64(batch.base_offset);
        }
    }
    let (open, aborted) = txns.parts();
    body.put_u32(count(open.len()));
    for (producer_id, first_offset) in open {
        body.put_i64(*producer_id);
        body.put_i64(*first_offset);
    }
    body.put_u32(count(aborted.len()));
    for txn in aborted {
        body.put_i64(txn.producer_id);
        body.put_i64(txn.first_offset);
        body.put_i64(txn.last_offset);
    }
    let mut out = Vec::with_capacity(body.len() + 10);
    out.extend_from_slice(MAGIC);
    out.put_u16(VERSION);
    out.put_u32(crc32c::crc32c(&body));
    out.extend_from_slice(&body);
    out
}

fn count(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Why a snapshot file was not used.
#[derive(Debug, thiserror::Error)]
pub(super) enum DecodeError {
    #[error("not a producer snapshot (bad magic or version)")]
    Header,
    #[error("checksum mismatch")]
    Checksum,
    #[error("truncated or malformed")]
    Malformed,
}

/// The snapshot in `bytes`.
pub(super) fn decode(bytes: &[u8]) -> Result<Snapshot, DecodeError> {
    let mut buf = bytes;
    if buf.len() < 10 || &buf[..4] != MAGIC {
        return Err(DecodeError::Header);
    }
    buf.advance(4);
    if buf.get_u16() != VERSION {
        return Err(DecodeError::Header);
    }
    let crc = buf.get_u32();
    if crc32c::crc32c(buf) != crc {
        return Err(DecodeError::Checksum);
    }
    let snapshot = read_body(&mut buf).ok_or(DecodeError::Malformed)?;
    if buf.has_remaining() {
        return Err(DecodeError::Malformed);
    }
    Ok(snapshot)
}

fn read_body(buf: &mut &[u8]) -> Option<Snapshot> {
    let offset = buf.try_get_i64().ok()?;
    let mut producers = HashMap::new();
    for _ in 0..buf.try_get_u32().ok()? {
        let id = buf.try_get_i64().ok()?;
        let epoch = buf.try_get_i16().ok()?;
        let last_timestamp = buf.try_get_i64().ok()?;
        let coordinator_epoch = match buf.try_get_u8().ok()? {
            0 => None,
            1 => Some(buf.try_get_i32().ok()?),
            _ => return None,
        };
        let batches = buf.try_get_u8().ok()?;
        if usize::from(batches) > RETAINED_BATCHES {
            return None;
        }
        let mut recent = VecDeque::with_capacity(usize::from(batches));
        for _ in 0..batches {
            recent.push_back(Appended {
                first_sequence: buf.try_get_i32().ok()?,
                last_sequence: buf.try_get_i32().ok()?,
                base_offset: buf.try_get_i64().ok()?,
            });
        }
        let producer = Producer {
            epoch,
            recent,
            last_timestamp,
            coordinator_epoch,
        };
        producers.insert(id, producer);
    }
    let mut open = BTreeMap::new();
    for _ in 0..buf.try_get_u32().ok()? {
        open.insert(buf.try_get_i64().ok()?, buf.try_get_i64().ok()?);
    }
    let mut aborted = Vec::new();
    for _ in 0..buf.try_get_u32().ok()? {
        aborted.push(AbortedTxn {
            producer_id: buf.try_get_i64().ok()?,
            first_offset: buf.try_get_i64().ok()?,
            last_offset: buf.try_get_i64().ok()?,
        });
    }
    Some(Snapshot {
        offset,
        producers,
        txns: TxnIndex::from_parts(open, aborted),
    })
}

/// Write the snapshot `bytes` into the partition directory `dir`, durably.
pub(super) fn store(dir: &Path, bytes: &[u8]) -> Result<(), LogError> {
    checkpoint::replace(dir, FILE, bytes)
}

/// Remove the snapshot from `dir`, durably.
pub(super) fn remove(dir: &Path) -> Result<(), LogError> {
    checkpoint::remove(dir, FILE)
}

/// The snapshot in `dir`: `Ok(None)` when there is none, `Err` when the file is there but
/// unusable (read error or [`DecodeError`]), as a message for the log.
pub(super) fn load(dir: &Path) -> Result<Option<Snapshot>, String> {
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => decode(&bytes).map(Some).map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let mut producers = HashMap::new();
        producers.insert(
            7,
            Producer {
                epoch: 3,
                recent: [
                    Appended {
                        first_sequence: 0,
                        last_sequence: 9,
                        base_offset: 100,
                    },
                    Appended {
                        first_sequence: 10,
                        last_sequence: 10,
                        base_offset: 140,
                    },
                ]
                .into(),
                last_timestamp: 1_700_000_000_000,
                coordinator_epoch: Some(-5),
            },
        );
        producers.insert(9, Producer::default());
        let txns = TxnIndex::from_parts(
            [(9, 150)].into(),
            vec![AbortedTxn {
                producer_id: 7,
                first_offset: 120,
                last_offset: 130,
            }],
        );
        Snapshot {
            offset: 160,
            producers,
            txns,
        }
    }

    #[test]
    fn a_snapshot_reads_back_as_written() {
        let snapshot = sample();
        let bytes = encode(snapshot.offset, &snapshot.producers, &snapshot.txns);
        assert_eq!(decode(&bytes).expect("decodes"), snapshot);
        let empty = encode(0, &HashMap::new(), &TxnIndex::default());
        assert_eq!(decode(&empty).expect("decodes"), Snapshot::default());
    }

    #[test]
    fn a_damaged_snapshot_is_refused() {
        let snapshot = sample();
        let bytes = encode(snapshot.offset, &snapshot.producers, &snapshot.txns);
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        for position in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[position] ^= 0x10;
            assert!(decode(&flipped).is_err(), "bit flipped at {position}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(DecodeError::Checksum)));
    }
}
