//! Seeded fault runs: concurrent clients issue metadata operations against a cluster while a
//! nemesis partitions, delays, crashes and cuts the power of nodes; every operation's invocation and response
//! (or timeout) goes into a history, which the checkers judge against what the backend
//! declares.
//!
//! A run is a function of its seed: the clients' choices and the nemesis' schedule come from
//! [`Rng`]s seeded from it (timing still varies, so a seed replays the schedule, not the
//! exact interleaving). A failing run names its seed; `SWITCHYARD_CONFORMANCE_SEED=N` re-runs
//! only that seed ([`seeds`]).
//!
//! Checks (each [`Check`]):
//! - `linearizable`: per key (a topic's existence, a group's committed offset, a broker's
//!   incarnation and fence, a group's generation) the history —
//!   writes, linearizable reads where the backend offers them, and a final read of every key
//!   from the leader after the cluster healed — has a linearization ([`crate::linearizable`]);
//! - `no-lost-ack`: every topic whose creation was acknowledged, and which nobody deleted,
//!   exists at the end (where the backend declares durability);
//! - `converged`: after healing, every node holds the same state as the leader;
//! - `one-leader-per-epoch`: no two nodes reported themselves the leader ready to take writes
//!   in the same epoch;
//! - `one-writer-per-epoch`: from the acknowledgements themselves (each names the epoch and
//!   the leader that wrote it, and its log position), no epoch had two writers, and every
//!   write of a later epoch sits after every write of an earlier one in the log;
//! - `failover`: with the leader of the healed cluster crashed, an `Automatic` backend takes
//!   writes again on its own, a `Manual` one does not but does once a survivor is promoted;
//! - `loss-window`: writes every node applied survive the loss of the leader; writes the
//!   leader acknowledged while isolated, then lost with it, are lost only as the declared loss
//!   window allows (`Nothing`: none; `UnreplicatedTail`: a tail of the log, never a write
//!   followed by a kept one), and the lost leader converges once reopened.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use switchyard_backend_api::{
    ClusterCredentials, ClusterSecret, Durability, Failover, GroupId, MetadataBackend,
    MetadataCommand, MetadataError, ReadConsistency, Rejection, Role,
};
use tokio::sync::{RwLock, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fixtures::{commit, converges, create_topic, register_all};
use crate::harness::{BackendHarness, DEADLINE, NodeSpec};
use crate::linearizable::{self, Model, Operation};
use crate::net::{Link, Network};

/// The environment variable that replays one seed.
pub const SEED_ENV: &str = "SWITCHYARD_CONFORMANCE_SEED";

/// How long one client operation may take before its outcome counts as unknown.
const OP_DEADLINE: Duration = Duration::from_secs(3);
/// The topic whose partition 0 the offset commits name.
const OFFSETS_TOPIC: &str = "offsets";
/// Topics only ever created (the lost-ack check), topics created and deleted, groups.
const DURABLE_KEYS: u64 = 4;
const CHURN_KEYS: u64 = 3;
const GROUPS: u64 = 3;
/// Brokers the clients register and fence (ids from [`FIRST_CLIENT_BROKER`]; broker 1, which
/// hosts the topics, is never touched), and groups whose generations they advance.
const CLIENT_BROKERS: u64 = 2;
/// See [`CLIENT_BROKERS`].
const FIRST_CLIENT_BROKER: i32 = 10;
/// See [`CLIENT_BROKERS`].
const GENERATION_GROUPS: u64 = 2;

/// The seeds to run: `SWITCHYARD_CONFORMANCE_SEED` if set, else `count` seeds from `base`.
pub fn seeds(base: u64, count: u64) -> anyhow::Result<Vec<u64>> {
    match std::env::var(SEED_ENV) {
        Ok(seed) => {
            Ok(vec![seed.trim().parse().with_context(|| {
                format!("{SEED_ENV}={seed:?} is not a number")
            })?])
        }
        Err(_) => Ok((base..base + count).collect()),
    }
}

/// SplitMix64: a small, seedable generator (the run must not depend on a global RNG).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }
}

/// The faults a run may inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// Isolate a node from the others, then heal.
    pub partitions: bool,
    /// Delay one direction of one link, then heal.
    pub delays: bool,
    /// Make one direction of one link drop chunks (closing the connections that lose one),
    /// then heal.
    pub drops: bool,
    /// Crash a node (no graceful shutdown) and open it again from its data.
    pub crashes: bool,
    /// Cut a node's power ([`MetadataBackend::power_cut`]: part of its unsynced bytes reach
    /// the disk, the rest are lost) and open it again; a backend without a power-cut model
    /// is crashed instead, and the fault counts as a crash.
    pub power_cuts: bool,
}

impl Faults {
    /// Every kind.
    pub const ALL: Self = Self {
        partitions: true,
        delays: true,
        drops: true,
        crashes: true,
        power_cuts: true,
    };
}

/// What one run does.
#[derive(Debug, Clone, Copy)]
pub struct RunConfig {
    /// The seed.
    pub seed: u64,
    /// Cluster size.
    pub nodes: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Operations each client issues.
    pub ops_per_client: usize,
    /// Faults to inject.
    pub faults: Faults,
}

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It held.
    Pass,
    /// It did not; why.
    Fail(String),
    /// The backend does not declare it; not checked.
    NotDeclared,
}

/// A named check and its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Its name (`linearizable`, `no-lost-ack`, `converged`, `one-leader-per-epoch`,
    /// `one-writer-per-epoch`, `failover`, `loss-window`).
    pub name: &'static str,
    /// Its verdict.
    pub verdict: Verdict,
}

/// What a run did and found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The backend.
    pub backend: &'static str,
    /// The seed.
    pub seed: u64,
    /// Operations issued, by outcome: acknowledged, refused by apply, unknown.
    pub ok: usize,
    /// See `ok`.
    pub rejected: usize,
    /// See `ok`.
    pub unknown: usize,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// The checks.
    pub checks: Vec<Check>,
    /// Acknowledged writes lost within the declared loss window (the `loss-window` check).
    pub lost_in_window: usize,
    /// Epochs in which a node led, ready for writes: the first election, each one a fault
    /// caused, and any a too-short election timeout caused.
    pub leader_epochs: usize,
}

