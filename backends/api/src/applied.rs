//! [`AppliedState`]: the applied side of a backend, shared by every implementation. It applies
//! committed entries in order, publishes a lock-free read view after each one, wakes
//! [`MetadataBackend::wait_applied`](crate::MetadataBackend::wait_applied) callers, and feeds
//! the change stream.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, watch};

use crate::backend::StateView;
use crate::command::{MetadataCommand, Outcome};
use crate::error::{MetadataError, Rejection};
use crate::ids::LogIndex;

/// Change-stream buffer per subscriber before it lags.
pub const CHANGE_STREAM_CAPACITY: usize = 4096;

/// What one log position did to the state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A command was applied, with apply's verdict.
    Applied {
        /// The command (boxed: the change stream holds it beside its verdict).
        command: Box<MetadataCommand>,
        /// Its result; a rejection changed nothing.
        result: Result<Outcome, Rejection>,
    },
    /// The whole state was replaced by a snapshot up to this index.
    SnapshotInstalled,
}

/// One entry of the change stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedChange {
    /// Log position.
    pub index: LogIndex,
    /// What happened there.
    pub change: Change,
}

/// Why the change stream ended or skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The subscriber fell behind and `skipped` changes were dropped; re-read the local view.
    #[error("change stream lagged by {skipped} entries")]
    Lagged {
        /// Changes dropped.
        skipped: u64,
    },
    /// The backend shut down.
    #[error("change stream closed")]
    Closed,
}

/// A subscription to applied changes.
#[derive(Debug)]
pub struct ChangeStream {
    rx: broadcast::Receiver<Arc<AppliedChange>>,
}

impl ChangeStream {
    /// The next applied change, in log order.
    pub async fn recv(&mut self) -> Result<Arc<AppliedChange>, StreamError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(skipped) => StreamError::Lagged { skipped },
            broadcast::error::RecvError::Closed => StreamError::Closed,
        })
    }
}

/// The applied state of one node. One writer applies (entries arrive in log order); any number
/// of readers load the view without locks.
#[derive(Debug)]
pub struct AppliedState {
    view: ArcSwap<StateView>,
    write: Mutex<()>,
    applied: watch::Sender<LogIndex>,
    changes: broadcast::Sender<Arc<AppliedChange>>,
}

impl AppliedState {
    /// Start from `initial` (empty, or a recovered snapshot).
    pub fn new(initial: StateView) -> Self {
        let (applied, _) = watch::channel(initial.applied_index);
        let (changes, _) = broadcast::channel(CHANGE_STREAM_CAPACITY);
        Self {
            view: ArcSwap::from_pointee(initial),
            write: Mutex::new(()),
            applied,
            changes,
        }
    }

