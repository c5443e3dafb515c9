//! The timed fault loops: failover (kill -9 the metadata leader's process among three broker
//! processes, time until a survivor acknowledges a write) and recovery (reopen a node with a
//! long log, time until it has applied it again).

use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::Serialized;
use switchyard::backends::promote;
use switchyard::kafka::client::PeerClient;
use switchyard::serve::Node;
use switchyard::status::cluster_status;
use switchyard_backend_api::{Failover, LogIndex, NodeId, Registration};
use switchyard_compat_tests::{DEADLINE, RegistryHarness, TestCluster};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::kafka::{BrokerSpec, create_topic_on, create_topics};
use crate::{propose_sequential, runtime, seed};

/// Nodes of the cluster whose leader the failover benchmark kills.
pub const FAILOVER_NODES: usize = 3;

/// A new write attempt on a survivor starts this often, on its own connection, until one is
/// acknowledged; earlier ones keep waiting for their answers meanwhile. The resolution of the
/// failover time: an attempt sent during the election may wait for an answer that never comes
/// (its proposal went to the dead leader), and a later one is not held up behind it.
const ATTEMPT_EVERY: Duration = Duration::from_millis(20);

/// `snapshot_every` that no run reaches: recovery replays the whole log.
pub const NO_SNAPSHOT: u64 = 1_000_000_000;

/// Set in the environment of a broker process the failover benchmark starts: the JSON of its
/// [`BrokerSpec`]. See [`serve_if_asked`].
const SERVE_ENV: &str = "SWITCHYARD_BENCH_SERVE";

/// If this process was started by the failover benchmark as one of its brokers ([`SERVE_ENV`]
/// is set), serve as `switchyard serve` would — the same [`Node`] — and never return: print
/// `ready <kafka address>` once registered, then run until killed. Otherwise return at once.
/// The benchmark binary calls this first thing, so the broker processes are copies of it.
pub fn serve_if_asked() {
    let Some(spec) = std::env::var_os(SERVE_ENV) else {
        return;
    };
    let served = runtime().and_then(|rt| {
        rt.block_on(async {
            let spec: BrokerSpec = serde_json::from_str(&spec.to_string_lossy())
                .with_context(|| format!("{SERVE_ENV} is not a broker spec"))?;
            let node = Node::start(&spec.config()?)
                .await
                .context("starting the broker")?;
            let mut registered = node.broker().registration();
            tokio::time::timeout(DEADLINE, registered.wait_for(|r| *r))
                .await
                .context("the broker did not register")?
                .context("the broker stopped")?;
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "ready {}", node.kafka_addr())?;
            stdout.flush()?;
            drop(stdout);
            std::future::pending::<anyhow::Result<()>>().await
        })
    });
    if let Err(e) = served {
        eprintln!("benchmark broker process failed: {e:#}");
    }
    std::process::exit(1);
}

/// One broker process of a failover cluster.
#[derive(Debug)]
struct BrokerProcess {
    spec: BrokerSpec,
    child: Child,
    kafka: String,
}

/// `iters` failovers, each on a fresh cluster of [`FAILOVER_NODES`] broker processes (copies
/// of this binary, see [`serve_if_asked`]) on `registration`'s backend; the time they took,
/// summed.
///
/// Timed, for a backend with automatic failover: from the SIGKILL of the metadata leader's
/// process to the first CreateTopics request a surviving broker acknowledges, of a topic
/// assigned to that broker (it hands the proposal to whichever node leads by then). For a
/// backend with manual failover: from the kill, the promotion of a survivor (as `switchyard
/// cluster promote` does it) and its first acknowledged CreateTopics. Starting, seeding and
/// stopping the processes is not timed.
pub async fn failover(registration: &'static Registration, iters: u64) -> anyhow::Result<Duration> {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        total += failover_once(registration.name, registration.guarantees.failover).await?;
    }
    Ok(total)
}

