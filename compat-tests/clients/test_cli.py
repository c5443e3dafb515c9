"""`switchyard topic`, `group`, `produce` and `consume` — the rpk-like commands over the Kafka
protocol — against one node of every backend and three nodes of every multi-node backend,
checked against what real Kafka clients (confluent-kafka, kafka-python) see.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid

from confluent_kafka import Consumer, Producer, TopicCollection

from client_util import confluent_admin, confluent_conf, wait_for
from cluster_util import RECOVERY_S
from conftest import switchyard_bin


def cli(bootstrap: str, *args: str, stdin: str | None = None,
        ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(switchyard_bin()), *args, "--bootstrap", bootstrap],
                          input=stdin, capture_output=True, text=True, timeout=120)
    if ok:
        assert done.returncode == 0, f"{args}: {done.stderr}{done.stdout}"
    return done


def cli_json(bootstrap: str, *args: str, stdin: str | None = None):
    return json.loads(cli(bootstrap, *args, "--format", "json", stdin=stdin).stdout)


def rows(text: str) -> list[list[str]]:
    """The cells of a table's data rows (the header dropped)."""
    return [line.split() for line in text.splitlines()[1:] if line.strip()]


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_topic_commands(broker):
    bootstrap, _ = broker
    orders, audit = name("orders"), name("audit")
    created = cli(bootstrap, "topic", "create", orders, audit, "-p", "3",
                  "-c", "retention.ms=86400000")
    table = {r[0]: r for r in rows(created.stdout)}
    assert table[orders][2:] == ["3", "1", "OK"] and table[audit][4] == "OK", created.stdout
    again = cli(bootstrap, "topic", "create", orders, ok=False)
    assert again.returncode != 0
    assert "TOPIC_ALREADY_EXISTS" in again.stdout and "1 failed" in again.stderr

    listed = {t["topic"]: t for t in cli_json(bootstrap, "topic", "list")}
    assert listed[orders]["partitions"] == 3 and listed[orders]["replication_factor"] == 1
    admin = confluent_admin(bootstrap)
    description = admin.describe_topics(TopicCollection([orders]))[orders].result(timeout=30)
    # Kafka prints ids in URL-safe base64 without padding; librdkafka in the standard alphabet.
    assert (base64.urlsafe_b64decode(listed[orders]["id"] + "==")
            == base64.b64decode(str(description.topic_id) + "=="))

    [described] = cli_json(bootstrap, "topic", "describe", orders)
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    assert all(p["isr"] == p["replicas"] and p["high_watermark"] == 0
               for p in described["partitions"])
    assert described["configs"]["retention.ms"] == {
        "value": "86400000", "source": "DYNAMIC_TOPIC_CONFIG"}
    assert described["configs"]["cleanup.policy"]["source"] == "DEFAULT_CONFIG"

    cli(bootstrap, "topic", "alter-config", orders, "--set", "retention.bytes=1048576",
        "--delete", "retention.ms")
    configs = cli_json(bootstrap, "topic", "describe", orders)[0]["configs"]
    assert configs["retention.bytes"] == {"value": "1048576", "source": "DYNAMIC_TOPIC_CONFIG"}
    assert configs["retention.ms"]["source"] == "DEFAULT_CONFIG"
    bad = cli(bootstrap, "topic", "alter-config", orders, "--set", "retention.ms=soon", ok=False)
    assert bad.returncode != 0 and "INVALID_CONFIG" in bad.stderr, bad.stderr

    grown = cli_json(bootstrap, "topic", "add-partitions", orders, "--num", "2")
    assert (grown["from"], grown["to"]) == (3, 5)
    # The new partitions are in every client's metadata.
    wait_for(lambda: len(confluent_admin(bootstrap).list_topics(orders, timeout=15)
                         .topics[orders].partitions) == 5, RECOVERY_S, "5 partitions", 0.2)

    deleted = cli(bootstrap, "topic", "delete", orders, audit)
    assert sorted(r[1] for r in rows(deleted.stdout)) == ["OK", "OK"], deleted.stdout
    listed = {t["topic"] for t in cli_json(bootstrap, "topic", "list")}
    assert orders not in listed and audit not in listed
    missing = cli(bootstrap, "topic", "describe", orders, ok=False)
    assert missing.returncode != 0 and orders in missing.stderr


