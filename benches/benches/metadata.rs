//! Criterion benchmarks of every linked metadata backend on one node, with the disk's
//! fdatasync and loopback TCP measured first, in the same run, as the floors.
//!
//! Groups (ids `group/backend/param`, `BenchmarkId::new(backend, param)`):
//! - `floor/fdatasync_4k`, `floor/loopback_rtt` — the physical floors, measured first;
//!   `floor/fdatasync_128` appends a record the size of a small metadata command (the WAL frame
//!   of one offset commit is well under 128 bytes): a sub-block append syncs faster than a
//!   whole new block. `floor_after/…` measures the fdatasync floors again at the end, to show
//!   how far the disk drifted during the run (on a shared VM it does). `floor/sequential_1m`
//!   appends 1 MiB and fdatasyncs it: the disk's durable sequential write rate (bytes per
//!   second), the floor of writing partition data. `floor/fdatasync_4k_x3` appends 4 KiB to
//!   three files and fdatasyncs them at the same time from three threads, an iteration ending
//!   when all three have synced: the floor of a commit on three replicas sharing one disk.
//! - `propose/<backend>/1` — latency of one proposer's sequential single-partition commits.
//! - `propose/<backend>/64` — 64 concurrent proposers (tokio tasks), [`PER_PROPOSER`] commits
//!   each per iteration; criterion reports the throughput in elements (commits) per second.
//! - `propose_3nodes/<backend>/1` and `/64` — the same on the leader of a three-node cluster on
//!   loopback, for every backend that declares multi-node operation: a commit there costs the
//!   leader's fsync, a round trip, and a follower's fsync (compare `floor/loopback_rtt`).
//! - `read/<backend>/local` — `local()` plus a topic lookup; `read/<backend>/linearizable`
//!   where the backend's guarantees declare linearizable reads. `read_3nodes/…` — the same on
//!   the leader of three nodes (a linearizable read there confirms leadership with a quorum).
//! - `kafka/<backend>/offset_commit`, `/create_topic`, `/create_topics_1000` — one Kafka request
//!   each (one partition committed; one topic; 1,000 topics in one request) to a broker started
//!   in this process on a single node of the backend, timed from the client.
//! - `kafka/<backend>/produce_acks_all` — one Produce request with `acks=all` of a batch of 100
//!   records of 1 KiB to the leader of a partition; criterion reports records per second.
//!   `/produce_idempotent` — the same batch from an idempotent producer (producer id, epoch,
//!   sequence). `/transaction_100` and `/transaction_1000` — one transaction of 100 records
//!   (one batch) or 1,000 (ten batches) from a transactional producer to that partition:
//!   AddPartitionsToTxn and EndTxn (commit) to its transaction coordinator, Produce to the
//!   leader; criterion reports records per second. `/transaction_commit` times only the
//!   EndTxn of a one-batch transaction: the commit decision in the metadata and the commit
//!   marker in the partition.
//! - `kafka_3nodes/<backend>/offset_commit`, `/create_topic` — the same requests to the group
//!   coordinator among three brokers of one cluster, for every multi-node backend: the broker
//!   hands each to the metadata leader (itself or another node) and the quorum commits it.
//!   `kafka_3nodes/<backend>/produce_acks_all` writes a partition with replication factor 3:
//!   answered once both followers have fetched the batch (the metadata backend is not on this
//!   path; it differs between backends only by where partition leaders were placed).
//!   `kafka_3nodes/<backend>/produce_idempotent`, `/transaction_100`, `/transaction_1000` and
//!   `/transaction_commit` likewise, with the transaction coordinator on whichever broker
//!   coordinates the transactional id.
//! - `compaction/clean` — one compaction of a partition log of a compacted topic (see
//!   `switchyard_benches::compaction`), written fresh for each iteration (not timed);
//!   criterion reports the bytes of closed segments cleaned per second. No backend is on this
//!   path.
//! - `failover/<backend>/3` — for every multi-node backend: SIGKILL the metadata leader's
//!   process among three broker processes (copies of this binary serving as `switchyard serve`
//!   does), time until a surviving broker acknowledges a CreateTopics request of a topic
//!   assigned to it (a new attempt every 20 ms, each on its own connection; for a backend with
//!   manual failover, the time includes promoting the survivor).
//! - `recovery/<backend>/<entries>_snapshots` and `/<entries>_no_snapshot` — for every durable
//!   backend: reopen one node whose log holds that many applied entries (snapshots at the
//!   backend's default interval, or none), time until it is ready and has applied them.
//!
//! The full run takes 20 samples, 1 s warm-up and 3 s measurement per benchmark and fills the
//! recovery logs with 100,000 entries; the quick run (`SWITCHYARD_BENCH_QUICK=1`, which
//! `benches/run --quick` sets; see [`Settings`]) 10 samples, 0.3 s and 1 s, and 10,000 entries.
//! Criterion's own `--quick` selects the quick run too, but also criterion's quick mode, which
//! stops each benchmark after two samples. Criterion's other flags (`--sample-size`,
//! `--measurement-time`, a name filter) override the settings. At the end the run records
//! itself ([`RunRecord`]) beside criterion's results for `bench-report`.
//!
//! Run as a test (`cargo test`, `cargo nextest`: no `--bench`), criterion runs each benchmark
//! once and this binary writes no run record; the recovery logs then hold 100 entries
//! ([`Settings::SMOKE`]). The costly fixtures of the `kafka` and `recovery` groups are built by
//! the first run of a benchmark that needs them, so listing or filtering benchmarks builds
//! none.