impl Report {
    /// All operations issued.
    pub fn operations(&self) -> usize {
        self.ok + self.rejected + self.unknown
    }

    /// The checks that failed.
    pub fn failures(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| matches!(c.verdict, Verdict::Fail(_)))
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} seed {} ({SEED_ENV}={}): {} operations ({} ok, {} rejected, {} unknown), faults {:?}, {} leader epochs",
            self.backend,
            self.seed,
            self.seed,
            self.operations(),
            self.ok,
            self.rejected,
            self.unknown,
            self.faults,
            self.leader_epochs
        )?;
        for check in &self.checks {
            match &check.verdict {
                Verdict::Pass => write!(f, "; {} pass", check.name)?,
                Verdict::NotDeclared => write!(f, "; {} not declared", check.name)?,
                Verdict::Fail(why) => write!(f, "; {} FAILED: {why}", check.name)?,
            }
        }
        Ok(())
    }
}

/// What a client did.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Op {
    Create,
    Delete,
    Commit(i64),
    ReadTopic,
    ReadOffset,
    /// Register the broker (a new incarnation, unfenced).
    Register,
    /// Fence this incarnation of the broker.
    Fence(u64),
    ReadBroker,
    /// Start the group's next generation, expecting this one to be current.
    StartGeneration(i32),
    ReadGeneration,
}

/// Where an acknowledged write landed, as its acknowledgement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WriteRecord {
    epoch: u64,
    leader: u64,
    index: switchyard_backend_api::LogIndex,
}

/// What it got back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ret {
    Ok,
    Exists,
    Missing,
    Offset(Option<i64>),
    Refused(String),
    /// The incarnation a registration got.
    Registered(u64),
    /// A broker's incarnation (0: never registered) and whether it is fenced.
    Broker(u64, bool),
    /// A group's generation (0: none yet).
    Generation(i32),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    Topic(String),
    Group(String),
    Broker(i32),
    Generations(String),
}

/// The sequential model of one key: whether a topic exists, a group's committed offset, a
/// broker's incarnation and fence, or a group's generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyModel {
    Topic(bool),
    Group(Option<i64>),
    Broker { incarnation: u64, fenced: bool },
    Generation(i32),
}

impl Model for KeyModel {
    type Op = Op;
    type Ret = Ret;

