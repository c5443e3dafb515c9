//! The in-sync set the leader records in the group: every follower once caught up; a
//! crashed follower drops out once the leader commits writes it lacks; restarted, it catches
//! up and is recorded again.

use std::sync::Arc;

use anyhow::Context;
use switchyard_backend_api::{MetadataBackend, OpenContext};
use switchyard_backend_hybrid::{GroupView, HybridBackend};
use switchyard_compat_tests::fixtures::{create_topic_ok, register_all};
use switchyard_compat_tests::{DEADLINE, Network, shared_secret};

use crate::faults::new_leader;

async fn open(
    network: &Network,
    dir: &std::path::Path,
    id: u64,
) -> anyhow::Result<Arc<HybridBackend>> {
    let data_dir = dir.join(format!("node-{id}"));
    std::fs::create_dir_all(&data_dir)?;
    let context = OpenContext {
        config: figment::Figment::new(),
        data_dir,
        node: network.identity(id)?,
        cluster_credentials: Some(shared_secret().into()),
    };
    Ok(Arc::new(HybridBackend::open(context).await?))
}

/// Wait until `node`'s applied group state satisfies `done`.
async fn recorded(
    node: &HybridBackend,
    what: &str,
    done: impl Fn(&GroupView) -> bool,
) -> anyhow::Result<()> {
    let mut group = node.group();
    tokio::time::timeout(DEADLINE, group.wait_for(|v| done(v)))
        .await
        .with_context(|| format!("{what}: {:?}", node.group().borrow().state))??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_records_who_is_in_sync() -> anyhow::Result<()> {
    let network = Network::start(3).await?;
    let dir = tempfile::tempdir()?;
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(open(&network, dir.path(), id).await?);
    }
    let as_backends: Vec<Arc<dyn MetadataBackend>> = nodes
        .iter()
        .map(|n| Arc::clone(n) as Arc<dyn MetadataBackend>)
        .collect();
    let leader = new_leader(&as_backends, 0, 0).await?;
    // Only the nodes themselves may keep a follower alive once it is crashed.
    drop(as_backends);
    let leader_id = leader.cluster().borrow().node.0;
    let leader_node = Arc::clone(&nodes[usize::try_from(leader_id - 1)?]);
    register_all(&leader, &[1]).await?;
    create_topic_ok(&leader, "first", &[&[1]]).await?;
    recorded(&leader_node, "every node in sync", |v| {
        v.state.in_sync.len() == 3
    })
    .await?;

    let follower = (1..=3).find(|id| *id != leader_id).context("no follower")?;
    let index = usize::try_from(follower - 1)?;
    drop(std::mem::replace(
        &mut nodes[index],
        Arc::clone(&leader_node),
    ));
    for i in 0..5 {
        create_topic_ok(&leader, &format!("without-{i}"), &[&[1]]).await?;
    }
    recorded(&leader_node, "the crashed follower out of sync", |v| {
        !v.state.in_sync.contains(&follower) && v.state.in_sync.contains(&leader_id)
    })
    .await?;

    nodes[index] = open(&network, dir.path(), follower).await?;
    create_topic_ok(&leader, "after-restart", &[&[1]]).await?;
    recorded(&leader_node, "the restarted follower back in sync", |v| {
        v.state.in_sync.contains(&follower)
    })
    .await?;
    Ok(())
}