    /// The current view. Lock-free.
    pub fn view(&self) -> Arc<StateView> {
        self.view.load_full()
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> LogIndex {
        self.view.load().applied_index
    }

    /// Subscribe to changes applied from now on.
    pub fn subscribe(&self) -> ChangeStream {
        ChangeStream {
            rx: self.changes.subscribe(),
        }
    }

    /// Apply `command` at log position `index`, which must be above the last applied index
    /// (positions without a metadata command, such as Raft membership entries, may be
    /// skipped). Publishes the new view, then wakes waiters and subscribers.
    pub fn apply(
        &self,
        index: LogIndex,
        command: &MetadataCommand,
    ) -> Result<Result<Outcome, Rejection>, MetadataError> {
        let _writer = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.view.load();
        if index <= current.applied_index {
            return Err(MetadataError::Storage(format!(
                "entry {index} applied out of order: {} is already applied",
                current.applied_index
            )));
        }
        Ok(self.apply_locked(&current, index, command))
    }

    /// Apply `command` at the next log position; for single-node backends that number entries
    /// themselves. Returns the position and the verdict.
    pub fn apply_next(&self, command: &MetadataCommand) -> (LogIndex, Result<Outcome, Rejection>) {
        let _writer = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.view.load();
        let index = current.applied_index + 1;
        (index, self.apply_locked(&current, index, command))
    }

    /// Apply `commands` at the next positions, one each, in order, as if applied one by one —
    /// but publish a single view after the last (readers see all of them or none), then wake
    /// waiters and send one change per command. Returns each position and verdict. For
    /// backends whose log entries carry several independent proposals.
    pub fn apply_all(
        &self,
        commands: &[MetadataCommand],
    ) -> Vec<(LogIndex, Result<Outcome, Rejection>)> {
        let _writer = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.view.load();
        let first = current.applied_index + 1;
        let entries = (first..).zip(commands.iter().map(Some));
        self.apply_in_order(&current, entries)
            .into_iter()
            .zip(first..)
            .filter_map(|(verdict, index)| verdict.map(|verdict| (index, verdict)))
            .collect()
    }

    /// Apply entries at their log positions, in order — a command as [`Self::apply`] would,
    /// `None` (a position without a metadata command) as [`Self::skip_to`] would — but
    /// publish a single view after the last, then wake waiters and send one change per
    /// command. Returns each entry's verdict (`None` for a position without a command).
    /// Fails, applying nothing, unless the positions ascend from above the last applied one.
    pub fn apply_entries(
        &self,
        entries: &[(LogIndex, Option<&MetadataCommand>)],
    ) -> Result<Vec<Option<Result<Outcome, Rejection>>>, MetadataError> {
        let _writer = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.view.load();
        let mut last = current.applied_index;
        for (index, _) in entries {
            if *index <= last {
                return Err(MetadataError::Storage(format!(
                    "entry {index} applied out of order: {last} is applied before it"
                )));
            }
            last = *index;
        }
        Ok(self.apply_in_order(&current, entries.iter().copied()))
    }

    /// Apply ascending `entries` on top of `current` and publish one view; each entry's
    /// verdict. The caller holds the writer lock and checked the order.
    fn apply_in_order<'a>(
        &self,
        current: &StateView,
        entries: impl Iterator<Item = (LogIndex, Option<&'a MetadataCommand>)>,
    ) -> Vec<Option<Result<Outcome, Rejection>>> {
        let mut next = current.clone();
        let mut results = Vec::new();
        let mut changes = Vec::new();
        for (index, command) in entries {
            next.applied_index = index;
            let Some(command) = command else {
                results.push(None);
                continue;
            };
            let result = next.state.apply(command);
            results.push(Some(result.clone()));
            changes.push(AppliedChange {
                index,
                change: Change::Applied {
                    command: Box::new(command.clone()),
                    result,
                },
            });
        }
        if next.applied_index == current.applied_index {
            return results;
        }
        let index = next.applied_index;
        self.view.store(Arc::new(next));
        self.applied.send_replace(index);
        for change in changes {
            // No subscribers is fine: the change is in the state either way.
            let _ = self.changes.send(Arc::new(change));
        }
        results
    }

    /// Mark positions up to `index` as applied without a metadata command (e.g. a Raft
    /// membership or blank entry). Does nothing if `index` is already applied.
    pub fn skip_to(&self, index: LogIndex) {
        let _writer = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.view.load();
        if index <= current.applied_index {
            return;
        }
        let mut next = StateView::clone(&current);
        next.applied_index = index;
        self.view.store(Arc::new(next));
        self.applied.send_replace(index);
    }

    /// Replace the whole state with a snapshot (follower catch-up).
    pub fn install(&self, snapshot: StateView) {
        let _writer = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let index = snapshot.applied_index;
        self.publish(
            snapshot,
            AppliedChange {
                index,
                change: Change::SnapshotInstalled,
            },
        );
    }

    /// Apply on top of `current`; the caller holds the writer lock.
    fn apply_locked(
        &self,
        current: &StateView,
        index: LogIndex,
        command: &MetadataCommand,
    ) -> Result<Outcome, Rejection> {
        let mut next = current.clone();
        let result = next.state.apply(command);
        next.applied_index = index;
        self.publish(
            next,
            AppliedChange {
                index,
                change: Change::Applied {
                    command: Box::new(command.clone()),
                    result: result.clone(),
                },
            },
        );
        result
    }

    fn publish(&self, next: StateView, change: AppliedChange) {
        let index = next.applied_index;
        self.view.store(Arc::new(next));
        self.applied.send_replace(index);
        // No subscribers is fine: the change is in the state either way.
        let _ = self.changes.send(Arc::new(change));
    }

    /// Wait until `index` is applied, then return the view. Fails with `Timeout`.
    pub async fn wait_applied(
        &self,
        index: LogIndex,
        timeout: Duration,
    ) -> Result<Arc<StateView>, MetadataError> {
        let mut rx = self.applied.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|applied| *applied >= index)).await {
            Ok(Ok(_)) => Ok(self.view()),
            Ok(Err(_)) => Err(MetadataError::ShutDown),
            Err(_) => Err(MetadataError::Timeout {
                what: format!("entry {index} to apply"),
                after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterId;

    fn init(id: &str) -> MetadataCommand {
        MetadataCommand::InitCluster {
            cluster_id: ClusterId(id.into()),
        }
    }

    #[tokio::test]
    async fn refuses_out_of_order_apply_and_wakes_waiters() -> Result<(), MetadataError> {
        let applied = Arc::new(AppliedState::new(StateView::default()));
        let waiter = {
            let applied = Arc::clone(&applied);
            tokio::spawn(async move { applied.wait_applied(2, Duration::from_secs(5)).await })
        };
        applied.apply(1, &init("a"))?.map_err(MetadataError::from)?;
        assert!(applied.apply(1, &init("a")).is_err());
        applied.skip_to(2);
        let view = waiter
            .await
            .map_err(|e| MetadataError::Storage(e.to_string()))??;
        assert_eq!(view.applied_index, 2);
        Ok(())
    }

    #[tokio::test]
    async fn apply_all_numbers_each_command_and_matches_one_by_one() -> Result<(), MetadataError> {
        let commands = [init("a"), init("b"), init("a")];
        let together = AppliedState::new(StateView::default());
        let mut changes = together.subscribe();
        let results = together.apply_all(&commands);
        let one_by_one = AppliedState::new(StateView::default());
        let expected: Vec<_> = commands.iter().map(|c| one_by_one.apply_next(c)).collect();
        assert_eq!(results, expected);
        assert!(results[1].1.is_err(), "a second cluster id is refused");
        assert_eq!(together.view().as_ref(), one_by_one.view().as_ref());
        for (index, result) in &results {
            let change = changes
                .recv()
                .await
                .map_err(|e| MetadataError::Storage(e.to_string()))?;
            assert_eq!(change.index, *index);
            assert!(matches!(&change.change, Change::Applied { result: r, .. } if r == result));
        }
        assert!(together.apply_all(&[]).is_empty());
        assert_eq!(together.applied_index(), 3);
        Ok(())
    }

    #[tokio::test]
    async fn apply_entries_matches_apply_and_skip_to_one_by_one() -> Result<(), MetadataError> {
        let (a, b) = (init("a"), init("b"));
        let together = AppliedState::new(StateView::default());
        let mut changes = together.subscribe();
        let mut published = together.applied.subscribe();
        published.borrow_and_update();
        let verdicts = together.apply_entries(&[(2, Some(&a)), (3, None), (5, Some(&b))])?;
        assert_eq!(verdicts.len(), 3);
        assert!(matches!(verdicts[0], Some(Ok(_))));
        assert!(verdicts[1].is_none());
        assert!(
            matches!(verdicts[2], Some(Err(_))),
            "a second cluster id is refused"
        );
        assert!(published.has_changed().unwrap_or(false));
        assert_eq!(*published.borrow_and_update(), 5);

        let one_by_one = AppliedState::new(StateView::default());
        one_by_one.apply(2, &a)?.map_err(MetadataError::from)?;
        one_by_one.skip_to(3);
        assert!(one_by_one.apply(5, &b)?.is_err());
        assert_eq!(together.view().as_ref(), one_by_one.view().as_ref());
        for index in [2, 5] {
            let change = changes
                .recv()
                .await
                .map_err(|e| MetadataError::Storage(e.to_string()))?;
            assert_eq!(change.index, index);
        }

        let before = together.view();
        for entries in [&[(5, Some(&a))][..], &[(7, None), (6, Some(&a))][..]] {
            assert!(together.apply_entries(entries).is_err());
            assert_eq!(together.view().as_ref(), before.as_ref(), "nothing applied");
        }
        Ok(())
    }

    #[tokio::test]
    async fn wait_applied_times_out() {
        let applied = AppliedState::new(StateView::default());
        let result = applied.wait_applied(1, Duration::from_millis(10)).await;
        assert!(matches!(result, Err(MetadataError::Timeout { .. })));
    }
}
