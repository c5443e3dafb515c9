//! The `raft` metadata backend: every metadata write is an entry in an openraft 0.9 log stored
//! in RocksDB, applied in log order to a [`MetadataState`](switchyard_backend_api::MetadataState)
//! through [`AppliedState`](switchyard_backend_api::AppliedState).
//!
//! Registered as `raft`. Configuration is the `[metadata.raft]` table ([`RaftConfig`]); the
//! design, the declared guarantees and the argument for each are in `docs/BACKENDS.md`.
//!
//! # Layout
//! - `lib.rs` — registration and the declared [`GUARANTEES`].
//! - `config.rs` — [`RaftConfig`].
//! - `types.rs` — openraft's type configuration (commands in, apply verdicts out).
//! - `store.rs` — RocksDB log storage (column families `log`, `meta`, `sm`), and the state
//!   machine persisted as snapshots of [`StateView`](switchyard_backend_api::StateView).
//! - `proposals.rs` — group commit: every proposal waiting at one moment becomes one log entry,
//!   proposed here or forwarded to the leader.
//! - `network.rs` — the TCP transport: handshake, length-delimited codec frames, openraft's
//!   RPCs, forwarded proposals and read-index requests.
//! - `backend.rs` — [`RaftBackend`]: open, bootstrap, propose (forwarding), linearizable reads,
//!   membership changes, readiness, shutdown.
//! - `storage.rs` — [`storage::STORAGE`]: a stopped node's store read and initialised offline
//!   (`switchyard metadata export` / `import`).
//!
//! # Invariants
//! - Opening never waits on consensus: openraft starts, and readiness is observed through
//!   `cluster()` (a leader is known and this node applied what it saw committed).
//! - A node initializes a cluster only while its store is empty, only when the bootstrap rule
//!   names it, and only if no reachable peer reports an initialized cluster.
//! - `propose` answers only after the entry is committed by a quorum (each member fsynced it)
//!   and applied on this node, forwarded or not.
//! - Only committed entries are applied; the state is rebuilt on restart from the last
//!   snapshot plus the log up to the persisted commit index.

mod backend;
mod config;
mod network;
mod proposals;
pub mod storage;
mod store;
mod types;

use std::sync::Arc;
use std::time::Duration;

use switchyard_backend_api::{
    Admin, AdminContext, AdminFuture, ClusterView, Durability, Failover, Guarantees, LossWindow,
    MembershipChange, MetadataBackend, OpenContext, OpenFuture, ReadConsistency, Registration,
};

pub use backend::RaftBackend;
pub use config::RaftConfig;
pub use network::request_membership_change;

/// Registry name.
pub const NAME: &str = "raft";

/// Quorum-fsynced writes, linearizable reads, automatic failover, nothing lost while a
/// majority of voters keeps its disk.
pub const GUARANTEES: Guarantees = Guarantees {
    durability: Durability::QuorumFsync,
    reads: ReadConsistency::Linearizable,
    failover: Failover::Automatic,
    loss_window: LossWindow::Nothing,
    multi_node: true,
};

inventory::submit! {
    Registration {
        name: NAME,
        description: "openraft log in RocksDB; quorum fsync, linearizable reads, automatic \
                      failover, followers forward writes to the leader",
        guarantees: GUARANTEES,
        modes: &[],
        admin: Admin {
            promote: None,
            change_membership: Some(change_membership),
        },
        storage: Some(storage::STORAGE),
        open,
    }
}

/// `switchyard cluster add-node` / `remove-node`: ask the peers, the changed node last.
fn change_membership(context: AdminContext, change: MembershipChange) -> AdminFuture<ClusterView> {
    Box::pin(async move {
        let config = RaftConfig::from_figment(&context.config)?;
        let nodes = context.peers_asking_last(change.node());
        let timeout = Duration::from_millis(config.propose_timeout_ms.saturating_mul(2));
        request_membership_change(
            &nodes,
            &config.cluster_id,
            &context.credentials,
            change,
            timeout,
        )
        .await
    })
}

fn open(context: OpenContext) -> OpenFuture {
    Box::pin(async move {
        let backend: Arc<dyn MetadataBackend> = Arc::new(RaftBackend::open(context).await?);
        Ok(backend)
    })
}
