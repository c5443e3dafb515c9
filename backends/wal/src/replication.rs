//! Replication: the role controller, the primary's links to its followers, the follower's
//! side of a connection, promotion, and the admin client.
//!
//! # Roles
//! The persisted term (`term.rs`) names the primary of the newest epoch this node knows.
//! A node whose term names itself *leads*: it connects out to every other node with
//! `Hello { epoch }`. Each follower persists the epoch (if newer) before answering
//! `Welcome { last }`, and from then on refuses every older epoch with `Fenced`.
//!
//! # Taking over an epoch
//! Before a leader writes, it hears `Welcome` from a majority (itself included). If one of
//! them holds a log that is more up to date (by epoch, then index), the leader fetches the
//! records it lacks from that node first. Then it appends its epoch marker and serves. An
//! acknowledged write in `sync` mode is durable on a majority, and any two majorities share a
//! node, so the new primary ends up with every acknowledged write (Raft's election argument,
//! with the operator instead of an election choosing the candidate).
//!
//! # Streaming
//! A link first brings the follower's log in line: if the follower's last record is in the
//! primary's log and still in a retained segment, streaming continues after it; otherwise the
//! primary sends a snapshot of its applied state (chunked) and streams from there, which also
//! discards a divergent tail on the follower (an old primary's unacknowledged writes). Then it
//! sends durable records as they appear, with the commit index, and heartbeats when idle;
//! the follower fsyncs, applies up to the commit index, and acks its durable position.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use switchyard_backend_api::{MetadataCommand, MetadataError, NodeId, Proposed, Readiness, Role};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::applier::ApplyMsg;
use crate::config::Mode;
use crate::membership;
use crate::node::Node;
use crate::protocol::{Message, NetError, Purpose, recv, send, send_at_most};
use crate::record::{Position, Record};
use crate::segment::{Chunk, Cursor};
use crate::snapshot;
use crate::term::Term;
use crate::writer::Request;

/// Idle primary → follower heartbeat.
const HEARTBEAT: Duration = Duration::from_millis(200);
/// Most record bytes per `Append`.
const APPEND_BYTES: usize = 1 << 20;
/// Longest pause between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Role changes, handled one at a time by the controller task.
#[derive(Debug)]
pub(crate) enum Control {
    /// A peer knows a newer epoch.
    Fenced {
        /// Its epoch.
        epoch: u64,
        /// Its primary.
        primary: NodeId,
    },
    /// The follower side accepted a newer epoch (term already persisted).
    SteppedDown,
    /// Make this node primary in a new epoch.
    Promote {
        /// The new epoch, once the node serves.
        reply: oneshot::Sender<Result<u64, MetadataError>>,
    },
    /// External roles: lead exactly `epoch`.
    LeadAt {
        /// The epoch the embedding backend's election gave this node.
        epoch: u64,
    },
    /// External roles: do not write as primary; `leader` (if known) leads `epoch`.
    Follow {
        /// The epoch.
        epoch: u64,
        /// Its primary, if known.
        leader: Option<NodeId>,
    },
}

/// Which epoch [`lead`] takes.
#[derive(Debug, Clone, Copy)]
enum Epoch {
    /// The persisted one (restart of a static primary); a brand-new cluster starts epoch 1.
    Persisted,
    /// The next one (manual promotion).
    Next,
    /// Exactly this one (external roles); refused unless it is newer than the persisted
    /// epoch, or is it and names this node.
    Exactly(u64),
}

/// A leadership in progress.
struct Leading {
    shared: Arc<Leadership>,
    _links: JoinSet<()>,
}