def test_produce_and_consume_match_kafka_clients(broker):
    bootstrap, _ = broker
    topic = name("lines")
    cli(bootstrap, "topic", "create", topic, "-p", "4")
    produced = cli_json(bootstrap, "produce", topic, "--key", "customer-42",
                        stdin="".join(f"line {i}\n" for i in range(20)))
    [where] = produced["partitions"]
    assert (where["records"], where["first_offset"], where["last_offset"]) == (20, 0, 19)
    # The same key through librdkafka's Java-compatible partitioner lands in the same place.
    producer = Producer(confluent_conf(bootstrap, partitioner="murmur2"))
    seen = []
    producer.produce(topic, key=b"customer-42", value=b"from librdkafka",
                     on_delivery=lambda err, msg: seen.append((err, msg.partition())))
    assert producer.flush(30) == 0
    assert seen == [(None, where["partition"])]

    values = cli(bootstrap, "consume", topic, "--until-end").stdout.splitlines()
    assert values == [f"line {i}" for i in range(20)] + ["from librdkafka"]
    records = [json.loads(line) for line in cli(
        bootstrap, "consume", topic, "-p", str(where["partition"]), "-o", "5", "-n", "2",
        "--format", "json").stdout.splitlines()]
    assert [(r["offset"], r["key"], r["value"]) for r in records] == [
        (5, "customer-42", "line 5"), (6, "customer-42", "line 6")]

    explicit = cli_json(bootstrap, "produce", topic, "-p", "3", stdin="x\ny\n")
    assert explicit["partitions"][0]["partition"] == 3
    consumer = Consumer(confluent_conf(bootstrap, group_id=name("reader"),
                                       auto_offset_reset="earliest"))
    try:
        consumer.subscribe([topic])
        got = []

        def read():
            m = consumer.poll(1.0)
            if m is not None and m.error() is None:
                got.append(m.value())
            return len(got) >= 23
        wait_for(read, RECOVERY_S, "23 records through confluent-kafka", 0)
    finally:
        consumer.close()
    assert sorted(got) == sorted([f"line {i}".encode() for i in range(20)]
                                 + [b"from librdkafka", b"x", b"y"])
    refused = cli(bootstrap, "produce", topic, "-p", "9", stdin="z\n", ok=False)
    assert refused.returncode != 0 and "partitions 0..4" in refused.stderr


