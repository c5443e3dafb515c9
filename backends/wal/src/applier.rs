//! The applier: one task that applies committed entries in log order through
//! [`AppliedState`], completes the proposals waiting on them, and takes snapshots.

use std::collections::VecDeque;
use std::sync::Arc;

use switchyard_backend_api::{
    AppliedState, LogIndex, MetadataCommand, MetadataError, NodeId, Proposed,
};
use tokio::sync::{mpsc, watch};

use crate::log::Shape;
use crate::record::Position;
use crate::snapshot::{self, Snapshot};
use crate::writer::{ProposeReply, Request};

/// A durable entry waiting for the commit index.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Log index.
    pub(crate) index: LogIndex,
    /// Epoch of the primary that wrote it.
    pub(crate) epoch: u64,
    /// The command; `None` for an epoch marker.
    pub(crate) command: Option<MetadataCommand>,
    /// The proposer, on the node that proposed it.
    pub(crate) reply: Option<ProposeReply>,
}

/// What the writer (and the role controller) send the applier.
#[derive(Debug)]
pub(crate) enum ApplyMsg {
    /// Durable entries, in log order.
    Entries(Vec<Pending>),
    /// A snapshot replaced the log: drop what is pending and install it.
    Install(Box<Snapshot>),
    /// The node stopped being primary: the proposers still waiting cannot be told the
    /// outcome (the entries may yet commit under the new primary).
    Abandon,
}

/// When and where the applier takes snapshots.
#[derive(Debug)]
pub(crate) struct Snapshots {
    /// Entries between snapshots.
    pub(crate) every: u64,
    /// Index of the newest snapshot.
    pub(crate) last: LogIndex,
    /// The durable log shape (for the epoch of the snapshot's last entry).
    pub(crate) shape: watch::Receiver<Arc<Shape>>,
    /// Where to ask for compaction afterwards.
    pub(crate) writer: mpsc::UnboundedSender<Request>,
}

