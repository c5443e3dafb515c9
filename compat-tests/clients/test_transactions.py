"""Transactions (KIP-98) with real clients, on one node of every backend and on three nodes of
every multi-node backend (topics with three replicas, so the coordinator writes most markers
through WriteTxnMarkers to other brokers).

- confluent-kafka's transactional producer commits and aborts; a `read_committed` consumer sees
  exactly the committed messages, in order, and a `read_uncommitted` one sees them all.
- consume–transform–produce: `send_offsets_to_transaction` commits the input offsets with the
  output; an aborted round commits neither.
- zombie fencing: a second producer with the same `transactional.id` fences the first, whose
  open transaction is aborted.
- a transaction left open past `transaction.timeout.ms` is aborted by its coordinator, and the
  last stable offset moves past it.
- kafka-python's transactional producer commits and aborts.
- exactly once through kill -9 (three nodes): a consume–transform–produce worker process
  (`txn_worker.py`) runs while the transaction coordinator's broker, an output partition's
  leader, or the worker itself is killed with SIGKILL after a number of rounds drawn from the
  seed (21, 22, or `SWITCHYARD_CONFORMANCE_SEED`); the broker comes back, the worker is
  started again: every input message is in the committed output exactly once.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as CTopicPartition
from confluent_kafka.admin import NewTopic
from kafka import KafkaProducer
from kafka.protocol.admin.transactions import (
    DescribeTransactionsRequest, DescribeTransactionsResponse,
)
from kafka.protocol.metadata.find_coordinator import (
    FindCoordinatorRequest, FindCoordinatorResponse,
)

from client_util import FAST_REBALANCE_ENV, confluent_admin, confluent_conf
from conftest import MULTI_NODE, Cluster
from raw_kafka import RawConnection

PARTITIONS = 3
DEADLINE_S = 60
# Coordinators look for expired transactions twice a second (Kafka's default is 10 s).
TXN_ENV = {
    **FAST_REBALANCE_ENV,
    "SWITCHYARD_KAFKA__TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS": "500",
}


def create_topic(bootstrap: str, name: str, replicas: int) -> None:
    admin = confluent_admin(bootstrap)
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=PARTITIONS, replication_factor=replicas)],
        operation_timeout=15, request_timeout=15)
    futures[name].result(timeout=30)


def txn_producer(bootstrap: str, transactional_id: str, **extra) -> Producer:
    producer = Producer(confluent_conf(bootstrap, transactional_id=transactional_id,
                                       linger_ms=5, **extra))
    producer.init_transactions(30)
    return producer


def produce_round(producer: Producer, topic: str, prefix: str, n: int) -> None:
    for i in range(n):
        producer.produce(topic, key=str(i).encode(), value=f"{prefix}-{i}".encode(),
                         partition=i % PARTITIONS)
    producer.flush(30)


def read_to_end(bootstrap: str, topic: str, isolation: str,
                at_least: int = 0) -> dict[int, list[bytes]]:
    """Every message a consumer with `isolation` reads from the beginning, by partition, read
    until its position reaches each partition's end (the LSO for read_committed) having read
    `at_least` messages."""
    consumer = Consumer(confluent_conf(bootstrap, group_id=f"reader-{uuid.uuid4().hex[:8]}",
                                       enable_auto_commit=False, isolation_level=isolation,
                                       enable_partition_eof=True))
    got: dict[int, list[bytes]] = defaultdict(list)
    try:
        consumer.assign([CTopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        at_end: set[int] = set()
        deadline = time.monotonic() + DEADLINE_S
        while len(at_end) < PARTITIONS or sum(map(len, got.values())) < at_least:
            assert time.monotonic() < deadline, (
                f"partitions {at_end} of {PARTITIONS} read to end, {dict(got)} read")
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                err = msg.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    continue
                if err is not None:
                    raise KafkaException(err)
                at_end.discard(msg.partition())
                got[msg.partition()].append(msg.value())
    finally:
        consumer.close()
    return got


def expected_by_partition(rounds: list[tuple[str, int]]) -> dict[int, list[bytes]]:
    want: dict[int, list[bytes]] = defaultdict(list)
    for prefix, n in rounds:
        for i in range(n):
            want[i % PARTITIONS].append(f"{prefix}-{i}".encode())
    return want


def transaction_state(bootstrap: str, transactional_id: str) -> str:
    """The transaction's state, as DescribeTransactions on its coordinator tells it."""
    with RawConnection(bootstrap.split(",")[0]) as raw:
        found = raw.request(FindCoordinatorRequest(key=transactional_id, key_type=1),
                            FindCoordinatorResponse, 1)
    assert found.error_code == 0, found
    with RawConnection(f"{found.host}:{found.port}") as raw:
        described = raw.request(DescribeTransactionsRequest(transactional_ids=[transactional_id]),
                                DescribeTransactionsResponse, 0)
    (state,) = described.transaction_states
    assert state.error_code == 0, state
    return state.transaction_state


