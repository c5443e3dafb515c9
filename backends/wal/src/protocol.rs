//! The replication protocol: messages and their framing on TCP.
//!
//! A frame is a `u32` big-endian length followed by that many bytes of
//! `switchyard_backend_api::codec::encode(&Message)` (a format-version byte, then the value).
//! Frames above `max_frame_bytes` are refused. Every read and write has a deadline.
//!
//! Every connection opens with [`Message::Hello`]. A replication connection goes from the
//! primary to a follower: the follower answers `Welcome` (with the position of its last
//! record), `Fenced` (it knows a newer epoch) or `Refused` (wrong cluster or node id). An
//! admin connection (`request_promotion`) sends `Promote` and reads the result. A forward
//! connection goes from a follower to the primary with one `Propose`, answered `Proposed`. An
//! extension connection ([`crate::connect_extension`], accepted only when the node's roles
//! are driven from outside) is answered `Accepted` and then belongs to the embedding backend.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_backend_api::{
    ClusterView, CodecError, LogIndex, MembershipChange, MetadataCommand, MetadataError, NodeId,
    Proposed, codec,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::record::{Position, Record};

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum NetError {
    /// Socket error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The deadline passed.
    #[error("timed out after {0:?} waiting to {1}")]
    Timeout(Duration, &'static str),
    /// A frame above the limit.
    #[error("frame of {0} bytes exceeds max_frame_bytes {1}")]
    TooLarge(usize, u32),
    /// A frame that does not decode.
    #[error("bad frame: {0}")]
    Codec(#[from] CodecError),
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Purpose {
    /// Primary → follower log stream.
    Replicate,
    /// An operator's request.
    Admin,
    /// A follower passes one proposal to the primary ([`crate::Roles::Static`] only; an
    /// embedding backend forwards over its own connections).
    Forward,
    /// The embedding backend's own traffic ([`crate::Roles::External`]): from a member, or
    /// from an operator's client (node 0).
    Extension,
    /// The primary asks a member to check or adopt new members (`membership.rs`).
    Members,
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Message {
    /// First message of every connection.
    Hello {
        /// Must equal the receiver's configured cluster id.
        cluster_id: String,
        /// The connecting node (0 for an admin client).
        from: NodeId,
        /// The node it means to reach.
        to: NodeId,
        /// The sender's epoch.
        epoch: u64,
        /// What the connection is for.
        purpose: Purpose,
    },
    /// The follower accepts the primary's epoch.
    Welcome {
        /// The follower's last record.
        last: Position,
    },
    /// The connection is refused; the reason is logged on both sides.
    Refused {
        /// Why.
        reason: String,
    },
    /// The receiver knows a newer epoch (or another primary in this one).
    Fenced {
        /// The newest epoch the receiver knows.
        epoch: u64,
        /// Its primary.
        primary: NodeId,
    },
    /// Records continuing the receiver's log (possibly none: a heartbeat), and the sender's
    /// commit index.
    Append {
        /// The primary's commit index.
        commit: LogIndex,
        /// Records, in order.
        records: Vec<Record>,
    },
    /// Part of a snapshot file; the snapshot is complete once `total` bytes have arrived.
    SnapshotChunk {
        /// Size of the whole snapshot file.
        total: u64,
        /// The next bytes.
        data: Vec<u8>,
    },
    /// The follower's last durable record.
    Ack {
        /// Its position.
        durable: Position,
    },
    /// A node being promoted asks for every record after `after` (or a snapshot first).
    Fetch {
        /// The asker's last record.
        after: Position,
    },
    /// End of the answer to `Fetch`.
    FetchDone,
    /// Admin: promote the receiving node.
    Promote,
    /// Admin: promoted; the node now leads `epoch`.
    Promoted {
        /// The new epoch.
        epoch: u64,
    },
    /// Admin: the promotion failed.
    PromoteFailed {
        /// Why.
        reason: String,
    },
    /// Forward: write this command as primary.
    Propose {
        /// The command.
        command: MetadataCommand,
    },
    /// Forward: what the primary's proposal returned.
    Proposed {
        /// The result, as the primary's `propose` returned it.
        result: Result<Proposed, MetadataError>,
    },
    /// An extension connection is accepted; from here on the stream carries the embedding
    /// backend's frames.
    Accepted,
    /// Admin: add or remove a node (answered by the primary only).
    ChangeMembers {
        /// The change.
        change: MembershipChange,
    },
    /// Admin: what the change returned; on success the primary's view, which includes it.
    MembersChanged {
        /// The result.
        result: Result<ClusterView, MetadataError>,
    },
    /// Members: whether the receiver's voters are `from` or `to` (`adopt = false`), or
    /// that it persist `to` and count by it from now on (`adopt = true`).
    SetMembers {
        /// The voters before the change (node → cluster address).
        from: BTreeMap<NodeId, String>,
        /// The voters after it.
        to: BTreeMap<NodeId, String>,
        /// Check only, or adopt.
        adopt: bool,
    },
    /// Members: the answer to `SetMembers`.
    MembersSet {
        /// `Err` says why the receiver refused.
        result: Result<(), String>,
    },
}

/// Write one frame.
pub(crate) async fn send<W: AsyncWriteExt + Unpin>(
    writer: &mut W,
    message: &Message,
    timeout: Duration,
) -> Result<(), NetError> {
    send_at_most(writer, message, u32::MAX, timeout).await
}

/// Write one frame, refusing (`TooLarge`, nothing written) one longer than `max` bytes: what
/// the peer's [`recv`] would refuse.
pub(crate) async fn send_at_most<W: AsyncWriteExt + Unpin>(
    writer: &mut W,
    message: &Message,
    max: u32,
    timeout: Duration,
) -> Result<(), NetError> {
    let body = codec::encode(message)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|len| *len <= max)
        .ok_or(NetError::TooLarge(body.len(), max))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    tokio::time::timeout(timeout, writer.write_all(&frame))
        .await
        .map_err(|_| NetError::Timeout(timeout, "send a frame"))??;
    Ok(())
}

/// Read one frame of at most `max` bytes.
pub(crate) async fn recv<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    max: u32,
    timeout: Duration,
) -> Result<Message, NetError> {
    let read = async {
        let len = reader.read_u32().await?;
        if len > max {
            return Err(NetError::TooLarge(len as usize, max));
        }
        let mut body = vec![0; len as usize];
        reader.read_exact(&mut body).await?;
        Ok(codec::decode(&body)?)
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| NetError::Timeout(timeout, "receive a frame"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_enforce_the_limit() -> Result<(), NetError> {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let message = Message::Append {
            commit: 3,
            records: vec![Record::marker(1, 1)],
        };
        let second = Duration::from_secs(1);
        send(&mut a, &message, second).await?;
        assert_eq!(recv(&mut b, 1 << 16, second).await?, message);
        send(&mut a, &message, second).await?;
        assert!(matches!(
            recv(&mut b, 4, second).await,
            Err(NetError::TooLarge(_, 4))
        ));
        Ok(())
    }
}
