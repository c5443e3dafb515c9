"""Log compaction (`cleanup.policy=compact`) with real clients, on one node of every backend and
on three nodes (replication factor 3) of every multi-node backend.

- 100 keys × 100 updates and tombstones for 10 keys, to a topic with small segments and a
  cleaner that runs at once: a fresh consumer from the earliest offset sees every live key's
  latest value, no record of a deleted key once `delete.retention.ms` has passed, offsets that
  increase with gaps; the partition shrank on disk (on every replica).
- A keyless record to a compacted topic is refused (INVALID_RECORD).
- A leader change while a consumer reads a compacted range: it goes on without
  OFFSET_OUT_OF_RANGE (`auto.offset.reset=error`).
- A crash while cleaning: the broker aborts itself at a step of its cleans drawn from the seed
  (31, 32, or `SWITCHYARD_CONFORMANCE_SEED`) through `SWITCHYARD_CRASH_AT_CLEANER_STEP`; it
  starts again on the same data: the log opens, every acknowledged latest value is there, and
  the cleaner finishes.
- A Connect-style config topic: kafka-python writes 20 connector configs 50 times each; a fresh
  consumer reading from the beginning rebuilds exactly the latest configs.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition,
)
from confluent_kafka.admin import NewTopic
from kafka import KafkaConsumer, KafkaProducer

from client_util import FAST_REBALANCE_ENV, confluent_admin, confluent_conf, wait_for
from conftest import BACKENDS, MULTI_NODE, BrokerFactory, Cluster

KEYS = 100
UPDATES = 100
DELETED = range(0, 100, 10)
DEADLINE_S = 60
# The cleaner looks for work five times a second (Kafka's default is every 15 s).
CLEANER_ENV = {**FAST_REBALANCE_ENV, "SWITCHYARD_KAFKA__LOG_CLEANER_BACKOFF_MS": "200"}
# Small segments, so that most of the data is in closed (cleanable) ones; any dirty segment
# is worth a clean; tombstones live half a second.
COMPACTED = {
    "cleanup.policy": "compact",
    "segment.bytes": "16384",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "500",
}
# Filler records `roll` writes.
ROLL_RECORDS = 600
CRASH_SEEDS = ([int(os.environ["SWITCHYARD_CONFORMANCE_SEED"])]
               if os.environ.get("SWITCHYARD_CONFORMANCE_SEED") else [31, 32])


def create_compacted(bootstrap: str, name: str, replicas: int = 1) -> None:
    admin = confluent_admin(bootstrap)
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=1, replication_factor=replicas, config=COMPACTED)],
        operation_timeout=15, request_timeout=15)
    futures[name].result(timeout=30)


def key(k: int) -> bytes:
    return f"key-{k:03}".encode()


def produce_updates(bootstrap: str, topic: str) -> dict[bytes, int]:
    """Every key's updates 0..UPDATES-1 (value `<key>=<n>`), round after round, then the
    tombstones. Returns each key's latest acknowledged update (-1: its tombstone)."""
    acked: dict[bytes, int] = {}
    errors = []

    def delivered(err, msg):
        if err is not None:
            errors.append(err)
            return
        value = msg.value()
        acked[msg.key()] = -1 if value is None else int(value.split(b"=")[1])

    producer = Producer(confluent_conf(bootstrap, enable_idempotence=True, linger_ms=5))
    for n in range(UPDATES):
        for k in range(KEYS):
            producer.produce(topic, key=key(k), value=key(k) + b"=%d" % n, on_delivery=delivered)
        producer.poll(0)
    for k in DELETED:
        producer.produce(topic, key=key(k), value=None, on_delivery=delivered)
    assert producer.flush(DEADLINE_S) == 0
    assert not errors, errors[:3]
    return acked


def roll(bootstrap: str, topic: str) -> None:
    """Updates of one filler key, enough to close a segment, so the tombstones' segment becomes
    cleanable."""
    producer = Producer(confluent_conf(bootstrap, linger_ms=5))
    for n in range(ROLL_RECORDS):
        producer.produce(topic, key=b"filler", value=b"filler=%d" % n)
    assert producer.flush(DEADLINE_S) == 0