    fn step(&self, op: &Op, ret: Option<&Ret>) -> Option<Self> {
        use KeyModel::{Group, Topic};
        match (self, op, ret) {
            (Topic(false), Op::Create, None | Some(Ret::Ok)) => Some(Topic(true)),
            (Topic(true), Op::Create, None | Some(Ret::Exists)) => Some(Topic(true)),
            (Topic(true), Op::Delete, None | Some(Ret::Ok)) => Some(Topic(false)),
            (Topic(false), Op::Delete, None | Some(Ret::Missing)) => Some(Topic(false)),
            (Topic(true), Op::ReadTopic, None | Some(Ret::Exists)) => Some(Topic(true)),
            (Topic(false), Op::ReadTopic, None | Some(Ret::Missing)) => Some(Topic(false)),
            (Group(_), Op::Commit(v), None | Some(Ret::Ok)) => Some(Group(Some(*v))),
            (Group(now), Op::ReadOffset, None) => Some(Group(*now)),
            (Group(now), Op::ReadOffset, Some(Ret::Offset(read))) if read == now => {
                Some(Group(*now))
            }
            (KeyModel::Broker { incarnation, .. }, Op::Register, None) => Some(KeyModel::Broker {
                incarnation: incarnation + 1,
                fenced: false,
            }),
            (KeyModel::Broker { incarnation, .. }, Op::Register, Some(Ret::Registered(got)))
                if *got == incarnation + 1 =>
            {
                Some(KeyModel::Broker {
                    incarnation: *got,
                    fenced: false,
                })
            }
            (KeyModel::Broker { incarnation, .. }, Op::Fence(which), ret) => {
                let current = *incarnation > 0 && incarnation == which;
                match ret {
                    None | Some(Ret::Ok) if current => Some(KeyModel::Broker {
                        incarnation: *incarnation,
                        fenced: true,
                    }),
                    None | Some(Ret::Refused(_)) if !current => Some(self.clone()),
                    _ => None,
                }
            }
            (KeyModel::Broker { .. }, Op::ReadBroker, None) => Some(self.clone()),
            (
                KeyModel::Broker {
                    incarnation,
                    fenced,
                },
                Op::ReadBroker,
                Some(Ret::Broker(i, f)),
            ) if i == incarnation && f == fenced => Some(self.clone()),
            (KeyModel::Generation(now), Op::StartGeneration(expected), ret) => match ret {
                None | Some(Ret::Ok) if now == expected => Some(KeyModel::Generation(now + 1)),
                None | Some(Ret::Refused(_)) if now != expected => Some(self.clone()),
                _ => None,
            },
            (KeyModel::Generation(_), Op::ReadGeneration, None) => Some(self.clone()),
            (KeyModel::Generation(now), Op::ReadGeneration, Some(Ret::Generation(read)))
                if read == now =>
            {
                Some(self.clone())
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Event {
    key: Key,
    op: Op,
    client: usize,
    invoke: u64,
    /// `None`: unknown outcome.
    complete: Option<(u64, Ret)>,
}

type Slot = Arc<RwLock<Option<Arc<dyn MetadataBackend>>>>;

/// Epoch → the nodes that claimed leadership in it.
type Claims = Arc<Mutex<BTreeMap<u64, BTreeSet<u64>>>>;

/// Record every (epoch, node) in which `node` reports itself the leader ready to take writes,
/// until its view closes.
async fn observe(mut views: watch::Receiver<switchyard_backend_api::ClusterView>, claims: Claims) {
    loop {
        {
            let view = views.borrow_and_update();
            if view.is_ready() && view.role == Role::Leader && view.leader == Some(view.node) {
                claims
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(view.epoch)
                    .or_default()
                    .insert(view.node.0);
            }
        }
        if views.changed().await.is_err() {
            return;
        }
    }
}

fn micros(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Run one seeded fault run of `harness`'s backend and judge it. Fails (with the report in
/// the message) only when the cluster cannot be set up or healed; failed checks are in the
/// report.
pub async fn run(harness: &dyn BackendHarness, config: RunConfig) -> anyhow::Result<Report> {
    let declared = harness.declared();
    let network = Network::start(config.nodes).await?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("switchyard-faults-{}-", harness.backend()))
        .tempdir()?;
    let credentials = ClusterCredentials::from(ClusterSecret::generate());
    let mut specs = Vec::new();
    for id in 1..=config.nodes {
        let data_dir = dir.path().join(format!("node-{id}"));
        std::fs::create_dir_all(&data_dir)?;
        specs.push(NodeSpec {
            identity: network.identity(id)?,
            data_dir,
            credentials: credentials.clone(),
        });
    }
    let claims: Claims = Arc::default();
    let mut observers = JoinSet::new();
    let mut slots: Vec<Slot> = Vec::new();
    for spec in &specs {
        let node = open(harness, spec).await?;
        observers.spawn(observe(node.cluster(), Arc::clone(&claims)));
        slots.push(Arc::new(RwLock::new(Some(node))));
    }
    let leader = wait_leader(&slots).await?;
    register_all(&leader, &[1]).await?;
    crate::fixtures::accept(&leader, create_topic(OFFSETS_TOPIC, &[&[1]])).await?;
    let start_index = leader.local().applied_index;
    for slot in &slots {
        if let Some(node) = slot.read().await.as_ref() {
            node.wait_applied(start_index, DEADLINE).await?;
        }
    }
    drop(leader);

    let linearizable_reads = declared.reads == ReadConsistency::Linearizable;
    let history: Arc<Mutex<Vec<Event>>> = Arc::default();
    let writes: Arc<Mutex<Vec<WriteRecord>>> = Arc::default();
    let start = Instant::now();
    let mut clients = JoinSet::new();
    for client in 0..config.clients {
        let slots = slots.clone();
        let history = Arc::clone(&history);
        let writes = Arc::clone(&writes);
        let mut rng = Rng::new(config.seed ^ (0x00c1_1e47 + client as u64).wrapping_mul(0x9e37));
        clients.spawn(async move {
            for i in 0..config.ops_per_client {
                // Paced, so that the run spans several faults.
                tokio::time::sleep(rng.millis(5, 60)).await;
                let (key, op) = choose(&mut rng, client, i, linearizable_reads);
                let slot = &slots[rng.below(slots.len() as u64) as usize];
                let guard = slot.read().await;
                let Some(node) = guard.as_ref() else {
                    continue;
                };
                let invoke = micros(start);
                let ret = perform(node, &key, &op, &writes).await;
                let complete = ret.map(|r| (micros(start), r));
                drop(guard);
                history
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Event {
                        key,
                        op,
                        client,
                        invoke,
                        complete,
                    });
            }
        });
    }
    let (stop, stopped) = watch::channel(false);
    let nemesis = {
        let slots = slots.clone();
        let claims = Arc::clone(&claims);
        let specs = specs.clone();
        let network = Arc::new(network);
        let net = Arc::clone(&network);
        let mut rng = Rng::new(config.seed ^ 0x006e_656d_6573_6973);
        let faults = config.faults;
        async move {
            let mut injected: BTreeMap<&'static str, usize> = BTreeMap::new();
            let mut observers = JoinSet::new();
            let kinds: Vec<&'static str> = [
                (faults.partitions, "partition"),
                (faults.delays, "delay"),
                (faults.drops, "drop"),
                (faults.crashes, "crash"),
                (faults.power_cuts, "power-cut"),
            ]
            .into_iter()
            .filter_map(|(on, kind)| on.then_some(kind))
            .collect();
            let result: anyhow::Result<()> = async {
                while !*stopped.borrow() && !kinds.is_empty() {
                    tokio::time::sleep(rng.millis(50, 300)).await;
                    let mut kind = kinds[rng.below(kinds.len() as u64) as usize];
                    let target = rng.below(slots.len() as u64);
                    match kind {
                        "partition" => {
                            net.isolate(target + 1);
                            tokio::time::sleep(rng.millis(300, 1_500)).await;
                            net.heal();
                        }
                        "delay" => {
                            let other = (target + 1 + rng.below(slots.len() as u64 - 1))
                                % slots.len() as u64;
                            net.set(target + 1, other + 1, Link::Delay(rng.millis(20, 120)));
                            tokio::time::sleep(rng.millis(300, 1_000)).await;
                            net.heal();
                        }
                        "drop" => {
                            let other = (target + 1 + rng.below(slots.len() as u64 - 1))
                                % slots.len() as u64;
                            let one_in = u32::try_from(rng.below(4) + 2).unwrap_or(2);
                            net.set(target + 1, other + 1, Link::Lossy { one_in });
                            tokio::time::sleep(rng.millis(300, 1_000)).await;
                            net.heal();
                        }
                        _ => {
                            let slot = &slots[target as usize];
                            let node = slot.write().await.take();
                            if let Some(node) = node {
                                let keep = rng.below(4096);
                                if kind == "crash" || node.power_cut(keep).is_err() {
                                    kind = "crash";
                                    harness.crash(node).await;
                                }
                            }
                            tokio::time::sleep(rng.millis(100, 800)).await;
                            let reopened = open(harness, &specs[target as usize])
                                .await
                                .with_context(|| format!("reopening node {}", target + 1))?;
                            observers.spawn(observe(reopened.cluster(), Arc::clone(&claims)));
                            *slot.write().await = Some(reopened);
                        }
                    }
                    *injected.entry(kind).or_default() += 1;
                }
                Ok(())
            }
            .await;
            (result, injected, observers, network)
        }
    };
    // The nemesis borrows the harness to crash and reopen nodes, so it runs in this task,
    // beside the clients.
    let clients_done = async {
        while let Some(joined) = clients.join_next().await {
            joined.context("a client task panicked")?;
        }
        stop.send_replace(true);
        anyhow::Ok(())
    };
    let (clients_result, (nemesis_result, faults, extra_observers, network)) =
        tokio::join!(clients_done, nemesis);
    clients_result?;
    nemesis_result?;
    network.heal();

    // Heal and settle: a leader, a barrier write through it, every node converged to it.
    let leader = wait_leader(&slots).await?;
    barrier(&leader, config.seed).await?;
    let target = leader.local();
    // Hold no node beyond its slot: a crash must drop the last handle.
    drop(leader);
    let mut converged = Verdict::Pass;
    for (i, slot) in slots.iter().enumerate() {
        let guard = slot.read().await;
        let Some(node) = guard.as_ref() else {
            bail!("node {} is not running after the run", i + 1);
        };
        if let Err(e) = converges(node, &target).await {
            converged = Verdict::Fail(format!("node {}: {e:#}", i + 1));
        }
    }

    let mut events = std::mem::take(&mut *history.lock().unwrap_or_else(PoisonError::into_inner));
    let (ok, rejected, unknown) = events
        .iter()
        .fold((0, 0, 0), |(o, r, u), e| match &e.complete {
            None => (o, r, u + 1),
            Some((_, Ret::Refused(_) | Ret::Exists | Ret::Missing)) if !is_read(&e.op) => {
                (o, r + 1, u)
            }
            Some(_) => (o + 1, r, u),
        });
    // Final reads of every key from the healed leader, after every operation returned.
    let end = micros(start);
    let state = &target.state;
    for key in keys() {
        let (op, ret) = read_of(state, &key);
        events.push(Event {
            key,
            op,
            client: usize::MAX,
            invoke: end,
            complete: Some((end + 1, ret)),
        });
    }

    let failover = check_failover(harness, &slots, &specs, declared.failover, config.seed).await?;
    let (loss_window, lost_in_window) =
        check_loss_window(harness, &slots, &specs, &network, declared, config.seed).await?;
    let checks = vec![
        Check {
            name: "linearizable",
            verdict: check_linearizable(&events),
        },
        Check {
            name: "no-lost-ack",
            verdict: if declared.durability == Durability::None {
                Verdict::NotDeclared
            } else {
                check_no_lost_ack(&events, state)
            },
        },
        Check {
            name: "converged",
            verdict: converged,
        },
        Check {
            name: "one-leader-per-epoch",
            verdict: check_one_leader(&claims),
        },
        Check {
            name: "one-writer-per-epoch",
            verdict: check_one_writer(&writes.lock().unwrap_or_else(PoisonError::into_inner)),
        },
        Check {
            name: "failover",
            verdict: failover,
        },
        Check {
            name: "loss-window",
            verdict: loss_window,
        },
    ];
    drop(extra_observers);
    observers.abort_all();
    let leader_epochs = claims.lock().unwrap_or_else(PoisonError::into_inner).len();
    for slot in &slots {
        let node = slot.write().await.take();
        if let Some(node) = node {
            let _ = tokio::time::timeout(DEADLINE, node.shutdown()).await;
        }
    }
    Ok(Report {
        backend: harness.backend(),
        seed: config.seed,
        ok,
        rejected,
        unknown,
        faults,
        checks,
        lost_in_window,
        leader_epochs,
    })
}

fn is_read(op: &Op) -> bool {
    matches!(
        op,
        Op::ReadTopic | Op::ReadOffset | Op::ReadBroker | Op::ReadGeneration
    )
}

fn keys() -> Vec<Key> {
    (0..DURABLE_KEYS)
        .map(|k| Key::Topic(format!("durable-{k}")))
        .chain((0..CHURN_KEYS).map(|k| Key::Topic(format!("churn-{k}"))))
        .chain((0..GROUPS).map(|g| Key::Group(format!("group-{g}"))))
        .chain((0..CLIENT_BROKERS).map(|b| Key::Broker(client_broker(b))))
        .chain((0..GENERATION_GROUPS).map(|g| Key::Generations(format!("gen-{g}"))))
        .collect()
}

/// The id of client broker `b`.
fn client_broker(b: u64) -> i32 {
    FIRST_CLIENT_BROKER + i32::try_from(b).unwrap_or(0)
}

/// A client's next operation. Commit values are unique per (client, index).
fn choose(rng: &mut Rng, client: usize, index: usize, reads: bool) -> (Key, Op) {
    const WRITES: u64 = 5;
    let kinds = if reads { WRITES + 4 } else { WRITES };
    match rng.below(kinds) {
        0 => (
            Key::Topic(format!("durable-{}", rng.below(DURABLE_KEYS))),
            Op::Create,
        ),
        1 => {
            let key = Key::Topic(format!("churn-{}", rng.below(CHURN_KEYS)));
            let op = if rng.below(2) == 0 {
                Op::Create
            } else {
                Op::Delete
            };
            (key, op)
        }
        2 => (
            Key::Group(format!("group-{}", rng.below(GROUPS))),
            Op::Commit(i64::try_from(client * 100_000 + index).unwrap_or(i64::MAX)),
        ),
        3 => {
            let key = Key::Broker(client_broker(rng.below(CLIENT_BROKERS)));
            let op = if rng.below(2) == 0 {
                Op::Register
            } else {
                Op::Fence(rng.below(3) + 1)
            };
            (key, op)
        }
        4 => (
            Key::Generations(format!("gen-{}", rng.below(GENERATION_GROUPS))),
            Op::StartGeneration(i32::try_from(rng.below(3)).unwrap_or(0)),
        ),
        5 => {
            let topics = DURABLE_KEYS + CHURN_KEYS;
            let k = rng.below(topics);
            let name = if k < DURABLE_KEYS {
                format!("durable-{k}")
            } else {
                format!("churn-{}", k - DURABLE_KEYS)
            };
            (Key::Topic(name), Op::ReadTopic)
        }
        6 => (
            Key::Group(format!("group-{}", rng.below(GROUPS))),
            Op::ReadOffset,
        ),
        7 => (
            Key::Broker(client_broker(rng.below(CLIENT_BROKERS))),
            Op::ReadBroker,
        ),
        _ => (
            Key::Generations(format!("gen-{}", rng.below(GENERATION_GROUPS))),
            Op::ReadGeneration,
        ),
    }
}

/// What `state` says of `key`, as a read returns it.
fn read_of(state: &switchyard_backend_api::MetadataState, key: &Key) -> (Op, Ret) {
    match key {
        Key::Topic(name) => (
            Op::ReadTopic,
            if state.topic(name).is_some() {
                Ret::Exists
            } else {
                Ret::Missing
            },
        ),
        Key::Group(group) => (
            Op::ReadOffset,
            Ret::Offset(
                state
                    .committed_offset(&GroupId(group.clone()), OFFSETS_TOPIC, 0)
                    .map(|c| c.offset),
            ),
        ),
        Key::Broker(id) => {
            let broker = state.broker(switchyard_backend_api::BrokerId(*id));
            (
                Op::ReadBroker,
                Ret::Broker(
                    broker.map_or(0, |b| b.incarnation),
                    broker.is_some_and(|b| b.fenced),
                ),
            )
        }
        Key::Generations(group) => (
            Op::ReadGeneration,
            Ret::Generation(
                state
                    .group(&GroupId(group.clone()))
                    .map_or(0, |g| g.generation),
            ),
        ),
    }
}

/// Perform `op` on `key` through `node`; `None` if its outcome is unknown. An acknowledged
/// write's record goes into `writes`.
async fn perform(
    node: &Arc<dyn MetadataBackend>,
    key: &Key,
    op: &Op,
    writes: &Mutex<Vec<WriteRecord>>,
) -> Option<Ret> {
    match (key, op) {
        (key, op) if is_read(op) => {
            let view = tokio::time::timeout(OP_DEADLINE, node.read_linearizable())
                .await
                .ok()?
                .ok()?;
            Some(read_of(&view.state, key).1)
        }
        (key, op) => {
            let command = match (key, op) {
                (Key::Topic(name), Op::Create) => create_topic(name, &[&[1]]),
                (Key::Topic(name), Op::Delete) => MetadataCommand::DeleteTopics {
                    names: vec![name.clone()],
                },
                (Key::Group(group), Op::Commit(v)) => {
                    commit(group, None, &[(OFFSETS_TOPIC, 0, *v)])
                }
                (Key::Broker(id), Op::Register) => crate::fixtures::register(*id),
                (Key::Broker(id), Op::Fence(incarnation)) => MetadataCommand::FenceBroker {
                    id: switchyard_backend_api::BrokerId(*id),
                    incarnation: *incarnation,
                },
                (Key::Generations(group), Op::StartGeneration(expected)) => {
                    crate::fixtures::start_generation(group, *expected, &["m"])
                }
                _ => return Some(Ret::Refused("not an operation of this key".into())),
            };
            let result = tokio::time::timeout(OP_DEADLINE, node.propose(command))
                .await
                .ok()?;
            if let Ok(proposed) = &result {
                writes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(WriteRecord {
                        epoch: proposed.epoch,
                        leader: proposed.leader.0,
                        index: proposed.index,
                    });
            }
            classify(result)
        }
    }
}

/// An outcome the history can use; `None` for every error after which the command may or
/// may not have applied (timeouts, lost connections, a leader change during forwarding).
fn classify(result: Result<switchyard_backend_api::Proposed, MetadataError>) -> Option<Ret> {
    use switchyard_backend_api::Outcome;
    match result {
        Ok(proposed) => match proposed.outcome {
            Outcome::TopicsCreated { results } | Outcome::TopicsDeleted { results } => {
                match results.first() {
                    Some(Ok(_)) => Some(Ret::Ok),
                    Some(Err(Rejection::TopicAlreadyExists { .. })) => Some(Ret::Exists),
                    Some(Err(Rejection::UnknownTopic { .. })) => Some(Ret::Missing),
                    other => Some(Ret::Refused(format!("{other:?}"))),
                }
            }
            Outcome::BrokerRegistered { incarnation } => Some(Ret::Registered(incarnation)),
            _ => Some(Ret::Ok),
        },
        Err(MetadataError::Rejected(r)) => Some(Ret::Refused(r.to_string())),
        Err(_) => None,
    }
}

fn check_linearizable(events: &[Event]) -> Verdict {
    let mut by_key: BTreeMap<&Key, Vec<Operation<Op, Ret>>> = BTreeMap::new();
    for e in events {
        by_key.entry(&e.key).or_default().push(Operation {
            client: e.client,
            invoke: e.invoke,
            complete: e.complete.clone(),
            op: e.op.clone(),
        });
    }
    for (key, history) in by_key {
        let init = match key {
            Key::Topic(_) => KeyModel::Topic(false),
            Key::Group(_) => KeyModel::Group(None),
            Key::Broker(_) => KeyModel::Broker {
                incarnation: 0,
                fenced: false,
            },
            Key::Generations(_) => KeyModel::Generation(0),
        };
        if let Err(verdict) = linearizable::check(&init, &history) {
            let shown: Vec<String> = history
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    format!(
                        "#{i} c{} {:?} @{} -> {:?}",
                        o.client, o.op, o.invoke, o.complete
                    )
                })
                .collect();
            return Verdict::Fail(format!("{key:?}: {verdict}; history: {}", shown.join(", ")));
        }
    }
    Verdict::Pass
}

