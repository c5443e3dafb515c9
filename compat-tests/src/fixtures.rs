//! Small builders the cases share: propose with a deadline, expect a rejection, build common
//! commands.

use std::sync::Arc;

use anyhow::{Context, bail};
use switchyard_backend_api::{
    BrokerId, GenerationCheck, GroupId, GroupMember, MemberId, MetadataBackend, MetadataCommand,
    MetadataError, NewTopic, OffsetCommit, Outcome, Proposed, Rejection, StateView, TopicId,
};

use crate::harness::DEADLINE;

/// Propose and wait for the acknowledgement, failing the case after [`DEADLINE`].
pub async fn propose(
    node: &Arc<dyn MetadataBackend>,
    command: MetadataCommand,
) -> anyhow::Result<Result<Proposed, MetadataError>> {
    tokio::time::timeout(DEADLINE, node.propose(command))
        .await
        .context("propose did not return")
}

/// Propose a command that must be accepted; return its outcome.
pub async fn accept(
    node: &Arc<dyn MetadataBackend>,
    command: MetadataCommand,
) -> anyhow::Result<Outcome> {
    let described = format!("{command:?}");
    match propose(node, command).await? {
        Ok(proposed) => Ok(proposed.outcome),
        Err(e) => bail!("{described} failed: {e}"),
    }
}

/// Propose a command that must be rejected by apply; return the rejection.
pub async fn reject(
    node: &Arc<dyn MetadataBackend>,
    command: MetadataCommand,
) -> anyhow::Result<Rejection> {
    let described = format!("{command:?}");
    match propose(node, command).await? {
        Err(MetadataError::Rejected(r)) => Ok(r),
        Err(e) => bail!("{described}: expected a rejection, got {e}"),
        Ok(p) => bail!("{described}: expected a rejection, got {:?}", p.outcome),
    }
}

/// A deterministic topic id derived from a name, so cases stay reproducible.
pub fn topic_id(name: &str) -> TopicId {
    let mut bytes = [0u8; 16];
    for (i, b) in name.bytes().enumerate() {
        bytes[i % 16] = bytes[i % 16].wrapping_mul(31).wrapping_add(b);
    }
    bytes[15] = bytes[15].wrapping_add(name.len() as u8);
    TopicId(uuid::Uuid::from_bytes(bytes))
}

/// `RegisterBroker` for broker `id` on a loopback address.
pub fn register(id: i32) -> MetadataCommand {
    MetadataCommand::RegisterBroker {
        id: BrokerId(id),
        host: format!("broker-{id}.test"),
        port: 9092,
        rack: None,
        listeners: Vec::new(),
    }
}

/// Register brokers `ids` and return once all are acknowledged.
pub async fn register_all(node: &Arc<dyn MetadataBackend>, ids: &[i32]) -> anyhow::Result<()> {
    for id in ids {
        accept(node, register(*id)).await?;
    }
    Ok(())
}

/// A new topic whose partitions are the given replica lists.
pub fn new_topic(name: &str, assignments: &[&[i32]]) -> NewTopic {
    NewTopic {
        name: name.to_owned(),
        id: topic_id(name),
        assignments: assignments
            .iter()
            .map(|r| r.iter().map(|b| BrokerId(*b)).collect())
            .collect(),
        configs: Vec::new(),
    }
}

/// `CreateTopics` with one topic.
pub fn create_topic(name: &str, assignments: &[&[i32]]) -> MetadataCommand {
    MetadataCommand::CreateTopics {
        topics: vec![new_topic(name, assignments)],
    }
}

/// Create one topic that must succeed; return its id.
pub async fn create_topic_ok(
    node: &Arc<dyn MetadataBackend>,
    name: &str,
    assignments: &[&[i32]],
) -> anyhow::Result<TopicId> {
    match accept(node, create_topic(name, assignments)).await? {
        Outcome::TopicsCreated { results } => match results.as_slice() {
            [Ok(id)] => Ok(*id),
            other => bail!("creating {name}: {other:?}"),
        },
        other => bail!("creating {name}: unexpected outcome {other:?}"),
    }
}

