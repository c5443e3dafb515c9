//! Replication: follower catch-up (from the log and by snapshot), promotion and fencing,
//! and the handshake.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use switchyard_backend_api::{MembershipChange, MetadataError, NodeId};
use switchyard_backend_wal::request_promotion;
use switchyard_compat_tests::fixtures::{create_topic, propose, register_all};
use switchyard_compat_tests::{DEADLINE, TestCluster};

use crate::support::toml_value::Value;
use crate::support::{converges, create_topics, harness, segments};

/// A follower that crashed and restarts catches up from the primary's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_restarts_and_catches_up() -> anyhow::Result<()> {
    let h = harness(&[]);
    let mut cluster = TestCluster::start(&h, 3).await?;
    let primary = cluster.leader().await?;
    register_all(&primary, &[1]).await?;
    create_topics(&primary, "before", 0..10).await?;
    // A follower forwards the write to the primary and returns once it has applied it.
    let follower = cluster.node(1)?.clone();
    propose(&follower, create_topic("on-follower", &[&[1]])).await??;
    ensure!(follower.local().state.topic("on-follower").is_some());
    ensure!(primary.local().state.topic("on-follower").is_some());
    drop(follower);
    cluster.crash(2).await?;
    // Sync mode: the primary and node 2 still make a majority.
    create_topics(&primary, "during", 0..10).await?;
    let follower = cluster.open(2).await?;
    converges(&follower, &primary.local()).await?;
    follower.wait_ready(DEADLINE).await?;
    ensure!(follower.local().state.topic("during-9").is_some());
    create_topics(&primary, "after", 0..3).await?;
    converges(&follower, &primary.local()).await
}

/// A follower whose next record was compacted away on the primary catches up by snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_behind_follower_catches_up_by_snapshot() -> anyhow::Result<()> {
    let h = harness(&[
        ("snapshot_every", Value::Int(10)),
        ("segment_bytes", Value::Int(4096)),
    ]);
    let mut cluster = TestCluster::start(&h, 3).await?;
    let primary = cluster.leader().await?;
    register_all(&primary, &[1]).await?;
    let behind = cluster.node(2)?.local().applied_index;
    cluster.crash(2).await?;
    create_topics(&primary, "far", 0..200).await?;

    let oldest = segments(&cluster.spec(0)?.data_dir)?
        .into_iter()
        .next()
        .context("no segment on the primary")?;
    let name = oldest.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let first: u64 = name
        .trim_start_matches("wal-")
        .trim_end_matches(".log")
        .parse()?;
    ensure!(
        first > behind + 1,
        "precondition: the primary still holds record {} in {name}",
        behind + 1
    );

    let follower = cluster.open(2).await?;
    converges(&follower, &primary.local()).await?;
    create_topics(&primary, "then", 0..3).await?;
    converges(&follower, &primary.local()).await
}

/// Promotion bumps the epoch and fences the old primary: it stops writing, passes its
/// proposals to the new primary, and follows (and converges to) it.
/// Promoting another node than the one called is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_fences_the_old_primary() -> anyhow::Result<()> {
    let h = harness(&[]);
    let cluster = TestCluster::start(&h, 3).await?;
    let old = cluster.leader().await?;
    register_all(&old, &[1]).await?;
    create_topics(&old, "epoch1", 0..5).await?;

    let wrong = cluster
        .node(2)?
        .change_membership(MembershipChange::Promote { id: NodeId(2) })
        .await;
    ensure!(
        matches!(wrong, Err(MetadataError::Unsupported { .. })),
        "{wrong:?}"
    );

    let new = cluster.node(1)?.clone();
    let view = tokio::time::timeout(
        DEADLINE,
        new.change_membership(MembershipChange::Promote { id: NodeId(2) }),
    )
    .await
    .context("promotion hung")??;
    ensure!(
        view.leader == Some(NodeId(2)) && view.epoch >= 2,
        "{view:?}"
    );

    let mut views = old.cluster();
    tokio::time::timeout(DEADLINE, views.wait_for(|v| v.leader == Some(NodeId(2))))
        .await
        .context("the old primary never learned of the promotion")??;
    propose(&old, create_topic("forwarded", &[&[1]])).await??;
    ensure!(
        new.local().state.topic("forwarded").is_some(),
        "the old primary's write did not go through the new primary"
    );

    create_topics(&new, "epoch2", 0..5).await?;
    let target = new.local();
    ensure!(target.state.topic("epoch1-4").is_some());
    converges(&old, &target).await?;
    converges(cluster.node(2)?, &target).await
}

