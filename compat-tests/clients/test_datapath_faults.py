"""Seeded fault runs of the Kafka data path on real broker processes (`datapath.py`):
idempotent producers, a committing consumer group, faults on every link and process, then the
checkers. CI runs one schedule per backend; `scripts/soak-datapath` runs many.

Seeds: 1 (three nodes) for every backend, 1003 (five nodes) for hybrid, and the seeds the soak
failed on for their backends (raft 1069, 1044, 1477; wal 1006; hybrid 1398, 1615, 1496, 1622), or
the one in `SWITCHYARD_CONFORMANCE_SEED`; a failure prints its schedule and the operations that
break each check, and `SWITCHYARD_CONFORMANCE_SEED=N compat-tests/clients/run.sh -k datapath`
replays its schedule (the clients' timing still varies).
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from confluent_kafka.admin import NewTopic

from client_util import confluent_admin, wait_for
from cluster_util import RECOVERY_S, layout, metadata_leader, produce
from conftest import MULTI_NODE, switchyard_bin
from datapath import (Append, History, ProxiedCluster, check, nodes_for, resent, run_schedule,
                      stop)
from raw_kafka import RawConnection, idempotent_batch

REPLAY = os.environ.get("SWITCHYARD_CONFORMANCE_SEED")
SEEDS = [int(REPLAY)] if REPLAY else [1]


pytestmark = pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("backend", MULTI_NODE, ids=[b.name for b in MULTI_NODE])
def test_data_path_holds_under_a_seeded_schedule(backend, seed, tmp_path):
    result = run_schedule(backend, tmp_path, seed)
    print(result.report())
    assert not result.violations, result.report()


@pytest.mark.skipif(bool(REPLAY), reason="replaying one seed")
def test_five_nodes_hold_under_seed_1003(tmp_path):
    """Five nodes, a minority split among the faults. This seed found offset commits going
    back (1 run in 4 on hybrid): a group coordinator cut off from the metadata leader kept a
    commit pending while the client committed newer offsets through the next coordinator,
    and applied it once healed. Commits are now fenced by their coordinator."""
    assert nodes_for(1003) == 5
    backend = next((b for b in MULTI_NODE if b.name == "hybrid"), MULTI_NODE[0])
    result = run_schedule(backend, tmp_path, 1003)
    print(result.report())
    assert not result.violations, result.report()


@pytest.mark.skipif(bool(REPLAY), reason="replaying one seed")
@pytest.mark.parametrize("name, seed",
                         [("raft", 1069), ("raft", 1044), ("raft", 1477), ("wal", 1006),
                          ("hybrid", 1398), ("hybrid", 1615), ("hybrid", 1496),
                          ("hybrid", 1622)],
                         ids=["raft-1069", "raft-1044", "raft-1477", "wal-1006", "hybrid-1398",
                              "hybrid-1615", "hybrid-1496", "hybrid-1622"])
def test_a_seed_the_soak_failed_holds(name, seed, tmp_path):
    """Seeds the soak failed on (six runs side by side, so alone their timing differs):
    - raft 1069, commit lost: the metadata leader, paused, resumed still leading its old term
      and committed an entry without a quorum (an abandoned cluster call's late answer was
      read as the next call's), so its state diverged; its fencer also fenced the two live
      brokers for silences that were its own pause.
    - wal 1006, duplicate: the resumed primary's fencer fenced both live brokers; partition
      leaders moved, librdkafka bumped its producer's epoch on a skipped-sequence answer and
      re-sent unacknowledged messages, one batch of which was already in the log — a re-send
      by the protocol, now counted apart, but set off by the fences.
    - raft 1044 and 1477, txn exactly once: node 1, the transformer's transaction coordinator,
      was paused (1044) or isolated (1477) long enough to be fenced; its producer ended the
      transaction through the next coordinator and began the next one, and then node 1 read
      the EndTxn (commit) it had been sent before and proposed it, which ended the next
      transaction before its offsets were in it: records committed without their offsets.
      EndTxn is now fenced by its coordinator.
    - hybrid 1398, txn exactly once: a late copy of one transaction's commit marker (a
      WriteTxnMarkers request the coordinator had retried) reached a partition after the next
      transaction's records and committed them, undecided. Markers now carry the
      transaction's number as their coordinator epoch, and a partition writes none twice.
    - hybrid 1615, commit went back and re-read: a broker cut off from the metadata leader
      was fenced and its partition led elsewhere, yet answered a consumer's fetch as leader
      (OFFSET_OUT_OF_RANGE past its shorter log), and the consumer read the partition again
      from the start and committed that. Brokers now stop leading for clients once their
      lease (a session from their last answered heartbeat) is over.
    - hybrid 1496 and 1622 did not finish: after healing, the final read asked a broker
      that no longer led a partition (or, its lease over, did not yet know whether it did)
      for the high watermark and took NOT_LEADER_FOR_PARTITION as final. The harness now
      retries it as clients do."""
    backend = next((b for b in MULTI_NODE if b.name == name), None)
    if backend is None:
        pytest.skip(f"the {name} backend is not compiled in")
    result = run_schedule(backend, tmp_path, seed)
    print(result.report())
    assert not result.violations, result.report()


NOT_LEADER_OR_FOLLOWER = 6


def led_by_a_follower(cluster: ProxiedCluster, topic: str) -> tuple[int, int, list[int]]:
    """Create `topic` (one partition, every node a replica, min.insync.replicas 2) led by a
    broker that is not on the metadata leader's node, once every node sees it lead with the
    whole ISR. Returns (the metadata leader, the partition's leader, the other nodes)."""
    leader = metadata_leader(cluster.bootstrap())
    assert leader is not None
    victim = next(n for n in cluster.nodes if n != leader)
    others = [n for n in cluster.nodes if n != victim]
    # The victim is the partition's preferred leader, so it leads it from the start.
    admin = confluent_admin(cluster.bootstrap())
    created = admin.create_topics(
        [NewTopic(topic, num_partitions=1, replica_assignment=[[victim, *others]],
                  config={"min.insync.replicas": "2"})],
        operation_timeout=30, request_timeout=30)
    created[topic].result(timeout=60)

    def led_by_victim_with_every_replica(i: int) -> bool:
        partition = layout(cluster.bootstrap(i), topic)["topics"].get(topic, {}).get(0)
        return (partition is not None and partition[0] == victim
                and sorted(partition[2]) == sorted(cluster.nodes))

    for i in cluster.nodes:
        wait_for(lambda i=i: led_by_victim_with_every_replica(i), RECOVERY_S,
                 f"node {i} to see {victim} lead with the whole ISR", 0.2)
    return leader, victim, others


@pytest.mark.skipif(bool(REPLAY), reason="replaying one seed")
@pytest.mark.parametrize("backend", MULTI_NODE, ids=[b.name for b in MULTI_NODE])
def test_a_broker_cut_off_from_the_metadata_leader_stops_leading_for_clients(backend, tmp_path):
    """Hybrid seed 1615 (commit went back, re-read): a broker cut off from the other brokers,
    but not from the clients, was fenced and its partition led elsewhere, where the log moved
    on; its own metadata still said it led. A consumer with that side's stale metadata fetched
    there past the old log's end, got OFFSET_OUT_OF_RANGE, reset to the start and read it all
    again. Once the metadata leader may have fenced it (its lease, a session from its last
    answered heartbeat, is over) a broker must answer clients NOT_LEADER_OR_FOLLOWER."""
    cluster = ProxiedCluster(backend, tmp_path, 3)
    topic = "cut-off"
    try:
        cluster.start()
        _leader, victim, others = led_by_a_follower(cluster, topic)
        produce(cluster.bootstrap(), topic, 10)
        for other in others:
            cluster.netem.command(f"set {victim} {other} cut")
            cluster.netem.command(f"set {other} {victim} cut")
        majority = cluster.bootstrap(*others)
        wait_for(lambda: layout(majority, topic)["topics"][topic][0][0] in others, RECOVERY_S,
                 f"a new leader of {topic} on {others}", 0.2)
        produce(majority, topic, 20)
        with RawConnection(cluster.bootstrap(victim)) as conn:
            fetched = conn.fetch(topic, 0, 25)
            assert fetched.error_code == NOT_LEADER_OR_FOLLOWER, fetched
            written = conn.produce(topic, 0, idempotent_batch(-1, -1, -1, [b"stale"]), acks=1)
            assert written.error_code == NOT_LEADER_OR_FOLLOWER, written
        # The operator is told why: a WARN when the lease lapses, an INFO when it is back.
        wait_for(lambda: "lease lapsed" in cluster.nodes[victim].log_text(), RECOVERY_S,
                 f"{victim} to log that its lease lapsed", 0.2)
        cluster.netem.command("heal")
        wait_for(lambda: layout(cluster.bootstrap(victim), topic)["topics"][topic][0][0]
                 in others, RECOVERY_S, f"{victim} to learn the new leader", 0.2)
        wait_for(lambda: "lease renewed" in cluster.nodes[victim].log_text(), RECOVERY_S,
                 f"{victim} to log that its lease is back", 0.2)
    finally:
        cluster.close()


@pytest.mark.skipif(bool(REPLAY), reason="replaying one seed")
@pytest.mark.parametrize("backend", MULTI_NODE, ids=[b.name for b in MULTI_NODE])
def test_a_slow_link_to_the_metadata_leader_keeps_the_lease(backend, tmp_path):
    """Heartbeats over a link slower than their interval (here 40 ms each way against 50 ms)
    still reach the metadata leader, which fences nobody; their answers must still renew the
    lease, or a broker nobody fences stops leading for clients. (The data-path soak's
    schedules delay a node's links by 150 ms each way.) The delay stays within what the
    metadata backends' own links take: raft's answers are due within 100 ms."""
    interval_ms = 50
    cluster = ProxiedCluster(backend, tmp_path, 3,
                             env={"SWITCHYARD_KAFKA__BROKER_HEARTBEAT_INTERVAL_MS": str(interval_ms)})
    topic = "slow-link"
    try:
        cluster.start()
        leader, victim, _others = led_by_a_follower(cluster, topic)
        cluster.netem.command(f"set {victim} {leader} delay 40")
        cluster.netem.command(f"set {leader} {victim} delay 40")
        # The fault itself: two sessions (CLUSTER_ENV's 2 s) of heartbeats over the slow link.
        time.sleep(4)
        with RawConnection(cluster.bootstrap(victim)) as conn:
            written = conn.produce(topic, 0, idempotent_batch(-1, -1, -1, [b"slow"]), acks=1)
        assert written.error_code == 0, written
        cluster.netem.command("heal")
    finally:
        cluster.close()


def test_a_broker_acknowledging_before_the_isr_has_the_write_is_caught(tmp_path, monkeypatch):
    """The broken variant: brokers that answer acks=all once the leader has the batch (a
    `conformance` build with `SWITCHYARD_FLAW=acks-before-isr`, which `scripts/test` builds
    as `switchyard-conformance`). An isolated leader, still reached by the clients, then
    acknowledges appends the new leader never had: the checkers must find them lost."""
    flawed = switchyard_bin().parent / "switchyard-conformance"
    assert flawed.is_file(), (
        f"{flawed} not found: build it with `cargo build --workspace --all-targets --features "
        "switchyard/conformance` and copy target/debug/switchyard there (scripts/test does)")
    monkeypatch.setenv("SWITCHYARD_BIN", str(flawed))
    result = run_schedule(MULTI_NODE[0], tmp_path, 1, kinds=("isolate",), flaw="acks-before-isr")
    print(result.report())
    assert any(v.startswith(("lost:", "sequence:")) for v in result.violations), result.report()


class Stuck(threading.Thread):
    """A worker stuck in a client call that ignores its timeout (librdkafka's
    send_offsets_to_transaction, confluentinc/librdkafka#5511): it does not see `stopped`."""

    def __init__(self):
        super().__init__(daemon=True, name="stuck")
        self.stopped = threading.Event()
        self.released = threading.Event()

    def run(self) -> None:
        self.released.wait()


@pytest.mark.timeout(20)
def test_stopping_leaves_a_stuck_worker_behind_and_names_it():
    """A run must end, and say so, when a client never returns: once after the faults and
    once more on the way out, each within its bound (the second does not wait again)."""
    history = History()
    stuck = Stuck()
    stuck.start()
    try:
        stop([stuck], history, within=0.2)
        assert stuck.is_alive() and history.abandoned == ["stuck"]
        stop([stuck], history, within=3600)
        assert history.abandoned == ["stuck"]
    finally:
        stuck.released.set()


def a_log_with_one_value_twice(second_epoch: int, acknowledged_at: int | None) -> History:
    """Partition 0 holding `p0-0` at offsets 0 and 2, in batches of producer 7: epoch 0, then
    `second_epoch` (on both nodes that hold it); its append acknowledged at `acknowledged_at`,
    or unknown (timed out) when None."""
    history = History()
    history.appends = [Append(0, "k", "p0-0", 0.0, 10.0, "unknown", error="timed out")
                       if acknowledged_at is None else
                       Append(0, "k", "p0-0", 0.0, 1.0, "ok", 0, acknowledged_at)]
    history.final = {0: [(0, "k", "p0-0"), (1, "k", "p1-0"), (2, "k", "p0-0")]}
    history.high = {0: 3}
    batches = [(0, 1, 1, 11, 7, 0), (2, 2, 1, 12, 7, second_epoch)]
    history.replicas = {1: {0: batches}, 2: {0: list(batches)}}
    return history


def duplicates(history: History) -> list[str]:
    return [v for v in check(history) if v.startswith("duplicate:")]


def test_a_value_twice_under_one_producer_epoch_is_a_duplicate():
    history = a_log_with_one_value_twice(second_epoch=0, acknowledged_at=2)
    assert duplicates(history) == [
        "duplicate: p0-0 at [(0, 0), (0, 2)], written by (producer id, epoch) [(7, 0), (7, 0)]"]
    assert resent(history) == []


def test_a_value_re_sent_under_a_new_producer_epoch_after_a_timeout_is_counted_apart():
    """librdkafka re-sends what it still holds after bumping its epoch (found by the soak on
    raft, seed 1002, three runs side by side: 114 timed-out values at epoch 0 and again at
    epoch 7): new writes by the protocol, not the broker's duplicates."""
    history = a_log_with_one_value_twice(second_epoch=1, acknowledged_at=None)
    assert duplicates(history) == []
    assert resent(history) == [
        "p0-0 at [(0, 0), (0, 2)], written by (producer id, epoch) [(7, 0), (7, 1)]"]


def test_a_value_re_sent_under_a_new_epoch_and_acknowledged_there_is_counted_apart():
    """No message of the client timed out, yet it bumped its epoch: another partition
    answered that sequences were skipped, and librdkafka re-sent every unacknowledged message
    under the new epoch, some whose first write had reached the log (the soak on wal, seed
    1006: 83 values at epoch 0, acknowledged only at their copies under epoch 1)."""
    history = a_log_with_one_value_twice(second_epoch=1, acknowledged_at=2)
    assert duplicates(history) == []
    assert len(resent(history)) == 1


def test_a_value_written_again_after_its_acknowledgement_is_a_duplicate():
    """Acknowledged at its first copy, a value must never be written again, whatever the
    epoch."""
    history = a_log_with_one_value_twice(second_epoch=1, acknowledged_at=0)
    assert duplicates(history) == [
        "duplicate: p0-0 at [(0, 0), (0, 2)], written by (producer id, epoch) [(7, 0), (7, 1)]"]
    assert resent(history) == []
