"""Switching a three-node cluster from one metadata backend to another with `switchyard
metadata export` and `import`, for every ordered pair of durable backends: an idempotent
producer and a committing consumer group before; stop every node; export each node's
metadata; import the most advanced export into the other backend on every node, in the same
data directories; start. After the switch the topics keep their ids and partitions, the group
resumes exactly at its committed offsets, the same idempotent producer goes on without
OutOfOrderSequence or duplicates, `cluster status` names the new backend, and the imported
state is the exported one. Then the damaged and mismatched files `import` must refuse.

Waits are on client calls with deadlines (delivery reports, polls, the readiness line).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import NewTopic

from client_util import confluent_admin, confluent_conf, wait_for
from conftest import MULTI_NODE, Cluster, switchyard_bin
from cluster_util import RECOVERY_S

DURABLE = [b for b in MULTI_NODE if b.guarantees.get("durability") != "none"]
PAIRS = list(itertools.permutations(DURABLE, 2))
PARTITIONS = 3
BEFORE = 300
READ_BEFORE = 120
AFTER = 150


def metadata(node, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """`switchyard metadata ARGS` for a stopped node of a cluster (its backend, data directory,
    id, peers and secret)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env["SWITCHYARD_CLUSTER_SECRET_FILE"] = node.env["SWITCHYARD_CLUSTER_SECRET_FILE"]
    done = subprocess.run(
        [str(switchyard_bin()), "metadata", *args, "--metadata-backend", node.backend.name,
         "--data-dir", str(node.data_dir), *node.args],
        cwd=node.workdir, env=env, capture_output=True, text=True, timeout=120)
    if ok:
        assert done.returncode == 0, f"metadata {args}: {done.stderr}{done.stdout}"
    return done


def exported_index(out: str) -> int:
    found = re.search(r"metadata at index (\d+) \(epoch (\d+)\)", out)
    assert found, out
    return int(found.group(1))


def state_hash(dump: Path) -> str:
    """The SHA-256 of the state and its applied index in a JSON dump, provenance left out."""
    data = json.loads(dump.read_text())
    canonical = json.dumps({"applied_index": data["applied_index"], "state": data["state"]},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def topic_ids(bootstrap: str, topic: str) -> tuple[str, int]:
    admin = confluent_admin(bootstrap)
    described = admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=30)
    return str(described.topic_id), len(described.partitions)


class Tracker:
    """Delivery reports of one idempotent producer: every error, every acknowledged key."""

    def __init__(self):
        self.errors: list[KafkaError] = []
        self.acked: set[bytes] = set()

    def __call__(self, err, msg):
        if err is not None:
            self.errors.append(err)
        else:
            self.acked.add(msg.key())


def produce(producer: Producer, tracker: Tracker, topic: str, start: int, count: int) -> None:
    for i in range(start, start + count):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(),
                         partition=i % PARTITIONS, on_delivery=tracker)
    assert producer.flush(RECOVERY_S) == 0, "messages left undelivered"
    assert not tracker.errors, tracker.errors[:5]


def read(consumer: Consumer, count: int, what: str) -> list[bytes]:
    got: list[bytes] = []

    def poll():
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            got.append(msg.key())
        return len(got) >= count
    wait_for(poll, RECOVERY_S, what, 0)
    return got


def group_consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(confluent_conf(
        bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
        max_poll_interval_ms=300_000))


@pytest.mark.parametrize("source,target", PAIRS,
                         ids=[f"{s.name}-to-{t.name}" for s, t in PAIRS])
