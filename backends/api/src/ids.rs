//! Identifier newtypes. Each wraps the representation Kafka (or the backend) uses on the wire,
//! so the broker converts without loss and the compiler keeps the kinds apart.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A Kafka broker id (`broker.id`, `node.id` in Kafka's own terms). Kafka encodes it as `int32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BrokerId(pub i32);

/// A member of the metadata backend's own cluster (a Raft voter, a WAL replica).
///
/// A Switchyard process runs one broker and one backend node; both carry the same number, but
/// the backend knows nothing of brokers, so the two are separate types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

/// A topic's permanent id (Kafka's topic UUID). Chosen by the proposer, never inside apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicId(pub uuid::Uuid);

/// A consumer group id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupId(pub String);

/// A consumer group member id, assigned by the group coordinator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberId(pub String);

/// An idempotent producer's id. Kafka encodes it as `int64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProducerId(pub i64);

/// The cluster id reported to Kafka clients. Chosen once, by the first proposer of
/// [`MetadataCommand::InitCluster`](crate::MetadataCommand::InitCluster).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub String);

/// Position of an entry in a backend's metadata log. Index 0 means "nothing applied yet"; the
/// first applied entry has index 1.
pub type LogIndex = u64;

macro_rules! display_inner {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    )*};
}
display_inner!(
    BrokerId, NodeId, TopicId, GroupId, MemberId, ProducerId, ClusterId
);

impl GroupId {
    /// The group id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl MemberId {
    /// The member id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for GroupId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<&str> for MemberId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl TryFrom<NodeId> for BrokerId {
    type Error = std::num::TryFromIntError;

    /// A process's broker id is its node id; Kafka limits it to `0..=i32::MAX`.
    fn try_from(node: NodeId) -> Result<Self, Self::Error> {
        i32::try_from(node.0).map(BrokerId)
    }
}