async fn failover_once(backend: &str, mode: Failover) -> anyhow::Result<Duration> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("switchyard-failover-{backend}-"))
        .tempdir()
        .context("creating the brokers' temp dir")?;
    let mut brokers = BrokerSpec::cluster(backend, dir.path(), FAILOVER_NODES)?
        .into_iter()
        .map(spawn)
        .collect::<anyhow::Result<Vec<_>>>()?;
    for broker in &mut brokers {
        broker.kafka = tokio::time::timeout(DEADLINE, ready_line(&mut broker.child))
            .await
            .with_context(|| format!("broker {} did not report ready", broker.spec.node_id))??;
    }
    let addrs: Vec<String> = brokers.iter().map(|b| b.kafka.clone()).collect();
    let mut client = PeerClient::new(addrs[0].clone(), "switchyard-benches".into(), DEADLINE);
    create_topics(&mut client, vec!["failover-seed".into()], 1).await?;
    let target = switchyard::users::Target {
        bootstrap: addrs.clone(),
        credentials: None,
        tls: None,
        timeout: DEADLINE,
    };
    let status = cluster_status(&target)
        .await
        .context("asking the brokers for the cluster status")?;
    let (leader, _) = status
        .leader()
        .context("no broker names a metadata leader")?;
    let index = brokers
        .iter()
        .position(|b| b.spec.node_id == i64::from(leader))
        .with_context(|| format!("the leader {leader} is none of the brokers"))?;
    let survivor = &brokers[(index + 1) % FAILOVER_NODES];
    let survivor_config = survivor.spec.config()?;
    let survivor_id = NodeId(u64::try_from(survivor.spec.node_id)?);
    let survivor_kafka = survivor.kafka.clone();
    let survivor_broker = i32::try_from(survivor.spec.node_id)?;

    let start = Instant::now();
    brokers[index]
        .child
        .start_kill()
        .context("killing the leader's process")?;
    if mode == Failover::Manual {
        promote(&survivor_config, survivor_id)
            .await
            .context("promoting a survivor")?;
    }
    let elapsed = first_acknowledged_write(&survivor_kafka, survivor_broker, start).await?;

    for broker in &mut brokers {
        broker.child.start_kill().ok();
        broker
            .child
            .wait()
            .await
            .context("reaping a broker process")?;
    }
    Ok(elapsed)
}

/// Attempt a CreateTopics on the broker at `kafka` every [`ATTEMPT_EVERY`], each on its own
/// connection, until one is acknowledged; the time from `start` to that acknowledgement. Each
/// topic's one replica is assigned to `broker` (that survivor): a topic the broker had to
/// place would also wait for the survivors' heartbeats to reach the new metadata leader (it
/// places replicas only on brokers it has heard from), which is placement, not failover.
async fn first_acknowledged_write(
    kafka: &str,
    broker: i32,
    start: Instant,
) -> anyhow::Result<Duration> {
    let mut attempts = tokio::task::JoinSet::new();
    let mut next = tokio::time::interval(ATTEMPT_EVERY);
    let deadline = tokio::time::Instant::from_std(start + DEADLINE);
    let mut attempt = 0_u64;
    let mut last_error = None;
    let acknowledged = loop {
        tokio::select! {
            _ = next.tick() => {
                attempt += 1;
                let kafka = kafka.to_owned();
                attempts.spawn(async move {
                    let mut client = PeerClient::new(kafka, "switchyard-benches".into(), DEADLINE);
                    create_topic_on(&mut client, format!("failover-{attempt}"), broker).await
                });
            }
            Some(done) = attempts.join_next() => match done.context("a write attempt failed")? {
                Ok(()) => break start.elapsed(),
                Err(e) => last_error = Some(e),
            },
            () = tokio::time::sleep_until(deadline) => bail!(
                "no write was acknowledged within {DEADLINE:?} of the kill (last error: {})",
                last_error.map_or("none".to_owned(), |e| format!("{e:#}"))
            ),
        }
    };
    attempts.abort_all();
    Ok(acknowledged)
}

/// Start a broker process serving `spec`.
fn spawn(spec: BrokerSpec) -> anyhow::Result<BrokerProcess> {
    let exe = std::env::current_exe().context("locating this benchmark binary")?;
    let child = Command::new(exe)
        .env(SERVE_ENV, serde_json::to_string(&spec)?)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting a broker process")?;
    Ok(BrokerProcess {
        spec,
        child,
        kafka: String::new(),
    })
}

/// The Kafka address from a broker process's `ready <address>` line.
async fn ready_line(child: &mut Child) -> anyhow::Result<String> {
    let stdout = child.stdout.take().context("the process has no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(addr) = line.strip_prefix("ready ") {
            return Ok(addr.to_owned());
        }
    }
    bail!("the broker process exited before it was ready")
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
