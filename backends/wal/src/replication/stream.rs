//! Both ends of the record stream, used by a primary's links, by a follower answering a
//! promoted node's `Fetch`, and by the nodes receiving either.
//!
//! The sending end first brings the peer's log in line ([`catch_up`]): if the peer's last
//! record is in this node's log and still in a retained segment, streaming continues after
//! it; otherwise it sends a snapshot of its applied state (chunked) and streams from there,
//! which also discards a divergent tail on the peer (an old primary's unacknowledged
//! writes). Records then go out in `Append`s of bounded size ([`read_records`]). The
//! receiving end ([`Receiver`]) makes both durable.

use switchyard_backend_api::tls::ClusterWriter;
use switchyard_backend_api::{LogIndex, MetadataError};

use super::{net, unexpected};
use crate::node::Node;
use crate::protocol::{Message, NetError, send, send_at_most};
use crate::record::{Position, Record};
use crate::segment::{Chunk, Cursor};
use crate::snapshot;
use crate::writer::Request;

/// Most record bytes per `Append`.
const APPEND_BYTES: usize = 1 << 20;

/// Most record bytes per `Append` to a peer taking frames of `max_frame_bytes`:
/// [`APPEND_BYTES`], and half a frame at most so that it fits.
pub(super) fn append_bytes(max_frame_bytes: u32) -> usize {
    APPEND_BYTES.min(max_frame_bytes as usize / 2)
}

/// Snapshot bytes per `SnapshotChunk` to a peer taking frames of `max_frame_bytes`: half a
/// frame, at least one byte.
fn snapshot_chunk_bytes(max_frame_bytes: u32) -> usize {
    (max_frame_bytes as usize / 2).max(1)
}

/// Bring a peer whose last record is `last` in line with this node's log: nothing to do if
/// its log is a prefix of ours still in retained segments, else send a snapshot of the
/// applied state. Returns a cursor at the first record to send.
pub(super) async fn catch_up(
    node: &Node,
    writer: &mut ClusterWriter,
    last: Position,
) -> Result<Cursor, MetadataError> {
    let shape = node.streamed().borrow().clone();
    if shape.contains(last)
        && let Some(cursor) = retained(node, last.index + 1).await?
    {
        return Ok(cursor);
    }
    let view = node.applied.view();
    let index = view.applied_index;
    let epoch = node.durable.borrow().epoch_at(index).ok_or_else(|| {
        MetadataError::Storage(format!("no epoch known for applied index {index}"))
    })?;
    tracing::info!(index, epoch, follower_last = ?last, "sending a snapshot to catch a node up");
    let bytes = tokio::task::spawn_blocking(move || snapshot::encode(epoch, &view))
        .await
        .map_err(|e| MetadataError::Storage(e.to_string()))??;
    let io = node.io_timeout();
    let chunk = snapshot_chunk_bytes(node.config.max_frame_bytes);
    let total = bytes.len() as u64;
    for data in bytes.chunks(chunk) {
        let message = Message::SnapshotChunk {
            total,
            data: data.to_vec(),
        };
        send(writer, &message, io).await.map_err(net)?;
    }
    open_cursor(node, index + 1).await
}

/// A cursor at record `next` of the segment files, opened off the async runtime; an error
/// if no retained segment holds it.
pub(super) async fn open_cursor(node: &Node, next: LogIndex) -> Result<Cursor, MetadataError> {
    retained(node, next)
        .await?
        .ok_or_else(|| MetadataError::Storage(format!("record {next} is not retained")))
}

/// A cursor at record `next` of the segment files, opened off the async runtime; `None` if
/// no retained segment holds it.
async fn retained(node: &Node, next: LogIndex) -> Result<Option<Cursor>, MetadataError> {
    let dir = node.dir.clone();
    tokio::task::spawn_blocking(move || Cursor::open(&dir, next))
        .await
        .map_err(|e| MetadataError::Storage(e.to_string()))?
        .map_err(|e| MetadataError::Storage(e.to_string()))
}

/// Read up to `upto` from the cursor off the async runtime, at most one `Append`'s worth
/// ([`append_bytes`]).
pub(super) async fn read_records(
    node: &Node,
    cursor: Cursor,
    upto: u64,
) -> Result<(Cursor, Option<Vec<Record>>), MetadataError> {
    let max_bytes = append_bytes(node.config.max_frame_bytes);
    tokio::task::spawn_blocking(move || {
        let mut cursor = cursor;
        match cursor.read(upto, max_bytes) {
            Ok(Chunk::Records(records)) => Ok((cursor, Some(records))),
            Ok(Chunk::Compacted) => Ok((cursor, None)),
            Err(e) => Err(MetadataError::Storage(e.to_string())),
        }
    })
    .await
    .map_err(|e| MetadataError::Storage(e.to_string()))?
}