use std::time::Duration;

use anyhow::Context;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, measurement::WallTime,
};
use switchyard_backend_api::Registration;
use switchyard_benches::compaction::{DirtyLog, compactions};
use switchyard_benches::faults::{
    FAILOVER_NODES, NO_SNAPSHOT, Recovery, failover, serve_if_asked, snapshot_harness,
};
use switchyard_benches::kafka::{KafkaNode, RECORDS_PER_PRODUCE};
use switchyard_benches::run::{BackendInfo, RunRecord, Settings, criterion_dir, measuring};
use switchyard_benches::{
    BenchNode, FsyncFloor, Loopback, TOPIC, append_sync_concurrently, available_backends,
    propose_concurrent, propose_sequential, read_linearizable, runtime, time_on,
};
use switchyard_compat_tests::{BackendHarness, RegistryHarness};
use tokio::runtime::Runtime;

/// Concurrent proposers in `propose/<backend>/64`.
const PROPOSERS: u32 = 64;
/// Commits each concurrent proposer sends per criterion iteration.
const PER_PROPOSER: u64 = 4;

/// Topics per request in `kafka/<backend>/create_topics_1000`.
const TOPICS_PER_REQUEST: u64 = 1_000;

fn main() {
    // A broker process of the failover benchmark never gets past this.
    serve_if_asked();
    let args: Vec<String> = std::env::args().collect();
    let settings = Settings::from_env_and_args(&args);
    let dir = criterion_dir();
    let mut criterion = Criterion::default()
        .output_directory(&dir)
        .sample_size(settings.sample_size)
        .warm_up_time(settings.warm_up)
        .measurement_time(settings.measurement)
        .configure_from_args();
    let backends = available_backends()
        .iter()
        .map(|r| BackendInfo::of(r))
        .collect();
    let record = RunRecord::start(args.clone(), settings, backends);
    let result = run(&mut criterion, &settings).and_then(|()| {
        criterion.final_summary();
        // A test or listing run measured nothing: it must not replace the last run's record.
        if measuring(&args) {
            record.finish(&dir)
        } else {
            Ok(())
        }
    });
    if let Err(e) = result {
        eprintln!("benchmark setup failed: {e:#}");
        std::process::exit(1);
    }
}

/// The run's progress: criterion prints each benchmark on standard output; this says on
/// standard error which of the run's groups starts, how far the run is and for how long it
/// has been going (a live bar would be torn by criterion's own lines).
struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    /// The groups of a whole run: as many as `run` starts (checked when it ends).
    const GROUPS: u64 = 11;

    fn new() -> Self {
        Self {
            bar: indicatif::ProgressBar::with_draw_target(
                Some(Self::GROUPS),
                indicatif::ProgressDrawTarget::hidden(),
            ),
        }
    }

    fn start(&self, group: &str) {
        self.bar.inc(1);
        eprintln!(
            "[{}/{}] {group} ({} since the start)",
            self.bar.position(),
            Self::GROUPS,
            indicatif::HumanDuration(self.bar.elapsed())
        );
    }
}

