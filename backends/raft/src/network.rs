//! The TCP transport between nodes: length-delimited frames (`tokio-util`'s
//! `LengthDelimitedCodec`, 4-byte big-endian length) whose bodies are codec-encoded messages
//! (`switchyard_backend_api::codec`: a format-version byte, then the value).
//!
//! A connection opens with the cluster handshake (`switchyard_backend_api::auth`): both ends
//! prove the cluster secret, and the listener learns which node (or operator) connected. Then
//! a [`Hello`] naming the cluster id and both node ids; the listener refuses a hello from
//! anyone but the authenticated node, a peer of another cluster, or one that addressed a
//! different node. After that the client sends one [`Request`] at a time and reads its
//! [`Response`]; an operator may only send `ChangeMembership`. A [`Peer`] keeps its connection
//! open across calls, replaces it after [`CLIENT_IDLE`] and drops it on any error and with any
//! call its caller abandons (a late answer must never be read as the next call's); every call
//! has a deadline, and the listener closes a connection idle for [`IDLE_TIMEOUT`].
//!
//! openraft's RPCs ride this transport through [`Network`] / [`PeerNetwork`]. Snapshots go as
//! `InstallSnapshot` chunks of `snapshot_chunk_bytes` (openraft's chunked sender). Two
//! requests are the backend's own: `Propose` (a follower forwards a write to the leader) and
//! `ReadIndex` (a follower asks the leader for the read index of a linearizable read).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use switchyard_backend_api::auth::{HANDSHAKE_TIMEOUT, Principal};
use switchyard_backend_api::tls::ClusterStream;
use switchyard_backend_api::{
    ClusterCredentials, ClusterView, CodecError, MembershipChange, MetadataCommand, MetadataError,
    NodeId, codec, warn_throttled,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::backend::Forwarding;
use crate::types::{Node, TypeConfig, Written};

/// The first frame of every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// The cluster the caller belongs to.
    pub(crate) cluster_id: String,
    /// The caller's node id.
    pub(crate) from: u64,
    /// The node id the caller means to reach.
    pub(crate) to: u64,
}

/// The listener's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Welcome {
    /// Accepted; says whether this node belongs to an initialized cluster.
    Accepted {
        /// Whether the node has a membership (was initialized or added).
        initialized: bool,
    },
    /// Refused, with the reason.
    Refused {
        /// Why.
        reason: String,
    },
}

/// A request on an accepted connection.
#[derive(Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Request {
    /// openraft: replicate entries / heartbeat.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// openraft: request a vote.
    Vote(VoteRequest<u64>),
    /// openraft: one chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A follower forwards a group of proposals; the receiver proposes them as one entry if it
    /// leads.
    Propose(Vec<MetadataCommand>),
    /// A follower asks the leader for the read index of a linearizable read.
    ReadIndex,
    /// Add or remove a node: from an operator (`switchyard cluster add-node`), or forwarded
    /// by a follower to the leader.
    ChangeMembership {
        /// The change.
        change: MembershipChange,
        /// Whether a follower receiving it passes it on to the leader.
        forwarding: Forwarding,
    },
}

impl Request {
    /// The request's name, for logs.
    fn name(&self) -> &'static str {
        match self {
            Self::AppendEntries(_) => "AppendEntries",
            Self::Vote(_) => "Vote",
            Self::InstallSnapshot(_) => "InstallSnapshot",
            Self::Propose(_) => "Propose",
            Self::ReadIndex => "ReadIndex",
            Self::ChangeMembership { .. } => "ChangeMembership",
        }
    }
}

/// A forwarded group's result: the leadership that wrote it and, per proposal, its metadata
/// log position and apply's verdict.
pub(crate) type Forwarded = Result<Written, MetadataError>;

