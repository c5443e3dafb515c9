//! Atomic batches.

use anyhow::{bail, ensure};
use switchyard_backend_api::{MetadataCommand, Outcome, Rejection};

use crate::fixtures::{accept, create_topic, propose, register, reject};
use crate::harness::{BackendHarness, TestCluster};

/// A batch applies every command or none, at a single log position.
pub async fn batch_applies_all_or_nothing(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    let before = node.local();
    let failing = MetadataCommand::Batch {
        commands: vec![
            register(1),
            create_topic("batched", &[&[1]]),
            MetadataCommand::DeleteGroups { groups: vec![] },
            MetadataCommand::AllocateProducerIds { count: 0 },
        ],
    };
    let rejection = reject(&node, failing).await?;
    let Rejection::BatchFailed { index, cause } = rejection else {
        bail!("expected BatchFailed, got {rejection:?}");
    };
    ensure!(index == 3, "{index}");
    ensure!(
        *cause == Rejection::InvalidProducerIdCount { count: 0 },
        "{cause:?}"
    );
    let after = node.local();
    ensure!(
        after.state == before.state,
        "a failed batch changed the state"
    );

    let proposed = match propose(
        &node,
        MetadataCommand::Batch {
            commands: vec![
                register(1),
                create_topic("batched", &[&[1]]),
                MetadataCommand::AllocateProducerIds { count: 1 },
            ],
        },
    )
    .await?
    {
        Ok(p) => p,
        Err(e) => bail!("batch failed: {e}"),
    };
    let Outcome::Batch { outcomes } = &proposed.outcome else {
        bail!("unexpected outcome {:?}", proposed.outcome);
    };
    ensure!(outcomes.len() == 3, "{outcomes:?}");
    ensure!(
        proposed.index == after.applied_index + 1,
        "a batch takes one log position"
    );
    let view = node.local();
    ensure!(view.state.brokers().count() == 1 && view.state.topic("batched").is_some());
    ensure!(view.state.next_producer_id() == 1);

    let nested = accept(
        &node,
        MetadataCommand::Batch {
            commands: vec![MetadataCommand::Batch { commands: vec![] }],
        },
    )
    .await?;
    ensure!(
        nested
            == Outcome::Batch {
                outcomes: vec![Outcome::Batch { outcomes: vec![] }]
            },
        "{nested:?}"
    );
    Ok(())
}
