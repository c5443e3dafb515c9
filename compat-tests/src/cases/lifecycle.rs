//! Properties of the backend itself: readiness, read-your-writes, the change stream,
//! concurrency, restarts, crashes, power cuts, shutdown and declared guarantees.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use switchyard_backend_api::{
    Change, GroupId, MAX_COMMAND_BYTES, MembershipChange, MetadataCommand, MetadataError, NodeId,
    OffsetCommit, Outcome, find_backend,
};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::fixtures::{
    accept, commit, converges, create_topic, create_topic_ok, propose, register_all,
};
use crate::harness::{BackendHarness, DEADLINE, TestCluster};

/// Opening returns at once and readiness is observable. For multi-node backends a lone node of
/// a three-node cluster opens without its peers, reports not ready, and refuses writes with a
/// retriable error instead of hanging.
pub async fn open_returns_without_quorum(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.node(0)?;
    let view = node.wait_ready(DEADLINE).await?;
    ensure!(view.is_ready() && view.leader.is_some(), "{view:?}");

    if h.max_nodes() >= 3 {
        let mut lonely = TestCluster::layout(h, 3)?;
        let node = lonely.open(0).await?;
        let view = node.cluster().borrow().clone();
        ensure!(
            !view.is_ready(),
            "a lone node of three claims readiness: {view:?}"
        );
        let result = tokio::time::timeout(DEADLINE, node.propose(create_topic("t", &[&[1]])))
            .await
            .context("propose on a node without quorum hung")?;
        match result {
            Err(e) if e.is_retriable() => {}
            other => bail!("propose without quorum: expected a retriable error, got {other:?}"),
        }
    }
    Ok(())
}

/// Once `propose` returns, the proposing node's local view includes the write.
pub async fn acknowledged_write_is_visible_locally(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    for i in 0..20 {
        let name = format!("visible-{i}");
        let proposed = match propose(&node, create_topic(&name, &[&[1]])).await? {
            Ok(p) => p,
            Err(e) => bail!("{e}"),
        };
        let view = node.local();
        ensure!(
            view.applied_index >= proposed.index,
            "{} < {}",
            view.applied_index,
            proposed.index
        );
        ensure!(
            view.state.topic(&name).is_some(),
            "{name} not visible after ack"
        );
        let waited = node.wait_applied(proposed.index, Duration::ZERO).await;
        ensure!(
            waited.is_ok(),
            "wait_applied on an applied index: {waited:?}"
        );
    }
    Ok(())
}

/// Writes [`cluster_view_notifies_only_on_change`] makes while it counts.
const WRITES_WATCHED: usize = 20;

/// Writes that change no role, leader, membership or readiness wake no one watching the
/// cluster view: watchers (the broker's heartbeat and placement tasks among them) hear of
/// changes only.
pub async fn cluster_view_notifies_only_on_change(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    let mut views = node.cluster();
    let before = views.borrow_and_update().clone();
    ensure!(before.is_ready(), "the leader is not ready: {before:?}");
    // Count the wake-ups of a watcher while the writes run. A view may really change meanwhile
    // (a follower's readiness flapping under load), a few times at most; a backend that
    // notifies on every write wakes it at least once per write.
    let wakeups = Arc::new(AtomicUsize::new(0));
    let watcher = tokio::spawn({
        let wakeups = Arc::clone(&wakeups);
        async move {
            while views.changed().await.is_ok() {
                wakeups.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    for i in 0..WRITES_WATCHED {
        create_topic_ok(&node, &format!("quiet-{i}"), &[&[1]]).await?;
    }
    watcher.abort();
    let wakeups = wakeups.load(Ordering::SeqCst);
    ensure!(
        wakeups < WRITES_WATCHED / 2,
        "{WRITES_WATCHED} writes woke the cluster view's watchers {wakeups} times"
    );
    Ok(())
}

/// The change stream delivers every applied entry once, in log order, with the verdict its
/// proposer saw.
pub async fn change_stream_delivers_every_change_in_order(
    h: &dyn BackendHarness,
) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    let mut stream = node.subscribe();
    let start = node.local().applied_index;

    let mut tasks = Vec::new();
    for task in 0..5 {
        let node = Arc::clone(&node);
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0..10 {
                // Every third command is a duplicate and gets rejected per topic.
                let name = format!("s-{task}-{}", i - i % 3);
                let result = node.propose(create_topic(&name, &[&[1]])).await;
                seen.push(result);
            }
            seen
        }));
    }
    let mut acked = BTreeMap::new();
    for task in tasks {
        for result in task.await.context("proposer task")? {
            let proposed = result.context("propose")?;
            acked.insert(proposed.index, proposed.outcome);
        }
    }
    ensure!(acked.len() == 50, "{} distinct indices", acked.len());

    let mut expected_index = start;
    for _ in 0..50 {
        let change = tokio::time::timeout(DEADLINE, stream.recv())
            .await
            .context("change stream stalled")??;
        ensure!(
            change.index > expected_index,
            "index {} after {expected_index}",
            change.index
        );
        expected_index = change.index;
        let Change::Applied { result, .. } = &change.change else {
            bail!("unexpected change {change:?}");
        };
        let Some(outcome) = acked.get(&change.index) else {
            bail!("index {} was never acknowledged", change.index);
        };
        ensure!(
            result.as_ref() == Ok(outcome),
            "index {}: {result:?} vs {outcome:?}",
            change.index
        );
    }
    ensure!(expected_index == *acked.keys().last().unwrap_or(&0));
    Ok(())
}

