//! Consumer group generations, assignments and deletion.

use anyhow::{bail, ensure};
use switchyard_backend_api::{GroupId, MemberId, MetadataCommand, Outcome, Rejection};

use crate::fixtures::{
    accept, commit, create_topic_ok, member, register_all, reject, start_generation,
};
use crate::harness::{BackendHarness, TestCluster};

fn group(id: &str) -> GroupId {
    GroupId(id.into())
}

/// A generation starts by compare-and-set on the previous one, so a retried proposal cannot
/// bump it twice; an empty member list moves the group to Empty with a new generation.
pub async fn start_generation_is_compare_and_set(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    let first = accept(&node, start_generation("g", 0, &["m1", "m2"])).await?;
    ensure!(
        first == Outcome::GenerationStarted { generation: 1 },
        "{first:?}"
    );
    let retried = reject(&node, start_generation("g", 0, &["m1", "m2"])).await?;
    ensure!(
        retried
            == Rejection::IllegalGeneration {
                current: 1,
                requested: 0
            },
        "{retried:?}"
    );
    let view = node.local();
    let Some(g) = view.state.group(&group("g")) else {
        bail!("group missing");
    };
    ensure!(g.generation == 1 && g.protocol_type == "consumer");
    ensure!(g.protocol.as_deref() == Some("range"));
    ensure!(g.leader == Some(MemberId("m1".into())));
    ensure!(g.members.len() == 2 && !g.assignment_complete);
    ensure!(
        g.members.get(&MemberId("m2".into())) == Some(&member("m2")),
        "member stored as proposed"
    );

    let empty = accept(&node, start_generation("g", 1, &[])).await?;
    ensure!(
        empty == Outcome::GenerationStarted { generation: 2 },
        "{empty:?}"
    );
    let view = node.local();
    let Some(g) = view.state.group(&group("g")) else {
        bail!("group missing");
    };
    ensure!(g.members.is_empty() && g.leader.is_none() && g.protocol.is_none());
    Ok(())
}

/// Member list, leader and protocol must fit together, and the protocol type cannot change
/// under existing members.
pub async fn start_generation_validates_members(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    let mut no_leader = start_generation("g", 0, &["m1"]);
    if let MetadataCommand::StartGeneration { leader, .. } = &mut no_leader {
        *leader = Some(MemberId("stranger".into()));
    }
    let mut no_protocol = start_generation("g", 0, &["m1"]);
    if let MetadataCommand::StartGeneration { protocol, .. } = &mut no_protocol {
        *protocol = None;
    }
    let twice = start_generation("g", 0, &["m1", "m1"]);
    for bad in [no_leader, no_protocol, twice] {
        let rejection = reject(&node, bad).await?;
        ensure!(
            matches!(rejection, Rejection::InvalidGroupMembers { .. }),
            "{rejection:?}"
        );
    }
    accept(&node, start_generation("g", 0, &["m1"])).await?;
    let mut other_type = start_generation("g", 1, &["m1"]);
    if let MetadataCommand::StartGeneration { protocol_type, .. } = &mut other_type {
        *protocol_type = "connect".into();
    }
    let rejection = reject(&node, other_type).await?;
    ensure!(
        matches!(rejection, Rejection::InconsistentGroupProtocol { .. }),
        "{rejection:?}"
    );
    ensure!(
        node.local()
            .state
            .group(&group("g"))
            .is_some_and(|g| g.generation == 1)
    );
    Ok(())
}

/// The generation's leader stores the assignment; other members, other generations, unknown
/// members and unknown groups are refused.
pub async fn set_group_assignment(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    accept(&node, start_generation("g", 0, &["m1", "m2", "m3"])).await?;
    let assign =
        |generation, leader: &str, to: &[(&str, &[u8])]| MetadataCommand::SetGroupAssignment {
            group: group("g"),
            generation,
            leader: MemberId(leader.into()),
            assignments: to
                .iter()
                .map(|(m, a)| (MemberId((*m).into()), a.to_vec()))
                .collect(),
        };
    let rejection = reject(&node, assign(1, "m2", &[("m1", b"a")])).await?;
    ensure!(
        rejection
            == Rejection::NotGroupLeader {
                member: MemberId("m2".into())
            },
        "{rejection:?}"
    );
    let rejection = reject(&node, assign(0, "m1", &[("m1", b"a")])).await?;
    ensure!(
        matches!(rejection, Rejection::IllegalGeneration { .. }),
        "{rejection:?}"
    );
    let rejection = reject(&node, assign(1, "m1", &[("m9", b"a")])).await?;
    ensure!(
        rejection
            == Rejection::UnknownMemberId {
                member: MemberId("m9".into())
            },
        "{rejection:?}"
    );
    let rejection = reject(
        &node,
        MetadataCommand::SetGroupAssignment {
            group: group("nope"),
            generation: 1,
            leader: MemberId("m1".into()),
            assignments: vec![],
        },
    )
    .await?;
    ensure!(
        matches!(rejection, Rejection::GroupNotFound { .. }),
        "{rejection:?}"
    );
    ensure!(
        !node
            .local()
            .state
            .group(&group("g"))
            .is_some_and(|g| g.assignment_complete)
    );

    accept(&node, assign(1, "m1", &[("m1", b"p0"), ("m2", b"p1")])).await?;
    let view = node.local();
    let Some(g) = view.state.group(&group("g")) else {
        bail!("group missing");
    };
    ensure!(g.assignment_complete);
    let assignments: Vec<_> = g
        .members
        .values()
        .map(|m| (m.id.as_str(), m.assignment.as_slice()))
        .collect();
    ensure!(
        assignments == vec![("m1", &b"p0"[..]), ("m2", b"p1"), ("m3", b"")],
        "{assignments:?}"
    );
    Ok(())
}

