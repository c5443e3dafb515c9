//! [`WalError`]: failures of the log's own storage, turned into
//! [`MetadataError`](switchyard_backend_api::MetadataError) at the trait boundary.

use std::io;
use std::path::Path;

use switchyard_backend_api::{CodecError, MetadataError};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum WalError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// Bytes on disk that recovery must not skip.
    #[error("corrupt log: {file} at byte offset {offset}: {reason}")]
    Corrupt {
        /// The file.
        file: String,
        /// Byte offset of the damage.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A command or snapshot that does not encode or decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Records that do not continue the log.
    #[error("records out of order: {0}")]
    OutOfOrder(String),
}

impl WalError {
    /// An I/O error on `path`.
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

impl From<WalError> for MetadataError {
    fn from(error: WalError) -> Self {
        match error {
            WalError::Codec(e) => MetadataError::Codec(e),
            other => MetadataError::Storage(other.to_string()),
        }
    }
}
