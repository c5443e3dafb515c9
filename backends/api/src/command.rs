//! [`MetadataCommand`]: every mutation of the metadata state, and [`Outcome`]: what applying one
//! produced. Commands are proposed, replicated, stored on disk and applied on every replica, so
//! they carry every id and timestamp the mutation needs; apply never invents one.

use serde::{Deserialize, Serialize};

use crate::error::{MetadataError, Rejection};
use crate::ids::{BrokerId, ClusterId, GroupId, MemberId, ProducerId, TopicId};
use crate::security::{AclBinding, AclFilter, ScramDeletion, ScramUpsertion};
use crate::state::{BrokerEndpoint, GroupMember};

/// A mutation of [`MetadataState`](crate::MetadataState). Apply validates every command and
/// either applies all of it or nothing, returning a [`Rejection`] in the latter case. Commands
/// that name several independent objects (`CreateTopics`, `DeleteTopics`, `DeleteGroups`)
/// report one result per object, the way Kafka's own APIs do; [`MetadataCommand::Batch`] makes
/// any list of commands all-or-nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MetadataCommand {
    /// Set the cluster id once. Re-proposing the same id is a no-op; a different id is refused.
    InitCluster {
        /// The id, chosen by the proposer.
        cluster_id: ClusterId,
    },
    /// Register a broker, or re-register it after a restart: bumps its incarnation, unfences
    /// it, and makes it leader of leaderless partitions it may lead. A broker registering again
    /// without having been fenced first leaves its ISRs and leaderships as `FenceBroker` would
    /// (a new leader epoch for each partition it led), then takes back the leaderless ones.
    RegisterBroker {
        /// Broker id (non-negative).
        id: BrokerId,
        /// Advertised host.
        host: String,
        /// Advertised port.
        port: u16,
        /// Optional rack.
        rack: Option<String>,
        /// Every listener the broker advertises, by name (`host:port` is its inter-broker
        /// listener's); empty from a build without named listeners.
        #[serde(default, deserialize_with = "crate::codec::added_in_v4")]
        listeners: Vec<BrokerEndpoint>,
    },
    /// Fence one incarnation of a broker (it missed its session timeout): it leaves the ISR of
    /// its partitions and a new leader is elected from the remaining live ISR.
    FenceBroker {
        /// Broker id.
        id: BrokerId,
        /// The incarnation being fenced; a fence for an older incarnation is refused.
        incarnation: u64,
    },
    /// Remove a broker from the cluster (fencing it first).
    UnregisterBroker {
        /// Broker id.
        id: BrokerId,
    },
    /// Create topics, each atomically with its partition assignment. Each topic succeeds or
    /// fails on its own.
    CreateTopics {
        /// The topics.
        topics: Vec<NewTopic>,
    },
    /// Delete topics and their committed offsets. Each topic succeeds or fails on its own.
    DeleteTopics {
        /// Topic names.
        names: Vec<String>,
    },
    /// Add partitions to a topic.
    CreatePartitions {
        /// Topic name.
        topic: String,
        /// Replica lists of the new partitions, in partition order.
        assignments: Vec<Vec<BrokerId>>,
    },
    /// Change topic configuration overrides.
    AlterTopicConfigs {
        /// Topic name.
        topic: String,
        /// Keys to set.
        set: Vec<(String, String)>,
        /// Keys to remove (back to the broker default).
        remove: Vec<String>,
    },
    /// Change a partition's leader and ISR (Kafka's AlterPartition), fenced by partition epoch.
    AlterPartition {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// The partition epoch the proposer saw; a mismatch is refused.
        partition_epoch: i32,
        /// New leader (must be in the new ISR), or `None` for leaderless.
        leader: Option<BrokerId>,
        /// New in-sync replica set.
        isr: Vec<BrokerId>,
    },
    /// Record partition high watermarks and log start offsets. Partitions that no longer exist
    /// are skipped (a checkpoint can race a topic deletion).
    CheckpointPartitionOffsets {
        /// The offsets.
        offsets: Vec<PartitionOffsets>,
    },
    /// Start a new generation of a consumer group (the end of a join phase), compare-and-set on
    /// the current generation so a retried proposal cannot bump it twice. An empty member list
    /// moves the group to Empty.
    StartGeneration {
        /// Group id; created if absent (an absent group is at generation 0).
        group: GroupId,
        /// The generation the proposer saw.
        expected_generation: i32,
        /// Protocol type (`consumer`).
        protocol_type: String,
        /// Chosen protocol; `None` exactly when `members` is empty.
        protocol: Option<String>,
        /// Leader member; `None` exactly when `members` is empty.
        leader: Option<MemberId>,
        /// Members of the new generation; their assignments start empty.
        members: Vec<GroupMember>,
    },
    /// Store the leader's assignment for the current generation (SyncGroup).
    SetGroupAssignment {
        /// Group id.
        group: GroupId,
        /// Generation the assignment is for.
        generation: i32,
        /// The member that computed it; must be the generation's leader.
        leader: MemberId,
        /// Member → assignment. Members not listed get an empty assignment.
        assignments: Vec<(MemberId, Vec<u8>)>,
    },
    /// Delete empty groups and their committed offsets. Each group succeeds or fails on its own.
    DeleteGroups {
        /// Group ids.
        groups: Vec<GroupId>,
    },
    /// Commit offsets for many partitions atomically.
    CommitOffsets {
        /// Group id.
        group: GroupId,
        /// Member and generation of the committer; `None` for a commit from outside any
        /// generation (Kafka's generation `-1`), allowed only while the group has no members.
        generation: Option<GenerationCheck>,
        /// The offsets.
        offsets: Vec<OffsetCommit>,
        /// Commit time chosen by the proposer (ms since the Unix epoch).
        commit_timestamp_ms: i64,
    },
    /// Hand out a block of `count` consecutive producer ids.
    AllocateProducerIds {
        /// Block size, 1..=[`MAX_PRODUCER_ID_BLOCK`].
        count: u32,
    },
    /// Apply every command or none: the first rejection rejects the whole batch.
    Batch {
        /// The commands, applied in order.
        commands: Vec<MetadataCommand>,
    },
    /// Store and remove SCRAM credentials; all of one user's alterations apply, or none.
    AlterScramCredentials {
        /// Credentials to store, replacing the user's credential of that mechanism.
        upsertions: Vec<ScramUpsertion>,
        /// Credentials to remove.
        deletions: Vec<ScramDeletion>,
    },
    /// Add ACL bindings (adding one that exists changes nothing).
    CreateAcls {
        /// The bindings.
        acls: Vec<AclBinding>,
    },
    /// Remove every ACL binding each filter matches.
    DeleteAcls {
        /// The filters, applied in order.
        filters: Vec<AclFilter>,
    },
    /// Delete one empty group and its committed offsets if it is still at `generation`, the
    /// coordinator's view when it proposed: a deletion that outlived a coordinator move is
    /// refused (`IllegalGeneration`) instead of removing a group that moved on. Answers
    /// `GroupsDeleted` with the one result.
    DeleteGroupAt {
        /// The group.
        group: GroupId,
        /// The generation the coordinator saw.
        generation: i32,
    },
    /// Delete a group's committed offsets of these partitions (Kafka's OffsetDelete); the group
    /// must exist, partitions without an offset are skipped.
    DeleteOffsets {
        /// The group.
        group: GroupId,
        /// Topic and partition of each offset.
        partitions: Vec<(String, u32)>,
    },
    /// Change dynamic broker configs: one broker's (`broker`), or the cluster-wide defaults
    /// (`None`) every broker uses where it has no value of its own.
    AlterBrokerConfigs {
        /// The broker, or `None` for the cluster-wide defaults.
        broker: Option<BrokerId>,
        /// Keys to set.
        set: Vec<(String, String)>,
        /// Keys to remove (back to the next source: the cluster-wide default, then the static
        /// configuration).
        remove: Vec<String>,
    },
    /// A static member (KIP-345) rejoined with a new member id: within `generation`, the
    /// member `old` with `group_instance_id` becomes `new` (keeping its metadata, assignment
    /// and client details; the leader too if it led), so commits and syncs of the old id are refused
    /// from then on. Refused unless the group is at `generation` and `old` is its member with
    /// that instance id.
    ReplaceStaticMember {
        /// The group.
        group: GroupId,
        /// The generation the coordinator saw.
        generation: i32,
        /// The member's `group.instance.id`.
        group_instance_id: String,
        /// The member id being replaced.
        old: MemberId,
        /// The new member id.
        new: MemberId,
    },
    /// InitProducerId with a `transactional.id`: a new transactional id gets a producer id
    /// (from the same sequence as `AllocateProducerIds`) at epoch 0; a known one gets its next
    /// epoch (a new producer id once the epochs run out), fencing the previous one. A
    /// transaction left open is aborted first: it moves to PrepareAbort at the next epoch
    /// (`TransactionAborting`) and the caller retries once it completed.
    InitTransactionalId {
        /// The transactional id.
        transactional_id: String,
        /// `transaction.timeout.ms`, positive (the broker bounds it by
        /// `transaction.max.timeout.ms` before proposing).
        timeout_ms: i32,
        /// The producer id and epoch the producer holds, when it asks for its next epoch
        /// (KIP-360); they must be the current ones.
        current: Option<(i64, i16)>,
        /// The proposer's clock (ms since the Unix epoch).
        now_ms: i64,
    },
    /// AddPartitionsToTxn and AddOffsetsToTxn: partitions and groups join the producer's
    /// transaction, which opens (Ongoing) if none is. Every partition must exist.
    AddToTxn {
        /// The transactional id.
        transactional_id: String,
        /// The producer id it acts for.
        producer_id: i64,
        /// The epoch it acts in.
        producer_epoch: i16,
        /// Partitions to add.
        partitions: Vec<(String, u32)>,
        /// Groups whose offsets the transaction will commit.
        groups: Vec<GroupId>,
        /// The proposer's clock.
        now_ms: i64,
    },
    /// EndTxn: the open transaction moves to PrepareCommit or PrepareAbort. Ending one that
    /// already completed the same way is answered as done (a retried request).
    EndTxn {
        /// The transactional id.
        transactional_id: String,
        /// The producer id it acts for.
        producer_id: i64,
        /// The epoch it acts in.
        producer_epoch: i16,
        /// Commit, or abort.
        commit: bool,
        /// The proposer's clock.
        now_ms: i64,
    },
    /// The markers of a preparing transaction are written: PrepareCommit becomes
    /// CompleteCommit (and the transaction's offsets become its groups' committed offsets),
    /// PrepareAbort CompleteAbort, and the transaction holds nothing any more.
    CompleteTxn {
        /// The transactional id.
        transactional_id: String,
        /// The producer id the markers were written for.
        producer_id: i64,
        /// The epoch the markers were written in.
        producer_epoch: i16,
        /// The proposer's clock.
        now_ms: i64,
    },
    /// TxnOffsetCommit: offsets `group` commits as part of the producer's open transaction,
    /// to which the group was added. They are stored with the transaction and become the
    /// group's committed offsets when it commits (`CompleteTxn`); an abort drops them. A
    /// `generation` is checked as an OffsetCommit's is; without one (Kafka's generation `-1`)
    /// the group is not checked.
    TxnOffsetCommit {
        /// The transactional id.
        transactional_id: String,
        /// The producer id it acts for.
        producer_id: i64,
        /// The epoch it acts in.
        producer_epoch: i16,
        /// The group.
        group: GroupId,
        /// Member and generation of the consumer whose offsets these are, if the producer
        /// sent them (KIP-447).
        generation: Option<GenerationCheck>,
        /// The offsets.
        offsets: Vec<OffsetCommit>,
        /// The proposer's clock.
        now_ms: i64,
    },
    /// The coordinator aborts a transaction open past its `transaction.timeout.ms`: it moves
    /// to PrepareAbort at the next epoch, fencing the producer that left it open. Refused
    /// unless it is still Ongoing at that producer id and epoch.
    AbortExpiredTxn {
        /// The transactional id.
        transactional_id: String,
        /// The producer id the coordinator saw.
        producer_id: i64,
        /// The epoch the coordinator saw.
        producer_epoch: i16,
        /// The proposer's clock.
        now_ms: i64,
    },
    /// The coordinator forgets a transactional id its producer has not used for
    /// `transactional.id.expiration.ms` (Kafka's expiration): refused unless the id is still
    /// at that producer id and epoch with no transaction open or completing. A producer that
    /// comes back later starts over with a new producer id.
    ExpireTransactionalId {
        /// The transactional id.
        transactional_id: String,
        /// The producer id the coordinator saw.
        producer_id: i64,
        /// The epoch the coordinator saw.
        producer_epoch: i16,
    },
    /// `CommitOffsets` as the group's coordinator proposes it: applied only while that
    /// incarnation of that broker still coordinates the group
    /// ([`crate::MetadataState::group_coordinator`]), else refused with
    /// [`crate::Rejection::NotCoordinator`]. A commit its coordinator stopped waiting for —
    /// proposed, then delayed past the coordinator's fencing or the group's move to another
    /// broker — so cannot land after commits made through the next coordinator and take the
    /// group's offsets back (Kafka fences these writes with the offsets partition's leader
    /// epoch).
    CoordinatedCommitOffsets {
        /// The proposing broker, the group's coordinator when it proposed.
        coordinator: BrokerId,
        /// Its incarnation then.
        incarnation: u64,
        /// Group id.
        group: GroupId,
        /// As `CommitOffsets`'.
        generation: Option<GenerationCheck>,
        /// The offsets.
        offsets: Vec<OffsetCommit>,
        /// Commit time chosen by the proposer (ms since the Unix epoch).
        commit_timestamp_ms: i64,
    },
    /// `TxnOffsetCommit` as the group's coordinator proposes it: applied only while that
    /// incarnation of that broker still coordinates the group, else refused with
    /// [`crate::Rejection::NotCoordinator`], as [`MetadataCommand::CoordinatedCommitOffsets`]
    /// is. A transactional commit its coordinator stopped waiting for so cannot land in the
    /// producer's next transaction, after the offsets that transaction committed through the
    /// next coordinator, and take them back.
    CoordinatedTxnOffsetCommit {
        /// The proposing broker, the group's coordinator when it proposed.
        coordinator: BrokerId,
        /// Its incarnation then.
        incarnation: u64,
        /// The transactional id.
        transactional_id: String,
        /// The producer id it acts for.
        producer_id: i64,
        /// The epoch it acts in.
        producer_epoch: i16,
        /// The group.
        group: GroupId,
        /// As `TxnOffsetCommit`'s.
        generation: Option<GenerationCheck>,
        /// The offsets.
        offsets: Vec<OffsetCommit>,
        /// The proposer's clock.
        now_ms: i64,
    },
    /// `EndTxn` as the transactional id's coordinator proposes it: applied only while that
    /// incarnation of that broker still coordinates the id, else refused with
    /// [`crate::Rejection::NotTransactionCoordinator`] (as Kafka's coordinator can write the
    /// decision only while it leads the id's transaction-state partition). An end that a
    /// coordinator read after it was paused or cut off — one its producer gave up on and sent
    /// again to the next coordinator, which ended that transaction — so cannot end the
    /// producer's next transaction, whose records would then commit without its offsets.
    CoordinatedEndTxn {
        /// The proposing broker, the id's coordinator when it proposed.
        coordinator: BrokerId,
        /// Its incarnation then.
        incarnation: u64,
        /// The transactional id.
        transactional_id: String,
        /// The producer id it acts for.
        producer_id: i64,
        /// The epoch it acts in.
        producer_epoch: i16,
        /// Commit (`true`) or abort.
        commit: bool,
        /// The proposer's clock.
        now_ms: i64,
    },
}