/// Many concurrent proposers each get their own log position and every write lands once.
pub async fn concurrent_proposals_apply_exactly_once(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topic_ok(&node, "c", &[&[1]]).await?;
    let mut tasks = Vec::new();
    for task in 0..64 {
        let node = Arc::clone(&node);
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for i in 0..8 {
                let group = format!("g-{task}");
                results.push(accept(&node, commit(&group, None, &[("c", 0, i)])).await);
                let topic = format!("c-{task}-{i}");
                results.push(accept(&node, create_topic(&topic, &[&[1]])).await);
            }
            results
        }));
    }
    for task in tasks {
        for result in task.await.context("proposer task")? {
            result?;
        }
    }
    let view = node.local();
    ensure!(
        view.state.topic_count() == 1 + 64 * 8,
        "{}",
        view.state.topic_count()
    );
    ensure!(view.state.groups().count() == 64);
    for group in view.state.groups() {
        let offset = view.state.committed_offset(&group.id, "c", 0);
        ensure!(
            offset.is_some_and(|o| o.offset == 7),
            "{}: {offset:?}",
            group.id
        );
    }
    Ok(())
}

/// Waiting for an index that is never applied times out instead of hanging.
pub async fn wait_applied_times_out(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    let target = node.local().applied_index + 1_000;
    let result = tokio::time::timeout(
        DEADLINE,
        node.wait_applied(target, Duration::from_millis(50)),
    )
    .await
    .context("wait_applied ignored its timeout")?;
    ensure!(
        matches!(result, Err(MetadataError::Timeout { .. })),
        "{result:?}"
    );
    Ok(())
}

/// A backend that declares linearizable reads serves them and they include every acknowledged
/// write; one that does not returns `Unsupported`.
pub async fn linearizable_read_matches_declaration(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    let proposed = match propose(&node, create_topic("lin", &[&[1]])).await? {
        Ok(p) => p,
        Err(e) => bail!("{e}"),
    };
    let read = tokio::time::timeout(DEADLINE, node.read_linearizable())
        .await
        .context("linearizable read hung")?;
    if node.guarantees().linearizable_reads() {
        let view = read.context("declared linearizable reads")?;
        ensure!(view.applied_index >= proposed.index);
        ensure!(view.state.topic("lin").is_some());
    } else {
        ensure!(
            matches!(read, Err(MetadataError::Unsupported { .. })),
            "{read:?}"
        );
    }
    Ok(())
}

