"""Consumer groups with real clients: a group of three gets each partition consumed by exactly one
member, rebalances when a member leaves, and its committed offsets survive a kill -9 and restart
of the broker where the backend declares durability (on `memory` they are gone, as documented).
A new group's first rebalance waits group.initial.rebalance.delay.ms (3 s by default)."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka import TopicPartition as CTopicPartition
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.structs import OffsetAndMetadata

from client_util import confluent_admin, confluent_conf, create_topic, kp_admin

PARTITIONS = 3
CLIENTS = ["kafka-python", "confluent"]
# Members heartbeat often so that a rebalance is noticed quickly; the session timeout stays above
# the broker's group.min.session.timeout.ms (6 s).
HEARTBEAT_MS = 300
SESSION_MS = 10_000
GROUP_DEADLINE_S = 45


class KafkaPythonMember:
    def __init__(self, bootstrap, group, topic, name):
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, client_id=name,
            enable_auto_commit=False, auto_offset_reset="earliest",
            heartbeat_interval_ms=HEARTBEAT_MS, session_timeout_ms=SESSION_MS,
            fetch_max_wait_ms=100)
        self.consumer.subscribe([topic])

    def poll(self):
        # Not shorter: kafka-python 3.0.12 drops a JoinGroup/SyncGroup round that completes
        # between two polls and joins again (an extra rebalance each time), which a loaded
        # machine turns into endless churn with very short polls. poll returns early on data.
        batch = self.consumer.poll(timeout_ms=1_000)
        return [(r.partition, r.offset, r.value) for records in batch.values() for r in records]

    def commit(self):
        self.consumer.commit()

    def assignment(self):
        return frozenset(tp.partition for tp in self.consumer.assignment())

    def close(self):
        self.consumer.close(autocommit=False)


class ConfluentMember:
    def __init__(self, bootstrap, group, topic, name):
        self.consumer = Consumer(confluent_conf(
            bootstrap, group_id=group, client_id=name, enable_auto_commit=False,
            auto_offset_reset="earliest", heartbeat_interval_ms=HEARTBEAT_MS,
            session_timeout_ms=SESSION_MS, fetch_wait_max_ms=100))
        self.consumer.subscribe([topic])

    def poll(self):
        out = []
        for msg in self.consumer.consume(num_messages=500, timeout=0.1):
            if msg.error():
                raise KafkaException(msg.error())
            out.append((msg.partition(), msg.offset(), msg.value()))
        return out

    def commit(self):
        self.consumer.commit(asynchronous=False)

    def assignment(self):
        return frozenset(tp.partition for tp in self.consumer.assignment())

    def close(self):
        self.consumer.close()


MEMBER_CLASS = {"kafka-python": KafkaPythonMember, "confluent": ConfluentMember}


class Group:
    """Members each polling in their own thread (neither client may be shared between threads).
    After every poll a member publishes its assignment and records under `cond`, so the test
    waits on a condition instead of sleeping."""

    def __init__(self, client, bootstrap, group, topic, size):
        self.cond = threading.Condition()
        self.members = [Member(self, client, bootstrap, group, topic, f"{group}-m{i}")
                        for i in range(size)]
        for m in self.members:
            m.start()

    def live(self):
        return [m for m in self.members if not m.left]

    def errors(self):
        return [(m.name, m.error) for m in self.members if m.error is not None]

    def wait(self, predicate, what, timeout_s=GROUP_DEADLINE_S):
        def check():
            if self.errors():
                return True
            return predicate()
        with self.cond:
            ok = self.cond.wait_for(check, timeout_s)
            state = {m.name: (sorted(m.assignment) if m.assignment is not None else None,
                              len(m.records)) for m in self.members if not m.left}
        assert not self.errors(), f"member failed: {self.errors()}"
        assert ok, f"timed out after {timeout_s}s waiting for {what}; members: {state}"

    def balanced(self):
        """Every live member owns at least one partition; the owners are disjoint and cover all."""
        live = self.live()
        if any(m.assignment is None or not m.assignment for m in live):
            return False
        owned = [p for m in live for p in m.assignment]
        return len(owned) == len(set(owned)) == PARTITIONS

    def records(self):
        with self.cond:
            return [(m.name, r) for m in self.members for r in m.records]

    def stop(self):
        """Close every member still running (teardown: does not mask the test's own failure)."""
        for m in self.members:
            m.request_leave()
        for m in self.members:
            m.join(30)


class Member(threading.Thread):
    def __init__(self, group: Group, client, bootstrap, group_id, topic, name):
        super().__init__(name=name, daemon=True)
        self.group = group
        self.args = (bootstrap, group_id, topic, name)
        self.make = MEMBER_CLASS[client]
        self.assignment = None
        self.records = []
        self.error = None
        self.left = False
        self._leave = threading.Event()

    def run(self):
        client = None
        try:
            client = self.make(*self.args)
            while not self._leave.is_set():
                batch = client.poll()
                if batch:
                    # Commit before publishing: whatever a member has consumed is committed by
                    # the time the test makes it leave, so a rebalance redelivers nothing.
                    client.commit()
                assignment = client.assignment()
                with self.group.cond:
                    self.records.extend(batch)
                    self.assignment = assignment
                    self.group.cond.notify_all()
        except BaseException as e:  # reported through Group.wait
            with self.group.cond:
                self.error = e
                self.group.cond.notify_all()
        finally:
            if client is not None:
                try:
                    client.close()
                except BaseException as e:
                    self.error = self.error or e
            with self.group.cond:
                self.left = True
                self.group.cond.notify_all()

    def request_leave(self):
        self._leave.set()

    def leave(self):
        """Close the consumer (a LeaveGroup) and wait until it has."""
        self.request_leave()
        self.join(30)
        assert not self.is_alive(), f"{self.name} did not close"


def wait_broker_stable(bootstrap, group, members):
    """DescribeGroups until the broker reports the group Stable with `members` members. Polled:
    no client API reports a group's state on the broker side, and a client may legitimately
    trigger one more rebalance right after it saw its own assignment."""
    admin = confluent_admin(bootstrap)  # must outlive its futures
    deadline = time.monotonic() + GROUP_DEADLINE_S
    while True:
        described = admin.describe_consumer_groups([group])[group].result(timeout=30)
        if described.state.name == "STABLE" and len(described.members) == members:
            return described
        assert time.monotonic() < deadline, (
            f"group {group} never Stable with {members} members: {described.state}, "
            f"{len(described.members)} members")
        time.sleep(0.05)


def produce_per_partition(bootstrap, topic, per_partition, tag):
    producer = Producer(confluent_conf(bootstrap, acks="all", linger_ms=5))
    for p in range(PARTITIONS):
        for i in range(per_partition):
            producer.produce(topic, value=f"{tag}-{p}-{i}".encode(), partition=p)
    assert producer.flush(30) == 0


def check_exactly_once_by_owner(records, expected_values, owners):
    """records: (member, (partition, offset, value)); owners: partition -> member name."""
    seen = {}
    for member, (partition, offset, value) in records:
        assert (partition, offset) not in seen, (
            f"partition {partition} offset {offset} consumed by {seen[(partition, offset)]} "
            f"and by {member}")
        seen[(partition, offset)] = member
        assert member == owners[partition], (
            f"partition {partition} offset {offset} consumed by {member}, owner is "
            f"{owners[partition]}")
    values = sorted(v for _, (_, _, v) in records)
    assert values == sorted(expected_values)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("client", CLIENTS)
def test_group_assignment_and_rebalance(broker, topic_name, client):
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    group = Group(client, broker.bootstrap, f"{topic_name}-g", topic_name, 3)
    try:
        group.wait(group.balanced, "3 members to share the 3 partitions")
        with group.cond:
            owners = {p: m.name for m in group.members for p in m.assignment}
            assert all(len(m.assignment) == 1 for m in group.members), (
                {m.name: sorted(m.assignment) for m in group.members})

        # The broker's view agrees: one stable group of three, same owners.
        described = wait_broker_stable(broker.bootstrap, f"{topic_name}-g", 3)
        broker_owners = {tp.partition: m.client_id for m in described.members
                         for tp in m.assignment.topic_partitions}
        assert broker_owners == owners, (broker_owners, owners)

        # Each partition's records go to the one member that owns it, once.
        produce_per_partition(broker.bootstrap, topic_name, 20, "r1")
        group.wait(lambda: sum(len(m.records) for m in group.members) >= 20 * PARTITIONS,
                   "round 1 to be consumed")
        round1 = [f"r1-{p}-{i}".encode() for p in range(PARTITIONS) for i in range(20)]
        check_exactly_once_by_owner(group.records(), round1, owners)

        # A member leaves: the other two take over its partition, from the committed offset.
        leaver = group.members[0]
        leaver_partitions = set(leaver.assignment)
        leaver.leave()
        group.wait(group.balanced, "the 2 remaining members to cover the 3 partitions")
        with group.cond:
            remaining = group.live()
            assert len(remaining) == 2
            owners2 = {p: m.name for m in remaining for p in m.assignment}
            assert sorted(owners2) == list(range(PARTITIONS))
            assert all(owners2[p] != leaver.name for p in leaver_partitions)
        described = wait_broker_stable(broker.bootstrap, f"{topic_name}-g", 2)
        assert {tp.partition: m.client_id for m in described.members
                for tp in m.assignment.topic_partitions} == owners2
        with group.cond:
            before = {m.name: len(m.records) for m in group.members}

        produce_per_partition(broker.bootstrap, topic_name, 20, "r2")
        group.wait(lambda: sum(len(m.records) for m in group.members) >= 40 * PARTITIONS,
                   "round 2 to be consumed by the remaining members")
        with group.cond:
            round2_records = [(m.name, r) for m in group.members for r in m.records[before[m.name]:]]
        round2 = [f"r2-{p}-{i}".encode() for p in range(PARTITIONS) for i in range(20)]
        # Nothing of round 1 again (the offsets committed before the rebalance were used) and
        # round 2 once each, by the new owners.
        check_exactly_once_by_owner(round2_records, round2, owners2)
    finally:
        group.stop()


def committed_offsets(client, bootstrap, group, topic):
    """partition -> (offset, metadata) as OffsetFetch returns them; None where nothing is
    committed."""
    if client == "kafka-python":
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                 enable_auto_commit=False)
        try:
            out = {}
            for p in range(PARTITIONS):
                c = consumer.committed(TopicPartition(topic, p), metadata=True)
                out[p] = None if c is None else (c.offset, c.metadata)
            return out
        finally:
            consumer.close(autocommit=False)
    consumer = Consumer(confluent_conf(bootstrap, group_id=group, enable_auto_commit=False))
    try:
        tps = consumer.committed([CTopicPartition(topic, p) for p in range(PARTITIONS)],
                                 timeout=30)
        # librdkafka reports "nothing committed" as OFFSET_INVALID (-1001).
        return {tp.partition: None if tp.offset < 0 else (tp.offset, tp.metadata or "")
                for tp in tps}
    finally:
        consumer.close()