def commit_and_abort(bootstrap: str, topic: str, replicas: int) -> None:
    create_topic(bootstrap, topic, replicas)
    tid = f"txn-{topic}"
    producer = txn_producer(bootstrap, tid)
    committed, aborted = [("c1", 30), ("c2", 20)], [("a1", 25)]
    # EndTxn answers once the markers are written (it waits for them a while): right after a
    # commit or abort the coordinator has completed it, whichever broker leads the metadata.
    producer.begin_transaction()
    produce_round(producer, topic, "c1", 30)
    producer.commit_transaction(30)
    assert transaction_state(bootstrap, tid) == "CompleteCommit"
    producer.begin_transaction()
    produce_round(producer, topic, "a1", 25)
    producer.abort_transaction(30)
    assert transaction_state(bootstrap, tid) == "CompleteAbort"
    producer.begin_transaction()
    produce_round(producer, topic, "c2", 20)
    producer.commit_transaction(30)
    assert transaction_state(bootstrap, tid) == "CompleteCommit"

    assert read_to_end(bootstrap, topic, "read_committed") == expected_by_partition(committed)
    everything = expected_by_partition([committed[0], aborted[0], committed[1]])
    assert read_to_end(bootstrap, topic, "read_uncommitted") == everything


def consume_transform_produce(bootstrap: str, topic: str, replicas: int) -> None:
    source, sink, group = f"{topic}-in", f"{topic}-out", f"{topic}-group"
    create_topic(bootstrap, source, replicas)
    create_topic(bootstrap, sink, replicas)
    plain = Producer(confluent_conf(bootstrap, enable_idempotence=True))
    n = 60
    for i in range(n):
        plain.produce(source, value=f"in-{i}".encode(), partition=i % PARTITIONS)
    plain.flush(30)

    consumer = Consumer(confluent_conf(bootstrap, group_id=group, enable_auto_commit=False,
                                       auto_offset_reset="earliest",
                                       isolation_level="read_committed"))
    producer = txn_producer(bootstrap, f"txn-{topic}")
    try:
        consumer.subscribe([source])
        seen = 0
        aborted_once = False
        deadline = time.monotonic() + DEADLINE_S
        while seen < n:
            assert time.monotonic() < deadline, f"transformed {seen} of {n}"
            batch = [m for m in consumer.consume(num_messages=20, timeout=0.5) if not m.error()]
            if not batch:
                continue
            producer.begin_transaction()
            for m in batch:
                producer.produce(sink, value=b"out-" + m.value()[3:], partition=m.partition())
            positions = consumer.position(consumer.assignment())
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(),
                                                 30)
            if not aborted_once:
                # The first round aborts: neither its output nor its offsets may count; the
                # consumer goes back to the last committed offsets and reads it again.
                aborted_once = True
                producer.abort_transaction(30)
                committed = consumer.committed(positions, timeout=30)
                assert all(tp.offset < 0 for tp in committed), committed
                for tp in committed:
                    consumer.seek(CTopicPartition(source, tp.partition, OFFSET_BEGINNING))
                continue
            producer.commit_transaction(30)
            seen += len(batch)
        committed = consumer.committed(
            [CTopicPartition(source, p) for p in range(PARTITIONS)], timeout=30)
        assert sum(tp.offset for tp in committed) == n, committed
    finally:
        consumer.close()
    out = read_to_end(bootstrap, sink, "read_committed")
    values = sorted(v for vs in out.values() for v in vs)
    assert values == sorted(f"out-{i}".encode() for i in range(n)), "exactly once, nothing else"