def read_all(bootstrap: str, topic: str, reset: str = "earliest",
             on_halfway=None) -> list[tuple[int, bytes, bytes | None]]:
    """(offset, key, value) of every record from the earliest offset up to the high watermark
    at the start, as a fresh consumer reads them. `on_halfway`, if given, runs once
    `KEYS // 2` records are read."""
    consumer = Consumer(confluent_conf(
        bootstrap, group_id=f"reader-{time.monotonic_ns()}", auto_offset_reset=reset,
        enable_auto_commit=False))
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        # Assigned at the earliest offset (as a fresh subscriber starts with
        # `auto.offset.reset=earliest`): `reset` then only answers an offset out of range.
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out = []
        deadline = time.monotonic() + DEADLINE_S
        while not out or out[-1][0] + 1 < high:
            assert time.monotonic() < deadline, (
                f"read {len(out)} records of {topic} (to {out[-1][0] if out else None}, "
                f"high watermark {high}) within {DEADLINE_S}s")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            out.append((msg.offset(), msg.key(), msg.value()))
            if on_halfway is not None and len(out) == KEYS // 2:
                on_halfway()
        return out
    finally:
        consumer.close()


def check_compacted(records, acked: dict[bytes, int], tombstones_gone: bool) -> None:
    offsets = [o for o, _, _ in records]
    assert offsets == sorted(set(offsets)), "offsets increase"
    assert offsets[-1] + 1 > len(offsets), "compaction left gaps"
    last: dict[bytes, bytes | None] = {}
    for _, k, v in records:
        last[k] = v
    for k, n in acked.items():
        if n == -1:
            if tombstones_gone:
                assert k not in last, f"deleted key {k!r} still read"
        else:
            assert last.get(k) is not None, f"{k!r} lost"
            assert int(last[k].split(b"=")[1]) >= n, f"{k!r}: {last[k]!r} older than update {n}"
    seen_per_key = sum(1 for _, k, _ in records if k != b"filler")
    assert seen_per_key < KEYS * UPDATES // 4, f"{seen_per_key} records of the keys left"


def partition_bytes(data_dir: Path, topic: str) -> int:
    """Bytes of the partition's segment files on this node's disk."""
    return sum(f.stat().st_size for f in (data_dir / "logs" / f"{topic}-0").glob("*.log"))


