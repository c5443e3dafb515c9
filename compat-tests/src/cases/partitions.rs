//! Partition leader/ISR changes and offset checkpoints.

use anyhow::{bail, ensure};
use switchyard_backend_api::{BrokerId, MetadataCommand, Outcome, PartitionOffsets, Rejection};

use crate::fixtures::{accept, create_topic_ok, register_all, reject};
use crate::harness::{BackendHarness, TestCluster};

fn alter(epoch: i32, leader: Option<i32>, isr: &[i32]) -> MetadataCommand {
    MetadataCommand::AlterPartition {
        topic: "p".into(),
        partition: 0,
        partition_epoch: epoch,
        leader: leader.map(BrokerId),
        isr: isr.iter().copied().map(BrokerId).collect(),
    }
}

/// ISR changes bump the partition epoch, leader changes also the leader epoch; stale epochs,
/// ISRs outside the replicas, leaders outside the ISR and fenced replicas are refused.
pub async fn alter_partition_is_fenced_by_epoch(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1, 2, 3, 4]).await?;
    create_topic_ok(&node, "p", &[&[1, 2, 3]]).await?;

    let shrink = accept(&node, alter(0, Some(1), &[1, 2])).await?;
    ensure!(
        shrink
            == Outcome::PartitionAltered {
                leader_epoch: 0,
                partition_epoch: 1
            },
        "{shrink:?}"
    );
    let moved = accept(&node, alter(1, Some(2), &[2, 1])).await?;
    ensure!(
        moved
            == Outcome::PartitionAltered {
                leader_epoch: 1,
                partition_epoch: 2
            },
        "{moved:?}"
    );
    let view = node.local();
    let Some(p) = view.state.partition("p", 0) else {
        bail!("partition missing");
    };
    ensure!(p.leader == Some(BrokerId(2)), "{p:?}");
    ensure!(p.isr.iter().eq([BrokerId(2), BrokerId(1)].iter()), "{p:?}");

    let stale = reject(&node, alter(1, Some(2), &[2])).await?;
    ensure!(
        stale
            == Rejection::StalePartitionEpoch {
                topic: "p".into(),
                partition: 0,
                current: 2,
                requested: 1
            },
        "{stale:?}"
    );
    let outside = reject(&node, alter(2, Some(2), &[2, 4])).await?;
    ensure!(
        matches!(outside, Rejection::InvalidIsr { .. }),
        "{outside:?}"
    );
    let twice = reject(&node, alter(2, Some(2), &[2, 2])).await?;
    ensure!(matches!(twice, Rejection::InvalidIsr { .. }), "{twice:?}");
    let leader_out = reject(&node, alter(2, Some(3), &[2])).await?;
    ensure!(
        matches!(leader_out, Rejection::InvalidIsr { .. }),
        "{leader_out:?}"
    );
    accept(
        &node,
        MetadataCommand::FenceBroker {
            id: BrokerId(3),
            incarnation: 1,
        },
    )
    .await?;
    let fenced = reject(&node, alter(2, Some(2), &[2, 3])).await?;
    ensure!(
        fenced
            == Rejection::IneligibleReplica {
                broker: BrokerId(3)
            },
        "{fenced:?}"
    );
    let unknown = reject(
        &node,
        MetadataCommand::AlterPartition {
            topic: "p".into(),
            partition: 9,
            partition_epoch: 0,
            leader: None,
            isr: vec![],
        },
    )
    .await?;
    ensure!(
        matches!(unknown, Rejection::UnknownTopicOrPartition { .. }),
        "{unknown:?}"
    );
    let view = node.local();
    ensure!(
        view.state
            .partition("p", 0)
            .is_some_and(|p| p.partition_epoch == 2)
    );
    Ok(())
}

/// Checkpoints record high watermark and log start offset; partitions that do not exist are
/// skipped; impossible offsets reject the whole checkpoint.
pub async fn checkpoint_partition_offsets(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topic_ok(&node, "p", &[&[1], &[1]]).await?;
    let entry = |partition, log_start_offset, high_watermark| PartitionOffsets {
        topic: "p".into(),
        partition,
        high_watermark,
        log_start_offset,
    };
    let outcome = accept(
        &node,
        MetadataCommand::CheckpointPartitionOffsets {
            offsets: vec![entry(0, 10, 100), entry(1, 0, 5), entry(7, 0, 1)],
        },
    )
    .await?;
    ensure!(
        outcome
            == Outcome::OffsetsCheckpointed {
                applied: 2,
                skipped: 1
            },
        "{outcome:?}"
    );
    let rejection = reject(
        &node,
        MetadataCommand::CheckpointPartitionOffsets {
            offsets: vec![entry(1, 0, 50), entry(0, 200, 100)],
        },
    )
    .await?;
    ensure!(
        matches!(rejection, Rejection::InvalidOffsets { .. }),
        "{rejection:?}"
    );
    let view = node.local();
    let offsets: Vec<_> = (0..2)
        .filter_map(|i| view.state.partition("p", i))
        .map(|p| (p.log_start_offset, p.high_watermark))
        .collect();
    ensure!(offsets == vec![(10, 100), (0, 5)], "{offsets:?}");
    Ok(())
}
