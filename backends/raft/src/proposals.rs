//! Group commit: every proposal of this node goes through one queue, and one task turns
//! whatever is waiting there into a single log entry ([`Proposals`]).
//!
//! openraft 0.9 appends and fsyncs one client write at a time, so a log entry per proposal would
//! cost a disk sync per proposal however many proposers wait. The task instead takes every
//! proposal queued at that moment (up to [`RaftConfig::batch_max_proposals`] and
//! [`RaftConfig::batch_max_bytes`]), proposes them as one entry — on this node if it leads,
//! forwarded to the leader otherwise — and answers each with its own position and verdict.
//! While one entry commits, the next group gathers: one proposer pays one sync, sixty-four share
//! one.
//!
//! ### To ensure correctness:
//! - One entry in flight per node: entries from this node commit in queue order.
//! - A proposal is answered only after its entry committed and this node applied it (forwarded
//!   or not), or with an error; one whose deadline passed or whose caller left is dropped from
//!   the group before the next attempt, never proposed after it was answered.
//! - A group forwarded to the leader is proposed there as it is, never forwarded again.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use openraft::error::{ClientWriteError, RaftError};
use switchyard_backend_api::{MetadataCommand, MetadataError, Proposed, codec, telemetry};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::backend::{Inner, storage, timeout_error, verdict};
use crate::config::RaftConfig;
use crate::network::{Forwarded, NetError, Request, Response};
use crate::types::{Proposals, Written};

/// One proposal waiting in the queue.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The command.
    pub(crate) command: MetadataCommand,
    /// When its caller stops waiting.
    pub(crate) deadline: Instant,
    /// Where its answer goes.
    pub(crate) reply: oneshot::Sender<Result<Proposed, MetadataError>>,
}

/// A group on its way into one log entry.
struct Group {
    commands: Vec<MetadataCommand>,
    waiting: Vec<(Instant, oneshot::Sender<Result<Proposed, MetadataError>>)>,
}

impl Group {
    fn push(&mut self, pending: Pending) {
        self.commands.push(pending.command);
        self.waiting.push((pending.deadline, pending.reply));
    }

    /// Drop proposals whose caller gave up or whose deadline passed (answering `Timeout`);
    /// returns the earliest deadline left, `None` when nothing is left.
    fn prune(&mut self, timeout: std::time::Duration) -> Option<Instant> {
        let now = Instant::now();
        let commands = std::mem::take(&mut self.commands);
        let waiting = std::mem::take(&mut self.waiting);
        for (command, (deadline, reply)) in commands.into_iter().zip(waiting) {
            if reply.is_closed() {
                continue;
            }
            if deadline <= now {
                let _ = reply.send(Err(timeout_error("the proposal to commit", timeout)));
                continue;
            }
            self.commands.push(command);
            self.waiting.push((deadline, reply));
        }
        self.waiting.iter().map(|(deadline, _)| *deadline).min()
    }

    /// Answer every proposal from the entry's per-proposal verdicts.
    fn answer(self, written: Written) {
        let Written {
            term,
            leader,
            applied,
        } = written;
        if applied.len() != self.waiting.len() {
            let error = storage(format!(
                "an entry of {} proposals answered {} verdicts",
                self.waiting.len(),
                applied.len()
            ));
            self.fail(&error);
            return;
        }
        for ((_, reply), (index, result)) in self.waiting.into_iter().zip(applied) {
            let _ = reply.send(verdict(index, term, leader, result));
        }
    }