@pytest.mark.timeout(240)
def test_commit_abort_and_isolation(broker_factory, topic_name):
    broker = broker_factory.start(TXN_ENV)
    commit_and_abort(broker.bootstrap, topic_name, replicas=1)


@pytest.mark.timeout(240)
def test_consume_transform_produce(broker_factory, topic_name):
    broker = broker_factory.start(TXN_ENV)
    consume_transform_produce(broker.bootstrap, topic_name, replicas=1)


@pytest.mark.timeout(240)
def test_a_second_producer_fences_the_first(broker_factory, topic_name):
    broker = broker_factory.start(TXN_ENV)
    bootstrap = broker.bootstrap
    create_topic(bootstrap, topic_name, 1)
    tid = f"txn-{topic_name}"
    zombie = txn_producer(bootstrap, tid)
    zombie.begin_transaction()
    produce_round(zombie, topic_name, "zombie", 10)

    successor = txn_producer(bootstrap, tid)
    successor.begin_transaction()
    produce_round(successor, topic_name, "next", 10)
    successor.commit_transaction(30)

    with pytest.raises(KafkaException) as raised:
        zombie.commit_transaction(30)
    error = raised.value.args[0]
    assert error.fatal() or error.code() in (
        KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH
    ), error
    assert read_to_end(bootstrap, topic_name, "read_committed") == expected_by_partition(
        [("next", 10)])


@pytest.mark.timeout(240)
def test_an_expired_transaction_is_aborted(broker_factory, topic_name):
    broker = broker_factory.start(TXN_ENV)
    bootstrap = broker.bootstrap
    create_topic(bootstrap, topic_name, 1)
    stuck = txn_producer(bootstrap, f"txn-{topic_name}", transaction_timeout_ms=2_000)
    stuck.begin_transaction()
    produce_round(stuck, topic_name, "stuck", 6)
    plain = Producer(confluent_conf(bootstrap))
    for i in range(PARTITIONS):
        plain.produce(topic_name, value=f"after-{i}".encode(), partition=i)
    plain.flush(30)
    # Until the coordinator aborts the open transaction, the LSO stays at its first record and
    # a read_committed consumer sees nothing; the abort marker lets it read on.
    got = read_to_end(bootstrap, topic_name, "read_committed", at_least=PARTITIONS)
    assert got == {i: [f"after-{i}".encode()] for i in range(PARTITIONS)}
    with pytest.raises(KafkaException):
        stuck.commit_transaction(30)


@pytest.mark.timeout(240)
def test_kafka_python_transactions(broker_factory, topic_name):
    broker = broker_factory.start(TXN_ENV)
    bootstrap = broker.bootstrap
    create_topic(bootstrap, topic_name, 1)
    producer = KafkaProducer(bootstrap_servers=bootstrap,
                             transactional_id=f"txn-{topic_name}", request_timeout_ms=15_000)
    try:
        producer.init_transactions()
        for prefix, commit in [("kp-c", True), ("kp-a", False)]:
            producer.begin_transaction()
            for i in range(12):
                producer.send(topic_name, value=f"{prefix}-{i}".encode(), partition=i % PARTITIONS)
            producer.flush()
            if commit:
                producer.commit_transaction()
            else:
                producer.abort_transaction()
    finally:
        producer.close()
    assert read_to_end(bootstrap, topic_name, "read_committed") == expected_by_partition(
        [("kp-c", 12)])


@pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")
@pytest.mark.timeout(300)
def test_transactions_on_three_nodes(multi_backend, tmp_path, topic_name):
    # Kafka's default expiry check (10 s): completions must not wait for it.
    cluster = Cluster(multi_backend, tmp_path, env=FAST_REBALANCE_ENV)
    try:
        cluster.start()
        commit_and_abort(cluster.bootstrap(), topic_name, replicas=3)
        consume_transform_produce(cluster.bootstrap(), f"{topic_name}-ctp", replicas=3)
    finally:
        cluster.close()


