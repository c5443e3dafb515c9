//! The metadata export file of `switchyard metadata export` and `import`: one node's or one
//! cluster's whole metadata, self-describing, versioned and checksummed, readable by every
//! backend. It moves the metadata from one backend to another and is a backup.
//!
//! File: `magic "SWYMETA\0" | file version: u8 (1) | crc32c: u32 LE (over the rest) |
//! body length: u64 LE | body`, the body a [`MetadataExport`] in the versioned codec
//! ([`crate::codec`]), so a state written by an older build stays readable. Encoding is
//! deterministic: one export has one file.

use serde::{Deserialize, Serialize};

use crate::backend::StateView;
use crate::codec;
use crate::error::CodecError;

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"SWYMETA\0";

/// The file version this build writes, the only one it reads.
pub const FILE_VERSION: u8 = 1;

const HEADER: usize = MAGIC.len() + 1 + 4 + 8;

/// How the exported state was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// From a stopped node's data directory: what that node would recover.
    DataDirectory,
    /// From a running cluster, linearizably: every write acknowledged before the export
    /// started is in it.
    Linearizable,
    /// From a running cluster's metadata leader, for a backend without linearizable reads:
    /// everything the leader had applied.
    Leader,
}

impl Source {
    /// How it was read, as output says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DataDirectory => "read from a stopped node's data directory",
            Self::Linearizable => "read linearizably from the running cluster",
            Self::Leader => "read from the running cluster's metadata leader",
        }
    }
}

/// What an export file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataExport {
    /// The backend it was exported from.
    pub backend: String,
    /// The version of the build that exported it.
    pub build: String,
    /// How the state was read.
    pub source: Source,
    /// The epoch (Raft term, WAL epoch) of the last entry the state includes.
    pub epoch: u64,
    /// The state and the metadata index it was applied up to.
    pub view: StateView,
}

/// Why bytes are not an export file this build reads.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Not one at all.
    #[error("not a Switchyard metadata export (it does not start with the export file's magic)")]
    NotAnExport,
    /// Shorter than its header says.
    #[error("truncated: {found} bytes where the header says {expected}")]
    Truncated {
        /// Bytes the header and body length call for.
        expected: u64,
        /// Bytes there are.
        found: u64,
    },
    /// Longer than its header says.
    #[error("{0} bytes after the end the header gives")]
    TrailingBytes(u64),
    /// Written by a file version this build does not read.
    #[error("file version {found} is not supported (this build reads version {FILE_VERSION})")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
    },
    /// The bytes are not those that were written.
    #[error("checksum mismatch: the file says {stored:#010x}, its bytes give {computed:#010x}")]
    Checksum {
        /// The checksum in the header.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// The body did not decode.
    #[error("the body does not decode: {0}")]
    Codec(#[from] CodecError),
}

impl MetadataExport {
    /// The file's bytes.
    pub fn to_file_bytes(&self) -> Result<Vec<u8>, CodecError> {
        let body = codec::encode(self)?;
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(MAGIC);
        out.push(FILE_VERSION);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32c::crc32c(&out[MAGIC.len() + 5..]);
        out[MAGIC.len() + 1..MAGIC.len() + 5].copy_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Read a file written by [`Self::to_file_bytes`], checking all of it first.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, ExportError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(ExportError::NotAnExport);
        }
        let found = bytes.len() as u64;
        if bytes.len() < HEADER {
            return Err(ExportError::Truncated {
                expected: HEADER as u64,
                found,
            });
        }
        let version = bytes[MAGIC.len()];
        if version != FILE_VERSION {
            return Err(ExportError::UnsupportedVersion { found: version });
        }
        let mut crc = [0; 4];
        crc.copy_from_slice(&bytes[MAGIC.len() + 1..MAGIC.len() + 5]);
        let mut len = [0; 8];
        len.copy_from_slice(&bytes[MAGIC.len() + 5..HEADER]);
        let expected = (HEADER as u64).saturating_add(u64::from_le_bytes(len));
        if found < expected {
            return Err(ExportError::Truncated { expected, found });
        }
        if found > expected {
            return Err(ExportError::TrailingBytes(found - expected));
        }
        let stored = u32::from_le_bytes(crc);
        let computed = crc32c::crc32c(&bytes[MAGIC.len() + 5..]);
        if stored != computed {
            return Err(ExportError::Checksum { stored, computed });
        }
        Ok(codec::decode(&bytes[HEADER..])?)
    }

    /// A human-readable dump for inspection and diffing (not read back): the provenance, then
    /// the state with every collection as a list in key order.
    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        Ok(serde_json::json!({
            "backend": self.backend,
            "build": self.build,
            "source": self.source,
            "epoch": self.epoch,
            "applied_index": self.view.applied_index,
            "cluster_id": self.view.state.cluster_id().map(|c| c.0.clone()),
            "state": self.view.state.to_json()?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClusterId, MetadataCommand, MetadataState};

    fn export() -> MetadataExport {
        let mut state = MetadataState::new();
        let _ = state.apply(&MetadataCommand::InitCluster {
            cluster_id: ClusterId("c-1".into()),
        });
        MetadataExport {
            backend: "wal".into(),
            build: "0.1.0".into(),
            source: Source::DataDirectory,
            epoch: 3,
            view: StateView {
                applied_index: 7,
                state,
            },
        }
    }

    #[test]
    fn a_file_reads_back_and_every_damage_is_named() -> Result<(), Box<dyn std::error::Error>> {
        let file = export().to_file_bytes()?;
        assert_eq!(MetadataExport::from_file_bytes(&file)?, export());
        assert_eq!(file, export().to_file_bytes()?, "deterministic");

        let truncated = MetadataExport::from_file_bytes(&file[..file.len() - 1]);
        assert!(
            matches!(truncated, Err(ExportError::Truncated { .. })),
            "{truncated:?}"
        );
        let mut longer = file.clone();
        longer.push(0);
        assert!(matches!(
            MetadataExport::from_file_bytes(&longer),
            Err(ExportError::TrailingBytes(1))
        ));
        for at in HEADER..file.len() {
            let mut flipped = file.clone();
            flipped[at] ^= 0x10;
            let read = MetadataExport::from_file_bytes(&flipped);
            assert!(
                matches!(read, Err(ExportError::Checksum { .. })),
                "byte {at}: {read:?}"
            );
        }
        let mut newer = file.clone();
        newer[MAGIC.len()] = FILE_VERSION + 1;
        assert!(matches!(
            MetadataExport::from_file_bytes(&newer),
            Err(ExportError::UnsupportedVersion { found }) if found == FILE_VERSION + 1
        ));
        assert!(matches!(
            MetadataExport::from_file_bytes(b"{\"backend\": \"wal\"}"),
            Err(ExportError::NotAnExport)
        ));
        Ok(())
    }

    #[test]
    fn the_json_dump_names_the_provenance_and_the_cluster() -> Result<(), serde_json::Error> {
        let json = export().to_json()?;
        assert_eq!(json["backend"], "wal");
        assert_eq!(json["source"], "DataDirectory");
        assert_eq!(json["applied_index"], 7);
        assert_eq!(json["cluster_id"], "c-1");
        assert_eq!(json["state"]["cluster_id"], "c-1");
        Ok(())
    }
}
