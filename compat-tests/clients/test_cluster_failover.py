"""kill -9 on a three-node cluster: a follower, then the metadata leader. Raft and hybrid
elect a new leader on their own; wal fails over by `switchyard cluster promote`. Nothing
committed is lost, and a restarted node converges.

Runs once per backend that runs on several nodes, each on a fresh cluster. Waiting for a
killed broker to be fenced polls what clients see (Metadata): no client API reports it by
callback.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
from confluent_kafka.admin import NewTopic

from client_util import confluent_admin, create_topic, wait_for
from cluster_util import (RECOVERY_S, committed, consume_all, metadata_leader, layout, produce,
                          same_on_every_node)
from conftest import MULTI_NODE

pytestmark = pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")


def test_kill_a_follower_then_the_metadata_leader_loses_nothing(cluster_factory, topic_name):
    cluster = cluster_factory.start()
    backend = cluster.backend.name
    create_topic(cluster.bootstrap(1), f"{topic_name}-before", 3)
    produce(cluster.bootstrap(1), f"{topic_name}-before", 30)
    group = f"g-{uuid.uuid4().hex[:8]}"
    consume_all(cluster.bootstrap(1), f"{topic_name}-before", 30, group)
    acked = committed(cluster.bootstrap(2), group, f"{topic_name}-before", 3)
    assert sum(acked.values()) == 30

    # A follower dies: the others fence it and go on taking metadata writes.
    leader = metadata_leader(cluster.bootstrap(1))
    follower = next(i for i in (1, 2, 3) if i != leader)
    cluster.nodes[follower].kill9()
    survivors = [i for i in (1, 2, 3) if i != follower]
    wait_for(lambda: layout(cluster.bootstrap(*survivors))["brokers"] == survivors,
             RECOVERY_S, f"broker {follower} to be fenced", 0.2)
    create_topic(cluster.bootstrap(*survivors), f"{topic_name}-follower-down", 2)

    # It comes back with a new incarnation and converges.
    cluster.nodes[follower].start()
    agreed = same_on_every_node(cluster)
    assert agreed["brokers"] == [1, 2, 3]
    assert f"{topic_name}-follower-down" in agreed["topics"]

    # The metadata leader dies.
    leader = metadata_leader(cluster.bootstrap(follower))
    cluster.nodes[leader].kill9()
    survivors = [i for i in (1, 2, 3) if i != leader]
    if backend == "wal":
        # Manual failover: promote a survivor.
        promoted = cluster.command("promote", str(survivors[0]))
        assert promoted.returncode == 0, promoted.stderr
    wait_for(lambda: layout(cluster.bootstrap(*survivors))["brokers"] == survivors,
             RECOVERY_S, f"a new metadata leader to fence broker {leader}", 0.2)
    new_leader = metadata_leader(cluster.bootstrap(*survivors))
    assert new_leader in survivors
    create_topic(cluster.bootstrap(*survivors), f"{topic_name}-leader-down", 2)

    # Nothing committed is lost, on either survivor.
    for node in survivors:
        topics = layout(cluster.bootstrap(node))["topics"]
        for suffix in ("before", "follower-down", "leader-down"):
            assert f"{topic_name}-{suffix}" in topics, (node, suffix, sorted(topics))
        assert committed(cluster.bootstrap(node), group, f"{topic_name}-before", 3) == acked

    # The old leader restarts and converges; every broker is live again.
    cluster.nodes[leader].start()
    agreed = same_on_every_node(cluster)
    assert agreed["brokers"] == [1, 2, 3]
    assert f"{topic_name}-leader-down" in agreed["topics"]


def test_admin_requests_do_not_wait_for_a_dead_controller(cluster_factory, topic_name):
    """Right after kill -9 of the metadata leader, an admin client created on a survivor
    creates a topic: the controller a broker names is itself (as in Kafka 4), and it forwards
    CreateTopics to whichever node leads next. It used to name the dead node for a whole broker
    session, and the client waited its 30 s request timeout "for controller"."""
    cluster = cluster_factory.start()
    leader = metadata_leader(cluster.bootstrap())
    assert leader in (1, 2, 3)
    cluster.nodes[leader].kill9()
    survivors = [i for i in (1, 2, 3) if i != leader]
    if cluster.backend.name == "wal":
        promoted = cluster.command("promote", str(survivors[0]))
        assert promoted.returncode == 0, promoted.stderr
    admin = confluent_admin(cluster.bootstrap(*survivors))
    assert admin.list_topics(timeout=15).controller_id in survivors
    futures = admin.create_topics(
        [NewTopic(topic_name, num_partitions=2, replication_factor=1)],
        operation_timeout=20, request_timeout=20)
    futures[topic_name].result(timeout=25)


def test_new_partitions_avoid_a_broker_not_heard_from(cluster_factory, topic_name):
    """A broker killed with kill -9 stays registered and unfenced until its session times out
    (20 s here). A topic created in between gets no replica there: replicas go only to brokers
    the metadata leader heard from within two heartbeat intervals (1 s here); it used to put
    every third partition on the dead broker, offline for good with one replica."""
    cluster = cluster_factory.start(env={
        "SWITCHYARD_KAFKA__BROKER_HEARTBEAT_INTERVAL_MS": "500",
        "SWITCHYARD_KAFKA__BROKER_SESSION_TIMEOUT_MS": "20000",
    })
    leader = metadata_leader(cluster.bootstrap())
    dead = next(i for i in (1, 2, 3) if i != leader)
    cluster.nodes[dead].kill9()
    survivors = [i for i in (1, 2, 3) if i != dead]
    # Past the placement window, well inside the session timeout: the point of the test is
    # the time in between, so this waits for time itself to pass.
    time.sleep(2.0)
    assert dead in layout(cluster.bootstrap(*survivors))["brokers"], "fenced too early"
    create_topic(cluster.bootstrap(*survivors), topic_name, 6)
    partitions = layout(cluster.bootstrap(*survivors), topic_name)["topics"][topic_name]
    placed = {broker for _, replicas, _ in partitions.values() for broker in replicas}
    assert placed and dead not in placed, partitions


def test_a_new_metadata_leader_places_nothing_on_the_broker_that_died_with_the_old_one(
        cluster_factory, topic_name):
    """kill -9 of the metadata leader's node, and a topic created right after: the new metadata
    leader has heard no heartbeat yet, and places replicas only on brokers whose heartbeat has
    reached it (the survivors heartbeat a new leader at once), never on the dead broker, which
    stays registered and unfenced until its session times out (20 s here). It used to count
    every unfenced broker as heard from as soon as its fencer had begun to time their silence,
    and put every third partition on the dead broker."""
    cluster = cluster_factory.start(env={
        "SWITCHYARD_KAFKA__BROKER_HEARTBEAT_INTERVAL_MS": "500",
        "SWITCHYARD_KAFKA__BROKER_SESSION_TIMEOUT_MS": "20000",
    })
    dead = metadata_leader(cluster.bootstrap())
    cluster.nodes[dead].kill9()
    survivors = [i for i in (1, 2, 3) if i != dead]
    if cluster.backend.name == "wal":
        promoted = cluster.command("promote", str(survivors[0]))
        assert promoted.returncode == 0, promoted.stderr
    create_topic(cluster.bootstrap(*survivors), topic_name, 6)
    view = layout(cluster.bootstrap(*survivors), topic_name)
    assert dead in view["brokers"], "fenced too early: the test needs it unfenced"
    partitions = view["topics"][topic_name]
    placed = {broker for _, replicas, _ in partitions.values() for broker in replicas}
    assert placed == set(survivors), partitions


def test_a_metadata_leader_paused_past_the_session_fences_no_live_broker(cluster_factory):
    """The metadata leader's node fences a broker it has not heard from for the session
    timeout. A pause of that node (SIGSTOP, as a long GC or VM stall would) is silence it
    caused itself: the others' heartbeats wait unread in its sockets. Resumed, it must not fence
    the brokers that kept beating. (It did: the data-path soak saw a resumed wal primary and a
    resumed raft leader fence both live brokers, moving partition leaders and groups.)"""
    session_ms, interval_ms = 3000, 500
    cluster = cluster_factory.start(env={
        "SWITCHYARD_KAFKA__BROKER_SESSION_TIMEOUT_MS": str(session_ms),
        "SWITCHYARD_KAFKA__BROKER_HEARTBEAT_INTERVAL_MS": str(interval_ms),
    })
    leader = metadata_leader(cluster.bootstrap())
    assert leader is not None
    others = [n for n in cluster.nodes if n != leader]
    marks = {n: node.log_size() for n, node in cluster.nodes.items()}
    paused = cluster.nodes[leader]
    paused.pause()
    try:
        time.sleep(2 * session_ms / 1000)  # the fault itself: two sessions long
    finally:
        paused.resume()
    # The resumed node serves again (and, where another node took the lead meanwhile, has
    # heard of it). Its fencer checks every half heartbeat interval: six intervals give it a
    # dozen chances to fence someone.
    wait_for(lambda: metadata_leader(paused.bootstrap) is not None, RECOVERY_S,
             "the resumed node to know a metadata leader")
    time.sleep(6 * interval_ms / 1000)
    fenced = re.findall(r"fenced a broker that missed its session timeout broker=(\d+)",
                        paused.log_text(marks[leader]))
    assert not [int(b) for b in fenced if int(b) in others], (
        f"the resumed node {leader} fenced live brokers: {fenced}")
    for n in others:
        assert "re-registered after being fenced" not in cluster.nodes[n].log_text(marks[n]), (
            f"broker {n} kept beating but was fenced")
