//! [`WalConfig`]: the `[metadata.wal]` table.

use figment::Figment;
use serde::{Deserialize, Serialize};
use switchyard_backend_api::MetadataError;

/// When the primary acknowledges a proposal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Mode {
    /// After a majority of all configured nodes (the primary included) has it durable.
    #[default]
    Sync,
    /// After the primary's own fsync; followers replicate in the background.
    Async,
}

/// The backend's configuration (`[metadata.wal]` in `switchyard.toml`,
/// `SWITCHYARD_METADATA__WAL__<KEY>` in the environment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct WalConfig {
    /// `sync` (default) or `async`.
    pub mode: Mode,
    /// The node that is primary when the cluster first starts; default the lowest node id.
    /// Later primaries are chosen by promotion and remembered on disk.
    pub primary: Option<u64>,
    /// Cluster id every replication connection must present; default `switchyard`.
    pub cluster_id: String,
    /// Roll to a new segment past this many bytes; default 64 MiB.
    pub segment_bytes: u64,
    /// Take a snapshot every this many applied entries; default 10 000.
    pub snapshot_every: u64,
    /// How long `propose` (and a promotion) waits before `Timeout`; default 5000 ms.
    pub propose_timeout_ms: u64,
    /// Largest replication frame accepted; default 16 MiB.
    pub max_frame_bytes: u32,
    /// How long a node added online may take to catch up as a learner before the change
    /// fails; default 30 000 ms.
    pub catch_up_timeout_ms: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Sync,
            primary: None,
            cluster_id: "switchyard".into(),
            segment_bytes: 64 << 20,
            snapshot_every: 10_000,
            propose_timeout_ms: 5_000,
            max_frame_bytes: 16 << 20,
            catch_up_timeout_ms: 30_000,
        }
    }
}

impl WalConfig {
    /// Extract and check the table; unknown keys and impossible values are `Config` errors.
    pub fn from_figment(figment: &Figment) -> Result<Self, MetadataError> {
        let config: Self = figment
            .extract()
            .map_err(|e| MetadataError::Config(format!("metadata.wal: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Check the values; an impossible one is a `Config` error.
    pub fn validate(&self) -> Result<(), MetadataError> {
        let config = self;
        if config.segment_bytes < 4096 {
            return Err(MetadataError::Config(
                "metadata.wal.segment_bytes must be at least 4096".into(),
            ));
        }
        if config.snapshot_every == 0 {
            return Err(MetadataError::Config(
                "metadata.wal.snapshot_every must be at least 1".into(),
            ));
        }
        if config.propose_timeout_ms == 0 {
            return Err(MetadataError::Config(
                "metadata.wal.propose_timeout_ms must be at least 1".into(),
            ));
        }
        if config.catch_up_timeout_ms == 0 {
            return Err(MetadataError::Config(
                "metadata.wal.catch_up_timeout_ms must be at least 1".into(),
            ));
        }
        if config.max_frame_bytes < 64 << 10 {
            return Err(MetadataError::Config(
                "metadata.wal.max_frame_bytes must be at least 65536".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    #[test]
    fn defaults_and_unknown_keys() -> Result<(), MetadataError> {
        assert_eq!(
            WalConfig::from_figment(&Figment::new())?,
            WalConfig::default()
        );
        let async_mode = Figment::from(Serialized::default("mode", "async"));
        assert_eq!(WalConfig::from_figment(&async_mode)?.mode, Mode::Async);
        let unknown = Figment::from(Serialized::default("segmnt_bytes", 1));
        let error = WalConfig::from_figment(&unknown)
            .err()
            .map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(|e| e.contains("segmnt_bytes")),
            "{error:?}"
        );
        Ok(())
    }
}
