//! The sparse per-segment indexes, in memory and in their file format.
//!
//! - Offset index (`.index`): 8-byte entries, `relative offset u32 BE` (batch base offset minus
//!   the segment's base offset) and `file position u32 BE` of that batch.
//! - Time index (`.timeindex`): 12-byte entries, `timestamp i64 BE` (the largest batch
//!   `maxTimestamp` in the segment so far) and `relative offset u32 BE` of the first batch
//!   that reached it.
//!
//! Both are strictly increasing in every field. A batch at position 0 needs no entry: a lookup
//! below the first entry starts at the beginning of the segment. Both files are derived from
//! the segment data and are rebuilt from it whenever they are missing or do not check out.

/// Size of one offset-index entry on disk.
pub(crate) const OFFSET_ENTRY_LEN: usize = 8;
/// Size of one time-index entry on disk.
pub(crate) const TIME_ENTRY_LEN: usize = 12;

/// One offset-index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    /// Base offset of the batch minus the segment's base offset.
    pub(crate) relative_offset: u32,
    /// Position of the batch in the segment file.
    pub(crate) position: u32,
}

/// One time-index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    /// The largest `maxTimestamp` in the segment up to this point.
    pub(crate) timestamp: i64,
    /// Relative base offset of the first batch with that timestamp.
    pub(crate) relative_offset: u32,
}

impl OffsetEntry {
    pub(crate) fn encode(&self) -> [u8; OFFSET_ENTRY_LEN] {
        let mut out = [0u8; OFFSET_ENTRY_LEN];
        out[..4].copy_from_slice(&self.relative_offset.to_be_bytes());
        out[4..].copy_from_slice(&self.position.to_be_bytes());
        out
    }
}

impl TimeEntry {
    pub(crate) fn encode(&self) -> [u8; TIME_ENTRY_LEN] {
        let mut out = [0u8; TIME_ENTRY_LEN];
        out[..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..].copy_from_slice(&self.relative_offset.to_be_bytes());
        out
    }
}

/// Decodes an offset index file, or `None` if it is not a whole number of strictly increasing
/// entries.
pub(crate) fn decode_offset_index(bytes: &[u8]) -> Option<Vec<OffsetEntry>> {
    if !bytes.len().is_multiple_of(OFFSET_ENTRY_LEN) {
        return None;
    }
    let entries: Vec<OffsetEntry> = bytes
        .chunks_exact(OFFSET_ENTRY_LEN)
        .map(|chunk| OffsetEntry {
            relative_offset: u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
            position: u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
        })
        .collect();
    let increasing = entries.windows(2).all(|pair| {
        pair[0].relative_offset < pair[1].relative_offset && pair[0].position < pair[1].position
    });
    increasing.then_some(entries)
}

/// Decodes a time index file, or `None` if it is not a whole number of strictly increasing
/// entries.
pub(crate) fn decode_time_index(bytes: &[u8]) -> Option<Vec<TimeEntry>> {
    if !bytes.len().is_multiple_of(TIME_ENTRY_LEN) {
        return None;
    }
    let entries: Vec<TimeEntry> = bytes
        .chunks_exact(TIME_ENTRY_LEN)
        .map(|chunk| {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&chunk[..8]);
            TimeEntry {
                timestamp: i64::from_be_bytes(ts),
                relative_offset: u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]),
            }
        })
        .collect();
    let increasing = entries.windows(2).all(|pair| {
        pair[0].timestamp < pair[1].timestamp && pair[0].relative_offset < pair[1].relative_offset
    });
    increasing.then_some(entries)
}

/// The last offset-index entry at or below `relative_offset`: where to start scanning for the
/// batch holding it. `None` means the start of the segment.
pub(crate) fn lookup_offset(entries: &[OffsetEntry], relative_offset: u32) -> Option<OffsetEntry> {
    let after = entries.partition_point(|entry| entry.relative_offset <= relative_offset);
    after.checked_sub(1).map(|i| entries[i])
}

/// The last time-index entry with a timestamp strictly below `timestamp`: every batch up to
/// and including its offset has a smaller `maxTimestamp`, so the search for the first batch
/// reaching `timestamp` may start there. `None` means the start of the segment.
pub(crate) fn lookup_time(entries: &[TimeEntry], timestamp: i64) -> Option<TimeEntry> {
    let after = entries.partition_point(|entry| entry.timestamp < timestamp);
    after.checked_sub(1).map(|i| entries[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(pairs: &[(u32, u32)]) -> Vec<OffsetEntry> {
        pairs
            .iter()
            .map(|&(relative_offset, position)| OffsetEntry {
                relative_offset,
                position,
            })
            .collect()
    }

    #[test]
    fn offset_index_round_trips_and_looks_up_the_floor_entry() {
        let entries = offsets(&[(3, 100), (7, 250), (12, 900)]);
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.encode()).collect();
        assert_eq!(decode_offset_index(&bytes).as_deref(), Some(&entries[..]));
        assert_eq!(lookup_offset(&entries, 0), None);
        assert_eq!(lookup_offset(&entries, 3), Some(entries[0]));
        assert_eq!(lookup_offset(&entries, 11), Some(entries[1]));
        assert_eq!(lookup_offset(&entries, 99), Some(entries[2]));
    }

    #[test]
    fn offset_index_rejects_partial_or_unordered_files() {
        let entries = offsets(&[(3, 100), (2, 250)]);
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.encode()).collect();
        assert_eq!(decode_offset_index(&bytes), None);
        assert_eq!(decode_offset_index(&bytes[..5]), None);
    }

    #[test]
    fn time_index_round_trips_and_looks_up_strictly_below() {
        let entries = vec![
            TimeEntry {
                timestamp: 10,
                relative_offset: 1,
            },
            TimeEntry {
                timestamp: 20,
                relative_offset: 5,
            },
        ];
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.encode()).collect();
        assert_eq!(decode_time_index(&bytes).as_deref(), Some(&entries[..]));
        assert_eq!(lookup_time(&entries, 10), None);
        assert_eq!(lookup_time(&entries, 11), Some(entries[0]));
        assert_eq!(lookup_time(&entries, 20), Some(entries[0]));
        assert_eq!(lookup_time(&entries, 21), Some(entries[1]));
        assert_eq!(decode_time_index(&bytes[..13]), None);
    }
}
