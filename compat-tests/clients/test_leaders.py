"""Leader elections beyond failover: ElectLeaders (preferred; unclean answers
ELECTION_NOT_NEEDED for partitions with a leader) with both admin clients, and the automatic
preferred-leader rebalancing that gives a restarted broker its leaderships back.

On three nodes the broker that is killed and restarted is never the metadata leader's, so no
backend needs a manual failover. Where a test waits for a leader or an ISR to change it polls
Metadata: no client API reports either by callback."""

from __future__ import annotations

import pytest
from confluent_kafka import ElectionType, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic

import kafka.errors
from client_util import confluent_admin, kp_admin, wait_for
from cluster_util import RECOVERY_S, consume_all, layout, metadata_leader, produce
from conftest import MULTI_NODE, Cluster

ELECTION_NOT_NEEDED = 84
UNKNOWN_TOPIC_OR_PARTITION = 3


def confluent_elect(bootstrap: str, election: ElectionType, partitions) -> dict:
    """(topic, partition) -> error code (0 for an election made)."""
    admin = confluent_admin(bootstrap)
    # No timeout keywords: this client version's binding refuses them (a SystemError).
    results = admin.elect_leaders(election, partitions).result(timeout=40)
    return {(tp.topic, tp.partition): (0 if error is None else error.code())
            for tp, error in results.items()}


def create(bootstrap: str, topic: str, partitions: int, replicas: int) -> None:
    admin = confluent_admin(bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                  replication_factor=replicas)],
                        request_timeout=15)[topic].result(timeout=30)


@pytest.mark.timeout(60)
def test_elections_on_one_node_are_not_needed(broker, topic_name):
    create(broker.bootstrap, topic_name, 2, 1)
    for election in (ElectionType.PREFERRED, ElectionType.UNCLEAN):
        assert confluent_elect(broker.bootstrap, election,
                               [TopicPartition(topic_name, 0), TopicPartition(topic_name, 5)]) \
            == {(topic_name, 0): ELECTION_NOT_NEEDED, (topic_name, 5): UNKNOWN_TOPIC_OR_PARTITION}
    # Every partition: nothing needed an election, so nothing is reported.
    assert confluent_elect(broker.bootstrap, ElectionType.PREFERRED, None) == {}
    admin = kp_admin(broker.bootstrap)
    try:
        response = admin.elect_leaders(0, {topic_name: [0, 1]}, raise_errors=False)
        codes = {(r.topic, p.partition_id): p.error_code
                 for r in response.replica_election_results for p in r.partition_result}
        assert codes == {(topic_name, 0): ELECTION_NOT_NEEDED,
                         (topic_name, 1): ELECTION_NOT_NEEDED}
    finally:
        admin.close()


def restart_a_broker_off_its_leaderships(cluster: Cluster, topic: str) -> int:
    """Kill -9 a broker that is the preferred leader of a partition of `topic` (not the
    metadata leader's), wait for its leadership to move, restart it and wait for it to be back
    in that partition's ISR. Returns that partition."""
    leader_node = metadata_leader(cluster.bootstrap())
    partitions = layout(cluster.bootstrap(), topic)["topics"][topic]
    partition, (_, replicas, _) = next((p, v) for p, v in sorted(partitions.items())
                                       if v[1][0] != leader_node)
    victim = replicas[0]
    cluster.nodes[victim].kill9()
    others = [i for i in (1, 2, 3) if i != victim]
    wait_for(lambda: layout(cluster.bootstrap(*others), topic)["topics"][topic][partition][0]
             not in (victim, -1), RECOVERY_S, "the partition to get another leader", 0.2)
    cluster.nodes[victim].start()
    wait_for(lambda: victim in layout(cluster.bootstrap(), topic)["topics"][topic][partition][2],
             RECOVERY_S, f"broker {victim} back in the ISR", 0.2)
    return partition


@pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")
@pytest.mark.timeout(240)
def test_a_preferred_election_gives_a_restarted_broker_its_leadership_back(
        multi_backend, tmp_path, topic_name):
    cluster = Cluster(multi_backend, tmp_path,
                      env={"SWITCHYARD_KAFKA__AUTO_LEADER_REBALANCE_ENABLE": "false"})
    try:
        cluster.start()
        create(cluster.bootstrap(), topic_name, 3, 3)
        produce(cluster.bootstrap(), topic_name, 30)
        partition = restart_a_broker_off_its_leaderships(cluster, topic_name)
        leader, replicas, _ = layout(cluster.bootstrap(), topic_name)["topics"][topic_name][
            partition]
        assert leader != replicas[0], "with rebalancing off, nothing moves it back"

        tp = TopicPartition(topic_name, partition)
        # Through a broker that is neither the old nor the new leader's, to show any answers.
        assert confluent_elect(cluster.bootstrap(), ElectionType.PREFERRED, [tp]) \
            == {(topic_name, partition): 0}
        for node in (1, 2, 3):
            # Each node learns the new leader through the metadata backend.
            wait_for(lambda n=node: layout(cluster.bootstrap(n), topic_name)["topics"]
                     [topic_name][partition][0] == replicas[0], 30, f"node {node} to agree")
        assert confluent_elect(cluster.bootstrap(), ElectionType.PREFERRED, [tp]) \
            == {(topic_name, partition): ELECTION_NOT_NEEDED}
        produce(cluster.bootstrap(), topic_name, 30, prefix="after")
        assert len(consume_all(cluster.bootstrap(), topic_name, 60, f"{topic_name}-g")) == 60
    finally:
        cluster.close()


@pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")
@pytest.mark.timeout(240)
def test_rebalancing_gives_a_restarted_broker_its_leadership_back(multi_backend, tmp_path,
                                                                  topic_name):
    cluster = Cluster(multi_backend, tmp_path,
                      env={"SWITCHYARD_KAFKA__LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS": "1"})
    try:
        cluster.start()
        create(cluster.bootstrap(), topic_name, 3, 3)
        partition = restart_a_broker_off_its_leaderships(cluster, topic_name)
        _, replicas, _ = layout(cluster.bootstrap(), topic_name)["topics"][topic_name][partition]
        # The rebalancer runs on its own every second; Metadata is where its work shows.
        wait_for(lambda: layout(cluster.bootstrap(), topic_name)["topics"][topic_name]
                 [partition][0] == replicas[0], 30, "the preferred replica to lead again", 0.2)
    finally:
        cluster.close()
