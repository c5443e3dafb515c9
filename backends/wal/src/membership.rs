//! Online membership with static roles: adding or removing a node while the cluster runs
//! (`switchyard cluster add-node` / `remove-node`), and the members file that keeps the
//! result across restarts.
//!
//! # The change
//! The primary runs one change at a time, and each replaces the voters by a set that differs
//! by exactly one node:
//! 1. An added node is first a learner: the primary streams to it, uncounted, until it has
//!    acknowledged everything that was committed when the change began.
//! 2. *Check*: every member of the old and the new set (except a removed node, which may be
//!    dead) is asked whether its voters are the old set or the new one. Any other answer, or
//!    none, fails the change before anything changed.
//! 3. *Adopt*: each of them persists the new set (file `members` in the WAL directory, a
//!    sealed file) and counts by it; the primary adopts last, and only then counts commits by
//!    the new set and answers. A removed node is told too, when it can be reached.
//!
//! # Why promotion stays safe
//! Promotion (`replication/takeover.rs`) needs a majority of the promoted node's voters and takes the
//! most up-to-date log among them. Every committed write is durable on a majority of the set
//! the primary counted by. When a change completes, every remaining member holds the new
//! set; while one is in flight, nodes hold the old or the new set, which differ by one node,
//! and any majority of one meets any majority of the other. The next change starts only once
//! the previous one completed, so no two nodes' sets ever differ by more than one node. A
//! change that failed during *adopt* leaves some nodes on the new set: retrying the same
//! change (which *check* accepts) completes it.
//!
//! A removed node is a stranger to the members: they refuse its replication connections
//! and forwarded proposals, so promoting it cannot gather a majority.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchyard_backend_api::tls::{ClusterReader, ClusterWriter};
use switchyard_backend_api::{
    ClusterCredentials, ClusterView, MembershipChange, MetadataError, NodeId,
};

use crate::error::WalError;
use crate::node::{Members, Node};
use crate::protocol::{Message, Purpose, recv, send};
use crate::replication::{net, open_with_hello, unexpected};
use crate::sealed;

/// The members file in the WAL directory.
const FILE: &str = "members";

/// Voters: node → cluster address.
pub(crate) type Voters = BTreeMap<NodeId, String>;

/// The voters this node last adopted, if it ever adopted a set online.
pub(crate) fn load(dir: &Path) -> Result<Option<Voters>, WalError> {
    sealed::load(dir, FILE)
}

/// Persist `voters` as the set this node counts by.
fn store(dir: &Path, voters: &Voters) -> Result<(), WalError> {
    sealed::store(dir, FILE, voters)
}

/// Persist `to` and count by it from now on.
async fn adopt(node: &Node, to: Voters) -> Result<(), MetadataError> {
    let dir = node.dir.clone();
    let stored = to.clone();
    tokio::task::spawn_blocking(move || store(&dir, &stored))
        .await
        .map_err(|e| MetadataError::Storage(format!("persisting the members: {e}")))??;
    node.set_members(Members::voting(to));
    Ok(())
}

/// Run `change` on this node as the primary. A node that is not the serving primary answers
/// `NotLeader` (with the primary it knows) or `NotReady`; callers that may reach a follower
/// retry at the primary.
pub(crate) async fn change_as_primary(
    node: &Arc<Node>,
    change: MembershipChange,
) -> Result<ClusterView, MetadataError> {
    let _one_at_a_time = node.changing.lock().await;
    let view = node.cluster().borrow().clone();
    if view.leader != Some(node.me) {
        return Err(MetadataError::NotLeader {
            leader: view.leader,
        });
    }
    if !view.is_ready() {
        return Err(MetadataError::NotReady {
            reason: format!("node {} is not serving as primary yet", node.me),
        });
    }
    let current = node.members();
    let from = current.voter_addrs();
    let (to, learner, removed) = match change {
        MembershipChange::AddNode { id, addr } => {
            match from.get(&id) {
                Some(known) if *known == addr => return Ok(view),
                Some(known) => {
                    return Err(MetadataError::Config(format!(
                        "node {id} is already a member at {known}; remove it before adding it \
                         at {addr}"
                    )));
                }
                None => {}
            }
            if id.0 == 0 || addr.parse::<SocketAddr>().is_err() {
                return Err(MetadataError::Config(format!(
                    "adding node {id} at {addr:?}: ids start at 1 and the address is HOST:PORT \
                     with a numeric host"
                )));
            }
            let mut to = from.clone();
            to.insert(id, addr.clone());
            (to, Some((id, addr)), None)
        }
        MembershipChange::RemoveNode { id } => {
            if !from.contains_key(&id) {
                return Err(MetadataError::Config(format!(
                    "node {id} is not a member (voters: {:?})",
                    from.keys().map(|n| n.0).collect::<Vec<_>>()
                )));
            }
            if id == node.me {
                return Err(MetadataError::Unsupported {
                    what: format!(
                        "removing the primary (node {id}): promote another node first, then \
                         remove this one through it"
                    ),
                });
            }
            let mut to = from.clone();
            to.remove(&id);
            (to, None, Some(id))
        }
        other => {
            return Err(MetadataError::Unsupported {
                what: format!("{other:?} as a membership change"),
            });
        }
    };
    let result = run(node, &from, &to, learner, removed).await;
    if result.is_err() && *node.members() != Members::voting(to.clone()) {
        node.set_members((*current).clone());
    }
    result?;
    tracing::info!(node = %node.me, ?to, "members changed");
    Ok(node.cluster().borrow().clone())
}

