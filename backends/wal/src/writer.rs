//! The writer: one dedicated thread that owns the [`Log`]. Proposers and the replication
//! receiver send it [`Request`]s; it drains everything queued into one batch, appends it,
//! writes it to the segment file and publishes the written shape (a primary whose roles come
//! from an election sends those records to its followers from then on, so their fsyncs run
//! beside this one), makes it durable with one `fdatasync` (group commit), publishes the
//! durable shape, and hands the entries to the applier in order. It runs on its own OS thread so that an fsync never
//! blocks a tokio worker, and it holds no lock while it syncs.

use std::sync::Arc;

use switchyard_backend_api::{
    LogIndex, MetadataCommand, MetadataError, PowerCut, Proposed, telemetry,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::applier::{ApplyMsg, Pending};
use crate::error::WalError;
use crate::log::{Log, Shape};
use crate::progress::Progress;
use crate::record::{Position, Record};
use crate::snapshot::{self, Snapshot};
use crate::tail::Tail;

/// Most requests folded into one batch.
const MAX_BATCH: usize = 4096;

/// Reply to a proposal.
pub(crate) type ProposeReply = oneshot::Sender<Result<Proposed, MetadataError>>;

/// What the writer is asked to do.
#[derive(Debug)]
pub(crate) enum Request {
    /// Append a command as primary.
    Propose {
        /// The command.
        command: MetadataCommand,
        /// Completed once the command is committed and applied.
        reply: ProposeReply,
    },
    /// Append records received from the primary (or fetched at promotion).
    Replicate {
        /// The records, continuing the log.
        records: Vec<Record>,
        /// The durable position once they are synced.
        reply: oneshot::Sender<Result<Position, MetadataError>>,
    },
    /// Replace the log and the state with a snapshot from the primary.
    Install {
        /// The snapshot file bytes.
        bytes: Vec<u8>,
        /// The decoded snapshot.
        snapshot: Box<Snapshot>,
        /// Done.
        reply: oneshot::Sender<Result<(), MetadataError>>,
    },
    /// Become primary in `epoch`: append its marker if the log has no record of it yet.
    Lead {
        /// The epoch.
        epoch: u64,
        /// The floor: the first index of the epoch.
        reply: oneshot::Sender<Result<LogIndex, MetadataError>>,
    },
    /// Stop taking proposals.
    Follow {
        /// Done.
        reply: oneshot::Sender<()>,
    },
    /// Store a snapshot the applier took, then delete the segments it covers. Skipped if
    /// the log was reset since (the snapshot's last record is no longer in it). Done here so
    /// that it is ordered with `Install`.
    Snapshot {
        /// Position of the snapshot's last record.
        position: Position,
        /// The snapshot file bytes.
        bytes: Vec<u8>,
        /// When taking it began (before encoding), for its duration metric.
        started: std::time::Instant,
    },
    /// Sync and exit.
    Stop,
    /// Exit as a power cut would, in the middle of the batch it arrives in: of the bytes
    /// appended since the last sync, the first `keep` reach the file and the rest are lost;
    /// nothing is synced and nothing in the batch is acknowledged.
    PowerCut {
        /// Unsynced bytes that reach the file.
        keep: u64,
        /// What the cut did.
        reply: oneshot::Sender<PowerCut>,
    },
}

/// Requests accumulated since the last sync.
#[derive(Default)]
struct Batch {
    entries: Vec<Pending>,
    replicated: Vec<oneshot::Sender<Result<Position, MetadataError>>>,
}

/// The writer's state; moved onto its thread by [`spawn`].
#[derive(Debug)]
pub(crate) struct Writer {
    log: Log,
    leading: Option<u64>,
    failed: bool,
    applier: mpsc::UnboundedSender<ApplyMsg>,
    published: Published,
    progress: Arc<Progress>,
}

/// What the writer publishes for the rest of the node.
#[derive(Debug)]
pub(crate) struct Published {
    /// The shape of the log written to the segment files (readable, perhaps not durable).
    pub(crate) written: watch::Sender<Arc<Shape>>,
    /// The shape of the log made durable.
    pub(crate) durable: watch::Sender<Arc<Shape>>,
    /// The records appended most recently as primary.
    pub(crate) tail: Arc<Tail>,
}

impl Writer {
    /// A writer over a recovered `log`.
    pub(crate) fn new(
        log: Log,
        applier: mpsc::UnboundedSender<ApplyMsg>,
        published: Published,
        progress: Arc<Progress>,
    ) -> Self {
        Self {
            log,
            leading: None,
            failed: false,
            applier,
            published,
            progress,
        }
    }

    fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        while let Some(first) = requests.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            if !self.handle(batch) {
                return;
            }
        }
        self.flush(Batch::default());
    }

    /// Handle one batch; `false` once asked to stop.
    fn handle(&mut self, requests: Vec<Request>) -> bool {
        let mut batch = Batch::default();
        for request in requests {
            match request {
                Request::Propose { command, reply } => self.propose(&mut batch, command, reply),
                Request::Replicate { records, reply } => {
                    self.replicate(&mut batch, records, reply);
                }
                Request::PowerCut { keep, reply } => {
                    match self.log.power_cut(keep) {
                        Ok(cut) => {
                            let _ = reply.send(cut);
                        }
                        Err(e) => tracing::error!(error = %e, "simulating a power cut failed"),
                    }
                    return false;
                }
                other => {
                    self.flush(std::mem::take(&mut batch));
                    if !self.control(other) {
                        return false;
                    }
                }
            }
        }
        self.flush(batch);
        true
    }

    fn refuse(&self) -> Option<MetadataError> {
        if self.failed {
            return Some(MetadataError::Storage(
                "the write-ahead log failed earlier; restart the node".into(),
            ));
        }
        None
    }

    fn propose(&mut self, batch: &mut Batch, command: MetadataCommand, reply: ProposeReply) {
        if let Some(error) = self.refuse() {
            let _ = reply.send(Err(error));
            return;
        }
        let Some(epoch) = self.leading else {
            let _ = reply.send(Err(MetadataError::NotLeader { leader: None }));
            return;
        };
        let index = self.log.shape().last.index + 1;
        let record = match Record::command(epoch, index, &command) {
            Ok(record) => record,
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        };
        if let Err(e) = self.log.append(std::slice::from_ref(&record)) {
            let _ = reply.send(Err(e.into()));
            return;
        }
        self.published.tail.push(&record);
        batch.entries.push(Pending {
            index,
            epoch,
            command: Some(command),
            reply: Some(reply),
        });
    }

    fn replicate(
        &mut self,
        batch: &mut Batch,
        records: Vec<Record>,
        reply: oneshot::Sender<Result<Position, MetadataError>>,
    ) {
        if let Some(error) = self.refuse() {
            let _ = reply.send(Err(error));
            return;
        }
        if self.leading.is_some() {
            let _ = reply.send(Err(MetadataError::Storage(
                "a primary does not take replicated records".into(),
            )));
            return;
        }
        let mut entries = Vec::with_capacity(records.len());
        for record in &records {
            match record.decode_command() {
                Ok(command) => entries.push(Pending {
                    index: record.index,
                    epoch: record.epoch,
                    command,
                    reply: None,
                }),
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                    return;
                }
            }
        }
        if let Err(e) = self.log.append(&records) {
            let _ = reply.send(Err(e.into()));
            return;
        }
        batch.entries.extend(entries);
        batch.replicated.push(reply);
    }

    /// Write what the batch appended, publish it as written, sync it, publish it as durable,
    /// and pass it on to the applier.
    fn flush(&mut self, batch: Batch) {
        if batch.entries.is_empty() && batch.replicated.is_empty() {
            return;
        }
        let synced = self.log.write_buffer().and_then(|()| {
            self.publish_written();
            self.log.sync()
        });
        if let Err(e) = synced {
            // After a failed fsync the page cache may no longer match the disk: stop taking
            // writes rather than acknowledge anything else.
            tracing::error!(error = %e, "fsync of the write-ahead log failed; refusing writes");
            self.failed = true;
            let error = MetadataError::from(e);
            for entry in batch.entries {
                if let Some(reply) = entry.reply {
                    let _ = reply.send(Err(error.clone()));
                }
            }
            for reply in batch.replicated {
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }
        self.publish();
        if !batch.entries.is_empty() {
            metrics::histogram!(telemetry::GROUP_COMMIT_COMMANDS)
                .record(batch.entries.len() as f64);
        }
        let _ = self.applier.send(ApplyMsg::Entries(batch.entries));
        let last = self.log.shape().last;
        for reply in batch.replicated {
            let _ = reply.send(Ok(last));
        }
    }

    /// Publish the log's shape as written, if it changed.
    fn publish_written(&self) {
        let shape = self.log.shape();
        self.published.written.send_if_modified(|written| {
            let changed = **written != *shape;
            if changed {
                *written = Arc::new(shape.clone());
            }
            changed
        });
    }

    /// Publish the log's shape as written and durable.
    fn publish(&self) {
        self.publish_written();
        let shape = self.log.shape().clone();
        let last = shape.last.index;
        self.published.durable.send_replace(Arc::new(shape));
        self.progress.local_durable(last);
    }

    /// Handle a request that is not an append; `false` to stop.
    fn control(&mut self, request: Request) -> bool {
        match request {
            Request::Lead { epoch, reply } => {
                let _ = reply.send(self.lead(epoch));
            }
            Request::Follow { reply } => {
                self.leading = None;
                self.published.tail.clear();
                let _ = reply.send(());
            }
            Request::Snapshot {
                position,
                bytes,
                started,
            } => self.store_snapshot(position, &bytes, started),

            Request::Install {
                bytes,
                snapshot,
                reply,
            } => {
                let _ = reply.send(self.install(&bytes, *snapshot).map_err(Into::into));
            }
            Request::Stop => {
                if let Err(e) = self.log.sync() {
                    tracing::error!(error = %e, "final fsync of the write-ahead log failed");
                }
                return false;
            }
            Request::Propose { .. } | Request::Replicate { .. } | Request::PowerCut { .. } => {}
        }
        true
    }

    fn lead(&mut self, epoch: u64) -> Result<LogIndex, MetadataError> {
        if let Some(error) = self.refuse() {
            return Err(error);
        }
        let last = self.log.shape().last;
        if last.epoch > epoch {
            return Err(MetadataError::Storage(format!(
                "cannot lead epoch {epoch}: the log already holds epoch {}",
                last.epoch
            )));
        }
        self.published.tail.clear();
        if last.epoch < epoch {
            let marker = Record::marker(epoch, last.index + 1);
            self.log.append(std::slice::from_ref(&marker))?;
            self.published.tail.push(&marker);
            if let Err(e) = self.log.sync() {
                self.failed = true;
                return Err(e.into());
            }
            self.leading = Some(epoch);
            let floor = marker.index;
            self.progress.lead(floor);
            self.publish();
            let _ = self.applier.send(ApplyMsg::Entries(vec![Pending {
                index: floor,
                epoch,
                command: None,
                reply: None,
            }]));
            return Ok(floor);
        }
        let floor = self.log.shape().first_of_epoch(epoch).unwrap_or(last.index);
        self.leading = Some(epoch);
        self.progress.lead(floor);
        Ok(floor)
    }

    fn store_snapshot(&mut self, position: Position, bytes: &[u8], started: std::time::Instant) {
        if !self.log.shape().contains(position) {
            tracing::debug!(
                ?position,
                "dropping a snapshot of a log that was reset since"
            );
            return;
        }
        let stored = snapshot::write(self.log.dir(), position.index, bytes)
            .and_then(|_| self.log.compact(position.index));
        metrics::histogram!(telemetry::SNAPSHOT_DURATION).record(started.elapsed());
        match stored {
            Ok(deleted) => tracing::debug!(?position, deleted, "snapshot written"),
            Err(e) => tracing::warn!(?position, error = %e, "snapshot failed; segments kept"),
        }
    }

    /// Replace the log by a snapshot from the primary. The segments go first: a crash in
    /// between leaves the previous snapshot and no log (an older, consistent state that the
    /// primary catches up again), never a snapshot followed by a log of another history.
    fn install(&mut self, bytes: &[u8], snapshot: Snapshot) -> Result<(), WalError> {
        let position = snapshot.position;
        self.published.tail.clear();
        self.log.reset(position)?;
        snapshot::write(self.log.dir(), position.index, bytes)?;
        // The applier takes the install (dropping the entries of the replaced history) before
        // it can see the commit index the snapshot sets.
        let _ = self.applier.send(ApplyMsg::Install(Box::new(snapshot)));
        self.progress.reset(position.index);
        self.publish_written();
        self.published
            .durable
            .send_replace(Arc::new(self.log.shape().clone()));
        Ok(())
    }
}

