"""Fetch is a long-poll (max wait, min bytes, woken when data arrives) and ListOffsets answers
earliest, latest and by timestamp."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as CTopicPartition
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.protocol.consumer import FetchResponse

from client_util import confluent_conf, create_topic
from raw_kafka import FETCH_VERSION, RawConnection, records_of

NONE = 0
# Long enough that "answered at max wait" and "answered because data arrived" cannot be confused.
LONG_WAIT_MS = 10_000


@pytest.fixture
def raw(broker):
    with RawConnection(broker.bootstrap) as conn:
        yield conn


def produce_one(bootstrap, topic, value=b"v"):
    producer = Producer(confluent_conf(bootstrap, acks="all"))
    producer.produce(topic, value=value, partition=0)
    assert producer.flush(30) == 0


def timed_empty_fetch(raw, topic, offset):
    started = time.monotonic()
    part = raw.fetch(topic, 0, offset, max_wait_ms=1_000, min_bytes=1)
    elapsed = time.monotonic() - started
    assert part.error_code == NONE and records_of(part) == []
    return elapsed


@pytest.mark.timeout(60)
def test_fetch_at_log_end_waits_max_wait(raw, broker, topic_name):
    assert raw.create_topic(topic_name, 1) == NONE
    produce_one(broker.bootstrap, topic_name)
    elapsed = timed_empty_fetch(raw, topic_name, 1)
    # Held for max wait (not answered at once, not a busy loop of empty answers)...
    assert elapsed >= 0.9, f"empty fetch answered after {elapsed:.3f}s, max wait is 1 s"
    # ...and then answered.
    assert elapsed < 5, f"empty fetch answered after {elapsed:.3f}s, max wait is 1 s"


@pytest.mark.timeout(60)
def test_fetch_on_new_empty_topic_waits_max_wait(raw, topic_name):
    # Nothing was ever produced to this partition: the very first fetch must long-poll too.
    assert raw.create_topic(topic_name, 1) == NONE
    elapsed = timed_empty_fetch(raw, topic_name, 0)
    assert elapsed >= 0.9, (
        f"first fetch of a new, empty partition answered after {elapsed:.3f}s, max wait 1 s")
    assert elapsed < 5


@pytest.mark.timeout(60)
def test_fetch_below_min_bytes_waits_then_returns_what_there_is(raw, broker, topic_name):
    assert raw.create_topic(topic_name, 1) == NONE
    produce_one(broker.bootstrap, topic_name, b"small")
    started = time.monotonic()
    part = raw.fetch(topic_name, 0, 0, max_wait_ms=1_000, min_bytes=1_000_000)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.9, f"fetch below min bytes answered after {elapsed:.3f}s"
    assert records_of(part) == [(0, b"small")]
    # With min bytes met it does not wait.
    started = time.monotonic()
    part = raw.fetch(topic_name, 0, 0, max_wait_ms=LONG_WAIT_MS, min_bytes=1)
    assert records_of(part) == [(0, b"small")]
    assert time.monotonic() - started < LONG_WAIT_MS / 2000


@pytest.mark.timeout(60)
def test_parked_fetch_is_woken_by_produce(raw, broker, topic_name):
    assert raw.create_topic(topic_name, 1) == NONE
    # One record first: this test is about the wake-up at the log end; the first fetch of a
    # never-written partition is test_fetch_on_new_empty_topic_waits_max_wait.
    produce_one(broker.bootstrap, topic_name, b"first")
    started = time.monotonic()
    correlation_id = raw.send(
        raw.fetch_request(topic_name, 0, 1, max_wait_ms=LONG_WAIT_MS, min_bytes=1),
        FETCH_VERSION)
    produce_one(broker.bootstrap, topic_name, b"wake")
    response = raw.receive(FetchResponse, FETCH_VERSION, correlation_id)
    elapsed = time.monotonic() - started
    (topic,) = response.responses
    (part,) = topic.partitions
    assert records_of(part) == [(1, b"wake")]
    assert elapsed < LONG_WAIT_MS / 2000, (
        f"fetch answered {elapsed:.2f}s after it was sent; max wait {LONG_WAIT_MS} ms")


@pytest.mark.timeout(60)
def test_kafka_python_poll_returns_when_a_message_arrives(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1)
    tp = TopicPartition(topic_name, 0)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                             fetch_max_wait_ms=LONG_WAIT_MS, fetch_min_bytes=1,
                             request_timeout_ms=LONG_WAIT_MS + 20_000)
    try:
        producer.partitions_for(topic_name)  # connected and has metadata before the clock starts
        consumer.assign([tp])
        consumer.seek_to_end(tp)
        assert consumer.position(tp) == 0
        # Nothing to read: this poll leaves a fetch parked at the broker.
        assert consumer.poll(timeout_ms=200) == {}

        sent = threading.Thread(
            target=lambda: producer.send(topic_name, value=b"wake", partition=0).get(10))
        started = time.monotonic()
        sent.start()
        records = consumer.poll(timeout_ms=2 * LONG_WAIT_MS, max_records=1)
        elapsed = time.monotonic() - started
        sent.join(10)
    finally:
        consumer.close()
        producer.close(timeout=10)
    assert [r.value for r in records.get(tp, [])] == [b"wake"]
    assert elapsed < LONG_WAIT_MS / 2000, (
        f"poll returned {elapsed:.2f}s after the produce; the parked fetch (max wait "
        f"{LONG_WAIT_MS} ms) was not woken")


@pytest.mark.timeout(60)
def test_confluent_poll_returns_when_a_message_arrives(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1)
    producer = Producer(confluent_conf(broker.bootstrap, acks="all"))
    consumer = Consumer(confluent_conf(
        broker.bootstrap, group_id=f"{topic_name}-g", enable_auto_commit=False,
        fetch_wait_max_ms=LONG_WAIT_MS, fetch_min_bytes=1, enable_partition_eof=True))
    try:
        producer.list_topics(topic_name, timeout=10)  # connected before the clock starts
        consumer.assign([CTopicPartition(topic_name, 0, 0)])
        # librdkafka keeps a fetch outstanding; the end-of-partition event says it reached the
        # (empty) end, so the next fetch is parked at the broker.
        msg = consumer.poll(15)
        assert msg is not None and msg.error() is not None
        assert msg.error().name() == "_PARTITION_EOF", msg.error()

        sent = threading.Thread(target=lambda: (producer.produce(topic_name, value=b"wake",
                                                                 partition=0),
                                                producer.flush(10)))
        started = time.monotonic()
        sent.start()
        msg = consumer.poll(2 * LONG_WAIT_MS / 1000)
        elapsed = time.monotonic() - started
        sent.join(10)
    finally:
        consumer.close()
    assert msg is not None and msg.error() is None, msg and msg.error()
    assert msg.value() == b"wake"
    assert elapsed < LONG_WAIT_MS / 2000, (
        f"poll returned {elapsed:.2f}s after the produce; the parked fetch (max wait "
        f"{LONG_WAIT_MS} ms) was not woken")


@pytest.mark.timeout(60)
def test_list_offsets_earliest_latest_and_by_timestamp(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1)
    tp = TopicPartition(topic_name, 0)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    # A long linger: the flushes alone decide the batches.
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=30_000)
    try:
        assert consumer.beginning_offsets([tp]) == {tp: 0}
        assert consumer.end_offsets([tp]) == {tp: 0}
        assert consumer.offsets_for_times({tp: 0}) == {tp: None}

        # Ten records one second apart in CreateTime, in three batches: 0-2, 3-6, 7-9.
        base = int(time.time() * 1000) - 60_000
        for i in range(10):
            producer.send(topic_name, value=f"t{i}".encode(), partition=0,
                          timestamp_ms=base + 1_000 * i)
            if i in (2, 6):
                producer.flush(10)
        producer.flush(10)

        assert consumer.beginning_offsets([tp]) == {tp: 0}
        assert consumer.end_offsets([tp]) == {tp: 10}
        # The first offset whose timestamp is at or after the target.
        expectations = {
            base - 5_000: (0, base),
            base: (0, base),
            base + 1: (1, base + 1_000),
            base + 2_500: (3, base + 3_000),  # crosses into the second batch
            base + 4_500: (5, base + 5_000),  # inside the second batch
            base + 7_000: (7, base + 7_000),  # first record of the third batch
            base + 9_000: (9, base + 9_000),
        }
        wrong = []
        for target, (offset, timestamp) in expectations.items():
            found = consumer.offsets_for_times({tp: target})[tp]
            got = None if found is None else (found.offset, found.timestamp - base)
            if got != (offset, timestamp - base):
                wrong.append(f"target base+{target - base}: got (offset, ts-base) {got}, "
                             f"expected {(offset, timestamp - base)}")
        assert not wrong, "offsets_for_times:\n" + "\n".join(wrong)
        # After the last record: no such offset.
        assert consumer.offsets_for_times({tp: base + 9_001}) == {tp: None}
    finally:
        consumer.close()
        producer.close(timeout=10)

    # librdkafka asks the same questions its own way.
    c = Consumer(confluent_conf(broker.bootstrap, group_id=f"{topic_name}-g"))
    try:
        assert c.get_watermark_offsets(CTopicPartition(topic_name, 0), timeout=10) == (0, 10)
        found = c.offsets_for_times([CTopicPartition(topic_name, 0, base + 4_500)], timeout=10)
        assert [(t.partition, t.offset) for t in found] == [(0, 5)]
        found = c.offsets_for_times([CTopicPartition(topic_name, 0, base + 9_001)], timeout=10)
        assert [(t.partition, t.offset) for t in found] == [(0, -1)]  # OFFSET_END: none
    finally:
        c.close()