/// Steps 1–3 of the module docs. The members already in the cluster are checked once before
/// an added node's catch-up too, so that a change that cannot complete fails at once.
async fn run(
    node: &Arc<Node>,
    from: &Voters,
    to: &Voters,
    learner: Option<(NodeId, String)>,
    removed: Option<NodeId>,
) -> Result<(), MetadataError> {
    let others = |set: &[&Voters]| -> Voters {
        set.iter()
            .flat_map(|voters| voters.iter())
            .filter(|(id, _)| **id != node.me && Some(**id) != removed)
            .map(|(id, addr)| (*id, addr.clone()))
            .collect()
    };
    if let Some((id, addr)) = learner {
        ask_all(node, &others(&[from]), from, to, false).await?;
        let mut streamed = (*node.members()).clone();
        streamed.addrs.insert(id, addr.clone());
        node.set_members(streamed);
        let goal = node.progress.commit();
        let timeout = Duration::from_millis(node.config.catch_up_timeout_ms);
        tokio::time::timeout(timeout, node.progress.wait_acked(id, goal))
            .await
            .map_err(|_| MetadataError::Timeout {
                what: format!(
                    "node {id} (is it running at {addr}?) to catch up to index {goal} as a \
                     learner"
                ),
                after_ms: node.config.catch_up_timeout_ms,
            })?;
    }
    let asked = others(&[from, to]);
    ask_all(node, &asked, from, to, false).await?;
    ask_all(node, &asked, from, to, true).await?;
    if let Some(id) = removed
        && let Some(addr) = from.get(&id)
        && let Err(e) = set_members_on(node, id, addr, from, to, true).await
    {
        tracing::info!(node = %id, error = %e, "the removed node did not hear of its removal");
    }
    adopt(node, to.clone()).await
}

