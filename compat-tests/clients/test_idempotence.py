"""Idempotent producers: retried batches are not duplicated.

Client level: kafka-python (idempotent by default since 3.0) and confluent-kafka
(enable.idempotence=true) produce through a proxy that loses some Produce responses, so the
clients really retry batches the broker already appended; every message must then be in the log
exactly once, in order.

Protocol level (raw requests built with kafka-python's protocol classes): the same batch sent
twice gets the same base offset and is stored once; a sequence gap is refused with
OUT_OF_ORDER_SEQUENCE_NUMBER; a second producer with the same sequences is not mistaken for a
retry.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer
from confluent_kafka import TopicPartition as CTopicPartition
from kafka import KafkaProducer

from client_util import FAST_REBALANCE_ENV, confluent_conf, create_topic
from raw_kafka import RawConnection, idempotent_batch, records_of
from response_dropping_proxy import ResponseDroppingProxy

NONE = 0
OUT_OF_ORDER_SEQUENCE_NUMBER = 45

N = 3_000
ROUND = 100  # messages per flush: many Produce requests, some of whose responses get lost
PARTITIONS = 2


@pytest.fixture
def proxied_broker(broker_factory):
    """A broker that advertises a response-dropping proxy in front of it."""
    proxy = ResponseDroppingProxy(upstream_port=0, drop_every=3, max_drops=4)
    try:
        broker = broker_factory.start(extra_env={
            **FAST_REBALANCE_ENV, "SWITCHYARD_ADVERTISE": f"127.0.0.1:{proxy.port}"})
        proxy.upstream_port = broker.port
        yield broker, proxy
    finally:
        proxy.close()


def read_all(bootstrap, topic, expected):
    """Every record of the topic: partition -> [(offset, value)] in delivery order."""
    consumer = Consumer(confluent_conf(bootstrap, group_id=f"{topic}-reader",
                                       enable_auto_commit=False))
    got = defaultdict(list)
    try:
        consumer.assign([CTopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        deadline = time.monotonic() + 60
        while sum(map(len, got.values())) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error():
                    raise KafkaException(msg.error())
                got[msg.partition()].append((msg.offset(), msg.value()))
        high = {p: consumer.get_watermark_offsets(CTopicPartition(topic, p), timeout=10)[1]
                for p in range(PARTITIONS)}
    finally:
        consumer.close()
    return got, high


def check_exactly_once_in_order(got, high, acked):
    """acked: i -> (partition, offset)."""
    assert len(acked) == N, f"{N - len(acked)} messages not acknowledged"
    values = [v for records in got.values() for _, v in records]
    dupes = [v for v, n in Counter(values).items() if n > 1]
    assert not dupes, f"{len(dupes)} messages stored more than once, e.g. {sorted(dupes)[:5]}"
    assert sorted(values) == sorted(f"m-{i}".encode() for i in range(N))
    assert sum(high.values()) == N, f"log end offsets {high} hold more than the {N} messages"
    for partition, records in got.items():
        indexes = [int(v.decode()[2:]) for _, v in records]
        assert indexes == sorted(indexes), f"partition {partition}: order not kept"
        for offset, value in records:
            i = int(value.decode()[2:])
            assert acked[i] == (partition, offset), (
                f"message {i} acknowledged at {acked[i]}, stored at {(partition, offset)}")


@pytest.mark.timeout(120)
def test_kafka_python_retries_do_not_duplicate(proxied_broker, topic_name):
    broker, proxy = proxied_broker
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    # Defaults: enable_idempotence=True, acks=all, retries unbounded.
    producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{proxy.port}", linger_ms=2,
                             batch_size=4096, request_timeout_ms=10_000,
                             reconnect_backoff_ms=20)
    assert producer.config["enable_idempotence"]
    try:
        futures = []
        for i in range(N):
            futures.append(producer.send(topic_name, key=str(i % 10).encode(),
                                         value=f"m-{i}".encode()))
            if i % ROUND == ROUND - 1:
                producer.flush(timeout=60)
        acked = {}
        for i, f in enumerate(futures):
            md = f.get(timeout=10)
            acked[i] = (md.partition, md.offset)
    finally:
        producer.close(timeout=10)
    # The test means something only if batches really were retried.
    assert proxy.dropped == proxy.max_drops, (
        f"only {proxy.dropped} Produce responses lost ({proxy.produce_requests} requests)")
    got, high = read_all(broker.bootstrap, topic_name, N)
    check_exactly_once_in_order(got, high, acked)


@pytest.mark.timeout(120)
def test_confluent_retries_do_not_duplicate(proxied_broker, topic_name):
    broker, proxy = proxied_broker
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    producer = Producer(confluent_conf(
        f"127.0.0.1:{proxy.port}", enable_idempotence=True, linger_ms=2, batch_size=4096,
        reconnect_backoff_ms=20, message_timeout_ms=60_000))
    acked, errors = {}, []

    def report(i):
        def cb(err, msg):
            if err is not None:
                errors.append((i, err))
            else:
                acked[i] = (msg.partition(), msg.offset())
        return cb

    for i in range(N):
        producer.produce(topic_name, key=str(i % 10).encode(), value=f"m-{i}".encode(),
                         on_delivery=report(i))
        if i % ROUND == ROUND - 1:
            assert producer.flush(60) == 0
    assert producer.flush(60) == 0
    assert not errors, f"delivery errors: {errors[:5]}"
    assert proxy.dropped == proxy.max_drops, (
        f"only {proxy.dropped} Produce responses lost ({proxy.produce_requests} requests)")
    got, high = read_all(broker.bootstrap, topic_name, N)
    check_exactly_once_in_order(got, high, acked)


@pytest.fixture
def raw(broker):
    with RawConnection(broker.bootstrap) as conn:
        yield conn


@pytest.mark.timeout(60)
def test_same_batch_twice_is_stored_once(raw, topic_name):
    assert raw.create_topic(topic_name, 1) == NONE
    error, pid, epoch = raw.init_producer_id()
    assert error == NONE and pid >= 0 and epoch >= 0

    first = idempotent_batch(pid, epoch, 0, [b"a", b"b", b"c"])
    r1 = raw.produce(topic_name, 0, first)
    assert (r1.error_code, r1.base_offset) == (NONE, 0)
    # The retry: byte-for-byte the same batch. Same base offset, nothing appended.
    r2 = raw.produce(topic_name, 0, first)
    assert (r2.error_code, r2.base_offset) == (NONE, 0)

    r3 = raw.produce(topic_name, 0, idempotent_batch(pid, epoch, 3, [b"d"]))
    assert (r3.error_code, r3.base_offset) == (NONE, 3)
    # A retry of an older batch (not the last one) is recognised too.
    r4 = raw.produce(topic_name, 0, first)
    assert (r4.error_code, r4.base_offset) == (NONE, 0)

    fetched = raw.fetch(topic_name, 0, 0)
    assert fetched.high_watermark == 4
    assert records_of(fetched) == [(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d")]


@pytest.mark.timeout(60)
def test_sequence_gap_is_refused(raw, topic_name):
    assert raw.create_topic(topic_name, 1) == NONE
    _, pid, epoch = raw.init_producer_id()
    assert raw.produce(topic_name, 0, idempotent_batch(pid, epoch, 0, [b"a", b"b"])).error_code \
        == NONE
    # Next expected sequence is 2; 5 skips three.
    gap = raw.produce(topic_name, 0, idempotent_batch(pid, epoch, 5, [b"x"]))
    assert gap.error_code == OUT_OF_ORDER_SEQUENCE_NUMBER
    # Nothing was appended, and the expected sequence still works.
    ok = raw.produce(topic_name, 0, idempotent_batch(pid, epoch, 2, [b"c"]))
    assert (ok.error_code, ok.base_offset) == (NONE, 2)
    fetched = raw.fetch(topic_name, 0, 0)
    assert records_of(fetched) == [(0, b"a"), (1, b"b"), (2, b"c")]


@pytest.mark.timeout(60)
def test_other_producer_same_sequence_is_not_a_duplicate(raw, topic_name):
    assert raw.create_topic(topic_name, 1) == NONE
    _, pid1, epoch1 = raw.init_producer_id()
    _, pid2, epoch2 = raw.init_producer_id()
    assert pid1 != pid2, "InitProducerId handed out the same producer id twice"
    r1 = raw.produce(topic_name, 0, idempotent_batch(pid1, epoch1, 0, [b"one"]))
    r2 = raw.produce(topic_name, 0, idempotent_batch(pid2, epoch2, 0, [b"two"]))
    assert (r1.error_code, r1.base_offset, r2.error_code, r2.base_offset) == (NONE, 0, NONE, 1)
    assert records_of(raw.fetch(topic_name, 0, 0)) == [(0, b"one"), (1, b"two")]