/// Send an `Append`. One the peer would refuse as too large (a record written before
/// proposals were bounded, or a peer with a smaller `max_frame_bytes`) is an ERROR, not a
/// quiet retry: the follower cannot make progress until an operator acts.
pub(super) async fn send_append<W: tokio::io::AsyncWriteExt + Unpin>(
    node: &Node,
    writer: &mut W,
    message: &Message,
) -> Result<(), MetadataError> {
    let max = node.config.max_frame_bytes;
    match send_at_most(writer, message, max, node.io_timeout()).await {
        Err(NetError::TooLarge(size, max)) => {
            switchyard_backend_api::error_throttled!(
                size,
                max,
                "a metadata record is larger than max_frame_bytes and cannot be replicated; \
                 raise metadata.wal.max_frame_bytes on every node"
            );
            Err(net(NetError::TooLarge(size, max)))
        }
        other => other.map_err(net),
    }
}

/// The receiving end of records and snapshots, shared by followers and fetching leaders.
#[derive(Default)]
pub(super) struct Receiver {
    snapshot: Vec<u8>,
}

impl Receiver {
    /// Make an `Append` or `SnapshotChunk` durable. Returns the commit index an `Append`
    /// carried.
    pub(super) async fn take(
        &mut self,
        node: &Node,
        message: Message,
    ) -> Result<Option<u64>, MetadataError> {
        match message {
            Message::Append { commit, records } => {
                if !records.is_empty() {
                    node.ask_writer(|reply| Request::Replicate { records, reply })
                        .await??;
                }
                Ok(Some(commit))
            }
            Message::SnapshotChunk { total, data } => {
                if let Some(bytes) = self.gather(total, &data)? {
                    let decoded = snapshot::decode(&bytes, "received snapshot")?;
                    tracing::info!(position = ?decoded.position, "installing a snapshot from the primary");
                    let snapshot = Box::new(decoded);
                    node.ask_writer(|reply| Request::Install {
                        bytes,
                        snapshot,
                        reply,
                    })
                    .await??;
                }
                Ok(None)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Add one chunk of a snapshot of `total` bytes; the whole snapshot once it is complete.
    fn gather(&mut self, total: u64, data: &[u8]) -> Result<Option<Vec<u8>>, MetadataError> {
        // Reassembled in memory: never more than a node would decode.
        let max = switchyard_backend_api::codec::MAX_DECODE_BYTES as u64;
        if total > max {
            return Err(MetadataError::Network(format!(
                "snapshot of {total} bytes is larger than the {max} bytes a node decodes"
            )));
        }
        self.snapshot.extend_from_slice(data);
        let received = self.snapshot.len() as u64;
        if received > total {
            return Err(MetadataError::Network(format!(
                "snapshot overran: {received} of {total} bytes"
            )));
        }
        Ok((received == total).then(|| std::mem::take(&mut self.snapshot)))
    }
}

#[cfg(test)]
mod tests {
    use switchyard_backend_api::codec::MAX_DECODE_BYTES;

    use super::*;

    #[test]
    fn an_append_carries_at_most_one_mib_and_half_a_frame() {
        assert_eq!(append_bytes(16 << 20), 1 << 20);
        assert_eq!(append_bytes(2 << 20), 1 << 20);
        assert_eq!(append_bytes(1 << 20), 512 << 10);
        assert_eq!(append_bytes(64 << 10), 32 << 10);
    }

    #[test]
    fn a_snapshot_chunk_is_half_a_frame_and_never_empty() {
        assert_eq!(snapshot_chunk_bytes(16 << 20), 8 << 20);
        assert_eq!(snapshot_chunk_bytes(64 << 10), 32 << 10);
        assert_eq!(snapshot_chunk_bytes(1), 1);
        assert_eq!(snapshot_chunk_bytes(0), 1);
    }

    #[test]
    fn snapshot_chunks_reassemble_into_the_snapshot_then_start_afresh() {
        let mut receiver = Receiver::default();
        assert_eq!(receiver.gather(5, b"ab").ok(), Some(None));
        assert_eq!(
            receiver.gather(5, b"cde").ok(),
            Some(Some(b"abcde".to_vec()))
        );
        assert_eq!(receiver.gather(2, b"xy").ok(), Some(Some(b"xy".to_vec())));
    }

    #[test]
    fn a_snapshot_larger_than_a_node_decodes_is_refused_before_buffering() {
        let mut receiver = Receiver::default();
        let total = MAX_DECODE_BYTES as u64 + 1;
        assert!(matches!(
            receiver.gather(total, b"a"),
            Err(MetadataError::Network(reason)) if reason.contains("larger than")
        ));
        assert!(receiver.snapshot.is_empty());
    }

    #[test]
    fn chunks_beyond_the_announced_total_are_refused() {
        let mut receiver = Receiver::default();
        assert_eq!(receiver.gather(4, b"abc").ok(), Some(None));
        assert!(matches!(
            receiver.gather(4, b"de"),
            Err(MetadataError::Network(reason)) if reason == "snapshot overran: 5 of 4 bytes"
        ));
    }
}