def compacted_everywhere(bootstrap: str, topic: str, data_dirs: list[Path],
                         acked: dict[bytes, int]) -> list:
    """Wait until every replica's log shrank and a fresh consumer sees no deleted key, rolling
    a segment each time (the tombstones go at a clean after `delete.retention.ms`)."""
    written = KEYS * UPDATES * 20

    def done():
        # The cleaner reports nothing to clients: its effect on disk and on what a consumer
        # reads is what the test waits for.
        if any(partition_bytes(d, topic) > written // 2 for d in data_dirs):
            roll(bootstrap, topic)
            return None
        records = read_all(bootstrap, topic)
        if any(k in records_keys(records) for k in (key(k) for k in DELETED)):
            roll(bootstrap, topic)
            return None
        return records

    records = wait_for(done, DEADLINE_S * 2, f"{topic} compacted on every replica", 0.5)
    check_compacted(records, acked, tombstones_gone=True)
    return records


def records_keys(records) -> set[bytes]:
    return {k for _, k, _ in records}


def test_compaction_keeps_the_latest_value_of_every_key(broker_factory, topic_name):
    broker = broker_factory.start(CLEANER_ENV)
    bootstrap = broker.bootstrap
    create_compacted(bootstrap, topic_name)
    acked = produce_updates(bootstrap, topic_name)
    roll(bootstrap, topic_name)
    compacted_everywhere(bootstrap, topic_name, [broker.data_dir], acked)

    # A keyless record is refused.
    errors = []
    producer = Producer(confluent_conf(bootstrap, enable_idempotence=False, retries=0))
    producer.produce(topic_name, value=b"no key", on_delivery=lambda e, m: errors.append(e))
    producer.flush(DEADLINE_S)
    assert errors and errors[0] is not None
    assert errors[0].code() == KafkaError.INVALID_RECORD, errors[0]


def test_a_connect_style_config_topic_reads_back_its_latest_configs(broker_factory, topic_name):
    broker = broker_factory.start(CLEANER_ENV)
    bootstrap = broker.bootstrap
    create_compacted(bootstrap, topic_name)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    latest = {}
    for version in range(50):
        for connector in range(20):
            config = {"name": f"connector-{connector}", "tasks.max": version % 4 + 1,
                      "version": version}
            latest[f"connector-{connector}"] = config
            producer.send(topic_name, key=f"connector-{connector}".encode(),
                          value=json.dumps(config).encode())
    producer.flush(DEADLINE_S)
    producer.close()
    roll(bootstrap, topic_name)
    # Compacted: the connectors' records shrank to about one each (the filler aside).
    wait_for(lambda: partition_bytes(broker.data_dir, topic_name) < 40_000, DEADLINE_S,
             "the config topic compacted", 0.2)

    consumer = KafkaConsumer(topic_name, bootstrap_servers=bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=3_000)
    configs = {}
    for msg in consumer:
        if msg.key != b"filler":
            configs[msg.key.decode()] = json.loads(msg.value)
    consumer.close()
    assert configs == latest


# A backend that keeps nothing across a restart loses the topic itself.
DURABLE = [b for b in BACKENDS if b.durable]


@pytest.mark.parametrize("seed", CRASH_SEEDS)
@pytest.mark.parametrize("durable_backend", DURABLE, ids=[b.name for b in DURABLE])
def test_a_crash_while_cleaning_loses_nothing(durable_backend, tmp_path, topic_name, seed):
    rng = random.Random(seed)
    factory = BrokerFactory(durable_backend, tmp_path)
    try:
        crash_while_cleaning(factory, topic_name, rng)
    finally:
        factory.close()


def crash_while_cleaning(factory: BrokerFactory, topic_name: str, rng: random.Random) -> None:
    # Written with the cleaner off: every record is acknowledged before the first clean.
    broker = factory.start({**CLEANER_ENV, "SWITCHYARD_KAFKA__LOG_CLEANER_ENABLE": "false"})
    bootstrap = broker.bootstrap
    create_compacted(bootstrap, topic_name)
    acked = produce_updates(bootstrap, topic_name)
    roll(bootstrap, topic_name)
    step = rng.randrange(0, 12)
    broker.kill9()
    broker.env = {**CLEANER_ENV, "SWITCHYARD_CRASH_AT_CLEANER_STEP": str(step)}
    # Not waited for: the abort may come before or after the broker is ready.
    broker.launch()
    # The abort is the broker's own: nothing a client sees says when it happens.
    wait_for(lambda: broker.proc.poll() is not None, DEADLINE_S,
             f"the broker to abort at cleaner step {step}", 0.1)
    assert broker.proc.returncode == -6, f"exited with {broker.proc.returncode}, not SIGABRT"
    assert "aborting at this cleaner step" in broker.log_text()
    broker.env = dict(CLEANER_ENV)
    broker.start()
    check_compacted_or_not(read_all(bootstrap, topic_name), acked)
    compacted_everywhere(bootstrap, topic_name, [broker.data_dir], acked)


def check_compacted_or_not(records, acked: dict[bytes, int]) -> None:
    """Right after the restart: whatever the cleaner had done, every key's latest acknowledged
    value (or a newer one) is there, and every offset holds at most one record."""
    offsets = [o for o, _, _ in records]
    assert offsets == sorted(set(offsets)), "offsets increase"
    last = {}
    for _, k, v in records:
        last[k] = v
    for k, n in acked.items():
        if n >= 0:
            assert last.get(k) is not None and int(last[k].split(b"=")[1]) >= n, (
                f"{k!r} lost: {last.get(k)!r}, acknowledged update {n}")


def written_cluster(cluster: Cluster, topic: str) -> tuple[str, dict[bytes, int]]:
    """Start `cluster`, create `topic` compacted with three replicas and write the updates
    and a segment's worth of filler to it: the bootstrap servers and what was acknowledged."""
    cluster.start()
    bootstrap = cluster.bootstrap()
    create_compacted(bootstrap, topic, replicas=3)
    acked = produce_updates(bootstrap, topic)
    roll(bootstrap, topic)
    return bootstrap, acked


@pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")
@pytest.mark.timeout(300)
def test_every_replica_compacts_and_a_leader_change_keeps_offsets(multi_backend, tmp_path,
                                                                  topic_name):
    cluster = Cluster(multi_backend, tmp_path, env=CLEANER_ENV)
    try:
        bootstrap, acked = written_cluster(cluster, topic_name)
        data_dirs = [node.data_dir for node in cluster.nodes.values()]
        before = compacted_everywhere(bootstrap, topic_name, data_dirs, acked)

        leader = confluent_admin(bootstrap).list_topics(topic_name, timeout=30) \
            .topics[topic_name].partitions[0].leader
        survivor = next(n for n in cluster.nodes if n != leader)
        # Half-way through the compacted range, its leader dies; the reader must go on at the
        # new leader without an offset out of range (`auto.offset.reset=error` fails on one).
        after = read_all(cluster.bootstrap(survivor), topic_name, reset="error",
                         on_halfway=lambda: cluster.nodes[leader].restart())
        assert after[:len(before)] == before[:len(after)]
        check_compacted(after, acked, tombstones_gone=True)
    finally:
        cluster.close()


def records_on_disk(data_dir: Path, topic: str) -> list[tuple[int, bytes, bytes | None]]:
    """(offset, key, value) of every record in the partition's segment files on this node's
    disk, read straight from the v2 batches (uncompressed, as these tests write them; control
    batches skipped)."""
    out = []
    for segment in sorted((data_dir / "logs" / f"{topic}-0").glob("*.log")):
        data = segment.read_bytes()
        pos = 0
        while pos + 61 <= len(data):
            base = int.from_bytes(data[pos:pos + 8], "big", signed=True)
            length = int.from_bytes(data[pos + 8:pos + 12], "big", signed=True)
            attributes = int.from_bytes(data[pos + 21:pos + 23], "big")
            count = int.from_bytes(data[pos + 57:pos + 61], "big", signed=True)
            assert attributes & 0x07 == 0, f"{segment}: a compressed batch"
            end = pos + 12 + length
            if not attributes & 0x20:
                at = pos + 61
                for _ in range(count):
                    _, at = varint(data, at)  # record length
                    at += 1  # attributes
                    _, at = varint(data, at)  # timestamp delta
                    delta, at = varint(data, at)
                    fields = []
                    for _ in range(2):
                        n, at = varint(data, at)
                        fields.append(None if n < 0 else data[at:at + n])
                        at += max(n, 0)
                    headers, at = varint(data, at)
                    assert headers == 0, "these tests write no headers"
                    out.append((base + delta, fields[0], fields[1]))
                assert at == end, f"{segment}: batch at {pos} does not end where it says"
            pos = end
    return out


def high_watermark_checkpoint(data_dir: Path, topic: str) -> int | None:
    """The partition's `high-watermark` checkpoint on this node, if written."""
    try:
        lines = (data_dir / "logs" / f"{topic}-0" / "high-watermark").read_text().split()
    except FileNotFoundError:
        return None
    return int(lines[-1]) if lines else None


def varint(data: bytes, at: int) -> tuple[int, int]:
    """A zigzag varint at `at`: its value and the position after it."""
    shift = value = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), at


@pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")
@pytest.mark.timeout(300)
def test_a_crash_while_cleaning_on_every_replica_loses_nothing(multi_backend, tmp_path,
                                                               topic_name):
    rng = random.Random(CRASH_SEEDS[0])
    cluster = Cluster(multi_backend, tmp_path,
                      env={**CLEANER_ENV, "SWITCHYARD_KAFKA__LOG_CLEANER_ENABLE": "false",
                           "SWITCHYARD_KAFKA__REPLICA_HIGH_WATERMARK_CHECKPOINT_INTERVAL_MS":
                               "100"})
    try:
        bootstrap, acked = written_cluster(cluster, topic_name)
        # A replica compacts only below the high watermark it knows: after the restart, a
        # follower knows its checkpoint until the leader tells it more (and the leader may
        # have aborted by then). The checkpoint file is the only place that says it is there.
        end = KEYS * UPDATES + len(DELETED) + ROLL_RECORDS
        wait_for(lambda: all(high_watermark_checkpoint(n.data_dir, topic_name) == end
                             for n in cluster.nodes.values()),
                 DEADLINE_S, "every replica to checkpoint the high watermark", 0.1)
        # Every node starts again with its cleaner on and aborts at its own step of it.
        steps = {}
        for i, node in cluster.nodes.items():
            node.kill9()
            # Within the first clean's steps (key map, then per segment: written, indexes
            # removed, swapped), which any replica with a closed segment takes.
            steps[i] = rng.randrange(0, 4)
            # The cleaner's first rounds find no replica open; it then waits 3 s before the
            # next, by which time every node registered (checked below): a node that aborted
            # first cannot keep another from registering (the wal primary, or a quorum).
            node.env = {**node.env, "SWITCHYARD_KAFKA__LOG_CLEANER_ENABLE": "true",
                        "SWITCHYARD_KAFKA__LOG_CLEANER_BACKOFF_MS": "3000",
                        "SWITCHYARD_CRASH_AT_CLEANER_STEP": str(steps[i])}
        cluster.start()
        # The aborts are the brokers' own: nothing a client sees says when they happen.
        wait_for(lambda: not cluster.running(), DEADLINE_S,
                 f"every node to abort at its cleaner step {steps}", 0.1)
        for i, node in cluster.nodes.items():
            assert node.proc.returncode == -6, f"node {i} exited with {node.proc.returncode}"
            node.env = {**{k: v for k, v in node.env.items()
                           if k != "SWITCHYARD_CRASH_AT_CLEANER_STEP"}, **CLEANER_ENV}
        marks = {i: node.log_size() for i, node in cluster.nodes.items()}
        cluster.start()
        for i, node in cluster.nodes.items():
            log = node.log_text(marks[i]).lower()
            assert "corrupt" not in log and "cannot open" not in log, f"node {i}: {log[-3000:]}"
            # Whatever each replica's cleaner had done, its log holds every key's latest
            # acknowledged value.
            check_compacted_or_not(records_on_disk(node.data_dir, topic_name), acked)
        compacted_everywhere(bootstrap, topic_name,
                             [n.data_dir for n in cluster.nodes.values()], acked)
    finally:
        cluster.close()


