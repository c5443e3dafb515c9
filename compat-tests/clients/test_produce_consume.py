"""kafka-python and confluent-kafka each produce 10,000 keyed messages over 3 partitions and read
them back: every acknowledged message exactly once, at the offset it was acknowledged with, in
order per partition, each key always in the same partition."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer
from confluent_kafka import TopicPartition as CTopicPartition
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from client_util import confluent_conf, create_topic

N = 10_000
PARTITIONS = 3
KEYS = 257
CONSUME_DEADLINE_S = 60


def key_of(i: int) -> bytes:
    return f"key-{i % KEYS}".encode()


def value_of(i: int) -> bytes:
    return f"value-{i}".encode()


def index_of(value: bytes) -> int:
    return int(value.decode().removeprefix("value-"))


def check_round_trip(acked: dict, consumed: list, end_offsets: dict) -> None:
    """acked: i -> (partition, offset) as the producer was told.
    consumed: (partition, offset, key, value) in the order the consumer delivered them.
    end_offsets: partition -> log end offset (high watermark)."""
    assert len(acked) == N, f"{N - len(acked)} messages were not acknowledged"

    positions = {}
    for partition, offset, key, value in consumed:
        assert (partition, offset) not in positions, (
            f"partition {partition} offset {offset} delivered twice")
        positions[(partition, offset)] = (key, value)
    for i, (partition, offset) in acked.items():
        assert positions.get((partition, offset)) == (key_of(i), value_of(i)), (
            f"message {i} acknowledged at partition {partition} offset {offset}, "
            f"consumed there: {positions.get((partition, offset))}")
    assert len(consumed) == N, f"consumed {len(consumed)} records, produced {N}"

    delivered = defaultdict(list)
    for partition, offset, key, value in consumed:
        delivered[partition].append((offset, index_of(value)))
    assert set(delivered) <= set(range(PARTITIONS))
    for partition, records in delivered.items():
        offsets = [o for o, _ in records]
        # Delivered in offset order, no gaps (no transactions or compaction here).
        assert offsets == list(range(len(offsets))), (
            f"partition {partition}: offsets not delivered as 0..{len(offsets) - 1} in order")
        # The producer's send order survives within the partition.
        indexes = [i for _, i in records]
        assert indexes == sorted(indexes), f"partition {partition}: send order not kept"
        assert end_offsets[partition] == len(offsets), (
            f"partition {partition}: log end offset {end_offsets[partition]}, "
            f"records {len(offsets)}")
    assert sum(end_offsets.values()) == N

    partitions_of_key = defaultdict(set)
    for partition, _, key, _ in consumed:
        partitions_of_key[key].add(partition)
    spread = {k: p for k, p in partitions_of_key.items() if len(p) > 1}
    assert not spread, f"keys found in more than one partition: {dict(list(spread.items())[:5])}"
    assert len(partitions_of_key) == KEYS
    # With 257 keys a hash partitioner uses every partition; one partition for all would mean
    # keys are ignored.
    assert len(delivered) == PARTITIONS, f"only partitions {sorted(delivered)} got records"


@pytest.mark.timeout(150)
@pytest.mark.parametrize("acks", ["1", "all"])
def test_kafka_python_round_trip(broker, topic_name, acks):
    create_topic(broker.bootstrap, topic_name, PARTITIONS)

    producer_conf = {"acks": "all"} if acks == "all" else {"acks": 1, "enable_idempotence": False}
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5, **producer_conf)
    try:
        futures = [producer.send(topic_name, key=key_of(i), value=value_of(i)) for i in range(N)]
        producer.flush(timeout=60)
        acked = {}
        for i, future in enumerate(futures):
            metadata = future.get(timeout=10)
            acked[i] = (metadata.partition, metadata.offset)
    finally:
        producer.close(timeout=10)

    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest")
    try:
        tps = [TopicPartition(topic_name, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumed = []
        deadline = time.monotonic() + CONSUME_DEADLINE_S
        while len(consumed) < N and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                consumed.extend((r.partition, r.offset, r.key, r.value) for r in records)
        end_offsets = {tp.partition: o for tp, o in consumer.end_offsets(tps).items()}
        beginning = {tp.partition: o for tp, o in consumer.beginning_offsets(tps).items()}
    finally:
        consumer.close()
    assert beginning == {p: 0 for p in range(PARTITIONS)}
    check_round_trip(acked, consumed, end_offsets)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("acks", ["1", "all"])
def test_confluent_round_trip(broker, topic_name, acks):
    create_topic(broker.bootstrap, topic_name, PARTITIONS)

    # librdkafka refuses idempotence with acks other than all.
    producer = Producer(confluent_conf(
        broker.bootstrap, acks=acks, linger_ms=5, enable_idempotence=(acks == "all")))
    acked = {}
    errors = []

    def delivered(i):
        def report(err, msg):
            if err is not None:
                errors.append((i, err))
            else:
                acked[i] = (msg.partition(), msg.offset())
        return report

    for i in range(N):
        while True:
            try:
                producer.produce(topic_name, key=key_of(i), value=value_of(i),
                                 on_delivery=delivered(i))
                break
            except BufferError:
                producer.poll(0.1)  # local queue full: serve delivery reports
    remaining = producer.flush(60)
    assert remaining == 0, f"{remaining} messages still queued after flush"
    assert not errors, f"delivery errors: {errors[:5]}"

    consumer = Consumer(confluent_conf(
        broker.bootstrap, group_id=f"{topic_name}-reader", enable_auto_commit=False))
    try:
        consumer.assign([CTopicPartition(topic_name, p, OFFSET_BEGINNING)
                         for p in range(PARTITIONS)])
        consumed = []
        deadline = time.monotonic() + CONSUME_DEADLINE_S
        while len(consumed) < N and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error():
                    raise KafkaException(msg.error())
                consumed.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
        watermarks = {p: consumer.get_watermark_offsets(CTopicPartition(topic_name, p),
                                                        timeout=10)
                      for p in range(PARTITIONS)}
    finally:
        consumer.close()
    assert {p: low for p, (low, _) in watermarks.items()} == {p: 0 for p in range(PARTITIONS)}
    check_round_trip(acked, consumed, {p: high for p, (_, high) in watermarks.items()})
