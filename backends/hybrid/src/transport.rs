//! The hybrid backend's traffic between nodes, on the WAL's cluster address: raft-rs messages
//! (one way) and forwarded proposals (calls with replies), in length-delimited frames
//! (`tokio-util`'s `LengthDelimitedCodec`).
//!
//! A connection is opened by a [`Dial`] (the WAL's extension handshake in the backend: it
//! checks the cluster id and that both ends are members) and accepted from the WAL's
//! extension channel with the id of the member that opened it. Its first frame is a
//! codec-encoded [`Open`] saying what the connection carries:
//! - `Raft`: every following frame is one protobuf-encoded `Message`; a message whose sender
//!   is not the member that opened the connection ends it. Each peer has one outgoing
//!   connection, opened on demand and reopened after an error; its queue is bounded and drops
//!   messages when full — Raft tolerates lost messages and resends what matters.
//! - `Calls`: codec-encoded [`CallFrame`]s, calls one way and replies the other, matched by
//!   id, many in flight: a forwarded proposal or membership change. A call whose connection
//!   fails before its reply has an unknown outcome and is never re-sent on another
//!   connection. An operator's client (`switchyard cluster add-node`) opens one as node 0.
//!
//! The set of peers follows the group's membership ([`Outbox::set_peers`], and the
//! addresses a backend's [`Dial`] looks up).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use prost::Message as _;
use raft::eraftpb::Message;
use serde::{Deserialize, Serialize};
use switchyard_backend_api::tls::ClusterStream;
use switchyard_backend_api::{
    ClusterCredentials, ClusterView, MembershipChange, MetadataCommand, MetadataError, NodeId,
    Proposed, codec,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::bytes::Bytes;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Messages queued for one peer before new ones are dropped.
const PEER_QUEUE: usize = 1024;
/// Calls queued for one connection.
const CALL_QUEUE: usize = 1024;
/// How long an accepted connection may take to send its first frame (what it carries): a
/// connection that says nothing is closed rather than held open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// An accepted connection that sends nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A connection this node opened and has not used for this long is replaced before its next
/// use, so that it is never the one the other side's [`IDLE_TIMEOUT`] is closing.
const CLIENT_IDLE: Duration = Duration::from_secs(30);

/// Most entries one raft message may carry. The group's messages are at most
/// `max_size_per_msg` (1 MiB) of entries that each hold a term and an index, so about
/// 130,000 at the very most; a frame of empty entries (two bytes each) would otherwise
/// decode 16 MiB into millions of `Entry` values, about 1 GB.
const MAX_ENTRIES_PER_MESSAGE: usize = 1 << 18;

/// Whether a raft message's top-level `entries` (field 7) are few enough to decode, counted
/// from the protobuf wire format without decoding; a frame that does not scan is left to the
/// decoder to refuse.
fn within_entry_limit(frame: &[u8]) -> bool {
    fn varint(bytes: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = bytes.split_first()?;
            *bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    let mut rest = frame;
    let mut entries = 0usize;
    while !rest.is_empty() {
        let Some(key) = varint(&mut rest) else {
            return true;
        };
        let skip = match key & 7 {
            0 => varint(&mut rest).map(|_| 0),
            1 => Some(8),
            2 => varint(&mut rest).and_then(|len| usize::try_from(len).ok()),
            5 => Some(4),
            _ => None,
        };
        let Some(skip) = skip.filter(|skip| *skip <= rest.len()) else {
            return true;
        };
        if key >> 3 == 7 && key & 7 == 2 {
            entries += 1;
            if entries > MAX_ENTRIES_PER_MESSAGE {
                return false;
            }
        }
        rest = &rest[skip..];
    }
    true
}

/// Opens a connection to a peer by id (the handshake below [`Open`] included).
pub type Dial = Arc<dyn Fn(u64) -> BoxFuture<'static, Option<ClusterStream>> + Send + Sync>;

/// Answers a call on the node that receives it, given the caller's node id (0: an operator).
pub type Handler = Arc<dyn Fn(u64, Call) -> BoxFuture<'static, Answer> + Send + Sync>;

/// What a call asks the node it reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Call {
    /// Propose a command (a follower forwards its client's write).
    Propose(MetadataCommand),
    /// Change the membership (forwarded, or from an operator).
    ChangeMembership(MembershipChange),
}

/// The answer to a [`Call`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Answer {
    /// To `Propose`.
    Proposed(Result<Proposed, MetadataError>),
    /// To `ChangeMembership`: the leader's view once the change applied.
    Membership(Result<ClusterView, MetadataError>),
}

