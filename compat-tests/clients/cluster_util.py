"""Helpers of the cluster tests: what each node's Metadata says, producing and consuming with
deadlines, committed offsets as a client on some node reads them.

Where a helper waits for metadata to reach another node, it polls what clients see
(Metadata): no client API reports that by callback.
"""

from __future__ import annotations

import re
import subprocess

from confluent_kafka import Consumer, Producer
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition

from client_util import confluent_admin, confluent_conf, wait_for
from conftest import Cluster, switchyard_bin

# How long a cluster may take to elect a new metadata leader and fence a killed broker, and
# clients to follow. Generous: a loaded CI machine runs three brokers and the clients.
RECOVERY_S = 60.0


def layout(bootstrap: str, topic: str | None = None) -> dict:
    """What one node's Metadata says: live brokers, and per topic the partitions' (leader,
    replicas, ISR). Not the controller id: each broker names itself."""
    md = confluent_admin(bootstrap).list_topics(topic, timeout=15)
    return {
        "brokers": sorted(md.brokers),
        "topics": {
            name: {p.id: (p.leader, list(p.replicas), list(p.isrs))
                   for p in t.partitions.values()}
            for name, t in md.topics.items() if t.error is None
        },
    }


def same_on_every_node(cluster: Cluster, topic: str | None = None, nodes=None) -> dict:
    """The layout once every node in `nodes` (default: all running) reports the same one."""
    nodes = nodes or cluster.running()

    def agreed():
        seen = [layout(cluster.bootstrap(i), topic) for i in nodes]
        return seen[0] if all(s == seen[0] for s in seen) else None

    return wait_for(agreed, RECOVERY_S, f"nodes {nodes} to agree on the metadata", 0.2)


def metadata_leader(bootstrap: str) -> int | None:
    """The broker on the metadata leader's node, as `switchyard cluster status` reports it
    (asking DescribeQuorum); None while no leader is known. Metadata's controller id is no
    guide: as in Kafka 4 it names the broker that answers."""
    status = subprocess.run(
        [str(switchyard_bin()), "cluster", "status", "--bootstrap", bootstrap],
        capture_output=True, text=True, timeout=60)
    found = re.search(r"metadata leader node (\d+)", status.stdout)
    return int(found.group(1)) if found else None


def produce(bootstrap: str, topic: str, count: int, prefix: str = "m") -> None:
    producer = Producer(confluent_conf(bootstrap, acks="all", linger_ms=5))
    errors = []

    def report(err, _msg):
        if err is not None:
            errors.append(err)

    for i in range(count):
        producer.produce(topic, key=str(i).encode(), value=f"{prefix}-{i}".encode(),
                         on_delivery=report)
    assert producer.flush(60) == 0, "messages left undelivered"
    assert not errors, errors[:5]


def consume_all(bootstrap: str, topic: str, count: int, group: str) -> list[bytes]:
    consumer = Consumer(confluent_conf(
        bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False))
    values = []
    try:
        consumer.subscribe([topic])
        # Bounded by the deadline of `wait_for`; each poll blocks up to a second.
        def read():
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                values.append(msg.value())
            return len(values) >= count
        wait_for(read, RECOVERY_S, f"{count} messages of {topic}", 0)
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return values


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False, request_timeout_ms=30_000)
    try:
        return {p: consumer.committed(KpTopicPartition(topic, p)) for p in range(partitions)}
    finally:
        consumer.close()