fn check_no_lost_ack(events: &[Event], state: &switchyard_backend_api::MetadataState) -> Verdict {
    let acked: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.op == Op::Create && matches!(e.complete, Some((_, Ret::Ok))))
        .filter_map(|e| match &e.key {
            Key::Topic(name) if name.starts_with("durable-") => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let lost: Vec<&str> = acked
        .into_iter()
        .filter(|name| state.topic(name).is_none())
        .collect();
    if lost.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(format!(
            "acknowledged and never deleted, but gone: {lost:?}"
        ))
    }
}

/// No epoch has acknowledgements from two writers, and epochs follow each other in the log:
/// every acknowledged write of an epoch sits after every acknowledged write of an earlier
/// one (acknowledged writes are committed, so never lost or reordered).
fn check_one_writer(writes: &[WriteRecord]) -> Verdict {
    struct Span {
        leaders: BTreeSet<u64>,
        first: switchyard_backend_api::LogIndex,
        last: switchyard_backend_api::LogIndex,
    }
    let mut epochs: BTreeMap<u64, Span> = BTreeMap::new();
    for w in writes {
        let span = epochs.entry(w.epoch).or_insert(Span {
            leaders: BTreeSet::new(),
            first: w.index,
            last: w.index,
        });
        span.leaders.insert(w.leader);
        span.first = span.first.min(w.index);
        span.last = span.last.max(w.index);
    }
    let mut problems: Vec<String> = epochs
        .iter()
        .filter(|(_, span)| span.leaders.len() > 1)
        .map(|(epoch, span)| format!("epoch {epoch} written by nodes {:?}", span.leaders))
        .collect();
    for ((earlier, a), (later, b)) in epochs.iter().zip(epochs.iter().skip(1)) {
        if a.last >= b.first {
            problems.push(format!(
                "epoch {earlier} wrote index {} but epoch {later} wrote index {} before it",
                a.last, b.first
            ));
        }
    }
    if problems.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(problems.join("; "))
    }
}

