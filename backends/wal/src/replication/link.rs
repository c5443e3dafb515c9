//! The primary's links to its followers: one per other member while leading, reconnecting
//! with backoff.
//!
//! A link says `Hello { epoch }`, plays its part in the takeover (`takeover.rs`) with the
//! follower's `Welcome`, and brings the follower's log in line ([`catch_up`]). Then it sends
//! records as they appear ([`Node::streamed`]: written or durable), with the commit index,
//! and heartbeats when idle; the follower fsyncs, applies up to the commit index, and acks
//! its durable position, which counts toward the commit index.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_backend_api::tls::{ClusterReader, ClusterWriter};
use switchyard_backend_api::{MetadataError, NodeId};

use super::stream::{append_bytes, catch_up, open_cursor, read_records, send_append};
use super::takeover::{self, Leadership};
use super::{AbortOnDrop, Control, net, open_with_hello, unexpected};
use crate::node::Node;
use crate::protocol::{Message, Purpose, recv};
use crate::segment::Cursor;

/// Idle primary → follower heartbeat.
const HEARTBEAT: Duration = Duration::from_millis(200);
/// First pause before reconnecting a link.
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
/// Longest pause between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Keep one link per other member while leading: open links to members that join (or move),
/// close those to members that leave.
pub(super) async fn supervise(node: Arc<Node>, shared: Arc<Leadership>) {
    let mut members = node.watch_members();
    let mut links: BTreeMap<NodeId, (String, AbortOnDrop)> = BTreeMap::new();
    loop {
        let current = Arc::clone(&members.borrow_and_update());
        links.retain(|id, (addr, _)| current.addrs.get(id) == Some(addr));
        for (peer, addr) in current.addrs.iter().filter(|(id, _)| **id != node.me) {
            if !links.contains_key(peer) {
                let task = tokio::spawn(link(
                    Arc::clone(&node),
                    Arc::clone(&shared),
                    *peer,
                    addr.clone(),
                ));
                links.insert(*peer, (addr.clone(), AbortOnDrop(task.abort_handle())));
            }
        }
        if members.changed().await.is_err() {
            return;
        }
    }
}

/// The pause after one of `backoff`: twice as long, at most [`MAX_BACKOFF`].
fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(MAX_BACKOFF)
}

/// Keep one follower connected and streamed to, reconnecting with backoff.
async fn link(node: Arc<Node>, shared: Arc<Leadership>, peer: NodeId, addr: String) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match run_link(&node, &shared, peer, &addr).await {
            Ok(()) => return,
            Err(e) => tracing::debug!(%peer, %addr, error = %e, "replication link down"),
        }
        shared.lost(peer);
        tokio::time::sleep(backoff).await;
        backoff = next_backoff(backoff);
    }
}

/// One connection's life: handshake, takeover, catch-up, stream. `Ok` when fenced.
async fn run_link(
    node: &Arc<Node>,
    shared: &Leadership,
    peer: NodeId,
    addr: &str,
) -> Result<(), MetadataError> {
    let io = node.io_timeout();
    let max = node.config.max_frame_bytes;
    let hello = Message::Hello {
        cluster_id: node.config.cluster_id.clone(),
        from: node.me,
        to: peer,
        epoch: shared.epoch,
        purpose: Purpose::Replicate,
    };
    let (mut reader, mut writer) = open_with_hello(addr, node.credentials()?, &hello, io).await?;
    let last = match recv(&mut reader, max, io).await.map_err(net)? {
        Message::Welcome { last } => last,
        Message::Fenced { epoch, primary } => {
            let _ = node.control.send(Control::Fenced { epoch, primary });
            return Ok(());
        }
        Message::Refused { reason } => {
            tracing::warn!(%peer, %addr, %reason, "peer refused the replication connection");
            return Err(MetadataError::Network(reason));
        }
        other => return Err(unexpected(&other)),
    };
    if !takeover::join(node, shared, peer, last, &mut reader, &mut writer).await? {
        return Ok(());
    }
    let cursor = catch_up(node, &mut writer, last).await?;
    stream_to(node, shared, peer, reader, writer, cursor).await
}

/// Stream records and the commit index to a caught-up follower; read its acks.
async fn stream_to(
    node: &Arc<Node>,
    shared: &Leadership,
    peer: NodeId,
    reader: ClusterReader,
    mut writer: ClusterWriter,
    cursor: Cursor,
) -> Result<(), MetadataError> {
    let _counted = shared.streaming(peer);
    let mut acks = tokio::spawn(read_acks(Arc::clone(node), peer, reader));
    let _abort = AbortOnDrop(acks.abort_handle());
    // With elected roles records go out once written, and this node counts its own copy
    // once synced (`progress.rs`): the follower's fsync runs beside this node's.
    let mut shape = node.streamed().clone();
    let mut commit = node.progress.subscribe();
    let mut next = cursor.next();
    let mut cursor = Some(cursor);
    let max_bytes = append_bytes(node.config.max_frame_bytes);
    loop {
        let upto = shape.borrow_and_update().last.index;
        let records = if next > upto {
            Vec::new()
        } else if let Some(records) = node.tail.read(next, upto, max_bytes) {
            cursor = None;
            records
        } else {
            let from = match cursor.take() {
                Some(cursor) if cursor.next() == next => cursor,
                _ => open_cursor(node, next).await?,
            };
            let (moved, records) = read_records(node, from, upto).await?;
            cursor = Some(moved);
            records.ok_or_else(|| {
                MetadataError::Storage(
                    "the follower's next record was compacted; resending a snapshot".into(),
                )
            })?
        };
        next = records.last().map_or(next, |record| record.index + 1);
        let caught_up = next > upto;
        let message = Message::Append {
            commit: *commit.borrow_and_update(),
            records,
        };
        send_append(node, &mut writer, &message).await?;
        if !caught_up {
            continue;
        }
        tokio::select! {
            _ = shape.changed() => {}
            _ = commit.changed() => {}
            _ = tokio::time::sleep(HEARTBEAT) => {}
            ended = &mut acks => {
                return match ended {
                    Ok(result) => result,
                    Err(e) => Err(MetadataError::Network(e.to_string())),
                };
            }
        }
    }
}

/// Count a follower's acks toward the commit index. `Ok` when it fenced us.
async fn read_acks(
    node: Arc<Node>,
    peer: NodeId,
    mut reader: ClusterReader,
) -> Result<(), MetadataError> {
    let dead_after = node.io_timeout() * 2;
    loop {
        match recv(&mut reader, node.config.max_frame_bytes, dead_after)
            .await
            .map_err(net)?
        {
            Message::Ack { durable } => node.progress.ack(peer, durable.index),
            Message::Fenced { epoch, primary } => {
                let _ = node.control.send(Control::Fenced { epoch, primary });
                return Ok(());
            }
            other => return Err(unexpected(&other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_backoff_doubles_up_to_one_second() {
        let pauses: Vec<u128> =
            std::iter::successors(Some(FIRST_BACKOFF), |b| Some(next_backoff(*b)))
                .take(9)
                .map(|b| b.as_millis())
                .collect();
        assert_eq!(pauses, [20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
    }
}
