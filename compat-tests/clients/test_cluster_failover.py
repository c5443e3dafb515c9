"""kill -9 on a three-node cluster: a follower, then the metadata leader. Raft and hybrid
elect a new leader on their own; wal fails over by `switchyard cluster promote`. Nothing
committed is lost, and a restarted node converges.

Runs once per backend that runs on several nodes, each on a fresh cluster. Waiting for a
killed broker to be fenced polls what clients see (Metadata): no client API reports it by
callback.
"""

from __future__ import annotations

import uuid

import pytest

from client_util import create_topic, wait_for
from cluster_util import (RECOVERY_S, committed, consume_all, controller, layout, produce,
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
    leader = controller(cluster.bootstrap(1))
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
    leader = controller(cluster.bootstrap(follower))
    cluster.nodes[leader].kill9()
    survivors = [i for i in (1, 2, 3) if i != leader]
    if backend == "wal":
        # Manual failover: promote a survivor.
        promoted = cluster.command("promote", str(survivors[0]))
        assert promoted.returncode == 0, promoted.stderr
    wait_for(lambda: layout(cluster.bootstrap(*survivors))["brokers"] == survivors,
             RECOVERY_S, f"a new metadata leader to fence broker {leader}", 0.2)
    new_leader = controller(cluster.bootstrap(*survivors))
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
