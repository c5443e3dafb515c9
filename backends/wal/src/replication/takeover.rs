//! Taking over an epoch: one [`Leadership`], shared by the links of one leader.
//!
//! Before a leader writes, it hears `Welcome` from a majority (itself included). If one of
//! them holds a log that is more up to date (by epoch, then index), the leader fetches the
//! records it lacks from that node first. Then it appends its epoch marker and serves. An
//! acknowledged write in `sync` mode is durable on a majority, and any two majorities share a
//! node, so the new primary ends up with every acknowledged write (Raft's election argument,
//! with the operator instead of an election choosing the candidate).
//!
//! Once serving, the primary is ready when everything up to takeover is applied and (in
//! `sync` mode) a majority of voters is streamed to.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use switchyard_backend_api::tls::{ClusterReader, ClusterWriter};
use switchyard_backend_api::{MetadataError, NodeId, Readiness, Role};
use tokio::sync::watch;

use super::stream::Receiver;
use super::{Control, follower_view, net, unexpected};
use crate::config::Mode;
use crate::node::{Members, Node};
use crate::protocol::{Message, recv, send};
use crate::record::Position;
use crate::writer::Request;

/// Where a leadership is in taking over its epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a majority of `Welcome`s.
    Gathering,
    /// Fetching the records this node lacks from that node.
    Fetching(NodeId),
    /// One link is appending the epoch marker.
    TakingOver,
    /// Writing; `ready_at` is the last index at takeover, applied before serving.
    Serving { ready_at: u64 },
    /// Could not take over (the term moved on).
    Failed,
}

/// Shared by the links of one leadership.
#[derive(Debug)]
pub(super) struct Leadership {
    /// The epoch being led.
    pub(super) epoch: u64,
    phase: watch::Sender<Phase>,
    positions: Mutex<BTreeMap<NodeId, Position>>,
    /// Members being streamed to → open streams (a replaced link may briefly overlap).
    streaming: watch::Sender<BTreeMap<NodeId, usize>>,
}

/// What a link does after reporting its follower's position.
enum Next {
    Wait,
    Fetch,
    Finish,
}

/// The node a takeover starts from, once `positions` (each welcoming peer's last record)
/// hold `Welcome`s from a majority of the voters, this node `me` included: the peer with the
/// most up-to-date log if it is ahead of this node's `mine`, else `me`. `None` before that.
fn source(
    members: &Members,
    me: NodeId,
    mine: Position,
    positions: &BTreeMap<NodeId, Position>,
) -> Option<NodeId> {
    let welcomed = positions
        .keys()
        .chain([&me])
        .filter(|id| members.voters.contains(id))
        .count();
    if welcomed < members.quorum() {
        return None;
    }
    match positions.iter().max_by_key(|(_, p)| **p) {
        Some((&best, &position)) if position > mine => Some(best),
        _ => Some(me),
    }
}

impl Leadership {
    pub(super) fn new(epoch: u64) -> Self {
        Self {
            epoch,
            phase: watch::Sender::new(Phase::Gathering),
            positions: Mutex::new(BTreeMap::new()),
            streaming: watch::Sender::new(BTreeMap::new()),
        }
    }

    /// A follower welcomed this epoch with its last record at `last`.
    fn welcomed(&self, node: &Node, peer: NodeId, last: Position) -> Next {
        let mut positions = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        positions.insert(peer, last);
        if *self.phase.borrow() != Phase::Gathering {
            return Next::Wait;
        }
        let mine = node.durable.borrow().last;
        match source(&node.members(), node.me, mine, &positions) {
            None => Next::Wait,
            Some(best) if best == node.me => {
                self.phase.send_replace(Phase::TakingOver);
                Next::Finish
            }
            Some(best) => {
                self.phase.send_replace(Phase::Fetching(best));
                if best == peer {
                    Next::Fetch
                } else {
                    Next::Wait
                }
            }
        }
    }

    /// A follower went away before serving began.
    pub(super) fn lost(&self, peer: NodeId) {
        self.positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&peer);
        self.phase.send_if_modified(|phase| {
            let refetch = *phase == Phase::Fetching(peer);
            if refetch {
                *phase = Phase::Gathering;
            }
            refetch
        });
    }

    /// Take over: append the epoch marker (unless the log already holds this epoch) and
    /// serve. Holds the term lock so a newer epoch accepted meanwhile wins.
    pub(super) async fn finish(&self, node: &Node) {
        let guard = node.lock_term().await;
        let term = guard.get();
        if term.epoch != self.epoch || term.primary != node.me {
            self.phase.send_replace(Phase::Failed);
            return;
        }
        let epoch = self.epoch;
        match node
            .ask_writer(|reply| Request::Lead { epoch, reply })
            .await
            .and_then(|r| r)
        {
            Ok(_floor) => {
                let ready_at = node.durable.borrow().last.index;
                tracing::info!(node = %node.me, epoch, ready_at, "serving as primary");
                self.phase.send_replace(Phase::Serving { ready_at });
            }
            Err(e) => {
                tracing::error!(epoch, error = %e, "could not take over the epoch");
                self.phase.send_replace(Phase::Failed);
            }
        }
        drop(guard);
    }

    /// Count `peer` as connected until the returned guard drops.
    pub(super) fn streaming(&self, peer: NodeId) -> Streaming<'_> {
        self.streaming
            .send_modify(|open| *open.entry(peer).or_default() += 1);
        Streaming(self, peer)
    }
}