def commit(client, bootstrap, group, topic, offsets):
    """Join `group` as its only member and commit `offsets` (partition -> (offset, metadata))."""
    member = MEMBER_CLASS[client](bootstrap, group, topic, f"{group}-committer")
    try:
        deadline = time.monotonic() + GROUP_DEADLINE_S
        while member.assignment() != frozenset(range(PARTITIONS)):
            assert time.monotonic() < deadline, "the single member never got all partitions"
            member.poll()
        if client == "kafka-python":
            member.consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, m, -1)
                                    for p, (o, m) in offsets.items()})
        else:
            member.consumer.commit(
                offsets=[CTopicPartition(topic, p, o, metadata=m) for p, (o, m) in offsets.items()],
                asynchronous=False)
    finally:
        member.close()


def consume_group(client, bootstrap, group, topic, expected):
    """Consume as a new member of `group` until `expected` records arrived; returns
    partition -> offsets."""
    member = MEMBER_CLASS[client](bootstrap, group, topic, f"{group}-resumer")
    got = {p: [] for p in range(PARTITIONS)}
    try:
        deadline = time.monotonic() + GROUP_DEADLINE_S
        while sum(map(len, got.values())) < expected and time.monotonic() < deadline:
            for partition, offset, _ in member.poll():
                got[partition].append(offset)
    finally:
        member.close()
    return got