fn check_one_leader(claims: &Claims) -> Verdict {
    let claims = claims.lock().unwrap_or_else(PoisonError::into_inner);
    let doubled: Vec<String> = claims
        .iter()
        .filter(|(_, nodes)| nodes.len() > 1)
        .map(|(epoch, nodes)| format!("epoch {epoch}: nodes {nodes:?}"))
        .collect();
    if doubled.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(doubled.join("; "))
    }
}

/// How long a manual-failover backend is watched for taking over on its own.
const NO_TAKEOVER_WINDOW: Duration = Duration::from_secs(2);

/// The declared failover mode holds: crash the leader of the healed cluster; with `Automatic`
/// another node must take writes within [`DEADLINE`]; with `Manual` none may take over on its
/// own (within [`NO_TAKEOVER_WINDOW`]) and a promoted survivor must take writes. The crashed
/// node is then reopened and must converge. Errors only when the cluster cannot be handled.
async fn check_failover(
    harness: &dyn BackendHarness,
    slots: &[Slot],
    specs: &[NodeSpec],
    failover: Failover,
    seed: u64,
) -> anyhow::Result<Verdict> {
    if failover == Failover::None {
        return Ok(Verdict::NotDeclared);
    }
    let leader = wait_leader(slots).await?;
    let index = usize::try_from(leader.cluster().borrow().node.0.saturating_sub(1))?;
    drop(leader);
    crash_slot(harness, &slots[index]).await;
    let verdict = match failover {
        Failover::Automatic => match wait_leader(slots).await {
            Ok(new) => match barrier(&new, seed.wrapping_add(1)).await {
                Ok(()) => Verdict::Pass,
                Err(e) => Verdict::Fail(format!("the new leader took no write: {e:#}")),
            },
            Err(e) => Verdict::Fail(format!(
                "no node took over after the leader (node {}) crashed: {e:#}",
                index + 1
            )),
        },
        _ => {
            if let Ok(took) = wait_leader_for(slots, NO_TAKEOVER_WINDOW).await {
                let node = took.cluster().borrow().node;
                Verdict::Fail(format!(
                    "declared manual failover, but node {node} took over on its own"
                ))
            } else {
                match promote_survivor(slots, index).await? {
                    Ok(node) => match barrier(&node, seed.wrapping_add(1)).await {
                        Ok(()) => Verdict::Pass,
                        Err(e) => Verdict::Fail(format!("the promoted node took no write: {e:#}")),
                    },
                    Err(why) => Verdict::Fail(why),
                }
            }
        }
    };
    if let Some(why) = reopen_and_converge(harness, slots, specs, index).await? {
        return Ok(Verdict::Fail(format!(
            "the crashed leader did not converge after reopening: {why}"
        )));
    }
    Ok(verdict)
}

