//! The `wal` metadata backend: a segmented write-ahead log with group commit and snapshots,
//! replicated from a static primary to its followers, with epochs that fence an old primary
//! after a manual promotion, and members added or removed online one at a time.
//!
//! Registered as `wal`. Configuration is the `[metadata.wal]` table ([`WalConfig`]); the
//! design, the guarantees of each mode and the argument for them are in `docs/BACKENDS.md`.
//!
//! # Layout
//! - `lib.rs` — registration and the declared [`SYNC_GUARANTEES`] / [`ASYNC_GUARANTEES`].
//! - `config.rs` — [`WalConfig`], [`Mode`].
//! - `backend.rs` — [`WalBackend`]: open (recovery), the `MetadataBackend` methods, shutdown.
//! - `record.rs` — a log record and its CRC32C frame.
//! - `segment.rs` — segment files: names, recovery scan, a cursor reading records back.
//! - `log.rs` — the log: recovery (torn-tail truncation, corruption errors), append, roll,
//!   fsync, compaction, reset.
//! - `snapshot.rs` — snapshot files, written atomically.
//! - `storage.rs` — offline access to a stopped node's log: the state it recovers, a new log
//!   starting from a given state (`switchyard metadata export` / `import`).
//! - `term.rs` — the persisted epoch and its primary.
//! - `membership.rs` — adding and removing nodes online (static roles), the persisted
//!   members, the admin client [`request_membership_change`].
//! - `sealed.rs` — small checksummed files replaced atomically (epoch, members).
//! - `writer.rs` — the writer thread: group commit (one fsync per drained batch).
//! - `progress.rs` — the commit index from local and follower durability.
//! - `tail.rs` — the records a primary appended most recently, in memory for its links.
//! - `applier.rs` — applies committed entries in order, answers proposers, takes snapshots.
//! - `node.rs` — state shared by the tasks of one node.
//! - `protocol.rs` — replication messages and length-delimited framing.
//! - `replication/` — replication between nodes:
//!   - `mod.rs` — the role controller (lead, step down, follow).
//!   - `takeover.rs` — promotion: a majority's `Welcome`s, catch-up from the most up-to-date
//!     node, the epoch marker, the primary's readiness.
//!   - `link.rs` — the primary's link to each follower: handshake, then records, the commit
//!     index and heartbeats; acks.
//!   - `stream.rs` — both ends of the record stream: continue after the peer's last record
//!     or send a snapshot; `Append`s of bounded size.
//!   - `follower.rs` — the follower's side: accept or fence an epoch, apply, ack, answer a
//!     `Fetch`.
//!   - `serve.rs` — the cluster address: bind, accept, check the handshake, dispatch.
//!   - `client.rs` — one-shot connections out: the admin client [`request_promotion`],
//!     extension connections ([`connect_extension`]) for a backend that drives the roles
//!     itself ([`Roles::External`]), forwarded proposals.
//! - `fuzzing.rs` — (feature `fuzzing`) the decoders above, for the fuzz targets in
//!   `broker/fuzz`.
//!
//! # Invariants
//! - Only the writer thread writes segment files; it holds no lock while it fsyncs.
//! - A proposal is answered only after it is durable as the mode declares *and* applied on
//!   this node.
//! - A node persists an epoch before it acks anything in it or writes as its primary, and
//!   refuses older epochs from then on.
//! - Nodes apply only committed entries; an uncommitted tail that a new primary does not
//!   have is discarded by snapshot catch-up, never applied.

mod applier;
mod backend;
mod config;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod log;
mod membership;
mod node;
mod progress;
mod protocol;
mod record;
mod replication;
mod sealed;
mod segment;
mod snapshot;
pub mod storage;
mod tail;
mod term;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use switchyard_backend_api::{
    Admin, AdminContext, AdminFuture, ClusterView, Durability, Failover, Guarantees, LossWindow,
    MembershipChange, MetadataBackend, Mode as RegisteredMode, NodeId, OpenContext, OpenFuture,
    ReadConsistency, Registration,
};

pub use backend::{Replication, Roles, WalBackend, WalMember, WalOptions, cluster_members};
pub use config::{Mode, WalConfig};
pub use membership::request_membership_change;
pub use replication::{connect_extension, request_promotion};

/// Registry name.
pub const NAME: &str = "wal";

/// How long `switchyard cluster promote` waits for the promoted node's answer.
const PROMOTION_TIMEOUT: Duration = Duration::from_secs(30);

/// `sync` mode (the default): acknowledged once a majority of all nodes has it fsynced.
pub const SYNC_GUARANTEES: Guarantees = Guarantees {
    durability: Durability::QuorumFsync,
    reads: ReadConsistency::Local,
    failover: Failover::Manual,
    loss_window: LossWindow::Nothing,
    multi_node: true,
};

/// `async` mode: acknowledged once the primary has it fsynced.
pub const ASYNC_GUARANTEES: Guarantees = Guarantees {
    durability: Durability::LocalFsync,
    reads: ReadConsistency::Local,
    failover: Failover::Manual,
    loss_window: LossWindow::UnreplicatedTail,
    multi_node: true,
};

inventory::submit! {
    Registration {
        name: NAME,
        description: "segmented write-ahead log with group commit and snapshots; static primary \
                      streams to followers (sync: quorum fsync, async: local fsync); manual \
                      promotion fenced by epochs",
        guarantees: SYNC_GUARANTEES,
        modes: &[
            RegisteredMode {
                name: "sync",
                config: &[("mode", "sync")],
                guarantees: SYNC_GUARANTEES,
            },
            RegisteredMode {
                name: "async",
                config: &[("mode", "async")],
                guarantees: ASYNC_GUARANTEES,
            },
        ],
        admin: Admin {
            promote: Some(promote),
            change_membership: Some(change_membership),
        },
        storage: Some(storage::STORAGE),
        open,
    }
}

/// `switchyard cluster promote N`: ask node N to take over as primary.
fn promote(context: AdminContext, node: NodeId) -> AdminFuture<u64> {
    Box::pin(async move {
        let config = WalConfig::from_figment(&context.config)?;
        let addr = context.address_of(node)?;
        request_promotion(
            addr,
            &config.cluster_id,
            &context.credentials,
            node,
            PROMOTION_TIMEOUT,
        )
        .await
    })
}

/// `switchyard cluster add-node` / `remove-node`: ask the peers, the changed node last. The
/// deadline covers a new node's catch-up.
fn change_membership(context: AdminContext, change: MembershipChange) -> AdminFuture<ClusterView> {
    Box::pin(async move {
        let config = WalConfig::from_figment(&context.config)?;
        let nodes = context.peers_asking_last(change.node());
        let timeout = Duration::from_millis(
            config
                .catch_up_timeout_ms
                .saturating_add(config.propose_timeout_ms.saturating_mul(2)),
        );
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
        let backend: Arc<dyn MetadataBackend> = Arc::new(WalBackend::open(context).await?);
        Ok(backend)
    })
}
