"""Partition data replication on three brokers: replication factor 3 with `acks=all` means an
acknowledged message survives the loss of its partition's leader.

Runs once per backend that runs on several nodes, each test on a fresh cluster. A replica's
log is read from its data directory (`logs/<topic>-<partition>/*.log`): followers store the
leader's batches byte for byte, so identical replicas have identical segment files. Waiting
for replicas to catch up or for a broker to rejoin the ISR polls what clients see (Metadata)
or the files: neither is reported by callback.
"""

from __future__ import annotations

import struct
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import NewTopic

from client_util import confluent_admin, confluent_conf, wait_for
from cluster_util import RECOVERY_S, metadata_leader, layout, same_on_every_node
from conftest import MULTI_NODE, BrokerProcess

pytestmark = pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")

# Record batch header: baseOffset (8) batchLength (4) ... lastOffsetDelta at byte 23.
BATCH_LENGTH_AT, LAST_OFFSET_DELTA_AT, LOG_OVERHEAD = 8, 23, 12


def replica_log(node: BrokerProcess, topic: str, partition: int = 0) -> tuple[int, bytes]:
    """A replica's log end offset and its batches, read from the node's segment files."""
    directory = node.data_dir / "logs" / f"{topic}-{partition}"
    segments = sorted(directory.glob("*.log"))
    if not segments:
        return 0, b""
    data = b"".join(s.read_bytes() for s in segments)
    end = int(segments[0].stem)
    position = 0
    while position + LOG_OVERHEAD <= len(data):
        base, length = struct.unpack_from(">qi", data, position)
        if length <= 0 or position + LOG_OVERHEAD + length > len(data):
            break  # an append in progress
        (delta,) = struct.unpack_from(">i", data, position + LAST_OFFSET_DELTA_AT)
        end = base + delta + 1
        position += LOG_OVERHEAD + length
    return end, data[:position]


def create_replicated(cluster, topic: str, replicas: list[int] | None = None) -> None:
    """One partition, three replicas: placed by the broker, or on `replicas` (leader first)."""
    admin = confluent_admin(cluster.bootstrap())
    if replicas is None:
        new = NewTopic(topic, num_partitions=1, replication_factor=3,
                       config={"min.insync.replicas": "2"})
    else:
        new = NewTopic(topic, num_partitions=1, replica_assignment=[replicas], config={"min.insync.replicas": "2"})
    admin.create_topics([new], request_timeout=15)[topic].result(timeout=30)


def isr_of(cluster, topic: str, nodes) -> tuple[int, list[int]]:
    """(leader, sorted ISR) once every node in `nodes` reports the same."""
    partitions = same_on_every_node(cluster, topic, nodes)["topics"][topic]
    leader, _, isr = partitions[0]
    return leader, sorted(isr)


def test_acks_all_puts_every_message_on_every_replica(cluster_factory, topic_name):
    cluster = cluster_factory.start()
    create_replicated(cluster, topic_name)
    leader, isr = isr_of(cluster, topic_name, [1, 2, 3])
    assert isr == [1, 2, 3]

    producer = Producer(confluent_conf(cluster.bootstrap(), acks="all", linger_ms=5))
    errors = []
    for i in range(1000):
        producer.produce(topic_name, value=f"m-{i}".encode(),
                         on_delivery=lambda err, _m: err and errors.append(err))
    assert producer.flush(60) == 0, "messages left undelivered"
    assert not errors, errors[:5]

    # acks=all answered once the whole ISR had each batch: every replica holds all 1,000.
    logs = {n: replica_log(cluster.nodes[n], topic_name) for n in (1, 2, 3)}
    assert {n: end for n, (end, _) in logs.items()} == {1: 1000, 2: 1000, 3: 1000}
    assert logs[1][1] == logs[2][1] == logs[3][1], "replicas differ"
    assert isr_of(cluster, topic_name, [1, 2, 3]) == (leader, [1, 2, 3])

    values = read_all(cluster.bootstrap(), topic_name, 1000)
    assert values == [f"m-{i}".encode() for i in range(1000)]


