//! One-shot outgoing connections to another node's cluster address: the admin client
//! [`request_promotion`], extension connections ([`connect_extension`]) for a backend that
//! drives the roles itself ([`crate::Roles::External`]), and proposals a follower forwards
//! to its primary ([`forward_proposal`]).

use std::time::Duration;

use switchyard_backend_api::auth::Principal;
use switchyard_backend_api::tls::{ClusterReader, ClusterStream, ClusterWriter};
use switchyard_backend_api::{
    ClusterCredentials, MetadataCommand, MetadataError, NodeId, Proposed,
};
use tokio::net::TcpStream;

use super::{net, unexpected};
use crate::node::Node;
use crate::protocol::{Message, NetError, Purpose, recv, send};
use crate::term::Term;

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
    let (mut reader, mut writer) = open_with_hello(&addr, node.credentials()?, &hello, io).await?;
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

/// Connect to `addr` (`TCP_NODELAY`), prove `credentials` as the sender of `hello` (node 0:
/// an operator) to the node it addresses, and send `hello`, within `timeout` each.
pub(crate) async fn open_with_hello(
    addr: &str,
    credentials: &ClusterCredentials,
    hello: &Message,
    timeout: Duration,
) -> Result<(ClusterReader, ClusterWriter), MetadataError> {
    let Message::Hello { from, to, .. } = hello else {
        return Err(unexpected(hello));
    };
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| net(NetError::Timeout(timeout, "connect")))?
        .map_err(|e| net(e.into()))?;
    tcp.set_nodelay(true).map_err(|e| net(e.into()))?;
    let me = if from.0 == 0 {
        Principal::Operator
    } else {
        Principal::Node(*from)
    };
    let stream = credentials.connect(tcp, addr, me, *to, timeout).await?;
    let (reader, mut writer) = stream.split();
    send(&mut writer, hello, timeout).await.map_err(net)?;
    Ok((reader, writer))
}

/// Ask the node `node` at `addr` (cluster address) to promote itself: it bumps the epoch,
/// takes over from a majority and serves as primary. Returns the new epoch. This is what
/// `switchyard cluster promote N` calls.
pub async fn request_promotion(
    addr: &str,
    cluster_id: &str,
    credentials: &ClusterCredentials,
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
    let (mut reader, mut writer) = open_with_hello(addr, credentials, &hello, timeout).await?;
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

/// Open an extension connection from node `from` (0: an operator) to node `to` at `addr`
/// (its cluster address): the cluster handshake proving `credentials`, the wal handshake, then the
/// stream is the caller's. The peer accepts it only if its roles are driven from outside
/// ([`crate::Roles::External`]) and `from` is one of its members or an operator.
pub async fn connect_extension(
    addr: &str,
    cluster_id: &str,
    credentials: &ClusterCredentials,
    from: NodeId,
    to: NodeId,
    timeout: Duration,
) -> Result<ClusterStream, MetadataError> {
    let hello = Message::Hello {
        cluster_id: cluster_id.to_owned(),
        from,
        to,
        epoch: 0,
        purpose: Purpose::Extension,
    };
    let (mut reader, writer) = open_with_hello(addr, credentials, &hello, timeout).await?;
    match recv(&mut reader, 1 << 20, timeout).await.map_err(net)? {
        Message::Accepted => Ok(reader.unsplit(writer)),
        Message::Refused { reason } => Err(MetadataError::Network(format!(
            "extension connection refused: {reason}"
        ))),
        other => Err(unexpected(&other)),
    }
}
