"""Three brokers, one metadata backend: real clients against a cluster on loopback.

Every test runs once per backend that runs on several nodes (`switchyard backends` says
`nodes=multi`). Each node is a `switchyard serve` process with its own data dir, Kafka port
and cluster port; the nodes find each other through `--peers`.

Where a test waits for metadata to reach another node, or for a killed broker to be fenced,
it polls what clients see (Metadata, DescribeCluster): no client API reports those by
callback.
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from client_util import confluent_admin, confluent_conf, create_topic, wait_for
from cluster_util import (RECOVERY_S, committed, consume_all, layout, produce,
                          same_on_every_node)
from conftest import MULTI_NODE

pytestmark = pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")

def test_every_node_lists_the_brokers_and_a_topic_created_on_node_1(cluster, topic_name):
    create_topic(cluster.bootstrap(1), topic_name, 6)
    agreed = same_on_every_node(cluster, topic_name)
    assert agreed["brokers"] == [1, 2, 3]
    assert agreed["controller"] in (1, 2, 3)
    partitions = agreed["topics"][topic_name]
    assert sorted(partitions) == list(range(6))
    # Leaders spread over the brokers; without data replication each partition has one
    # replica, its leader, which is the whole ISR.
    assert {leader for leader, _, _ in partitions.values()} == {1, 2, 3}
    for leader, replicas, isr in partitions.values():
        assert replicas == [leader] and isr == [leader]


def test_replication_factor_above_one_is_refused_with_the_reason(cluster, topic_name):
    admin = confluent_admin(cluster.bootstrap(2))
    futures = admin.create_topics(
        [NewTopic(topic_name, num_partitions=1, replication_factor=3)], request_timeout=15)
    with pytest.raises(KafkaException) as refused:
        futures[topic_name].result(timeout=30)
    error = refused.value.args[0]
    assert error.name() == "INVALID_REPLICATION_FACTOR"
    assert "does not replicate partition data" in error.str()


def test_produce_and_consume_through_any_node(cluster, topic_name):
    create_topic(cluster.bootstrap(1), topic_name, 6)
    same_on_every_node(cluster, topic_name)
    produce(cluster.bootstrap(2), topic_name, 300)
    values = consume_all(cluster.bootstrap(3), topic_name, 300, f"g-{uuid.uuid4().hex[:8]}")
    assert sorted(values) == sorted(f"m-{i}".encode() for i in range(300))
    # Every node reports the same partition offsets.
    offsets = []
    for i in (1, 2, 3):
        consumer = Consumer(confluent_conf(cluster.bootstrap(i), group_id="watermarks"))
        try:
            offsets.append([consumer.get_watermark_offsets(TopicPartition(topic_name, p),
                                                           timeout=15)
                            for p in range(6)])
        finally:
            consumer.close()
    assert offsets[0] == offsets[1] == offsets[2]
    assert sum(high for _, high in offsets[0]) == 300


def test_offsets_committed_through_the_coordinator_are_read_from_another_node(
        cluster, topic_name):
    create_topic(cluster.bootstrap(1), topic_name, 3)
    produce(cluster.bootstrap(1), topic_name, 90)
    group = f"g-{uuid.uuid4().hex[:8]}"
    consume_all(cluster.bootstrap(1), topic_name, 90, group)
    first = committed(cluster.bootstrap(3), group, topic_name, 3)
    assert sum(first.values()) == 90, first
    assert committed(cluster.bootstrap(2), group, topic_name, 3) == first


def test_a_thousand_topics_auto_created_through_produce_are_listed_on_every_node(
        cluster):
    prefix = f"auto-{uuid.uuid4().hex[:6]}"
    topics = [f"{prefix}-{i}" for i in range(1000)]
    producer = Producer(confluent_conf(cluster.bootstrap(2), acks="all", linger_ms=20))
    errors = []
    for t in topics:
        producer.produce(t, b"x", on_delivery=lambda err, _m: err and errors.append(err))
    assert producer.flush(120) == 0, "messages left undelivered"
    assert not errors, errors[:5]

    def listed(node):
        names = confluent_admin(cluster.bootstrap(node)).list_topics(timeout=30).topics
        return all(t in names for t in topics)

    for node in (1, 2, 3):
        wait_for(lambda: listed(node), RECOVERY_S, f"node {node} to list all 1000 topics", 0.5)