/// The opened backend reports its registry name and the guarantees its configuration declares;
/// the registration and the harness agree on whether it runs several nodes.
pub async fn guarantees_match_declaration(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.node(0)?;
    let registration = find_backend(h.backend())?;
    ensure!(node.name() == h.backend());
    ensure!(
        node.guarantees() == h.declared(),
        "{:?} != {:?}",
        node.guarantees(),
        h.declared()
    );
    ensure!(
        registration.guarantees.multi_node == (h.max_nodes() > 1),
        "harness and declaration disagree on multi-node"
    );
    Ok(())
}

async fn populate(node: &Arc<dyn switchyard_backend_api::MetadataBackend>) -> anyhow::Result<()> {
    accept(
        node,
        MetadataCommand::InitCluster {
            cluster_id: switchyard_backend_api::ClusterId("restart".into()),
        },
    )
    .await?;
    register_all(node, &[1, 2]).await?;
    create_topic_ok(node, "durable", &[&[1, 2], &[2, 1]]).await?;
    accept(
        node,
        commit("g", None, &[("durable", 0, 9), ("durable", 1, 4)]),
    )
    .await?;
    accept(node, MetadataCommand::AllocateProducerIds { count: 3 }).await?;
    Ok(())
}

async fn check_after_restart(
    cluster: &TestCluster<'_>,
    before: &switchyard_backend_api::StateView,
) -> anyhow::Result<()> {
    let node = cluster.leader().await?;
    if node.guarantees().survives_restart() {
        // The leader may be another node, or this one, still applying what was committed
        // before the crash: wait for it (a lost write never applies, and the wait times out).
        let after = node.wait_applied(before.applied_index, DEADLINE).await?;
        ensure!(after.state == before.state, "state differs after restart");
    } else {
        ensure!(
            node.local().state.topic_count() == 0,
            "declared non-durable but kept state"
        );
    }
    register_all(&node, &[3]).await?;
    Ok(())
}

/// After a graceful restart every acknowledged write is there (for durable backends), and the
/// node takes writes again.
pub async fn restart_keeps_acknowledged_writes(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let mut cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    populate(&node).await?;
    let before = node.local();
    drop(node);
    cluster.restart(0).await?;
    check_after_restart(&cluster, &before).await
}

/// After a crash (no graceful shutdown) every acknowledged write is there (for durable
/// backends), and the node takes writes again.
pub async fn crash_keeps_acknowledged_writes(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let mut cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    populate(&node).await?;
    let before = node.local();
    drop(node);
    cluster.crash_restart(0).await?;
    check_after_restart(&cluster, &before).await
}

/// Concurrent writers in [`power_cut_keeps_acknowledged_writes`].
const POWER_CUT_WRITERS: usize = 32;
/// Writes acknowledged before each power cut.
const ACKED_BEFORE_CUT: usize = 64;
/// Most power cuts one run of [`power_cut_keeps_acknowledged_writes`] makes: it goes on past
/// one of each kept-byte count until a cut has landed mid-commit and one has torn a record
/// (where a cut lands depends on timing).
const MAX_POWER_CUTS: usize = 42;