def test_group_commands(broker):
    bootstrap, _ = broker
    topic, group = name("billing-in"), name("billing")
    cli(bootstrap, "topic", "create", topic, "-p", "2")
    cli(bootstrap, "produce", topic, "-p", "0", stdin="".join(f"{i}\n" for i in range(30)))
    cli(bootstrap, "produce", topic, "-p", "1", stdin="".join(f"{i}\n" for i in range(10)))
    consumer = Consumer(confluent_conf(bootstrap, group_id=group, auto_offset_reset="earliest",
                                       enable_auto_commit=False))
    try:
        consumer.subscribe([topic])
        got = []

        def read():
            m = consumer.poll(1.0)
            if m is not None and m.error() is None:
                got.append(m)
            # Both partitions read from, so the commit holds a position for each.
            return len(got) >= 25 and {m.partition() for m in got} == {0, 1}
        wait_for(read, RECOVERY_S, "25 records from both partitions", 0)
        consumer.commit(asynchronous=False)
        committed = {p.partition: p.offset for p in consumer.committed(
            consumer.assignment(), timeout=15)}

        listed = {g["group"]: g for g in cli_json(bootstrap, "group", "list")}
        assert listed[group]["state"] == "Stable" and listed[group]["protocol_type"] == "consumer"
        [described] = cli_json(bootstrap, "group", "describe", group)
        assert described["state"] == "Stable" and len(described["members"]) == 1
        member = described["members"][0]
        assert sorted(member["assignment"][topic]) == [0, 1]
        offsets = {o["partition"]: o for o in described["offsets"]}
        ends = {0: 30, 1: 10}
        for p, o in offsets.items():
            assert o["committed"] == committed[p] and o["log_end"] == ends[p]
            assert o["lag"] == ends[p] - committed[p] and o["member_id"] == member["member_id"]
        text = cli(bootstrap, "group", "describe", group).stdout
        assert "CURRENT-OFFSET" in text and member["member_id"] in text

        busy = cli(bootstrap, "group", "seek", group, "--to", "start", ok=False)
        assert busy.returncode != 0 and "stop its consumers first" in busy.stderr
        undeletable = cli(bootstrap, "group", "delete", group, ok=False)
        assert undeletable.returncode != 0 and "NON_EMPTY_GROUP" in undeletable.stdout
    finally:
        consumer.close()

    def empty():
        return cli_json(bootstrap, "group", "describe", group)[0]["state"] == "Empty"
    # A client's close need not wait for its LeaveGroup's answer; nothing reports it to another.
    wait_for(empty, RECOVERY_S, f"{group} empty after its consumer left", 0.2)
    moved = cli_json(bootstrap, "group", "seek", group, "--to", "start")
    assert {(m["partition"], m["to"]) for m in moved["partitions"]} == {(0, 0), (1, 0)}
    cli(bootstrap, "group", "seek", group, "--to", "end")
    assert {o["partition"]: (o["committed"], o["lag"]) for o in cli_json(
        bootstrap, "group", "describe", group)[0]["offsets"]} == {0: (30, 0), 1: (10, 0)}
    cli(bootstrap, "group", "seek", group, "--to", "7", "--topic", topic)

    # A consumer of the group resumes where seek put it.
    consumer = Consumer(confluent_conf(bootstrap, group_id=group, enable_auto_commit=False))
    try:
        consumer.subscribe([topic])
        first = {}

        def resumed():
            m = consumer.poll(1.0)
            if m is not None and m.error() is None:
                first.setdefault(m.partition(), m.offset())
            return len(first) == 2
        wait_for(resumed, RECOVERY_S, "a record of each partition", 0)
        assert first == {0: 7, 1: 7}
    finally:
        consumer.close()
    wait_for(empty, RECOVERY_S, f"{group} empty again", 0.2)
    deleted = cli(bootstrap, "group", "delete", group)
    assert rows(deleted.stdout) == [[group, "OK"]]
    assert group not in {g["group"] for g in cli_json(bootstrap, "group", "list")}


def test_three_nodes(cluster):
    topic, group = name("replicated"), name("tri")
    # Each command bootstraps from one node; the requests go where they must.
    created = cli_json(cluster.bootstrap(3), "topic", "create", topic, "-p", "3", "-r", "3")
    assert created[0]["replication_factor"] == 3

    def replicated():
        [d] = cli_json(cluster.bootstrap(1), "topic", "describe", topic)
        return all(len(p["replicas"]) == 3 and sorted(p["isr"]) == [1, 2, 3]
                   for p in d["partitions"]) and d
    described = wait_for(replicated, RECOVERY_S, "every replica in sync", 0.2)
    assert sorted({p["leader"] for p in described["partitions"]}) == [1, 2, 3]

    for partition in range(3):
        cli(cluster.bootstrap(2), "produce", topic, "-p", str(partition),
            stdin="".join(f"{partition}-{i}\n" for i in range(10)))
    values = cli(cluster.bootstrap(1), "consume", topic, "--until-end").stdout.splitlines()
    assert sorted(values) == sorted(f"{p}-{i}" for p in range(3) for i in range(10))
    [after] = cli_json(cluster.bootstrap(3), "topic", "describe", topic)
    assert [p["high_watermark"] for p in after["partitions"]] == [10, 10, 10]

    consumer = Consumer(confluent_conf(cluster.bootstrap(), group_id=group,
                                       auto_offset_reset="earliest", enable_auto_commit=False))
    try:
        consumer.subscribe([topic])
        count = [0]

        def read():
            m = consumer.poll(1.0)
            if m is not None and m.error() is None:
                count[0] += 1
            return count[0] >= 30
        wait_for(read, RECOVERY_S, "30 records", 0)
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    for node in (1, 2, 3):
        [g] = cli_json(cluster.bootstrap(node), "group", "describe", group)
        assert {o["partition"]: o["lag"] for o in g["offsets"]} == {0: 0, 1: 0, 2: 0}
        assert g["coordinator"] in cluster.bootstrap()
    assert group in {g["group"] for g in cli_json(cluster.bootstrap(2), "group", "list")}
    cli(cluster.bootstrap(1), "topic", "delete", topic)
