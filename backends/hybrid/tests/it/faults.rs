//! Fault tests on three nodes:
//! - kill -9 (a crash in-process) of the leader: a new leader is elected, takes writes (also
//!   forwarded by a follower), no acknowledged write is lost, the survivors converge; the
//!   killed node restarts and converges;
//! - isolate the leader behind real TCP proxies: the majority elects a leader at a later
//!   epoch; the old leader's writes fail and never appear anywhere; after healing, it follows
//!   the new leader and converges.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use switchyard_backend_api::{MetadataBackend, OpenContext, open_backend};
use switchyard_compat_tests::fixtures::{
    converges, create_topic, create_topic_ok, position, propose, register_all,
};
use switchyard_compat_tests::{DEADLINE, Network, RegistryHarness, TestCluster, shared_secret};

/// Wait until one of `nodes` (other than `not`) is a ready leader at an epoch above `after`.
pub(crate) async fn new_leader(
    nodes: &[Arc<dyn MetadataBackend>],
    not: u64,
    after: u64,
) -> anyhow::Result<Arc<dyn MetadataBackend>> {
    let mut watches: Vec<_> = nodes.iter().map(|n| n.cluster()).collect();
    let wait = async {
        loop {
            for (node, watch) in nodes.iter().zip(&watches) {
                let view = watch.borrow();
                if view.is_ready()
                    && view.leader == Some(view.node)
                    && view.node.0 != not
                    && view.epoch > after
                {
                    return Ok(Arc::clone(node));
                }
            }
            let changed = watches.iter_mut().map(|w| Box::pin(w.changed()));
            let (result, _, _) = futures::future::select_all(changed).await;
            result.context("a node's cluster view closed")?;
        }
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .context("no new leader emerged")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_is_replaced_without_losing_acknowledged_writes() -> anyhow::Result<()> {
    let harness = RegistryHarness::new("hybrid");
    let mut cluster = TestCluster::start(&harness, 3).await?;
    let leader = cluster.leader().await?;
    let old_epoch = leader.cluster().borrow().epoch;
    register_all(&leader, &[1]).await?;
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let name = format!("before-{i}");
        create_topic_ok(&leader, &name, &[&[1]]).await?;
        acknowledged.push(name);
    }
    let killed = position(&leader)?;
    let killed_id = leader.cluster().borrow().node.0;
    drop(leader);
    cluster.crash(killed).await?;

    let survivors: Vec<_> = (0..3)
        .filter(|i| *i != killed)
        .map(|i| cluster.node(i).cloned())
        .collect::<anyhow::Result<_>>()?;
    let leader = new_leader(&survivors, killed_id, old_epoch).await?;
    let follower = survivors
        .iter()
        .find(|n| !Arc::ptr_eq(n, &leader))
        .cloned()
        .context("no follower left")?;
    for i in 0..10 {
        let name = format!("after-{i}");
        // Through the follower: forwarded to the leader, answered once applied locally.
        let proposed = match propose(&follower, create_topic(&name, &[&[1]])).await? {
            Ok(p) => p,
            Err(e) => bail!("forwarded write {name}: {e}"),
        };
        ensure!(follower.local().applied_index >= proposed.index);
        ensure!(follower.local().state.topic(&name).is_some());
        acknowledged.push(name);
        let name = format!("after-leader-{i}");
        create_topic_ok(&leader, &name, &[&[1]]).await?;
        acknowledged.push(name);
    }
    let view = leader.local();
    for name in &acknowledged {
        ensure!(
            view.state.topic(name).is_some(),
            "acknowledged {name} is lost"
        );
    }
    converges(&follower, &view).await?;

    let back = cluster.open(killed).await?;
    converges(&back, &leader.local()).await?;
    for name in &acknowledged {
        ensure!(
            back.local().state.topic(name).is_some(),
            "restarted node lacks {name}"
        );
    }
    // The restarted node is a follower now: its writes go to the leader.
    let proposed = match propose(&back, create_topic("from-restarted", &[&[1]])).await? {
        Ok(p) => p,
        Err(e) => bail!("write through the restarted node: {e}"),
    };
    ensure!(back.local().applied_index >= proposed.index);
    converges(&follower, &back.local()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_cannot_write_once_a_new_term_begins() -> anyhow::Result<()> {
    let network = Network::start(3).await?;
    let dir = tempfile::tempdir()?;
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let data_dir = dir.path().join(format!("node-{id}"));
        std::fs::create_dir_all(&data_dir)?;
        let context = OpenContext {
            config: figment::Figment::new(),
            data_dir,
            node: network.identity(id)?,
            cluster_credentials: Some(shared_secret().into()),
        };
        nodes.push(open_backend("hybrid", context).await?);
    }
    let leader = new_leader(&nodes, 0, 0).await?;
    let (old, old_epoch) = {
        let view = leader.cluster().borrow().clone();
        (view.node.0, view.epoch)
    };
    register_all(&leader, &[1]).await?;
    create_topic_ok(&leader, "before", &[&[1]]).await?;

    network.isolate(old);
    let cut_off = {
        let leader = Arc::clone(&leader);
        tokio::spawn(async move { leader.propose(create_topic("cut-off", &[&[1]])).await })
    };
    let others: Vec<_> = nodes
        .iter()
        .filter(|n| n.cluster().borrow().node.0 != old)
        .cloned()
        .collect();
    let new = new_leader(&others, old, old_epoch).await?;
    let new_epoch = new.cluster().borrow().epoch;
    match tokio::time::timeout(DEADLINE, cut_off)
        .await
        .context("the cut-off write hung")??
    {
        Ok(p) => bail!("the isolated leader acknowledged a write at {}", p.index),
        Err(e) => ensure!(e.is_retriable(), "the cut-off write failed with {e}"),
    }
    // Once the new term began, the old leader refuses to write: it stepped down.
    let mut old_view = leader.cluster();
    tokio::time::timeout(DEADLINE, old_view.wait_for(|v| v.leader != Some(v.node)))
        .await
        .with_context(|| {
            format!(
                "the isolated leader never stepped down: {:?}",
                leader.cluster().borrow()
            )
        })??;
    match propose(&leader, create_topic("after-cut", &[&[1]])).await? {
        Ok(p) => bail!(
            "the isolated old leader acknowledged a write at {}",
            p.index
        ),
        Err(e) => ensure!(e.is_retriable(), "{e}"),
    }
    create_topic_ok(&new, "majority", &[&[1]]).await?;

    network.heal();
    tokio::time::timeout(
        DEADLINE,
        old_view.wait_for(|v| v.is_ready() && v.epoch >= new_epoch && v.leader.is_some()),
    )
    .await
    .with_context(|| {
        format!(
            "the old leader never rejoined: {:?}",
            leader.cluster().borrow()
        )
    })??;
    let target = new.local();
    for node in &nodes {
        converges(node, &target).await?;
        let state = &node.local().state;
        ensure!(state.topic("before").is_some() && state.topic("majority").is_some());
        ensure!(
            state.topic("cut-off").is_none() && state.topic("after-cut").is_none(),
            "a write of the isolated leader survived"
        );
    }
    for node in &nodes {
        tokio::time::timeout(Duration::from_secs(20), node.shutdown()).await??;
    }
    Ok(())
}
