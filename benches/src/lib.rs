//! What Switchyard's metadata benchmarks share: single nodes of every linked backend, the
//! commands they propose, and the physical floors measured beside them.
//!
//! Every backend crate that exists is linked here (`use switchyard_backend_wal as _;`, …), so
//! [`available_backends`] lists it and the benchmark groups, which iterate that list, pick it
//! up without further change. Nodes are built with the conformance suite's [`RegistryHarness`]
//! and [`TestCluster`], each in its own temp dir under [`std::env::temp_dir`]; the fdatasync
//! floor writes in the same temp root, so both hit the same file system and device.
//!
//! Run everything and regenerate `docs/BENCHMARKS.md` with `benches/run` (add `--quick`, or set
//! `SWITCHYARD_BENCH_QUICK=1`, for the short run); `docs/BENCHMARKS.md` says how to read the
//! results.
//!
//! # Layout
//! - `lib.rs` — [`runtime`], [`BenchNode`] (the seeded leader of one or more nodes of one
//!   backend), the timed loops ([`propose_sequential`], [`propose_concurrent`],
//!   [`read_linearizable`]) and the floors ([`FsyncFloor`], [`Loopback`]).
//! - [`compaction`] — the log cleaner's throughput on a written partition log.
//! - [`faults`] — failover (broker processes, the leader's killed) and recovery times.
//! - [`kafka`] — brokers started in-process (one, or a cluster of three) and timed Kafka
//!   requests to one of them.
//! - [`run`] — full and quick [`run::Settings`], criterion's output directory, and the
//!   [`run::RunRecord`] the benchmark leaves there for the report.
//! - `benches/metadata.rs` — the criterion groups, one benchmark per backend and parameter
//!   (`BenchmarkId::new(backend, param)`).
//! - `src/bin/bench-report/` — the report generator: criterion's results of one run →
//!   `docs/BENCHMARKS.md` and `docs/benchmarks.svg`.
//!
//! # Invariants
//! - The floors and the backends are measured in the same process and the same run: absolute
//!   times on a shared machine drift from run to run, ratios taken across runs mean little.
//! - Every timed loop fails (and the benchmark with it) on the first error: a benchmark never
//!   reports the speed of failing proposals.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use switchyard_backend_api::{MetadataBackend, MetadataCommand, Outcome};
use switchyard_compat_tests::{DEADLINE, RegistryHarness, TestCluster, fixtures};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

pub mod compaction;
pub mod faults;
pub mod kafka;
pub mod run;

pub use switchyard_backend_api::available_backends;
// Linked so that their `inventory` registrations are collected. Add each new backend crate here.
use switchyard_backend_hybrid as _;
use switchyard_backend_raft as _;
use switchyard_backend_wal as _;

/// Topic every node is seeded with; proposers commit offsets of its partitions.
pub const TOPIC: &str = "bench";
/// Partitions of [`TOPIC`]: one per concurrent proposer at most.
pub const PARTITIONS: u32 = 64;
/// Consumer group the offsets are committed for (outside any generation).
pub const GROUP: &str = "bench";
/// [`FsyncFloor`] starts its file over past this size (the WAL's default segment size).
const FLOOR_FILE_MAX: u64 = 64 << 20;

/// The multi-thread runtime the benchmarks run the backends on: one worker per core, as the
/// broker runs them.
pub fn runtime() -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")
}

/// Run `timed` as a task on `runtime` (where the broker's handlers would run it) and wait for
/// the duration it measured.
pub fn time_on<F>(runtime: &Runtime, timed: F) -> anyhow::Result<Duration>
where
    F: Future<Output = anyhow::Result<Duration>> + Send + 'static,
{
    runtime
        .block_on(runtime.spawn(timed))
        .context("the timed task panicked")?
}

/// The single-partition offset commit the proposers send: small, always accepted, and
/// overwriting one key so that the state (and the snapshots of it) stay the same size however
/// many are proposed.
pub fn commit(partition: u32, offset: i64) -> MetadataCommand {
    fixtures::commit(GROUP, None, &[(TOPIC, partition, offset)])
}

