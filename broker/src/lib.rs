//! The Switchyard broker.
//!
//! A Switchyard process is one Kafka broker plus one node of a metadata backend. The backend —
//! any compiled in, `switchyard backends` lists them — is chosen at start-up by name from the
//! registry in `switchyard-backend-api`; the broker only ever sees it as an
//! `Arc<dyn MetadataBackend>` and its `Registration`, and its source names no backend.
//!
//! It is the only crate that knows the Kafka protocol. Partition logs live in `switchyard-log`
//! (record batches on disk; it knows Kafka's batch format but no request, no metadata).
//!
//! # Layout
//! - `main.rs` — the `switchyard` binary: parses the command line, sets up logging, runs a
//!   command; the only place that uses `anyhow`.
//! - [`cli`] — the command line ([`cli::Cli`], one [`cli::Command`] variant per subcommand).
//! - [`config`] — [`Config`]: figment layering (defaults < TOML file < `SWITCHYARD_*` env <
//!   flags) and validation, with [`ConfigError`].
//! - [`backends`] — which backends this binary links ([`backends::LINKED_BACKENDS`]), the
//!   default choice among them, and the `switchyard backends` listing.
//! - [`broker`] — [`broker::Broker`]: what connections share, registration, group placement.
//! - [`kafka`] — the listener, request dispatch, one handler per API, SASL
//!   ([`kafka::sasl`]: PLAIN, SCRAM, and the cluster secret between brokers), and the peer
//!   client brokers use to heartbeat and fetch.
//! - [`group`] — the group coordinator: rebalances and session timers in a state machine
//!   without I/O ([`group::machine`]) run by an async driver, and which broker coordinates
//!   which group ([`switchyard_backend_api::MetadataState::group_coordinator`]).
//! - [`transactions`] — the transaction coordinator: transactional producers' state as
//!   metadata, markers written through the partitions' leaders, expiry; what to do is decided
//!   without I/O ([`transactions::machine`]).
//! - `txn_index` — a partition's open and aborted transactions, from its log: the last stable
//!   offset and a Fetch's `aborted_transactions`.
//! - [`liveness`] — broker heartbeats to the metadata leader's broker and fencing.
//! - [`leaders`] — elections beyond failover: ElectLeaders (preferred, unclean) and the
//!   automatic preferred-leader rebalancing.
//! - [`replicas`] — the partitions stored here, with idempotent-producer state and high
//!   watermarks.
//! - [`cleaner`] — the log cleaner: compaction of the logs of compacted topics, each replica
//!   on its own.
//! - [`replication`] — follower fetch, the ISR and the high watermark.
//! - `conformance` (feature `conformance`, off by default) — `switchyard conformance`: the
//!   fault runs of every linked backend and the generated report; and the deliberately broken
//!   broker behaviours (`SWITCHYARD_FLAW`) the data-path fault runs must catch.
//! - [`status`] — `switchyard cluster status`, over DescribeCluster, DescribeQuorum and
//!   DescribeConfigs (each node's `metadata.backend`).
//! - [`export`] — `switchyard metadata export` / `import`: a node's metadata from one backend
//!   into the export file and from it into another backend (backend switches, backups).
//! - [`users`] — `switchyard user`: SCRAM credentials over AlterUserScramCredentials and
//!   DescribeUserScramCredentials.
//! - [`acls`] — `switchyard acl`: ACL bindings over CreateAcls, DescribeAcls, DeleteAcls.
//! - [`ops`] — `switchyard topic`, `group`, `produce`, `consume`: operator commands over the
//!   Kafka protocol, each request answered by the broker that must (leaders, coordinators).
//! - [`telemetry`] — metrics: the names, the process-wide recorder, the state read at each
//!   scrape, and [`telemetry::Metered`], which times every backend's proposals alike.
//! - [`admin`] — the admin HTTP listener: `/metrics`, `/health`, `/ready`.
//! - [`serve`] — `switchyard serve`: open the backend, start the listener and the broker's
//!   tasks, stop on a signal.
//!
//! # Invariants
//! - `memory` is never chosen unless asked for by name: losing all metadata on restart must be
//!   a deliberate choice.
//! - Each backend reads only its own `[metadata.<name>]` table; the broker knows no
//!   backend-specific setting.
//! - Opening a backend never waits for consensus; readiness is followed through
//!   `MetadataBackend::cluster`.

pub mod acls;
pub mod admin;
pub mod backends;
pub mod broker;
pub mod cleaner;
pub mod cli;
pub mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod export;
pub mod group;
pub mod kafka;
pub mod leaders;
pub mod liveness;
pub mod ops;
pub mod replicas;
pub mod replication;
pub mod serve;
pub mod status;
pub mod telemetry;
pub mod transactions;
mod txn_index;
pub mod users;

pub use config::{Config, ConfigError};