@pytest.mark.timeout(120)
@pytest.mark.parametrize("client", CLIENTS)
def test_committed_offsets_across_kill_and_restart(backend, broker_factory, topic_name, client):
    broker = broker_factory.start()
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    produce_per_partition(broker.bootstrap, topic_name, 10, "m")
    group = f"{topic_name}-g"
    offsets = {0: (3, "meta-0"), 1: (7, "meta-1"), 2: (10, "")}
    commit(client, broker.bootstrap, group, topic_name, offsets)
    assert committed_offsets(client, broker.bootstrap, group, topic_name) == offsets

    broker.restart()  # kill -9, same data dir and port

    after = committed_offsets(client, broker.bootstrap, group, topic_name)
    if backend.durable:
        assert after == offsets, (
            f"backend {backend.name} declares {backend.guarantees} but committed offsets "
            f"changed across kill -9: {offsets} -> {after}")
        # A new member resumes exactly where the group committed.
        got = consume_group(client, broker.bootstrap, group, topic_name, expected=3 + 7 + 0)
        assert got == {0: list(range(3, 10)), 1: list(range(7, 10)), 2: []}
    else:
        # durability=none: the backend keeps nothing across a restart (loss-window
        # everything-on-restart), so the group's offsets are gone.
        assert backend.guarantees.get("loss-window") == "everything-on-restart"
        assert after == {p: None for p in range(PARTITIONS)}, (
            f"backend {backend.name} declares {backend.guarantees}, yet offsets are "
            f"still committed after a restart: {after}")