/// Create one topic that must be refused; return the per-topic rejection.
pub async fn create_topic_err(
    node: &Arc<dyn MetadataBackend>,
    topic: NewTopic,
) -> anyhow::Result<Rejection> {
    let name = topic.name.clone();
    match accept(
        node,
        MetadataCommand::CreateTopics {
            topics: vec![topic],
        },
    )
    .await?
    {
        Outcome::TopicsCreated { results } => match results.as_slice() {
            [Err(r)] => Ok(r.clone()),
            other => bail!("creating {name}: expected a rejection, got {other:?}"),
        },
        other => bail!("creating {name}: unexpected outcome {other:?}"),
    }
}

/// A group member with the given id and subscription bytes.
pub fn member(id: &str) -> GroupMember {
    GroupMember {
        id: MemberId(id.to_owned()),
        group_instance_id: None,
        client_id: format!("client-{id}"),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 45_000,
        rebalance_timeout_ms: 300_000,
        metadata: id.as_bytes().to_vec(),
        assignment: Vec::new(),
    }
}

/// `StartGeneration` of a `consumer` group led by the first member, with the `range` protocol.
pub fn start_generation(group: &str, expected: i32, members: &[&str]) -> MetadataCommand {
    MetadataCommand::StartGeneration {
        group: GroupId(group.to_owned()),
        expected_generation: expected,
        protocol_type: "consumer".into(),
        protocol: (!members.is_empty()).then(|| "range".to_owned()),
        leader: members.first().map(|m| MemberId((*m).to_owned())),
        members: members.iter().map(|m| member(m)).collect(),
    }
}

/// `CommitOffsets` of `(topic, partition, offset)` triples.
pub fn commit(
    group: &str,
    generation: Option<(i32, &str)>,
    offsets: &[(&str, u32, i64)],
) -> MetadataCommand {
    MetadataCommand::CommitOffsets {
        group: GroupId(group.to_owned()),
        generation: generation.map(|(generation, member)| GenerationCheck {
            generation,
            member: MemberId(member.to_owned()),
        }),
        offsets: offsets
            .iter()
            .map(|(topic, partition, offset)| OffsetCommit {
                topic: (*topic).to_owned(),
                partition: *partition,
                offset: *offset,
                leader_epoch: Some(0),
                metadata: format!("m{offset}"),
            })
            .collect(),
        commit_timestamp_ms: 1_700_000_000_000,
    }
}

/// Fail with `what` unless `cond` holds.
pub fn check(cond: bool, what: impl FnOnce() -> String) -> anyhow::Result<()> {
    if !cond {
        bail!(what());
    }
    Ok(())
}

/// Wait until `node` has applied `target`'s index, and check it holds the same state.
pub async fn converges(node: &Arc<dyn MetadataBackend>, target: &StateView) -> anyhow::Result<()> {
    let view = node
        .wait_applied(target.applied_index, DEADLINE)
        .await
        .with_context(|| format!("waiting for index {}", target.applied_index))?;
    if view.state == target.state {
        return Ok(());
    }
    let names = |v: &StateView| -> std::collections::BTreeSet<String> {
        v.state.topics().map(|t| t.name.clone()).collect()
    };
    let (mine, theirs) = (names(&view), names(target));
    bail!(
        "node {} at index {} differs from the target at index {} (topics only on the node: \
         {:?}; only on the target: {:?})",
        node.cluster().borrow().node,
        view.applied_index,
        target.applied_index,
        mine.difference(&theirs).collect::<Vec<_>>(),
        theirs.difference(&mine).collect::<Vec<_>>()
    )
}

/// Position of `node` in a `TestCluster` (node ids are 1-based).
pub fn position(node: &Arc<dyn MetadataBackend>) -> anyhow::Result<usize> {
    let id = node.cluster().borrow().node.0;
    usize::try_from(id.saturating_sub(1)).context("node id")
}