/// Sync mode: kill the primary after N acknowledged writes and promote the follower that
/// missed them (it was down). Taking over from a majority, it fetches them from the other
/// follower: all N are there, and it takes writes. The promotion goes through the admin
/// client, as `switchyard cluster promote` will.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoted_follower_has_every_acknowledged_write() -> anyhow::Result<()> {
    let h = harness(&[]);
    let mut cluster = TestCluster::start(&h, 3).await?;
    let primary = cluster.leader().await?;
    register_all(&primary, &[1]).await?;
    cluster.crash(1).await?;
    const N: usize = 30;
    create_topics(&primary, "acked", 0..N).await?;
    let acked = primary.local();
    drop(primary);
    cluster.crash(0).await?;

    let promoted = cluster.open(1).await?;
    let addr = cluster
        .spec(1)?
        .identity
        .cluster_addr
        .clone()
        .context("no cluster address")?;
    let secret = &cluster.spec(1)?.credentials;
    let epoch = request_promotion(&addr, "switchyard", secret, NodeId(2), DEADLINE).await?;
    ensure!(epoch >= 2, "epoch {epoch}");
    let view = promoted.local();
    for i in 0..N {
        ensure!(
            view.state.topic(&format!("acked-{i}")).is_some(),
            "acknowledged write acked-{i} lost"
        );
    }
    ensure!(
        view.state == acked.state,
        "state differs from the acknowledged one"
    );
    create_topics(&promoted, "after", 0..3).await?;
    converges(cluster.node(2)?, &promoted.local()).await?;

    // The old primary comes back believing it leads epoch 1: a majority fences it, it
    // follows the new primary and passes its writes there.
    let old = cluster.open(0).await?;
    converges(&old, &promoted.local()).await?;
    propose(&old, create_topic("from-old", &[&[1]])).await??;
    ensure!(promoted.local().state.topic("from-old").is_some());
    converges(&old, &promoted.local()).await
}

/// Sync mode: a primary that has lost its majority fails proposals with `Timeout` after
/// `propose_timeout_ms`, never hangs and never acknowledges them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_primary_without_majority_times_out() -> anyhow::Result<()> {
    let h = harness(&[("propose_timeout_ms", Value::Int(300))]);
    let mut cluster = TestCluster::start(&h, 3).await?;
    let primary = cluster.leader().await?;
    register_all(&primary, &[1]).await?;
    cluster.crash(1).await?;
    cluster.crash(2).await?;
    let result = propose(&primary, create_topic("lonely", &[&[1]])).await?;
    ensure!(
        matches!(result, Err(MetadataError::Timeout { .. })),
        "{result:?}"
    );
    ensure!(primary.local().state.topic("lonely").is_none());
    Ok(())
}

/// A peer presenting another cluster id is refused, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_refuses_another_cluster() -> anyhow::Result<()> {
    let h = harness(&[("cluster_id", Value::Str("blue"))]);
    let cluster = TestCluster::start(&h, 3).await?;
    cluster.leader().await?;
    let addr = cluster
        .spec(1)?
        .identity
        .cluster_addr
        .clone()
        .context("no cluster address")?;
    let secret = &cluster.spec(1)?.credentials;
    let refused =
        request_promotion(&addr, "green", secret, NodeId(2), Duration::from_secs(5)).await;
    match refused {
        Err(MetadataError::Network(reason)) if reason.contains("cluster id") => Ok(()),
        other => bail!("expected a refusal naming the cluster id, got {other:?}"),
    }
}