/// Run the controller until the backend stops.
pub(crate) async fn control(
    node: Arc<Node>,
    mut messages: tokio::sync::mpsc::UnboundedReceiver<Control>,
) {
    let mut leading: Option<Leading> = None;
    if node.term().primary == node.me && !node.is_external() {
        leading = lead(&node, Epoch::Persisted).await;
    } else {
        follower_view(&node, "waiting for the primary to connect");
    }
    while let Some(message) = messages.recv().await {
        match message {
            Control::Fenced { epoch, primary } => {
                let Some(current) = &leading else { continue };
                if epoch < current.shared.epoch
                    || (epoch == current.shared.epoch && primary == node.me)
                {
                    continue;
                }
                tracing::warn!(epoch, %primary, "fenced by a newer epoch; stepping down");
                leading = None;
                if let Err(e) = adopt(&node, Term { epoch, primary }).await {
                    tracing::error!(error = %e, "could not persist the newer epoch");
                }
                step_down(&node).await;
            }
            Control::SteppedDown => {
                if leading.take().is_some() {
                    step_down(&node).await;
                }
                follower_view(&node, "waiting for the new primary");
            }
            Control::Promote { reply } if node.is_external() => {
                let _ = reply.send(Err(MetadataError::Unsupported {
                    what: "manual promotion (this node's leader is elected by its backend)".into(),
                }));
            }
            Control::Promote { reply } => {
                if leading.take().is_some() {
                    step_down(&node).await;
                }
                leading = lead(&node, Epoch::Next).await;
                let node = Arc::clone(&node);
                tokio::spawn(async move {
                    let _ = reply.send(await_leading(&node).await);
                });
            }
            Control::LeadAt { epoch } => {
                if leading.as_ref().is_some_and(|l| l.shared.epoch == epoch) {
                    continue;
                }
                if leading.take().is_some() {
                    step_down(&node).await;
                }
                leading = lead(&node, Epoch::Exactly(epoch)).await;
            }
            Control::Follow { epoch, leader } => {
                let deposed = leading
                    .as_ref()
                    .is_some_and(|l| l.shared.epoch < epoch || leader != Some(node.me));
                if deposed {
                    leading = None;
                    step_down(&node).await;
                }
                if let Some(primary) = leader.filter(|_| leading.is_none()) {
                    // Only a newer epoch resets the view: told again of the epoch it follows,
                    // a node may already be streamed to by that primary, which set the view.
                    match adopt(&node, Term { epoch, primary }).await {
                        Ok(true) => follower_view(&node, "waiting for the primary to connect"),
                        Ok(false) => {}
                        Err(e) => tracing::error!(error = %e, "could not persist the newer epoch"),
                    }
                }
            }
        }
    }
}

/// Persist `term` if it is newer than the one known; whether it was.
async fn adopt(node: &Node, term: Term) -> Result<bool, MetadataError> {
    let mut guard = node.lock_term().await;
    if term.epoch > guard.get().epoch {
        guard.set(term).await?;
        return Ok(true);
    }
    Ok(false)
}

fn follower_view(node: &Node, reason: &str) {
    let term = node.term();
    let known = if node.is_external() {
        term.epoch > 0
    } else {
        term.epoch > 0 || term.primary != node.me
    };
    let leader = known.then_some(term.primary);
    node.set_view(
        Role::Follower,
        leader,
        Readiness::NotReady {
            reason: reason.into(),
        },
    );
}

/// Stop writing as primary: the writer refuses proposals, waiting proposers learn nothing
/// more, and the commit index comes from the next primary.
async fn step_down(node: &Node) {
    let _ = node.ask_writer(|reply| Request::Follow { reply }).await;
    node.progress.follow();
    let _ = node.applier.send(ApplyMsg::Abandon);
    follower_view(node, "stepped down; waiting for the new primary");
}

/// Wait until this node serves as primary, or the promotion deadline passes.
async fn await_leading(node: &Node) -> Result<u64, MetadataError> {
    let mut views = node.cluster();
    let timeout = node.propose_timeout();
    let me = node.me;
    let waited = tokio::time::timeout(
        timeout,
        views.wait_for(|v| v.is_ready() && v.leader == Some(me)),
    )
    .await;
    match waited {
        Ok(Ok(view)) => Ok(view.epoch),
        Ok(Err(_)) => Err(MetadataError::ShutDown),
        Err(_) => Err(MetadataError::Timeout {
            what: "a majority to accept the promotion".into(),
            after_ms: node.config.propose_timeout_ms,
        }),
    }
}

