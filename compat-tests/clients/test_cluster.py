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
from kafka.protocol.consumer import (FetchResponse, HeartbeatRequest, HeartbeatResponse,
                                     OffsetFetchRequest, OffsetFetchResponse)
from kafka.protocol.metadata import (FindCoordinatorRequest, FindCoordinatorResponse,
                                     MetadataRequest, MetadataResponse)

from client_util import confluent_admin, confluent_conf, create_topic, wait_for
from cluster_util import (RECOVERY_S, committed, consume_all, layout, produce,
                          same_on_every_node)
from conftest import MULTI_NODE
from raw_kafka import FETCH_VERSION, RawConnection, idempotent_batch

NOT_LEADER_OR_FOLLOWER = 6
NOT_COORDINATOR = 16

pytestmark = pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")

def test_every_node_lists_the_brokers_and_a_topic_created_on_node_1(cluster, topic_name):
    create_topic(cluster.bootstrap(1), topic_name, 6)
    agreed = same_on_every_node(cluster, topic_name)
    assert agreed["brokers"] == [1, 2, 3]
    # As in Kafka 4, the controller a broker names is a live broker: itself. (Asked on one
    # connection per node: a real client may send Metadata to any broker it knows.)
    for node in (1, 2, 3):
        with RawConnection(cluster.bootstrap(node)) as conn:
            response = conn.request(MetadataRequest(topics=[]), MetadataResponse, 1)
            assert response.controller_id == node, response
    partitions = agreed["topics"][topic_name]
    assert sorted(partitions) == list(range(6))
    # Leaders spread over the brokers; without data replication each partition has one
    # replica, its leader, which is the whole ISR.
    assert {leader for leader, _, _ in partitions.values()} == {1, 2, 3}
    for leader, replicas, isr in partitions.values():
        assert replicas == [leader] and isr == [leader]


def test_replication_factor_up_to_the_broker_count_is_placed_and_above_it_refused(
        cluster, topic_name):
    admin = confluent_admin(cluster.bootstrap(2))
    futures = admin.create_topics(
        [NewTopic(f"{topic_name}-3", num_partitions=3, replication_factor=3),
         NewTopic(f"{topic_name}-4", num_partitions=1, replication_factor=4)],
        request_timeout=15)
    futures[f"{topic_name}-3"].result(timeout=30)
    with pytest.raises(KafkaException) as refused:
        futures[f"{topic_name}-4"].result(timeout=30)
    error = refused.value.args[0]
    assert error.name() == "INVALID_REPLICATION_FACTOR"
    assert "larger than the 3 available brokers" in error.str()
    # Every broker holds a replica of every partition; leaders spread; all in sync.
    partitions = same_on_every_node(cluster, f"{topic_name}-3")["topics"][f"{topic_name}-3"]
    assert {leader for leader, _, _ in partitions.values()} == {1, 2, 3}
    for leader, replicas, isr in partitions.values():
        assert sorted(replicas) == [1, 2, 3] and replicas[0] == leader
        assert sorted(isr) == [1, 2, 3]


def test_produce_and_fetch_at_a_broker_that_does_not_lead_get_not_leader_or_follower(
        cluster, topic_name):
    create_topic(cluster.bootstrap(1), topic_name, 3)
    partitions = same_on_every_node(cluster, topic_name)["topics"][topic_name]
    for partition, (leader, _, _) in partitions.items():
        other = next(n for n in (1, 2, 3) if n != leader)
        with RawConnection(cluster.bootstrap(other)) as conn:
            # producer id -1: a plain batch, no idempotence.
            answer = conn.produce(topic_name, partition, idempotent_batch(-1, -1, -1, [b"x"]))
            assert answer.error_code == NOT_LEADER_OR_FOLLOWER, (partition, leader, other)
            fetched = conn.request(
                conn.fetch_request(topic_name, partition, 0, max_wait_ms=0, min_bytes=0),
                FetchResponse, FETCH_VERSION)
            assert fetched.responses[0].partitions[0].error_code == NOT_LEADER_OR_FOLLOWER
        with RawConnection(cluster.bootstrap(leader)) as conn:
            answer = conn.produce(topic_name, partition, idempotent_batch(-1, -1, -1, [b"x"]))
            assert answer.error_code == 0, (partition, leader)


def test_each_group_has_one_coordinator_and_the_others_say_not_coordinator(cluster):
    groups = [f"placement-{i}-{uuid.uuid4().hex[:6]}" for i in range(12)]
    coordinators = {}
    for group in groups:
        answers = set()
        for node in (1, 2, 3):
            with RawConnection(cluster.bootstrap(node)) as conn:
                response = conn.request(FindCoordinatorRequest(key=group, key_type=0),
                                        FindCoordinatorResponse, 2)
                assert response.error_code == 0, response
                answers.add(response.node_id)
        assert len(answers) == 1, (group, answers)
        coordinators[group] = answers.pop()
    assert set(coordinators.values()) <= {1, 2, 3}
    assert len(set(coordinators.values())) > 1, coordinators
    for group, coordinator in coordinators.items():
        for node in (1, 2, 3):
            with RawConnection(cluster.bootstrap(node)) as conn:
                response = conn.request(
                    HeartbeatRequest(group_id=group, generation_id=1, member_id="m"),
                    HeartbeatResponse, 1)
                if node == coordinator:
                    assert response.error_code != NOT_COORDINATOR, (group, node)
                else:
                    assert response.error_code == NOT_COORDINATOR, (group, node)
                # OffsetFetch v1 has no top-level error: each partition asked for carries it.
                fetched = conn.request(
                    OffsetFetchRequest(group_id=group, topics=[
                        OffsetFetchRequest.OffsetFetchRequestTopic(
                            name="t", partition_indexes=[0, 1])]),
                    OffsetFetchResponse, 1)
                codes = {p.error_code for t in fetched.topics for p in t.partitions}
                expected = {0} if node == coordinator else {NOT_COORDINATOR}
                assert codes == expected, (group, node, fetched)


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