/// Only empty groups can be deleted, and their offsets go with them; the coordinator's
/// `DeleteGroupAt` also needs the generation it saw to be the current one.
pub async fn delete_groups(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topic_ok(&node, "t", &[&[1]]).await?;
    accept(&node, commit("idle", None, &[("t", 0, 3)])).await?;
    accept(&node, start_generation("busy", 0, &["m1"])).await?;
    let outcome = accept(
        &node,
        MetadataCommand::DeleteGroups {
            groups: vec![group("idle"), group("busy"), group("nope")],
        },
    )
    .await?;
    ensure!(
        outcome
            == Outcome::GroupsDeleted {
                results: vec![
                    Ok(()),
                    Err(Rejection::NonEmptyGroup {
                        group: group("busy")
                    }),
                    Err(Rejection::GroupNotFound {
                        group: group("nope")
                    }),
                ]
            },
        "{outcome:?}"
    );
    let view = node.local();
    ensure!(view.state.group(&group("idle")).is_none());
    ensure!(view.state.group_offsets(&group("idle")).next().is_none());
    ensure!(view.state.group(&group("busy")).is_some());

    // The coordinator's form: one group, at the generation it saw.
    let at = |generation| MetadataCommand::DeleteGroupAt {
        group: group("busy"),
        generation,
    };
    let busy = reject(&node, at(1)).await?;
    ensure!(
        busy == Rejection::NonEmptyGroup {
            group: group("busy")
        },
        "{busy:?}"
    );
    accept(&node, start_generation("busy", 1, &[])).await?;
    let stale = reject(&node, at(1)).await?;
    ensure!(
        stale
            == Rejection::IllegalGeneration {
                current: 2,
                requested: 1
            },
        "{stale:?}"
    );
    accept(&node, at(2)).await?;
    ensure!(node.local().state.group(&group("busy")).is_none());
    let gone = reject(&node, at(2)).await?;
    ensure!(
        gone == Rejection::GroupNotFound {
            group: group("busy")
        },
        "{gone:?}"
    );
    Ok(())
}

/// A static member rejoining under a new member id (KIP-345) is renamed within its
/// generation, keeping its assignment and the leadership; commits of the old id are refused
/// from then on. A wrong generation, a member without that instance id, or a new id already
/// in the group are refused.
pub async fn replace_static_member(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topic_ok(&node, "t", &[&[1]]).await?;
    let mut generation = start_generation("g", 0, &["m1", "m2"]);
    if let MetadataCommand::StartGeneration { members, .. } = &mut generation {
        members[0].group_instance_id = Some("instance-1".into());
    }
    accept(&node, generation).await?;
    accept(
        &node,
        MetadataCommand::SetGroupAssignment {
            group: group("g"),
            generation: 1,
            leader: MemberId("m1".into()),
            assignments: vec![(MemberId("m1".into()), b"p0".to_vec())],
        },
    )
    .await?;
    let replace =
        |generation, instance: &str, old: &str, new: &str| MetadataCommand::ReplaceStaticMember {
            group: group("g"),
            generation,
            group_instance_id: instance.into(),
            old: MemberId(old.into()),
            new: MemberId(new.into()),
        };
    let stale = reject(&node, replace(0, "instance-1", "m1", "m1b")).await?;
    ensure!(
        stale
            == Rejection::IllegalGeneration {
                current: 1,
                requested: 0
            },
        "{stale:?}"
    );
    for (instance, old, new) in [("instance-2", "m1", "m1b"), ("instance-1", "m2", "m1b")] {
        let refused = reject(&node, replace(1, instance, old, new)).await?;
        ensure!(
            matches!(refused, Rejection::UnknownMemberId { .. }),
            "{refused:?}"
        );
    }
    let taken = reject(&node, replace(1, "instance-1", "m1", "m2")).await?;
    ensure!(
        matches!(taken, Rejection::UnknownMemberId { .. }),
        "{taken:?}"
    );
    let outcome = accept(&node, replace(1, "instance-1", "m1", "m1b")).await?;
    ensure!(outcome == Outcome::StaticMemberReplaced, "{outcome:?}");
    let view = node.local();
    let Some(g) = view.state.group(&group("g")) else {
        bail!("group g is gone");
    };
    ensure!(g.generation == 1, "{g:?}");
    ensure!(g.leader == Some(MemberId("m1b".into())), "{g:?}");
    ensure!(!g.members.contains_key(&MemberId("m1".into())), "{g:?}");
    let Some(renamed) = g.members.get(&MemberId("m1b".into())) else {
        bail!("no m1b in {g:?}");
    };
    ensure!(
        renamed.assignment == b"p0"
            && renamed.metadata == b"m1"
            && renamed.client_id == "client-m1"
            && renamed.group_instance_id.as_deref() == Some("instance-1"),
        "{renamed:?}"
    );
    let old = reject(&node, commit("g", Some((1, "m1")), &[("t", 0, 5)])).await?;
    ensure!(matches!(old, Rejection::UnknownMemberId { .. }), "{old:?}");
    accept(&node, commit("g", Some((1, "m1b")), &[("t", 0, 5)])).await?;
    Ok(())
}
