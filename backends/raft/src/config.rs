//! [`RaftConfig`]: the `[metadata.raft]` table.

use figment::Figment;
use serde::{Deserialize, Serialize};
use switchyard_backend_api::MetadataError;

/// The backend's configuration (`[metadata.raft]` in `switchyard.toml`,
/// `SWITCHYARD_METADATA__RAFT__<KEY>` in the environment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RaftConfig {
    /// Cluster id every peer connection must present; default `switchyard`.
    pub cluster_id: String,
    /// Who initializes a brand-new cluster. Unset (the default): the rule — a node without
    /// peers initializes itself; in a cluster, only the node with the lowest configured id
    /// does, with every configured node as a voter. `true`: this node initializes the
    /// configured membership (when its store is empty). `false`: never initialize; wait to be
    /// added with `add-node`. Whatever the setting, a node only initializes while its store is
    /// empty and no reachable peer reports an initialized cluster.
    pub bootstrap: Option<bool>,
    /// Leader heartbeat interval; default 100 ms.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout; default 400 ms.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout; default 800 ms.
    pub election_timeout_max_ms: u64,
    /// Take a snapshot (and purge the log behind it) every this many entries; default 10 000.
    pub snapshot_every: u64,
    /// Bytes per snapshot chunk sent to a lagging follower; default 1 MiB.
    pub snapshot_chunk_bytes: u64,
    /// How long `propose` (forwarding included), linearizable reads and membership changes
    /// wait before `Timeout`; default 5000 ms.
    pub propose_timeout_ms: u64,
    /// Deadline of one snapshot-chunk RPC, and of the handshake probing each peer before a
    /// bootstrap; default 1000 ms. (Votes and appends use openraft's own per-RPC deadlines,
    /// derived from the heartbeat and election timeouts.)
    pub rpc_timeout_ms: u64,
    /// Largest frame accepted on a peer connection; default 16 MiB.
    pub max_frame_bytes: u32,
    /// Most proposals one log entry carries (group commit: the proposals waiting while the
    /// previous entry commits share the next entry and its fsync); default 1024.
    pub batch_max_proposals: usize,
    /// Most encoded bytes of proposals one log entry carries (a single larger proposal goes
    /// alone); at most half of `max_frame_bytes`; default 256 KiB.
    pub batch_max_bytes: usize,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            cluster_id: "switchyard".into(),
            bootstrap: None,
            heartbeat_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_every: 10_000,
            snapshot_chunk_bytes: 1 << 20,
            propose_timeout_ms: 5_000,
            rpc_timeout_ms: 1_000,
            max_frame_bytes: 16 << 20,
            batch_max_proposals: 1024,
            batch_max_bytes: 256 << 10,
        }
    }
}

impl RaftConfig {
    /// Extract and check the table; unknown keys and impossible values are `Config` errors.
    pub fn from_figment(figment: &Figment) -> Result<Self, MetadataError> {
        let config: Self = figment
            .extract()
            .map_err(|e| MetadataError::Config(format!("metadata.raft: {e}")))?;
        let bad = |what: &str| Err(MetadataError::Config(format!("metadata.raft.{what}")));
        if config.heartbeat_ms == 0 {
            return bad("heartbeat_ms must be at least 1");
        }
        if config.election_timeout_min_ms <= config.heartbeat_ms
            || config.election_timeout_max_ms <= config.election_timeout_min_ms
        {
            return bad(
                "election timeouts must satisfy heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms",
            );
        }
        if config.snapshot_every == 0 {
            return bad("snapshot_every must be at least 1");
        }
        if config.snapshot_chunk_bytes == 0
            || config.snapshot_chunk_bytes + (64 << 10) > u64::from(config.max_frame_bytes)
        {
            return bad("snapshot_chunk_bytes must be at least 1 and 64 KiB below max_frame_bytes");
        }
        let half_frame = usize::try_from(config.max_frame_bytes / 2).unwrap_or(usize::MAX);
        if config.batch_max_proposals == 0
            || config.batch_max_bytes == 0
            || config.batch_max_bytes > half_frame
        {
            return bad(
                "batch_max_proposals and batch_max_bytes must be at least 1, and batch_max_bytes at most half of max_frame_bytes",
            );
        }
        if config.propose_timeout_ms == 0 || config.rpc_timeout_ms == 0 {
            return bad("propose_timeout_ms and rpc_timeout_ms must be at least 1");
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    #[test]
    fn defaults_and_unknown_keys() -> Result<(), MetadataError> {
        assert_eq!(
            RaftConfig::from_figment(&Figment::new())?,
            RaftConfig::default()
        );
        let explicit = Figment::from(Serialized::default("bootstrap", false));
        assert_eq!(RaftConfig::from_figment(&explicit)?.bootstrap, Some(false));
        let unknown = Figment::from(Serialized::default("heartbeat", 1));
        let error = RaftConfig::from_figment(&unknown)
            .err()
            .map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(|e| e.contains("heartbeat")),
            "{error:?}"
        );
        Ok(())
    }
}