/// Crash the node in `slot` (if it runs), leaving the slot empty.
async fn crash_slot(harness: &dyn BackendHarness, slot: &Slot) {
    let crashed = slot.write().await.take();
    if let Some(node) = crashed {
        harness.crash(node).await;
    }
}

/// Reopen node `index` into its slot and wait until it holds the leader's state; `Some(why)`
/// if it does not. Errors only when the node cannot be opened or no leader emerges.
async fn reopen_and_converge(
    harness: &dyn BackendHarness,
    slots: &[Slot],
    specs: &[NodeSpec],
    index: usize,
) -> anyhow::Result<Option<String>> {
    let reopened = open(harness, &specs[index]).await?;
    *slots[index].write().await = Some(Arc::clone(&reopened));
    let leader = wait_leader(slots).await?;
    Ok(converges(&reopened, &leader.local())
        .await
        .err()
        .map(|e| format!("{e:#}")))
}

/// Promote the first running node other than slot `except` (manual failover). `Err(why)`
/// when the promotion fails or hangs; errors only when no survivor runs.
async fn promote_survivor(
    slots: &[Slot],
    except: usize,
) -> anyhow::Result<Result<Arc<dyn MetadataBackend>, String>> {
    let survivor = slots
        .iter()
        .enumerate()
        .find(|(i, _)| *i != except)
        .map(|(_, slot)| Arc::clone(slot))
        .context("no survivor")?;
    let node = survivor
        .read()
        .await
        .clone()
        .context("the survivor is not running")?;
    let id = node.cluster().borrow().node;
    let promoted = tokio::time::timeout(
        DEADLINE,
        node.change_membership(switchyard_backend_api::MembershipChange::Promote { id }),
    )
    .await;
    Ok(match promoted {
        Ok(Ok(_)) => Ok(node),
        Ok(Err(e)) => Err(format!("promoting node {id} failed: {e}")),
        Err(_) => Err(format!("promoting node {id} hung")),
    })
}

