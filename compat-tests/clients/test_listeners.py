"""Named Kafka listeners (`kafka.listeners`): clients of each listener are told that
listener's endpoints, and brokers replicate over the inter-broker listener only. One node of
every backend with a PLAINTEXT and a SASL_SSL listener; three nodes of every multi-node
backend with an INTERNAL (SASL_PLAINTEXT, inter-broker) and an EXTERNAL (PLAINTEXT) listener.
"""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer

from client_util import CONFLUENT_BASE, FAST_REBALANCE_ENV
from conftest import MULTI_NODE, BrokerProcess, Cluster, reserve_port, write_secret
from test_sasl import create_user
from test_tls import Certificates, sasl_ssl


def listeners_env(listeners: dict[str, int], protocols: dict[str, str] | None = None,
                  inter_broker: str | None = None) -> dict:
    """`kafka.listeners` on 127.0.0.1, name → port, as environment variables."""
    env = {"SWITCHYARD_KAFKA__LISTENERS": json.dumps(
        [f"{name}://127.0.0.1:{port}" for name, port in listeners.items()])}
    if protocols:
        env["SWITCHYARD_KAFKA__LISTENER_SECURITY_PROTOCOL_MAP"] = json.dumps(
            [f"{name}:{protocol}" for name, protocol in protocols.items()])
    if inter_broker:
        env["SWITCHYARD_KAFKA__INTER_BROKER_LISTENER_NAME"] = inter_broker
    return env


def broker_ports(conf: dict) -> set[int]:
    """The ports the cluster's Metadata answer names, asked through `conf`'s bootstrap."""
    metadata = AdminClient(conf).list_topics(timeout=15)
    return {b.port for b in metadata.brokers.values()}


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("listener-certificates"))


def test_one_node_answers_each_listener_with_its_own_endpoint(backend, certificates, tmp_path,
                                                              topic_name):
    plaintext, secured = reserve_port(), reserve_port()
    secret = write_secret(tmp_path / "cluster.secret")
    node = BrokerProcess(backend, tmp_path, {
        **FAST_REBALANCE_ENV,
        **certificates.listener_env("PLAINTEXT"),
        **listeners_env({"PLAINTEXT": plaintext, "SASL_SSL": secured}),
        "SWITCHYARD_KAFKA__SASL_ENABLED_MECHANISMS": '["SCRAM-SHA-512"]',
        "SWITCHYARD_CLUSTER_SECRET_FILE": str(secret)}, port=plaintext)
    try:
        node.start()
        create_user(secret, f"127.0.0.1:{plaintext}", "erin", "erin-secret")
        over_tls = sasl_ssl(certificates, f"127.0.0.1:{secured}", "erin", "erin-secret")
        plain = {"bootstrap.servers": f"127.0.0.1:{plaintext}", **CONFLUENT_BASE}
        assert broker_ports(over_tls) == {secured}
        assert broker_ports(plain) == {plaintext}

        # Written over SASL_SSL (the client reaches the leader at the SASL_SSL endpoint it was
        # told), read over PLAINTEXT by the other client family.
        admin = AdminClient(over_tls)
        admin.create_topics([NewTopic(topic_name, num_partitions=1, replication_factor=1)],
                            request_timeout=15)[topic_name].result(timeout=30)
        producer = Producer({**over_tls, "acks": "all"})
        for i in range(10):
            producer.produce(topic_name, value=f"v{i}".encode())
        assert producer.flush(30) == 0
        consumer = KafkaConsumer(topic_name, bootstrap_servers=f"127.0.0.1:{plaintext}",
                                 auto_offset_reset="earliest", consumer_timeout_ms=15_000)
        try:
            values = [m.value for m in consumer]
        finally:
            consumer.close()
        assert values == [f"v{i}".encode() for i in range(10)]
    finally:
        node.close()


@pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")
def test_three_nodes_replicate_over_the_internal_listener(multi_backend, tmp_path, topic_name):
    cluster = Cluster(multi_backend, tmp_path, env={
        "SWITCHYARD_KAFKA__SASL_ENABLED_MECHANISMS": '["SCRAM-SHA-512"]'})
    for node in cluster.nodes.values():
        # Clients use EXTERNAL (the port the harness reserved for them); brokers INTERNAL.
        node.env.update(listeners_env(
            {"INTERNAL": reserve_port(), "EXTERNAL": node.port},
            {"INTERNAL": "SASL_PLAINTEXT", "EXTERNAL": "PLAINTEXT"}, "INTERNAL"))
    try:
        cluster.start()
        conf = {"bootstrap.servers": cluster.bootstrap(), **CONFLUENT_BASE}
        assert broker_ports(conf) == {node.port for node in cluster.nodes.values()}
        admin = AdminClient(conf)
        admin.create_topics([NewTopic(topic_name, num_partitions=3, replication_factor=3)],
                            request_timeout=15)[topic_name].result(timeout=30)
        # acks=all on RF=3 completes only once both followers fetched: over INTERNAL, the
        # only listener that serves replica fetches.
        producer = Producer({**conf, "acks": "all", "enable.idempotence": True})
        for i in range(30):
            producer.produce(topic_name, key=str(i).encode(), value=f"m{i}".encode())
        assert producer.flush(60) == 0
        consumer = Consumer({**conf, "group.id": "listeners", "auto.offset.reset": "earliest"})
        consumer.subscribe([topic_name])
        seen = set()
        try:
            for _ in range(600):
                message = consumer.poll(0.1)
                if message is not None and message.error() is None:
                    seen.add(message.value())
                if len(seen) == 30:
                    break
        finally:
            consumer.close()
        assert seen == {f"m{i}".encode() for i in range(30)}
        for node in cluster.nodes.values():
            assert "listener=INTERNAL" in node.log_text()
    finally:
        cluster.close()