def test_min_insync_replicas_refuses_acks_all_when_the_isr_is_too_small(cluster_factory,
                                                                        topic_name):
    cluster = cluster_factory.start()
    leader_node = metadata_leader(cluster.bootstrap())
    others = [n for n in (1, 2, 3) if n != leader_node]
    # Two replicas, neither on the metadata leader's node, so killing them leaves the
    # metadata quorum alone.
    admin = confluent_admin(cluster.bootstrap())
    admin.create_topics([NewTopic(topic_name, num_partitions=1, replica_assignment=[others],
                                  config={"min.insync.replicas": "2"})],
                        request_timeout=15)[topic_name].result(timeout=30)
    leader, isr = isr_of(cluster, topic_name, [1, 2, 3])
    assert (leader, isr) == (others[0], sorted(others))
    cluster.nodes[others[1]].kill9()
    # Fenced: the ISR shrinks to the leader alone, below min.insync.replicas.
    live = [n for n in (1, 2, 3) if n != others[1]]
    wait_for(lambda: isr_of(cluster, topic_name, live)[1] == [others[0]], RECOVERY_S,
             "the ISR to shrink", 0.2)
    producer = Producer(confluent_conf(cluster.bootstrap(*live), acks="all", retries=0,
                                       message_timeout_ms=20_000))
    outcome = []
    producer.produce(topic_name, value=b"x", on_delivery=lambda err, _m: outcome.append(err))
    producer.flush(30)
    assert len(outcome) == 1 and outcome[0] is not None
    assert outcome[0].name() == "NOT_ENOUGH_REPLICAS", outcome[0]
    # acks=1 does not need the ISR.
    one = Producer(confluent_conf(cluster.bootstrap(*live), acks=1))
    one.produce(topic_name, value=b"y")
    assert one.flush(30) == 0


def read_all(bootstrap: str, topic: str, count: int) -> list[bytes]:
    """The first `count` messages of partition 0, read by a fresh consumer from the start."""
    consumer = Consumer(confluent_conf(bootstrap, group_id=f"g-{uuid.uuid4().hex[:8]}",
                                       auto_offset_reset="earliest", enable_auto_commit=False))
    values = []
    try:
        consumer.subscribe([topic])

        def read():
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                values.append(msg.value())
            return len(values) >= count
        wait_for(read, RECOVERY_S, f"{count} messages of {topic}", 0)
    finally:
        consumer.close()
    return values


class Produced:
    """An idempotent acks=all producer writing numbered messages in a thread; records which
    were acknowledged."""

    def __init__(self, bootstrap: str, topic: str):
        self.producer = Producer(confluent_conf(
            bootstrap, acks="all", enable_idempotence=True, linger_ms=2,
            message_timeout_ms=120_000))
        self.topic = topic
        self.acked: set[bytes] = set()
        self.failed: list = []
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def report(self, err, msg):
        if err is None:
            self.acked.add(msg.value())
        else:
            self.failed.append(err)

    def run(self):
        while not self.stop.is_set():
            try:
                self.producer.produce(self.topic, value=f"v-{self.sent}".encode(),
                                      on_delivery=self.report)
                self.sent += 1
            except BufferError:
                pass
            self.producer.poll(0.005)

    def finish(self):
        self.stop.set()
        self.thread.join(30)
        assert self.producer.flush(150) == 0, "messages left undelivered"


class Consumed:
    """A consumer in a group reading in a thread, never restarted."""

    def __init__(self, bootstrap: str, topic: str):
        self.consumer = Consumer(confluent_conf(
            bootstrap, group_id=f"g-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest"))
        self.consumer.subscribe([topic])
        self.values: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            msg = self.consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                self.values.append(msg.value())

    def finish(self):
        self.stop.set()
        self.thread.join(30)
        self.consumer.close()