fn run(criterion: &mut Criterion, settings: &Settings) -> anyhow::Result<()> {
    let rt = runtime()?;
    let backends = available_backends();
    let names: Vec<_> = backends.iter().map(|r| r.name).collect();
    eprintln!("backends linked: {names:?}; {settings:?}");
    let progress = Progress::new();
    progress.start("floors: fsync, loopback, sequential writes");
    floors(criterion, &rt)?;
    progress.start("propose, one node");
    propose(criterion, &rt, &backends, 1)?;
    let clustered: Vec<_> = backends
        .iter()
        .copied()
        .filter(|r| r.guarantees.multi_node)
        .collect();
    progress.start("propose, three nodes");
    propose(criterion, &rt, &clustered, 3)?;
    progress.start("reads, one node");
    read(criterion, &rt, &backends, 1)?;
    progress.start("reads, three nodes");
    read(criterion, &rt, &clustered, 3)?;
    progress.start("Kafka requests, one node");
    kafka(criterion, &rt, &backends, 1)?;
    progress.start("Kafka requests, three nodes");
    kafka(criterion, &rt, &clustered, 3)?;
    progress.start("compaction");
    compaction(criterion)?;
    progress.start("failover");
    failovers(criterion, &rt, &clustered)?;
    let durable: Vec<_> = backends
        .iter()
        .copied()
        .filter(|r| r.guarantees.survives_restart())
        .collect();
    progress.start("recovery");
    recovery(criterion, &rt, &durable, settings.recovery_entries)?;
    progress.start("floors again");
    fsync_floors(criterion, "floor_after")?;
    progress.bar.finish();
    debug_assert_eq!(progress.bar.position(), Progress::GROUPS);
    eprintln!(
        "[done] {} groups in {}",
        progress.bar.position(),
        indicatif::HumanDuration(progress.bar.elapsed())
    );
    Ok(())
}

/// A timed loop failed: fail the benchmark rather than time failures.
fn must<T>(result: anyhow::Result<T>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("benchmark failed: {e:#}"),
    }
}

fn floors(criterion: &mut Criterion, rt: &Runtime) -> anyhow::Result<()> {
    fsync_floors(criterion, "floor")?;
    let mut group = criterion.benchmark_group("floor");
    let loopback = rt.block_on(Loopback::open())?;
    group.bench_function("loopback_rtt", |b| {
        b.iter_custom(|iters| must(time_on(rt, loopback.clone().round_trips(iters))));
    });
    let mut replicas = (0..3)
        .map(|_| FsyncFloor::open(4096))
        .collect::<anyhow::Result<Vec<_>>>()?;
    group.bench_function("fdatasync_4k_x3", |b| {
        b.iter_custom(|iters| {
            must(append_sync_concurrently(&mut replicas, iters).context("3 × append + fdatasync"))
        });
    });
    let mut sequential = FsyncFloor::open(SEQUENTIAL_BLOCK)?;
    group.throughput(Throughput::Bytes(SEQUENTIAL_BLOCK as u64));
    group.bench_function("sequential_1m", |b| {
        b.iter_custom(|iters| must(sequential.append_sync(iters).context("append + fdatasync")));
    });
    group.finish();
    Ok(())
}

/// Bytes of one append of `floor/sequential_1m`.
const SEQUENTIAL_BLOCK: usize = 1 << 20;

/// Group `compaction`: the log cleaner's throughput, each iteration a compaction of a log
/// written for it. Iterations are long: flat sampling.
fn compaction(criterion: &mut Criterion) -> anyhow::Result<()> {
    let mut group = criterion.benchmark_group("compaction");
    group.sampling_mode(SamplingMode::Flat);
    let bytes = DirtyLog::write()?.cleanable_bytes();
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("clean", |b| {
        b.iter_custom(|iters| must(compactions(iters)));
    });
    group.finish();
    Ok(())
}

/// The fdatasync floors, as group `group`: `floor` before the backends, and `floor_after` once
/// more at the end, so a report can see how far the disk drifted during the run.
fn fsync_floors(criterion: &mut Criterion, group: &str) -> anyhow::Result<()> {
    let mut group = criterion.benchmark_group(group);
    for (name, block) in [("fdatasync_4k", 4096), ("fdatasync_128", 128)] {
        let mut fsync = FsyncFloor::open(block)?;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| must(fsync.append_sync(iters).context("append + fdatasync")));
        });
    }
    group.finish();
    Ok(())
}

