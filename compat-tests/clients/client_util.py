"""Helpers shared by the real-client test modules."""

from __future__ import annotations

import logging
import time

from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient

# Kafka's default is 3 s; the suite's brokers run with a short delay to stay fast. One test
# (`test_groups.py::test_default_initial_rebalance_delay`) starts a broker without this override.
FAST_REBALANCE_ENV = {"SWITCHYARD_KAFKA__GROUP_INITIAL_REBALANCE_DELAY_MS": "200"}

# librdkafka logs to stderr by default; route its log lines through Python logging instead so a
# passing run stays quiet and a failing one shows them in the captured log.
CONFLUENT_BASE = {"logger": logging.getLogger("librdkafka")}


def confluent_conf(bootstrap: str, **extra) -> dict:
    conf = {"bootstrap.servers": bootstrap, **CONFLUENT_BASE}
    conf.update({k.replace("_", "."): v for k, v in extra.items()})
    return conf


def kp_admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)


def confluent_admin(bootstrap: str) -> AdminClient:
    return AdminClient(confluent_conf(bootstrap))


def create_topic(bootstrap: str, name: str, partitions: int, configs: dict | None = None) -> None:
    """Create a topic with the confluent admin client and wait for the broker's answer."""
    admin = confluent_admin(bootstrap)
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=configs or {})],
        operation_timeout=15, request_timeout=15)
    futures[name].result(timeout=30)


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.05):
    """Poll `predicate` until it returns a truthy value or the deadline passes.

    Only for state that no client API reports by callback or blocking call; each caller says
    why in a comment.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)
