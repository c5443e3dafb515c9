//! Partition logs on local disk: Kafka record batches stored as received, in segment files
//! with a sparse offset index and a time index, recovered after a crash, trimmed by retention.
//!
//! The log knows record batches only as bytes in the v2 (magic 2) format; it validates and
//! stores them and hands them back. Only [`records`] looks inside a batch, to check a produced
//! batch's records before it is appended (and to recompress it); what is stored is never
//! decoded. The Kafka handlers
//! own the wire protocol, the high watermark and producer state; the log owns offsets.
//!
//! # Layout
//! - [`batch`] — [`RecordBatch`] / [`BatchHeader`] over raw bytes, validation
//!   ([`BatchError`]), and [`Batches`], the splitter for a Produce request's `records`.
//! - [`records`] — the records inside a produced batch, checked as Kafka's LogValidator does
//!   (decompressing, bounded, when the batch is compressed), and recompressed to a topic's
//!   `compression.type`.
//! - [`control`] — transaction markers: building the commit and abort control batches a
//!   leader appends, and reading which one a control batch holds.
//! - [`config`] — [`LogConfig`] and [`FlushPolicy`], Kafka's topic config names and defaults.
//! - `index` — the offset and time index formats and lookups.
//! - `segment` — one segment: files, recovery scan, positional reads.
//! - `epochs` — the leader-epoch cache: where each leader epoch starts (OffsetForLeaderEpoch,
//!   follower truncation).
//! - [`checkpoint`] — the partition's one-number checkpoint files: the high watermark
//!   (written by the replica that owns it) and the log start offset DeleteRecords set.
//! - [`partition`] — [`PartitionLog`]: append, read, lookups, retention, flush, close.
//! - [`store`] — [`LogStore`]: all partition logs under `<data_dir>/logs`.
//! - `error` — [`LogError`]; each variant names the Kafka error code it stands for (the broker
//!   maps them).
//!
//! # On disk
//! ```text
//! <data_dir>/logs/.lock                      flock held by the open LogStore
//! <data_dir>/logs/<topic>-<partition>/
//!     00000000000000000000.log               batches, back to back, exactly as served
//!     00000000000000000000.index             sparse: (relative offset u32, position u32) BE
//!     00000000000000000000.timeindex         sparse: (max timestamp so far i64, relative offset u32) BE
//!     00000000000000004217.log …             next segment, named by its base offset
//!     leader-epochs                          "epoch start-offset" per leader epoch (see `epochs`)
//!     high-watermark                         the last high-watermark checkpoint (see `checkpoint`)
//!     log-start-offset                       the log start offset DeleteRecords set (see `checkpoint`)
//!     flushed                                the offset below which everything is fsynced (see `flushed`)
//!     producer-snapshot                      the broker's producer and transaction state as of an offset
//!     clean-shutdown                         present only between a clean close and the next open
//! ```
//! A segment's name is its base offset in 20 digits. Offsets are contiguous across segments:
//! each segment starts where the previous one ends. An offset-index entry is added every
//! `index.interval.bytes` of batches, pointing at a batch's base offset; a time-index entry is
//! added with it when the largest timestamp so far has grown. Both indexes are derived data.
//! The log start offset is the first segment's base offset, or later when DeleteRecords moved
//! it inside that segment (kept in `log-start-offset`, read back on open); reads below it are
//! out of range even where the bytes are still on disk.
//!
//! # Recovery
//! A segment is made durable (data and index fsynced) before the next segment is created, so
//! only the last (active) segment can have a torn tail. On open:
//! - after a clean shutdown, each segment's indexes are checked against its data and the
//!   batches after the last index entry are CRC-checked;
//! - otherwise, or if that check fails, every batch of the segment is read and CRC-checked
//!   (and its base offset must continue the previous batch) and the indexes are rebuilt;
//! - a bad batch in the active segment at or past the flushed mark (`flushed`: the offset
//!   below which every batch was fsynced) truncates the file there (`set_len` + fsync) with a
//!   `warn!` naming file, position, dropped bytes and reason: only a tail that was never
//!   flushed can be torn by a crash;
//! - a bad batch below the flushed mark, or in any other segment, fails the open with
//!   [`LogError::Corrupt`], naming file and position: acknowledged data is damaged, and the
//!   partition stays offline (the [`LogStore`] opens the others) rather than lose it.
//!
//! # Fsync policy
//! [`FlushPolicy`], modelled on Kafka's `flush.messages` / `flush.ms`, decides when an append
//! fsyncs (`fdatasync`) the active segment. **The default fsyncs every append**
//! (`flush.messages = 1`): on a single node `acks=all` must mean the data survives a power
//! loss, and there is no replica to recover it from. The cost is one fsync per Produce request
//! per partition — produce latency is bounded below by the disk's flush latency and a
//! partition's appends are serialized behind it. Raising `flush.messages` or setting
//! `flush.ms` batches fsyncs for throughput and widens the window of acknowledged data that a
//! crash can lose (up to the unflushed tail, which recovery then truncates). Appended data
//! becomes readable (and moves the log end offset) only after the fsync the policy asked for,
//! so a high watermark set to the log end offset never covers data the policy says must be
//! durable. Index files are not fsynced per append: they are rebuilt after a crash.
//!
//! # Concurrency
//! [`PartitionLog`] is shared as `Arc<PartitionLog>`. Appends, rolls, retention and flushes
//! take one lock per partition. Reads snapshot the segment list under a short read lock and
//! then `pread` without any lock, up to the size the last append published, so they never wait
//! for an append's write or fsync. All methods are synchronous and do blocking file I/O: call
//! them from `tokio::task::spawn_blocking`. [`PartitionLog::subscribe`] gives a
//! `tokio::sync::watch` of the log end offset for Fetch long-polls.
//!
//! # Clock
//! Nothing here reads the clock. Appends, flushes and retention take `now_ms` from the caller,
//! so tests (and a simulator) drive time.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod control;
mod epochs;
mod error;
mod flushed;
mod index;
pub mod partition;
pub mod records;
mod segment;
pub mod store;

pub use batch::{BatchError, BatchHeader, Batches, RecordBatch};
pub use config::{CleanupPolicy, FlushPolicy, LogConfig, LogConfigError};
pub use epochs::EpochStart;
pub use error::LogError;
pub use partition::cleaner::{
    AbortedRange, CleanOutcome, CleanRequest, CleanStep, Cleanable, CleanerHooks,
};
pub use partition::{
    AppendInfo, FileSlice, LogRead, LogSlices, PartitionLog, RetentionOutcome, TimestampOffset,
};
pub use store::LogStore;

/// The histogram every fsync of a segment's data file is timed into, in seconds, through the
/// `metrics` facade (a no-op until the process installs a recorder).
pub const FSYNC_DURATION: &str = "switchyard_log_fsync_duration_seconds";

#[cfg(test)]
mod tests;