/// The first frame of a connection: what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Open {
    Raft,
    Calls,
}

/// A frame of a `Calls` connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum CallFrame {
    Call { id: u64, call: Call },
    Reply { id: u64, answer: Answer },
}

type Conn = Framed<ClusterStream, LengthDelimitedCodec>;

fn framing(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max_frame_bytes)
        .new_codec()
}

async fn open(dial: &Dial, peer: u64, kind: Open, max_frame_bytes: usize) -> Option<Conn> {
    let stream = dial(peer).await?;
    let mut conn = Framed::new(stream, framing(max_frame_bytes));
    conn.send(Bytes::from(codec::encode(&kind).ok()?))
        .await
        .ok()?;
    Some(conn)
}

/// One peer's sender task and its queue.
struct PeerSender {
    queue: mpsc::Sender<Message>,
    task: tokio::task::AbortHandle,
}

/// The sender tasks of one node.
struct Senders {
    dial: Dial,
    me: u64,
    max_frame_bytes: usize,
    peers: Mutex<BTreeMap<u64, PeerSender>>,
}

impl Drop for Senders {
    fn drop(&mut self) {
        let peers = self.peers.get_mut().unwrap_or_else(PoisonError::into_inner);
        for peer in peers.values() {
            peer.task.abort();
        }
    }
}

/// Sends Raft messages to peers; cheap to clone. The sender tasks stop when the last clone
/// is dropped.
#[derive(Clone)]
pub struct Outbox {
    senders: Arc<Senders>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

impl Outbox {
    /// Queue each message for its peer; a message to an unknown or overloaded peer is dropped.
    pub fn send(&self, messages: Vec<Message>) {
        let peers = self
            .senders
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for message in messages {
            if let Some(peer) = peers.get(&message.to) {
                let _ = peer.queue.try_send(message);
            }
        }
    }