def test_a_cluster_switches_backend_and_resumes(source, target, tmp_path):
    cluster = Cluster(source, tmp_path / "cluster")
    producer = None
    try:
        cluster.start()
        bootstrap = cluster.bootstrap()
        topic, group = f"switch-{uuid.uuid4().hex[:8]}", f"switch-g-{uuid.uuid4().hex[:8]}"
        admin = confluent_admin(bootstrap)
        admin.create_topics(
            [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=3)])[topic].result(
                timeout=30)
        ids_before = topic_ids(bootstrap, topic)

        tracker = Tracker()
        producer = Producer(confluent_conf(bootstrap, enable_idempotence=True, acks="all",
                                           linger_ms=5, message_timeout_ms=300_000))
        produce(producer, tracker, topic, 0, BEFORE)

        consumer = group_consumer(bootstrap, group)
        consumer.subscribe([topic])
        first = read(consumer, READ_BEFORE, f"{READ_BEFORE} records before the switch")
        # Commit exactly what was handed out: the positions after the records read.
        consumer.commit(asynchronous=False)
        committed = {tp.partition: tp.offset for tp in consumer.committed(
            [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)}
        positions = {tp.partition: tp.offset for tp in consumer.position(
            [TopicPartition(topic, p) for p in range(PARTITIONS)])}
        consumer.close()
        assert committed == positions, (committed, positions)

        for node in cluster.nodes.values():
            assert node.stop() == 0
        exports = {}
        for i, node in cluster.nodes.items():
            out = tmp_path / f"node-{i}.swmeta"
            done = metadata(node, "export", "--output", str(out))
            assert f"{source.name} metadata" in done.stdout, done.stdout
            assert "read from a stopped node's data directory" in done.stdout, done.stdout
            exports[i] = (exported_index(done.stdout), out)
        # Every node's export: the most advanced one is the cluster's (after a clean stop all
        # are at the same index).
        most = max(exports, key=lambda i: exports[i][0])
        index, chosen = exports[most]
        dump = tmp_path / "exported.json"
        metadata(cluster.nodes[most], "export", "--output", str(dump), "--format", "json")
        logs_before = {i: sorted(p.relative_to(n.data_dir) for p in (n.data_dir / "logs")
                                 .rglob("*") if p.is_file())
                       for i, n in cluster.nodes.items()}

        cluster.backend = target
        for node in cluster.nodes.values():
            node.backend = target
            done = metadata(node, "import", str(chosen))
            assert f"of {target.name}" in done.stdout, done.stdout
        # The imported state, read back from the new backend before it starts, is the
        # exported one.
        imported_dump = tmp_path / "imported.json"
        metadata(cluster.nodes[1], "export", "--output", str(imported_dump), "--format", "json")
        assert state_hash(imported_dump) == state_hash(dump)
        assert json.loads(imported_dump.read_text())["applied_index"] == index
        # Importing again into the same backend is refused, and writes nothing.
        again = metadata(cluster.nodes[2], "import", str(chosen), ok=False)
        assert again.returncode != 0 and "already holds" in again.stderr, again.stderr
        # The partition logs are where they were.
        for i, n in cluster.nodes.items():
            assert sorted(p.relative_to(n.data_dir) for p in (n.data_dir / "logs").rglob("*")
                          if p.is_file()) == logs_before[i]

        cluster.start()
        status = subprocess.run(
            [str(switchyard_bin()), "cluster", "status", "--bootstrap", bootstrap],
            capture_output=True, text=True, timeout=60)
        assert f"metadata backend {target.name}," in status.stdout, status.stdout
        assert topic_ids(bootstrap, topic) == ids_before

        # The same idempotent producer goes on: no OutOfOrderSequence, nothing twice.
        produce(producer, tracker, topic, BEFORE, AFTER)
        assert len(tracker.acked) == BEFORE + AFTER

        consumer = group_consumer(bootstrap, group)
        consumer.subscribe([topic])
        rest = read(consumer, BEFORE + AFTER - len(first), "the records after the commit")
        consumer.close()
        assert not set(first) & set(rest), "a record was read again after its commit"
        assert sorted(first + rest) == sorted(f"k{i}".encode() for i in range(BEFORE + AFTER))

        # Everything in the topic, exactly once.
        reader = Consumer(confluent_conf(bootstrap, group_id=f"all-{uuid.uuid4().hex[:8]}",
                                         auto_offset_reset="earliest",
                                         enable_auto_commit=False))
        reader.subscribe([topic])
        everything = read(reader, BEFORE + AFTER, "the whole topic")
        extra = reader.consume(num_messages=100, timeout=2.0)
        reader.close()
        assert sorted(everything) == sorted(f"k{i}".encode() for i in range(BEFORE + AFTER))
        assert [m for m in extra if m.error() is None] == [], "duplicates in the topic"
    finally:
        if producer is not None:
            producer.flush(5)
        cluster.close()


@pytest.fixture
def exported(tmp_path):
    """A stopped three-node cluster of the first durable backend with a topic, and node 1's
    export file."""
    source = DURABLE[0]
    cluster = Cluster(source, tmp_path / "cluster")
    try:
        cluster.start()
        admin = confluent_admin(cluster.bootstrap())
        admin.create_topics(
            [NewTopic("kept", num_partitions=1, replication_factor=3)])["kept"].result(timeout=30)
        for node in cluster.nodes.values():
            assert node.stop() == 0
        out = tmp_path / "good.swmeta"
        metadata(cluster.nodes[1], "export", "--output", str(out))
        yield cluster, out
    finally:
        cluster.close()


def refused(node, file: Path, expected: str) -> None:
    target = DURABLE[1]
    node.backend = target
    target_dir = node.data_dir / "metadata" / target.name
    done = metadata(node, "import", str(file), ok=False)
    assert done.returncode != 0, done.stdout
    assert expected in done.stderr, done.stderr
    assert not target_dir.exists() or not any(target_dir.iterdir()), \
        f"a refused import wrote into {target_dir}"


def test_damaged_and_foreign_files_are_refused_and_nothing_is_written(exported, tmp_path):
    cluster, good = exported
    data = good.read_bytes()
    node = cluster.nodes[2]

    truncated = tmp_path / "truncated.swmeta"
    truncated.write_bytes(data[:-7])
    refused(node, truncated, "truncated")

    flipped = tmp_path / "flipped.swmeta"
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x40
    flipped.write_bytes(bytes(damaged))
    refused(node, flipped, "checksum mismatch")

    newer = tmp_path / "newer.swmeta"
    versioned = bytearray(data)
    versioned[8] = 99
    newer.write_bytes(bytes(versioned))
    refused(node, newer, "file version 99 is not supported")

    not_export = tmp_path / "notes.txt"
    not_export.write_text("not an export\n")
    refused(node, not_export, "not a Switchyard metadata export")

    # Another cluster's export into this cluster's data directory.
    other = Cluster(DURABLE[0], tmp_path / "other")
    try:
        other.start()
        for n in other.nodes.values():
            assert n.stop() == 0
        foreign = tmp_path / "foreign.swmeta"
        metadata(other.nodes[1], "export", "--output", str(foreign))
    finally:
        other.close()
    refused(node, foreign, "belongs to another cluster")

    # The good file still imports.
    node.backend = DURABLE[1]
    done = metadata(node, "import", str(good))
    assert "initialised node 2" in done.stdout, done.stdout


def live_export(cluster: Cluster, bootstrap: str, out: Path, *extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env["SWITCHYARD_CLUSTER_SECRET_FILE"] = str(cluster.secret_file)
    done = subprocess.run(
        [str(switchyard_bin()), "metadata", "export", "--output", str(out),
         "--bootstrap", bootstrap, *extra],
        env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{done.stderr}{done.stdout}"
    return done.stdout


@pytest.mark.parametrize("backend", DURABLE, ids=[b.name for b in DURABLE])
def test_a_live_export_is_a_backup_that_restores(backend, tmp_path):
    cluster = Cluster(backend, tmp_path / "cluster")
    try:
        cluster.start()
        admin = confluent_admin(cluster.bootstrap())
        admin.create_topics([NewTopic("backed-up", num_partitions=2, replication_factor=3)])[
            "backed-up"].result(timeout=30)
        ids = topic_ids(cluster.bootstrap(), "backed-up")
        group = "backed-up-group"
        consumer = group_consumer(cluster.bootstrap(), group)
        consumer.commit(offsets=[TopicPartition("backed-up", 0, 7),
                                 TopicPartition("backed-up", 1, 3)], asynchronous=False)
        consumer.close()

        # Asked through one node (a follower, for a backend without linearizable reads, sends
        # the export on to the metadata leader's broker).
        backup = tmp_path / "backup.swmeta"
        out = live_export(cluster, cluster.bootstrap(3), backup)
        linearizable = backend.guarantees.get("reads") == "local+linearizable"
        expected = ("read linearizably from the running cluster" if linearizable
                    else "read from the running cluster's metadata leader")
        assert f"{backend.name} metadata" in out and expected in out, out
        # It holds the users' salted SCRAM keys: its owner's only.
        assert backup.stat().st_mode & 0o777 == 0o600, oct(backup.stat().st_mode)
        dump = tmp_path / "backup.json"
        live_export(cluster, cluster.bootstrap(1), dump, "--format", "json")
        # A running node's data directory is neither read nor written offline.
        for args in (["export", "--output", str(tmp_path / "running.swmeta")],
                     ["import", str(backup)]):
            running = metadata(cluster.nodes[1], *args, ok=False)
            assert running.returncode != 0, running.stdout
            assert "another switchyard process is using the data directory" in running.stderr, \
                running.stderr
        assert not (tmp_path / "running.swmeta").exists()
        assert json.loads(dump.read_text())["state"]["topics"][0]["name"] == "backed-up"

        # A change after the backup, then the metadata is lost on every node.
        admin.create_topics([NewTopic("after-backup", num_partitions=1, replication_factor=3)])[
            "after-backup"].result(timeout=30)
        for node in cluster.nodes.values():
            assert node.stop() == 0
            lost = node.data_dir / "metadata" / backend.name
            lost.rename(node.data_dir / f"lost-{backend.name}")

        for node in cluster.nodes.values():
            metadata(node, "import", str(backup))
        cluster.start()
        bootstrap = cluster.bootstrap()
        assert topic_ids(bootstrap, "backed-up") == ids
        topics = confluent_admin(bootstrap).list_topics(timeout=15).topics
        assert "after-backup" not in topics, "a topic created after the backup came back"
        consumer = group_consumer(bootstrap, group)
        restored = {tp.partition: tp.offset for tp in consumer.committed(
            [TopicPartition("backed-up", 0), TopicPartition("backed-up", 1)], timeout=30)}
        consumer.close()
        assert restored == {0: 7, 1: 3}
    finally:
        cluster.close()