/// A power cut ([`MetadataBackend::power_cut`](switchyard_backend_api::MetadataBackend::power_cut))
/// in the middle of a stream of writes: of the bytes not yet synced none, part of a record or
/// several records reach the disk (each count of kept bytes at least once, then more cuts until
/// one landed mid-commit and one tore a record). Reopened, the node holds every write it acknowledged and
/// takes writes again; the cut node itself refuses further use. A backend without a power-cut
/// model says `Unsupported` and keeps running.
pub async fn power_cut_keeps_acknowledged_writes(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let mut cluster = TestCluster::single(h).await?;
    register_all(&cluster.leader().await?, &[1]).await?;
    let keeps = [0, 1, 9, 40, 150, 1_000, 100_000];
    let (mut cut_mid_commit, mut torn) = (0, 0);
    for round in 0..MAX_POWER_CUTS {
        if round >= keeps.len() && cut_mid_commit > 0 && torn > 0 {
            break;
        }
        let keep = keeps[round % keeps.len()];
        let node = cluster.leader().await?;
        // Writers that keep proposing until the node stops answering.
        let (count, mut counted) = watch::channel(0_usize);
        let count = Arc::new(count);
        let mut writers = JoinSet::new();
        for writer in 0..POWER_CUT_WRITERS {
            let (node, count) = (Arc::clone(&node), Arc::clone(&count));
            writers.spawn(async move {
                let mut acked = Vec::new();
                for i in 0.. {
                    let name = format!("r{round}-w{writer}-{i}");
                    let proposed =
                        tokio::time::timeout(DEADLINE, node.propose(create_topic(&name, &[&[1]])))
                            .await;
                    if !matches!(proposed, Ok(Ok(_))) {
                        break;
                    }
                    acked.push(name);
                    count.send_modify(|n| *n += 1);
                    // A backend that answers without waiting would never let the cut run.
                    tokio::task::yield_now().await;
                }
                acked
            });
        }
        tokio::time::timeout(DEADLINE, counted.wait_for(|n| *n >= ACKED_BEFORE_CUT))
            .await
            .context("no writes acknowledged before the cut")??;
        let cut = match node.power_cut(keep) {
            Err(MetadataError::Unsupported { .. }) => {
                writers.shutdown().await;
                ensure!(
                    node.cluster().borrow().is_ready(),
                    "an unsupported power cut stopped the node"
                );
                return accept(&node, create_topic("after-unsupported-cut", &[&[1]]))
                    .await
                    .map(drop);
            }
            cut => cut.with_context(|| format!("round {round}: cutting the power"))?,
        };
        let mut acked = Vec::new();
        while let Some(joined) = writers.join_next().await {
            acked.extend(joined?);
        }
        ensure!(
            node.propose(create_topic("late", &[&[1]])).await.is_err(),
            "a node without power took a write"
        );
        ensure!(node.power_cut(0).is_err(), "the power was cut twice");
        drop(node);
        if cut.unsynced_bytes > 0 {
            cut_mid_commit += 1;
        }
        if cut.kept_bytes > 0 && cut.kept_bytes < cut.unsynced_bytes {
            torn += 1;
        }
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
            "round {round} ({cut:?}, {} acknowledged): acknowledged, then lost: {lost:?}",
            acked.len()
        );
        accept(&reopened, create_topic(&format!("after-{round}"), &[&[1]]))
            .await
            .with_context(|| format!("round {round}: writing after the power came back"))?;
    }
    ensure!(
        cut_mid_commit > 0 && torn > 0,
        "no power cut landed mid-commit ({cut_mid_commit}) or tore a record ({torn}); the case \
         did not exercise what it is for"
    );
    Ok(())
}

/// After shutdown, writes fail with `ShutDown`, readiness drops, and shutdown is idempotent.
pub async fn shutdown_refuses_writes(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    tokio::time::timeout(DEADLINE, node.shutdown())
        .await
        .context("shutdown hung")??;
    let result = propose(&node, create_topic("late", &[&[1]])).await?;
    ensure!(matches!(result, Err(MetadataError::ShutDown)), "{result:?}");
    ensure!(!node.cluster().borrow().is_ready());
    tokio::time::timeout(DEADLINE, node.shutdown())
        .await
        .context("second shutdown hung")??;
    Ok(())
}

/// Removing a node that is not a member fails and leaves membership as it was.
pub async fn removing_unknown_member_fails(h: &dyn BackendHarness) -> anyhow::Result<()> {
    let cluster = TestCluster::single(h).await?;
    let node = cluster.leader().await?;
    let before = node.cluster().borrow().members.clone();
    let result = tokio::time::timeout(
        DEADLINE,
        node.change_membership(MembershipChange::RemoveNode { id: NodeId(99) }),
    )
    .await
    .context("membership change hung")?;
    ensure!(result.is_err(), "removing node 99 succeeded: {result:?}");
    ensure!(node.cluster().borrow().members == before);
    let outcome = accept(&node, MetadataCommand::AllocateProducerIds { count: 1 }).await?;
    ensure!(matches!(outcome, Outcome::ProducerIdsAllocated { .. }));
    Ok(())
}

