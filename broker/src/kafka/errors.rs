//! The one mapping from metadata errors to Kafka error codes.

use kafka_protocol::error::ResponseError;
use switchyard_backend_api::{MetadataError, Rejection};

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
        _ => ResponseError::UnknownServerError,
    }
}
