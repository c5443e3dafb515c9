"""Static membership (KIP-345) with real clients: a consumer with `group.instance.id` that
restarts within its session timeout takes its place back without a rebalance — the other
member keeps its partitions and sees no revocation — and a second process with the same
instance id fences the first (FENCED_INSTANCE_ID, fatal in librdkafka). Runs on one node of
every backend and on three nodes of every multi-node backend."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError

from client_util import FAST_REBALANCE_ENV, confluent_admin, confluent_conf, create_topic
from conftest import MULTI_NODE, Cluster

PARTITIONS = 4
SESSION_MS = 10_000
DEADLINE_S = 45


class Member:
    """A confluent-kafka consumer that records its assignments and revocations."""

    def __init__(self, bootstrap: str, group: str, topic: str, instance: str | None):
        conf = confluent_conf(bootstrap, group_id=group, session_timeout_ms=SESSION_MS,
                              heartbeat_interval_ms=300, auto_offset_reset="earliest",
                              enable_auto_commit=False)
        if instance is not None:
            conf["group.instance.id"] = instance
        self.errors: list[KafkaError] = []
        self.consumer = Consumer(conf)
        self.assigned: list[set[int]] = []
        self.revoked: list[set[int]] = []
        self.consumer.subscribe(
            [topic],
            on_assign=lambda _, ps: self.assigned.append({p.partition for p in ps}),
            on_revoke=lambda _, ps: self.revoked.append({p.partition for p in ps}))

    def poll(self, seconds: float = 0.1) -> None:
        message = self.consumer.poll(seconds)
        if message is not None and message.error() is not None:
            self.errors.append(message.error())

    def partitions(self) -> set[int]:
        return {p.partition for p in self.consumer.assignment()}

    def close(self) -> None:
        self.consumer.close()


def poll_until(members: list[Member], done, what: str) -> None:
    """Poll every member (the clients do their group work inside poll) until `done()`."""
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        for member in members:
            member.poll()


def group_state(bootstrap: str, group: str):
    admin = confluent_admin(bootstrap)
    return admin.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=30)


def run_scenario(bootstrap: str, topic: str) -> None:
    create_topic(bootstrap, topic, PARTITIONS)
    group = f"{topic}-g"
    # The first member leads the group and stays its leader: a static follower's restart
    # needs no rebalance (a static leader's restart rebalances, so the leader sees the
    # members it assigns to).
    steady = Member(bootstrap, group, topic, "steady")
    poll_until([steady], lambda: len(steady.partitions()) == PARTITIONS, "the first member")
    restarting = Member(bootstrap, group, topic, "restarting")
    try:
        poll_until([steady, restarting],
                   lambda: len(steady.partitions()) + len(restarting.partitions()) == PARTITIONS
                   and steady.partitions() and restarting.partitions(),
                   "both members to share the partitions")
        kept, theirs = steady.partitions(), restarting.partitions()
        before = group_state(bootstrap, group)
        old_member = next(m.member_id for m in before.members
                          if m.group_instance_id == "restarting")
        seen = (len(steady.assigned), len(steady.revoked))

        # A static member leaves no group on close: its place waits for its session timeout.
        restarting.close()
        restarting = Member(bootstrap, group, topic, "restarting")
        poll_until([steady, restarting], lambda: restarting.partitions() == theirs,
                   "the restarted member to get its partitions back")
        after = group_state(bootstrap, group)
        new_member = next(m.member_id for m in after.members
                          if m.group_instance_id == "restarting")
        assert new_member != old_member
        assert len(after.members) == 2, after.members
        # No rebalance: the other member kept its partitions and was told nothing.
        for _ in range(20):
            steady.poll()
        assert steady.partitions() == kept
        assert (len(steady.assigned), len(steady.revoked)) == seen

        # A second process with the same instance id fences the first.
        duplicate = Member(bootstrap, group, topic, "restarting")
        try:
            # librdkafka turns FENCED_INSTANCE_ID into a fatal error, which poll returns.
            poll_until([steady, restarting, duplicate],
                       lambda: any(e.code() == KafkaError._FATAL for e in restarting.errors),
                       "the older process to be fenced")
            reasons = " ".join(e.str() for e in restarting.errors)
            assert "fenced by other consumer with same group.instance.id" in reasons, reasons
        finally:
            duplicate.close()
    finally:
        steady.close()
        try:
            restarting.close()
        except Exception:  # a fenced consumer may refuse to close cleanly
            pass


@pytest.mark.timeout(180)
def test_a_restarted_static_member_rejoins_without_a_rebalance(broker_factory, topic_name):
    broker = broker_factory.start(FAST_REBALANCE_ENV)
    run_scenario(broker.bootstrap, topic_name)


@pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")
@pytest.mark.timeout(240)
def test_static_membership_on_three_nodes(multi_backend, tmp_path, topic_name):
    cluster = Cluster(multi_backend, tmp_path, env=FAST_REBALANCE_ENV)
    try:
        cluster.start()
        run_scenario(cluster.bootstrap(), topic_name)
    finally:
        cluster.close()
