//! Online membership with static roles: a node added through a follower catches up and
//! votes, a dead member is removed (twice: the second time it is not a member), the adopted members outlive a restart with the old
//! `--peers`, a promotion counts the new members, and a change that cannot reach every member
//! changes nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, ensure};
use figment::Figment;
use switchyard_backend_api::{
    MembershipChange, MetadataBackend, MetadataError, NodeId, NodeIdentity, OpenContext,
    open_backend,
};
use switchyard_compat_tests::fixtures::{converges, register_all};
use switchyard_compat_tests::{DEADLINE, reserve_addr, shared_secret};

use crate::support::create_topics;

/// Cluster addresses of nodes 1..=n.
fn addresses(n: u64) -> anyhow::Result<BTreeMap<NodeId, String>> {
    (1..=n)
        .map(|id| Ok((NodeId(id), reserve_addr()?)))
        .collect()
}

/// The first `n` of `all`.
fn first(all: &BTreeMap<NodeId, String>, n: u64) -> BTreeMap<NodeId, String> {
    all.iter()
        .filter(|(id, _)| id.0 <= n)
        .map(|(id, addr)| (*id, addr.clone()))
        .collect()
}

/// Open node `id` under `dir` with `peers` as its configured cluster.
async fn open(
    dir: &Path,
    id: u64,
    peers: &BTreeMap<NodeId, String>,
) -> anyhow::Result<Arc<dyn MetadataBackend>> {
    let data_dir = dir.join(format!("node-{id}"));
    std::fs::create_dir_all(&data_dir)?;
    let context = OpenContext {
        config: Figment::new(),
        data_dir,
        node: NodeIdentity {
            id: NodeId(id),
            cluster_addr: peers.get(&NodeId(id)).cloned(),
            peers: peers.clone(),
        },
        cluster_credentials: Some(shared_secret().into()),
    };
    let node = tokio::time::timeout(DEADLINE, open_backend("wal", context))
        .await
        .with_context(|| format!("opening node {id} hung"))??;
    Ok(node)
}

/// Addresses of nodes 1..=4 and nodes 1..=3 running as a cluster of three, node 1 the ready
/// primary with broker 1 registered.
async fn three_of_four(dir: &Path) -> anyhow::Result<(BTreeMap<NodeId, String>, Nodes)> {
    let all = addresses(4)?;
    let three = first(&all, 3);
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, open(dir, id, &three).await?);
    }
    nodes[&1].wait_ready(DEADLINE).await?;
    // Every node follows the primary in its epoch before the test changes membership, which
    // needs every member to answer for that epoch.
    let epoch = nodes[&1].cluster().borrow().epoch;
    for node in nodes.values() {
        let mut views = node.cluster();
        tokio::time::timeout(
            DEADLINE,
            views.wait_for(|v| v.is_ready() && v.epoch == epoch && v.leader == Some(NodeId(1))),
        )
        .await
        .context("a node did not follow the primary")??;
    }
    register_all(&nodes[&1], &[1]).await?;
    Ok((all, nodes))
}

/// Running nodes by id.
type Nodes = BTreeMap<u64, Arc<dyn MetadataBackend>>;

/// The voters a node's cluster view shows.
fn voters(node: &Arc<dyn MetadataBackend>) -> Vec<u64> {
    node.cluster()
        .borrow()
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id.0)
        .collect()
}