    /// Send to exactly `peers` (this node excluded): start senders for new ones, stop those
    /// of the others.
    pub fn set_peers(&self, peers: impl IntoIterator<Item = u64>) {
        let senders = &self.senders;
        let wanted: std::collections::BTreeSet<u64> =
            peers.into_iter().filter(|id| *id != senders.me).collect();
        let mut current = senders.peers.lock().unwrap_or_else(PoisonError::into_inner);
        current.retain(|id, peer| {
            let keep = wanted.contains(id);
            if !keep {
                peer.task.abort();
            }
            keep
        });
        for id in wanted {
            current.entry(id).or_insert_with(|| {
                let (queue, rx) = mpsc::channel(PEER_QUEUE);
                let task = tokio::spawn(send_to(
                    Arc::clone(&senders.dial),
                    id,
                    senders.max_frame_bytes,
                    rx,
                ));
                PeerSender {
                    queue,
                    task: task.abort_handle(),
                }
            });
        }
    }
}

/// An outbox sending to `peers` (this node excluded) through `dial`.
pub fn connect(
    dial: &Dial,
    me: u64,
    peers: impl IntoIterator<Item = u64>,
    max_frame_bytes: usize,
) -> Outbox {
    let outbox = Outbox {
        senders: Arc::new(Senders {
            dial: Arc::clone(dial),
            me,
            max_frame_bytes,
            peers: Mutex::default(),
        }),
    };
    outbox.set_peers(peers);
    outbox
}

/// Deliver `queue` to `peer`, connecting on demand; a failed connection drops the message it
/// was carrying and is reopened for the next.
async fn send_to(dial: Dial, peer: u64, max: usize, mut queue: mpsc::Receiver<Message>) {
    let mut conn: Option<Conn> = None;
    let mut last_sent = Instant::now();
    while let Some(message) = queue.recv().await {
        if conn.is_none() || last_sent.elapsed() >= CLIENT_IDLE {
            conn = open(&dial, peer, Open::Raft, max).await;
        }
        last_sent = Instant::now();
        let Some(stream) = conn.as_mut() else {
            continue;
        };
        let sent = stream
            .send(Bytes::from(message.encode_to_vec()))
            .await
            .is_ok();
        if !sent {
            conn = None;
        }
    }
}

/// Take the connections peers opened (`(peer id, stream)` from `incoming`): Raft messages go
/// to `inbox`, calls to `handler`. Runs until `incoming` closes or the task is aborted.
pub async fn serve(
    mut incoming: mpsc::UnboundedReceiver<(NodeId, ClusterStream)>,
    me: u64,
    max_frame_bytes: usize,
    inbox: mpsc::Sender<Message>,
    handler: Handler,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = incoming.recv() => {
                let Some((from, stream)) = accepted else { return };
                let conn = Framed::new(stream, framing(max_frame_bytes));
                connections.spawn(receive(conn, from.0, me, inbox.clone(), Arc::clone(&handler)));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn receive(
    mut conn: Conn,
    from: u64,
    me: u64,
    inbox: mpsc::Sender<Message>,
    handler: Handler,
) {
    let Ok(Some(Ok(first))) = tokio::time::timeout(OPEN_TIMEOUT, conn.next()).await else {
        return;
    };
    match codec::decode::<Open>(&first) {
        Ok(Open::Raft) if from != 0 => {
            while let Ok(Some(Ok(frame))) = tokio::time::timeout(IDLE_TIMEOUT, conn.next()).await {
                if !within_entry_limit(&frame) {
                    switchyard_backend_api::warn_throttled!(
                        peer = from,
                        bytes = frame.len(),
                        "a raft message with more than {MAX_ENTRIES_PER_MESSAGE} entries; closing"
                    );
                    return;
                }
                match Message::decode(&frame[..]) {
                    Ok(message) if message.from == from && message.to == me => {
                        if inbox.send(message).await.is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        }
        Ok(Open::Calls) => answer_calls(conn, from, handler).await,
        Ok(Open::Raft) | Err(_) => {}
    }
}

/// Run each call of one connection as it arrives; replies go back in completion order.
async fn answer_calls(conn: Conn, from: u64, handler: Handler) {
    let (mut sink, mut stream) = conn.split();
    let (replies, mut outgoing) = mpsc::unbounded_channel::<CallFrame>();
    let writer = async move {
        while let Some(frame) = outgoing.recv().await {
            let Ok(bytes) = codec::encode(&frame) else {
                continue;
            };
            if sink.send(Bytes::from(bytes)).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut calls = JoinSet::new();
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(IDLE_TIMEOUT, stream.next()).await {
            let Ok(CallFrame::Call { id, call }) = codec::decode::<CallFrame>(&frame) else {
                return;
            };
            let handler = Arc::clone(&handler);
            let replies = replies.clone();
            calls.spawn(async move {
                let answer = handler(from, call).await;
                let _ = replies.send(CallFrame::Reply { id, answer });
            });
            while calls.try_join_next().is_some() {}
        }
        // The peer closed its side: finish the calls it is waiting for.
        while calls.join_next().await.is_some() {}
    };
    tokio::join!(writer, reader);
}

/// Why a call has no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No connection to the peer could be made: the call was not sent.
    #[error("could not reach node {0}")]
    NotSent(u64),
    /// The connection failed or the deadline passed after the call was sent: it may or may
    /// not have been proposed.
    #[error("no reply from node {0}")]
    Unknown(u64),
}

type Pending = oneshot::Sender<Answer>;
/// The queue of one `Calls` connection's task.
type Calls = mpsc::Sender<(Call, Pending)>;

/// Calls peers over one multiplexed `Calls` connection per peer.
#[derive(Clone)]
pub struct Caller {
    dial: Dial,
    max_frame_bytes: usize,
    connections: Arc<Mutex<BTreeMap<u64, Calls>>>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller").finish_non_exhaustive()
    }
}

impl Caller {
    /// Calls through `dial`.
    pub fn new(dial: Dial, max_frame_bytes: usize) -> Self {
        Self {
            dial,
            max_frame_bytes,
            connections: Arc::default(),
        }
    }

    /// Call `peer`, waiting at most `timeout` for the answer.
    pub async fn call(
        &self,
        peer: u64,
        call: Call,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        let (reply, answer) = oneshot::channel();
        let mut request = (call, reply);
        // A connection found open may close as it is picked (idle for CLIENT_IDLE): the call
        // then goes over a new one.
        for attempt in 0..2 {
            let existing = self
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&peer)
                .filter(|tx| !tx.is_closed())
                .cloned();
            let calls = match existing {
                Some(calls) => calls,
                None => {
                    let dialed = tokio::time::timeout(
                        timeout,
                        open(&self.dial, peer, Open::Calls, self.max_frame_bytes),
                    )
                    .await;
                    let Ok(Some(conn)) = dialed else {
                        return Err(CallError::NotSent(peer));
                    };
                    let (tx, rx) = mpsc::channel(CALL_QUEUE);
                    tokio::spawn(run_calls(conn, rx));
                    self.connections
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(peer, tx.clone());
                    tx
                }
            };
            match calls.send(request).await {
                Ok(()) => break,
                Err(mpsc::error::SendError(back)) if attempt == 0 => request = back,
                Err(_) => return Err(CallError::NotSent(peer)),
            }
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) | Err(_) => Err(CallError::Unknown(peer)),
        }
    }
}

/// One `Calls` connection: send queued calls, route replies to their callers. Ends (dropping
/// every pending caller's reply) when the connection fails, no caller is left, or nothing
/// was sent or pending for [`CLIENT_IDLE`] (the next call opens a new connection).
async fn run_calls(conn: Conn, mut calls: mpsc::Receiver<(Call, Pending)>) {
    let (mut sink, mut stream) = conn.split();
    let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
    let mut next_id = 0u64;
    let mut last_call = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(last_call + CLIENT_IDLE), if pending.is_empty() => return,
            call = calls.recv() => {
                let Some((call, reply)) = call else { return };
                last_call = Instant::now();
                next_id += 1;
                let frame = CallFrame::Call { id: next_id, call };
                let Ok(bytes) = codec::encode(&frame) else { continue };
                if sink.send(Bytes::from(bytes)).await.is_err() {
                    return;
                }
                pending.insert(next_id, reply);
            }
            frame = stream.next() => {
                let Some(Ok(frame)) = frame else { return };
                let Ok(CallFrame::Reply { id, answer }) = codec::decode::<CallFrame>(&frame) else {
                    return;
                };
                if let Some(reply) = pending.remove(&id) {
                    let _ = reply.send(answer);
                }
            }
        }
    }
}

/// Ask the cluster to make a membership change, as an operator (node 0): `nodes` (id →
/// cluster address) are tried in order until one answers; a follower forwards the change to
/// the leader. Returns the leader's view once the change applied. This is what
/// `switchyard cluster add-node` / `remove-node` call.
pub async fn request_membership_change(
    nodes: &[(u64, String)],
    cluster_id: &str,
    credentials: &ClusterCredentials,
    change: MembershipChange,
    timeout: Duration,
) -> Result<ClusterView, MetadataError> {
    let mut last = MetadataError::Network("no node to ask".into());
    for (id, addr) in nodes {
        let dial: Dial = {
            let addr = addr.clone();
            let cluster_id = cluster_id.to_owned();
            let credentials = credentials.clone();
            let to = *id;
            Arc::new(move |_| {
                let addr = addr.clone();
                let cluster_id = cluster_id.clone();
                let credentials = credentials.clone();
                Box::pin(async move {
                    switchyard_backend_wal::connect_extension(
                        &addr,
                        &cluster_id,
                        &credentials,
                        NodeId(0),
                        NodeId(to),
                        timeout,
                    )
                    .await
                    .ok()
                })
            })
        };
        let caller = Caller::new(dial, 1 << 20);
        match caller
            .call(*id, Call::ChangeMembership(change.clone()), timeout)
            .await
        {
            Ok(Answer::Membership(Ok(view))) => return Ok(view),
            Ok(Answer::Membership(Err(e))) if !e.is_retriable() => return Err(e),
            Ok(Answer::Membership(Err(e))) => last = e,
            Ok(Answer::Proposed(_)) => {
                last = MetadataError::Network(format!("node {id} answered another call"));
            }
            Err(e) => last = MetadataError::Network(format!("{addr}: {e}")),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection accepted by [`serve`] from node 2, and its client end.
    async fn served_connection()
    -> std::io::Result<(tokio::net::TcpStream, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
        let (accepted, _) = listener.accept().await?;
        let (handover, incoming) = mpsc::unbounded_channel();
        let (inbox, messages) = mpsc::channel(1);
        let handler: Handler =
            Arc::new(|_, _| Box::pin(async { Answer::Proposed(Err(MetadataError::ShutDown)) }));
        if handover.send((NodeId(2), accepted.into())).is_err() {
            return Err(std::io::Error::other("serve stopped"));
        }
        // `serve` stops when its handover channel closes: the task keeps it open.
        let server = tokio::spawn(async move {
            let _kept = (handover, messages);
            serve(incoming, 1, 1 << 20, inbox, handler).await;
        });
        Ok((client, server))
    }

    /// How long until the server closes `client`'s connection.
    async fn closed_after(client: &mut tokio::net::TcpStream) -> std::io::Result<Duration> {
        use tokio::io::AsyncReadExt as _;

        let opened = tokio::time::Instant::now();
        let mut buf = [0u8; 1];
        let read = client.read(&mut buf).await?;
        assert_eq!(read, 0, "the connection is closed");
        Ok(opened.elapsed())
    }

    /// A raft connection that goes quiet is closed after [`IDLE_TIMEOUT`].
    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed() -> std::io::Result<()> {
        let (mut quiet, server) = served_connection().await?;
        let open = codec::encode(&Open::Raft).map_err(std::io::Error::other)?;
        let len = u32::try_from(open.len()).map_err(std::io::Error::other)?;
        tokio::io::AsyncWriteExt::write_all(&mut quiet, &len.to_be_bytes()).await?;
        tokio::io::AsyncWriteExt::write_all(&mut quiet, &open).await?;
        let idle = closed_after(&mut quiet).await?;
        assert!(idle >= IDLE_TIMEOUT, "{idle:?}");
        server.abort();
        Ok(())
    }

    /// A connection handed over by the WAL's handshake that never says what it carries is
    /// closed after [`OPEN_TIMEOUT`], not held open.
    #[tokio::test(start_paused = true)]
    async fn a_connection_that_says_nothing_is_closed() -> std::io::Result<()> {
        let (mut silent, server) = served_connection().await?;
        let silence = closed_after(&mut silent).await?;
        assert!(silence >= OPEN_TIMEOUT, "{silence:?}");
        server.abort();
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4_000))]

        /// What a peer (or a stranger) sends on the hybrid extension connection, decoded: the
        /// opening frame, call frames, and raft-rs messages give a value or an error, never a
        /// panic or an allocation sized by a length in the input. (The libFuzzer targets in
        /// `broker/fuzz` leave this crate out: its RocksDB build would dominate every fuzz
        /// build.)
        #[test]
        fn any_extension_frame_decodes_or_is_refused(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)
        ) {
            let mut frame = vec![codec::FORMAT_VERSION];
            frame.extend_from_slice(&body);
            let _ = codec::decode::<Open>(&frame);
            let _ = codec::decode::<CallFrame>(&frame);
            let _ = Message::decode(&body[..]);
        }
    }

    /// The shape of RUSTSEC-2024-0437 (protobuf's recursive group skipping) in a raft frame,
    /// decoded by prost: deeply nested unknown groups are refused with an error (prost caps
    /// group nesting at 100), and deeply nested unknown length-delimited fields are skipped
    /// as bytes, never parsed — neither overflows the stack.
    #[test]
    fn deeply_nested_unknown_fields_neither_recurse_nor_overflow() {
        // Unknown field 20, wire type 3 (start group), 100,000 times.
        let groups = [0xa3u8, 0x01].repeat(100_000);
        assert!(Message::decode(&groups[..]).is_err());
        // Unknown field 21, wire type 2, each one's body the next, 10,000 deep.
        let mut nested: Vec<u8> = Vec::new();
        for _ in 0..10_000 {
            let mut outer = vec![0xaa, 0x01];
            let mut len = nested.len();
            while len >= 0x80 {
                outer.push((len as u8 & 0x7f) | 0x80);
                len >>= 7;
            }
            outer.push(len as u8);
            outer.extend_from_slice(&nested);
            nested = outer;
        }
        let decoded = Message::decode(&nested[..]).map(|m| m.get_msg_type());
        assert!(
            matches!(decoded, Ok(raft::eraftpb::MessageType::MsgHup)),
            "{decoded:?}"
        );
    }

    /// A frame of millions of empty entries is refused before it is decoded; a real append
    /// message passes.
    #[test]
    fn a_raft_frame_of_millions_of_empty_entries_is_refused_before_decoding() {
        // Field 7, wire type 2, length 0: one empty entry, two bytes.
        let empty_entries = [0x3a, 0x00].repeat(8 << 20);
        assert!(!within_entry_limit(&empty_entries));
        let mut append = Message::default();
        append.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
        append.to = 2;
        append.from = 1;
        append.entries = (1..=1000)
            .map(|index| raft::eraftpb::Entry {
                term: 3,
                index,
                data: vec![7; 100],
                ..Default::default()
            })
            .collect();
        assert!(within_entry_limit(&append.encode_to_vec()));
    }

    /// A message type this version does not know reads as the default (`MsgHup`), as it did
    /// with protobuf 2, instead of panicking in raft-rs's getter.
    #[test]
    fn an_unknown_message_type_reads_as_the_default() {
        // msg_type (field 1) = 99, to = 2, from = 1.
        let message = Message::decode(&[0x08, 99, 0x10, 2, 0x18, 1][..]);
        assert!(
            matches!(&message, Ok(m) if m.get_msg_type() == raft::eraftpb::MessageType::MsgHup
                && m.msg_type == 99 && m.to == 2 && m.from == 1),
            "{message:?}"
        );
    }

    /// Protobuf 2 (raft-rs's protobuf codec, Switchyard before the raft-rs patch) and prost
    /// (the patched raft-rs) write the same bytes for raft messages and for the records
    /// `store` keeps in RocksDB, and read each other's: every constant below was written by
    /// protobuf 2.28 (`write_to_bytes`). The one difference: protobuf 2 writes fields in the
    /// `.proto` file's order, prost in field-number order, and eraftpb declares a few fields
    /// out of number order (`Message.commit_term` = 15 after `commit` = 8, `request_snapshot`
    /// = 13 after `snapshot` = 9, `ConfChange.id` = 1 last, `Entry.sync_log` = 5 after
    /// `context` = 6). A message that sets one of those together with a later-declared field
    /// comes out with the same fields, each byte for byte, in another order — which any
    /// protobuf reader accepts. The repeated `ConfState` fields stay unpacked as protobuf 2
    /// wrote them (`[packed = false]` in third_party/raft-proto/proto/eraftpb.proto).
    mod protobuf2_bytes {
        use raft::eraftpb::{
            ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2,
            ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot,
            SnapshotMetadata,
        };

        use super::*;

        /// Every field of `Message` set, with three entries (normal, `ConfChange`,
        /// `ConfChangeV2`) and a snapshot with metadata and a joint `ConfState`.
        const MESSAGE: &str = "0803100218012007280630293a131007182a220801636f6d6d616e6432036374783a1c08011007182b221410021804220e3132372e302e302e313a393039333a1408021007182c220c08021204080110031a027632402878064a220a0601737461746512180a12080108020803100418011802180520052801101e1805681d50015826620863616d706169676e70038001feffffffffffffffff01";
        /// What a leader sends: `MsgAppend` with the same entries, `commit` and `commit_term`.
        const APPEND: &str = "0803100218012007280630293a131007182a220801636f6d6d616e6432036374783a1c08011007182b221410021804220e3132372e302e302e313a393039333a1408021007182c220c08021204080110031a02763240287806";
        const HEARTBEAT: &str = "08081002180120074028";
        const SNAPSHOT_MESSAGE: &str = "08071004180120074a220a0601737461746512180a12080108020803100418011802180520052801101e1805";
        /// The RocksDB records (`store`): `raft_log` values and `raft_meta` values.
        const ENTRY: &str = "1007182a220801636f6d6d616e643203637478";
        const SNAPSHOT: &str =
            "0a0601737461746512180a12080108020803100418011802180520052801101e1805";
        const CONF_STATE: &str = "080108020803100418011802180520052801";
        const HARD_STATE: &str = "080710011828";
        /// Entry data of membership changes.
        const CONF_CHANGE: &str = "10021804220e3132372e302e302e313a39303933";
        const CONF_CHANGE_V2: &str = "08021204080110031a027632";
        /// Declared out of number order: `id` (1) after `context` (4), `sync_log` (5) after
        /// `context` (6).
        const CONF_CHANGE_WITH_ID: &str = "18022201610809";
        const ENTRY_WITH_SYNC_LOG: &str = "1007182a2201783201632801";

        fn unhex(hex: &str) -> Vec<u8> {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or_default())
                .collect()
        }

        /// The top-level fields of a protobuf message (varint and length-delimited only), each
        /// as its field number and its bytes (key included), in field-number order.
        fn fields_by_number(mut bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
            fn varint(bytes: &mut &[u8]) -> u64 {
                let mut value = 0;
                for shift in (0..64).step_by(7) {
                    let Some((&byte, rest)) = bytes.split_first() else {
                        panic!("truncated varint");
                    };
                    *bytes = rest;
                    value |= u64::from(byte & 0x7f) << shift;
                    if byte < 0x80 {
                        break;
                    }
                }
                value
            }
            let mut fields = Vec::new();
            while !bytes.is_empty() {
                let start = bytes;
                let key = varint(&mut bytes);
                match key & 7 {
                    0 => {
                        varint(&mut bytes);
                    }
                    2 => {
                        let len = usize::try_from(varint(&mut bytes)).unwrap_or(usize::MAX);
                        bytes = &bytes[len..];
                    }
                    other => panic!("wire type {other}"),
                }
                let taken = start.len() - bytes.len();
                fields.push((key >> 3, start[..taken].to_vec()));
            }
            fields.sort_by_key(|(number, _)| *number);
            fields
        }

        fn change() -> ConfChange {
            ConfChange {
                change_type: ConfChangeType::AddLearnerNode as i32,
                node_id: 4,
                context: b"127.0.0.1:9093".to_vec(),
                ..ConfChange::default()
            }
        }

        fn change_v2() -> ConfChangeV2 {
            ConfChangeV2 {
                transition: ConfChangeTransition::Explicit as i32,
                changes: vec![ConfChangeSingle {
                    change_type: ConfChangeType::RemoveNode as i32,
                    node_id: 3,
                }],
                context: b"v2".to_vec(),
            }
        }

        fn entries() -> Vec<Entry> {
            vec![
                Entry {
                    entry_type: EntryType::EntryNormal as i32,
                    term: 7,
                    index: 42,
                    data: b"\x01command".to_vec(),
                    context: b"ctx".to_vec(),
                    sync_log: false,
                },
                Entry {
                    entry_type: EntryType::EntryConfChange as i32,
                    term: 7,
                    index: 43,
                    data: change().encode_to_vec(),
                    ..Entry::default()
                },
                Entry {
                    entry_type: EntryType::EntryConfChangeV2 as i32,
                    term: 7,
                    index: 44,
                    data: change_v2().encode_to_vec(),
                    ..Entry::default()
                },
            ]
        }

        fn snapshot() -> Snapshot {
            Snapshot {
                data: b"\x01state".to_vec(),
                metadata: Some(SnapshotMetadata {
                    conf_state: Some(ConfState {
                        voters: vec![1, 2, 3],
                        learners: vec![4],
                        voters_outgoing: vec![1, 2, 5],
                        learners_next: vec![5],
                        auto_leave: true,
                    }),
                    index: 30,
                    term: 5,
                }),
            }
        }

        /// Decodes `hex` to `expected` and encodes `expected` back to exactly `hex`.
        fn same_bytes<M: prost::Message + Default + PartialEq + std::fmt::Debug>(
            hex: &str,
            expected: &M,
        ) {
            let bytes = unhex(hex);
            assert_eq!(M::decode(&bytes[..]).as_ref(), Ok(expected), "{hex}");
            assert_eq!(expected.encode_to_vec(), bytes, "{hex}");
        }

        /// Decodes `hex` to `expected` and encodes `expected` back to the same fields, each byte
        /// for byte, in field-number order.
        fn same_fields<M: prost::Message + Default + PartialEq + std::fmt::Debug>(
            hex: &str,
            expected: &M,
        ) {
            let bytes = unhex(hex);
            assert_eq!(M::decode(&bytes[..]).as_ref(), Ok(expected), "{hex}");
            let encoded = expected.encode_to_vec();
            assert_ne!(encoded, bytes, "{hex} is in field-number order already");
            assert_eq!(
                fields_by_number(&encoded),
                fields_by_number(&bytes),
                "{hex}"
            );
        }

        #[test]
        fn raft_messages_and_stored_records_keep_their_protobuf2_bytes() {
            let append = Message {
                msg_type: MessageType::MsgAppend as i32,
                to: 2,
                from: 1,
                term: 7,
                log_term: 6,
                index: 41,
                entries: entries(),
                commit: 40,
                commit_term: 6,
                ..Message::default()
            };
            same_bytes(APPEND, &append);
            let every_field = Message {
                snapshot: Some(snapshot()),
                request_snapshot: 29,
                reject: true,
                reject_hint: 38,
                context: b"campaign".to_vec(),
                deprecated_priority: 3,
                priority: -2,
                ..append
            };
            same_fields(MESSAGE, &every_field);
            let heartbeat = Message {
                msg_type: MessageType::MsgHeartbeat as i32,
                to: 2,
                from: 1,
                term: 7,
                commit: 40,
                ..Message::default()
            };
            same_bytes(HEARTBEAT, &heartbeat);
            let snapshot_message = Message {
                msg_type: MessageType::MsgSnapshot as i32,
                to: 4,
                from: 1,
                term: 7,
                snapshot: Some(snapshot()),
                ..Message::default()
            };
            same_bytes(SNAPSHOT_MESSAGE, &snapshot_message);

            same_bytes(ENTRY, &entries()[0]);
            same_bytes(SNAPSHOT, &snapshot());
            same_bytes(CONF_STATE, snapshot().get_metadata().get_conf_state());
            let hard_state = HardState {
                term: 7,
                vote: 1,
                commit: 40,
            };
            same_bytes(HARD_STATE, &hard_state);
            same_bytes(CONF_CHANGE, &change());
            same_bytes(CONF_CHANGE_V2, &change_v2());
            let change_with_id = ConfChange {
                id: 9,
                change_type: ConfChangeType::AddNode as i32,
                node_id: 2,
                context: b"a".to_vec(),
            };
            same_fields(CONF_CHANGE_WITH_ID, &change_with_id);
            let entry_with_sync_log = Entry {
                term: 7,
                index: 42,
                data: b"x".to_vec(),
                context: b"c".to_vec(),
                sync_log: true,
                ..Entry::default()
            };
            same_fields(ENTRY_WITH_SYNC_LOG, &entry_with_sync_log);
        }
    }
}