/// Start leading in the epoch `which` names.
async fn lead(node: &Arc<Node>, which: Epoch) -> Option<Leading> {
    let mut guard = node.lock_term().await;
    let term = guard.get();
    let wanted = match which {
        Epoch::Persisted if term.epoch > 0 => None,
        Epoch::Persisted | Epoch::Next => Some(term.epoch + 1),
        Epoch::Exactly(epoch) if epoch > term.epoch => Some(epoch),
        Epoch::Exactly(epoch) if epoch == term.epoch && term.primary == node.me => None,
        Epoch::Exactly(epoch) => {
            tracing::warn!(epoch, known = ?term, "not leading an epoch that is not newer");
            return None;
        }
    };
    let epoch = if let Some(epoch) = wanted {
        let next = Term {
            epoch,
            primary: node.me,
        };
        if let Err(e) = guard.set(next).await {
            tracing::error!(error = %e, "could not persist the new epoch; not leading");
            return None;
        }
        next.epoch
    } else {
        term.epoch
    };
    drop(guard);
    tracing::info!(node = %node.me, epoch, "leading; gathering a majority");
    node.set_view(
        Role::Leader,
        Some(node.me),
        Readiness::NotReady {
            reason: format!("gathering a majority for epoch {epoch}"),
        },
    );
    let shared = Arc::new(Leadership::new(epoch));
    let mut links = JoinSet::new();
    links.spawn(supervise(Arc::clone(node), Arc::clone(&shared)));
    links.spawn(readiness(Arc::clone(node), Arc::clone(&shared)));
    if node.members().quorum() <= 1 {
        let node = Arc::clone(node);
        let shared = Arc::clone(&shared);
        links.spawn(async move { shared.finish(&node).await });
    }
    Some(Leading {
        shared,
        _links: links,
    })
}