/// The leader of `size` nodes of one backend (one node, or a cluster on loopback), each in its
/// own temp dir, ready, with broker 1 registered and [`TOPIC`] created with [`PARTITIONS`]
/// partitions. Dropping it drops the nodes and deletes their dirs.
#[derive(Debug)]
pub struct BenchNode<'h> {
    backend: Arc<dyn MetadataBackend>,
    // Declared last: it owns the directories the backends write into.
    cluster: TestCluster<'h>,
}

impl<'h> BenchNode<'h> {
    /// Open `size` nodes through `harness`, wait for a leader, and seed it.
    pub async fn open_cluster(harness: &'h RegistryHarness, size: usize) -> anyhow::Result<Self> {
        let cluster = TestCluster::start(harness, size).await?;
        let backend = cluster.leader().await?;
        seed(&backend).await?;
        Ok(Self { backend, cluster })
    }

    /// The node.
    pub fn backend(&self) -> &Arc<dyn MetadataBackend> {
        &self.backend
    }

    /// Shut every node down gracefully, then delete their directories.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        for index in 0..self.cluster.size() {
            let node = self.cluster.node(index)?;
            tokio::time::timeout(DEADLINE, node.shutdown())
                .await
                .context("shutdown did not return")??;
        }
        Ok(())
    }
}

/// Register broker 1 and create [`TOPIC`] with [`PARTITIONS`] partitions through `leader`.
pub async fn seed(leader: &Arc<dyn MetadataBackend>) -> anyhow::Result<()> {
    fixtures::register_all(leader, &[1]).await?;
    let assignments = vec![&[1][..]; PARTITIONS as usize];
    fixtures::create_topic_ok(leader, TOPIC, &assignments).await?;
    Ok(())
}

/// Propose `count` single-partition commits one after another, each waiting for the previous
/// acknowledgement; return the time they took.
pub async fn propose_sequential(
    backend: Arc<dyn MetadataBackend>,
    partition: u32,
    count: u64,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for i in 0..count {
        accept(&backend, commit(partition, i as i64)).await?;
    }
    Ok(start.elapsed())
}

/// Run `proposers` tasks at once, task `p` proposing `per_proposer` commits of partition `p`
/// one after another; return the time until the last acknowledgement.
pub async fn propose_concurrent(
    backend: Arc<dyn MetadataBackend>,
    proposers: u32,
    per_proposer: u64,
) -> anyhow::Result<Duration> {
    if proposers > PARTITIONS {
        bail!("at most {PARTITIONS} proposers, asked for {proposers}");
    }
    let start = Instant::now();
    let tasks: Vec<_> = (0..proposers)
        .map(|p| tokio::spawn(propose_sequential(Arc::clone(&backend), p, per_proposer)))
        .collect();
    for task in tasks {
        task.await.context("a proposer panicked")??;
    }
    Ok(start.elapsed())
}

/// `count` linearizable reads one after another; the time they took.
pub async fn read_linearizable(
    backend: Arc<dyn MetadataBackend>,
    count: u64,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for _ in 0..count {
        let view = backend
            .read_linearizable()
            .await
            .context("linearizable read")?;
        std::hint::black_box(view.state.topic(TOPIC).is_some());
    }
    Ok(start.elapsed())
}

/// Propose `command` and fail unless apply accepted it. No deadline is added in the timed
/// loop: every backend bounds `propose` by its own (`Timeout`).
async fn accept(
    backend: &Arc<dyn MetadataBackend>,
    command: MetadataCommand,
) -> anyhow::Result<()> {
    let proposed = backend.propose(command).await.context("propose")?;
    match proposed.outcome {
        Outcome::OffsetsCommitted { count: 1 } => Ok(()),
        other => bail!("unexpected outcome {other:?}"),
    }
}

/// The disk's own floor: append a block of bytes to a file and `fdatasync` it, as a WAL writer
/// does for one record, in a temp dir beside the backends' data dirs.
#[derive(Debug)]
pub struct FsyncFloor {
    file: File,
    len: u64,
    block: Vec<u8>,
    // Declared last: dropped after the file in it.
    _dir: TempDir,
}

