//! Producer id allocation.

use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use switchyard_backend_api::{
    MAX_PRODUCER_ID_BLOCK, MetadataCommand, Outcome, ProducerId, Rejection,
};

use crate::fixtures::{accept, reject};
use crate::harness::{BackendHarness, TestCluster};

/// Blocks are consecutive and never overlap, also when allocated concurrently; sizes outside
/// 1..=MAX_PRODUCER_ID_BLOCK are refused.
pub async fn producer_id_blocks_do_not_overlap(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    let first = accept(&node, MetadataCommand::AllocateProducerIds { count: 10 }).await?;
    ensure!(
        first
            == Outcome::ProducerIdsAllocated {
                first: ProducerId(0),
                count: 10
            },
        "{first:?}"
    );
    for count in [0, MAX_PRODUCER_ID_BLOCK + 1] {
        let rejection = reject(&node, MetadataCommand::AllocateProducerIds { count }).await?;
        ensure!(
            rejection == Rejection::InvalidProducerIdCount { count },
            "{rejection:?}"
        );
    }
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let node = Arc::clone(&node);
        tasks.push(tokio::spawn(async move {
            accept(&node, MetadataCommand::AllocateProducerIds { count: 5 }).await
        }));
    }
    let mut starts = Vec::new();
    for task in tasks {
        match task.await.context("allocation task")?? {
            Outcome::ProducerIdsAllocated { first, count: 5 } => starts.push(first.0),
            other => bail!("unexpected outcome {other:?}"),
        }
    }
    starts.sort_unstable();
    let expected: Vec<i64> = (0..16).map(|i| 10 + 5 * i).collect();
    ensure!(starts == expected, "{starts:?}");
    ensure!(node.local().state.next_producer_id() == 90);
    Ok(())
}