/// Start the writer thread.
pub(crate) fn spawn(
    writer: Writer,
    requests: mpsc::UnboundedReceiver<Request>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("wal-writer".into())
        .spawn(move || writer.run(requests))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use switchyard_backend_api::{ClusterId, MetadataCommand};

    use crate::config::Mode;

    #[test]
    fn queued_proposals_share_one_fsync() -> Result<(), WalError> {
        let dir = tempfile::tempdir().map_err(|e| WalError::io(Path::new("tmp"), e))?;
        let log = Log::open(dir.path(), 1 << 20, Position::default())?.log;
        let (applier, mut applied) = mpsc::unbounded_channel();
        let tail = Arc::new(Tail::default());
        let published = Published {
            written: watch::Sender::new(Arc::new(Shape::default())),
            durable: watch::Sender::new(Arc::new(Shape::default())),
            tail: Arc::clone(&tail),
        };
        let progress = Arc::new(Progress::new(
            std::collections::BTreeSet::from([switchyard_backend_api::NodeId(1)]),
            Mode::Sync,
            0,
            0,
        ));
        let written = published.written.subscribe();
        let durable = published.durable.subscribe();
        let mut writer = Writer::new(log, applier, published, Arc::clone(&progress));

        let (lead, _) = oneshot::channel();
        let mut requests = vec![Request::Lead {
            epoch: 1,
            reply: lead,
        }];
        let mut replies = Vec::new();
        for i in 0..100 {
            let (reply, answer) = oneshot::channel();
            replies.push(answer);
            requests.push(Request::Propose {
                command: MetadataCommand::InitCluster {
                    cluster_id: ClusterId(format!("c{i}")),
                },
                reply,
            });
        }
        assert!(writer.handle(requests));
        // One sync for the epoch marker, one for all hundred proposals.
        assert_eq!(writer.log.syncs(), 2);
        let Ok(ApplyMsg::Entries(marker)) = applied.try_recv() else {
            panic!("no marker batch");
        };
        assert_eq!(marker.len(), 1);
        let Ok(ApplyMsg::Entries(batch)) = applied.try_recv() else {
            panic!("no proposal batch");
        };
        assert_eq!(batch.len(), 100);
        let last = Position {
            epoch: 1,
            index: 101,
        };
        assert_eq!(writer.log.shape().last, last);
        assert_eq!(written.borrow().last, last);
        assert_eq!(durable.borrow().last, last);
        let kept = tail.read(1, 101, usize::MAX).map(|records| records.len());
        assert_eq!(kept, Some(101), "the marker and every proposal, in memory");
        Ok(())
    }
}