/// Largest producer-id block one [`MetadataCommand::AllocateProducerIds`] may take.
pub const MAX_PRODUCER_ID_BLOCK: u32 = 1_000_000;

/// The largest encoded command any backend accepts: 1 MiB, as Kafka bounds a group's or an
/// offset commit's record by `message.max.bytes`. Far below every backend's frame and entry
/// limits, so an accepted command can always be replicated, snapshotted and replayed.
pub const MAX_COMMAND_BYTES: usize = 1 << 20;

impl MetadataCommand {
    /// Refuse a command whose encoding is larger than [`MAX_COMMAND_BYTES`]. Every backend
    /// calls this at the top of `propose`, before anything is written or forwarded.
    pub fn check_size(&self) -> Result<(), MetadataError> {
        let size = crate::codec::encoded_len(self)?;
        if size > MAX_COMMAND_BYTES {
            return Err(MetadataError::CommandTooLarge {
                size: size as u64,
                max: MAX_COMMAND_BYTES as u64,
            });
        }
        Ok(())
    }
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTopic {
    /// Topic name (Kafka's rules: 1–249 of `[a-zA-Z0-9._-]`, not `.` or `..`).
    pub name: String,
    /// Topic id, chosen by the proposer.
    pub id: TopicId,
    /// Replica list per partition; every list has the same length (the replication factor).
    pub assignments: Vec<Vec<BrokerId>>,
    /// Configuration overrides.
    pub configs: Vec<(String, String)>,
}

/// Member and generation a commit claims to come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationCheck {
    /// Claimed generation.
    pub generation: i32,
    /// Claimed member.
    pub member: MemberId,
}

