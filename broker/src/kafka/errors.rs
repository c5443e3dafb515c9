//! The one mapping from the errors of the layers below — metadata, partitions, partition logs
//! — to Kafka error codes.

use kafka_protocol::error::ResponseError;
use switchyard_backend_api::{MetadataError, Rejection};
use switchyard_log::{BatchError, LogError};

use crate::replicas::PartitionError;

/// The Kafka error for a failed partition operation.
pub(crate) fn partition_error(error: &PartitionError) -> ResponseError {
    match error {
        PartitionError::NotLeader { .. } => ResponseError::NotLeaderOrFollower,
        PartitionError::NotEnoughReplicasAfterAppend { .. } => {
            ResponseError::NotEnoughReplicasAfterAppend
        }
        PartitionError::ReplicationTimedOut => ResponseError::RequestTimedOut,
        PartitionError::StaleProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        PartitionError::StaleCoordinatorEpoch { .. } => ResponseError::TransactionCoordinatorFenced,
        PartitionError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        PartitionError::TooManyIdempotentBatches { .. } => ResponseError::InvalidRecord,
        PartitionError::InvalidConfig(_) => ResponseError::InvalidConfig,
        PartitionError::Log(error) => log_error(error),
    }
}

impl From<PartitionError> for ResponseError {
    fn from(error: PartitionError) -> Self {
        partition_error(&error)
    }
}

/// The Kafka error for a failed partition-log operation.
pub(crate) fn log_error(error: &LogError) -> ResponseError {
    match error {
        LogError::InvalidBatch(BatchError::UnsupportedMagic { .. }) => {
            ResponseError::UnsupportedForMessageFormat
        }
        LogError::InvalidBatch(_) | LogError::NoRecords => ResponseError::CorruptMessage,
        LogError::InvalidRecords(_) => ResponseError::InvalidRecord,
        LogError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::OffsetOutOfRange { .. } | LogError::NotContiguous { .. } => {
            ResponseError::OffsetOutOfRange
        }
        LogError::Closed { .. } => ResponseError::NotLeaderOrFollower,
        LogError::InvalidTopic { .. } => ResponseError::InvalidTopicException,
        LogError::InvalidPartition { .. } => ResponseError::UnknownTopicOrPartition,
        _ => ResponseError::KafkaStorageError,
    }
}

/// The Kafka error for a failed metadata call.
pub(crate) fn metadata_error(error: &MetadataError) -> ResponseError {
    match error {
        MetadataError::Rejected(rejection) => rejection_error(rejection),
        MetadataError::NotLeader { .. } => ResponseError::NotController,
        MetadataError::NotReady { .. } | MetadataError::ShutDown => {
            ResponseError::LeaderNotAvailable
        }
        MetadataError::Timeout { .. } => ResponseError::RequestTimedOut,
        MetadataError::Network(_) => ResponseError::NetworkException,
        MetadataError::Unsupported { .. } => ResponseError::UnsupportedVersion,
        MetadataError::CommandTooLarge { .. } => ResponseError::RecordListTooLarge,
        _ => ResponseError::UnknownServerError,
    }
}

/// The Kafka error for a metadata call made on behalf of a consumer group: unavailability is
/// reported as the coordinator being unavailable, which group clients retry.
pub(crate) fn group_error(error: &MetadataError) -> ResponseError {
    match error {
        MetadataError::Rejected(rejection) => rejection_error(rejection),
        MetadataError::NotLeader { .. }
        | MetadataError::NotReady { .. }
        | MetadataError::ShutDown
        | MetadataError::Timeout { .. }
        | MetadataError::Network(_) => ResponseError::CoordinatorNotAvailable,
        other => metadata_error(other),
    }
}

/// The Kafka error for apply's verdict.
pub(crate) fn rejection_error(rejection: &Rejection) -> ResponseError {
    match rejection {
        Rejection::ClusterIdMismatch { .. } => ResponseError::InconsistentClusterId,
        Rejection::NotCoordinator { .. } | Rejection::NotTransactionCoordinator { .. } => {
            ResponseError::NotCoordinator
        }
        Rejection::InvalidBrokerId { .. }
        | Rejection::InvalidBrokerAddress { .. }
        | Rejection::InvalidGroupMembers { .. }
        | Rejection::InvalidOffsets { .. }
        | Rejection::InvalidProducerIdCount { .. } => ResponseError::InvalidRequest,
        Rejection::UnknownBroker { .. }
        | Rejection::StaleBrokerIncarnation { .. }
        | Rejection::IneligibleReplica { .. } => ResponseError::IneligibleReplica,
        Rejection::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        Rejection::TopicAlreadyExists { .. } | Rejection::TopicIdAlreadyExists { .. } => {
            ResponseError::TopicAlreadyExists
        }
        Rejection::UnknownTopic { .. } | Rejection::UnknownTopicOrPartition { .. } => {
            ResponseError::UnknownTopicOrPartition
        }
        Rejection::InvalidPartitions { .. } => ResponseError::InvalidPartitions,
        Rejection::InvalidReplicationFactor { .. } => ResponseError::InvalidReplicationFactor,
        Rejection::InvalidReplicaAssignment { .. } => ResponseError::InvalidReplicaAssignment,
        Rejection::InvalidConfig { .. } => ResponseError::InvalidConfig,
        Rejection::StalePartitionEpoch { .. } => ResponseError::InvalidUpdateVersion,
        Rejection::InvalidIsr { .. } => ResponseError::InvalidRequest,
        Rejection::GroupNotFound { .. } => ResponseError::GroupIdNotFound,
        Rejection::NonEmptyGroup { .. } => ResponseError::NonEmptyGroup,
        Rejection::IllegalGeneration { .. } => ResponseError::IllegalGeneration,
        Rejection::UnknownMemberId { .. } | Rejection::NotGroupLeader { .. } => {
            ResponseError::UnknownMemberId
        }
        Rejection::InconsistentGroupProtocol { .. } => ResponseError::InconsistentGroupProtocol,
        Rejection::ProducerIdsExhausted => ResponseError::UnknownServerError,
        Rejection::BatchFailed { cause, .. } => rejection_error(cause),
        Rejection::UnknownScramCredential { .. } => ResponseError::ResourceNotFound,
        Rejection::UnacceptableCredential { .. } => ResponseError::UnacceptableCredential,
        Rejection::DuplicateScramMechanism { .. } => ResponseError::DuplicateResource,
        Rejection::InvalidAcl { .. } | Rejection::InvalidTransactionalId { .. } => {
            ResponseError::InvalidRequest
        }
        Rejection::InvalidTransactionTimeout { .. } => ResponseError::InvalidTransactionTimeout,
        Rejection::ProducerFenced { .. } => ResponseError::ProducerFenced,
        Rejection::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        Rejection::InvalidProducerIdMapping { .. } => ResponseError::InvalidProducerIdMapping,
        Rejection::ConcurrentTransactions { .. } => ResponseError::ConcurrentTransactions,
        Rejection::InvalidTxnState { .. } => ResponseError::InvalidTxnState,
        _ => ResponseError::UnknownServerError,
    }
}
