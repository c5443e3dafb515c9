//! Committed offsets.

use anyhow::{bail, ensure};
use switchyard_backend_api::{
    BrokerId, GenerationCheck, GroupId, MemberId, MetadataCommand, OffsetCommit, Outcome, Rejection,
};

use crate::fixtures::{accept, commit, create_topic_ok, register_all, reject, start_generation};
use crate::harness::{BackendHarness, TestCluster};

/// A member of the current generation commits many partitions in one command; everything it
/// sent is stored.
pub async fn commit_offsets_with_generation(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topic_ok(&node, "a", &[&[1], &[1]]).await?;
    create_topic_ok(&node, "b", &[&[1]]).await?;
    accept(&node, start_generation("g", 0, &["m1"])).await?;
    let outcome = accept(
        &node,
        commit(
            "g",
            Some((1, "m1")),
            &[("a", 0, 10), ("a", 1, 11), ("b", 0, 12)],
        ),
    )
    .await?;
    ensure!(
        outcome == Outcome::OffsetsCommitted { count: 3 },
        "{outcome:?}"
    );
    let view = node.local();
    let group = GroupId("g".into());
    let Some(committed) = view.state.committed_offset(&group, "a", 1) else {
        bail!("offset missing");
    };
    ensure!(committed.offset == 11 && committed.leader_epoch == Some(0));
    ensure!(committed.metadata == "m11");
    ensure!(committed.commit_timestamp_ms == 1_700_000_000_000);
    let all: Vec<_> = view
        .state
        .group_offsets(&group)
        .map(|(k, o)| (k.topic.as_str(), k.partition, o.offset))
        .collect();
    ensure!(
        all == vec![("a", 0, 10), ("a", 1, 11), ("b", 0, 12)],
        "{all:?}"
    );
    Ok(())
}

/// Commits from an old generation (ILLEGAL_GENERATION) or a non-member (UNKNOWN_MEMBER_ID)
/// store nothing.
pub async fn commit_with_stale_generation_is_rejected(
    h: &dyn BackendHarness,
) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topic_ok(&node, "a", &[&[1]]).await?;
    accept(&node, start_generation("g", 0, &["m1"])).await?;
    accept(&node, start_generation("g", 1, &["m1", "m2"])).await?;
    let stale = reject(&node, commit("g", Some((1, "m1")), &[("a", 0, 1)])).await?;
    ensure!(
        stale
            == Rejection::IllegalGeneration {
                current: 2,
                requested: 1
            },
        "{stale:?}"
    );
    let stranger = reject(&node, commit("g", Some((2, "m9")), &[("a", 0, 1)])).await?;
    ensure!(
        stranger
            == Rejection::UnknownMemberId {
                member: MemberId("m9".into())
            },
        "{stranger:?}"
    );
    let no_group = reject(&node, commit("other", Some((1, "m1")), &[("a", 0, 1)])).await?;
    ensure!(
        matches!(no_group, Rejection::UnknownMemberId { .. }),
        "{no_group:?}"
    );
    let outsider = reject(&node, commit("g", None, &[("a", 0, 1)])).await?;
    ensure!(
        matches!(outsider, Rejection::IllegalGeneration { requested: -1, .. }),
        "{outsider:?}"
    );
    let view = node.local();
    ensure!(
        view.state
            .group_offsets(&GroupId("g".into()))
            .next()
            .is_none()
    );
    ensure!(view.state.group(&GroupId("other".into())).is_none());
    Ok(())
}