/// Group `propose` (one node each) or `propose_<nodes>nodes` (the leader of a cluster).
fn propose(
    criterion: &mut Criterion,
    rt: &Runtime,
    backends: &[&'static Registration],
    nodes: usize,
) -> anyhow::Result<()> {
    let name = match nodes {
        1 => "propose".to_owned(),
        n => format!("propose_{n}nodes"),
    };
    let mut group = criterion.benchmark_group(name);
    for registration in backends {
        let harness = RegistryHarness::new(registration.name);

        group.throughput(Throughput::Elements(1));
        on_fresh_nodes(rt, &harness, nodes, &mut group, |group, node| {
            let backend = node.backend();
            group.bench_function(BenchmarkId::new(registration.name, 1), |b| {
                b.iter_custom(|iters| {
                    must(time_on(rt, propose_sequential(backend.clone(), 0, iters)))
                });
            });
        })?;

        group.throughput(Throughput::Elements(u64::from(PROPOSERS) * PER_PROPOSER));
        on_fresh_nodes(rt, &harness, nodes, &mut group, |group, node| {
            let backend = node.backend();
            group.bench_function(BenchmarkId::new(registration.name, PROPOSERS), |b| {
                b.iter_custom(|iters| {
                    must(time_on(
                        rt,
                        propose_concurrent(backend.clone(), PROPOSERS, PER_PROPOSER * iters),
                    ))
                });
            });
        })?;
    }
    group.finish();
    Ok(())
}

/// Group `read` (one node each) or `read_<nodes>nodes` (on the leader of a cluster).
fn read(
    criterion: &mut Criterion,
    rt: &Runtime,
    backends: &[&'static Registration],
    nodes: usize,
) -> anyhow::Result<()> {
    let name = match nodes {
        1 => "read".to_owned(),
        n => format!("read_{n}nodes"),
    };
    let mut group = criterion.benchmark_group(name);
    for registration in backends {
        let harness = RegistryHarness::new(registration.name);
        on_fresh_nodes(rt, &harness, nodes, &mut group, |group, node| {
            let backend = node.backend();
            group.bench_function(BenchmarkId::new(registration.name, "local"), |b| {
                b.iter(|| {
                    let view = backend.local();
                    std::hint::black_box(view.state.topic(TOPIC).map(|t| t.partitions.len()))
                });
            });
            // Skipped where not declared, rather than measured as an `Unsupported` error.
            if backend.guarantees().linearizable_reads() {
                group.bench_function(BenchmarkId::new(registration.name, "linearizable"), |b| {
                    b.iter_custom(|iters| {
                        must(time_on(rt, read_linearizable(backend.clone(), iters)))
                    });
                });
            }
        })?;
    }
    group.finish();
    Ok(())
}

/// Group `kafka` (one node each) or `kafka_<nodes>nodes` (the group coordinator among the
/// brokers of one cluster): requests to brokers started fresh on each backend, by the first of
/// its benchmarks that runs (none when criterion only lists them or filters them out). The
/// 1,000-topic request runs on one node only.
fn kafka(
    criterion: &mut Criterion,
    rt: &Runtime,
    backends: &[&'static Registration],
    nodes: usize,
) -> anyhow::Result<()> {
    let name = if nodes == 1 {
        "kafka".to_owned()
    } else {
        format!("kafka_{nodes}nodes")
    };
    let mut group = criterion.benchmark_group(name);
    for registration in backends {
        let name = registration.name;
        let mut node: Option<KafkaNode> = None;
        let client = |node: &mut Option<KafkaNode>| {
            node.get_or_insert_with(|| {
                must(
                    rt.block_on(KafkaNode::start(name, nodes))
                        .with_context(|| format!("starting {nodes} broker(s) on {name}")),
                )
            })
            .handle()
        };
        group.sampling_mode(SamplingMode::Auto);
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new(name, "offset_commit"), |b| {
            let client = client(&mut node);
            b.iter_custom(|iters| must(time_on(rt, client.clone().commit_offsets(iters))));
        });
        group.bench_function(BenchmarkId::new(name, "create_topic"), |b| {
            let client = client(&mut node);
            b.iter_custom(|iters| must(time_on(rt, client.clone().create_topics(iters, 1))));
        });
        group.throughput(Throughput::Elements(RECORDS_PER_PRODUCE));
        group.bench_function(BenchmarkId::new(name, "produce_acks_all"), |b| {
            let client = client(&mut node);
            b.iter_custom(|iters| must(time_on(rt, client.clone().produce(iters))));
        });
        group.bench_function(BenchmarkId::new(name, "produce_idempotent"), |b| {
            let client = client(&mut node);
            b.iter_custom(|iters| must(time_on(rt, client.clone().produce_idempotent(iters))));
        });
        for batches in [1, 10] {
            let records = batches * RECORDS_PER_PRODUCE;
            group.throughput(Throughput::Elements(records));
            group.bench_function(
                BenchmarkId::new(name, format!("transaction_{records}")),
                |b| {
                    let client = client(&mut node);
                    b.iter_custom(|iters| {
                        must(time_on(rt, client.clone().transactions(iters, batches)))
                    });
                },
            );
        }
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new(name, "transaction_commit"), |b| {
            let client = client(&mut node);
            b.iter_custom(|iters| must(time_on(rt, client.clone().transaction_commits(iters))));
        });
        if nodes == 1 {
            // Each iteration is long (one proposal of 1,000 topics): as few as criterion allows.
            group.sampling_mode(SamplingMode::Flat);
            group.throughput(Throughput::Elements(TOPICS_PER_REQUEST));
            group.bench_function(
                BenchmarkId::new(name, format!("create_topics_{TOPICS_PER_REQUEST}")),
                |b| {
                    let client = client(&mut node);
                    b.iter_custom(|iters| {
                        must(time_on(
                            rt,
                            client.clone().create_topics(iters, TOPICS_PER_REQUEST),
                        ))
                    });
                },
            );
        }
        if let Some(node) = node.take() {
            rt.block_on(node.shutdown())?;
        }
    }
    group.finish();
    Ok(())
}

/// Group `failover`: each iteration starts a cluster of broker processes, kills its leader's
/// and times the way back to an acknowledged write. Iterations take seconds, so: flat sampling, the shortest warm-up.
fn failovers(
    criterion: &mut Criterion,
    rt: &Runtime,
    backends: &[&'static Registration],
) -> anyhow::Result<()> {
    let mut group = criterion.benchmark_group("failover");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    for registration in backends {
        let registration: &'static Registration = registration;
        group.bench_function(BenchmarkId::new(registration.name, FAILOVER_NODES), |b| {
            b.iter_custom(|iters| must(time_on(rt, failover(registration, iters))));
        });
    }
    group.finish();
    Ok(())
}

/// Group `recovery`: reopen a node with `entries` applied entries, with snapshots at the
/// backend's default interval and with none.
fn recovery(
    criterion: &mut Criterion,
    rt: &Runtime,
    backends: &[&'static Registration],
    entries: u64,
) -> anyhow::Result<()> {
    let mut group = criterion.benchmark_group("recovery");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    for registration in backends {
        let name = registration.name;
        let variants = [
            (format!("{entries}_snapshots"), RegistryHarness::new(name)),
            (
                format!("{entries}_no_snapshot"),
                snapshot_harness(registration, NO_SNAPSHOT),
            ),
        ];
        for (param, harness) in &variants {
            // Filled by the first run of the benchmark: not when criterion only lists it or
            // filters it out.
            let mut filled: Option<Recovery<'_>> = None;
            group.bench_function(BenchmarkId::new(name, param), |b| {
                let node = filled.get_or_insert_with(|| {
                    must(
                        rt.block_on(Recovery::fill(harness, entries))
                            .with_context(|| {
                                format!("filling a {name} log with {entries} entries")
                            }),
                    )
                });
                b.iter_custom(|iters| must(rt.block_on(node.reopen(iters))));
            });
            if let Some(node) = filled.take() {
                rt.block_on(node.close())?;
            }
        }
    }
    group.finish();
    Ok(())
}

/// Open `nodes` fresh nodes of `harness`'s backend, seed the leader, run `bench` on it, and
/// shut them down, so that no benchmark inherits another's log.
fn on_fresh_nodes(
    rt: &Runtime,
    harness: &RegistryHarness,
    nodes: usize,
    group: &mut BenchmarkGroup<'_, WallTime>,
    bench: impl FnOnce(&mut BenchmarkGroup<'_, WallTime>, &BenchNode<'_>),
) -> anyhow::Result<()> {
    let node = rt
        .block_on(BenchNode::open_cluster(harness, nodes))
        .with_context(|| format!("opening {nodes} {} node(s)", harness.backend()))?;
    bench(group, &node);
    rt.block_on(node.shutdown())
}
