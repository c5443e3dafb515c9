//! Errors. [`Rejection`] is the deterministic verdict of apply — every replica reaches the same
//! one — and maps 1:1 to a Kafka error code in the broker. [`MetadataError`] is what a backend
//! call can fail with: a rejection, or a condition of the backend itself (not leader, not ready,
//! timeout, storage, network).

use serde::{Deserialize, Serialize};

use crate::ids::{BrokerId, ClusterId, GroupId, MemberId, NodeId, TopicId};
use crate::security::ScramMechanism;

/// Why apply refused a command. Deterministic: it depends only on the state and the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The cluster already has a different id.
    #[error("cluster id is already {existing}")]
    ClusterIdMismatch {
        /// The id already set.
        existing: ClusterId,
    },
    /// Broker ids are non-negative.
    #[error("invalid broker id {id}")]
    InvalidBrokerId {
        /// The id.
        id: BrokerId,
    },
    /// A broker registered without a host, or with a listener without a name or host, or
    /// two listeners of one name.
    #[error(
        "broker {id} registered without a host, or with listeners unnamed, hostless or named twice"
    )]
    InvalidBrokerAddress {
        /// The broker.
        id: BrokerId,
    },
    /// No broker with this id is registered.
    #[error("broker {id} is not registered")]
    UnknownBroker {
        /// The broker.
        id: BrokerId,
    },
    /// A fence aimed at an incarnation the broker no longer has.
    #[error("broker {id} is at incarnation {current}, not {requested}")]
    StaleBrokerIncarnation {
        /// The broker.
        id: BrokerId,
        /// Its incarnation.
        current: u64,
        /// The incarnation the command named.
        requested: u64,
    },
    /// The topic name breaks Kafka's naming rules.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName {
        /// The name.
        name: String,
        /// Which rule.
        reason: String,
    },
    /// A topic with this name exists.
    #[error("topic {name} already exists")]
    TopicAlreadyExists {
        /// The name.
        name: String,
    },
    /// A topic with this id exists.
    #[error("topic id {id} is already in use")]
    TopicIdAlreadyExists {
        /// The id.
        id: TopicId,
    },
    /// No topic with this name.
    #[error("unknown topic {name}")]
    UnknownTopic {
        /// The name.
        name: String,
    },
    /// No such topic or partition.
    #[error("unknown topic or partition {topic}-{partition}")]
    UnknownTopicOrPartition {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
    },
    /// Partition count is invalid (zero, or not above the current count).
    #[error("invalid partitions: {reason}")]
    InvalidPartitions {
        /// Details.
        reason: String,
    },
    /// Replication factor is invalid.
    #[error("invalid replication factor: {reason}")]
    InvalidReplicationFactor {
        /// Details.
        reason: String,
    },
    /// A replica list is invalid (duplicates, unknown brokers, wrong length).
    #[error("invalid replica assignment: {reason}")]
    InvalidReplicaAssignment {
        /// Details.
        reason: String,
    },
    /// A configuration entry is invalid.
    #[error("invalid config: {reason}")]
    InvalidConfig {
        /// Details.
        reason: String,
    },
    /// An `AlterPartition` raced another change.
    #[error("partition {topic}-{partition} is at epoch {current}, not {requested}")]
    StalePartitionEpoch {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// Current partition epoch.
        current: i32,
        /// Epoch the command named.
        requested: i32,
    },
    /// An ISR that is not a subset of the replicas, has duplicates, or lacks the leader.
    #[error("invalid ISR: {reason}")]
    InvalidIsr {
        /// Details.
        reason: String,
    },
    /// A fenced or unregistered broker cannot join an ISR or lead.
    #[error("broker {broker} is fenced or not registered")]
    IneligibleReplica {
        /// The broker.
        broker: BrokerId,
    },
    /// Offsets that cannot be (negative, or log start above high watermark).
    #[error("invalid offsets: {reason}")]
    InvalidOffsets {
        /// Details.
        reason: String,
    },
    /// No such group.
    #[error("group {group} does not exist")]
    GroupNotFound {
        /// The group.
        group: GroupId,
    },
    /// The group still has members.
    #[error("group {group} is not empty")]
    NonEmptyGroup {
        /// The group.
        group: GroupId,
    },
    /// The command's generation is not the group's.
    #[error("group is at generation {current}, not {requested}")]
    IllegalGeneration {
        /// The group's generation.
        current: i32,
        /// The generation the command named.
        requested: i32,
    },
    /// The member is not in the group's current generation.
    #[error("unknown member {member}")]
    UnknownMemberId {
        /// The member.
        member: MemberId,
    },
    /// Only the generation's leader may set the assignment.
    #[error("member {member} is not the group leader")]
    NotGroupLeader {
        /// The member.
        member: MemberId,
    },
    /// The protocol type differs from the one the group's members use.
    #[error("inconsistent group protocol: {reason}")]
    InconsistentGroupProtocol {
        /// Details.
        reason: String,
    },
    /// A generation whose member list, leader and protocol do not fit together.
    #[error("invalid group members: {reason}")]
    InvalidGroupMembers {
        /// Details.
        reason: String,
    },
    /// The producer id space is used up.
    #[error("producer ids exhausted")]
    ProducerIdsExhausted,
    /// A producer-id block size outside 1..=MAX_PRODUCER_ID_BLOCK.
    #[error("invalid producer id block size {count}")]
    InvalidProducerIdCount {
        /// The requested size.
        count: u32,
    },
    /// One command of a batch was rejected, so none applied.
    #[error("batch command {index} rejected: {cause}")]
    BatchFailed {
        /// Position of the rejected command.
        index: u32,
        /// Its rejection.
        cause: Box<Rejection>,
    },
    /// A SCRAM credential to delete does not exist.
    #[error("user {user} has no {mechanism} credential")]
    UnknownScramCredential {
        /// The user.
        user: String,
        /// The mechanism.
        mechanism: ScramMechanism,
    },
    /// A SCRAM credential out of bounds (iterations, key or salt length, user name).
    #[error("unacceptable credential for user {user}: {reason}")]
    UnacceptableCredential {
        /// The user.
        user: String,
        /// Which bound.
        reason: String,
    },
    /// One request names a user's mechanism twice.
    #[error("user {user}'s {mechanism} credential is altered twice in one request")]
    DuplicateScramMechanism {
        /// The user.
        user: String,
        /// The mechanism.
        mechanism: ScramMechanism,
    },
    /// An ACL binding that cannot be stored.
    #[error("invalid ACL: {reason}")]
    InvalidAcl {
        /// Why.
        reason: String,
    },
    /// A transactional id that cannot be stored (empty).
    #[error("invalid transactional id {transactional_id:?}")]
    InvalidTransactionalId {
        /// The id.
        transactional_id: String,
    },
    /// A `transaction.timeout.ms` that is not positive.
    #[error("invalid transaction timeout {timeout_ms} ms")]
    InvalidTransactionTimeout {
        /// The timeout asked for.
        timeout_ms: i32,
    },
    /// The command acts for an older epoch of the producer: another producer took the
    /// transactional id over (`PRODUCER_FENCED`).
    #[error("producer epoch {requested} of {transactional_id} is fenced by epoch {current}")]
    ProducerFenced {
        /// The transactional id.
        transactional_id: String,
        /// The current epoch.
        current: i16,
        /// The epoch the command acted in.
        requested: i16,
    },
    /// The command acts for an epoch newer than the current one (`INVALID_PRODUCER_EPOCH`).
    #[error("producer epoch {requested} of {transactional_id} is newer than the current {current}")]
    InvalidProducerEpoch {
        /// The transactional id.
        transactional_id: String,
        /// The current epoch.
        current: i16,
        /// The epoch the command acted in.
        requested: i16,
    },
    /// The transactional id is unknown or holds another producer id
    /// (`INVALID_PRODUCER_ID_MAPPING`).
    #[error("producer id {producer_id} is not the one {transactional_id} holds")]
    InvalidProducerIdMapping {
        /// The transactional id.
        transactional_id: String,
        /// The producer id the command named.
        producer_id: i64,
    },
    /// The transaction is being completed; try again (`CONCURRENT_TRANSACTIONS`).
    #[error("the transaction of {transactional_id} is being completed")]
    ConcurrentTransactions {
        /// The transactional id.
        transactional_id: String,
    },
    /// The transaction is not in a state the command applies to (`INVALID_TXN_STATE`).
    #[error("the transaction of {transactional_id} is {status}: {reason}")]
    InvalidTxnState {
        /// The transactional id.
        transactional_id: String,
        /// Its state.
        status: String,
        /// What was asked.
        reason: String,
    },
    /// The proposer no longer coordinates the group (`NOT_COORDINATOR`): it was fenced,
    /// restarted, or the group moved to another broker.
    #[error("broker {proposer} (incarnation {incarnation}) does not coordinate group {group}")]
    NotCoordinator {
        /// The group.
        group: GroupId,
        /// The broker that proposed.
        proposer: BrokerId,
        /// Its incarnation when it proposed.
        incarnation: u64,
    },
    /// The proposer no longer coordinates the transactional id (`NOT_COORDINATOR`): it was
    /// fenced, restarted, or the id moved to another broker.
    #[error(
        "broker {proposer} (incarnation {incarnation}) does not coordinate transactional id {transactional_id}"
    )]
    NotTransactionCoordinator {
        /// The transactional id.
        transactional_id: String,
        /// The broker that proposed.
        proposer: BrokerId,
        /// Its incarnation when it proposed.
        incarnation: u64,
    },
}