/// Apply entries as the commit index passes them, until the writer goes away.
///
/// Queued messages are always taken before the commit index is read: a snapshot install is
/// sent before the commit index it sets, so the entries of the history it replaces are
/// dropped before that index could apply them.
pub(crate) async fn run(
    me: NodeId,
    applied: Arc<AppliedState>,
    mut messages: mpsc::UnboundedReceiver<ApplyMsg>,
    mut commit: watch::Receiver<LogIndex>,
    mut snapshots: Snapshots,
) {
    let mut queue: VecDeque<Pending> = VecDeque::new();
    loop {
        loop {
            match messages.try_recv() {
                Ok(message) => take(message, &applied, &mut queue, &mut snapshots),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            }
        }
        let committed = *commit.borrow_and_update();
        apply_committed(me, &applied, &mut queue, committed);
        snapshots.maybe_take(&applied).await;
        tokio::select! {
            message = messages.recv() => match message {
                None => return,
                Some(message) => take(message, &applied, &mut queue, &mut snapshots),
            },
            changed = commit.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Take one message from the writer or the role controller.
fn take(
    message: ApplyMsg,
    applied: &AppliedState,
    queue: &mut VecDeque<Pending>,
    snapshots: &mut Snapshots,
) {
    match message {
        ApplyMsg::Entries(entries) => queue.extend(entries),
        ApplyMsg::Install(snapshot) => {
            queue.clear();
            snapshots.last = snapshot.position.index;
            applied.install(snapshot.view);
        }
        ApplyMsg::Abandon => queue.iter_mut().for_each(|p| p.reply = None),
    }
}

/// Apply what `committed` covers; proposers waiting here (on `me`, their primary) hear the
/// entry's position, epoch and verdict.
fn apply_committed(
    me: NodeId,
    applied: &AppliedState,
    queue: &mut VecDeque<Pending>,
    committed: LogIndex,
) {
    let ready = queue.partition_point(|p| p.index <= committed);
    if ready == 0 {
        return;
    }
    let batch: Vec<Pending> = queue.drain(..ready).collect();
    let entries: Vec<_> = batch
        .iter()
        .map(|p| (p.index, p.command.as_ref()))
        .collect();
    // One view published for the whole batch: the state's persistent maps copy a path once
    // per batch instead of once per entry.
    let verdicts = match applied.apply_entries(&entries) {
        Ok(verdicts) => verdicts,
        Err(e) => {
            tracing::error!(error = %e, "could not apply committed entries");
            for sender in batch.into_iter().filter_map(|p| p.reply) {
                let _ = sender.send(Err(e.clone()));
            }
            return;
        }
    };
    for (pending, verdict) in batch.into_iter().zip(verdicts) {
        let reply = match verdict {
            None => continue,
            Some(Ok(outcome)) => Ok(Proposed {
                index: pending.index,
                epoch: pending.epoch,
                leader: me,
                outcome,
            }),
            Some(Err(rejection)) => Err(MetadataError::Rejected(rejection)),
        };
        if let Some(sender) = pending.reply {
            let _ = sender.send(reply);
        }
    }
}

impl Snapshots {
    /// Take a snapshot if `every` entries were applied since the last one: encode it off the
    /// runtime and hand it to the writer, which stores it and deletes the segments it covers.
    async fn maybe_take(&mut self, applied: &AppliedState) {
        let view = applied.view();
        if view.applied_index < self.last + self.every {
            return;
        }
        let index = view.applied_index;
        let Some(epoch) = self.shape.borrow().epoch_at(index) else {
            return;
        };
        self.last = index;
        let started = std::time::Instant::now();
        match tokio::task::spawn_blocking(move || snapshot::encode(epoch, &view)).await {
            Ok(Ok(bytes)) => {
                let position = Position { epoch, index };
                let _ = self.writer.send(Request::Snapshot {
                    position,
                    bytes,
                    started,
                });
            }
            Ok(Err(e)) => tracing::warn!(index, error = %e, "could not encode a snapshot"),
            Err(e) => tracing::warn!(index, error = %e, "snapshot task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use switchyard_backend_api::{Change, ClusterId, StateView};

    use super::*;

    /// A follower holding entries of a history that a snapshot then replaces: the snapshot
    /// and the commit index it sets arrive together, and the replaced entries are never
    /// applied, although the commit index covers their positions.
    #[tokio::test]
    async fn an_install_drops_the_replaced_entries_before_its_commit_index_applies()
    -> Result<(), MetadataError> {
        let applied = Arc::new(AppliedState::new(StateView::default()));
        let (messages, inbox) = mpsc::unbounded_channel();
        let (commit, commits) = watch::channel(0);
        let (_shape, shape) = watch::channel(Arc::new(Shape::default()));
        let (writer, _requests) = mpsc::unbounded_channel();
        let replaced = (1..=3)
            .map(|index| Pending {
                index,
                epoch: 1,
                command: Some(MetadataCommand::InitCluster {
                    cluster_id: ClusterId(format!("replaced-{index}")),
                }),
                reply: None,
            })
            .collect();
        let _ = messages.send(ApplyMsg::Entries(replaced));
        let _ = messages.send(ApplyMsg::Install(Box::new(Snapshot {
            position: Position { epoch: 2, index: 3 },
            view: StateView {
                applied_index: 3,
                state: Default::default(),
            },
        })));
        commit.send_replace(3);
        let snapshots = Snapshots {
            every: 1_000,
            last: 0,
            shape,
            writer,
        };
        let mut changes = applied.subscribe();
        let task = tokio::spawn(run(
            NodeId(1),
            Arc::clone(&applied),
            inbox,
            commits,
            snapshots,
        ));
        let first = tokio::time::timeout(Duration::from_secs(5), changes.recv())
            .await
            .map_err(|_| MetadataError::Storage("nothing was applied or installed".into()))?
            .map_err(|e| MetadataError::Storage(e.to_string()))?;
        assert!(
            matches!(first.change, Change::SnapshotInstalled),
            "applied before the install: {first:?}"
        );
        drop(messages);
        let _ = task.await;
        Ok(())
    }
}