/// A commit its coordinator proposed applies only while that incarnation of that broker still
/// coordinates the group: not once the group moved (here: its coordinator was fenced) nor
/// after the coordinator re-registered, so a late commit cannot take offsets committed through
/// the next coordinator back.
pub async fn commit_from_a_former_coordinator_is_rejected(
    h: &dyn BackendHarness,
) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1, 2]).await?;
    create_topic_ok(&node, "a", &[&[1]]).await?;
    accept(&node, start_generation("g", 0, &["m1"])).await?;
    let coordinated = |coordinator: i32, incarnation: u64, offset: i64| {
        MetadataCommand::CoordinatedCommitOffsets {
            coordinator: BrokerId(coordinator),
            incarnation,
            group: GroupId("g".into()),
            generation: Some(GenerationCheck {
                generation: 1,
                member: MemberId("m1".into()),
            }),
            offsets: vec![OffsetCommit {
                topic: "a".into(),
                partition: 0,
                offset,
                leader_epoch: None,
                metadata: String::new(),
            }],
            commit_timestamp_ms: 1_700_000_000_000,
        }
    };
    let first = node
        .local()
        .state
        .group_coordinator("g")
        .map(|b| (b.id, b.incarnation));
    let Some((first, incarnation)) = first else {
        bail!("no coordinator for g among live brokers 1 and 2");
    };
    let other = if first == BrokerId(1) { 2 } else { 1 };
    accept(&node, coordinated(first.0, incarnation, 10)).await?;
    let stranger = reject(&node, coordinated(other, 1, 11)).await?;
    ensure!(
        matches!(stranger, Rejection::NotCoordinator { proposer, .. } if proposer.0 == other),
        "{stranger:?}"
    );
    // The coordinator is fenced: its groups move to the other broker.
    accept(
        &node,
        MetadataCommand::FenceBroker {
            id: first,
            incarnation,
        },
    )
    .await?;
    let late = reject(&node, coordinated(first.0, incarnation, 5)).await?;
    ensure!(matches!(late, Rejection::NotCoordinator { .. }), "{late:?}");
    let moved = node
        .local()
        .state
        .group_coordinator("g")
        .map(|b| (b.id, b.incarnation));
    let Some((next, next_incarnation)) = moved else {
        bail!("no coordinator for g after the fence");
    };
    ensure!(next.0 == other, "g stayed on fenced broker {first}");
    accept(&node, coordinated(next.0, next_incarnation, 20)).await?;
    let committed = |node: &std::sync::Arc<dyn switchyard_backend_api::MetadataBackend>| {
        node.local()
            .state
            .committed_offset(&GroupId("g".into()), "a", 0)
            .map(|c| c.offset)
    };
    ensure!(committed(&node) == Some(20), "{:?}", committed(&node));
    Ok(())
}

/// A commit from outside any generation works while the group has no members, creating the
/// group if needed.
pub async fn commit_outside_generation_creates_group(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topic_ok(&node, "a", &[&[1]]).await?;
    accept(&node, commit("standalone", None, &[("a", 0, 42)])).await?;
    let view = node.local();
    let group = GroupId("standalone".into());
    ensure!(
        view.state
            .group(&group)
            .is_some_and(|g| g.members.is_empty() && g.generation == 0)
    );
    ensure!(
        view.state
            .committed_offset(&group, "a", 0)
            .is_some_and(|o| o.offset == 42)
    );
    accept(&node, commit("standalone", None, &[("a", 0, 43)])).await?;
    ensure!(
        node.local()
            .state
            .committed_offset(&group, "a", 0)
            .is_some_and(|o| o.offset == 43)
    );
    Ok(())
}

/// A commit naming one unknown partition stores none of its partitions.
pub async fn commit_offsets_batch_is_atomic(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topic_ok(&node, "a", &[&[1], &[1]]).await?;
    let rejection = reject(
        &node,
        commit("g", None, &[("a", 0, 1), ("a", 1, 2), ("a", 2, 3)]),
    )
    .await?;
    ensure!(
        rejection
            == Rejection::UnknownTopicOrPartition {
                topic: "a".into(),
                partition: 2
            },
        "{rejection:?}"
    );
    let view = node.local();
    ensure!(
        view.state
            .group_offsets(&GroupId("g".into()))
            .next()
            .is_none()
    );
    ensure!(view.state.groups().next().is_none());
    let mut many = commit("g", None, &[("a", 0, 1), ("a", 1, 2)]);
    if let MetadataCommand::CommitOffsets { offsets, .. } = &mut many {
        offsets[1].metadata = "x".repeat(1000);
    }
    accept(&node, many).await?;
    ensure!(
        node.local()
            .state
            .group_offsets(&GroupId("g".into()))
            .count()
            == 2
    );
    Ok(())
}

/// `DeleteOffsets` removes exactly the listed partitions' offsets of an existing group.
pub async fn delete_offsets_removes_only_the_listed_partitions(
    h: &dyn BackendHarness,
) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topic_ok(&node, "t", &[&[1], &[1]]).await?;
    accept(&node, commit("g", None, &[("t", 0, 3), ("t", 1, 4)])).await?;
    let delete = |group: &str, partitions: &[u32]| MetadataCommand::DeleteOffsets {
        group: GroupId(group.to_owned()),
        partitions: partitions.iter().map(|p| ("t".to_owned(), *p)).collect(),
    };
    let outcome = accept(&node, delete("g", &[0, 9])).await?;
    ensure!(
        outcome == Outcome::OffsetsDeleted { deleted: 1 },
        "{outcome:?}"
    );
    let view = node.local();
    let left: Vec<u32> = view
        .state
        .group_offsets(&GroupId("g".into()))
        .map(|(k, _)| k.partition)
        .collect();
    ensure!(left == [1], "{left:?}");
    let missing = reject(&node, delete("nope", &[0])).await?;
    ensure!(
        missing
            == Rejection::GroupNotFound {
                group: GroupId("nope".into())
            },
        "{missing:?}"
    );
    Ok(())
}