/// Ask every node of `asked` at once to check (or adopt) the change; all must agree.
async fn ask_all(
    node: &Arc<Node>,
    asked: &Voters,
    from: &Voters,
    to: &Voters,
    adopting: bool,
) -> Result<(), MetadataError> {
    let mut answers = tokio::task::JoinSet::new();
    for (id, addr) in asked.clone() {
        let (node, from, to) = (Arc::clone(node), from.clone(), to.clone());
        answers.spawn(async move {
            let answer = set_members_on(&node, id, &addr, &from, &to, adopting).await;
            (id, answer)
        });
    }
    let mut refused = Vec::new();
    for (id, answer) in answers.join_all().await {
        if let Err(e) = answer {
            refused.push(format!("node {id}: {e}"));
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    refused.sort();
    let stage = if adopting {
        "interrupted while members adopted it (retry the same change to complete it)"
    } else {
        "refused before anything changed"
    };
    Err(MetadataError::Unsupported {
        what: format!(
            "the membership change ({stage}); it needs every member: {}",
            refused.join("; ")
        ),
    })
}

/// Ask member `id` to check (or adopt) the change from `from` to `to`.
async fn set_members_on(
    node: &Node,
    id: NodeId,
    addr: &str,
    from: &Voters,
    to: &Voters,
    adopt: bool,
) -> Result<(), MetadataError> {
    let io = node.io_timeout();
    let hello = Message::Hello {
        cluster_id: node.config.cluster_id.clone(),
        from: node.me,
        to: id,
        epoch: node.term().epoch,
        purpose: Purpose::Members,
    };
    let (mut reader, mut writer) = open_with_hello(addr, node.credentials()?, &hello, io).await?;
    let ask = Message::SetMembers {
        from: from.clone(),
        to: to.clone(),
        adopt,
    };
    send(&mut writer, &ask, io).await.map_err(net)?;
    match recv(&mut reader, node.config.max_frame_bytes, io)
        .await
        .map_err(net)?
    {
        Message::MembersSet { result } => result.map_err(MetadataError::Network),
        Message::Refused { reason } => Err(MetadataError::Network(reason)),
        other => Err(unexpected(&other)),
    }
}

/// Answer the primary's `SetMembers` on a members connection from `primary` in `epoch`.
pub(crate) async fn serve(
    node: &Node,
    primary: NodeId,
    epoch: u64,
    mut reader: ClusterReader,
    mut writer: ClusterWriter,
) -> Result<(), MetadataError> {
    let io = node.io_timeout();
    let message = recv(&mut reader, node.config.max_frame_bytes, io)
        .await
        .map_err(net)?;
    let Message::SetMembers { from, to, adopt } = message else {
        return Err(unexpected(&message));
    };
    let result = answer(node, primary, epoch, &from, to, adopt).await;
    if let Err(reason) = &result {
        tracing::warn!(%primary, %reason, "refusing a membership change");
    }
    send(&mut writer, &Message::MembersSet { result }, io)
        .await
        .map_err(net)
}

async fn answer(
    node: &Node,
    primary: NodeId,
    epoch: u64,
    from: &Voters,
    to: Voters,
    adopting: bool,
) -> Result<(), String> {
    let term = node.term();
    if term.primary != primary || term.epoch != epoch {
        return Err(format!(
            "node {primary} in epoch {epoch} is not the primary node {} follows (node {} in \
             epoch {})",
            node.me, term.primary, term.epoch
        ));
    }
    let mine = node.members().voter_addrs();
    let joining = !from.contains_key(&node.me);
    if !joining && mine != *from && mine != to {
        return Err(format!(
            "node {} counts voters {mine:?}, neither {from:?} nor {to:?}: an earlier change \
             did not complete",
            node.me
        ));
    }
    if adopting && mine != to {
        adopt(node, to).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Ask the cluster reachable at `nodes` (id, cluster address) to make `change`: each node is
/// tried in turn, the primary first once a node names it, until the primary answers. The
/// primary's view including the change is returned.
pub async fn request_membership_change(
    nodes: &[(u64, String)],
    cluster_id: &str,
    credentials: &ClusterCredentials,
    change: MembershipChange,
    timeout: Duration,
) -> Result<ClusterView, MetadataError> {
    let mut queue: Vec<(NodeId, String)> = nodes
        .iter()
        .map(|(id, addr)| (NodeId(*id), addr.clone()))
        .collect();
    let mut failures = Vec::new();
    let mut tried = 0;
    while tried < queue.len() {
        let (id, addr) = queue[tried].clone();
        tried += 1;
        match ask_change(
            &addr,
            cluster_id,
            (credentials, NodeId(0)),
            id,
            &change,
            timeout,
        )
        .await
        {
            Ok(view) => return Ok(view),
            Err(MetadataError::NotLeader {
                leader: Some(leader),
            }) if leader != id => {
                failures.push(format!("node {id}: not the primary (node {leader} is)"));
                if let Some(at) = queue[tried..].iter().position(|(n, _)| *n == leader) {
                    let next = queue.remove(tried + at);
                    queue.insert(tried, next);
                }
            }
            Err(e @ (MetadataError::Network(_) | MetadataError::NotLeader { .. })) => {
                failures.push(format!("node {id}: {e}"));
            }
            Err(e) => return Err(e),
        }
    }
    Err(MetadataError::Network(format!(
        "no primary took the membership change: {}",
        failures.join("; ")
    )))
}

/// One `ChangeMembers` request to node `id` at `addr`.
pub(crate) async fn ask_change(
    addr: &str,
    cluster_id: &str,
    (credentials, from): (&ClusterCredentials, NodeId),
    id: NodeId,
    change: &MembershipChange,
    timeout: Duration,
) -> Result<ClusterView, MetadataError> {
    let hello = Message::Hello {
        cluster_id: cluster_id.to_owned(),
        from,
        to: id,
        epoch: 0,
        purpose: Purpose::Admin,
    };
    let (mut reader, mut writer) = open_with_hello(addr, credentials, &hello, timeout).await?;
    let ask = Message::ChangeMembers {
        change: change.clone(),
    };
    send(&mut writer, &ask, timeout).await.map_err(net)?;
    match recv(&mut reader, 16 << 20, timeout).await.map_err(net)? {
        Message::MembersChanged { result } => result,
        Message::Refused { reason } => Err(MetadataError::Network(format!(
            "membership change refused: {reason}"
        ))),
        other => Err(unexpected(&other)),
    }
}