/// Counts a follower as connected while it is streamed to.
pub(super) struct Streaming<'a>(&'a Leadership, NodeId);

impl Drop for Streaming<'_> {
    fn drop(&mut self) {
        let peer = self.1;
        self.0.streaming.send_modify(|open| {
            if let Some(count) = open.get_mut(&peer) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&peer);
                }
            }
        });
    }
}

/// A serving primary's readiness with `streamed` (members streamed to → open streams):
/// ready in `async` mode, and in `sync` mode once a majority of the voters (`me` included)
/// is streamed to.
fn serving_readiness(
    members: &Members,
    me: NodeId,
    streamed: &BTreeMap<NodeId, usize>,
    mode: Mode,
) -> Readiness {
    let connected = members
        .voters
        .iter()
        .filter(|id| **id == me || streamed.contains_key(id))
        .count();
    if mode == Mode::Async || connected >= members.quorum() {
        Readiness::Ready
    } else {
        Readiness::NotReady {
            reason: format!(
                "{connected} of {} voters connected; sync mode needs {}",
                members.voters.len(),
                members.quorum()
            ),
        }
    }
}

/// Keep the primary's readiness current: ready once serving, everything up to takeover is
/// applied, and (in `sync` mode) a majority is connected.
pub(super) async fn readiness(node: Arc<Node>, shared: Arc<Leadership>) {
    let mut phase = shared.phase.subscribe();
    let Ok(serving) = phase
        .wait_for(|p| matches!(p, Phase::Serving { .. } | Phase::Failed))
        .await
        .map(|p| *p)
    else {
        return;
    };
    let Phase::Serving { ready_at } = serving else {
        follower_view(&node, "could not take over the epoch");
        return;
    };
    if node
        .applied
        .wait_applied(ready_at, Duration::from_secs(u64::MAX >> 2))
        .await
        .is_err()
    {
        return;
    }
    let mut streaming = shared.streaming.subscribe();
    let mut members = node.watch_members();
    loop {
        let current = Arc::clone(&members.borrow_and_update());
        let readiness = serving_readiness(
            &current,
            node.me,
            &streaming.borrow_and_update(),
            node.config.mode,
        );
        node.set_view(Role::Leader, Some(node.me), readiness);
        tokio::select! {
            changed = streaming.changed() => if changed.is_err() { return },
            changed = members.changed() => if changed.is_err() { return },
        }
    }
}

/// One link's part in the takeover, after its follower welcomed the epoch with its last
/// record at `last`: count the `Welcome`, fetch from this follower if it is the most up to
/// date, append the epoch marker if the takeover falls to this link, and wait until the
/// leadership serves. `false` if it failed or the follower fenced the epoch.
pub(super) async fn join(
    node: &Node,
    shared: &Leadership,
    peer: NodeId,
    last: Position,
    reader: &mut ClusterReader,
    writer: &mut ClusterWriter,
) -> Result<bool, MetadataError> {
    let io = node.io_timeout();
    let max = node.config.max_frame_bytes;
    let mut phase = shared.phase.subscribe();
    let mut next = shared.welcomed(node, peer, last);
    loop {
        match next {
            Next::Fetch => {
                fetch(node, reader, writer).await?;
                shared.phase.send_replace(Phase::TakingOver);
                next = Next::Finish;
                continue;
            }
            Next::Finish => shared.finish(node).await,
            Next::Wait => {}
        }
        match *phase.borrow_and_update() {
            Phase::Serving { .. } => return Ok(true),
            Phase::Failed => return Ok(false),
            Phase::Fetching(from) if from == peer => {
                next = Next::Fetch;
                continue;
            }
            Phase::Gathering | Phase::Fetching(_) | Phase::TakingOver => {}
        }
        next = Next::Wait;
        tokio::select! {
            changed = phase.changed() => if changed.is_err() { return Ok(false) },
            message = recv(reader, max, io * 4) => {
                return match message.map_err(net)? {
                    Message::Fenced { epoch, primary } => {
                        let _ = node.control.send(Control::Fenced { epoch, primary });
                        Ok(false)
                    }
                    other => Err(unexpected(&other)),
                };
            }
        }
        if *phase.borrow() == Phase::Gathering {
            next = shared.welcomed(node, peer, last);
        }
    }
}

