//! A follower that missed more than the leader kept in its log catches up from a snapshot
//! sent in chunks, then restarts from its own snapshot and log.

use anyhow::{Context, ensure};
use figment::Figment;
use figment::providers::Serialized;
use switchyard_backend_api::Change;
use switchyard_compat_tests::fixtures::{create_topic_ok, register_all};
use switchyard_compat_tests::{DEADLINE, RegistryHarness, TestCluster};

use crate::support::{converges, position};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_from_a_chunked_snapshot() -> anyhow::Result<()> {
    // Snapshot (and purge the log) every 20 entries; send snapshots in 512-byte chunks.
    let config = Figment::from(Serialized::default("snapshot_every", 20))
        .merge(Serialized::default("snapshot_chunk_bytes", 512));
    let harness = RegistryHarness::new("raft").with_config(config);
    let mut cluster = TestCluster::start(&harness, 3).await?;
    let leader = cluster.leader().await?;
    register_all(&leader, &[1]).await?;
    let leader_at = position(&leader)?;
    let lagging = (0..3).find(|i| *i != leader_at).context("no follower")?;
    let had = cluster.node(lagging)?.local().applied_index;
    cluster.crash(lagging).await?;

    // The leader purges its log behind every snapshot, so the entries written now can only
    // reach the lagging node inside a snapshot (several chunks: 100 topics are many KiB).
    for i in 0..100 {
        create_topic_ok(&leader, &format!("while-down-{i}"), &[&[1]]).await?;
    }
    let back = cluster.open(lagging).await?;
    // Subscribed right after open: the leader reaches the node only after its next
    // replication attempt, well after open returned.
    let mut changes = back.subscribe();
    let installed = async {
        loop {
            let change = changes.recv().await?;
            if change.change == Change::SnapshotInstalled {
                return anyhow::Ok(change.index);
            }
        }
    };
    let index = tokio::time::timeout(DEADLINE, installed)
        .await
        .context("no snapshot was installed on the lagging node")??;
    ensure!(
        index > had + 20,
        "snapshot at {index} does not cover the missed writes (the node had {had})"
    );
    converges(&back, &leader.local()).await?;

    let target = leader.local();
    let back = cluster.restart(lagging).await?;
    converges(&back, &target).await?;
    create_topic_ok(&leader, "after", &[&[1]]).await?;
    converges(&back, &leader.local()).await
}