/// Keep one link per other member while leading: open links to members that join (or move),
/// close those to members that leave.
async fn supervise(node: Arc<Node>, shared: Arc<Leadership>) {
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
struct Leadership {
    epoch: u64,
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

impl Leadership {
    fn new(epoch: u64) -> Self {
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
        let members = node.members();
        let welcomed = positions
            .keys()
            .chain([&node.me])
            .filter(|id| members.voters.contains(id))
            .count();
        if *self.phase.borrow() != Phase::Gathering || welcomed < members.quorum() {
            return Next::Wait;
        }
        let mine = node.durable.borrow().last;
        let best = positions.iter().max_by_key(|(_, p)| **p);
        match best {
            Some((&best, &position)) if position > mine => {
                self.phase.send_replace(Phase::Fetching(best));
                if best == peer {
                    Next::Fetch
                } else {
                    Next::Wait
                }
            }
            _ => {
                self.phase.send_replace(Phase::TakingOver);
                Next::Finish
            }
        }
    }

    /// A follower went away before serving began.
    fn lost(&self, peer: NodeId) {
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
    async fn finish(&self, node: &Node) {
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
}

/// Keep the primary's readiness current: ready once serving, everything up to takeover is
/// applied, and (in `sync` mode) a majority is connected.
async fn readiness(node: Arc<Node>, shared: Arc<Leadership>) {
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
        let streamed: BTreeSet<NodeId> = streaming.borrow_and_update().keys().copied().collect();
        let connected = current
            .voters
            .iter()
            .filter(|id| **id == node.me || streamed.contains(id))
            .count();
        let readiness = if node.config.mode == Mode::Async || connected >= current.quorum() {
            Readiness::Ready
        } else {
            Readiness::NotReady {
                reason: format!(
                    "{connected} of {} voters connected; sync mode needs {}",
                    current.voters.len(),
                    current.quorum()
                ),
            }
        };
        node.set_view(Role::Leader, Some(node.me), readiness);
        tokio::select! {
            changed = streaming.changed() => if changed.is_err() { return },
            changed = members.changed() => if changed.is_err() { return },
        }
    }
}

/// Keep one follower connected and streamed to, reconnecting with backoff.
async fn link(node: Arc<Node>, shared: Arc<Leadership>, peer: NodeId, addr: String) {
    let mut backoff = Duration::from_millis(20);
    loop {
        match run_link(&node, &shared, peer, &addr).await {
            Ok(()) => return,
            Err(e) => tracing::debug!(%peer, %addr, error = %e, "replication link down"),
        }
        shared.lost(peer);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Counts a follower as connected while it is streamed to.
struct Streaming<'a>(&'a Leadership, NodeId);

impl<'a> Streaming<'a> {
    fn start(shared: &'a Leadership, peer: NodeId) -> Self {
        shared
            .streaming
            .send_modify(|open| *open.entry(peer).or_default() += 1);
        Self(shared, peer)
    }
}

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

/// One connection's life: handshake, takeover, catch-up, stream. `Ok` when fenced.
async fn run_link(
    node: &Arc<Node>,
    shared: &Leadership,
    peer: NodeId,
    addr: &str,
) -> Result<(), MetadataError> {
    let io = node.io_timeout();
    let max = node.config.max_frame_bytes;
    let stream = tokio::time::timeout(io, TcpStream::connect(addr))
        .await
        .map_err(|_| net(NetError::Timeout(io, "connect")))?
        .map_err(|e| net(e.into()))?;
    stream.set_nodelay(true).map_err(|e| net(e.into()))?;
    let (mut reader, mut writer) = stream.into_split();
    let hello = Message::Hello {
        cluster_id: node.config.cluster_id.clone(),
        from: node.me,
        to: peer,
        epoch: shared.epoch,
        purpose: Purpose::Replicate,
    };
    send(&mut writer, &hello, io).await.map_err(net)?;
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
    let mut phase = shared.phase.subscribe();
    let mut next = shared.welcomed(node, peer, last);
    loop {
        match next {
            Next::Fetch => {
                fetch(node, &mut reader, &mut writer).await?;
                shared.phase.send_replace(Phase::TakingOver);
                next = Next::Finish;
                continue;
            }
            Next::Finish => shared.finish(node).await,
            Next::Wait => {}
        }
        match *phase.borrow_and_update() {
            Phase::Serving { .. } => break,
            Phase::Failed => return Ok(()),
            Phase::Fetching(from) if from == peer => {
                next = Next::Fetch;
                continue;
            }
            Phase::Gathering | Phase::Fetching(_) | Phase::TakingOver => {}
        }
        next = Next::Wait;
        tokio::select! {
            changed = phase.changed() => if changed.is_err() { return Ok(()) },
            message = recv(&mut reader, max, io * 4) => {
                return match message.map_err(net)? {
                    Message::Fenced { epoch, primary } => {
                        let _ = node.control.send(Control::Fenced { epoch, primary });
                        Ok(())
                    }
                    other => Err(unexpected(&other)),
                };
            }
        }
        if *phase.borrow() == Phase::Gathering {
            next = shared.welcomed(node, peer, last);
        }
    }
    let cursor = catch_up(node, &mut writer, last).await?;
    stream_to(node, shared, peer, reader, writer, cursor).await
}

/// Send an `Append`. One the peer would refuse as too large (a record written before
/// proposals were bounded, or a peer with a smaller `max_frame_bytes`) is an ERROR, not a
/// quiet retry: the follower cannot make progress until an operator acts.
async fn send_append<W: tokio::io::AsyncWriteExt + Unpin>(
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

pub(crate) fn net(error: NetError) -> MetadataError {
    MetadataError::Network(error.to_string())
}

pub(crate) fn unexpected(message: &Message) -> MetadataError {
    MetadataError::Network(format!("unexpected message {}", describe(message)))
}

fn describe(message: &Message) -> &'static str {
    match message {
        Message::Hello { .. } => "Hello",
        Message::Welcome { .. } => "Welcome",
        Message::Refused { .. } => "Refused",
        Message::Fenced { .. } => "Fenced",
        Message::Append { .. } => "Append",
        Message::SnapshotChunk { .. } => "SnapshotChunk",
        Message::Ack { .. } => "Ack",
        Message::Fetch { .. } => "Fetch",
        Message::FetchDone => "FetchDone",
        Message::Promote => "Promote",
        Message::Promoted { .. } => "Promoted",
        Message::PromoteFailed { .. } => "PromoteFailed",
        Message::Propose { .. } => "Propose",
        Message::Proposed { .. } => "Proposed",
        Message::Accepted => "Accepted",
        Message::ChangeMembers { .. } => "ChangeMembers",
        Message::MembersChanged { .. } => "MembersChanged",
        Message::SetMembers { .. } => "SetMembers",
        Message::MembersSet { .. } => "MembersSet",
    }
}

/// Bring a peer whose last record is `last` in line with this node's log: nothing to do if
/// its log is a prefix of ours still in retained segments, else send a snapshot of the
/// applied state. Returns a cursor at the first record to send.
async fn catch_up(
    node: &Node,
    writer: &mut OwnedWriteHalf,
    last: Position,
) -> Result<Cursor, MetadataError> {
    let shape = node.durable.borrow().clone();
    if shape.contains(last) {
        let dir = node.dir.clone();
        let next = last.index + 1;
        let cursor = tokio::task::spawn_blocking(move || Cursor::open(&dir, next))
            .await
            .map_err(|e| MetadataError::Storage(e.to_string()))?
            .map_err(|e| MetadataError::Storage(e.to_string()))?;
        if let Some(cursor) = cursor {
            return Ok(cursor);
        }
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
    let chunk = (node.config.max_frame_bytes as usize / 2).max(1);
    let total = bytes.len() as u64;
    for data in bytes.chunks(chunk) {
        let message = Message::SnapshotChunk {
            total,
            data: data.to_vec(),
        };
        send(writer, &message, io).await.map_err(net)?;
    }
    let dir = node.dir.clone();
    tokio::task::spawn_blocking(move || Cursor::open(&dir, index + 1))
        .await
        .map_err(|e| MetadataError::Storage(e.to_string()))?
        .map_err(|e| MetadataError::Storage(e.to_string()))?
        .ok_or_else(|| MetadataError::Storage(format!("record {} is not retained", index + 1)))
}

/// Read up to `upto` from the cursor off the async runtime, at most one `Append`'s worth:
/// [`APPEND_BYTES`], and half a frame at most so that it fits the peer's `max_frame_bytes`.
async fn read_records(
    node: &Node,
    cursor: Cursor,
    upto: u64,
) -> Result<(Cursor, Option<Vec<Record>>), MetadataError> {
    let max_bytes = APPEND_BYTES.min(node.config.max_frame_bytes as usize / 2);
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

/// Stream durable records and the commit index to a caught-up follower; read its acks.
async fn stream_to(
    node: &Arc<Node>,
    shared: &Leadership,
    peer: NodeId,
    reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
    mut cursor: Cursor,
) -> Result<(), MetadataError> {
    let _counted = Streaming::start(shared, peer);
    let mut acks = tokio::spawn(read_acks(Arc::clone(node), peer, reader));
    let _abort = AbortOnDrop(acks.abort_handle());
    let mut durable = node.durable.clone();
    let mut commit = node.progress.subscribe();
    loop {
        let upto = durable.borrow_and_update().last.index;
        let (moved, records) = read_records(node, cursor, upto).await?;
        cursor = moved;
        let Some(records) = records else {
            return Err(MetadataError::Storage(
                "the follower's next record was compacted; resending a snapshot".into(),
            ));
        };
        let caught_up = cursor.next() > upto;
        let message = Message::Append {
            commit: *commit.borrow_and_update(),
            records,
        };
        send_append(node, &mut writer, &message).await?;
        if !caught_up {
            continue;
        }
        tokio::select! {
            _ = durable.changed() => {}
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

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Count a follower's acks toward the commit index. `Ok` when it fenced us.
async fn read_acks(
    node: Arc<Node>,
    peer: NodeId,
    mut reader: OwnedReadHalf,
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

/// Pull the records this node lacks from a more up-to-date peer (promotion).
async fn fetch(
    node: &Node,
    reader: &mut OwnedReadHalf,
    writer: &mut OwnedWriteHalf,
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

/// The receiving end of records and snapshots, shared by followers and fetching leaders.
#[derive(Default)]
struct Receiver {
    snapshot: Vec<u8>,
}

impl Receiver {
    /// Make an `Append` or `SnapshotChunk` durable. Returns the commit index an `Append`
    /// carried.
    async fn take(&mut self, node: &Node, message: Message) -> Result<Option<u64>, MetadataError> {
        match message {
            Message::Append { commit, records } => {
                if !records.is_empty() {
                    node.ask_writer(|reply| Request::Replicate { records, reply })
                        .await??;
                }
                Ok(Some(commit))
            }
            Message::SnapshotChunk { total, data } => {
                // Reassembled in memory: never more than a node would decode.
                let max = switchyard_backend_api::codec::MAX_DECODE_BYTES as u64;
                if total > max {
                    return Err(MetadataError::Network(format!(
                        "snapshot of {total} bytes is larger than the {max} bytes a node decodes"
                    )));
                }
                self.snapshot.extend_from_slice(&data);
                let received = self.snapshot.len() as u64;
                if received > total {
                    return Err(MetadataError::Network(format!(
                        "snapshot overran: {received} of {total} bytes"
                    )));
                }
                if received == total {
                    let bytes = std::mem::take(&mut self.snapshot);
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
}

/// How long binding the cluster address is retried before the node gives up listening.
const BIND_DEADLINE: Duration = Duration::from_secs(30);

/// Accept connections on this node's cluster address until the backend stops. Binding is
/// retried for [`BIND_DEADLINE`]: a node reopened in the same process may find its old
/// listener still closing. An address still taken then is an ERROR, and the node takes no
/// cluster connections (it reports why instead of retrying quietly for ever).
pub(crate) async fn listen(node: Arc<Node>, addr: String, bound: Option<TcpListener>) {
    let listener = match bound {
        Some(listener) => listener,
        None => match bind_retrying(&addr, BIND_DEADLINE).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(
                    %addr,
                    %error,
                    "cannot bind the cluster address; this node takes no cluster connections"
                );
                return;
            }
        },
    };
    let mut connections = JoinSet::new();
    loop {
        let (stream, from) = switchyard_backend_api::net::accept(&listener, "wal cluster").await;
        let node = Arc::clone(&node);
        connections.spawn(async move {
            if let Err(e) = serve(&node, stream).await {
                tracing::debug!(%from, error = %e, "replication connection closed");
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn bind_retrying(addr: &str, deadline: Duration) -> std::io::Result<TcpListener> {
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        match bind(addr) {
            Ok(listener) => return Ok(listener),
            Err(e) if tokio::time::Instant::now() >= give_up => return Err(e),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "cannot bind the cluster address yet; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Bind the cluster address (with `SO_REUSEADDR`).
pub(crate) fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(64)
}

/// One incoming connection: check the handshake, then follow or answer an admin request.
async fn serve(node: &Arc<Node>, stream: TcpStream) -> Result<(), MetadataError> {
    let peer_addr = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    stream.set_nodelay(true).map_err(|e| net(e.into()))?;
    let (mut reader, mut writer) = stream.into_split();
    let io = node.io_timeout();
    let hello = recv(&mut reader, node.config.max_frame_bytes, io)
        .await
        .map_err(net)?;
    let Message::Hello {
        cluster_id,
        from,
        to,
        epoch,
        purpose,
    } = hello
    else {
        return Err(unexpected(&hello));
    };
    let refusal = if cluster_id != node.config.cluster_id {
        Some(format!(
            "cluster id {cluster_id:?} is not this cluster's ({:?})",
            node.config.cluster_id
        ))
    } else if to != node.me {
        Some(format!(
            "addressed to node {to}, but this is node {}",
            node.me
        ))
    } else if (matches!(purpose, Purpose::Replicate | Purpose::Forward)
        || (purpose == Purpose::Extension && from.0 != 0))
        && (from == node.me || !node.members().addrs.contains_key(&from))
    {
        Some(format!("node {from} is not a peer of node {}", node.me))
    } else if purpose == Purpose::Extension && !node.is_external() {
        Some(format!("node {} takes no extension connections", node.me))
    } else if purpose == Purpose::Forward && node.is_external() {
        Some(format!("node {} takes no forwarded proposals", node.me))
    } else {
        None
    };
    if let Some(reason) = refusal {
        tracing::warn!(%peer_addr, %from, %reason, "refusing a cluster connection");
        let _ = send(
            &mut writer,
            &Message::Refused {
                reason: reason.clone(),
            },
            io,
        )
        .await;
        return Err(MetadataError::Network(reason));
    }
    match purpose {
        Purpose::Admin => admin(node, reader, writer).await,
        Purpose::Members => membership::serve(node, from, epoch, reader, writer).await,
        Purpose::Forward => serve_forwarded(node, reader, writer).await,
        Purpose::Replicate => follow(node, from, epoch, reader, writer).await,
        Purpose::Extension => {
            send(&mut writer, &Message::Accepted, io)
                .await
                .map_err(net)?;
            let stream = reader
                .reunite(writer)
                .map_err(|e| MetadataError::Network(e.to_string()))?;
            if let Some(extension) = &node.external {
                let _ = extension.send((from, stream));
            }
            Ok(())
        }
    }
}

/// Answer `Promote` or `ChangeMembers`.
async fn admin(
    node: &Arc<Node>,
    mut reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
) -> Result<(), MetadataError> {
    let io = node.io_timeout();
    match recv(&mut reader, node.config.max_frame_bytes, io)
        .await
        .map_err(net)?
    {
        Message::Promote => {
            let (reply, result) = oneshot::channel();
            node.control
                .send(Control::Promote { reply })
                .map_err(|_| MetadataError::ShutDown)?;
            let answer = match result.await {
                Ok(Ok(epoch)) => Message::Promoted { epoch },
                Ok(Err(e)) => Message::PromoteFailed {
                    reason: e.to_string(),
                },
                Err(_) => Message::PromoteFailed {
                    reason: "shut down".into(),
                },
            };
            send(&mut writer, &answer, io).await.map_err(net)
        }
        Message::ChangeMembers { change } => {
            let result = membership::change_as_primary(node, change).await;
            send(&mut writer, &Message::MembersChanged { result }, io)
                .await
                .map_err(net)
        }
        other => Err(unexpected(&other)),
    }
}

/// Answer one forwarded `Propose`: write it if this node is the primary, else say who is.
async fn serve_forwarded(
    node: &Node,
    mut reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
) -> Result<(), MetadataError> {
    let io = node.io_timeout();
    let message = recv(&mut reader, node.config.max_frame_bytes, io)
        .await
        .map_err(net)?;
    let Message::Propose { command } = message else {
        return Err(unexpected(&message));
    };
    let term = node.term();
    let result = if term.primary == node.me {
        node.propose_as_primary(command).await
    } else {
        Err(MetadataError::NotLeader {
            leader: Some(term.primary),
        })
    };
    send(&mut writer, &Message::Proposed { result }, io)
        .await
        .map_err(net)
}

/// Pass `command` to the primary of `term` and wait, within the proposal timeout, for its
/// answer and for this node to apply the entry (read-your-writes on the proposing node). A
/// primary that has stepped down answers `NotLeader` with the one it knows.
pub(crate) async fn forward_proposal(
    node: &Node,
    term: Term,
    command: MetadataCommand,
) -> Result<Proposed, MetadataError> {
    let timeout = node.propose_timeout();
    let deadline = tokio::time::Instant::now() + timeout + node.io_timeout();
    let addr = node.primary_addr(term)?;
    let hello = Message::Hello {
        cluster_id: node.config.cluster_id.clone(),
        from: node.me,
        to: term.primary,
        epoch: term.epoch,
        purpose: Purpose::Forward,
    };
    let io = node.io_timeout();
    let (mut reader, mut writer) = open_with_hello(&addr, &hello, io).await?;
    send(&mut writer, &Message::Propose { command }, io)
        .await
        .map_err(net)?;
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let answer = recv(&mut reader, node.config.max_frame_bytes, left)
        .await
        .map_err(|e| match e {
            NetError::Timeout(..) => MetadataError::Timeout {
                what: format!("primary {} to answer a forwarded proposal", term.primary),
                after_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
            },
            other => net(other),
        })?;
    let proposed = match answer {
        Message::Proposed { result } => result?,
        Message::Refused { reason } => {
            return Err(MetadataError::Network(format!(
                "forwarded proposal refused: {reason}"
            )));
        }
        other => return Err(unexpected(&other)),
    };
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    node.applied.wait_applied(proposed.index, left).await?;
    Ok(proposed)
}

/// Accept `epoch` from `from` as primary, or say who is.
async fn accept_epoch(
    node: &Node,
    from: NodeId,
    epoch: u64,
) -> Result<Option<Term>, MetadataError> {
    let mut guard = node.lock_term().await;
    let term = guard.get();
    if epoch < term.epoch || (epoch == term.epoch && from != term.primary) {
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
async fn follow(
    node: &Node,
    from: NodeId,
    epoch: u64,
    mut reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
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
    let result = follow_stream(node, from, epoch, &mut reader, &mut writer).await;
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

async fn follow_stream(
    node: &Node,
    from: NodeId,
    epoch: u64,
    reader: &mut OwnedReadHalf,
    writer: &mut OwnedWriteHalf,
) -> Result<(), MetadataError> {
    let io = node.io_timeout();
    let dead_after = io * 2;
    let mut receiver = Receiver::default();
    let mut ready_at = None;
    let mut ready = false;
    loop {
        let message = recv(reader, node.config.max_frame_bytes, dead_after)
            .await
            .map_err(net)?;
        if let Some(fenced) = fenced_since(node, epoch) {
            return send(writer, &fenced, io).await.map_err(net);
        }
        if let Message::Fetch { after } = message {
            serve_fetch(node, writer, after).await?;
            continue;
        }
        let commit = receiver.take(node, message).await?;
        // A new primary may have been welcomed while these records became durable; its
        // `Welcome` may not count them, so they must not be acknowledged to the old one.
        if let Some(fenced) = fenced_since(node, epoch) {
            return send(writer, &fenced, io).await.map_err(net);
        }
        if let Some(commit) = commit {
            node.progress.leader_commit(commit);
            ready_at.get_or_insert(commit);
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

/// Answer a promoted node's `Fetch`: catch it up to this node's durable log, then
/// `FetchDone`.
async fn serve_fetch(
    node: &Node,
    writer: &mut OwnedWriteHalf,
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

/// Connect to `addr` (`TCP_NODELAY`) and send `hello`, within `timeout` each.
pub(crate) async fn open_with_hello(
    addr: &str,
    hello: &Message,
    timeout: Duration,
) -> Result<(OwnedReadHalf, OwnedWriteHalf), MetadataError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| net(NetError::Timeout(timeout, "connect")))?
        .map_err(|e| net(e.into()))?;
    stream.set_nodelay(true).map_err(|e| net(e.into()))?;
    let (reader, mut writer) = stream.into_split();
    send(&mut writer, hello, timeout).await.map_err(net)?;
    Ok((reader, writer))
}

/// Ask the node `node` at `addr` (cluster address) to promote itself: it bumps the epoch,
/// takes over from a majority and serves as primary. Returns the new epoch. This is what
/// `switchyard cluster promote N` calls.
pub async fn request_promotion(
    addr: &str,
    cluster_id: &str,
    node: NodeId,
    timeout: Duration,
) -> Result<u64, MetadataError> {
    let hello = Message::Hello {
        cluster_id: cluster_id.to_owned(),
        from: NodeId(0),
        to: node,
        epoch: 0,
        purpose: Purpose::Admin,
    };
    let (mut reader, mut writer) = open_with_hello(addr, &hello, timeout).await?;
    send(&mut writer, &Message::Promote, timeout)
        .await
        .map_err(net)?;
    match recv(&mut reader, 1 << 20, timeout).await.map_err(net)? {
        Message::Promoted { epoch } => Ok(epoch),
        Message::PromoteFailed { reason } | Message::Refused { reason } => Err(
            MetadataError::Network(format!("promotion refused: {reason}")),
        ),
        other => Err(unexpected(&other)),
    }
}

/// Open an extension connection from node `from` to node `to` at `addr` (its cluster
/// address): the wal handshake, then the stream is the caller's. The peer accepts it only if
/// its roles are driven from outside ([`crate::Roles::External`]) and `from` is one of its
/// members.
pub async fn connect_extension(
    addr: &str,
    cluster_id: &str,
    from: NodeId,
    to: NodeId,
    timeout: Duration,
) -> Result<TcpStream, MetadataError> {
    let hello = Message::Hello {
        cluster_id: cluster_id.to_owned(),
        from,
        to,
        epoch: 0,
        purpose: Purpose::Extension,
    };
    let (mut reader, writer) = open_with_hello(addr, &hello, timeout).await?;
    match recv(&mut reader, 1 << 20, timeout).await.map_err(net)? {
        Message::Accepted => reader
            .reunite(writer)
            .map_err(|e| MetadataError::Network(e.to_string())),
        Message::Refused { reason } => Err(MetadataError::Network(format!(
            "extension connection refused: {reason}"
        ))),
        other => Err(unexpected(&other)),
    }
}

#[cfg(test)]
mod tests {
    use anyhow::{Context as _, bail, ensure};
    use switchyard_compat_tests::{RegistryHarness, TestCluster};

    use super::*;

    #[tokio::test]
    async fn binding_a_taken_address_gives_up_at_its_deadline() -> anyhow::Result<()> {
        let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = taken.local_addr()?.to_string();
        let result = bind_retrying(&addr, Duration::from_millis(200)).await;
        ensure!(
            result.is_err(),
            "bound an address another socket listens on"
        );
        drop(taken);
        ensure!(bind_retrying(&addr, Duration::from_secs(5)).await.is_ok());
        Ok(())
    }

    /// A primary announcing a snapshot larger than a node decodes is cut off at its first
    /// chunk: the follower used to buffer chunks towards whatever total the primary claimed.
    /// (Here the "primary" is a peer claiming a higher epoch, which a node accepts.)
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
        let (mut reader, mut writer) = TcpStream::connect(&addr).await?.into_split();
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
