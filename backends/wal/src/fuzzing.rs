//! Entry points for the fuzz targets in `broker/fuzz` (feature `fuzzing`): every decoder that
//! reads bytes from disk or from the cluster port, fed arbitrary bytes. Each must return an
//! error, never panic, hang or allocate without bound.

use crate::protocol::Message;
use crate::record::{Frame, decode_frame};

/// Decode `bytes` as record frames back to back, as recovery scans a segment, and each record's
/// command; then the same with the frame's CRC made valid, so the fuzzer reaches the body.
pub fn wal_records(bytes: &[u8]) {
    scan(bytes);
    if bytes.len() >= 8 {
        let mut fixed = bytes.to_vec();
        let crc = crc32c::crc32c(&fixed[8..]);
        fixed[4..8].copy_from_slice(&crc.to_le_bytes());
        if let Ok(len) = u32::try_from(fixed.len() - 8) {
            fixed[..4].copy_from_slice(&len.to_le_bytes());
        }
        scan(&fixed);
    }
}

fn scan(mut bytes: &[u8]) {
    while let Frame::Record { record, len } = decode_frame(bytes) {
        let _ = record.decode_command();
        if len == 0 {
            return;
        }
        bytes = &bytes[len.min(bytes.len())..];
    }
}

/// Decode `bytes` as a snapshot file, and with its CRC made valid.
pub fn wal_snapshot(bytes: &[u8]) {
    let _ = crate::snapshot::decode(bytes, "fuzz");
    if bytes.len() >= 8 {
        let mut fixed = bytes.to_vec();
        let crc = crc32c::crc32c(&fixed[8..]);
        fixed[4..8].copy_from_slice(&crc.to_le_bytes());
        let _ = crate::snapshot::decode(&fixed, "fuzz");
    }
}

/// Decode `bytes` as the body of a cluster-port frame (after its length prefix).
pub fn wal_cluster_frame(bytes: &[u8]) {
    let _ = switchyard_backend_api::codec::decode::<Message>(bytes);
}
