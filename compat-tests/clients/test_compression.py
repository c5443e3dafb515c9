"""Topic `compression.type`: every Kafka value. Batches a producer writes with another codec are
recompressed by the leader on append (Kafka's LogValidator); `producer` keeps the producer's.
What is stored is read from the segment files themselves (the codec is in each batch's
attributes); consumers get every record back intact; on three nodes the followers hold the
leader's recompressed batches byte for byte."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
                                  NewTopic)

from client_util import CONFLUENT_BASE, confluent_admin, wait_for
from conftest import MULTI_NODE, Cluster

CODECS = {"uncompressed": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
COUNT = 200


def stored_codecs(log_dir: Path) -> list[int]:
    """The codec of every batch in a partition directory's segments, in offset order."""
    codecs = []
    for segment in sorted(log_dir.glob("*.log")):
        data = segment.read_bytes()
        at = 0
        while at + 61 <= len(data):
            (length,) = struct.unpack_from(">i", data, at + 8)
            (attributes,) = struct.unpack_from(">h", data, at + 21)
            codecs.append(attributes & 0x07)
            at += 12 + length
    return codecs


def produce(bootstrap: str, topic: str, codec: str) -> list[bytes]:
    values = [f"value-{i}-".encode() * 10 for i in range(COUNT)]
    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": codec,
                         "linger.ms": 20, "acks": "all", **CONFLUENT_BASE})
    for value in values:
        producer.produce(topic, value=value, key=value[:8])
    assert producer.flush(30) == 0
    return values


def consume(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader",
                         "auto.offset.reset": "earliest", **CONFLUENT_BASE})
    got = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        while len(got) < count:
            message = consumer.poll(10)
            assert message is not None, f"only {len(got)} of {count} records came back"
            assert message.error() is None, message.error()
            got.append(message.value())
    finally:
        consumer.close()
    return got


def create(bootstrap: str, topic: str, configs: dict, replicas: int = 1) -> None:
    admin = confluent_admin(bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=replicas,
                                  config=configs)], request_timeout=15)[topic].result(timeout=30)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("topic_codec", ["producer", *CODECS])
def test_batches_are_stored_in_the_topics_codec(broker, topic_name, topic_codec):
    # The producer uses another codec than the topic's, so the topic's must be applied.
    producer_codec = "lz4" if topic_codec != "lz4" else "gzip"
    create(broker.bootstrap, topic_name, {"compression.type": topic_codec})
    values = produce(broker.bootstrap, topic_name, producer_codec)
    assert consume(broker.bootstrap, topic_name, COUNT) == values
    codecs = stored_codecs(broker.data_dir / "logs" / f"{topic_name}-0")
    expected = CODECS.get(topic_codec, CODECS[producer_codec])
    assert codecs and set(codecs) == {expected}, codecs


@pytest.mark.timeout(120)
def test_a_codec_change_applies_to_later_batches(broker, topic_name):
    create(broker.bootstrap, topic_name, {})
    first = produce(broker.bootstrap, topic_name, "snappy")
    admin = confluent_admin(broker.bootstrap)
    resource = ConfigResource("topic", topic_name, incremental_configs=[
        ConfigEntry("compression.type", "zstd",
                    incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)
    described = admin.describe_configs([ConfigResource("topic", topic_name)])
    entry = next(iter(described.values())).result(timeout=30)["compression.type"]
    assert (entry.value, entry.source) == ("zstd", ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    second = produce(broker.bootstrap, topic_name, "snappy")
    assert consume(broker.bootstrap, topic_name, 2 * COUNT) == first + second
    codecs = stored_codecs(broker.data_dir / "logs" / f"{topic_name}-0")
    # Earlier batches stay as they were; batches appended after the change are recompressed.
    split = codecs.index(CODECS["zstd"])
    assert set(codecs[:split]) == {CODECS["snappy"]} and set(codecs[split:]) == {CODECS["zstd"]}


@pytest.mark.timeout(60)
def test_an_unknown_codec_is_refused(broker, topic_name):
    admin = confluent_admin(broker.bootstrap)
    future = admin.create_topics([NewTopic(topic_name, num_partitions=1, replication_factor=1,
                                           config={"compression.type": "brotli"})],
                                 request_timeout=15)[topic_name]
    with pytest.raises(Exception) as refused:
        future.result(timeout=30)
    assert refused.value.args[0].code() == 40  # INVALID_CONFIG


@pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")
@pytest.mark.timeout(180)
def test_followers_hold_the_leaders_recompressed_batches(multi_backend, tmp_path, topic_name):
    cluster = Cluster(multi_backend, tmp_path)
    try:
        cluster.start()
        create(cluster.bootstrap(), topic_name, {"compression.type": "zstd"}, replicas=3)
        values = produce(cluster.bootstrap(), topic_name, "gzip")
        assert consume(cluster.bootstrap(), topic_name, COUNT) == values
        dirs = [cluster.nodes[i].data_dir / "logs" / f"{topic_name}-0" for i in (1, 2, 3)]

        def segments(d: Path) -> bytes:
            return b"".join(p.read_bytes() for p in sorted(d.glob("*.log")))
        # acks=all returned once the ISR had the batches, but the files are the only view of
        # a follower's log: wait for every replica's copy to equal the leader's.
        wait_for(lambda: len({segments(d) for d in dirs}) == 1 and segments(dirs[0]),
                 30, "every replica to hold the same batches")
        assert set(stored_codecs(dirs[0])) == {CODECS["zstd"]}
    finally:
        cluster.close()
