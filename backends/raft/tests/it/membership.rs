//! Membership changes online, 1 → 3 → 1 nodes, while a writer keeps proposing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, ensure};
use figment::Figment;
use figment::providers::Serialized;
use switchyard_backend_api::{MembershipChange, NodeId, NodeIdentity};
use switchyard_compat_tests::DEADLINE;
use switchyard_compat_tests::fixtures::{create_topic_ok, register_all};

use crate::support::{identity, open_node, reserve_addr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_three_to_one_with_writes_flowing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut peers = BTreeMap::new();
    for id in 1..=3 {
        peers.insert(NodeId(id), reserve_addr()?);
    }
    let addr = |id: u64| peers.get(&NodeId(id)).cloned().context("address");
    // Node 1 starts alone (no peers), with a cluster address others can reach later.
    let first = open_node(
        NodeIdentity {
            id: NodeId(1),
            cluster_addr: Some(addr(1)?),
            peers: BTreeMap::new(),
        },
        dir.path().join("node-1"),
        Figment::new(),
    )
    .await?;
    first.wait_ready(DEADLINE).await?;
    register_all(&first, &[1]).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let node = Arc::clone(&first);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut written = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                let name = format!("flow-{i}");
                create_topic_ok(&node, &name, &[&[1]]).await?;
                written.push(name);
                i += 1;
            }
            anyhow::Ok(written)
        })
    };

    let joiners = Figment::from(Serialized::default("bootstrap", false));
    let mut others = Vec::new();
    for id in 2..=3 {
        let node = open_node(
            identity(id, &peers),
            dir.path().join(format!("node-{id}")),
            joiners.clone(),
        )
        .await?;
        ensure!(
            !node.cluster().borrow().is_ready(),
            "a joiner is ready before it joined"
        );
        let view = first
            .change_membership(MembershipChange::AddNode {
                id: NodeId(id),
                addr: addr(id)?,
            })
            .await?;
        ensure!(
            view.members.iter().any(|m| m.id == NodeId(id) && m.voter),
            "{view:?}"
        );
        node.wait_ready(DEADLINE).await?;
        others.push(node);
    }
    ensure!(first.cluster().borrow().members.len() == 3);
    for node in &others {
        node.wait_applied(first.local().applied_index, DEADLINE)
            .await?;
    }

    for id in [3, 2] {
        let view = first
            .change_membership(MembershipChange::RemoveNode { id: NodeId(id) })
            .await?;
        ensure!(view.members.iter().all(|m| m.id != NodeId(id)), "{view:?}");
    }
    ensure!(first.cluster().borrow().members.len() == 1);

    stop.store(true, Ordering::Release);
    let written = tokio::time::timeout(DEADLINE, writer)
        .await
        .context("writer did not stop")???;
    ensure!(
        !written.is_empty(),
        "no write went through during the changes"
    );
    create_topic_ok(&first, "after-shrink", &[&[1]]).await?;
    let view = first.read_linearizable().await?;
    for name in &written {
        ensure!(
            view.state.topic(name).is_some(),
            "acknowledged {name} is lost"
        );
    }
    Ok(())
}
