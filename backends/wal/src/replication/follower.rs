//! The follower's side of a replication connection: accept the primary's epoch (persisted
//! before `Welcome`) or fence it, then make what it streams durable, apply up to its commit
//! index and ack; answer a promoted node's `Fetch`.

use std::collections::VecDeque;
use std::time::Duration;

use switchyard_backend_api::tls::{ClusterReader, ClusterWriter};
use switchyard_backend_api::{MetadataError, NodeId, Readiness, Role};
use tokio::sync::{mpsc, oneshot};

use super::stream::{Receiver, catch_up, read_records, send_append};
use super::{AbortOnDrop, Control, net};
use crate::node::Node;
use crate::protocol::{Message, NetError, recv, send};
use crate::record::Position;
use crate::term::Term;
use crate::writer::Request;

/// Whether a node whose term is `known` refuses `from` as primary of `epoch`: an older
/// epoch, or the known epoch claimed by a node that is not its primary.
fn fences(known: Term, from: NodeId, epoch: u64) -> bool {
    epoch < known.epoch || (epoch == known.epoch && from != known.primary)
}

/// Accept `epoch` from `from` as primary, or say who is.
async fn accept_epoch(
    node: &Node,
    from: NodeId,
    epoch: u64,
) -> Result<Option<Term>, MetadataError> {
    let mut guard = node.lock_term().await;
    let term = guard.get();
    if fences(term, from, epoch) {
        return Ok(Some(term));
    }
    if epoch > term.epoch {
        guard
            .set(Term {
                epoch,
                primary: from,
            })
            .await?;
        // Stop writing as primary before acknowledging anything in the new epoch.
        node.ask_writer(|reply| Request::Follow { reply }).await?;
        if term.primary == node.me {
            let _ = node.control.send(Control::SteppedDown);
        }
    }
    Ok(None)
}

/// The follower's side of a replication connection.
pub(super) async fn follow(
    node: &Node,
    from: NodeId,
    epoch: u64,
    reader: ClusterReader,
    mut writer: ClusterWriter,
) -> Result<(), MetadataError> {
    let io = node.io_timeout();
    if let Some(term) = accept_epoch(node, from, epoch).await? {
        tracing::info!(%from, epoch, known = term.epoch, "fencing a primary of an old epoch");
        let fenced = Message::Fenced {
            epoch: term.epoch,
            primary: term.primary,
        };
        return send(&mut writer, &fenced, io).await.map_err(net);
    }
    node.progress.follow();
    let last = node.durable.borrow().last;
    send(&mut writer, &Message::Welcome { last }, io)
        .await
        .map_err(net)?;
    node.set_view(
        Role::Follower,
        Some(from),
        Readiness::NotReady {
            reason: format!("catching up with primary {from}"),
        },
    );
    let result = follow_stream(node, from, epoch, reader, &mut writer).await;
    if node.term().epoch == epoch {
        node.set_view(
            Role::Follower,
            Some(from),
            Readiness::NotReady {
                reason: format!("lost the connection to primary {from}"),
            },
        );
    }
    result
}

/// `Fenced` with the newer term, if this node left `epoch` meanwhile.
fn fenced_since(node: &Node, epoch: u64) -> Option<Message> {
    let term = node.term();
    (term.epoch != epoch).then_some(Message::Fenced {
        epoch: term.epoch,
        primary: term.primary,
    })
}

/// Most `Append`s handed to the writer and not yet durable; the follower reads no further
/// until the oldest is.
const MAX_UNACKED: usize = 16;

/// Messages read ahead of the one being handled.
const READ_AHEAD: usize = 4;

/// Replies of the writer to `Replicate`s, oldest first.
type Unacked = VecDeque<oneshot::Receiver<Result<Position, MetadataError>>>;

/// Take the primary's stream: records are handed to the writer as they arrive (up to
/// [`MAX_UNACKED`] `Append`s in flight, so that the next ones group-commit with the fsync
/// running) and acknowledged as they become durable, in order.
async fn follow_stream(
    node: &Node,
    from: NodeId,
    epoch: u64,
    reader: ClusterReader,
    writer: &mut ClusterWriter,
) -> Result<(), MetadataError> {
    let io = node.io_timeout();
    let (incoming_tx, mut incoming) = mpsc::channel(READ_AHEAD);
    let reading = tokio::spawn(read_messages(
        reader,
        node.config.max_frame_bytes,
        io * 2,
        incoming_tx,
    ));
    let _reading = AbortOnDrop(reading.abort_handle());
    let mut receiver = Receiver::default();
    let mut unacked = Unacked::new();
    let mut ready_at = None;
    let mut ready = false;
    loop {
        let ack = tokio::select! {
            durable = oldest_durable(&mut unacked) => {
                durable?;
                drop_durable(&mut unacked)?;
                true
            }
            message = incoming.recv(), if unacked.len() < MAX_UNACKED => {
                let Some(message) = message else {
                    return Err(MetadataError::Network("the primary's stream ended".into()));
                };
                let message = message.map_err(net)?;
                if let Some(fenced) = fenced_since(node, epoch) {
                    return send(writer, &fenced, io).await.map_err(net);
                }
                match message {
                    Message::Fetch { after } => {
                        serve_fetch(node, writer, after).await?;
                        false
                    }
                    Message::Append { commit, records } => {
                        if !records.is_empty() {
                            unacked.push_back(
                                node.tell_writer(|reply| Request::Replicate { records, reply })?,
                            );
                        }
                        // Applied only up to what is durable here (`progress.rs`).
                        node.progress.leader_commit(commit);
                        ready_at.get_or_insert(commit);
                        unacked.is_empty()
                    }
                    other => {
                        receiver.take(node, other).await?;
                        unacked.is_empty()
                    }
                }
            }
        };
        if !ack {
            continue;
        }
        // A new primary may have been welcomed while these records became durable; its
        // `Welcome` may not count them, so they must not be acknowledged to the old one.
        if let Some(fenced) = fenced_since(node, epoch) {
            return send(writer, &fenced, io).await.map_err(net);
        }
        let durable = node.durable.borrow().last;
        send(writer, &Message::Ack { durable }, io)
            .await
            .map_err(net)?;
        if !ready && ready_at.is_some_and(|at| node.applied.applied_index() >= at) {
            ready = true;
            node.set_view(Role::Follower, Some(from), Readiness::Ready);
        }
    }
}

