//! [`Tail`]: the records this node appended most recently as primary, kept in memory so that
//! its links send them without reading them back from the segment files (and without a hop
//! to a blocking thread). The writer keeps it equal to a suffix of the log: it pushes each
//! record it appends as primary and clears it whenever the log may take records from
//! elsewhere (following, a snapshot install, a new leadership). A link whose next record
//! has left the tail reads the files.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use switchyard_backend_api::LogIndex;

use crate::record::Record;

/// Most record bytes (as framed in a segment file) kept.
const TAIL_BYTES: usize = 4 << 20;

/// The most recent records appended as primary.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    records: Mutex<Records>,
}

#[derive(Debug, Default)]
struct Records {
    records: VecDeque<Record>,
    bytes: usize,
}

impl Tail {
    /// Keep `record`, the next record of the log, dropping the oldest beyond [`TAIL_BYTES`].
    pub(crate) fn push(&self, record: &Record) {
        let mut tail = self.lock();
        if tail
            .records
            .back()
            .is_some_and(|last| last.index + 1 != record.index)
        {
            tail.records.clear();
            tail.bytes = 0;
        }
        tail.bytes += record.frame_len();
        tail.records.push_back(record.clone());
        while tail.bytes > TAIL_BYTES && tail.records.len() > 1 {
            if let Some(oldest) = tail.records.pop_front() {
                tail.bytes -= oldest.frame_len();
            }
        }
    }

    /// Forget every record: the log may continue from elsewhere.
    pub(crate) fn clear(&self) {
        let mut tail = self.lock();
        tail.records.clear();
        tail.bytes = 0;
    }

    /// The records from `next` up to and including `upto`, `max_bytes` of frames at most (one
    /// record at least, as a segment file read returns); `None` unless the tail holds `next`.
    pub(crate) fn read(
        &self,
        next: LogIndex,
        upto: LogIndex,
        max_bytes: usize,
    ) -> Option<Vec<Record>> {
        let tail = self.lock();
        let first = tail.records.front()?.index;
        let skip = usize::try_from(next.checked_sub(first)?).ok()?;
        if skip >= tail.records.len() {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for record in tail.records.iter().skip(skip) {
            let len = record.frame_len();
            if record.index > upto || (!out.is_empty() && bytes + len > max_bytes) {
                break;
            }
            bytes += len;
            out.push(record.clone());
        }
        Some(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: LogIndex, bytes: usize) -> Record {
        Record {
            epoch: 1,
            index,
            payload: vec![0; bytes],
        }
    }

    fn indexes(records: Option<Vec<Record>>) -> Option<Vec<LogIndex>> {
        records.map(|records| records.iter().map(|r| r.index).collect())
    }

    #[test]
    fn reads_what_it_holds_up_to_the_bound_and_the_size() {
        let tail = Tail::default();
        for index in 5..=9 {
            tail.push(&record(index, 10));
        }
        assert_eq!(
            indexes(tail.read(4, 9, usize::MAX)),
            None,
            "before the tail"
        );
        assert_eq!(
            indexes(tail.read(10, 12, usize::MAX)),
            None,
            "after the tail"
        );
        assert_eq!(indexes(tail.read(6, 8, usize::MAX)), Some(vec![6, 7, 8]));
        let frame = record(6, 10).frame_len();
        assert_eq!(indexes(tail.read(6, 9, 2 * frame + 1)), Some(vec![6, 7]));
        assert_eq!(
            indexes(tail.read(6, 9, 1)),
            Some(vec![6]),
            "one record at least"
        );
        tail.clear();
        assert_eq!(indexes(tail.read(6, 9, usize::MAX)), None);
    }

    #[test]
    fn keeps_a_bounded_suffix_that_continues() {
        let tail = Tail::default();
        // Three such frames fill the tail.
        let big = TAIL_BYTES / 3 - record(1, 0).frame_len();
        for index in 1..=5 {
            tail.push(&record(index, big));
        }
        assert_eq!(indexes(tail.read(1, 5, usize::MAX)), None, "dropped");
        assert_eq!(indexes(tail.read(3, 5, usize::MAX)), Some(vec![3, 4, 5]));
        tail.push(&record(9, 1));
        assert_eq!(
            indexes(tail.read(5, 9, usize::MAX)),
            None,
            "a gap starts afresh"
        );
        assert_eq!(indexes(tail.read(9, 9, usize::MAX)), Some(vec![9]));
    }
}