/// One partition's committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommit {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// Next offset to consume.
    pub offset: i64,
    /// Leader epoch, if the client sent one.
    pub leader_epoch: Option<i32>,
    /// Client metadata string.
    pub metadata: String,
}

/// One partition's offsets for a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOffsets {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// High watermark.
    pub high_watermark: i64,
    /// Log start offset, at most the high watermark.
    pub log_start_offset: i64,
}

/// What an applied command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Outcome {
    /// `InitCluster`: the cluster's id (the existing one if it was already set).
    ClusterInitialized {
        /// The cluster id.
        cluster_id: ClusterId,
    },
    /// `RegisterBroker`.
    BrokerRegistered {
        /// The broker's new incarnation.
        incarnation: u64,
    },
    /// `FenceBroker` or `UnregisterBroker`.
    BrokerFenced {
        /// Partitions whose leader or ISR changed.
        partitions_changed: u32,
    },
    /// `CreateTopics`: one result per requested topic, in request order.
    TopicsCreated {
        /// Per-topic id or rejection.
        results: Vec<Result<TopicId, Rejection>>,
    },
    /// `DeleteTopics`: one result per requested topic, in request order.
    TopicsDeleted {
        /// Per-topic id of the deleted topic, or rejection.
        results: Vec<Result<TopicId, Rejection>>,
    },
    /// `CreatePartitions`.
    PartitionsCreated {
        /// The topic's new partition count.
        partition_count: u32,
    },
    /// `AlterTopicConfigs`.
    TopicConfigsAltered,
    /// `AlterPartition`.
    PartitionAltered {
        /// The partition's leader epoch after the change.
        leader_epoch: i32,
        /// The partition's partition epoch after the change.
        partition_epoch: i32,
    },
    /// `CheckpointPartitionOffsets`.
    OffsetsCheckpointed {
        /// Entries recorded.
        applied: u32,
        /// Entries naming a partition that does not exist.
        skipped: u32,
    },
    /// `StartGeneration`.
    GenerationStarted {
        /// The new generation.
        generation: i32,
    },
    /// `SetGroupAssignment`.
    AssignmentSet,
    /// `DeleteGroups`: one result per requested group, in request order.
    GroupsDeleted {
        /// Per-group result.
        results: Vec<Result<(), Rejection>>,
    },
    /// `CommitOffsets`, `CoordinatedCommitOffsets`.
    OffsetsCommitted {
        /// Partitions committed.
        count: u32,
    },
    /// `AllocateProducerIds`.
    ProducerIdsAllocated {
        /// First id of the block.
        first: ProducerId,
        /// Block size.
        count: u32,
    },
    /// `Batch`: the outcome of each command, in order.
    Batch {
        /// Outcomes.
        outcomes: Vec<Outcome>,
    },
    /// `AlterScramCredentials`: one result per user, in order of first mention.
    ScramCredentialsAltered {
        /// User and whether all of its alterations applied.
        results: Vec<(String, Result<(), Rejection>)>,
    },
    /// `CreateAcls`: one result per binding, in request order.
    AclsCreated {
        /// Per-binding result.
        results: Vec<Result<(), Rejection>>,
    },
    /// `DeleteAcls`: per filter, in request order, the bindings it removed.
    AclsDeleted {
        /// Removed bindings per filter.
        results: Vec<Vec<AclBinding>>,
    },
    /// `DeleteOffsets`: how many committed offsets were removed.
    OffsetsDeleted {
        /// Offsets removed.
        deleted: u32,
    },
    /// `ReplaceStaticMember`.
    StaticMemberReplaced,
    /// `AlterBrokerConfigs`.
    BrokerConfigsAltered,
    /// `InitTransactionalId`: the producer id and epoch the transactional id holds now.
    TransactionalProducer {
        /// The producer id.
        producer_id: ProducerId,
        /// Its epoch.
        producer_epoch: i16,
    },
    /// `InitTransactionalId` found a transaction open: it is being aborted at this epoch;
    /// ask again once it completed.
    TransactionAborting {
        /// The producer id.
        producer_id: ProducerId,
        /// The epoch the abort is written in.
        producer_epoch: i16,
    },
    /// `AddToTxn`, `TxnOffsetCommit`, `CoordinatedTxnOffsetCommit`, `EndTxn`,
    /// `CoordinatedEndTxn`, `CompleteTxn` or `AbortExpiredTxn`: the transaction's state now.
    TransactionUpdated {
        /// Its state.
        status: crate::TxnStatus,
    },
    /// `ExpireTransactionalId`: the id is forgotten.
    TransactionalIdExpired,
}