    fn fail(self, error: &MetadataError) {
        for (_, reply) in self.waiting {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

/// Take the next group off the queue: wait for one proposal, then add every one already
/// queued, within the configured limits. A proposal that would overflow the byte limit is kept
/// in `carry` for the next group.
async fn gather(
    queue: &mut mpsc::Receiver<Pending>,
    carry: &mut Option<Pending>,
    config: &RaftConfig,
) -> Option<Group> {
    let first = match carry.take() {
        Some(pending) => pending,
        None => queue.recv().await?,
    };
    let size = |command: &MetadataCommand| codec::encoded_len(command).unwrap_or(0);
    let mut bytes = size(&first.command);
    let mut group = Group {
        commands: Vec::new(),
        waiting: Vec::new(),
    };
    group.push(first);
    while group.commands.len() < config.batch_max_proposals {
        let Ok(next) = queue.try_recv() else { break };
        let next_bytes = size(&next.command);
        if bytes + next_bytes > config.batch_max_bytes {
            *carry = Some(next);
            break;
        }
        bytes += next_bytes;
        group.push(next);
    }
    Some(group)
}

impl Inner {
    /// The group-commit task: gather, commit, answer, until the queue closes.
    pub(crate) async fn run_proposals(self: Arc<Self>, mut queue: mpsc::Receiver<Pending>) {
        let mut carry = None;
        while let Some(group) = gather(&mut queue, &mut carry, &self.config).await {
            self.commit(group).await;
        }
    }

    /// Commit one group: propose it here if this node leads, otherwise forward it to the
    /// leader; retry as leadership moves, until the earliest deadline in it passes (then drop
    /// what expired and go on with the rest).
    async fn commit(&self, mut group: Group) {
        let timeout = self.propose_timeout();
        while let Some(deadline) = group.prune(timeout) {
            if self.shut_down.load(Ordering::Acquire) {
                group.fail(&MetadataError::ShutDown);
                return;
            }
            let entry = Proposals(group.commands.clone());
            let leader = match tokio::time::timeout_at(deadline, self.raft.client_write(entry))
                .await
            {
                Ok(Ok(response)) => {
                    metrics::histogram!(telemetry::GROUP_COMMIT_COMMANDS)
                        .record(group.commands.len() as f64);
                    group.answer(Written::from_response(response));
                    return;
                }
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => f.leader_id,
                Ok(Err(RaftError::APIError(e))) => {
                    group.fail(&storage(e));
                    return;
                }
                Ok(Err(RaftError::Fatal(e))) => {
                    group.fail(&self.fatal(e));
                    return;
                }
                // The entry may still commit: its callers hear `Timeout`, an unknown outcome,
                // and it is not proposed again.
                Err(_) => {
                    group.fail(&timeout_error("the proposal to commit", timeout));
                    return;
                }
            };
            if let Some(leader) = leader.filter(|l| *l != self.me) {
                let request = Request::Propose(group.commands.clone());
                match self.call_leader(leader, &request, deadline).await {
                    Ok(Response::Propose(Ok(written))) => {
                        let last = written
                            .applied
                            .iter()
                            .map(|(index, _)| *index)
                            .max()
                            .unwrap_or(0);
                        let left = deadline.saturating_duration_since(Instant::now());
                        match self.applied.wait_applied(last, left).await {
                            Ok(_) => group.answer(written),
                            Err(e) => group.fail(&e),
                        }
                        return;
                    }
                    // Not proposed there: try again once leadership settles.
                    Ok(Response::Propose(Err(
                        MetadataError::NotLeader { .. } | MetadataError::NotReady { .. },
                    )))
                    | Err(NetError::NotSent(_)) => {}
                    Ok(Response::Propose(Err(e))) => {
                        group.fail(&e);
                        return;
                    }
                    // Sent, but no answer: it may have committed, so it is not sent again.
                    Err(e) => {
                        group.fail(&e.into());
                        return;
                    }
                    Ok(_) => {
                        group.fail(&MetadataError::Network(
                            "unexpected response to Propose".into(),
                        ));
                        return;
                    }
                }
            }
            self.await_change(deadline).await;
        }
    }

    /// A group forwarded by a follower: propose it as one entry if this node leads, never
    /// forward it again.
    pub(crate) async fn propose_here(&self, commands: Vec<MetadataCommand>) -> Forwarded {
        let timeout = self.propose_timeout();
        let count = commands.len();
        let entry = Proposals(commands);
        match tokio::time::timeout(timeout, self.raft.client_write(entry)).await {
            Ok(Ok(response)) => {
                metrics::histogram!(telemetry::GROUP_COMMIT_COMMANDS).record(count as f64);
                Ok(Written::from_response(response))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(Self::not_leader(f.leader_id))
            }
            Ok(Err(RaftError::APIError(e))) => Err(storage(e)),
            Ok(Err(RaftError::Fatal(e))) => Err(self.fatal(e)),
            Err(_) => Err(timeout_error("a forwarded proposal to commit", timeout)),
        }
    }
}
