//! The metadata contract of Switchyard.
//!
//! Cluster metadata — brokers, topics, partitions, consumer groups, committed offsets, producer
//! ids, the cluster id — is a [`MetadataState`] changed only by applying [`MetadataCommand`]s in
//! log order. A [`MetadataBackend`] replicates that log; which one runs is chosen by name from
//! the [registry](available_backends). This crate knows nothing of Kafka's wire format and
//! depends on no backend.
//!
//! # Layout
//! - `ids.rs` — id newtypes ([`BrokerId`], [`TopicId`], [`NodeId`], …).
//! - `state.rs` — [`MetadataState`] and the domain types it holds, with read accessors.
//! - `command.rs` — [`MetadataCommand`] and [`Outcome`].
//! - `apply.rs` — [`MetadataState::apply`], the deterministic state machine.
//! - `error.rs` — [`Rejection`] (apply's verdicts) and [`MetadataError`] (backend failures).
//! - `codec.rs` — the versioned encoding of commands and snapshots.
//! - `guarantees.rs` — [`Guarantees`], what a backend declares.
//! - `backend.rs` — the [`MetadataBackend`] trait, [`StateView`], [`ClusterView`].
//! - `applied.rs` — [`AppliedState`], the apply/publish/notify machinery every backend shares.
//! - `registry.rs` — [`Registration`], `inventory` collection, [`open_backend`]; [`Storage`],
//!   offline access to a stopped node's metadata.
//! - `export.rs` — the metadata export file (`switchyard metadata export` / `import`).
//! - `memory.rs` — the in-memory reference backend, registered as `memory`.
//! - `security.rs` — SCRAM credentials and ACL bindings: their types, the filter that matches
//!   bindings, and how apply changes them.
//! - `net.rs` — what every listener shares: accepting with a backoff, throttled warnings.
//! - `auth.rs` — the cluster handshake: both ends of every connection between nodes prove the
//!   shared [`ClusterSecret`] (HMAC-SHA-256 over fresh nonces) before anything else is read.
//! - `tls.rs` — rustls for every listener, and mutual TLS around cluster connections
//!   ([`tls::ClusterTls`], [`tls::ClusterStream`]).
//!
//! # Invariants
//! - `apply` reads no clock, no randomness and does no I/O; ids and times travel in commands.
//! - `apply` validates before it mutates: on `Err` the state is unchanged.
//! - Every write a backend acknowledges is applied locally before `propose` returns.

mod applied;
mod apply;
pub mod auth;
mod backend;
pub mod codec;
mod command;
mod error;
pub mod export;
mod guarantees;
mod ids;
pub mod memory;
pub mod net;
mod registry;
pub mod security;
mod state;
pub mod telemetry;
pub mod tls;
mod transactions;

pub use applied::{
    AppliedChange, AppliedState, CHANGE_STREAM_CAPACITY, Change, ChangeStream, StreamError,
};
pub use apply::{MAX_CLUSTER_PARTITIONS, MAX_TOPIC_NAME_LEN, validate_topic_name};
pub use auth::{ClusterCredentials, ClusterSecret, Principal};
pub use backend::{
    ClusterMember, ClusterView, MembershipChange, MetadataBackend, PowerCut, Proposed, Readiness,
    ReplicationProgress, Role, StateView,
};
pub use command::{
    GenerationCheck, MAX_COMMAND_BYTES, MAX_PRODUCER_ID_BLOCK, MetadataCommand, NewTopic,
    OffsetCommit, Outcome, PartitionOffsets,
};
pub use error::{CodecError, MetadataError, Rejection};
pub use guarantees::{Durability, Failover, Guarantees, LossWindow, ReadConsistency};
pub use ids::{BrokerId, ClusterId, GroupId, LogIndex, MemberId, NodeId, ProducerId, TopicId};
pub use registry::{
    Admin, AdminContext, AdminFuture, Mode, NodeIdentity, OpenContext, OpenFuture, Registration,
    Storage, StoredState, available_backends, find_backend, open_backend,
};
pub use state::{
    Broker, BrokerEndpoint, CommittedOffset, Configs, Group, GroupMember, MetadataState, OffsetKey,
    Partition, Topic,
};
pub use transactions::{Transaction, TxnStatus};