/// Why a backend call failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The command was applied and refused; the log position was consumed.
    #[error("rejected: {0}")]
    Rejected(#[from] Rejection),
    /// This node cannot take writes and did not forward; `leader` is the node that can, if
    /// known. Nothing was written locally.
    #[error("not the metadata leader (leader: {})", leader.map_or("unknown".to_owned(), |l| l.to_string()))]
    NotLeader {
        /// The current leader, if known.
        leader: Option<NodeId>,
    },
    /// The backend is not ready yet (recovering, electing, catching up). Retriable.
    #[error("metadata backend not ready: {reason}")]
    NotReady {
        /// What it is waiting for.
        reason: String,
    },
    /// The deadline passed. For a proposal the outcome is unknown: it may still apply.
    #[error("timed out after {after_ms} ms waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The deadline, in milliseconds.
        after_ms: u64,
    },
    /// The backend does not offer this operation (see its [`Guarantees`](crate::Guarantees)).
    #[error("unsupported by this backend: {what}")]
    Unsupported {
        /// The operation.
        what: String,
    },
    /// The backend is shutting down or has shut down.
    #[error("metadata backend is shut down")]
    ShutDown,
    /// Local storage failed.
    #[error("storage: {0}")]
    Storage(String),
    /// Talking to another node failed.
    #[error("network: {0}")]
    Network(String),
    /// Bytes that do not decode.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// Bad configuration.
    #[error("config: {0}")]
    Config(String),
    /// No backend of that name is compiled into this binary.
    #[error("unknown metadata backend {name:?}; available: {}", available.join(", "))]
    UnknownBackend {
        /// The name asked for.
        name: String,
        /// The names compiled in.
        available: Vec<String>,
    },
    /// The command encodes to more than
    /// [`MAX_COMMAND_BYTES`](crate::MAX_COMMAND_BYTES); nothing was written. Not retriable.
    #[error("metadata command of {size} bytes is larger than the limit of {max} bytes")]
    CommandTooLarge {
        /// Its encoded size.
        size: u64,
        /// The limit.
        max: u64,
    },
}

impl MetadataError {
    /// Whether retrying the same call later may succeed (leader moved, not ready, timed out).
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            Self::NotLeader { .. }
                | Self::NotReady { .. }
                | Self::Timeout { .. }
                | Self::Network(_)
        )
    }

    /// The rejection, if apply refused the command.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Self::Rejected(r) => Some(r),
            _ => None,
        }
    }
}

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// No bytes at all.
    #[error("empty input")]
    Empty,
    /// Written by a format version this build does not read.
    #[error("format version {found} is not supported (this build reads {oldest} to {newest})")]
    UnsupportedVersion {
        /// Version byte found.
        found: u8,
        /// The oldest version this build reads.
        oldest: u8,
        /// The version this build writes, the newest it reads.
        newest: u8,
    },
    /// The body did not decode.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The body decoded but bytes were left over.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
    /// The value could not be encoded.
    #[error("encode: {0}")]
    Encode(String),
}