/// A proposal only the leader may make is written by the leader alone: on every other node
/// `propose_as_leader` fails (`NotLeader`, or retriable while no leader is known) and the
/// command reaches no log, where `propose` would have forwarded it; on the leader it applies
/// and every node gets it.
pub async fn a_leader_only_proposal_is_never_forwarded(
    h: &dyn BackendHarness,
) -> anyhow::Result<()> {
    let size = if h.max_nodes() >= 3 { 3 } else { 1 };
    let cluster = TestCluster::start(h, size).await?;
    let leader = cluster.leader().await?;
    register_all(&leader, &[1]).await?;
    for index in 0..size {
        let node = cluster.node(index)?;
        if Arc::ptr_eq(node, &leader) {
            continue;
        }
        let name = format!("from-{index}");
        let result = tokio::time::timeout(
            DEADLINE,
            node.propose_as_leader(create_topic(&name, &[&[1]])),
        )
        .await
        .with_context(|| format!("propose_as_leader on node {index} hung"))?;
        match result {
            Err(e) if e.is_retriable() => {}
            other => bail!("propose_as_leader on follower {index}: {other:?}"),
        }
    }
    let proposed = match leader
        .propose_as_leader(create_topic("from-leader", &[&[1]]))
        .await
    {
        Ok(proposed) => proposed,
        Err(e) => bail!("propose_as_leader on the leader: {e}"),
    };
    for index in 0..size {
        let view = cluster
            .node(index)?
            .wait_applied(proposed.index, DEADLINE)
            .await?;
        ensure!(
            view.state.topic("from-leader").is_some(),
            "node {index} lacks the leader's write"
        );
        let forwarded: Vec<&str> = view
            .state
            .topics()
            .map(|t| t.name.as_str())
            .filter(|name| name.starts_with("from-") && *name != "from-leader")
            .collect();
        ensure!(
            forwarded.is_empty(),
            "node {index} applied what followers were asked to write: {forwarded:?}"
        );
    }
    Ok(())
}

/// A command whose encoding passes [`MAX_COMMAND_BYTES`] — an offset commit of 4,600 entries
/// with 4,000 bytes of metadata each, 18 MB — is refused with `CommandTooLarge` before anything
/// is written, on every backend alike; one just under the limit is accepted; writes after both
/// commit and reach every node of a cluster (a record too large to replicate used to wedge the
/// `wal` backend for good).
pub async fn oversized_command_is_refused_and_writes_go_on(
    h: &dyn BackendHarness,
) -> anyhow::Result<()> {
    let size = if h.max_nodes() >= 3 { 3 } else { 1 };
    let cluster = TestCluster::start(h, size).await?;
    let node = cluster.leader().await?;
    register_all(&node, &[1]).await?;
    create_topic_ok(&node, "a", &[&[1]]).await?;
    let offsets = |count: usize, metadata: usize| MetadataCommand::CommitOffsets {
        group: GroupId("g".into()),
        generation: None,
        offsets: (0..count)
            .map(|i| OffsetCommit {
                topic: "a".into(),
                partition: 0,
                offset: i64::try_from(i).unwrap_or(0),
                leader_epoch: None,
                metadata: "x".repeat(metadata),
            })
            .collect(),
        commit_timestamp_ms: 1_700_000_000_000,
    };
    let before = node.local().applied_index;
    for index in 0..size {
        match cluster.node(index)?.propose(offsets(4_600, 4_000)).await {
            Err(MetadataError::CommandTooLarge { size, max }) => ensure!(
                size > max && max == MAX_COMMAND_BYTES as u64,
                "size {size}, max {max}"
            ),
            other => bail!("node {index}: an 18 MB command answered {other:?}"),
        }
    }
    ensure!(
        node.local().applied_index == before,
        "a refused command moved the log"
    );
    // Just under the limit: 200 entries of 4,000 bytes (about 800 KB).
    accept(&node, offsets(200, 4_000)).await?;
    let last = accept(&node, commit("g", None, &[("a", 0, 7)])).await?;
    ensure!(last == Outcome::OffsetsCommitted { count: 1 }, "{last:?}");
    let target = node.local();
    for index in 0..size {
        converges(cluster.node(index)?, &target).await?;
    }
    Ok(())
}
