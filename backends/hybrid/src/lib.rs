//! The `hybrid` metadata backend, in construction: a small Raft group built on raft-rs
//! `RawNode` decides membership and which node leads the metadata stream (its term is the
//! WAL's fencing epoch), while the metadata itself flows through the replicated WAL of
//! `switchyard-backend-wal`.
//!
//! This crate holds the Raft side so far: the group's replicated state, the driver of the
//! Ready loop (tested over a simulated network), its RocksDB log, the per-node task that runs
//! it and the TCP transport between nodes. It is not registered as a backend yet; the WAL
//! wiring and the registration follow.
//!
//! # Layout
//! - `group.rs` — [`GroupState`] and [`GroupCommand`]: members, metadata leader, in-sync set.
//! - `driver.rs` — [`Driver`]: one node's `RawNode`, ticked, stepped and proposed into by
//!   its caller; [`Driver::on_ready`] persists, sends, applies and advances in raft-rs's order.
//! - `store.rs` — [`RocksLog`]: the Raft log, hard state, conf state and applied group state
//!   in RocksDB (column families `raft_log`, `raft_meta`), bootstrap of a founding node, and
//!   snapshots that carry the group state to nodes that join later.
//! - `runner.rs` — [`Runner`]: the one tokio task per node that ticks, steps, proposes and runs
//!   the Ready rounds, publishing a [`GroupView`].
//! - `transport.rs` — raft-rs messages over TCP: handshake (cluster id, node ids), one
//!   length-delimited frame per message, one reconnecting sender per peer.
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

mod driver;
mod group;
mod runner;
#[cfg(test)]
mod sim;
mod store;
mod transport;

pub use driver::{Applied, Driver, DriverError, GroupLog, Ticks};
pub use group::{GroupCommand, GroupState};
pub use runner::{GroupView, Request, Runner};
pub use store::RocksLog;
pub use transport::{Outbox, connect, serve};
