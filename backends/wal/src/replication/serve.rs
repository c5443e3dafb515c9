//! Incoming connections on the cluster address: bind and accept, check the `Hello`, then
//! hand the connection to what its purpose names — the follower's side of a link, an admin
//! request (`Promote`, `ChangeMembers`), a forwarded proposal, membership, or an extension.

use std::sync::Arc;
use std::time::Duration;

use switchyard_backend_api::auth::{HANDSHAKE_TIMEOUT, Principal};
use switchyard_backend_api::tls::{ClusterReader, ClusterWriter};
use switchyard_backend_api::{MetadataError, warn_throttled};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::follower::follow;
use super::{Control, net, unexpected};
use crate::membership;
use crate::node::Node;
use crate::protocol::{Message, Purpose, recv, send};

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

/// One incoming connection: authenticate the peer, check the handshake, then follow or
/// answer an admin request.
async fn serve(node: &Arc<Node>, tcp: TcpStream) -> Result<(), MetadataError> {
    let peer_addr = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    tcp.set_nodelay(true).map_err(|e| net(e.into()))?;
    let accepted = node
        .credentials()?
        .accept(tcp, node.me, HANDSHAKE_TIMEOUT)
        .await;
    let (stream, principal) = match accepted {
        Ok(accepted) => accepted,
        Err(error) => {
            warn_throttled!(%peer_addr, %error, "refused an unauthenticated cluster connection");
            return Err(error.into());
        }
    };
    let (mut reader, mut writer) = stream.split();
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
    let refusal = if from.0 != principal_id(principal) {
        Some(format!(
            "{principal} authenticated, but its hello claims to be node {from}"
        ))
    } else if !allowed(principal, purpose) {
        Some(format!("{principal} may not open a {purpose:?} connection"))
    } else if cluster_id != node.config.cluster_id {
        Some(format!(
            "cluster id {cluster_id:?} is not this cluster's ({:?})",
            node.config.cluster_id
        ))
    } else if to != node.me {
        Some(format!(
            "addressed to node {to}, but this is node {}",
            node.me
        ))
    } else if (matches!(
        purpose,
        Purpose::Replicate | Purpose::Forward | Purpose::Members
    ) || (purpose == Purpose::Extension && from.0 != 0))
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
            let stream = reader.unsplit(writer);
            if let Some(extension) = &node.external {
                let _ = extension.send((from, stream));
            }
            Ok(())
        }
    }
}

/// The node id a principal's hello carries: its own, or 0 for an operator.
fn principal_id(principal: Principal) -> u64 {
    match principal {
        Principal::Node(id) => id.0,
        Principal::Operator => 0,
    }
}

/// What each kind of peer may open: an operator asks (promotion, membership changes) or uses
/// an embedding backend's admin requests; nodes replicate, forward, change membership and
/// pass an operator's change on to the primary.
fn allowed(principal: Principal, purpose: Purpose) -> bool {
    match principal {
        Principal::Operator => matches!(purpose, Purpose::Admin | Purpose::Extension),
        Principal::Node(_) => true,
    }
}

/// Answer `Promote` or `ChangeMembers`.
async fn admin(
    node: &Arc<Node>,
    mut reader: ClusterReader,
    mut writer: ClusterWriter,
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
    mut reader: ClusterReader,
    mut writer: ClusterWriter,
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

#[cfg(test)]
mod tests;
