//! The group's TCP transport: raft-rs messages between nodes, one way, in length-delimited
//! frames (`tokio-util`'s `LengthDelimitedCodec`).
//!
//! A connection opens with a codec-encoded [`Hello`] naming the cluster id and both node ids;
//! the listener refuses a peer of another cluster or one that addressed another node, and
//! drops any message whose sender is not the node that said hello. After that every frame is
//! one protobuf-encoded `Message`. Each peer has one outgoing connection, opened on demand and
//! reopened after an error; its queue is bounded and drops messages when full — Raft
//! tolerates lost messages and resends what matters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use protobuf::Message as _;
use raft::eraftpb::Message;
use serde::{Deserialize, Serialize};
use switchyard_backend_api::codec;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::bytes::Bytes;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Messages queued for one peer before new ones are dropped.
const PEER_QUEUE: usize = 1024;
/// Largest frame: a group message is small (entries carry group commands only).
const MAX_FRAME_BYTES: usize = 4 << 20;
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The first frame of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Hello {
    cluster_id: String,
    from: u64,
    to: u64,
}

fn framing() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

/// Sends messages to peers; cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    peers: Arc<BTreeMap<u64, mpsc::Sender<Message>>>,
}

impl Outbox {
    /// Queue each message for its peer; a message to an unknown or overloaded peer is dropped.
    pub fn send(&self, messages: Vec<Message>) {
        for message in messages {
            if let Some(peer) = self.peers.get(&message.to) {
                let _ = peer.try_send(message);
            }
        }
    }
}

/// Start one sender task per peer (`id → address`, this node excluded) in `tasks`.
pub fn connect(
    cluster_id: &str,
    me: u64,
    peers: &BTreeMap<u64, String>,
    tasks: &mut JoinSet<()>,
) -> Outbox {
    let mut senders = BTreeMap::new();
    for (&id, addr) in peers.iter().filter(|(id, _)| **id != me) {
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        senders.insert(id, tx);
        let hello = Hello {
            cluster_id: cluster_id.to_owned(),
            from: me,
            to: id,
        };
        tasks.spawn(send_to(addr.clone(), hello, rx));
    }
    Outbox {
        peers: Arc::new(senders),
    }
}

/// Deliver `queue` to `addr`, connecting on demand; a failed connection drops the message it
/// was carrying and is reopened for the next.
async fn send_to(addr: String, hello: Hello, mut queue: mpsc::Receiver<Message>) {
    let mut conn: Option<Framed<TcpStream, LengthDelimitedCodec>> = None;
    while let Some(message) = queue.recv().await {
        if conn.is_none() {
            conn = open(&addr, &hello).await;
        }
        let Some(stream) = conn.as_mut() else {
            continue;
        };
        let sent = match message.write_to_bytes() {
            Ok(bytes) => stream.send(Bytes::from(bytes)).await.is_ok(),
            Err(_) => true,
        };
        if !sent {
            conn = None;
        }
    }
}

async fn open(addr: &str, hello: &Hello) -> Option<Framed<TcpStream, LengthDelimitedCodec>> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    stream.set_nodelay(true).ok()?;
    let mut conn = Framed::new(stream, framing());
    conn.send(Bytes::from(codec::encode(hello).ok()?))
        .await
        .ok()?;
    Some(conn)
}

/// Accept peer connections on `listener` and pass every valid message to `inbox`, until the
/// task is aborted (its connections with it).
pub async fn serve(
    listener: TcpListener,
    cluster_id: String,
    me: u64,
    inbox: mpsc::Sender<Message>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let cluster_id = cluster_id.clone();
                    let inbox = inbox.clone();
                    connections.spawn(receive(stream, cluster_id, me, inbox));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn receive(stream: TcpStream, cluster_id: String, me: u64, inbox: mpsc::Sender<Message>) {
    let mut conn = Framed::new(stream, framing());
    let Some(Ok(first)) = conn.next().await else {
        return;
    };
    let Ok(hello) = codec::decode::<Hello>(&first) else {
        return;
    };
    if hello.cluster_id != cluster_id || hello.to != me || hello.from == me {
        return;
    }
    while let Some(Ok(frame)) = conn.next().await {
        match Message::parse_from_bytes(&frame) {
            Ok(message) if message.from == hello.from && message.to == me => {
                if inbox.send(message).await.is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
}