/// Pull the records this node lacks from a more up-to-date peer (promotion).
async fn fetch(
    node: &Node,
    reader: &mut ClusterReader,
    writer: &mut ClusterWriter,
) -> Result<(), MetadataError> {
    let io = node.io_timeout();
    let after = node.durable.borrow().last;
    tracing::info!(
        ?after,
        "fetching records from a more up-to-date node before taking over"
    );
    send(writer, &Message::Fetch { after }, io)
        .await
        .map_err(net)?;
    let mut receiver = Receiver::default();
    loop {
        let message = recv(reader, node.config.max_frame_bytes, io * 4)
            .await
            .map_err(net)?;
        if message == Message::FetchDone {
            return Ok(());
        }
        receiver.take(node, message).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: NodeId = NodeId(1);

    /// Voters 1..=`voters` (this node is 1), then non-voters up to `nodes`.
    fn members(voters: u64, nodes: u64) -> Members {
        let addrs = (1..=nodes).map(|id| (NodeId(id), String::new())).collect();
        let voters = (1..=voters).map(NodeId).collect();
        Members { addrs, voters }
    }

    fn at(epoch: u64, index: u64) -> Position {
        Position { epoch, index }
    }

    #[test]
    fn a_takeover_waits_for_a_majority_of_voters_counting_itself() {
        let five = members(5, 5);
        let one = BTreeMap::from([(NodeId(2), at(1, 3))]);
        assert_eq!(source(&five, ME, at(1, 3), &one), None);
        let two = BTreeMap::from([(NodeId(2), at(1, 3)), (NodeId(3), at(1, 3))]);
        assert_eq!(source(&five, ME, at(1, 3), &two), Some(ME));
    }

    #[test]
    fn welcomes_from_non_voters_do_not_make_a_majority() {
        let three_of_five = members(3, 5);
        let learners = BTreeMap::from([(NodeId(4), at(1, 3)), (NodeId(5), at(1, 3))]);
        assert_eq!(source(&three_of_five, ME, at(1, 3), &learners), None);
    }

    #[test]
    fn a_takeover_fetches_from_the_most_up_to_date_node_by_epoch_then_index() {
        let five = members(5, 5);
        let positions = BTreeMap::from([
            (NodeId(2), at(1, 90)),
            (NodeId(3), at(2, 10)),
            (NodeId(4), at(2, 7)),
        ]);
        assert_eq!(source(&five, ME, at(1, 50), &positions), Some(NodeId(3)));
        assert_eq!(source(&five, ME, at(2, 10), &positions), Some(ME));
        assert_eq!(source(&five, ME, at(3, 1), &positions), Some(ME));
    }

    #[test]
    fn a_single_voter_takes_over_alone() {
        assert_eq!(
            source(&members(1, 1), ME, at(0, 0), &BTreeMap::new()),
            Some(ME)
        );
    }

    #[test]
    fn losing_the_node_being_fetched_from_restarts_gathering() {
        let shared = Leadership::new(3);
        shared.phase.send_replace(Phase::Fetching(NodeId(2)));
        shared.lost(NodeId(4));
        assert_eq!(*shared.phase.borrow(), Phase::Fetching(NodeId(2)));
        shared.lost(NodeId(2));
        assert_eq!(*shared.phase.borrow(), Phase::Gathering);
        shared.phase.send_replace(Phase::Serving { ready_at: 9 });
        shared.lost(NodeId(2));
        assert_eq!(*shared.phase.borrow(), Phase::Serving { ready_at: 9 });
    }

    #[test]
    fn a_follower_counts_as_streamed_to_until_its_last_overlapping_stream_ends() {
        let shared = Leadership::new(1);
        let peer = NodeId(2);
        let first = shared.streaming(peer);
        let second = shared.streaming(peer);
        drop(first);
        assert_eq!(shared.streaming.borrow().get(&peer), Some(&1));
        drop(second);
        assert!(shared.streaming.borrow().is_empty());
    }

    #[test]
    fn a_sync_primary_is_ready_once_a_majority_of_voters_is_streamed_to() {
        let three_of_four = members(3, 4);
        let learner = BTreeMap::from([(NodeId(4), 1)]);
        assert_eq!(
            serving_readiness(&three_of_four, ME, &learner, Mode::Sync),
            Readiness::NotReady {
                reason: "1 of 3 voters connected; sync mode needs 2".into()
            }
        );
        let voter = BTreeMap::from([(NodeId(3), 1)]);
        assert_eq!(
            serving_readiness(&three_of_four, ME, &voter, Mode::Sync),
            Readiness::Ready
        );
    }

    #[test]
    fn an_async_primary_is_ready_with_no_follower() {
        assert_eq!(
            serving_readiness(&members(3, 3), ME, &BTreeMap::new(), Mode::Async),
            Readiness::Ready
        );
    }
}
