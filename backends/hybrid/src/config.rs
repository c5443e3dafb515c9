//! [`HybridConfig`]: the `[metadata.hybrid]` table.

use figment::Figment;
use serde::{Deserialize, Serialize};
use switchyard_backend_api::MetadataError;
use switchyard_backend_wal::WalConfig;

/// The backend's configuration (`[metadata.hybrid]` in `switchyard.toml`,
/// `SWITCHYARD_METADATA__HYBRID__<KEY>` in the environment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HybridConfig {
    /// Cluster id every connection between nodes must present; default `switchyard`.
    pub cluster_id: String,
    /// Whether a node whose group log is empty starts the group, with every configured node
    /// as a voter (every founding node does so identically); default `true`. A node that
    /// joins a running cluster with `add-node` sets `false`: it waits for the leader's
    /// snapshot.
    pub bootstrap: bool,
    /// Length of one Raft tick; default 50 ms.
    pub tick_ms: u64,
    /// Ticks without a leader before a follower campaigns (randomized between this and one
    /// and a half times this); default 10.
    pub election_ticks: usize,
    /// Ticks between leader heartbeats; below `election_ticks`; default 2.
    pub heartbeat_ticks: usize,
    /// How long `propose` (forwarding included) waits before `Timeout`; default 5000 ms.
    pub propose_timeout_ms: u64,
    /// How often the leader compares its followers' acknowledged WAL positions with the
    /// commit index and records the in-sync set when it changed; default 500 ms.
    pub in_sync_check_ms: u64,
    /// The metadata WAL: roll to a new segment past this many bytes; default 64 MiB.
    pub segment_bytes: u64,
    /// The metadata WAL: take a snapshot every this many applied entries; default 10 000.
    pub snapshot_every: u64,
    /// Largest frame accepted between nodes; default 16 MiB.
    pub max_frame_bytes: u32,
}

impl Default for HybridConfig {
    fn default() -> Self {
        let wal = WalConfig::default();
        Self {
            cluster_id: "switchyard".into(),
            bootstrap: true,
            tick_ms: 50,
            election_ticks: 10,
            heartbeat_ticks: 2,
            propose_timeout_ms: 5_000,
            in_sync_check_ms: 500,
            segment_bytes: wal.segment_bytes,
            snapshot_every: wal.snapshot_every,
            max_frame_bytes: wal.max_frame_bytes,
        }
    }
}

impl HybridConfig {
    /// Extract and check the table; unknown keys and impossible values are `Config` errors.
    pub fn from_figment(figment: &Figment) -> Result<Self, MetadataError> {
        let config: Self = figment
            .extract()
            .map_err(|e| MetadataError::Config(format!("metadata.hybrid: {e}")))?;
        let bad = |what: &str| Err(MetadataError::Config(format!("metadata.hybrid.{what}")));
        if config.tick_ms == 0 {
            return bad("tick_ms must be at least 1");
        }
        if config.heartbeat_ticks == 0 || config.election_ticks <= config.heartbeat_ticks {
            return bad("election_ticks must exceed heartbeat_ticks, which must be at least 1");
        }
        if config.propose_timeout_ms == 0 {
            return bad("propose_timeout_ms must be at least 1");
        }
        if config.in_sync_check_ms == 0 {
            return bad("in_sync_check_ms must be at least 1");
        }
        config.wal().validate().map_err(|e| {
            MetadataError::Config(e.to_string().replace("metadata.wal", "metadata.hybrid"))
        })?;
        Ok(config)
    }

    /// The configuration of the metadata WAL: `sync` mode (a write is acknowledged once a
    /// majority of the nodes has it durable), this table's cluster id, timeouts and sizes.
    pub fn wal(&self) -> WalConfig {
        let mut wal = WalConfig::default();
        wal.cluster_id = self.cluster_id.clone();
        wal.propose_timeout_ms = self.propose_timeout_ms;
        wal.segment_bytes = self.segment_bytes;
        wal.snapshot_every = self.snapshot_every;
        wal.max_frame_bytes = self.max_frame_bytes;
        wal
    }
}

#[cfg(test)]
mod tests {
    use figment::providers::Serialized;

    use super::*;

    #[test]
    fn defaults_unknown_keys_and_bad_values() -> Result<(), MetadataError> {
        assert_eq!(
            HybridConfig::from_figment(&Figment::new())?,
            HybridConfig::default()
        );
        for (key, value) in [("tick_ms", 0), ("election_ticks", 2), ("segment_bytes", 10)] {
            let figment = Figment::from(Serialized::default(key, value));
            let error = HybridConfig::from_figment(&figment)
                .err()
                .map(|e| e.to_string());
            assert!(
                error
                    .as_deref()
                    .is_some_and(|e| e.contains("metadata.hybrid")),
                "{key}: {error:?}"
            );
        }
        let unknown = Figment::from(Serialized::default("mode", "async"));
        let error = HybridConfig::from_figment(&unknown)
            .err()
            .map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(|e| e.contains("mode")),
            "{error:?}"
        );
        Ok(())
    }
}