/// Writes of each phase of the loss-window check.
const WINDOW_WRITES: usize = 3;
/// How long the isolated leader is given to acknowledge each write.
const ISOLATED_WRITE: Duration = Duration::from_millis(300);

/// The declared loss window holds when the leader is lost with a tail only it has: through
/// the healed cluster's leader, write [`WINDOW_WRITES`] topics and wait until every node
/// applied them; isolate the leader and write as many again (each given
/// [`ISOLATED_WRITE`]); crash it, heal, and fail over (automatically, or by promoting a
/// survivor). Every write all nodes applied must survive. Of the isolated writes that were
/// acknowledged, the lost ones must be allowed by the declared loss window: none for
/// `Nothing`; for `UnreplicatedTail`, only a tail of the log (no kept write follows a lost
/// one). The crashed leader must converge once reopened. Returns the verdict and how many
/// acknowledged writes were lost within the window; errors only when the cluster cannot be
/// handled.
async fn check_loss_window(
    harness: &dyn BackendHarness,
    slots: &[Slot],
    specs: &[NodeSpec],
    network: &Network,
    declared: switchyard_backend_api::Guarantees,
    seed: u64,
) -> anyhow::Result<(Verdict, usize)> {
    if declared.durability == Durability::None {
        return Ok((Verdict::NotDeclared, 0));
    }
    let leader = wait_leader(slots).await?;
    let id = leader.cluster().borrow().node;
    let index = usize::try_from(id.0.saturating_sub(1))?;
    let replicated: Vec<String> = (0..WINDOW_WRITES)
        .map(|i| format!("replicated-{seed}-{i}"))
        .collect();
    let mut last = 0;
    for name in &replicated {
        last = crate::fixtures::propose(&leader, create_topic(name, &[&[1]]))
            .await?
            .with_context(|| format!("writing {name} before isolating the leader"))?
            .index;
    }
    for slot in slots {
        if let Some(node) = slot.read().await.as_ref() {
            node.wait_applied(last, DEADLINE).await?;
        }
    }
    network.isolate(id.0);
    let mut acked = Vec::new();
    for i in 0..WINDOW_WRITES {
        let name = format!("isolated-{seed}-{i}");
        let command = create_topic(&name, &[&[1]]);
        if let Ok(Ok(proposed)) =
            tokio::time::timeout(ISOLATED_WRITE, leader.propose(command)).await
        {
            acked.push((name, proposed.index));
        }
    }
    drop(leader);
    crash_slot(harness, &slots[index]).await;
    network.heal();
    let new_leader = match declared.failover {
        Failover::Automatic => wait_leader(slots).await.map_err(|e| format!("{e:#}")),
        _ => promote_survivor(slots, index).await?,
    };
    let new_leader = match new_leader {
        Ok(node) => node,
        Err(why) => {
            return Ok((
                Verdict::Fail(format!("no leader after losing node {id}: {why}")),
                0,
            ));
        }
    };
    barrier(&new_leader, seed.wrapping_add(2)).await?;
    let state = new_leader.local();
    drop(new_leader);
    let gone = |name: &str| state.state.topic(name).is_none();
    let lost_replicated: Vec<&String> = replicated.iter().filter(|n| gone(n)).collect();
    let (lost, kept): (Vec<_>, Vec<_>) = acked.iter().partition(|(name, _)| gone(name));
    let first_lost = lost.iter().map(|(_, at)| *at).min();
    let verdict = if !lost_replicated.is_empty() {
        Verdict::Fail(format!(
            "lost writes every node had applied: {lost_replicated:?}"
        ))
    } else if lost.is_empty() {
        Verdict::Pass
    } else {
        match declared.loss_window {
            switchyard_backend_api::LossWindow::Nothing => Verdict::Fail(format!(
                "declared no loss window, but acknowledged writes are gone: {lost:?}"
            )),
            switchyard_backend_api::LossWindow::UnreplicatedTail
                if kept.iter().any(|(_, at)| Some(*at) > first_lost) =>
            {
                Verdict::Fail(format!(
                    "lost acknowledged writes {lost:?} are not a tail: {kept:?} survived after them"
                ))
            }
            _ => Verdict::Pass,
        }
    };
    if let Some(why) = reopen_and_converge(harness, slots, specs, index).await? {
        return Ok((
            Verdict::Fail(format!(
                "the lost leader did not converge after reopening: {why}"
            )),
            lost.len(),
        ));
    }
    Ok((verdict, lost.len()))
}

/// Propose a topic through `leader` until it is acknowledged (retrying what is retriable), so
/// that the leader's state includes everything committed before.
async fn barrier(leader: &Arc<dyn MetadataBackend>, seed: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    let command = create_topic(&format!("barrier-{seed}"), &[&[1]]);
    loop {
        match tokio::time::timeout_at(deadline, leader.propose(command.clone())).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(MetadataError::Rejected(_))) => return Ok(()),
            Ok(Err(e)) if e.is_retriable() => {
                let mut views = leader.cluster();
                let _ = tokio::time::timeout(Duration::from_millis(200), views.changed()).await;
            }
            Ok(Err(e)) => bail!("the barrier write failed: {e}"),
            Err(_) => bail!("the barrier write did not commit within {DEADLINE:?}"),
        }
    }
}

/// Wait for a running node that is ready and leads; return it.
async fn wait_leader(slots: &[Slot]) -> anyhow::Result<Arc<dyn MetadataBackend>> {
    wait_leader_for(slots, DEADLINE).await
}

