"""An exactly-once consume–transform–produce worker, run as its own process so a test can kill
it with SIGKILL (`test_transactions.py`):

    python txn_worker.py BOOTSTRAP SOURCE SINK GROUP TRANSACTIONAL_ID TOTAL

It reads every partition of SOURCE from GROUP's committed offsets (read_committed), and for
each batch, in one transaction, writes `out-<value>` to the same partition of SINK and commits
the batch's offsets with `send_offsets_to_transaction`. An abortable error aborts the round and
rewinds to the committed offsets; a fatal one (the worker was fenced) exits 3. It prints
`round N` after each committed round and exits 0 once GROUP's committed offsets cover TOTAL
messages.
"""

from __future__ import annotations

import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition

DEADLINE_S = 150
# What OffsetFetch answers while the group's coordinator moves or restarts (a test killed a
# node): the question is asked again, as Kafka's clients retry it, until the deadline.
COORDINATOR_MOVING = (KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR,
                      KafkaError.COORDINATOR_LOAD_IN_PROGRESS)


def rewind(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    """(Re)assign every partition at the group's committed offset (the beginning if none).
    An assignment sets the positions before fetching starts; a seek right after an assign
    could lose to the assignment's own start offset."""
    committed = consumer.committed(partitions, timeout=30)
    consumer.assign([TopicPartition(tp.topic, tp.partition,
                                    tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                     for tp in committed])


def main() -> int:
    bootstrap, source, sink, group, transactional_id, total = sys.argv[1:7]
    total = int(total)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "auto.offset.reset": "earliest"})
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
                         "linger.ms": 5, "transaction.timeout.ms": 20_000})
    producer.init_transactions(60)
    metadata = consumer.list_topics(source, timeout=30)
    partitions = [TopicPartition(source, p) for p in metadata.topics[source].partitions]
    rewind(consumer, partitions)
    rounds = 0
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            committed = consumer.committed(partitions, timeout=30)
        except KafkaException as e:
            if e.args[0].code() not in COORDINATOR_MOVING:
                raise
            continue
        if sum(max(tp.offset, 0) for tp in committed) >= total:
            return 0
        batch = [m for m in consumer.consume(num_messages=20, timeout=0.5) if not m.error()]
        if not batch:
            continue
        try:
            producer.begin_transaction()
            for m in batch:
                producer.produce(sink, value=b"out-" + m.value(), partition=m.partition())
            positions = consumer.position(consumer.assignment())
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(),
                                                 60)
            producer.commit_transaction(60)
        except KafkaException as e:
            error = e.args[0]
            if error.fatal():
                print(f"fatal: {error}", file=sys.stderr, flush=True)
                return 3
            if error.txn_requires_abort():
                producer.abort_transaction(60)
            elif error.retriable():
                # The commit's outcome is unknown: commit again (it is idempotent).
                producer.commit_transaction(60)
                rounds += 1
                print(f"round {rounds}", flush=True)
                continue
            else:
                raise
            rewind(consumer, partitions)
            continue
        rounds += 1
        print(f"round {rounds}", flush=True)
    print("deadline passed", file=sys.stderr, flush=True)
    return 2


if __name__ == "__main__":
    sys.exit(main())
