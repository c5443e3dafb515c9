"""Seeded kill -9 runs on a three-node cluster of real processes.

While a client creates topics through whichever nodes run, a schedule drawn from the seed
kills a node with SIGKILL — the metadata leader or a follower — and starts it again from its
data; with `wal`, whose failover is manual, a survivor is promoted when the primary dies.
Afterwards every node must agree on the metadata, and every topic whose creation was
acknowledged must be in it. Unacknowledged creations (timeouts, errors while a node died) may
or may not be there.

Seeds: 11 and 12, or the one in `SWITCHYARD_CONFORMANCE_SEED`; every failure names its seed,
and `SWITCHYARD_CONFORMANCE_SEED=N compat-tests/clients/run.sh -k kill_seeded` replays its
schedule (the clients' timing still varies).
"""

from __future__ import annotations

import os
import random
import threading

import pytest
from confluent_kafka.admin import NewTopic

from client_util import confluent_admin, wait_for
from cluster_util import RECOVERY_S, metadata_leader, same_on_every_node
from conftest import MULTI_NODE

pytestmark = pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")

SEEDS = ([int(os.environ["SWITCHYARD_CONFORMANCE_SEED"])]
         if os.environ.get("SWITCHYARD_CONFORMANCE_SEED") else [11, 12])
# Kills per run.
KILLS = 3


def create_through(cluster, nodes: list[int], name: str) -> bool:
    """Create `name` through `nodes`; True only when the creation was acknowledged."""
    try:
        admin = confluent_admin(cluster.bootstrap(*nodes))
        futures = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)],
                                      operation_timeout=5, request_timeout=5)
        futures[name].result(timeout=10)
        return True
    except Exception:  # an unknown outcome: a timeout, a node dying, no leader yet
        return False


class Writer(threading.Thread):
    """Creates `prefix-0`, `prefix-1`, … through the running nodes until stopped."""

    def __init__(self, cluster, prefix: str):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.prefix = prefix
        self.acked: list[str] = []
        self.attempts = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            running = self.cluster.running()
            if running:
                name = f"{self.prefix}-{self.attempts}"
                self.attempts += 1
                if create_through(self.cluster, running, name):
                    self.acked.append(name)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", SEEDS)
def test_seeded_kill9_schedule_loses_no_acknowledged_topic(cluster_factory, seed):
    cluster = cluster_factory.start()
    backend = cluster.backend.name
    rng = random.Random(seed)
    writer = Writer(cluster, f"kill-{seed}")
    writer.start()
    schedule = []
    try:
        for _ in range(KILLS):
            # Let some writes land between faults; the pause comes from the seed.
            writer.done.wait(rng.uniform(0.5, 1.5))
            # `cluster status` names the metadata leader; between elections it can name a node
            # that just died, and nothing reports the next one by callback.
            leader = wait_for(
                lambda: (c := metadata_leader(cluster.bootstrap(*cluster.running()))) in
                cluster.running() and c, RECOVERY_S, "a live metadata leader", 0.2)
            victim = leader if rng.random() < 0.5 else rng.choice(
                [i for i in cluster.nodes if i != leader])
            cluster.nodes[victim].kill9()
            schedule.append(f"kill {victim}{' (leader)' if victim == leader else ''}")
            if backend == "wal" and victim == leader:
                survivor = rng.choice([i for i in cluster.nodes if i != victim])
                promoted = cluster.command("promote", str(survivor))
                assert promoted.returncode == 0, (seed, schedule, promoted.stderr)
                schedule.append(f"promote {survivor}")
            writer.done.wait(rng.uniform(0.2, 1.0))
            cluster.nodes[victim].start()
            schedule.append(f"restart {victim}")
    finally:
        writer.done.set()
        writer.join(60)
    context = f"seed {seed} (SWITCHYARD_CONFORMANCE_SEED={seed}), schedule {schedule}"
    assert writer.acked, f"no creation was acknowledged: {context}"
    agreed = same_on_every_node(cluster)
    lost = [name for name in writer.acked if name not in agreed["topics"]]
    assert not lost, f"acknowledged, then lost: {lost}; {context}"
    assert agreed["brokers"] == [1, 2, 3], (agreed["brokers"], context)
    print(f"{backend} {context}: {len(writer.acked)} of {writer.attempts} creations "
          "acknowledged, none lost")
