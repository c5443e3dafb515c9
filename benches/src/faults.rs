//! The timed fault loops: failover (crash the metadata leader of three nodes, time until a
//! survivor's write commits) and recovery (reopen a node with a long log, time until it has
//! applied it again).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::Serialized;
use switchyard_backend_api::{Failover, LogIndex, MembershipChange, MetadataBackend, Registration};
use switchyard_compat_tests::{DEADLINE, RegistryHarness, TestCluster};

use crate::{propose_sequential, seed};

/// Nodes of the cluster whose leader the failover benchmark crashes.
pub const FAILOVER_NODES: usize = 3;

/// How long one write attempt on a survivor may take before it is retried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// Longest pause between two write attempts on a survivor; a change of its cluster view ends
/// the pause at once.
const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// `snapshot_every` that no run reaches: recovery replays the whole log.
pub const NO_SNAPSHOT: u64 = 1_000_000_000;

/// `iters` failovers, each on a fresh cluster of [`FAILOVER_NODES`] nodes of `registration`'s
/// backend; the time they took, summed.
///
/// Timed, for a backend with automatic failover: from the moment the leader is dropped without
/// shutdown (the harness's crash) to the first acknowledged write proposed on a survivor,
/// which forwards it to whichever node leads. For a backend with manual failover: from the
/// crash, promotion of a survivor and its first acknowledged write. Building, seeding and
/// stopping the clusters is not timed.
pub async fn failover(registration: &'static Registration, iters: u64) -> anyhow::Result<Duration> {
    let harness = RegistryHarness::new(registration.name);
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        total += failover_once(&harness, registration.guarantees.failover).await?;
    }
    Ok(total)
}

async fn failover_once(harness: &RegistryHarness, mode: Failover) -> anyhow::Result<Duration> {
    let mut cluster = TestCluster::start(harness, FAILOVER_NODES).await?;
    let leader = cluster.leader().await?;
    seed(&leader).await?;
    let index = usize::try_from(leader.cluster().borrow().node.0)?
        .checked_sub(1)
        .context("node ids start at 1")?;
    // The cluster must hold the last handle, so that its crash stops the node.
    drop(leader);
    let survivor_index = (index + 1) % FAILOVER_NODES;
    let survivor = Arc::clone(cluster.node(survivor_index)?);

    let start = Instant::now();
    cluster.crash(index).await?;
    if mode == Failover::Manual {
        let id = survivor.cluster().borrow().node;
        tokio::time::timeout(
            DEADLINE,
            survivor.change_membership(MembershipChange::Promote { id }),
        )
        .await
        .context("promotion did not return")?
        .context("promoting a survivor")?;
    }
    write_until_accepted(&survivor, start).await?;
    let elapsed = start.elapsed();

    drop(survivor);
    for i in (0..FAILOVER_NODES).filter(|&i| i != index) {
        let node = cluster.node(i)?;
        tokio::time::timeout(DEADLINE, node.shutdown())
            .await
            .context("shutdown did not return")??;
    }
    Ok(elapsed)
}

/// Propose on `node` until a write is acknowledged, retrying what is retriable, each attempt
/// under [`ATTEMPT_TIMEOUT`]; fail after [`DEADLINE`] from `start`.
async fn write_until_accepted(
    node: &Arc<dyn MetadataBackend>,
    start: Instant,
) -> anyhow::Result<()> {
    let mut views = node.cluster();
    let mut offset = 0;
    loop {
        if start.elapsed() > DEADLINE {
            bail!("no write was acknowledged within {DEADLINE:?} of the crash");
        }
        offset += 1;
        match tokio::time::timeout(ATTEMPT_TIMEOUT, node.propose(crate::commit(0, offset))).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) if e.is_retriable() => {
                let _ = tokio::time::timeout(RETRY_PAUSE, views.changed()).await;
            }
            Ok(Err(e)) => bail!("write on a survivor failed: {e}"),
            Err(_) => {}
        }
    }
}

/// A harness for `registration`'s backend whose nodes snapshot every `snapshot_every` applied
/// entries (the key every durable backend names so; [`NO_SNAPSHOT`] for none).
pub fn snapshot_harness(
    registration: &'static Registration,
    snapshot_every: u64,
) -> RegistryHarness {
    let config = Figment::new().merge(Serialized::default("snapshot_every", snapshot_every));
    RegistryHarness::new(registration.name).with_config(config)
}

/// One node with a long log, reopened again and again by [`Recovery::reopen`].
#[derive(Debug)]
pub struct Recovery<'h> {
    cluster: TestCluster<'h>,
    last: LogIndex,
}

impl<'h> Recovery<'h> {
    /// Open one node through `harness`, seed it, propose `entries` commits one after another
    /// (one log entry each), and shut it down.
    pub async fn fill(harness: &'h RegistryHarness, entries: u64) -> anyhow::Result<Self> {
        let mut cluster = TestCluster::single(harness).await?;
        let node = cluster.leader().await?;
        seed(&node).await?;
        propose_sequential(Arc::clone(&node), 0, entries).await?;
        let last = node.local().applied_index;
        drop(node);
        stop(&mut cluster).await?;
        Ok(Self { cluster, last })
    }

    /// Reopen the node `iters` times; the time from each open until the node is ready and has
    /// applied everything acknowledged before, summed. The node is shut down gracefully after
    /// each (not timed).
    pub async fn reopen(&mut self, iters: u64) -> anyhow::Result<Duration> {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let start = Instant::now();
            let node = self.cluster.open(0).await?;
            node.wait_ready(DEADLINE)
                .await
                .context("ready after reopening")?;
            node.wait_applied(self.last, DEADLINE)
                .await
                .context("applied after reopening")?;
            total += start.elapsed();
            drop(node);
            stop(&mut self.cluster).await?;
        }
        Ok(total)
    }

    /// Shut the node down if it runs; the directory is deleted when `self` drops.
    pub async fn close(mut self) -> anyhow::Result<()> {
        if self.cluster.node(0).is_ok() {
            stop(&mut self.cluster).await?;
        }
        Ok(())
    }
}

/// Shut node 0 down gracefully and take it out of the cluster.
async fn stop(cluster: &mut TestCluster<'_>) -> anyhow::Result<()> {
    let node = Arc::clone(cluster.node(0)?);
    tokio::time::timeout(DEADLINE, node.shutdown())
        .await
        .context("shutdown did not return")??;
    drop(node);
    cluster.crash(0).await
}
