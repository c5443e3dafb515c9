//! The `hybrid` metadata backend: a small Raft group built on raft-rs `RawNode` decides
//! membership and which node leads the metadata stream — its term is the WAL's fencing
//! epoch — while the metadata itself flows through the replicated WAL of
//! `switchyard-backend-wal`, whose roles the group drives.
//!
//! Registered as `hybrid`. Configuration is the `[metadata.hybrid]` table ([`HybridConfig`]);
//! the design, the guarantees and the argument for them are in `docs/BACKENDS.md`.
//!
//! # Layout
//! - `lib.rs` — registration and the declared [`GUARANTEES`].
//! - `config.rs` — [`HybridConfig`].
//! - `backend.rs` — [`HybridBackend`]: open, the `MetadataBackend` methods, the tasks that
//!   make the WAL lead or follow as the group decides and report the in-sync set, shutdown.
//! - `group.rs` — [`GroupState`] and [`GroupCommand`]: members, metadata leader, in-sync set.
//! - `driver.rs` — [`Driver`]: one node's `RawNode`, ticked, stepped and proposed into by
//!   its caller; [`Driver::on_ready`] persists, sends, applies and advances in raft-rs's order.
//! - `store.rs` — [`RocksLog`]: the Raft log, hard state, conf state and applied group state
//!   in RocksDB (column families `raft_log`, `raft_meta`), bootstrap of a founding node, and
//!   snapshots that carry the group state to nodes that join later.
//! - `storage.rs` — offline access to a stopped node's metadata (the WAL's), for
//!   `switchyard metadata export` / `import`.
//! - `runner.rs` — [`Runner`]: the one tokio task per node that ticks, steps, proposes and runs
//!   the Ready rounds, publishing a [`GroupView`].
//! - `transport.rs` — traffic between nodes on the WAL's cluster address: raft-rs messages and
//!   forwarded proposals.
//! - `sim.rs` (tests) — a deterministic simulated network of drivers that can cut, isolate
//!   and recover links.
//!
//! # Invariants
//! - Every committed entry is applied on every node, once, in log order — including those
//!   `advance` hands back in its `LightReady`.
//! - Messages that must follow persistence are sent only after the Ready's entries and hard
//!   state are persisted.
//! - [`GroupState::apply`] is deterministic; the leader of a term is recorded only through
//!   that leader's own committed `Lead` entry.
//! - A node's WAL leads epoch `T` only after the node's own `Lead` entry of term `T` was
//!   applied while it was still the group's leader of `T`: one primary per epoch.

mod backend;
mod config;
mod driver;
mod group;
mod runner;
#[cfg(test)]
mod sim;
mod storage;
mod store;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use switchyard_backend_api::{
    Admin, AdminContext, AdminFuture, ClusterView, Durability, Failover, Guarantees, LossWindow,
    MembershipChange, MetadataBackend, OpenContext, OpenFuture, ReadConsistency, Registration,
};

pub use backend::HybridBackend;
pub use config::HybridConfig;
pub use driver::{Applied, Driver, DriverError, GroupLog, Ticks};
pub use group::{GroupCommand, GroupState};
pub use runner::{GroupView, Request, Runner};
pub use store::RocksLog;
pub use transport::{
    Answer, Call, CallError, Caller, Dial, Handler, Outbox, connect, request_membership_change,
    serve,
};

/// Registry name.
pub const NAME: &str = "hybrid";

/// Acknowledged once a majority of the nodes has the write fsynced in the WAL; local reads;
/// the group elects the next leader, which catches up from a majority before it writes.
pub const GUARANTEES: Guarantees = Guarantees {
    durability: Durability::QuorumFsync,
    reads: ReadConsistency::Local,
    failover: Failover::Automatic,
    loss_window: LossWindow::Nothing,
    multi_node: true,
};

inventory::submit! {
    Registration {
        name: NAME,
        description: "raft-rs group elects the metadata leader (its term fences the WAL); \
                      metadata in the replicated WAL, quorum fsync, local reads, automatic \
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
        let config = HybridConfig::from_figment(&context.config)?;
        let nodes = context.peers_asking_last(change.node());
        let timeout = Duration::from_millis(config.propose_timeout_ms.saturating_mul(4));
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
        let backend: Arc<dyn MetadataBackend> = Arc::new(HybridBackend::open(context).await?);
        Ok(backend)
    })
}
