//! Power cuts: a node loses power in the middle of a group commit — of the bytes appended
//! since its last sync some reach the disk (a torn record) and the rest are lost. Reopened,
//! it truncates the torn tail, holds every write it acknowledged, and takes writes again.

use std::sync::Arc;

use anyhow::{Context, ensure};
use switchyard_backend_api::MetadataBackend;
use switchyard_compat_tests::fixtures::{create_topic, register_all};
use switchyard_compat_tests::{DEADLINE, TestCluster};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::support::harness;

/// Concurrent writers.
const WRITERS: usize = 32;
/// Writes acknowledged before the power goes.
const ACKED_BEFORE_CUT: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_mid_commit_loses_only_unacknowledged_writes() -> anyhow::Result<()> {
    let h = harness(&[]);
    let mut cluster = TestCluster::single(&h).await?;
    register_all(cluster.node(0)?, &[1]).await?;
    // Bytes of the unsynced tail that reach the disk: none, part of a record, several.
    let keeps = [0, 1, 9, 40, 150, 1_000, 100_000];
    let (mut cut_mid_commit, mut torn) = (0, 0);
    for (round, keep) in keeps.into_iter().enumerate() {
        let node = Arc::clone(cluster.node(0)?);
        // Writers that keep proposing until the node stops answering.
        let (count, mut counted) = watch::channel(0_usize);
        let count = Arc::new(count);
        let mut writers = JoinSet::new();
        for writer in 0..WRITERS {
            let (node, count) = (Arc::clone(&node), Arc::clone(&count));
            writers.spawn(async move {
                let mut acked = Vec::new();
                for i in 0.. {
                    let name = format!("r{round}-w{writer}-{i}");
                    if node.propose(create_topic(&name, &[&[1]])).await.is_err() {
                        break;
                    }
                    acked.push(name);
                    count.send_modify(|n| *n += 1);
                }
                acked
            });
        }
        // Cut the power once some writes were acknowledged, with more in flight.
        tokio::time::timeout(DEADLINE, counted.wait_for(|n| *n >= ACKED_BEFORE_CUT))
            .await
            .context("no writes acknowledged before the cut")??;
        let cut = node.power_cut(keep)?;
        let mut acked = Vec::new();
        while let Some(joined) = writers.join_next().await {
            acked.extend(joined?);
        }
        drop(node);
        if cut.unsynced_bytes > 0 {
            cut_mid_commit += 1;
        }
        if cut.kept_bytes > 0 && cut.kept_bytes < cut.unsynced_bytes {
            torn += 1;
        }
        println!("round {round}: {cut:?}, {} acknowledged", acked.len());

        cluster.crash(0).await?;
        let reopened = cluster.open(0).await?;
        reopened.wait_ready(DEADLINE).await?;
        let state = reopened.local();
        let lost: Vec<&String> = acked
            .iter()
            .filter(|name| state.state.topic(name).is_none())
            .collect();
        ensure!(
            lost.is_empty(),
            "round {round}: acknowledged, then lost: {lost:?}"
        );
        let after = format!("after-{round}");
        reopened
            .propose(create_topic(&after, &[&[1]]))
            .await
            .with_context(|| format!("round {round}: writing after the power came back"))?;
    }
    ensure!(
        cut_mid_commit > 0 && torn > 0,
        "no power cut landed mid-commit ({cut_mid_commit}) or tore a record ({torn}); the test \
         did not exercise what it is for"
    );
    Ok(())
}

/// A cut node refuses further use, as a crashed one would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_node_takes_no_more_writes() -> anyhow::Result<()> {
    let h = harness(&[]);
    let cluster = TestCluster::single(&h).await?;
    let node: &Arc<dyn MetadataBackend> = cluster.node(0)?;
    node.power_cut(0)?;
    ensure!(node.propose(create_topic("late", &[&[1]])).await.is_err());
    ensure!(
        node.power_cut(0).is_err(),
        "a second power cut of a stopped node"
    );
    Ok(())
}
