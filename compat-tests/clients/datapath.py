"""Seeded fault runs of the Kafka data path: real `switchyard serve` processes, real clients, a
history of every operation, and checkers that judge it.

A run (`run_schedule`) starts a cluster (three nodes, or five for every fourth seed) whose
every link — broker to broker (consensus and the Kafka listeners: replica fetches, heartbeats,
forwarded requests) and client to broker — crosses the proxies of `switchyard-netem` (the
compat-tests `Network`), creates two RF=3 topics with `min.insync.replicas=2`, and runs three
workloads at once while a schedule drawn from the seed injects faults:

- idempotent `acks=all` producers append unique values to keys (Elle's list-append: a key's
  list is its values in offset order); each append records when it was invoked and completed,
  and its outcome: acknowledged at (partition, offset), or unknown (an error or timeout: it may
  or may not have been written);
- a consumer group whose members read, record each (partition, offset, value) with the
  assignment it came in, and commit what they read; each commit records its outcome;
- a transactional consume–transform–produce worker that copies the appends, round by round,
  to a second topic in transactions that also commit its offsets; each round records what it
  read and whether it committed, aborted, or is unknown.

After the schedule every fault is healed, every node runs again, and the run waits for a write
to succeed and the ISR to be whole; a fresh consumer reads every partition to its end, the
cluster stops, and each node's copy of each partition is read from its segment files.

Checks (`check`): no acknowledged append lost or moved; no value twice (idempotence); order
agrees with real time (an append acknowledged before another was invoked comes first); every
read agrees with the final log; committed offsets never go backwards and no member reads below
an offset committed before its assignment; every replica's batches up to the high watermark
are the same, with leader epochs that never decrease; committed transactions are visible to
read_committed, aborted ones never, and the sink holds exactly the source below the
transformer's committed offsets, once each and in order; availability (time to the first
acknowledged append after each fault starts and after it ends).

`SWITCHYARD_CONFORMANCE_SEED=N` replays one schedule (the clients' timing still varies).
"""

from __future__ import annotations

import dataclasses
import json
import random
import struct
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from client_util import CONFLUENT_BASE, confluent_admin, wait_for
from conftest import (CLUSTER_ENV, Backend, BrokerProcess, Cluster, release_port, reserve_port,
                      switchyard_bin)
from conftest import write_secret

TOPIC = "appends"
PARTITIONS = 3
KEYS = 8
PRODUCERS = 2
CONSUMERS = 2
GROUP = "readers"
# The transactional workload: reads TOPIC, writes each value to the same partition of SINK.
SINK = "transformed"
TRANSFORM_GROUP = "transformer"
TRANSACTIONAL_ID = "transformer"
# How long a run may take to heal: elect, fence, catch up, answer.
RECOVERY_S = 60.0
# How long the workers may take to stop, once the cluster has healed and taken a write: the
# producers' messages time out within `message.timeout.ms` (10 s) and a healed cluster
# answers the other clients' calls in well under a second. A worker still running after this
# is stuck in the client: librdkafka's send_offsets_to_transaction ignores its timeout while
# the group coordinator it cached is a broker that dropped out of a Metadata response, as a
# fenced broker does (confluentinc/librdkafka#5511, open in 2.16; seen here in about one run
# in three, for up to two minutes).
STOP_S = 20.0
# Each producer appends about this often.
APPEND_INTERVAL_S = 0.01
# Brokers drop a follower from the ISR after this long without catching up (Kafka: 30 s), so
# that acks=all writes resume within a fault instead of after it.
NODE_ENV = {
    **CLUSTER_ENV,
    "SWITCHYARD_KAFKA__REPLICA_LAG_TIME_MAX_MS": "3000",
}

# The fault kinds a schedule draws from.
FAULTS = ("isolate", "split", "one-way", "pause", "kill", "delay", "lossy", "clients")

# The checks: each violation's message starts with its check's name and a colon.
CHECKS = {
    "lost": "every acknowledged append is in the final log, at the offset it was acknowledged "
            "at",
    "duplicate": "no value is in the log twice (idempotence), but for what a producer "
                 "re-sent, unacknowledged, under a new epoch: new writes by the protocol, "
                 "counted apart as re-sent",
    "sequence": "no idempotent producer fails fatally (an out-of-order sequence means the "
                "broker lost or reordered writes it had acknowledged)",
    "order": "an append acknowledged before another was sent precedes it in its key's list",
    "divergent read": "every value a consumer read is the final log's value at that offset",
    "phantom read": "no consumer read an offset the final log does not hold",
    "commit went back": "no acknowledged commit is below one acknowledged before it was sent",
    "commit lost": "the group's committed offset at the end is one a member committed and no "
                   "acknowledged commit of another offset began after",
    "re-read": "no member reads below an offset committed before its assignment began",
    "went back": "within one assignment a member's offsets only rise",
    "replica short": "every node holds each partition up to its high watermark",
    "epoch went back": "leader epochs never decrease along a node's log",
    "replicas differ": "every node's batches below the high watermark are the same",
    "txn lost": "every transaction acknowledged as committed is in the sink (read_committed)",
    "txn aborted read": "no output of an aborted transaction is visible to read_committed",
    "txn exactly once": "each partition of the sink holds, once and in order, the values of "
                        "the same partition of the source below the transformer's committed "
                        "offset",
}


def netem_bin() -> Path:
    """`switchyard-netem`, built beside the broker binary (`cargo build --workspace`)."""
    return switchyard_bin().parent / "switchyard-netem"


