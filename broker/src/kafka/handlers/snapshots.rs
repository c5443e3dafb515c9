//! FetchSnapshot of the metadata log `__cluster_metadata` partition 0: the whole metadata as a
//! metadata export file (`switchyard metadata export --bootstrap`, a backup of a running
//! cluster).
//!
//! Kafka's controllers fetch snapshots by id; here a client first asks for the snapshot id
//! `(-1, -1)`, which takes a new export: a linearizable read where the backend offers one,
//! otherwise the metadata leader's state (another node answers NOT_LEADER_OR_FOLLOWER with the
//! leader). The answer names the export by `(end_offset, epoch)` = (the metadata index it was
//! applied up to, the epoch it was read in), with its `size` and the first chunk; the client
//! fetches the rest by that id and its position. The last few exports stay in memory for a
//! few minutes for that; an id no longer held answers SNAPSHOT_NOT_FOUND.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_snapshot_response::{
    LeaderIdAndEpoch, PartitionSnapshot, SnapshotId, TopicSnapshot,
};
use kafka_protocol::messages::{
    BrokerId as KBrokerId, FetchSnapshotRequest, FetchSnapshotResponse,
};
use switchyard_backend_api::export::{MetadataExport, Source};

use crate::broker::Broker;
use crate::kafka::METADATA_TOPIC;
use crate::kafka::errors::metadata_error;

/// Exports kept for their clients to fetch.
const KEPT: usize = 4;
/// How long an export is kept after it was taken.
const KEPT_FOR: Duration = Duration::from_secs(300);
/// The largest chunk one answer carries, whatever the request's `max_bytes`.
const MAX_CHUNK: usize = 8 << 20;

/// An export taken for FetchSnapshot, by its id.
#[derive(Debug, Clone)]
struct Taken {
    id: (i64, i32),
    file: Bytes,
    at: Instant,
}

/// The exports taken on this broker, newest last.
#[derive(Debug, Default)]
pub(crate) struct Snapshots {
    taken: Mutex<VecDeque<Taken>>,
}

impl Snapshots {
    fn get(&self, id: (i64, i32)) -> Option<Bytes> {
        let taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        taken.iter().find(|t| t.id == id).map(|t| t.file.clone())
    }

    fn keep(&self, id: (i64, i32), file: Bytes) {
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        taken.retain(|t| t.id != id && now.duration_since(t.at) < KEPT_FOR);
        while taken.len() >= KEPT {
            taken.pop_front();
        }
        taken.push_back(Taken { id, file, at: now });
    }
}

/// Why a partition's answer carries an error.
struct Refused {
    error: ResponseError,
    leader: Option<(i32, i32)>,
}

impl From<ResponseError> for Refused {
    fn from(error: ResponseError) -> Self {
        Self {
            error,
            leader: None,
        }
    }
}

/// Take a new export of the metadata: its id and file.
async fn take(broker: &Broker) -> Result<((i64, i32), Bytes), Refused> {
    let backend = broker.backend();
    let cluster = backend.cluster().borrow().clone();
    let epoch = i32::try_from(cluster.epoch).unwrap_or(i32::MAX);
    let (view, source) = if backend.guarantees().linearizable_reads() {
        let view = backend
            .read_linearizable()
            .await
            .map_err(|e| Refused::from(metadata_error(&e)))?;
        (view, Source::Linearizable)
    } else if cluster.leader == Some(cluster.node) {
        (backend.local(), Source::Leader)
    } else {
        return Err(Refused {
            error: ResponseError::NotLeaderOrFollower,
            leader: cluster
                .leader
                .and_then(|l| i32::try_from(l.0).ok())
                .map(|l| (l, epoch)),
        });
    };
    let export = MetadataExport {
        backend: backend.name().to_owned(),
        build: env!("CARGO_PKG_VERSION").to_owned(),
        source,
        epoch: cluster.epoch,
        view: view.as_ref().clone(),
    };
    let file = export.to_file_bytes().map_err(|e| {
        tracing::error!(error = %e, "encoding a metadata export");
        Refused::from(ResponseError::UnknownServerError)
    })?;
    let id = (
        i64::try_from(export.view.applied_index).unwrap_or(i64::MAX),
        epoch,
    );
    let file = Bytes::from(file);
    broker.snapshots().keep(id, file.clone());
    Ok((id, file))
}

/// One partition's answer.
async fn answer(
    broker: &Broker,
    asked: (i64, i32),
    position: i64,
    max_bytes: usize,
) -> Result<((i64, i32), i64, Bytes), Refused> {
    let (id, file) = if asked == (-1, -1) {
        take(broker).await?
    } else {
        let file = broker
            .snapshots()
            .get(asked)
            .ok_or(ResponseError::SnapshotNotFound)?;
        (asked, file)
    };
    let start = usize::try_from(position)
        .ok()
        .filter(|p| *p <= file.len())
        .ok_or(ResponseError::PositionOutOfRange)?;
    let end = start.saturating_add(max_bytes).min(file.len());
    let size = i64::try_from(file.len()).unwrap_or(i64::MAX);
    Ok((id, size, file.slice(start..end)))
}

/// Answer FetchSnapshot: `__cluster_metadata` partition 0 only.
pub(crate) async fn fetch(broker: &Broker, request: FetchSnapshotRequest) -> FetchSnapshotResponse {
    let max_bytes = usize::try_from(request.max_bytes)
        .unwrap_or(0)
        .clamp(1, MAX_CHUNK);
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for asked in topic.partitions {
            let result = if topic.name.as_str() != METADATA_TOPIC || asked.partition != 0 {
                Err(Refused::from(ResponseError::UnknownTopicOrPartition))
            } else {
                answer(
                    broker,
                    (asked.snapshot_id.end_offset, asked.snapshot_id.epoch),
                    asked.position,
                    max_bytes,
                )
                .await
            };
            let partition = PartitionSnapshot::default().with_index(asked.partition);
            partitions.push(match result {
                Ok(((end_offset, epoch), size, chunk)) => partition
                    .with_snapshot_id(
                        SnapshotId::default()
                            .with_end_offset(end_offset)
                            .with_epoch(epoch),
                    )
                    .with_size(size)
                    .with_position(asked.position)
                    .with_unaligned_records(chunk),
                Err(refused) => {
                    let (leader, epoch) = refused.leader.unwrap_or((-1, -1));
                    partition
                        .with_error_code(refused.error.code())
                        .with_current_leader(
                            LeaderIdAndEpoch::default()
                                .with_leader_id(KBrokerId(leader))
                                .with_leader_epoch(epoch),
                        )
                }
            });
        }
        topics.push(
            TopicSnapshot::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    FetchSnapshotResponse::default().with_topics(topics)
}