def test_killing_the_leader_loses_and_duplicates_nothing_and_it_rejoins(cluster_factory,
                                                                        topic_name):
    cluster = cluster_factory.start()
    # The partition leader is not the metadata leader: this is partition failover, with the
    # metadata quorum intact (wal fails over its metadata only by hand).
    leader_node = metadata_leader(cluster.bootstrap())
    victim = next(n for n in (1, 2, 3) if n != leader_node)
    others = [n for n in (1, 2, 3) if n != victim]
    create_replicated(cluster, topic_name, [victim, *others])
    assert isr_of(cluster, topic_name, [1, 2, 3]) == (victim, [1, 2, 3])

    produced = Produced(cluster.bootstrap(), topic_name)
    consumed = Consumed(cluster.bootstrap(), topic_name)
    produced.thread.start()
    consumed.thread.start()
    wait_for(lambda: len(produced.acked) >= 500 and len(consumed.values) >= 100, RECOVERY_S,
             "traffic before the kill", 0.05)
    cluster.nodes[victim].kill9()
    acked_at_kill = len(produced.acked)
    new_leader, isr = wait_for(
        lambda: (lambda li: li if li[0] in others else None)(isr_of(cluster, topic_name, others)),
        RECOVERY_S, "a new partition leader", 0.2)
    assert isr == sorted(others)
    # The producer goes on through the new leader.
    wait_for(lambda: len(produced.acked) >= acked_at_kill + 500, RECOVERY_S,
             "writes through the new leader", 0.05)
    produced.finish()
    assert not produced.failed, produced.failed[:5]
    acked = produced.acked

    # The consumer, never restarted, goes on to read every acknowledged message.
    wait_for(lambda: acked <= set(consumed.values), RECOVERY_S,
             "the consumer to read every acknowledged message", 0.1)
    consumed.finish()

    # The partition holds each message once: no acknowledged one lost, none written twice
    # (the producer's retries across the failover were recognised).
    end, _ = replica_log(cluster.nodes[new_leader], topic_name)
    values = read_all(cluster.bootstrap(*others), topic_name, end)
    assert len(values) == len(set(values)), "a message was duplicated"
    assert acked <= set(values), "an acknowledged message was lost"
    assert set(values) <= {f"v-{i}".encode() for i in range(produced.sent)}

    # The killed broker restarts, cuts any tail the others never had, catches up, rejoins.
    cluster.nodes[victim].start()
    wait_for(lambda: isr_of(cluster, topic_name, [1, 2, 3])[1] == [1, 2, 3], RECOVERY_S,
             f"broker {victim} to rejoin the ISR", 0.2)
    assert isr_of(cluster, topic_name, [1, 2, 3])[0] == new_leader
    leader_end, leader_data = replica_log(cluster.nodes[new_leader], topic_name)
    wait_for(lambda: replica_log(cluster.nodes[victim], topic_name) == (leader_end, leader_data),
             RECOVERY_S, f"broker {victim}'s log to match the leader's", 0.1)
    for n in others:
        assert replica_log(cluster.nodes[n], topic_name) == (leader_end, leader_data)


def test_a_stalled_follower_leaves_the_isr_after_the_lag_time_and_rejoins(cluster_factory,
                                                                          topic_name):
    # A short lag time and a session long enough that the paused broker is never fenced: the
    # ISR shrinks because the follower stopped fetching, not because it was declared dead.
    cluster = cluster_factory.start(env={
        "SWITCHYARD_KAFKA__REPLICA_LAG_TIME_MAX_MS": "1500",
        "SWITCHYARD_KAFKA__BROKER_SESSION_TIMEOUT_MS": "120000",
    })
    leader_node = metadata_leader(cluster.bootstrap())
    leader, stalled = [n for n in (1, 2, 3) if n != leader_node]
    create_replicated(cluster, topic_name, [leader, stalled, leader_node])
    assert isr_of(cluster, topic_name, [1, 2, 3]) == (leader, [1, 2, 3])

    cluster.nodes[stalled].pause()
    try:
        # acks=all waits for the stalled member until the leader drops it from the ISR.
        producer = Producer(confluent_conf(cluster.bootstrap(leader), acks="all"))
        for i in range(10):
            producer.produce(topic_name, value=f"s-{i}".encode())
        assert producer.flush(60) == 0, "messages left undelivered"
        live = [leader, leader_node]
        assert isr_of(cluster, topic_name, live) == (leader, sorted(live))
        assert layout(cluster.bootstrap(*live))["brokers"] == [1, 2, 3], "nobody was fenced"
    finally:
        cluster.nodes[stalled].resume()

    # Resumed, it fetches what it missed and joins the ISR again.
    wait_for(lambda: isr_of(cluster, topic_name, [1, 2, 3])[1] == [1, 2, 3], RECOVERY_S,
             f"broker {stalled} to rejoin the ISR", 0.2)
    expected = replica_log(cluster.nodes[leader], topic_name)
    assert expected[0] == 10
    for n in (stalled, leader_node):
        assert replica_log(cluster.nodes[n], topic_name) == expected
