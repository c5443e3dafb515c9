//! The applier: one task that applies committed entries in log order through
//! [`AppliedState`], completes the proposals waiting on them, and takes snapshots.

use std::collections::VecDeque;
use std::sync::Arc;

use switchyard_backend_api::{AppliedState, LogIndex, MetadataCommand, MetadataError, Proposed};
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
pub(crate) async fn run(
    applied: Arc<AppliedState>,
    mut messages: mpsc::UnboundedReceiver<ApplyMsg>,
    mut commit: watch::Receiver<LogIndex>,
    mut snapshots: Snapshots,
) {
    let mut queue: VecDeque<Pending> = VecDeque::new();
    loop {
        let committed = *commit.borrow_and_update();
        apply_committed(&applied, &mut queue, committed);
        snapshots.maybe_take(&applied).await;
        tokio::select! {
            message = messages.recv() => match message {
                None => return,
                Some(ApplyMsg::Entries(entries)) => queue.extend(entries),
                Some(ApplyMsg::Install(snapshot)) => {
                    queue.clear();
                    snapshots.last = snapshot.position.index;
                    applied.install(snapshot.view);
                }
                Some(ApplyMsg::Abandon) => queue.iter_mut().for_each(|p| p.reply = None),
            },
            changed = commit.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

fn apply_committed(applied: &AppliedState, queue: &mut VecDeque<Pending>, committed: LogIndex) {
    while queue.front().is_some_and(|p| p.index <= committed) {
        let Some(pending) = queue.pop_front() else {
            return;
        };
        let result = match &pending.command {
            None => {
                applied.skip_to(pending.index);
                continue;
            }
            Some(command) => applied.apply(pending.index, command),
        };
        let reply = match result {
            Ok(Ok(outcome)) => Ok(Proposed {
                index: pending.index,
                outcome,
            }),
            Ok(Err(rejection)) => Err(MetadataError::Rejected(rejection)),
            Err(e) => {
                tracing::error!(index = pending.index, error = %e, "could not apply a committed entry");
                Err(e)
            }
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
        match tokio::task::spawn_blocking(move || snapshot::encode(epoch, &view)).await {
            Ok(Ok(bytes)) => {
                let position = Position { epoch, index };
                let _ = self.writer.send(Request::Snapshot { position, bytes });
            }
            Ok(Err(e)) => tracing::warn!(index, error = %e, "could not encode a snapshot"),
            Err(e) => tracing::warn!(index, error = %e, "snapshot task failed"),
        }
    }
}
