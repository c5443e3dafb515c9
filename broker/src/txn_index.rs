//! A partition's transactions, as its log shows them: the transactions open in it (a
//! producer's first transactional batch after its last marker) and the aborted ones (first
//! offset to abort marker). The open ones bound the last stable offset (LSO) a
//! `read_committed` consumer reads up to; the aborted ones are what a Fetch lists in
//! `aborted_transactions`, so that such a consumer drops their records. Built from the batches
//! as they are appended (by the leader, or copied by a follower), kept in the partition's
//! producer-state snapshot with the idempotent-producer state, and recovered like it when a
//! partition opens (the snapshot and the batches after it) or is truncated (the whole log).

use std::collections::BTreeMap;

use switchyard_log::RecordBatch;
use switchyard_log::control::{Marker, marker_of};

/// An aborted transaction in a partition: Kafka's aborted-transaction index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer.
    pub producer_id: i64,
    /// The offset of its first batch in the partition.
    pub first_offset: i64,
    /// The offset of the abort marker.
    pub last_offset: i64,
}

/// The open and aborted transactions of one partition.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TxnIndex {
    /// Producer id → offset of its open transaction's first batch.
    open: BTreeMap<i64, i64>,
    /// Aborted transactions in marker order.
    aborted: Vec<AbortedTxn>,
}

impl TxnIndex {
    /// The index of these open and aborted transactions (as [`Self::parts`] gives them).
    pub(crate) fn from_parts(open: BTreeMap<i64, i64>, aborted: Vec<AbortedTxn>) -> Self {
        Self { open, aborted }
    }

    /// Producer id → first offset of each open transaction, and the aborted transactions in
    /// marker order.
    pub(crate) fn parts(&self) -> (&BTreeMap<i64, i64>, &[AbortedTxn]) {
        (&self.open, &self.aborted)
    }

    /// Note `batch`, stored at `base_offset`.
    pub(crate) fn track(&mut self, batch: &RecordBatch<'_>, base_offset: i64) {
        let header = batch.header();
        if !header.is_transactional() || header.producer_id < 0 {
            return;
        }
        if header.is_control() {
            let Some(marker) = marker_of(batch) else {
                return;
            };
            // A marker with nothing open (a retried marker, or a transaction with no data
            // here) ends nothing.
            if let Some(first_offset) = self.open.remove(&header.producer_id)
                && marker == Marker::Abort
            {
                self.aborted.push(AbortedTxn {
                    producer_id: header.producer_id,
                    first_offset,
                    last_offset: base_offset,
                });
            }
        } else {
            self.open.entry(header.producer_id).or_insert(base_offset);
        }
    }

    /// The first offset of the earliest open transaction, if any.
    pub(crate) fn first_unstable(&self) -> Option<i64> {
        self.open.values().copied().min()
    }

    /// Where `producer_id`'s open transaction starts, if it has one here.
    pub(crate) fn open_since(&self, producer_id: i64) -> Option<i64> {
        self.open.get(&producer_id).copied()
    }

    /// The aborted transactions a read of `[from, to)` may hold records of: those whose abort
    /// marker is at or after `from` and whose first batch is before `to`.
    pub(crate) fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..]
            .iter()
            .filter(|a| a.first_offset < to)
            .copied()
            .collect()
    }

    /// Forget aborted transactions wholly below `log_start` (removed by retention or
    /// DeleteRecords).
    pub(crate) fn trim(&mut self, log_start: i64) {
        let below = self.aborted.partition_point(|a| a.last_offset < log_start);
        self.aborted.drain(..below);
    }
}

#[cfg(test)]
mod tests {
    use switchyard_log::batch::testing::{producer_batch, transactional_batch};
    use switchyard_log::control::marker_batch;

    use super::*;

    fn transactional(producer_id: i64) -> Vec<u8> {
        transactional_batch((producer_id, 0, 0), 1, &[b"v"])
    }

    fn track(index: &mut TxnIndex, bytes: &[u8], offset: i64) {
        index.track(&RecordBatch::parse(bytes, 0).expect("valid"), offset);
    }

    #[test]
    fn open_transactions_bound_stability_and_aborts_are_indexed() {
        let mut index = TxnIndex::default();
        track(&mut index, &producer_batch((9, 0, 0), 1, &[b"plain"]), 0);
        assert_eq!(index.first_unstable(), None, "idempotent data is stable");
        track(&mut index, &transactional(1), 1);
        track(&mut index, &transactional(2), 2);
        track(&mut index, &transactional(1), 3);
        assert_eq!(index.first_unstable(), Some(1));
        assert_eq!(index.open_since(2), Some(2));
        track(&mut index, &marker_batch((1, 0), Marker::Commit, 0, 1), 4);
        assert_eq!(index.first_unstable(), Some(2));
        track(&mut index, &marker_batch((2, 0), Marker::Abort, 0, 1), 5);
        assert_eq!(index.first_unstable(), None);
        let aborted = AbortedTxn {
            producer_id: 2,
            first_offset: 2,
            last_offset: 5,
        };
        assert_eq!(index.aborted_between(0, 10), vec![aborted]);
        assert_eq!(index.aborted_between(5, 10), vec![aborted]);
        assert!(index.aborted_between(6, 10).is_empty(), "after the marker");
        assert!(index.aborted_between(0, 2).is_empty(), "before its data");
        // A retried marker with nothing open changes nothing.
        track(&mut index, &marker_batch((2, 0), Marker::Abort, 0, 1), 6);
        assert_eq!(index.aborted_between(0, 10).len(), 1);
        index.trim(6);
        assert!(index.aborted_between(0, 10).is_empty());
    }
}
