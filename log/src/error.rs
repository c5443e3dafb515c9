//! [`LogError`]: everything a partition log operation can fail with. Each variant's doc names
//! the Kafka error code it stands for; the broker's `kafka::errors` is the mapping.

use std::io;
use std::path::PathBuf;

use super::batch::BatchError;
use super::records::RecordError;

/// Why a log operation failed. Each variant names the Kafka error code the request handlers
/// should answer with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A batch in an append is malformed: `CORRUPT_MESSAGE`, or
    /// `UNSUPPORTED_FOR_MESSAGE_FORMAT` for [`BatchError::UnsupportedMagic`].
    #[error(transparent)]
    InvalidBatch(#[from] BatchError),
    /// A produced batch's records are malformed (count, lengths, offset deltas, compression):
    /// `INVALID_RECORD`.
    #[error(transparent)]
    InvalidRecords(#[from] RecordError),
    /// An append holds no batch, or a batch with no records: `CORRUPT_MESSAGE`.
    #[error("append holds no records")]
    NoRecords,
    /// A batch is larger than `max.message.bytes`: `MESSAGE_TOO_LARGE`.
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    BatchTooLarge {
        /// The batch's size.
        size: usize,
        /// The configured limit.
        max: u32,
    },
    /// A read or lookup outside `log_start_offset..=log_end_offset`: `OFFSET_OUT_OF_RANGE`.
    #[error("offset {offset} is outside the log ({log_start_offset}..={log_end_offset})")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i64,
        /// The first offset in the log.
        log_start_offset: i64,
        /// The offset the next append gets.
        log_end_offset: i64,
    },
    /// Data on disk does not check out where it cannot be truncated away (the middle of a
    /// segment that is not the active one): `KAFKA_STORAGE_ERROR`.
    #[error("corrupt log file {} at byte {position}: {reason}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Where the bad data starts.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// A file operation failed: `KAFKA_STORAGE_ERROR`.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "write".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An earlier write failed part-way, so the log takes no more appends until it is reopened
    /// (which recovers it), or the log could not be opened at all (damaged acknowledged data,
    /// logged when the store opened): `KAFKA_STORAGE_ERROR`.
    #[error("log {} is offline (a failed write, or damage found on open)", path.display())]
    Offline {
        /// The partition's directory.
        path: PathBuf,
    },
    /// The log was closed or deleted: `NOT_LEADER_OR_FOLLOWER` (the partition is no longer
    /// served here).
    #[error("log {} is closed", path.display())]
    Closed {
        /// The partition's directory.
        path: PathBuf,
    },
    /// A batch copied from the leader starts below where this log (or the previous batch of
    /// the append) ends: the follower must truncate or fetch from its log end offset. (It
    /// may start after it: a compacted leader log has gaps.)
    #[error("replicated batch starts at offset {got} but the log continues at {expected}")]
    NotContiguous {
        /// The offset the next batch must start at or after.
        expected: i64,
        /// The base offset the batch has.
        got: i64,
    },
    /// A topic name that cannot be a directory name: `INVALID_TOPIC_EXCEPTION`.
    #[error("invalid topic name {name:?}: use 1 to 249 of [a-zA-Z0-9._-], not \".\" or \"..\"")]
    InvalidTopic {
        /// The name given.
        name: String,
    },
    /// A negative partition index: `UNKNOWN_TOPIC_OR_PARTITION`.
    #[error("invalid partition {partition}")]
    InvalidPartition {
        /// The index given.
        partition: i32,
    },
    /// Another process holds the log directory.
    #[error("log directory {} is in use by another process", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
}

/// Wraps an I/O error with what was done to which path.
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> LogError {
    let path = path.into();
    move |source| LogError::Io {
        action,
        path,
        source,
    }
}