async fn change(
    via: &Arc<dyn MetadataBackend>,
    change: MembershipChange,
) -> Result<Vec<u64>, MetadataError> {
    let view = tokio::time::timeout(DEADLINE * 2, via.change_membership(change))
        .await
        .map_err(|_| MetadataError::Timeout {
            what: "the membership change".into(),
            after_ms: 0,
        })??;
    Ok(view
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id.0)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_through_a_follower_remove_a_dead_member_restart_and_promote() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (all, mut nodes) = three_of_four(dir.path()).await?;
    let three = first(&all, 3);
    let primary = Arc::clone(&nodes[&1]);
    create_topics(&primary, "three", 0..20).await?;

    // The joiner is started with every node, itself included, as its peers.
    nodes.insert(4, open(dir.path(), 4, &all).await?);
    let added = change(
        &nodes[&2],
        MembershipChange::AddNode {
            id: NodeId(4),
            addr: all[&NodeId(4)].clone(),
        },
    )
    .await?;
    ensure!(added == [1, 2, 3, 4], "the primary's voters: {added:?}");
    for (id, node) in &nodes {
        ensure!(
            voters(node) == [1, 2, 3, 4],
            "node {id}: {:?}",
            voters(node)
        );
    }
    converges(&nodes[&4], &primary.local()).await?;
    create_topics(&primary, "four", 0..5).await?;
    converges(&nodes[&4], &primary.local()).await?;
    // Adding it again is a no-op; at another address it is refused.
    ensure!(
        change(
            &primary,
            MembershipChange::AddNode {
                id: NodeId(4),
                addr: all[&NodeId(4)].clone(),
            },
        )
        .await?
            == [1, 2, 3, 4]
    );
    let moved = change(
        &primary,
        MembershipChange::AddNode {
            id: NodeId(4),
            addr: "127.0.0.1:1".into(),
        },
    )
    .await;
    ensure!(
        matches!(&moved, Err(MetadataError::Config(m)) if m.contains("already a member")),
        "{moved:?}"
    );

    // Node 3 dies and is removed; the primary itself cannot be removed.
    if let Some(dead) = nodes.remove(&3) {
        dead.shutdown().await?;
    }
    let removed = change(&primary, MembershipChange::RemoveNode { id: NodeId(3) }).await?;
    ensure!(removed == [1, 2, 4], "after removing node 3: {removed:?}");
    let stranger = change(&primary, MembershipChange::RemoveNode { id: NodeId(3) }).await;
    ensure!(
        matches!(&stranger, Err(MetadataError::Config(m)) if m.contains("not a member")),
        "{stranger:?}"
    );
    let own = change(&primary, MembershipChange::RemoveNode { id: NodeId(1) }).await;
    ensure!(
        matches!(&own, Err(MetadataError::Unsupported { what }) if what.contains("promote another node first")),
        "{own:?}"
    );
    create_topics(&primary, "without-3", 0..5).await?;

    // Node 2 restarts with the peers it was first given: the adopted members win.
    if let Some(two) = nodes.remove(&2) {
        two.shutdown().await?;
    }
    nodes.insert(2, open(dir.path(), 2, &three).await?);
    ensure!(
        voters(&nodes[&2]) == [1, 2, 4],
        "node 2: {:?}",
        voters(&nodes[&2])
    );
    converges(&nodes[&2], &primary.local()).await?;

    // The primary dies; node 4 is promoted with a majority of {1, 2, 4} and holds every
    // acknowledged write.
    let acknowledged = primary.local();
    drop(primary);
    if let Some(one) = nodes.remove(&1) {
        one.shutdown().await?;
    }
    let four = Arc::clone(&nodes[&4]);
    tokio::time::timeout(
        DEADLINE * 2,
        four.change_membership(MembershipChange::Promote { id: NodeId(4) }),
    )
    .await
    .context("promotion hung")??;
    converges(&four, &acknowledged).await?;
    create_topics(&four, "promoted", 0..3).await?;
    converges(&nodes[&2], &four.local()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_cannot_reach_every_member_changes_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (all, mut nodes) = three_of_four(dir.path()).await?;
    let primary = Arc::clone(&nodes[&1]);
    nodes.insert(4, open(dir.path(), 4, &all).await?);
    if let Some(dead) = nodes.remove(&3) {
        dead.shutdown().await?;
    }
    let refused = change(
        &primary,
        MembershipChange::AddNode {
            id: NodeId(4),
            addr: all[&NodeId(4)].clone(),
        },
    )
    .await;
    ensure!(
        matches!(&refused, Err(MetadataError::Unsupported { what })
            if what.contains("refused before anything changed") && what.contains("node 3")),
        "{refused:?}"
    );
    for id in [1, 2] {
        ensure!(
            voters(&nodes[&id]) == [1, 2, 3],
            "node {id}: {:?}",
            voters(&nodes[&id])
        );
    }
    // Writes still commit with the old majority.
    create_topics(&primary, "after", 0..3).await?;
    converges(&nodes[&2], &primary.local()).await
}