impl FsyncFloor {
    /// Create the file in a fresh temp dir under [`std::env::temp_dir`], where
    /// [`TestCluster`] puts the nodes; each append writes `block` bytes.
    pub fn open(block: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-floor-")
            .tempdir()
            .context("creating the floor's temp dir")?;
        let path = dir.path().join("floor.log");
        let file = File::options()
            .create_new(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", path.display()))?;
        Ok(Self {
            file,
            len: 0,
            block: vec![0xa5; block],
            _dir: dir,
        })
    }

    /// Append one block and `fdatasync`, `count` times; the time it took. The file starts over
    /// (outside the timing) once it has grown past the WAL's segment size.
    pub fn append_sync(&mut self, count: u64) -> io::Result<Duration> {
        self.start_over_if_full()?;
        let start = Instant::now();
        for _ in 0..count {
            self.append_one()?;
        }
        Ok(start.elapsed())
    }

    fn start_over_if_full(&mut self) -> io::Result<()> {
        if self.len >= FLOOR_FILE_MAX {
            self.file.set_len(0)?;
            self.file.sync_all()?;
            self.len = 0;
        }
        Ok(())
    }

    fn append_one(&mut self) -> io::Result<()> {
        self.file.write_all(&self.block)?;
        self.file.sync_data()?;
        self.len += self.block.len() as u64;
        Ok(())
    }
}

/// Several [`FsyncFloor`]s appended and fdatasynced at the same time, one thread each, in
/// lockstep: an iteration ends when every one has synced. With three, the floor of a commit on
/// three replicas that share one disk (each replica's fsync in parallel, none waiting for
/// another's).
pub fn append_sync_concurrently(floors: &mut [FsyncFloor], count: u64) -> io::Result<Duration> {
    for floor in floors.iter_mut() {
        floor.start_over_if_full()?;
    }
    let barrier = std::sync::Barrier::new(floors.len());
    let start = Instant::now();
    let results: Vec<io::Result<()>> = std::thread::scope(|scope| {
        let threads: Vec<_> = floors
            .iter_mut()
            .map(|floor| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut result = Ok(());
                    // A failed thread keeps meeting the others at the barrier, so none waits
                    // forever; the failure is reported once all are done.
                    for _ in 0..count {
                        barrier.wait();
                        if result.is_ok() {
                            result = floor.append_one();
                        }
                    }
                    result
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(io::Error::other("floor thread panicked")))
            })
            .collect()
    });
    let elapsed = start.elapsed();
    results.into_iter().collect::<io::Result<()>>()?;
    Ok(elapsed)
}

/// The network's own floor: a TCP connection over 127.0.0.1 to an echo task, with
/// `TCP_NODELAY` on both ends, both on the tokio runtime as backend transports are.
#[derive(Debug, Clone)]
pub struct Loopback {
    client: Arc<Mutex<TcpStream>>,
    _server: Arc<EchoTask>,
}

/// The echo server's task, stopped when the last [`Loopback`] handle drops.
#[derive(Debug)]
struct EchoTask(JoinHandle<io::Result<()>>);

impl Drop for EchoTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Bytes sent each way per round trip.
const PING: [u8; 8] = *b"switchyd";

impl Loopback {
    /// Start the echo task and connect to it. Call inside the runtime.
    pub async fn open() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the echo listener")?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let mut buf = [0u8; PING.len()];
            loop {
                stream.read_exact(&mut buf).await?;
                stream.write_all(&buf).await?;
            }
        });
        let client = TcpStream::connect(addr)
            .await
            .context("connecting to the echo task")?;
        client.set_nodelay(true)?;
        Ok(Self {
            client: Arc::new(Mutex::new(client)),
            _server: Arc::new(EchoTask(server)),
        })
    }

    /// `count` round trips of [`PING`]; the time they took.
    pub async fn round_trips(self, count: u64) -> anyhow::Result<Duration> {
        let mut client = self.client.lock().await;
        let mut buf = [0u8; PING.len()];
        let start = Instant::now();
        for _ in 0..count {
            client.write_all(&PING).await?;
            client.read_exact(&mut buf).await?;
        }
        let elapsed = start.elapsed();
        if buf != PING {
            bail!("the echo task answered {buf:?}");
        }
        Ok(elapsed)
    }
}