/// Read the primary's messages into `incoming` until the connection fails (the failure is
/// the last message) or the follower stops listening.
async fn read_messages(
    mut reader: ClusterReader,
    max_frame_bytes: u32,
    dead_after: Duration,
    incoming: mpsc::Sender<Result<Message, NetError>>,
) {
    loop {
        let message = recv(&mut reader, max_frame_bytes, dead_after).await;
        let failed = message.is_err();
        if incoming.send(message).await.is_err() || failed {
            return;
        }
    }
}

/// Wait until the oldest unacknowledged `Append` is durable (forever if there is none) and
/// take it off the list. Cancel-safe: the reply stays on the list until it arrives.
async fn oldest_durable(unacked: &mut Unacked) -> Result<(), MetadataError> {
    let Some(oldest) = unacked.front_mut() else {
        return std::future::pending().await;
    };
    let synced = oldest.await.map_err(|_| MetadataError::ShutDown)?;
    unacked.pop_front();
    synced.map(drop)
}

/// Take every further `Append` that is already durable off the list, so that one ack
/// covers them.
fn drop_durable(unacked: &mut Unacked) -> Result<(), MetadataError> {
    while let Some(oldest) = unacked.front_mut() {
        match oldest.try_recv() {
            Ok(synced) => {
                unacked.pop_front();
                synced?;
            }
            Err(oneshot::error::TryRecvError::Empty) => break,
            Err(oneshot::error::TryRecvError::Closed) => return Err(MetadataError::ShutDown),
        }
    }
    Ok(())
}

/// Answer a promoted node's `Fetch`: catch it up to this node's durable log, then
/// `FetchDone`.
async fn serve_fetch(
    node: &Node,
    writer: &mut ClusterWriter,
    after: Position,
) -> Result<(), MetadataError> {
    let io = node.io_timeout();
    let mut cursor = catch_up(node, writer, after).await?;
    let upto = node.durable.borrow().last.index;
    while cursor.next() <= upto {
        let (moved, records) = read_records(node, cursor, upto).await?;
        cursor = moved;
        let Some(records) = records else {
            return Err(MetadataError::Storage(
                "log compacted during a fetch".into(),
            ));
        };
        if records.is_empty() {
            break;
        }
        let message = Message::Append { commit: 0, records };
        send_append(node, writer, &message).await?;
    }
    send(writer, &Message::FetchDone, io).await.map_err(net)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use anyhow::{Context as _, bail, ensure};
    use switchyard_compat_tests::{RegistryHarness, TestCluster};
    use tokio::net::TcpStream;

    use super::*;
    use switchyard_backend_api::auth::Principal;

    use crate::protocol::{NetError, Purpose};
    use crate::replication::describe;

    #[test]
    fn a_follower_fences_older_epochs_and_another_primary_of_its_own() {
        let known = Term {
            epoch: 4,
            primary: NodeId(1),
        };
        assert!(fences(known, NodeId(1), 3));
        assert!(fences(known, NodeId(2), 4));
        assert!(!fences(known, NodeId(1), 4));
        assert!(!fences(known, NodeId(2), 5));
    }

    /// A primary announcing a snapshot larger than a node decodes is cut off at its first
    /// chunk: the follower used to buffer chunks towards whatever total the primary claimed.
    /// (Here the "primary" is a peer holding the cluster secret and claiming a higher epoch,
    /// which a node accepts.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_larger_than_a_node_decodes_is_refused_at_the_first_chunk()
    -> anyhow::Result<()> {
        let harness = RegistryHarness::new("wal");
        let mut cluster = TestCluster::layout(&harness, 2)?;
        cluster.open(0).await?;
        let identity = &cluster.spec(0)?.identity;
        let me = identity.id;
        let addr = identity
            .cluster_addr
            .clone()
            .context("no cluster address")?;
        let primary = *identity
            .peers
            .keys()
            .find(|id| **id != me)
            .context("no peer")?;
        let io = Duration::from_secs(5);
        let credentials = &cluster.spec(0)?.credentials;
        let stream = credentials
            .connect(
                TcpStream::connect(&addr).await?,
                &addr,
                Principal::Node(primary),
                me,
                io,
            )
            .await?;
        let (mut reader, mut writer) = stream.split();
        let hello = Message::Hello {
            cluster_id: "switchyard".into(),
            from: primary,
            to: me,
            epoch: 7,
            purpose: Purpose::Replicate,
        };
        send(&mut writer, &hello, io).await?;
        match recv(&mut reader, 1 << 20, io).await? {
            Message::Welcome { .. } => {}
            other => bail!("the node answered {}", describe(&other)),
        }
        let chunk = Message::SnapshotChunk {
            total: 1 << 40,
            data: vec![0; 1 << 16],
        };
        send(&mut writer, &chunk, io).await?;
        let answer = recv(&mut reader, 1 << 20, io).await;
        ensure!(
            !matches!(answer, Ok(_) | Err(NetError::Timeout(..))),
            "the node kept a link announcing a 1 TiB snapshot: {answer:?}"
        );
        Ok(())
    }
}
