//! Membership changes online: one node grows to three (each joiner a learner until its WAL
//! caught up, then a voter; the third added through a follower, which forwards), writes flow
//! throughout, then the cluster shrinks back to one — the leader first, which hands
//! leadership away before it is removed — and nothing acknowledged is lost.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, ensure};
use figment::Figment;
use figment::providers::Serialized;
use switchyard_backend_api::{
    MembershipChange, MetadataBackend, NodeId, NodeIdentity, OpenContext, open_backend,
};
use switchyard_compat_tests::fixtures::{create_topic_ok, register_all};
use switchyard_compat_tests::{DEADLINE, reserve_addr, shared_secret};

use crate::faults::new_leader;

async fn open(
    dir: &std::path::Path,
    id: u64,
    peers: &BTreeMap<NodeId, String>,
    founder: bool,
) -> anyhow::Result<Arc<dyn MetadataBackend>> {
    let data_dir = dir.join(format!("node-{id}"));
    std::fs::create_dir_all(&data_dir)?;
    let context = OpenContext {
        config: Figment::from(Serialized::default("bootstrap", founder)),
        data_dir,
        node: NodeIdentity {
            id: NodeId(id),
            cluster_addr: peers.get(&NodeId(id)).cloned(),
            peers: peers.clone(),
        },
        cluster_credentials: Some(shared_secret().into()),
    };
    Ok(open_backend("hybrid", context).await?)
}

async fn change(
    via: &Arc<dyn MetadataBackend>,
    change: MembershipChange,
) -> anyhow::Result<Vec<(u64, bool)>> {
    let described = format!("{change:?}");
    let view = tokio::time::timeout(DEADLINE * 2, via.change_membership(change))
        .await
        .with_context(|| format!("{described} hung"))?
        .with_context(|| described.clone())?;
    Ok(view.members.iter().map(|m| (m.id.0, m.voter)).collect())
}

/// Wait until one of `nodes` is a ready leader.
async fn leader(nodes: &[Arc<dyn MetadataBackend>]) -> anyhow::Result<Arc<dyn MetadataBackend>> {
    new_leader(nodes, 0, 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_one_to_three_and_shrink_back_with_writes_flowing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let addrs: BTreeMap<u64, String> = (1..=3)
        .map(|id| Ok((id, reserve_addr()?)))
        .collect::<anyhow::Result<_>>()?;
    let upto = |n: u64| -> BTreeMap<NodeId, String> {
        addrs
            .iter()
            .filter(|(id, _)| **id <= n)
            .map(|(id, a)| (NodeId(*id), a.clone()))
            .collect()
    };
    let first = open(dir.path(), 1, &upto(1), true).await?;
    let one = leader(std::slice::from_ref(&first)).await?;
    register_all(&one, &[1]).await?;
    let mut written = Vec::new();
    let mut write = async |node: &Arc<dyn MetadataBackend>, name: String| -> anyhow::Result<()> {
        create_topic_ok(node, &name, &[&[1]]).await?;
        written.push(name);
        Ok(())
    };
    for i in 0..5 {
        write(&first, format!("alone-{i}")).await?;
    }

    let second = open(dir.path(), 2, &upto(2), false).await?;
    let members = change(
        &first,
        MembershipChange::AddNode {
            id: NodeId(2),
            addr: addrs[&2].clone(),
        },
    )
    .await?;
    ensure!(members == [(1, true), (2, true)], "{members:?}");
    write(&first, "two".into()).await?;
    write(&second, "two-forwarded".into()).await?;

    let third = open(dir.path(), 3, &upto(3), false).await?;
    // Through the follower, which forwards the change to the leader.
    let members = change(
        &second,
        MembershipChange::AddNode {
            id: NodeId(3),
            addr: addrs[&3].clone(),
        },
    )
    .await?;
    ensure!(members == [(1, true), (2, true), (3, true)], "{members:?}");
    for i in 0..5 {
        write(&third, format!("three-{i}")).await?;
    }

    // The leader leaves first: it hands leadership over, then the new leader removes it.
    let members = change(&third, MembershipChange::RemoveNode { id: NodeId(1) }).await?;
    ensure!(members == [(2, true), (3, true)], "{members:?}");
    let survivors = [Arc::clone(&second), Arc::clone(&third)];
    let now = leader(&survivors).await?;
    write(&now, "after-removing-1".into()).await?;
    let members = change(&third, MembershipChange::RemoveNode { id: NodeId(2) }).await?;
    ensure!(members == [(3, true)], "{members:?}");
    let last = leader(std::slice::from_ref(&third)).await?;
    write(&last, "alone-again".into()).await?;

    let state = &last.local().state;
    for name in &written {
        ensure!(state.topic(name).is_some(), "acknowledged {name} is lost");
    }
    for node in [first, second, third] {
        tokio::time::timeout(DEADLINE, node.shutdown()).await??;
    }
    Ok(())
}