/// The answer to a [`Request`], variant for variant.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    /// openraft's answer.
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    /// openraft's answer.
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    /// openraft's answer.
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// The forwarded group's result; `NotLeader` if the receiver does not lead.
    Propose(Forwarded),
    /// The leader's read index.
    ReadIndex(Result<u64, MetadataError>),
    /// The leader's cluster view once it shows the change.
    ChangeMembership(Result<ClusterView, MetadataError>),
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum NetError {
    /// Connecting, reading or writing failed.
    #[error("{addr}: {source}")]
    Io {
        /// The peer address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// A frame did not decode.
    #[error("{0}")]
    Codec(#[from] CodecError),
    /// The peer refused the handshake.
    #[error("peer refused the connection: {0}")]
    Refused(String),
    /// Connecting failed, so the request was certainly not sent.
    #[error("{0}")]
    NotSent(Box<NetError>),
    /// The peer closed the connection.
    #[error("{0}: connection closed")]
    Closed(String),
    /// The deadline passed.
    #[error("{addr}: no answer within {after:?}")]
    Timeout {
        /// The peer address.
        addr: String,
        /// The deadline.
        after: Duration,
    },
    /// The peer answered with another variant than asked for.
    #[error("unexpected response to {0}")]
    Unexpected(&'static str),
}

impl From<NetError> for MetadataError {
    fn from(error: NetError) -> Self {
        match error {
            NetError::Codec(e) => MetadataError::Codec(e),
            other => MetadataError::Network(other.to_string()),
        }
    }
}

type Conn = Framed<ClusterStream, LengthDelimitedCodec>;

fn framing(max_frame_bytes: u32) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max_frame_bytes as usize)
        .new_codec()
}

async fn send<T: Serialize>(conn: &mut Conn, addr: &str, value: &T) -> Result<(), NetError> {
    let bytes = codec::encode(value)?;
    conn.send(tokio_util::bytes::Bytes::from(bytes))
        .await
        .map_err(|source| NetError::Io {
            addr: addr.to_owned(),
            source,
        })
}

async fn recv<T: DeserializeOwned>(conn: &mut Conn, addr: &str) -> Result<T, NetError> {
    match conn.next().await {
        Some(Ok(frame)) => Ok(codec::decode(&frame)?),
        Some(Err(source)) => Err(NetError::Io {
            addr: addr.to_owned(),
            source,
        }),
        None => Err(NetError::Closed(addr.to_owned())),
    }
}

/// A client connection to one peer, opened on first use and reused until an error.
#[derive(Debug)]
pub(crate) struct Peer {
    hello: Hello,
    addr: String,
    max_frame_bytes: u32,
    credentials: Option<ClusterCredentials>,
    conn: Option<Conn>,
    /// When the connection last finished a call: one idle for [`CLIENT_IDLE`] is replaced
    /// before the listener's [`IDLE_TIMEOUT`] closes it under a request.
    last_used: Instant,
}

impl Peer {
    /// A peer at `addr`, reached by proving `credentials`; nothing is connected yet.
    pub(crate) fn new(
        hello: Hello,
        addr: String,
        max_frame_bytes: u32,
        credentials: Option<ClusterCredentials>,
    ) -> Self {
        Self {
            hello,
            addr,
            max_frame_bytes,
            credentials,
            conn: None,
            last_used: Instant::now(),
        }
    }

    /// Connect, authenticate and shake hands; returns the connection and whether the peer is
    /// initialized.
    async fn connect(&self) -> Result<(Conn, bool), NetError> {
        let credentials = self.credentials.as_ref().ok_or_else(|| {
            NetError::Refused(format!(
                "node {} has no cluster secret and cannot reach {}",
                self.hello.from, self.addr
            ))
        })?;
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|source| NetError::Io {
                addr: self.addr.clone(),
                source,
            })?;
        // Small frames (votes, heartbeats) must not wait for Nagle.
        tcp.set_nodelay(true).map_err(|source| NetError::Io {
            addr: self.addr.clone(),
            source,
        })?;
        let me = if self.hello.from == ADMIN_CLIENT {
            Principal::Operator
        } else {
            Principal::Node(NodeId(self.hello.from))
        };
        let stream = credentials
            .connect(
                tcp,
                &self.addr,
                me,
                NodeId(self.hello.to),
                HANDSHAKE_TIMEOUT,
            )
            .await
            .map_err(|e| NetError::Refused(format!("{}: {e}", self.addr)))?;
        let mut conn = Framed::new(stream, framing(self.max_frame_bytes));
        send(&mut conn, &self.addr, &self.hello).await?;
        match recv(&mut conn, &self.addr).await? {
            Welcome::Accepted { initialized } => Ok((conn, initialized)),
            Welcome::Refused { reason } => Err(NetError::Refused(reason)),
        }
    }

    /// Connect (if needed) and ask whether the peer is initialized, within `timeout`.
    pub(crate) async fn probe(&mut self, timeout: Duration) -> Result<bool, NetError> {
        self.conn = None;
        let (conn, initialized) = tokio::time::timeout(timeout, self.connect())
            .await
            .unwrap_or_else(|_| {
                Err(NetError::Timeout {
                    addr: self.addr.clone(),
                    after: timeout,
                })
            })?;
        self.conn = Some(conn);
        self.last_used = Instant::now();
        Ok(initialized)
    }

    /// Send `request` and read the response, connecting first if needed, within `timeout`.
    pub(crate) async fn call(
        &mut self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, NetError> {
        tokio::time::timeout(timeout, self.call_inner(request))
            .await
            .unwrap_or_else(|_| {
                Err(NetError::Timeout {
                    addr: self.addr.clone(),
                    after: timeout,
                })
            })
    }

    /// One exchange on the connection, which is out of `self` while the exchange runs and goes
    /// back only once the answer is read. A call that fails, times out or is dropped by its
    /// caller (openraft gives up on an RPC by dropping it) closes the connection: it may still
    /// carry that request's late answer, which the next call would otherwise read as its own.
    async fn call_inner(&mut self, request: &Request) -> Result<Response, NetError> {
        let idle = self.last_used.elapsed() >= CLIENT_IDLE;
        let mut conn = match self.conn.take() {
            Some(conn) if !idle => conn,
            _ => {
                self.connect()
                    .await
                    .map_err(|e| NetError::NotSent(Box::new(e)))?
                    .0
            }
        };
        send(&mut conn, &self.addr, request).await?;
        let response = recv(&mut conn, &self.addr).await?;
        self.conn = Some(conn);
        self.last_used = Instant::now();
        Ok(response)
    }
}

/// The node id an operator's tool presents in its handshake: no node has it (node ids fit in
/// 31 bits).
const ADMIN_CLIENT: u64 = u64::MAX;

/// Ask a running cluster to add or remove a node (`switchyard cluster add-node` /
/// `remove-node`). Tries `nodes` (id, cluster address) in order until one takes the request —
/// a follower passes it on to the leader — and returns the leader's view once it shows the
/// committed membership. A node that is down, not yet a member, or without a known leader is
/// skipped; the last such error is returned when none takes it.
pub async fn request_membership_change(
    nodes: &[(u64, String)],
    cluster_id: &str,
    credentials: &ClusterCredentials,
    change: MembershipChange,
    timeout: Duration,
) -> Result<ClusterView, MetadataError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = MetadataError::Config("no node to ask: the peers list is empty".into());
    let request = Request::ChangeMembership {
        change,
        forwarding: Forwarding::ToLeader,
    };
    for (id, addr) in nodes {
        let hello = Hello {
            cluster_id: cluster_id.to_owned(),
            from: ADMIN_CLIENT,
            to: *id,
        };
        let mut peer = Peer::new(
            hello,
            addr.clone(),
            ADMIN_MAX_FRAME_BYTES,
            Some(credentials.clone()),
        );
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match peer.call(&request, left).await {
            Ok(Response::ChangeMembership(Err(
                e @ (MetadataError::NotLeader { .. } | MetadataError::NotReady { .. }),
            ))) => last = e,
            Ok(Response::ChangeMembership(result)) => return result,
            Ok(_) => {
                return Err(MetadataError::Network(
                    "unexpected response to ChangeMembership".into(),
                ));
            }
            Err(NetError::NotSent(e)) => last = MetadataError::from(*e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last)
}

/// Largest frame an operator's tool accepts: a cluster view is small.
const ADMIN_MAX_FRAME_BYTES: u32 = 1 << 20;

/// Creates openraft's per-target clients.
#[derive(Debug, Clone)]
pub(crate) struct Network {
    /// This node.
    pub(crate) me: u64,
    /// The cluster id presented in every handshake.
    pub(crate) cluster_id: String,
    /// Configured peer addresses; they take precedence over addresses in the membership.
    pub(crate) peers: Arc<BTreeMap<u64, String>>,
    /// Largest frame.
    pub(crate) max_frame_bytes: u32,
    /// The cluster credentials; `None` for a lone node without a cluster address, which dials
    /// no one.
    pub(crate) credentials: Option<ClusterCredentials>,
}

impl Network {
    /// A client for `target`, whose membership entry is `node`.
    pub(crate) fn peer(&self, target: u64, node: Option<&Node>) -> Peer {
        let addr = self
            .peers
            .get(&target)
            .cloned()
            .or_else(|| node.map(|n| n.addr.clone()))
            .unwrap_or_default();
        Peer::new(
            Hello {
                cluster_id: self.cluster_id.clone(),
                from: self.me,
                to: target,
            },
            addr,
            self.max_frame_bytes,
            self.credentials.clone(),
        )
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: u64, node: &Node) -> Self::Network {
        PeerNetwork {
            target,
            peer: self.peer(target, Some(node)),
        }
    }
}

/// openraft's client for one target.
#[derive(Debug)]
pub(crate) struct PeerNetwork {
    target: u64,
    peer: Peer,
}

impl PeerNetwork {
    async fn rpc<E: std::error::Error>(
        &mut self,
        request: Request,
        option: &RPCOption,
    ) -> Result<Response, RPCError<u64, Node, E>> {
        self.peer
            .call(&request, option.hard_ttl())
            .await
            .map_err(|e| match e {
                NetError::Io { .. }
                | NetError::Refused(_)
                | NetError::Closed(_)
                | NetError::NotSent(_) => RPCError::Unreachable(Unreachable::new(&e)),
                other => RPCError::Network(NetworkError::new(&other)),
            })
    }
}

fn unexpected<E: std::error::Error>(what: &'static str) -> RPCError<u64, Node, E> {
    RPCError::Network(NetworkError::new(&NetError::Unexpected(what)))
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Node, RaftError<u64>>> {
        match self.rpc(Request::AppendEntries(rpc), &option).await? {
            Response::AppendEntries(result) => {
                result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(unexpected("AppendEntries")),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, Node, RaftError<u64, InstallSnapshotError>>,
    > {
        match self.rpc(Request::InstallSnapshot(rpc), &option).await? {
            Response::InstallSnapshot(result) => {
                result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(unexpected("InstallSnapshot")),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Node, RaftError<u64>>> {
        match self.rpc(Request::Vote(rpc), &option).await? {
            Response::Vote(result) => {
                result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(unexpected("Vote")),
        }
    }
}

/// How long an accepted connection may take to send its `Hello`: a connection that says
/// nothing is closed rather than held open.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an accepted connection may go without a request before the listener closes it.
/// openraft sends heartbeats far more often; forwarding and operators' connections reconnect.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A client replaces a connection idle this long, well before the listener's [`IDLE_TIMEOUT`].
const CLIENT_IDLE: Duration = Duration::from_secs(30);

/// What the listener serves: the node behind it.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Whether the node has a membership.
    fn initialized(&self) -> impl Future<Output = bool> + Send;

    /// Answer one request.
    fn handle(&self, request: Request) -> impl Future<Output = Response> + Send;
}

/// Who the listener is.
#[derive(Debug, Clone)]
pub(crate) struct ListenerIdentity {
    /// This node.
    pub(crate) me: u64,
    /// This cluster.
    pub(crate) cluster_id: String,
    /// Largest frame.
    pub(crate) max_frame_bytes: u32,
    /// What every connecting peer must prove.
    pub(crate) credentials: ClusterCredentials,
}

/// Accept peer connections until the task is aborted; each connection is served by a task
/// owned by this one, so aborting it closes every connection.
pub(crate) async fn serve<H: Handler>(
    listener: TcpListener,
    identity: ListenerIdentity,
    handler: Arc<H>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            (stream, addr) = switchyard_backend_api::net::accept(&listener, "raft cluster") => {
                let identity = identity.clone();
                let handler = Arc::clone(&handler);
                connections.spawn(async move {
                    if let Err(error) = serve_connection(stream, &identity, handler.as_ref()).await {
                        tracing::debug!(%addr, %error, "peer connection closed");
                    }
                });
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection<H: Handler>(
    tcp: TcpStream,
    identity: &ListenerIdentity,
    handler: &H,
) -> Result<(), NetError> {
    let addr = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    tcp.set_nodelay(true).map_err(|source| NetError::Io {
        addr: addr.clone(),
        source,
    })?;
    let me = NodeId(identity.me);
    let accepted = identity
        .credentials
        .accept(tcp, me, HANDSHAKE_TIMEOUT)
        .await;
    let (stream, principal) = match accepted {
        Ok(accepted) => accepted,
        Err(error) => {
            warn_throttled!(%addr, %error, "refused an unauthenticated cluster connection");
            return Err(NetError::Refused(error.to_string()));
        }
    };
    let mut conn = Framed::new(stream, framing(identity.max_frame_bytes));
    let hello: Hello = tokio::time::timeout(HELLO_TIMEOUT, recv(&mut conn, &addr))
        .await
        .map_err(|_| NetError::Timeout {
            addr: addr.clone(),
            after: HELLO_TIMEOUT,
        })??;
    let claimed = match principal {
        Principal::Node(id) => id.0,
        Principal::Operator => ADMIN_CLIENT,
    };
    let refusal = if hello.from != claimed {
        Some(format!(
            "{principal} authenticated, but its hello claims to be node {}",
            hello.from
        ))
    } else if hello.cluster_id != identity.cluster_id {
        Some(format!(
            "node {} is in cluster {:?}, not {:?}",
            identity.me, identity.cluster_id, hello.cluster_id
        ))
    } else if hello.to != identity.me {
        Some(format!(
            "this is node {}, not node {}",
            identity.me, hello.to
        ))
    } else if hello.from == identity.me {
        Some(format!("node {} connected to itself", identity.me))
    } else {
        None
    };
    if let Some(reason) = refusal {
        tracing::warn!(peer = hello.from, %addr, %reason, "refused a peer");
        send(
            &mut conn,
            &addr,
            &Welcome::Refused {
                reason: reason.clone(),
            },
        )
        .await?;
        return Err(NetError::Refused(reason));
    }
    let initialized = handler.initialized().await;
    send(&mut conn, &addr, &Welcome::Accepted { initialized }).await?;
    loop {
        let request: Request =
            match tokio::time::timeout(IDLE_TIMEOUT, recv(&mut conn, &addr)).await {
                Ok(Ok(request)) => request,
                Ok(Err(NetError::Closed(_))) | Err(_) => return Ok(()),
                Ok(Err(e)) => return Err(e),
            };
        if principal == Principal::Operator && !matches!(request, Request::ChangeMembership { .. })
        {
            let reason = format!("an operator may not send {}", request.name());
            warn_throttled!(%addr, %reason, "refused a request");
            return Err(NetError::Refused(reason));
        }
        let response = handler.handle(request).await;
        send(&mut conn, &addr, &response).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_backend_api::ClusterSecret;

    /// A node that answers every request with read index 7.
    struct Fixed;

    impl Handler for Fixed {
        async fn initialized(&self) -> bool {
            true
        }

        async fn handle(&self, _request: Request) -> Response {
            Response::ReadIndex(Ok(7))
        }
    }

    /// Node 1 of cluster `a`, answering as `handler` on a loopback port: its address and task.
    async fn listening_as<H: Handler>(
        credentials: &ClusterCredentials,
        handler: H,
    ) -> Result<(String, tokio::task::JoinHandle<()>), NetError> {
        let io = |source| NetError::Io {
            addr: "127.0.0.1:0".into(),
            source,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(io)?;
        let addr = listener.local_addr().map_err(io)?.to_string();
        let identity = ListenerIdentity {
            me: 1,
            cluster_id: "a".into(),
            max_frame_bytes: 1 << 20,
            credentials: credentials.clone(),
        };
        Ok((
            addr,
            tokio::spawn(serve(listener, identity, Arc::new(handler))),
        ))
    }

    /// Node 1 of cluster `a`, answering as [`Fixed`].
    async fn listening(
        credentials: &ClusterCredentials,
    ) -> Result<(String, tokio::task::JoinHandle<()>), NetError> {
        listening_as(credentials, Fixed).await
    }

    #[tokio::test]
    async fn handshake_refuses_other_clusters_and_nodes() -> Result<(), NetError> {
        let secret = ClusterCredentials::from(ClusterSecret::generate());
        let (addr, server) = listening(&secret).await?;
        let peer_as = |from: u64, cluster: &str, to: u64, credentials: &ClusterCredentials| {
            Peer::new(
                Hello {
                    cluster_id: cluster.into(),
                    from,
                    to,
                },
                addr.clone(),
                1 << 20,
                Some(credentials.clone()),
            )
        };
        let peer = |cluster: &str, to: u64| peer_as(2, cluster, to, &secret);
        let timeout = Duration::from_secs(5);

        let other_cluster = peer("b", 1).probe(timeout).await;
        assert!(
            matches!(other_cluster, Err(NetError::Refused(_))),
            "{other_cluster:?}"
        );
        let other_node = peer("a", 3).call(&Request::ReadIndex, timeout).await;
        assert!(
            matches!(&other_node, Err(NetError::NotSent(e)) if matches!(**e, NetError::Refused(_))),
            "{other_node:?}"
        );

        let stranger = peer_as(2, "a", 1, &ClusterSecret::generate().into())
            .probe(timeout)
            .await;
        assert!(
            matches!(&stranger, Err(NetError::Refused(reason)) if reason.contains("secrets differ")),
            "{stranger:?}"
        );
        // An operator may ask for a membership change and nothing else.
        let operator = peer_as(ADMIN_CLIENT, "a", 1, &secret)
            .call(&Request::ReadIndex, timeout)
            .await;
        assert!(matches!(operator, Err(NetError::Closed(_))), "{operator:?}");

        let mut right = peer("a", 1);
        assert!(matches!(right.probe(timeout).await, Ok(true)));
        for _ in 0..3 {
            let answer = right.call(&Request::ReadIndex, timeout).await;
            assert!(
                matches!(answer, Ok(Response::ReadIndex(Ok(7)))),
                "{answer:?}"
            );
        }
        server.abort();
        Ok(())
    }

    /// A node that numbers the requests it answers and holds its answer to the first until
    /// released, saying when that request arrived.
    #[derive(Default)]
    struct Numbering {
        answered: std::sync::atomic::AtomicU64,
        first_arrived: tokio::sync::Notify,
        release_first: tokio::sync::Notify,
    }

    impl Handler for Arc<Numbering> {
        async fn initialized(&self) -> bool {
            true
        }

        async fn handle(&self, _request: Request) -> Response {
            let n = self
                .answered
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1;
            if n == 1 {
                self.first_arrived.notify_one();
                self.release_first.notified().await;
            }
            Response::ReadIndex(Ok(n))
        }
    }

    /// openraft abandons an RPC by dropping its future (its own timeout, a replication stream
    /// that stops). The answer to that request may still arrive; the next call on that peer
    /// must read its own answer, never the abandoned one's. A stale `AppendEntries` success
    /// read as the answer to a later request counts that request's entries as replicated: a
    /// leader resumed after a pause committed an entry no other node had.
    #[tokio::test]
    async fn an_abandoned_call_never_answers_the_next() -> Result<(), NetError> {
        let secret = ClusterCredentials::from(ClusterSecret::generate());
        let node = Arc::new(Numbering::default());
        let (addr, server) = listening_as(&secret, Arc::clone(&node)).await?;
        let hello = Hello {
            cluster_id: "a".into(),
            from: 2,
            to: 1,
        };
        let mut peer = Peer::new(hello, addr, 1 << 20, Some(secret));
        let timeout = Duration::from_secs(30);
        assert!(matches!(peer.probe(timeout).await, Ok(true)));

        // The first call is abandoned once the node has its request, before the answer.
        tokio::select! {
            answer = peer.call(&Request::ReadIndex, timeout) => {
                panic!("the first request is answered only when released: {answer:?}")
            }
            () = node.first_arrived.notified() => {}
        }
        node.release_first.notify_one();

        let answer = peer.call(&Request::ReadIndex, timeout).await;
        assert!(
            matches!(answer, Ok(Response::ReadIndex(Ok(2)))),
            "the second call read {answer:?}, not its own answer (2)"
        );
        server.abort();
        Ok(())
    }

    /// A connection that never says `Hello` is closed after [`HELLO_TIMEOUT`], not held open.
    #[tokio::test(start_paused = true)]
    async fn a_connection_that_says_nothing_is_closed() -> std::io::Result<()> {
        use tokio::io::AsyncReadExt as _;

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let identity = ListenerIdentity {
            me: 1,
            cluster_id: "a".into(),
            max_frame_bytes: 1 << 20,
            credentials: ClusterSecret::generate().into(),
        };
        let server = tokio::spawn(serve(listener, identity, Arc::new(Fixed)));
        let mut silent = TcpStream::connect(addr).await?;
        let opened = tokio::time::Instant::now();
        let mut buf = [0u8; 1];
        let read = silent.read(&mut buf).await?;
        assert_eq!(read, 0, "the listener closes the connection");
        assert!(opened.elapsed() >= HELLO_TIMEOUT, "{:?}", opened.elapsed());
        server.abort();
        Ok(())
    }

    /// A connection that stops sending requests is closed after [`IDLE_TIMEOUT`]; a client
    /// replaces its idle connection before that and its next call succeeds.
    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_and_replaced() -> Result<(), NetError> {
        let secret = ClusterCredentials::from(ClusterSecret::generate());
        let (addr, server) = listening(&secret).await?;
        let hello = Hello {
            cluster_id: "a".into(),
            from: 2,
            to: 1,
        };
        let mut peer = Peer::new(hello, addr.clone(), 1 << 20, Some(secret));
        let timeout = Duration::from_secs(5);
        assert!(matches!(
            peer.call(&Request::ReadIndex, timeout).await,
            Ok(Response::ReadIndex(Ok(7)))
        ));
        let mut idle = peer.conn.take().ok_or(NetError::Closed(addr.clone()))?;
        let opened = tokio::time::Instant::now();
        assert!(
            idle.next().await.is_none(),
            "the listener closes the idle connection"
        );
        assert!(opened.elapsed() >= IDLE_TIMEOUT, "{:?}", opened.elapsed());
        peer.conn = Some(idle);
        assert!(matches!(
            peer.call(&Request::ReadIndex, timeout).await,
            Ok(Response::ReadIndex(Ok(7)))
        ));
        server.abort();
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4_000))]

        /// What a peer (or a stranger) sends on the cluster port, decoded: any bytes after the
        /// format-version byte give a frame or a codec error, never a panic or an allocation
        /// sized by a length in the input. (The libFuzzer targets in `broker/fuzz` leave this
        /// crate out: its RocksDB build would dominate every fuzz build.)
        #[test]
        fn any_cluster_frame_decodes_or_is_refused(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)
        ) {
            let mut frame = vec![codec::FORMAT_VERSION];
            frame.extend_from_slice(&body);
            let _ = codec::decode::<Hello>(&frame);
            let _ = codec::decode::<Welcome>(&frame);
            let _ = codec::decode::<Request>(&frame);
            let _ = codec::decode::<Response>(&frame);
        }
    }
}
