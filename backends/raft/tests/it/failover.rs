//! Kill the leader of three nodes: a new leader takes writes (through a follower too), no
//! acknowledged write is lost, the survivors converge; the killed node restarts and converges.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use figment::Figment;
use figment::providers::Serialized;
use switchyard_compat_tests::fixtures::{create_topic, create_topic_ok, propose, register_all};
use switchyard_compat_tests::{RegistryHarness, TestCluster};

use crate::support::{converges, position};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_is_replaced_without_losing_acknowledged_writes() -> anyhow::Result<()> {
    let harness = RegistryHarness::new("raft");
    let mut cluster = TestCluster::start(&harness, 3).await?;
    let leader = cluster.leader().await?;
    register_all(&leader, &[1]).await?;
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let name = format!("before-{i}");
        create_topic_ok(&leader, &name, &[&[1]]).await?;
        acknowledged.push(name);
    }
    let killed = position(&leader)?;
    drop(leader);
    cluster.crash(killed).await?;

    let leader = cluster.leader().await?;
    ensure!(position(&leader)? != killed, "the killed node still leads");
    let follower_at = (0..3)
        .find(|i| *i != killed && *i != position(&leader).unwrap_or(usize::MAX))
        .context("no follower left")?;
    let follower = Arc::clone(cluster.node(follower_at)?);
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

    let view = leader.read_linearizable().await?;
    for name in &acknowledged {
        ensure!(
            view.state.topic(name).is_some(),
            "acknowledged {name} is lost"
        );
    }
    let linearizable = follower.read_linearizable().await?;
    ensure!(linearizable.applied_index >= view.applied_index);
    converges(&follower, &leader.local()).await?;

    let back = cluster.open(killed).await?;
    converges(&back, &leader.local()).await?;
    for name in &acknowledged {
        ensure!(
            back.local().state.topic(name).is_some(),
            "restarted node lacks {name}"
        );
    }
    Ok(())
}

/// Survivors of a killed leader campaign once its cluster address refuses connections
/// instead of waiting out its lease and their election timeouts: with election timeouts of
/// 8–9 s (17 s or more before an ordinary election) a new leader is ready within 10 s. Alone
/// it takes well under a second; the margin is for a CI machine running other tests beside
/// it (one such run missed a 5 s deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivors_campaign_once_the_dead_leader_refuses_connections() -> anyhow::Result<()> {
    let config = Figment::from(Serialized::default("heartbeat_ms", 100))
        .merge(Serialized::default("election_timeout_min_ms", 8_000))
        .merge(Serialized::default("election_timeout_max_ms", 9_000));
    let harness = RegistryHarness::new("raft").with_config(config);
    let mut cluster = TestCluster::start(&harness, 3).await?;
    let leader = cluster.leader().await.context("the first leader")?;
    register_all(&leader, &[1]).await?;
    let killed = position(&leader)?;
    drop(leader);
    cluster.crash(killed).await?;
    let leader = tokio::time::timeout(Duration::from_secs(10), cluster.leader())
        .await
        .context("no leader within 10 s of the kill")??;
    ensure!(position(&leader)? != killed, "the killed node still leads");
    create_topic_ok(&leader, "after", &[&[1]]).await?;
    Ok(())
}