WORKER = Path(__file__).resolve().parent / "txn_worker.py"
KILL_SEEDS = ([int(os.environ["SWITCHYARD_CONFORMANCE_SEED"])]
              if os.environ.get("SWITCHYARD_CONFORMANCE_SEED") else [21, 22])
# The broker is killed and started again (coordinator, leader), or the worker process is.
VICTIMS = ["coordinator", "leader", "worker"]


class Worker:
    """A `txn_worker.py` process."""

    def __init__(self, log: Path, *args: str):
        # stderr (librdkafka's log lines too) goes to a file: a pipe nobody reads could fill.
        self.log = log
        with open(log, "a") as stderr:
            self.proc = subprocess.Popen([sys.executable, str(WORKER), *args],
                                         stdout=subprocess.PIPE, stderr=stderr, text=True)

    def rounds(self, n: int) -> None:
        """Block until the worker reported `n` committed rounds (or ended)."""
        seen = 0
        while seen < n:
            line = self.proc.stdout.readline()
            if not line:
                return
            seen += line.startswith("round ")

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(15)

    def stop(self) -> None:
        """Kill the worker if it still runs (a failed test must not leave it behind)."""
        if self.proc.poll() is None:
            self.kill9()

    def finish(self) -> None:
        code = self.proc.wait(DEADLINE_S * 3)
        assert code == 0, f"worker exited {code}: {self.log.read_text()[-4000:]}"


def transaction_coordinator(bootstrap: str, transactional_id: str) -> int:
    with RawConnection(bootstrap) as raw:
        response = raw.request(FindCoordinatorRequest(key=transactional_id, key_type=1),
                               FindCoordinatorResponse, 1)
    assert response.error_code == 0, response
    return response.node_id


def partition_leader(bootstrap: str, topic: str, partition: int) -> int:
    metadata = confluent_admin(bootstrap).list_topics(topic, timeout=30)
    return metadata.topics[topic].partitions[partition].leader


@pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")
@pytest.mark.timeout(420)
@pytest.mark.parametrize("victim", VICTIMS)
@pytest.mark.parametrize("seed", KILL_SEEDS)
def test_exactly_once_through_kill9(multi_backend, tmp_path, topic_name, victim, seed):
    rng = random.Random(f"{seed}-{victim}")
    cluster = Cluster(multi_backend, tmp_path, env=TXN_ENV)
    worker = None
    try:
        cluster.start()
        bootstrap = cluster.bootstrap()
        source, sink = f"{topic_name}-in", f"{topic_name}-out"
        create_topic(bootstrap, source, 3)
        create_topic(bootstrap, sink, 3)
        n = 200
        plain = Producer(confluent_conf(bootstrap, enable_idempotence=True))
        for i in range(n):
            plain.produce(source, value=f"in-{i}".encode(), partition=i % PARTITIONS)
        plain.flush(30)
        tid = f"txn-{topic_name}"
        args = (bootstrap, source, sink, f"{topic_name}-group", tid, str(n))
        log = tmp_path / "worker.log"
        worker = Worker(log, *args)
        worker.rounds(rng.randint(1, 4))
        if victim == "worker":
            worker.kill9()
            worker = Worker(log, *args)
        else:
            node = (transaction_coordinator(cluster.bootstrap(1), tid) if victim == "coordinator"
                    else partition_leader(bootstrap, sink, rng.randrange(PARTITIONS)))
            cluster.nodes[node].restart()
        worker.finish()
        out = read_to_end(bootstrap, sink, "read_committed", at_least=n)
        values = sorted(v for vs in out.values() for v in vs)
        assert values == sorted(f"out-in-{i}".encode() for i in range(n)), (
            f"seed {seed}, victim {victim}: not exactly once")
    finally:
        if worker is not None:
            worker.stop()
        cluster.close()