class Netem:
    """A `switchyard-netem` process: proxies on every link of a cluster, set by command."""

    def __init__(self, cluster_addrs: dict[int, str], kafka_addrs: dict[int, str]):
        self.proc = subprocess.Popen(
            [str(netem_bin()),
             "--cluster", ",".join(f"{i}={a}" for i, a in cluster_addrs.items()),
             "--kafka", ",".join(f"{i}={a}" for i, a in kafka_addrs.items())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.peers: dict[int, str] = {}
        self.fronts: dict[int, str] = {}
        for line in self.proc.stdout:
            words = line.split()
            if words == ["ready"]:
                break
            kind, node, value = words
            (self.peers if kind == "peers" else self.fronts)[int(node)] = value
        else:
            raise RuntimeError(f"switchyard-netem exited with {self.proc.wait()} before ready")
        self.lock = threading.Lock()

    def command(self, line: str) -> None:
        with self.lock:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"switchyard-netem: {line!r}: {answer or 'exited'}")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(15)


class ProxiedCluster(Cluster):
    """`size` brokers, node ids 1..size, every link through a `Netem`: node i reaches node j's
    cluster port and Kafka listener through proxies, and advertises the proxy in front of its
    listener, so clients reach it through the proxies too."""

    def __init__(self, backend: Backend, base: Path, size: int = 3, env: dict | None = None):
        self.backend = backend
        cluster_ports = {i: reserve_port() for i in range(1, size + 1)}
        kafka_ports = {i: reserve_port() for i in range(1, size + 1)}
        self.ports = [*cluster_ports.values(), *kafka_ports.values()]
        # Operators' commands (`command`) reach the nodes directly.
        self.peers = ",".join(f"{i}=127.0.0.1:{p}" for i, p in cluster_ports.items())
        self.netem = Netem({i: f"127.0.0.1:{p}" for i, p in cluster_ports.items()},
                           {i: f"127.0.0.1:{p}" for i, p in kafka_ports.items()})
        self.secret_file = write_secret(base / "cluster.secret")
        env = {**NODE_ENV, "SWITCHYARD_CLUSTER_SECRET_FILE": str(self.secret_file),
               **(env or {})}
        self.nodes: dict[int, BrokerProcess] = {}
        for i in cluster_ports:
            workdir = base / f"node-{i}"
            workdir.mkdir(parents=True)
            self.nodes[i] = BrokerProcess(
                backend, workdir, env, port=kafka_ports[i],
                args=["--node-id", str(i), "--peers", self.netem.peers[i],
                      "--advertise", self.netem.fronts[i]])

    def bootstrap(self, *ids: int) -> str:
        return ",".join(self.netem.fronts[i] for i in (ids or self.nodes))

    def close(self, release_ports: bool = True) -> None:
        """Stop the nodes and the proxies; with `release_ports`, later clusters of this process
        may take the nodes' ports (every process that bound them is gone)."""
        try:
            super().close()
        finally:
            self.netem.close()
            if release_ports:
                for port in self.ports:
                    release_port(port)


@dataclasses.dataclass
class Fault:
    kind: str
    node: int
    peer: int
    seconds: float
    # Quiet time before the fault starts.
    gap: float
    # "split": the minority cut off from the other nodes.
    minority: tuple[int, ...] = ()

    def describe(self) -> str:
        what = {
            "isolate": f"isolate node {self.node} from the other nodes",
            "split": f"split nodes {list(self.minority)} from the others",
            "one-way": f"cut node {self.node} -> node {self.peer}",
            "pause": f"SIGSTOP node {self.node}",
            "kill": f"kill -9 node {self.node}, then restart it",
            "delay": f"delay every link of node {self.node} by 150 ms",
            "lossy": f"drop 1 in 10 chunks on node {self.node}'s links",
            "clients": f"cut the clients from node {self.node}",
        }[self.kind]
        return f"after {self.gap:.1f} s: {what} for {self.seconds:.1f} s"


def schedule(seed: int, nodes: list[int], kinds: tuple[str, ...] = FAULTS) -> list[Fault]:
    """Two to four faults drawn from `seed`, one after another, each lasting 1 to 8 s: long
    enough, often, for the ISR to shrink and a leader to be fenced and replaced. A split (a
    minority of more than one node) needs five nodes; on three it is an isolation."""
    rng = random.Random(seed)
    faults = []
    for _ in range(rng.randint(2, 4)):
        node = rng.choice(nodes)
        kind = rng.choice(kinds)
        minority = tuple(sorted(rng.sample(nodes, (len(nodes) - 1) // 2)))
        if kind == "split" and len(minority) < 2:
            kind = "isolate"
        faults.append(Fault(
            kind=kind, node=node, peer=rng.choice([n for n in nodes if n != node]),
            seconds=round(rng.uniform(1.0, 8.0), 1), gap=round(rng.uniform(0.5, 2.0), 1),
            minority=minority if kind == "split" else ()))
    return faults


@dataclasses.dataclass
class Append:
    producer: int
    key: str
    value: str
    invoked: float
    completed: float | None = None
    # "ok" (acknowledged), "unknown" (error or no answer: maybe written), "failed" (refused
    # before it was sent), None while pending.
    outcome: str | None = None
    partition: int | None = None
    offset: int | None = None
    error: str | None = None


@dataclasses.dataclass
class Read:
    member: int
    session: int
    partition: int
    offset: int
    value: str
    at: float


@dataclasses.dataclass
class Commit:
    member: int
    offsets: dict[int, int]
    invoked: float
    completed: float
    ok: bool


@dataclasses.dataclass
class Assignment:
    member: int
    session: int
    partitions: list[int]
    at: float


@dataclasses.dataclass
class Round:
    """One transaction of the transformer: the source records it read, as (partition, offset,
    value), each written to the sink as `value@round`."""
    number: int
    read: list[tuple[int, int, str]]
    # "committed" (commit_transaction returned), "aborted", or "unknown" (no answer).
    outcome: str | None = None


@dataclasses.dataclass
class History:
    appends: list[Append] = dataclasses.field(default_factory=list)
    reads: list[Read] = dataclasses.field(default_factory=list)
    commits: list[Commit] = dataclasses.field(default_factory=list)
    assignments: list[Assignment] = dataclasses.field(default_factory=list)
    # The transactional workload's rounds, and the sink read with read_committed after healing
    # (partition -> [(offset, value)]); the transformer group's committed offsets.
    rounds: list[Round] = dataclasses.field(default_factory=list)
    sink: dict[int, list[tuple[int, str]]] = dataclasses.field(default_factory=dict)
    transformed: dict[int, int] = dataclasses.field(default_factory=dict)
    # (producer, error, when): fatal errors of the idempotent producers.
    fatal: list[tuple[int, str, float]] = dataclasses.field(default_factory=list)
    # (fault, started, ended) in time.monotonic().
    faults: list[tuple[Fault, float, float]] = dataclasses.field(default_factory=list)
    # Workers still running when told to stop (`stop`): their operations in flight are
    # unknown.
    abandoned: list[str] = dataclasses.field(default_factory=list)
    # Partition -> [(offset, key, value)] read from the beginning after healing.
    final: dict[int, list[tuple[int, str, str]]] = dataclasses.field(default_factory=dict)
    # Partition -> committed offset of the group after healing.
    committed: dict[int, int] = dataclasses.field(default_factory=dict)
    # Partition -> high watermark after healing.
    high: dict[int, int] = dataclasses.field(default_factory=dict)
    # Node -> partition it holds -> [(base offset, last offset, leader epoch, crc)] from its
    # files.
    replicas: dict[int, dict[int, list[tuple[int, int, int, int]]]] = dataclasses.field(
        default_factory=dict)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def save(self, path: Path) -> None:
        """The history as JSON, to study a failed run."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name != "lock"}
        path.write_text(json.dumps(
            fields, default=lambda o: dataclasses.asdict(o) if dataclasses.is_dataclass(o)
            else str(o)))


class Producing(threading.Thread):
    """An idempotent acks=all producer appending `p<id>-<n>` to random keys until stopped."""

    def __init__(self, ident: int, bootstrap: str, history: History, seed: int):
        super().__init__(daemon=True, name=f"producer-{ident}")
        self.number = ident
        self.history = history
        self.rng = random.Random(seed * 100 + ident)
        self.conf = {
            **CONFLUENT_BASE, "bootstrap.servers": bootstrap, "enable.idempotence": True,
            "acks": "all", "linger.ms": 5, "message.timeout.ms": 10_000,
            "request.timeout.ms": 5_000, "socket.timeout.ms": 5_000,
            "reconnect.backoff.max.ms": 500, "topic.metadata.refresh.interval.ms": 1_000}
        self.producer = Producer(self.conf)
        self.stopped = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopped.is_set():
            key = f"k{self.rng.randrange(KEYS)}"
            op = Append(self.number, key, f"p{self.number}-{n}", time.monotonic())
            n += 1
            with self.history.lock:
                self.history.appends.append(op)
            try:
                self.producer.produce(
                    TOPIC, key=key, value=op.value,
                    on_delivery=lambda err, msg, op=op: self.delivered(op, err, msg))
            except BufferError:
                # Never sent: the producer's queue is full.
                op.completed, op.outcome, op.error = time.monotonic(), "failed", "queue full"
            except KafkaException as e:
                # Never sent.
                op.completed, op.outcome, op.error = time.monotonic(), "failed", str(e)
                self.failed(e)
            try:
                self.producer.poll(APPEND_INTERVAL_S)
            except KafkaException as e:
                self.failed(e)
        self.producer.flush(30)

    def failed(self, e: KafkaException) -> None:
        """A fatal error (an idempotent producer's sequence broken: the broker lost or
        reordered writes it had acknowledged) ends this producer; its pending appends fail
        with it, unknown. A new one, with a new producer id, goes on."""
        if not e.args[0].fatal():
            return
        with self.history.lock:
            self.history.fatal.append((self.number, str(e), time.monotonic()))
        try:
            self.producer.flush(10)
        except KafkaException:
            pass
        self.producer = Producer(self.conf)

    @staticmethod
    def delivered(op: Append, err, msg) -> None:
        op.completed = time.monotonic()
        if err is None:
            op.outcome, op.partition, op.offset = "ok", msg.partition(), msg.offset()
        else:
            op.outcome, op.error = "unknown", str(err)


class Consuming(threading.Thread):
    """A member of `GROUP`: reads, records, and commits what it read about twice a second, and
    what it read of the partitions it is about to lose when a rebalance revokes them (never
    offsets of partitions it no longer owns: the broker would take those from any member)."""

    def __init__(self, member: int, bootstrap: str, history: History):
        super().__init__(daemon=True, name=f"consumer-{member}")
        self.member = member
        self.history = history
        self.session = 0
        # Partition -> the offset after the last record read and not yet committed.
        self.positions: dict[int, int] = {}
        self.consumer = Consumer({
            **CONFLUENT_BASE, "bootstrap.servers": bootstrap, "group.id": GROUP,
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "session.timeout.ms": 6_000, "heartbeat.interval.ms": 500,
            "socket.timeout.ms": 5_000, "reconnect.backoff.max.ms": 500,
            "topic.metadata.refresh.interval.ms": 1_000})
        self.stopped = threading.Event()

    def assigned(self, _consumer, partitions) -> None:
        self.session += 1
        with self.history.lock:
            self.history.assignments.append(Assignment(
                self.member, self.session, sorted(p.partition for p in partitions),
                time.monotonic()))

    def revoked(self, _consumer, _partitions) -> None:
        self.commit()
        self.positions = {}

    def lost(self, _consumer, _partitions) -> None:
        # Out of the group (its session expired): a commit would be refused; drop them.
        self.positions = {}

    def run(self) -> None:
        self.consumer.subscribe([TOPIC], on_assign=self.assigned, on_revoke=self.revoked,
                                on_lost=self.lost)
        last_commit = time.monotonic()
        try:
            while not self.stopped.is_set():
                msg = self.consumer.poll(0.2)
                if msg is not None and msg.error() is None:
                    read = Read(self.member, self.session, msg.partition(), msg.offset(),
                                msg.value().decode(), time.monotonic())
                    with self.history.lock:
                        self.history.reads.append(read)
                    self.positions[msg.partition()] = msg.offset() + 1
                if time.monotonic() - last_commit > 0.5:
                    self.commit()
                    last_commit = time.monotonic()
            self.commit()
        finally:
            self.consumer.close()

    def commit(self) -> None:
        if not self.positions:
            return
        positions, invoked = self.positions, time.monotonic()
        self.positions = {}
        try:
            self.consumer.commit(offsets=[TopicPartition(TOPIC, p, o)
                                          for p, o in positions.items()], asynchronous=False)
            ok = True
        except KafkaException:
            ok = False
        with self.history.lock:
            self.history.commits.append(Commit(self.member, positions, invoked,
                                               time.monotonic(), ok))


class Transforming(threading.Thread):
    """Exactly-once consume–transform–produce: reads TOPIC (read_committed, from the
    transformer group's committed offsets), and per round, in one transaction, writes each
    value to the same partition of SINK as `value@round` and commits the round's offsets with
    `send_offsets_to_transaction`. An abortable error aborts the round and rewinds to the
    committed offsets; a fatal one replaces the producer (`init_transactions` with the same
    transactional id fences the old one and ends its transaction)."""

    def __init__(self, bootstrap: str, history: History):
        super().__init__(daemon=True, name="transformer")
        self.history = history
        self.consumer = Consumer({
            **CONFLUENT_BASE, "bootstrap.servers": bootstrap, "group.id": TRANSFORM_GROUP,
            "enable.auto.commit": False, "isolation.level": "read_committed",
            "auto.offset.reset": "earliest", "socket.timeout.ms": 5_000})
        self.producer_conf = {
            **CONFLUENT_BASE, "bootstrap.servers": bootstrap,
            "transactional.id": TRANSACTIONAL_ID, "linger.ms": 5,
            "transaction.timeout.ms": 30_000, "socket.timeout.ms": 5_000}
        self.producer: Producer | None = None
        self.partitions = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        self.stopped = threading.Event()

    def start_producer(self) -> bool:
        try:
            self.producer = Producer(self.producer_conf)
            self.producer.init_transactions(30)
            return True
        except KafkaException:
            self.producer = None
            return False

    def rewind(self) -> bool:
        """Assign every partition at the group's committed offset (the beginning if none)."""
        try:
            committed = self.consumer.committed(self.partitions, timeout=10)
        except KafkaException:
            return False
        self.consumer.assign([TopicPartition(TOPIC, tp.partition,
                                             tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                              for tp in committed])
        return True

    def run(self) -> None:
        number = 0
        ready = False
        try:
            while not self.stopped.is_set():
                if self.producer is None and not self.start_producer():
                    continue
                if not ready:
                    ready = self.rewind()
                    continue
                batch = [m for m in self.consumer.consume(num_messages=20, timeout=0.2)
                         if m.error() is None]
                if not batch:
                    continue
                number += 1
                round_ = Round(number, [(m.partition(), m.offset(), m.value().decode())
                                        for m in batch])
                with self.history.lock:
                    self.history.rounds.append(round_)
                round_.outcome = self.transact(round_, batch)
                if round_.outcome != "committed":
                    ready = False
        finally:
            self.consumer.close()

    def transact(self, round_: Round, batch) -> str:
        producer = self.producer
        try:
            producer.begin_transaction()
            for m in batch:
                producer.produce(SINK, value=f"{m.value().decode()}@{round_.number}",
                                 partition=m.partition())
            positions = self.consumer.position(self.consumer.assignment())
            producer.send_offsets_to_transaction(
                positions, self.consumer.consumer_group_metadata(), 30)
        except KafkaException as e:
            return self.abort(e)
        # A commit whose answer did not come may be retried: committing again is idempotent.
        for _ in range(5):
            try:
                producer.commit_transaction(30)
                return "committed"
            except KafkaException as e:
                error = e.args[0]
                if error.fatal() or error.txn_requires_abort():
                    return self.abort(e)
        # No answer after every retry: replace the producer (which ends the transaction one way
        # or the other); what became of this one is unknown.
        self.producer = None
        return "unknown"

    def abort(self, e: KafkaException) -> str:
        error = e.args[0]
        if error.fatal():
            # Whether the transaction had committed is unknown to a fenced producer.
            self.producer = None
            return "unknown"
        try:
            self.producer.abort_transaction(30)
            return "aborted"
        except KafkaException:
            self.producer = None
            return "unknown"


def inject(cluster: ProxiedCluster, faults: list[Fault], history: History) -> None:
    """Run the schedule: each fault after its gap, for its time, then heal it. The waits are
    the schedule itself (how long a fault lasts), not waits for the cluster."""
    for fault in faults:
        time.sleep(fault.gap)
        node = cluster.nodes[fault.node]
        others = [n for n in cluster.nodes if n != fault.node]
        started = time.monotonic()
        if fault.kind == "isolate":
            cluster.netem.command(f"isolate {fault.node}")
        elif fault.kind == "split":
            for a in fault.minority:
                for b in (n for n in cluster.nodes if n not in fault.minority):
                    cluster.netem.command(f"set {a} {b} cut")
                    cluster.netem.command(f"set {b} {a} cut")
        elif fault.kind == "one-way":
            cluster.netem.command(f"set {fault.node} {fault.peer} cut")
        elif fault.kind == "pause":
            node.pause()
        elif fault.kind == "kill":
            node.kill9()
        elif fault.kind in ("delay", "lossy"):
            state = "delay 150" if fault.kind == "delay" else "lossy 10"
            for other in others:
                cluster.netem.command(f"set {fault.node} {other} {state}")
                cluster.netem.command(f"set {other} {fault.node} {state}")
        elif fault.kind == "clients":
            cluster.netem.command(f"set 0 {fault.node} cut")
            cluster.netem.command(f"set {fault.node} 0 cut")
        time.sleep(fault.seconds)
        if fault.kind == "pause":
            node.resume()
        elif fault.kind == "kill":
            node.launch()
        else:
            cluster.netem.command("heal")
        history.faults.append((fault, started, time.monotonic()))


def heal(cluster: ProxiedCluster, faults: list[Fault]) -> None:
    """Every link open, every node running and ready."""
    cluster.netem.command("heal")
    for node in cluster.nodes.values():
        node.resume()
    for i in {f.node for f in faults if f.kind == "kill"}:
        cluster.nodes[i].wait_ready()


def whole_isr(bootstrap: str) -> bool:
    """Whether every partition of the topic has a leader and all three replicas in its ISR,
    as the node `bootstrap` names says (no client API reports ISR changes by callback)."""
    md = confluent_admin(bootstrap).list_topics(TOPIC, timeout=10)
    topic = md.topics.get(TOPIC)
    if topic is None or topic.error is not None or len(topic.partitions) != PARTITIONS:
        return False
    return all(p.leader >= 0 and len(p.isrs) == len(p.replicas) == 3
               for p in topic.partitions.values())


# What a partition's former or future leader answers while leadership moves, and what a request
# that found no leader in time fails with: Kafka's clients retry these.
LEADER_MOVING = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                 KafkaError.FENCED_LEADER_EPOCH, KafkaError.UNKNOWN_LEADER_EPOCH,
                 KafkaError.REQUEST_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT}


def high_watermark(consumer: Consumer, partition: int) -> int:
    """The partition's high watermark, as its leader answers. librdkafka hands the errors of
    a moving leadership (a broker that no longer leads, or does not yet) back to the caller,
    who retries as its own calls would; polled, since no client API waits for a leader."""
    def ask() -> tuple[int] | None:
        try:
            _low, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, partition),
                                                        timeout=30)
        except KafkaException as e:
            if e.args[0].code() not in LEADER_MOVING:
                raise
            return None
        return (high,)
    (high,) = wait_for(ask, RECOVERY_S, f"the high watermark of partition {partition}", 0.1)
    return high


def read_final(bootstrap: str, history: History) -> None:
    """Every partition from its beginning to its high watermark, with a fresh consumer."""
    consumer = Consumer({**CONFLUENT_BASE, "bootstrap.servers": bootstrap,
                         "group.id": "final-reader", "enable.auto.commit": False})
    try:
        for p in range(PARTITIONS):
            history.high[p] = high_watermark(consumer, p)
        consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        history.final = {p: [] for p in range(PARTITIONS)}
        todo = {p for p in range(PARTITIONS) if history.high[p] > 0}

        def read():
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                history.final[msg.partition()].append(
                    (msg.offset(), msg.key().decode(), msg.value().decode()))
                if msg.offset() + 1 >= history.high[msg.partition()]:
                    todo.discard(msg.partition())
            return not todo
        # Bounded by the deadline; each poll blocks up to a second.
        wait_for(read, RECOVERY_S, "the final read of every partition", 0)
    finally:
        consumer.close()
    history.committed = committed_offsets(bootstrap, GROUP)
    history.transformed = committed_offsets(bootstrap, TRANSFORM_GROUP)
    sink = Consumer({**CONFLUENT_BASE, "bootstrap.servers": bootstrap,
                     "group.id": "sink-reader", "enable.auto.commit": False,
                     "isolation.level": "read_committed", "enable.partition.eof": True})
    try:
        sink.assign([TopicPartition(SINK, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        history.sink = {p: [] for p in range(PARTITIONS)}
        ends: set[int] = set()

        def read_sink():
            msg = sink.poll(1.0)
            if msg is None:
                return False
            if msg.error() is None:
                history.sink[msg.partition()].append((msg.offset(), msg.value().decode()))
            elif msg.error().code() == KafkaError._PARTITION_EOF:
                ends.add(msg.partition())
            return len(ends) == PARTITIONS
        # Bounded by the deadline; each poll blocks up to a second. The end a read_committed
        # reader reaches is the last stable offset: no transaction is open once the
        # transformer has stopped.
        wait_for(read_sink, RECOVERY_S, "the final read_committed read of the sink", 0)
    finally:
        sink.close()


def committed_offsets(bootstrap: str, group: str) -> dict[int, int]:
    reader = Consumer({**CONFLUENT_BASE, "bootstrap.servers": bootstrap, "group.id": group,
                       "enable.auto.commit": False})
    try:
        committed = reader.committed(
            [TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=30)
        return {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
    finally:
        reader.close()


# Record batch v2 header: base offset, length, leader epoch, magic, crc, attributes, last
# offset delta, first and max timestamps, producer id, producer epoch (the rest is not needed
# here).
BATCH_HEAD = struct.Struct(">qiibIhiqqqh")


def replica_batches(data_dir: Path, partition: int) -> list[tuple[int, int, int, int, int, int]]:
    """(base offset, last offset, leader epoch, crc, producer id, producer epoch) of each batch
    in a node's segment files of one partition, in offset order."""
    batches = []
    for segment in sorted(data_dir.glob(f"**/logs/{TOPIC}-{partition}/*.log")):
        data = segment.read_bytes()
        at = 0
        while at + BATCH_HEAD.size <= len(data):
            (base, length, epoch, _magic, crc, _attributes, delta, _first, _max, producer,
             producer_epoch) = BATCH_HEAD.unpack_from(data, at)
            if length <= 0 or at + 12 + length > len(data):
                break
            batches.append((base, base + delta, epoch, crc, producer, producer_epoch))
            at += 12 + length
    return batches


def writer(h: History, partition: int, offset: int) -> tuple[int, int] | None:
    """(producer id, producer epoch) of the batch that holds `offset`, as the first node
    holding the partition has it (None if none does)."""
    for node in sorted(h.replicas):
        for base, last, _epoch, _crc, producer, producer_epoch in h.replicas[node].get(
                partition, []):
            if base <= offset <= last:
                return producer, producer_epoch
    return None


def resent(h: History) -> list[str]:
    """Values in the log more than once, each copy written under another epoch of one
    producer id, and acknowledged, if at all, at the newest copy. An idempotent librdkafka
    producer bumps its epoch (KIP-360) when messages time out, and when a partition answers
    that sequence numbers were skipped (a batch reached a new leader while an earlier one was
    still in flight to the old: confluentinc/librdkafka#4953); it then re-sends every message
    it holds unacknowledged, renumbered under the new epoch, on every partition — among them
    ones a request whose answer it never had had written. Those are new writes by the
    protocol, which no broker (Kafka's included) can tell from the old. Any other value in the
    log twice — under one epoch, by two producer ids, or written again after its
    acknowledgement — is a broker's duplicate (`check`)."""
    acked = acknowledged_at(h)
    return [f"{value} at {places}, written by (producer id, epoch) {writers}"
            for value, (places, writers) in duplicated(h).items()
            if re_sent(places, writers, acked.get(value))]


def acknowledged_at(h: History) -> dict[str, tuple[int, int]]:
    """Each acknowledged value's (partition, offset)."""
    return {a.value: (a.partition, a.offset) for a in h.appends
            if a.outcome == "ok" and a.offset is not None}


def re_sent(places: list[tuple[int, int]], writers: list[tuple[int, int] | None],
            acked: tuple[int, int] | None) -> bool:
    """Whether a value's copies at `places`, written by `writers` and acknowledged at `acked`
    (None: not acknowledged), are what `resent` describes."""
    if None in writers or len(set(writers)) != len(writers) or len({w[0] for w in writers}) > 1:
        return False
    newest = max(range(len(places)), key=lambda i: writers[i][1])
    return acked is None or acked == places[newest]


def duplicated(h: History) -> dict[str, tuple[list[tuple[int, int]],
                                              list[tuple[int, int] | None]]]:
    """Values the final log holds more than once: their (partition, offset)s, and who wrote
    each copy (`writer`)."""
    where: dict[str, list[tuple[int, int]]] = {}
    for p, records in h.final.items():
        for offset, _key, value in records:
            where.setdefault(value, []).append((p, offset))
    return {value: (places, [writer(h, p, offset) for p, offset in places])
            for value, places in where.items() if len(places) > 1}


@dataclasses.dataclass
class Result:
    backend: str
    seed: int
    size: int
    faults: list[Fault]
    history: History
    violations: list[str]
    # Per fault: seconds from its start, and from its end, to the first acknowledged append
    # invoked after it (None: none).
    availability: list[tuple[str, float | None, float | None]]

    def report(self) -> str:
        h = self.history
        acked = [a for a in h.appends if a.outcome == "ok"]
        no_offset = sum(1 for a in acked if a.offset is None)
        again = resent(h)
        lines = [f"backend {self.backend}, {self.size} nodes, seed {self.seed}: "
                 f"{len(h.appends)} appends "
                 f"({len(acked)} acknowledged, {no_offset} of them without an offset), "
                 f"{len(h.reads)} reads, {len(h.commits)} commits; transactions "
                 + ", ".join(f"{n} {o}" for o, n in Counter(r.outcome for r in h.rounds).items())
                 + f", {sum(len(v) for v in h.sink.values())} values in the sink"
                 + (f"; left running when stopped: {', '.join(h.abandoned)}"
                    if h.abandoned else ""),
                 *(["re-sent under a new producer epoch (not a violation, `resent`):",
                    *(f"  {line}" for line in again[:SHOWN])] if again else []),
                 "schedule:", *(f"  {f.describe()}" for f in self.faults),
                 "availability (first acknowledged append after the fault's start / end):",
                 *(f"  {kind}: {fmt(a)} / {fmt(b)}" for kind, a, b in self.availability)]
        if self.violations:
            lines.append("VIOLATIONS (each with the operations that show it; at most "
                         f"{SHOWN} per check):")
            by_check: dict[str, list[str]] = {}
            for v in self.violations:
                by_check.setdefault(v.split(":")[0], []).append(v)
            for found in by_check.values():
                lines += [f"  {v}" for v in found[:SHOWN]]
                if len(found) > SHOWN:
                    lines.append(f"  … and {len(found) - SHOWN} more of the same check")
        return "\n".join(lines)


# Violations a report lists per check.
SHOWN = 5


def fmt(seconds: float | None) -> str:
    return "none" if seconds is None else f"{seconds:.2f} s"


def check(h: History) -> list[str]:
    """Every violation of the history, each with the operations that show it."""
    violations: list[str] = []
    at: dict[tuple[int, int], tuple[str, str]] = {}
    where: dict[str, list[tuple[int, int]]] = {}
    for p, records in h.final.items():
        for offset, key, value in records:
            at[(p, offset)] = (key, value)
            where.setdefault(value, []).append((p, offset))
    acked = [a for a in h.appends if a.outcome == "ok"]

    # Lost or moved acknowledged appends. An acknowledgement may come without an offset (a
    # retried batch the broker already had): such an append must be in the log somewhere.
    for a in acked:
        if a.offset is None:
            if a.value not in where:
                violations.append(f"lost: {a.value} (key {a.key}) acknowledged without an "
                                  f"offset at partition {a.partition}; the log does not hold it")
            continue
        if at.get((a.partition, a.offset)) != (a.key, a.value):
            violations.append(
                f"lost: {a.value} (key {a.key}) acknowledged at partition {a.partition} offset "
                f"{a.offset}; the log has {at.get((a.partition, a.offset))} there and "
                f"{a.value} at {where.get(a.value, 'no offset')}")
    for producer, error, _ in h.fatal:
        violations.append(f"sequence: producer {producer} failed fatally: {error}")
    # Idempotence: no value twice, but for what a producer re-sent after bumping its epoch
    # (`resent`).
    acknowledged = acknowledged_at(h)
    for value, (places, writers) in duplicated(h).items():
        if not re_sent(places, writers, acknowledged.get(value)):
            violations.append(f"duplicate: {value} at {places}, written by (producer id, "
                              f"epoch) {writers}")
    # Real time: an append acknowledged before another was invoked precedes it in its list.
    by_key: dict[str, list[Append]] = {}
    for a in acked:
        if a.offset is not None:
            by_key.setdefault(a.key, []).append(a)
    for key, ops in by_key.items():
        done = sorted(ops, key=lambda a: a.completed)
        latest, i = None, 0
        for b in sorted(ops, key=lambda a: a.invoked):
            while i < len(done) and done[i].completed < b.invoked:
                if latest is None or done[i].offset > latest.offset:
                    latest = done[i]
                i += 1
            if latest is not None and latest.partition == b.partition and latest.offset > b.offset:
                violations.append(
                    f"order: key {key}: {latest.value} (offset {latest.offset}) was acknowledged "
                    f"before {b.value} was sent, yet {b.value} is at offset {b.offset}")
    # Reads agree with the final log.
    for r in h.reads:
        if (r.partition, r.offset) in at and at[(r.partition, r.offset)][1] != r.value:
            violations.append(
                f"divergent read: member {r.member} read {r.value} at partition {r.partition} "
                f"offset {r.offset}; the log has {at[(r.partition, r.offset)][1]}")
        elif (r.partition, r.offset) not in at:
            violations.append(
                f"phantom read: member {r.member} read {r.value} at partition {r.partition} "
                f"offset {r.offset}, which the log (high watermark {h.high.get(r.partition)}) "
                f"does not hold")
    # Committed offsets never go backwards.
    ok = sorted((c for c in h.commits if c.ok), key=lambda c: c.completed)
    for i, later in enumerate(ok):
        for earlier in ok[:i]:
            if earlier.completed >= later.invoked:
                continue
            for p, offset in later.offsets.items():
                if p in earlier.offsets and offset < earlier.offsets[p]:
                    violations.append(
                        f"commit went back: partition {p}: member {earlier.member} committed "
                        f"{earlier.offsets[p]}, then member {later.member} committed {offset}")
    # The group's committed offset at the end was written by a commit that no acknowledged
    # commit of another offset began after (a commit with no answer may have applied at any
    # time).
    for p in sorted({p for c in ok for p in c.offsets}):
        final = h.committed.get(p)
        writers = [c for c in h.commits if c.offsets.get(p) == final]
        later = [c for c in ok if p in c.offsets and c.offsets[p] != final]

        def superseded(w: Commit) -> Commit | None:
            return next((x for x in later if x.invoked > w.completed), None) if w.ok else None
        if not writers or all(superseded(w) for w in writers):
            newer = superseded(writers[-1]) if writers else None
            violations.append(
                f"commit lost: partition {p}: the group has offset {final} at the end, "
                + (f"last committed by member {writers[-1].member}, but member {newer.member} "
                   f"committed {newer.offsets[p]} after that" if newer else
                   "which no member committed"))
    # No member reads below what was committed before its assignment, nor re-reads within one.
    starts = {(a.member, a.session): a.at for a in h.assignments}
    seen: dict[tuple[int, int, int], int] = {}
    for r in h.reads:
        began = starts.get((r.member, r.session))
        before = max((c.offsets.get(r.partition, 0) for c in ok
                      if began is not None and c.completed < began), default=0)
        if r.offset < before:
            violations.append(
                f"re-read: member {r.member} read partition {r.partition} offset {r.offset} in "
                f"an assignment that began after offset {before} was committed")
        last = seen.get((r.member, r.session, r.partition))
        if last is not None and r.offset <= last:
            violations.append(
                f"went back: member {r.member} read partition {r.partition} offset {r.offset} "
                f"after offset {last} in one assignment")
        seen[(r.member, r.session, r.partition)] = r.offset
    # Replicas agree up to the high watermark; leader epochs never decrease along a log.
    for p, high in h.high.items():
        copies = {node: [b for b in parts[p] if b[1] < high]
                  for node, parts in h.replicas.items() if p in parts}
        for node, batches in copies.items():
            if high > 0 and (not batches or batches[-1][1] < high - 1):
                violations.append(f"replica short: node {node} holds partition {p} to offset "
                                  f"{batches[-1][1] if batches else -1}, the high watermark is "
                                  f"{high}")
            for prev, batch in zip(batches, batches[1:]):
                if batch[2] < prev[2]:
                    violations.append(f"epoch went back: node {node} partition {p}: batch at "
                                      f"{batch[0]} has leader epoch {batch[2]} after {prev[2]}")
        nodes = sorted(copies)
        for node in nodes[1:]:
            for mine, theirs in zip(copies[nodes[0]], copies[node]):
                if mine != theirs:
                    violations.append(
                        f"replicas differ: partition {p}: node {nodes[0]} has batch {mine}, "
                        f"node {node} has {theirs} (base, last, leader epoch, crc, producer "
                        "id, producer epoch)")
                    break
    violations += check_transactions(h)
    return violations


def check_transactions(h: History) -> list[str]:
    violations: list[str] = []
    visible = {value for records in h.sink.values() for _, value in records}
    for r in h.rounds:
        outputs = [f"{value}@{r.number}" for _, _, value in r.read]
        if r.outcome == "committed":
            missing = [o for o in outputs if o not in visible]
            if missing:
                violations.append(f"txn lost: round {r.number} committed {len(outputs)} "
                                  f"values; read_committed does not see {missing[:5]}")
        elif r.outcome == "aborted":
            shown = [o for o in outputs if o in visible]
            if shown:
                violations.append(f"txn aborted read: round {r.number} was aborted; "
                                  f"read_committed sees {shown[:5]}")
    for p in range(PARTITIONS):
        upto = h.transformed.get(p, 0)
        source = [value for offset, _, value in h.final.get(p, []) if offset < upto]
        sink = [value.rsplit("@", 1)[0] for _, value in h.sink.get(p, [])]
        if sink != source:
            first = next((i for i, (a, b) in enumerate(zip(source, sink)) if a != b),
                         min(len(source), len(sink)))
            violations.append(
                f"txn exactly once: partition {p}: the source below the transformer's committed "
                f"offset {upto} holds {len(source)} values, the sink {len(sink)}; they first "
                f"differ at index {first}: source {source[first:first + 3]}, sink "
                f"{sink[first:first + 3]}")
    return violations


def availability(h: History) -> list[tuple[str, float | None, float | None]]:
    acked = sorted((a.invoked, a.completed) for a in h.appends if a.outcome == "ok")

    def first_after(t: float) -> float | None:
        return next((done - t for invoked, done in acked if invoked >= t), None)
    return [(f.kind, first_after(started), first_after(ended)) for f, started, ended in h.faults]


def stop(workers: list[Producing | Consuming | Transforming], history: History,
         within: float = STOP_S) -> None:
    """Tell the workers not yet told to stop, and wait for them together at most `within`
    seconds. One still running then is left behind (a daemon thread) and named in the
    history; whatever it had in flight stays unknown, as an unanswered request would."""
    stopping = [w for w in workers if not w.stopped.is_set()]
    for worker in stopping:
        worker.stopped.set()
    deadline = time.monotonic() + within
    for worker in stopping:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            with history.lock:
                history.abandoned.append(worker.name)


def nodes_for(seed: int) -> int:
    """The cluster size of a seed's run: five nodes for every fourth seed, else three."""
    return 5 if seed % 4 == 3 else 3


def run_schedule(backend: Backend, base: Path, seed: int, kinds: tuple[str, ...] = FAULTS,
                 flaw: str | None = None) -> Result:
    """One seeded run on a fresh cluster of `nodes_for(seed)` nodes under `base`. `flaw` makes
    the brokers the deliberately broken variant of that name (`SWITCHYARD_FLAW`; a
    `conformance` build of the broker only)."""
    size = nodes_for(seed)
    cluster = ProxiedCluster(backend, base, size,
                             env={"SWITCHYARD_FLAW": flaw} if flaw else None)
    faults = schedule(seed, list(cluster.nodes), kinds)
    history = History()
    workers: list[Producing | Consuming | Transforming] = []
    holders: dict[int, list[int]] = {}
    try:
        cluster.start()
        bootstrap = cluster.bootstrap()
        admin = confluent_admin(bootstrap)
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=PARTITIONS, replication_factor=3,
                      config={"min.insync.replicas": "2"}) for name in (TOPIC, SINK)],
            operation_timeout=30, request_timeout=30)
        for future in futures.values():
            future.result(timeout=60)
        # Every node must know the topic and its ISR before the faults start (Metadata is the
        # only way a client learns that).
        for i in cluster.nodes:
            wait_for(lambda i=i: whole_isr(cluster.bootstrap(i)), RECOVERY_S,
                     f"node {i} to see {TOPIC} with its whole ISR", 0.2)
        producers = [Producing(i, bootstrap, history, seed) for i in range(PRODUCERS)]
        consumers = [Consuming(i, bootstrap, history) for i in range(CONSUMERS)]
        transformer = Transforming(bootstrap, history)
        workers = [*producers, *consumers, transformer]
        for worker in workers:
            worker.start()
        try:
            inject(cluster, faults, history)
        finally:
            heal(cluster, faults)
        # The cluster must take writes again, then have every replica back in the ISR.
        recovered = time.monotonic()
        wait_for(lambda: any(a.outcome == "ok" and a.invoked >= recovered
                             for a in list(history.appends)),
                 RECOVERY_S, "an acknowledged append after healing", 0.1)
        stop(producers, history)
        wait_for(lambda: whole_isr(bootstrap), RECOVERY_S, "every replica back in the ISR", 0.2)
        md = confluent_admin(bootstrap).list_topics(TOPIC, timeout=10)
        holders = {p.id: list(p.replicas) for p in md.topics[TOPIC].partitions.values()}
        stop([*consumers, transformer], history)
        for a in history.appends:
            if a.outcome is None:
                a.outcome, a.error = "unknown", "no delivery report"
        read_final(bootstrap, history)
    except Exception as e:
        schedule_text = "; ".join(f.describe() for f in faults)
        raise RuntimeError(f"{backend.name} seed {seed} did not finish (schedule: "
                           f"{schedule_text}): {e}") from e
    finally:
        stop(workers, history)
        # A worker left running may reconnect to these ports: they stay taken in this process.
        cluster.close(release_ports=not history.abandoned)
    for i, node in cluster.nodes.items():
        history.replicas[i] = {p: replica_batches(node.data_dir, p)
                               for p in range(PARTITIONS) if i in holders[p]}
    return Result(backend.name, seed, size, faults, history, check(history),
                  availability(history))