/// [`wait_leader`] with another deadline.
async fn wait_leader_for(
    slots: &[Slot],
    within: Duration,
) -> anyhow::Result<Arc<dyn MetadataBackend>> {
    let deadline = Instant::now() + within;
    loop {
        let mut watches = Vec::new();
        for slot in slots {
            if let Some(node) = slot.read().await.as_ref() {
                let view = node.cluster().borrow().clone();
                if view.is_ready() && view.leader == Some(view.node) {
                    return Ok(Arc::clone(node));
                }
                watches.push(node.cluster());
            }
        }
        if watches.is_empty() {
            bail!("no node is running");
        }
        let changed = watches.iter_mut().map(|w| Box::pin(w.changed()));
        if tokio::time::timeout_at(deadline, futures::future::select_all(changed))
            .await
            .is_err()
        {
            bail!("no leader within {within:?}");
        }
    }
}

async fn open(
    harness: &dyn BackendHarness,
    spec: &NodeSpec,
) -> anyhow::Result<Arc<dyn MetadataBackend>> {
    tokio::time::timeout(DEADLINE, harness.open(spec))
        .await
        .context("opening a node did not return")?
        .context("opening a node")
}

/// The default run of `seed`: three nodes, four clients of `ops_per_client` operations each,
/// every fault kind.
pub fn standard(seed: u64, ops_per_client: usize) -> RunConfig {
    RunConfig {
        seed,
        nodes: 3,
        clients: 4,
        ops_per_client,
        faults: Faults::ALL,
    }
}

/// Run seeds `base..base + count` (not overridden by the environment) until one fails a
/// check; return its report, or `None` if every run held. For the broken variants, which a
/// sound suite must catch.
pub async fn first_failure(
    harness: &dyn BackendHarness,
    base: u64,
    count: u64,
    ops_per_client: usize,
) -> anyhow::Result<Option<Report>> {
    for seed in base..base + count {
        let report = run(harness, standard(seed, ops_per_client)).await?;
        if !report.failures().is_empty() {
            return Ok(Some(report));
        }
    }
    Ok(None)
}

/// Run the seeds [`seeds`]`(base, count)` on three nodes with every fault kind, four clients
/// of `ops_per_client` operations each; fail naming the seed (and how to replay it) at the
/// first run whose checks do not all hold. Returns the reports.
pub async fn check_seeds(
    harness: &dyn BackendHarness,
    base: u64,
    count: u64,
    ops_per_client: usize,
) -> anyhow::Result<Vec<Report>> {
    let mut reports = Vec::new();
    for seed in seeds(base, count)? {
        let report = run(harness, standard(seed, ops_per_client))
            .await
            .with_context(|| format!("{} seed {seed} ({SEED_ENV}={seed})", harness.backend()))?;
        if !report.failures().is_empty() {
            bail!("{report}");
        }
        reports.push(report);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(epoch: u64, leader: u64, index: u64) -> WriteRecord {
        WriteRecord {
            epoch,
            leader,
            index,
        }
    }

    #[test]
    fn one_writer_per_epoch_in_log_order_passes() {
        let writes = [
            write(1, 1, 3),
            write(1, 1, 5),
            write(2, 2, 7),
            write(1, 1, 4),
            write(4, 3, 9),
        ];
        assert_eq!(check_one_writer(&writes), Verdict::Pass);
        assert_eq!(check_one_writer(&[]), Verdict::Pass);
    }

    #[test]
    fn two_writers_in_one_epoch_fail() {
        let verdict = check_one_writer(&[write(3, 1, 10), write(3, 2, 11)]);
        assert!(
            matches!(&verdict, Verdict::Fail(why) if why.contains("epoch 3 written by nodes {1, 2}")),
            "{verdict:?}"
        );
    }

    /// Operations one after another, each returning `ret`.
    fn sequential(ops: Vec<(Op, Ret)>) -> Vec<Operation<Op, Ret>> {
        ops.into_iter()
            .enumerate()
            .map(|(i, (op, ret))| {
                let at = 10 * i as u64;
                Operation {
                    client: 0,
                    invoke: at,
                    complete: Some((at + 1, ret)),
                    op,
                }
            })
            .collect()
    }

    #[test]
    fn broker_and_generation_models_accept_what_apply_does_and_catch_what_it_does_not() {
        let broker = KeyModel::Broker {
            incarnation: 0,
            fenced: false,
        };
        let fine = sequential(vec![
            (Op::Fence(1), Ret::Refused("unknown broker".into())),
            (Op::Register, Ret::Registered(1)),
            (Op::Fence(1), Ret::Ok),
            (Op::ReadBroker, Ret::Broker(1, true)),
            (Op::Register, Ret::Registered(2)),
            (Op::Fence(1), Ret::Refused("stale incarnation".into())),
            (Op::ReadBroker, Ret::Broker(2, false)),
        ]);
        assert!(linearizable::check(&broker, &fine).is_ok());
        let refused_current_fence = sequential(vec![
            (Op::Register, Ret::Registered(1)),
            (Op::Fence(1), Ret::Refused("stale incarnation".into())),
        ]);
        assert!(linearizable::check(&broker, &refused_current_fence).is_err());

        let generation = KeyModel::Generation(0);
        let advancing = sequential(vec![
            (Op::StartGeneration(0), Ret::Ok),
            (
                Op::StartGeneration(0),
                Ret::Refused("illegal generation".into()),
            ),
            (Op::StartGeneration(1), Ret::Ok),
            (Op::ReadGeneration, Ret::Generation(2)),
        ]);
        assert!(linearizable::check(&generation, &advancing).is_ok());
        let same_twice = sequential(vec![
            (Op::StartGeneration(0), Ret::Ok),
            (Op::StartGeneration(0), Ret::Ok),
        ]);
        assert!(linearizable::check(&generation, &same_twice).is_err());
    }

    #[test]
    fn a_later_epoch_before_an_earlier_one_in_the_log_fails() {
        let verdict = check_one_writer(&[write(2, 1, 10), write(3, 2, 9)]);
        assert!(
            matches!(&verdict, Verdict::Fail(why) if why.contains("epoch 2 wrote index 10")),
            "{verdict:?}"
        );
    }
}