@pytest.mark.parametrize("durable_backend", DURABLE, ids=[b.name for b in DURABLE])
def test_old_segments_of_a_compacted_topic_survive_a_restart(durable_backend, tmp_path,
                                                             topic_name):
    """A restarted broker knows its topics' configs only once it opens their logs: retention
    must not meanwhile apply the broker's defaults (`delete`, 7 days) to a compacted topic whose
    records are older than that."""
    factory = BrokerFactory(durable_backend, tmp_path)
    try:
        broker = factory.start({**FAST_REBALANCE_ENV,
                                "SWITCHYARD_KAFKA__LOG_CLEANER_ENABLE": "false",
                                "SWITCHYARD_KAFKA__LOG_RETENTION_CHECK_INTERVAL_MS": "50"})
        bootstrap = broker.bootstrap
        create_compacted(bootstrap, topic_name)
        month_ago = int(time.time() * 1000) - 30 * 24 * 3600 * 1000
        producer = Producer(confluent_conf(bootstrap, linger_ms=5, batch_num_messages=100))
        for n in range(2_000):
            producer.produce(topic_name, key=key(n % KEYS), value=b"old=%d" % n,
                             timestamp=month_ago)
        assert producer.flush(DEADLINE_S) == 0
        assert len(list((broker.data_dir / "logs" / f"{topic_name}-0").glob("*.log"))) >= 3
        broker.restart()
        # Reading opens the log as a replica; retention ran every 50 ms since the start.
        records = read_all(bootstrap, topic_name)
        assert [o for o, _, _ in records] == list(range(2_000))
    finally:
        factory.close()