def broker_config(bootstrap, key):
    admin = kp_admin(bootstrap)
    try:
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, "1")], config_filter="all")
    finally:
        admin.close()
    return described["broker"]["1"][key]["value"]


@pytest.mark.timeout(90)
def test_default_initial_rebalance_delay(broker, broker_factory, topic_name):
    # The suite's brokers run with a 200 ms delay; this one gets Kafka's default.
    default_broker = broker_factory.start(extra_env={})
    assert broker_config(broker.bootstrap, "group.initial.rebalance.delay.ms") == "200"
    assert broker_config(default_broker.bootstrap, "group.initial.rebalance.delay.ms") == "3000"

    create_topic(default_broker.bootstrap, topic_name, 1)
    # A long session timeout: a broker that waited half of it (30 s) instead of the initial
    # delay would fail the upper bound below.
    consumer = KafkaConsumer(
        bootstrap_servers=default_broker.bootstrap, group_id=f"{topic_name}-g",
        enable_auto_commit=False, session_timeout_ms=60_000, heartbeat_interval_ms=1_000)
    try:
        consumer.subscribe([topic_name])
        started = time.monotonic()
        while not consumer.assignment():
            assert time.monotonic() - started < 60, "no assignment within 60 s"
            consumer.poll(timeout_ms=50)
        elapsed = time.monotonic() - started
    finally:
        consumer.close(autocommit=False)
    # Correctness of the delay, not a performance bound: the first rebalance of a new group
    # waits group.initial.rebalance.delay.ms (3 s) for more members before assigning.
    assert elapsed >= 2.5, f"first rebalance done after {elapsed:.2f}s; the 3 s delay was skipped"
    assert elapsed < 15, f"first rebalance took {elapsed:.2f}s: more than the 3 s delay"
