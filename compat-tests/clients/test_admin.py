"""Topic administration with both admin clients: create, list, describe, delete, the per-topic
error cases of CreateTopics/DeleteTopics, validate_only, CreatePartitions, AlterConfigs and
IncrementalAlterConfigs (a retention change applies to a running log), DescribeConfigs and
DescribeCluster, the group admin APIs, DescribeLogDirs, DescribeProducers,
DescribeTopicPartitions and DeleteRecords; CreatePartitions, config changes, group deletion and
DeleteRecords (across a leader change) on three nodes of every multi-node backend."""

from __future__ import annotations

import pytest
from confluent_kafka import (Consumer, ConsumerGroupState, ConsumerGroupType, KafkaException,
                             Producer, TopicCollection, TopicPartition)
from confluent_kafka.admin import ConfigResource as CConfigResource
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigSource, NewPartitions,
                                  NewTopic, ResourceType)
import kafka.errors
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.admin import NewPartitions as KpNewPartitions

from client_util import CONFLUENT_BASE, FAST_REBALANCE_ENV, confluent_admin, kp_admin, wait_for
from raw_kafka import RawConnection
from conftest import MULTI_NODE, Cluster

# Kafka error codes.
NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_TOPIC_EXCEPTION = 17
TOPIC_ALREADY_EXISTS = 36
INVALID_PARTITIONS = 37
INVALID_REPLICATION_FACTOR = 38
INVALID_REQUEST = 42
INVALID_CONFIG = 40

BROKER_ID = 1  # the default --node-id


def kp_code(outcome: str) -> int:
    """The error code of a kafka-python admin outcome: "OK", "[Error N] Name: message", or
    an error class's name."""
    if outcome == "OK":
        return NONE
    if outcome.startswith("[Error "):
        return int(outcome.split("]")[0].removeprefix("[Error "))
    return getattr(kafka.errors, outcome).errno


class KafkaPythonAdmin:
    name = "kafka-python"

    def __init__(self, bootstrap):
        self.admin = kp_admin(bootstrap)

    def close(self):
        self.admin.close()

    def create(self, topics, validate_only=False):
        """topics: name -> (partitions, replication factor, configs). Returns name -> error code."""
        result = self.admin.create_topics(
            {name: {"num_partitions": p, "replication_factor": rf, "configs": configs}
             for name, (p, rf, configs) in topics.items()},
            validate_only=validate_only, raise_errors=False)
        self.last_create = {t["name"]: t for t in result["topics"]}
        return {t["name"]: t["error_code"] for t in result["topics"]}

    def delete(self, names):
        result = self.admin.delete_topics(names, raise_errors=False)
        return {t["name"]: t["error_code"] for t in result["topics"]}

    def grow(self, counts, validate_only=False):
        """counts: name -> new partition count. Returns name -> error code."""
        result = self.admin.create_partitions(
            {name: KpNewPartitions(total_count=count) for name, count in counts.items()},
            validate_only=validate_only, raise_errors=False)
        return {t.name: t.error_code for t in result.results}

    def list(self):
        return set(self.admin.list_topics())

    def describe(self, name):
        """(error code, {partition: (leader, replicas, isr)})"""
        (topic,) = self.admin.describe_topics([name])
        return topic["error_code"], {
            p["partition_index"]: (p["leader_id"], p["replica_nodes"], p["isr_nodes"])
            for p in topic["partitions"]}

    # kafka-python sends IncrementalAlterConfigs to a broker that serves it: the configs named
    # change, the others keep their overrides.
    replaces = False

    def alter(self, name, configs, validate_only=False):
        """Change `configs` of topic `name`. Returns the error code."""
        result = self.admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, configs=configs)],
            validate_only=validate_only, raise_on_unknown=False)
        return kp_code(result["topic"][name])

    def topic_configs(self, name):
        """{key: (value, source name)} of every config the broker reports."""
        described = self.admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name)], config_filter="all")
        return {k: (c["value"], c["config_source"])
                for k, c in described["topic"][name].items()}

    def cluster(self):
        """(cluster id, controller id, [(broker id, host, port)])"""
        c = self.admin.describe_cluster()
        return c["cluster_id"], c["controller_id"], [
            (b["broker_id"], b["host"], b["port"]) for b in c["brokers"]]


class ConfluentAdmin:
    name = "confluent"

    def __init__(self, bootstrap):
        # The client must outlive the futures it returns.
        self.admin = confluent_admin(bootstrap)

    def close(self):
        pass

    @staticmethod
    def _codes(futures):
        codes = {}
        for name, future in futures.items():
            try:
                future.result(timeout=30)
                codes[name] = NONE
            except KafkaException as e:
                codes[name] = e.args[0].code()
        return codes

    def create(self, topics, validate_only=False):
        return self._codes(self.admin.create_topics(
            [NewTopic(name, num_partitions=p, replication_factor=rf, config=configs)
             for name, (p, rf, configs) in topics.items()],
            validate_only=validate_only, operation_timeout=15, request_timeout=30))

    def delete(self, names):
        return self._codes(self.admin.delete_topics(names, operation_timeout=15,
                                                    request_timeout=30))

    def grow(self, counts, validate_only=False):
        return self._codes(self.admin.create_partitions(
            [NewPartitions(name, count) for name, count in counts.items()],
            validate_only=validate_only, operation_timeout=15, request_timeout=30))

    def list(self):
        return set(self.admin.list_topics(timeout=30).topics)

    def describe(self, name):
        future = self.admin.describe_topics(TopicCollection([name]))[name]
        try:
            topic = future.result(timeout=30)
        except KafkaException as e:
            return e.args[0].code(), {}
        return NONE, {p.id: (p.leader.id, [r.id for r in p.replicas], [r.id for r in p.isr])
                      for p in topic.partitions}

    # confluent-kafka's alter_configs is AlterConfigs: the configs named become the whole set.
    replaces = True

    def alter(self, name, configs, validate_only=False):
        resource = CConfigResource(ResourceType.TOPIC, name, set_config=configs)
        future = self.admin.alter_configs([resource], validate_only=validate_only,
                                          request_timeout=30)[resource]
        return self._codes({name: future})[name]

    def alter_incrementally(self, name, changes, validate_only=False):
        """changes: [(key, AlterConfigOpType, value)]. Returns the error code."""
        resource = CConfigResource(ResourceType.TOPIC, name, incremental_configs=[
            ConfigEntry(key, value, incremental_operation=op) for key, op, value in changes])
        future = self.admin.incremental_alter_configs(
            [resource], validate_only=validate_only, request_timeout=30)[resource]
        return self._codes({name: future})[name]

    def topic_configs(self, name):
        resource = CConfigResource(ResourceType.TOPIC, name)
        entries = self.admin.describe_configs([resource])[resource].result(timeout=30)
        return {k: (e.value, ConfigSource(e.source).name) for k, e in entries.items()}

    def cluster(self):
        c = self.admin.describe_cluster(request_timeout=30).result(timeout=30)
        return c.cluster_id, c.controller.id, [(n.id, n.host, n.port) for n in c.nodes]


ADMINS = [KafkaPythonAdmin, ConfluentAdmin]


@pytest.fixture(params=ADMINS, ids=[a.name for a in ADMINS])
def admin(request, broker):
    client = request.param(broker.bootstrap)
    yield client
    client.close()


@pytest.mark.timeout(60)
def test_create_list_describe_delete(admin, topic_name):
    assert admin.create({topic_name: (3, 1, {})}) == {topic_name: NONE}
    assert topic_name in admin.list()
    error, partitions = admin.describe(topic_name)
    assert error == NONE
    assert partitions == {p: (BROKER_ID, [BROKER_ID], [BROKER_ID]) for p in range(3)}

    assert admin.delete([topic_name]) == {topic_name: NONE}
    assert topic_name not in admin.list()
    assert admin.describe(topic_name)[0] == UNKNOWN_TOPIC_OR_PARTITION
    # Deleting it again: it is unknown now.
    assert admin.delete([topic_name]) == {topic_name: UNKNOWN_TOPIC_OR_PARTITION}


@pytest.mark.timeout(60)
def test_create_errors_are_per_topic(admin, topic_name):
    assert admin.create({topic_name: (1, 1, {})}) == {topic_name: NONE}
    too_many_replicas = f"{topic_name}-rf"
    ok = f"{topic_name}-ok"
    # One request, one verdict per topic: the good topic is created despite its neighbours.
    assert admin.create({
        topic_name: (1, 1, {}),
        too_many_replicas: (1, 2, {}),
        ok: (2, 1, {}),
    }) == {
        topic_name: TOPIC_ALREADY_EXISTS,
        too_many_replicas: INVALID_REPLICATION_FACTOR,
        ok: NONE,
    }
    listed = admin.list()
    assert ok in listed and too_many_replicas not in listed


# Names the broker must refuse; all reach it (neither client checks names itself).
INVALID_NAMES = ["bad name!", "slash/topic", ".", "..", "x" * 250, "ümlaut"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", INVALID_NAMES, ids=lambda n: n[:12])
def test_create_invalid_topic_name(admin, bad):
    assert admin.create({bad: (1, 1, {})}) == {bad: INVALID_TOPIC_EXCEPTION}
    assert bad not in admin.list()


@pytest.mark.timeout(60)
def test_create_invalid_partition_count(admin, topic_name):
    counts = [0] if admin.name == "confluent" else [0, -2]
    # (librdkafka refuses a negative count other than -1 itself, before sending.)
    for count in counts:
        name = f"{topic_name}-{count}"
        assert admin.create({name: (count, 1, {})}) == {name: INVALID_PARTITIONS}, count
        assert name not in admin.list()


@pytest.mark.timeout(60)
def test_create_replication_factor_above_broker_count(admin, topic_name):
    # A single broker: any replication factor above 1 cannot be placed.
    for rf in (2, 3):
        name = f"{topic_name}-{rf}"
        assert admin.create({name: (1, rf, {})}) == {name: INVALID_REPLICATION_FACTOR}
        assert name not in admin.list()


@pytest.mark.timeout(60)
def test_create_unknown_config_refused(admin, topic_name):
    assert admin.create({topic_name: (1, 1, {"no.such.config": "1"})}) == {
        topic_name: INVALID_CONFIG}
    assert topic_name not in admin.list()


@pytest.mark.timeout(60)
def test_validate_only_creates_nothing(admin, topic_name):
    assert admin.create({topic_name: (3, 1, {})}, validate_only=True) == {topic_name: NONE}
    assert topic_name not in admin.list()
    assert admin.describe(topic_name)[0] == UNKNOWN_TOPIC_OR_PARTITION
    # It still validates.
    assert admin.create({topic_name: (0, 1, {})}, validate_only=True) == {
        topic_name: INVALID_PARTITIONS}
    # And the topic can really be created afterwards.
    assert admin.create({topic_name: (3, 1, {})}) == {topic_name: NONE}
    assert admin.create({topic_name: (3, 1, {})}, validate_only=True) == {
        topic_name: TOPIC_ALREADY_EXISTS}


@pytest.mark.timeout(60)
def test_create_topics_response_describes_the_topic(broker, topic_name):
    """CreateTopics v5+ (KIP-525) answers each created topic with its partition count,
    replication factor and configs, and does so for validate_only too (that is what
    validate_only is for: "what would this create?")."""
    admin = KafkaPythonAdmin(broker.bootstrap)
    problems = []
    try:
        for validate_only in (True, False):
            name = f"{topic_name}-{'validate' if validate_only else 'create'}"
            assert admin.create({name: (3, 1, {"retention.ms": "3600000"})},
                                validate_only=validate_only) == {name: NONE}
            result = admin.last_create[name]
            if (result["num_partitions"], result["replication_factor"]) != (3, 1):
                problems.append(f"validate_only={validate_only}: partitions/replication factor "
                                f"{result['num_partitions']}/{result['replication_factor']}, "
                                "expected 3/1")
            configs = {k: c["value"] for k, c in result.get("configs", {}).items()}
            if configs.get("retention.ms") != "3600000":
                problems.append(f"validate_only={validate_only}: configs {configs}, expected "
                                "the topic's configs with retention.ms=3600000")
    finally:
        admin.close()
    assert not problems, "CreateTopics response:\n" + "\n".join(problems)


@pytest.mark.timeout(60)
def test_describe_configs_overrides_and_defaults(admin, topic_name):
    overrides = {"retention.ms": "3600000", "segment.bytes": "1048576"}
    assert admin.create({topic_name: (1, 1, overrides)}) == {topic_name: NONE}
    configs = admin.topic_configs(topic_name)
    for key, value in overrides.items():
        assert configs[key] == (value, "DYNAMIC_TOPIC_CONFIG"), key
    # Everything not overridden is reported with Kafka's default and source.
    assert configs["cleanup.policy"] == ("delete", "DEFAULT_CONFIG")
    assert configs["max.message.bytes"] == ("1048588", "DEFAULT_CONFIG")
    others = {k: src for k, (_, src) in configs.items() if k not in overrides}
    assert others and set(others.values()) == {"DEFAULT_CONFIG"}, others


@pytest.mark.timeout(60)
def test_describe_cluster_lists_the_broker(admin, broker):
    cluster_id, controller, brokers = admin.cluster()
    assert cluster_id
    assert controller == BROKER_ID
    assert brokers == [(BROKER_ID, "127.0.0.1", broker.port)]


@pytest.mark.timeout(60)
def test_create_partitions_grows_topics_and_refuses_what_kafka_refuses(admin, topic_name):
    assert admin.create({topic_name: (1, 1, {})}) == {topic_name: NONE}
    assert admin.grow({topic_name: 5}, validate_only=True) == {topic_name: NONE}
    assert len(admin.describe(topic_name)[1]) == 1, "validate_only changed the topic"
    assert admin.grow({topic_name: 3}) == {topic_name: NONE}
    code, partitions = admin.describe(topic_name)
    assert code == NONE and sorted(partitions) == [0, 1, 2], partitions
    assert all(leader == BROKER_ID for leader, _, _ in partitions.values()), partitions
    missing = f"{topic_name}-missing"
    assert admin.grow({topic_name: 2, missing: 2}) == {
        topic_name: INVALID_PARTITIONS, missing: UNKNOWN_TOPIC_OR_PARTITION}
    assert admin.grow({topic_name: 3}) == {topic_name: INVALID_PARTITIONS}


@pytest.mark.timeout(90)
def test_producers_and_group_consumers_pick_up_new_partitions(broker, topic_name):
    admin = confluent_admin(broker.bootstrap)
    admin.create_topics([NewTopic(topic_name, num_partitions=1, replication_factor=1)],
                        request_timeout=15)[topic_name].result(timeout=30)
    # Both clients refresh topic metadata every second instead of every five minutes.
    conf = {"bootstrap.servers": broker.bootstrap, "topic.metadata.refresh.interval.ms": 1000,
            **CONFLUENT_BASE}
    consumer = Consumer({**conf, "group.id": topic_name, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic_name])
    producer = Producer(conf)
    try:
        admin.create_partitions([NewPartitions(topic_name, 3)],
                                request_timeout=15)[topic_name].result(timeout=30)
        # Written to the new partitions by number: the producer learns of them first.
        reports = []
        for partition in (1, 2):
            producer.produce(topic_name, value=f"p{partition}".encode(), partition=partition,
                             on_delivery=lambda err, msg: reports.append((err, msg.partition())))
        assert producer.flush(30) == 0
        assert sorted(reports) == [(None, 1), (None, 2)], reports
        seen = set()
        for _ in range(400):
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                seen.add((message.partition(), message.value()))
            if len(seen) == 2:
                break
        assert seen == {(1, b"p1"), (2, b"p2")}, seen
        assert {p.partition for p in consumer.assignment()} == {0, 1, 2}
    finally:
        consumer.close()


@pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")
@pytest.mark.timeout(120)
def test_create_partitions_on_three_nodes_places_replicas_on_every_broker(
        multi_backend, tmp_path, topic_name):
    cluster = Cluster(multi_backend, tmp_path)
    try:
        cluster.start()
        # Asked through one node; planned by the metadata leader's broker.
        admin = ConfluentAdmin(cluster.bootstrap(2))
        assert admin.create({topic_name: (1, 3, {})}) == {topic_name: NONE}
        assert admin.grow({topic_name: 6}) == {topic_name: NONE}
        # Committed by the metadata leader; node 2 learns of it through the metadata backend
        # (no client API says when).
        wait_for(lambda: len(admin.describe(topic_name)[1]) == 6, 30, "node 2 to see 6 partitions")
        code, partitions = admin.describe(topic_name)
        assert code == NONE and sorted(partitions) == list(range(6)), partitions
        assert all(sorted(replicas) == [1, 2, 3] for _, replicas, _ in partitions.values())
        assert {leader for leader, _, _ in partitions.values()} == {1, 2, 3}, partitions
        producer = Producer({"bootstrap.servers": cluster.bootstrap(), "acks": "all",
                             **CONFLUENT_BASE})
        reports = []
        for partition in range(6):
            producer.produce(topic_name, value=b"x", partition=partition,
                             on_delivery=lambda err, msg: reports.append(err))
        assert producer.flush(60) == 0
        assert reports == [None] * 6, reports
    finally:
        cluster.close()


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")  # AlterConfigs on purpose
def test_alter_configs_changes_a_topics_overrides(admin, topic_name):
    assert admin.create({topic_name: (1, 1, {"retention.ms": "3600000"})}) == {topic_name: NONE}
    assert admin.alter(topic_name, {"segment.ms": "60000"}, validate_only=True) == NONE
    assert admin.topic_configs(topic_name)["segment.ms"][1] == "DEFAULT_CONFIG"
    assert admin.alter(topic_name, {"segment.ms": "60000"}) == NONE
    configs = admin.topic_configs(topic_name)
    assert configs["segment.ms"] == ("60000", "DYNAMIC_TOPIC_CONFIG")
    if admin.replaces:
        # Not listed, so back to the default: AlterConfigs replaces the whole set.
        assert configs["retention.ms"] == ("604800000", "DEFAULT_CONFIG")
    else:
        assert configs["retention.ms"] == ("3600000", "DYNAMIC_TOPIC_CONFIG")
    assert admin.alter(topic_name, {"segment.ms": "-5"}) == INVALID_CONFIG
    assert admin.alter(topic_name, {"no.such.config": "1"}) == INVALID_CONFIG
    assert admin.alter(f"{topic_name}-missing", {"segment.ms": "1"}) == UNKNOWN_TOPIC_OR_PARTITION
    assert admin.topic_configs(topic_name)["segment.ms"] == ("60000", "DYNAMIC_TOPIC_CONFIG")


@pytest.mark.timeout(60)
def test_incremental_alter_configs_sets_deletes_and_appends(broker, topic_name):
    admin = ConfluentAdmin(broker.bootstrap)
    assert admin.create({topic_name: (1, 1, {"segment.ms": "60000"})}) == {topic_name: NONE}
    SET, DELETE = AlterConfigOpType.SET, AlterConfigOpType.DELETE
    APPEND, SUBTRACT = AlterConfigOpType.APPEND, AlterConfigOpType.SUBTRACT
    assert admin.alter_incrementally(topic_name, [("retention.ms", SET, "3600000")],
                                     validate_only=True) == NONE
    assert admin.topic_configs(topic_name)["retention.ms"][1] == "DEFAULT_CONFIG"
    assert admin.alter_incrementally(topic_name, [("retention.ms", SET, "3600000"),
                                                  ("cleanup.policy", APPEND, "delete")]) == NONE
    configs = admin.topic_configs(topic_name)
    assert configs["retention.ms"] == ("3600000", "DYNAMIC_TOPIC_CONFIG")
    # Incremental: what was not named keeps its override.
    assert configs["segment.ms"] == ("60000", "DYNAMIC_TOPIC_CONFIG")
    assert configs["cleanup.policy"] == ("delete", "DYNAMIC_TOPIC_CONFIG")
    assert admin.alter_incrementally(topic_name, [("segment.ms", DELETE, None)]) == NONE
    assert admin.topic_configs(topic_name)["segment.ms"] == ("604800000", "DEFAULT_CONFIG")
    assert admin.alter_incrementally(topic_name, [("retention.ms", APPEND, "1")]) == INVALID_CONFIG
    # cleanup.policy without its only policy would be empty: refused.
    assert admin.alter_incrementally(
        topic_name, [("cleanup.policy", SUBTRACT, "delete")]) == INVALID_CONFIG
    assert admin.alter_incrementally(topic_name, [("retention.ms", SET, "-7")]) == INVALID_CONFIG
    broker_resource = CConfigResource(ResourceType.BROKER, str(BROKER_ID), incremental_configs=[
        ConfigEntry("num.partitions", "3", incremental_operation=SET)])
    future = admin.admin.incremental_alter_configs([broker_resource],
                                                   request_timeout=30)[broker_resource]
    assert admin._codes({"broker": future}) == {"broker": INVALID_REQUEST}


@pytest.mark.timeout(90)
def test_a_retention_change_applies_to_a_running_log(broker_factory, topic_name):
    broker = broker_factory.start(
        {**FAST_REBALANCE_ENV, "SWITCHYARD_KAFKA__LOG_RETENTION_CHECK_INTERVAL_MS": "200"})
    admin = ConfluentAdmin(broker.bootstrap)
    assert admin.create({topic_name: (1, 1, {"segment.bytes": "1024"})}) == {topic_name: NONE}
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0,
                         **CONFLUENT_BASE})
    for i in range(40):
        producer.produce(topic_name, value=b"x" * 200)
        producer.flush(10)  # one batch each: many small segments
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": topic_name,
                         **CONFLUENT_BASE})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=10)
        assert (low, high) == (0, 40)
        assert admin.alter_incrementally(
            topic_name, [("retention.bytes", AlterConfigOpType.SET, "2048")]) == NONE
        # Retention runs in the background; no client API says when it deleted a segment.
        low = wait_for(lambda: consumer.get_watermark_offsets(
            TopicPartition(topic_name, 0), timeout=10)[0], 30, "retention to delete segments")
        assert 0 < low < 40, low
    finally:
        consumer.close()


@pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")
@pytest.mark.timeout(120)
def test_a_config_change_through_one_node_is_seen_on_all_three(multi_backend, tmp_path,
                                                              topic_name):
    cluster = Cluster(multi_backend, tmp_path)
    try:
        cluster.start()
        admin = ConfluentAdmin(cluster.bootstrap(2))
        assert admin.create({topic_name: (1, 3, {})}) == {topic_name: NONE}
        assert admin.alter_incrementally(
            topic_name, [("retention.ms", AlterConfigOpType.SET, "3600000")]) == NONE
        for node in (1, 3):
            other = ConfluentAdmin(cluster.bootstrap(node))
            # The change reaches each node through the metadata backend; no client API says
            # when a node applied it.
            wait_for(lambda o=other: o.topic_configs(topic_name)["retention.ms"]
                     == ("3600000", "DYNAMIC_TOPIC_CONFIG"), 30, f"node {node} to see the change")
    finally:
        cluster.close()


GROUP_ID_NOT_FOUND = 69
NON_EMPTY_GROUP = 68


def committed_group(bootstrap: str, topic: str, group: str) -> Consumer:
    """A consumer of `group` that committed offset 1 of `topic` and is still a member."""
    producer = Producer({"bootstrap.servers": bootstrap, **CONFLUENT_BASE})
    producer.produce(topic, value=b"x")
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         **CONFLUENT_BASE})
    consumer.subscribe([topic])
    for _ in range(300):
        message = consumer.poll(0.1)
        if message is not None and message.error() is None:
            consumer.commit(message=message, asynchronous=False)
            return consumer
    raise AssertionError("nothing consumed")


def confluent_delete_groups(bootstrap: str, groups: list[str]) -> dict:
    admin = confluent_admin(bootstrap)
    return ConfluentAdmin._codes(admin.delete_consumer_groups(groups, request_timeout=30))


def kafka_python_delete_groups(bootstrap: str, groups: list[str]) -> dict:
    admin = kp_admin(bootstrap)
    try:
        return {group: kp_code(outcome) for group, outcome in admin.delete_groups(groups).items()}
    finally:
        admin.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("delete", [confluent_delete_groups, kafka_python_delete_groups],
                         ids=["confluent", "kafka-python"])
def test_delete_groups_removes_empty_groups_and_their_offsets(broker, topic_name, delete):
    admin = confluent_admin(broker.bootstrap)
    admin.create_topics([NewTopic(topic_name, num_partitions=1, replication_factor=1)],
                        request_timeout=15)[topic_name].result(timeout=30)
    group, missing = f"{topic_name}-g", f"{topic_name}-none"
    consumer = committed_group(broker.bootstrap, topic_name, group)
    try:
        assert delete(broker.bootstrap, [group]) == {group: NON_EMPTY_GROUP}
    finally:
        consumer.close()  # leaves the group: it is empty now
    assert delete(broker.bootstrap, [group, missing]) == {group: NONE, missing: GROUP_ID_NOT_FOUND}
    listed = {g.group_id for g in admin.list_consumer_groups(request_timeout=30)
              .result(timeout=30).valid}
    assert group not in listed
    # Its committed offsets went with it: a new member starts from auto.offset.reset.
    fresh = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                      **CONFLUENT_BASE})
    try:
        committed = fresh.committed([TopicPartition(topic_name, 0)], timeout=15)
        assert committed[0].offset < 0, committed
    finally:
        fresh.close()


@pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")
@pytest.mark.timeout(120)
def test_delete_groups_on_three_nodes(multi_backend, tmp_path, topic_name):
    cluster = Cluster(multi_backend, tmp_path)
    try:
        cluster.start()
        admin = ConfluentAdmin(cluster.bootstrap())
        assert admin.create({topic_name: (1, 3, {})}) == {topic_name: NONE}
        groups = [f"{topic_name}-{i}" for i in range(3)]
        for group in groups:  # coordinated by different nodes
            committed_group(cluster.bootstrap(), topic_name, group).close()
        # OffsetDelete through node 3 reaches each group's coordinator.
        from kafka import TopicPartition as KpTopicPartition
        kp = kp_admin(cluster.bootstrap(3))
        try:
            for group in groups:
                result = kp.delete_group_offsets(group, [KpTopicPartition(topic_name, 0)])
                assert [e.errno for e in result.values()] == [NONE], result
        finally:
            kp.close()
        assert confluent_delete_groups(cluster.bootstrap(3), groups) == {g: NONE for g in groups}
        for node in (1, 2, 3):
            # Each node learns of the deletions through the metadata backend.
            listed = lambda n=node: {g.group_id for g in confluent_admin(cluster.bootstrap(n))
                                     .list_consumer_groups(request_timeout=30)
                                     .result(timeout=30).valid}
            wait_for(lambda: not set(groups) & listed(), 30, f"node {node} to forget the groups")
    finally:
        cluster.close()


@pytest.mark.timeout(90)
def test_list_groups_filters_by_state_and_type(broker, topic_name):
    admin = confluent_admin(broker.bootstrap)
    admin.create_topics([NewTopic(topic_name, num_partitions=1, replication_factor=1)],
                        request_timeout=15)[topic_name].result(timeout=30)
    stable, empty = f"{topic_name}-stable", f"{topic_name}-empty"
    committed_group(broker.bootstrap, topic_name, empty).close()
    member = committed_group(broker.bootstrap, topic_name, stable)
    try:
        def listed(**filters):
            result = admin.list_consumer_groups(request_timeout=30, **filters).result(timeout=30)
            return {g.group_id for g in result.valid} & {stable, empty}

        assert listed() == {stable, empty}
        assert listed(states={ConsumerGroupState.STABLE}) == {stable}
        assert listed(states={ConsumerGroupState.EMPTY}) == {empty}
        assert listed(types={ConsumerGroupType.CLASSIC}) == {stable, empty}
        assert listed(types={ConsumerGroupType.CONSUMER}) == set()
        described = admin.describe_consumer_groups([stable], request_timeout=30)[stable]
        assert described.result(timeout=30).state == ConsumerGroupState.STABLE
    finally:
        member.close()


@pytest.mark.timeout(90)
def test_offset_delete_spares_topics_a_member_subscribes_to(broker, topic_name):
    from kafka import TopicPartition as KpTopicPartition
    from kafka.errors import GroupIdNotFoundError

    other = f"{topic_name}-other"
    admin = confluent_admin(broker.bootstrap)
    for name in (topic_name, other):
        admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)],
                            request_timeout=15)[name].result(timeout=30)
    group = f"{topic_name}-g"
    # A member subscribed to `topic_name` that also committed an offset of `other`.
    member = committed_group(broker.bootstrap, topic_name, group)
    member.commit(offsets=[TopicPartition(other, 0, 5)], asynchronous=False)
    kp = kp_admin(broker.bootstrap)
    try:
        result = kp.delete_group_offsets(group, [KpTopicPartition(topic_name, 0),
                                                 KpTopicPartition(other, 0)])
        codes = {tp.topic: error.errno for tp, error in result.items()}
        assert codes == {topic_name: 86, other: NONE}, codes  # GROUP_SUBSCRIBED_TO_TOPIC
        committed = {tp.topic: tp.offset for tp in member.committed(
            [TopicPartition(topic_name, 0), TopicPartition(other, 0)], timeout=15)}
        assert committed[topic_name] == 1 and committed[other] < 0, committed
        member.close()
        # Empty now: nothing is spared.
        result = kp.delete_group_offsets(group, [KpTopicPartition(topic_name, 0)])
        assert {tp.topic: error.errno for tp, error in result.items()} == {topic_name: NONE}
        with pytest.raises(GroupIdNotFoundError):
            kp.delete_group_offsets(f"{group}-none", [KpTopicPartition(topic_name, 0)])
    finally:
        kp.close()


@pytest.mark.timeout(60)
def test_describe_log_dirs_reports_the_partitions_held_and_their_sizes(broker, topic_name):
    admin = confluent_admin(broker.bootstrap)
    admin.create_topics([NewTopic(topic_name, num_partitions=2, replication_factor=1)],
                        request_timeout=15)[topic_name].result(timeout=30)
    producer = Producer({"bootstrap.servers": broker.bootstrap, **CONFLUENT_BASE})
    for _ in range(10):
        producer.produce(topic_name, value=b"y" * 100, partition=1)
    assert producer.flush(30) == 0
    kp = kp_admin(broker.bootstrap)
    try:
        (described,) = kp.describe_log_dirs(topic_partitions={topic_name: [0, 1]})
    finally:
        kp.close()
    text = repr(described)
    # One directory, the broker's data directory's logs, holding both partitions; only the
    # written one has data.
    assert str(broker.data_dir / "logs") in text, text
    sizes = {p["partition_index"]: p["partition_size"]
             for d in described["log_dirs"] for t in d["topics"] if t["name"] == topic_name
             for p in t["partitions"]}
    assert sizes.keys() == {0, 1} and sizes[0] == 0 and sizes[1] > 1000, sizes


@pytest.mark.timeout(60)
def test_describe_producers_lists_the_idempotent_producers_of_a_partition(broker, topic_name):
    from kafka import TopicPartition as KpTopicPartition

    admin = confluent_admin(broker.bootstrap)
    admin.create_topics([NewTopic(topic_name, num_partitions=1, replication_factor=1)],
                        request_timeout=15)[topic_name].result(timeout=30)
    for _ in range(2):  # two producers, three records each
        producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                             **CONFLUENT_BASE})
        for i in range(3):
            producer.produce(topic_name, value=f"r{i}".encode())
            producer.flush(30)
    kp = kp_admin(broker.bootstrap)
    try:
        described = kp.describe_producers([KpTopicPartition(topic_name, 0)])
    finally:
        kp.close()
    (state,) = described.values()
    producers = state.active_producers
    assert len(producers) == 2, state
    assert all(p.last_sequence == 2 and p.producer_epoch == 0 and p.last_timestamp > 0
               for p in producers), producers
    assert all(p.coordinator_epoch == -1 for p in producers), producers


@pytest.mark.timeout(90)
def test_broker_wide_topic_defaults_apply_and_are_described(broker_factory, topic_name):
    broker = broker_factory.start({**FAST_REBALANCE_ENV,
                                   "SWITCHYARD_KAFKA__LOG_RETENTION_MS": "3600000",
                                   "SWITCHYARD_KAFKA__MIN_INSYNC_REPLICAS": "2"})
    admin = ConfluentAdmin(broker.bootstrap)
    strict, relaxed = topic_name, f"{topic_name}-relaxed"
    assert admin.create({strict: (1, 1, {}),
                         relaxed: (1, 1, {"min.insync.replicas": "1"})}) == {
        strict: NONE, relaxed: NONE}
    configs = admin.topic_configs(strict)
    assert configs["retention.ms"] == ("3600000", "STATIC_BROKER_CONFIG")
    assert configs["min.insync.replicas"] == ("2", "STATIC_BROKER_CONFIG")
    assert configs["segment.bytes"] == ("1073741824", "DEFAULT_CONFIG")
    assert admin.topic_configs(relaxed)["min.insync.replicas"] == ("1", "DYNAMIC_TOPIC_CONFIG")
    resource = CConfigResource(ResourceType.TOPIC, strict)
    (entries,) = admin.admin.describe_configs([resource]).values()
    # The broker config behind the default (confluent-kafka keeps one synonym per name: of
    # the static and the default one Kafka lists, the last).
    synonyms = entries.result(timeout=30)["retention.ms"].synonyms
    assert list(synonyms) == ["log.retention.ms"], synonyms
    broker_resource = CConfigResource(ResourceType.BROKER, str(BROKER_ID))
    (entries,) = admin.admin.describe_configs([broker_resource]).values()
    described = entries.result(timeout=30)
    assert (described["log.retention.ms"].value,
            ConfigSource(described["log.retention.ms"].source).name) == (
        "3600000", "STATIC_BROKER_CONFIG")
    # The broker-wide min.insync.replicas applies: one replica is too few for acks=all.
    # No retries: NOT_ENOUGH_REPLICAS is retriable, and would otherwise end as a timeout.
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "retries": 0,
                         "message.timeout.ms": 5000, **CONFLUENT_BASE})
    reports = {}
    for name in (strict, relaxed):
        producer.produce(name, value=b"x",
                         on_delivery=lambda err, msg: reports.__setitem__(
                             msg.topic(), err.name() if err else None))
    producer.flush(30)
    assert reports == {strict: "NOT_ENOUGH_REPLICAS", relaxed: None}, reports


@pytest.mark.timeout(60)
def test_describe_topic_partitions_pages_with_a_cursor(broker, topic_name):
    first, second = f"{topic_name}-a", f"{topic_name}-b"
    admin = ConfluentAdmin(broker.bootstrap)
    assert admin.create({first: (3, 1, {}), second: (3, 1, {})}) == {first: NONE, second: NONE}
    kp = kp_admin(broker.bootstrap)
    try:
        missing = f"{topic_name}-missing"
        page = kp.describe_topic_partitions([second, first, missing], response_partition_limit=4)
        described = [(t["name"], [p["partition_index"] for p in t["partitions"]], t["error_code"])
                     for t in page["topics"]]
        # In name order, four partitions: all of the first topic, one of the second.
        assert described == [(first, [0, 1, 2], NONE), (second, [0], NONE)], described
        assert page["next_cursor"] == {"topic_name": second, "partition_index": 1}, page
        page = kp.describe_topic_partitions([second, first, missing], response_partition_limit=4,
                                            cursor=page["next_cursor"])
        described = [(t["name"], [p["partition_index"] for p in t["partitions"]], t["error_code"])
                     for t in page["topics"]]
        assert described == [(second, [1, 2], NONE), (missing, [], UNKNOWN_TOPIC_OR_PARTITION)]
        assert page["next_cursor"] is None, page
        leaders = {p["leader_id"] for t in page["topics"] for p in t["partitions"]}
        assert leaders == {BROKER_ID}
    finally:
        kp.close()


OFFSET_OUT_OF_RANGE = 1


def confluent_delete_records(bootstrap: str, topic: str, offsets: dict[int, int]) -> dict:
    """partition -> low watermark, or the error code."""
    admin = confluent_admin(bootstrap)
    futures = admin.delete_records([TopicPartition(topic, p, o) for p, o in offsets.items()],
                                   request_timeout=30, operation_timeout=20)
    outcome = {}
    for tp, future in futures.items():
        try:
            outcome[tp.partition] = future.result(timeout=40).low_watermark
        except KafkaException as e:
            outcome[tp.partition] = ("error", e.args[0].code())
    return outcome


def kafka_python_delete_records(bootstrap: str, topic: str, offsets: dict[int, int]) -> dict:
    from kafka import TopicPartition as KpTopicPartition
    admin = kp_admin(bootstrap)
    try:
        # One partition per call: kafka-python raises on the first error of a request.
        outcome = {}
        for p, o in offsets.items():
            try:
                result = admin.delete_records({KpTopicPartition(topic, p): o}, timeout_ms=20_000)
                outcome[p] = next(iter(result.values()))["low_watermark"]
            except kafka.errors.BrokerResponseError as e:
                outcome[p] = ("error", e.errno)
        return outcome
    finally:
        admin.close()


def produce_values(bootstrap: str, topic: str, partition: int, count: int,
                   batch_each: bool = False) -> None:
    """`count` messages, in one batch each if `batch_each` (many small segments)."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                         **CONFLUENT_BASE})
    for i in range(count):
        producer.produce(topic, value=f"v{i}".encode() * 20, partition=partition)
        if batch_each:
            assert producer.flush(30) == 0
    assert producer.flush(30) == 0


def earliest_offsets(bootstrap: str, topic: str, partition: int, expected: int) -> list[int]:
    """The offsets a fresh consumer reading from the earliest offset gets, `expected` of them."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-{partition}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         **CONFLUENT_BASE})
    offsets = []
    try:
        consumer.assign([TopicPartition(topic, partition)])
        for _ in range(300):
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                offsets.append(message.offset())
                if len(offsets) == expected:
                    break
    finally:
        consumer.close()
    return offsets


def watermarks(bootstrap: str, topic: str, partition: int) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, **CONFLUENT_BASE})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=15)
    finally:
        consumer.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("delete", [confluent_delete_records, kafka_python_delete_records],
                         ids=["confluent", "kafka-python"])
def test_delete_records_moves_the_log_start_and_survives_a_restart(backend, broker_factory,
                                                                    topic_name, delete):
    broker = broker_factory.start()
    admin = ConfluentAdmin(broker.bootstrap)
    assert admin.create({topic_name: (3, 1, {"segment.bytes": "1024"})}) == {topic_name: NONE}
    for partition in range(3):
        produce_values(broker.bootstrap, topic_name, partition, 30, batch_each=partition == 0)
    outcome = delete(broker.bootstrap, topic_name, {0: 12, 1: -1, 2: 31})
    assert outcome == {0: 12, 1: 30, 2: ("error", OFFSET_OUT_OF_RANGE)}, outcome
    assert watermarks(broker.bootstrap, topic_name, 0) == (12, 30)
    assert watermarks(broker.bootstrap, topic_name, 1) == (30, 30)
    assert watermarks(broker.bootstrap, topic_name, 2) == (0, 30)
    assert earliest_offsets(broker.bootstrap, topic_name, 0, 18) == list(range(12, 30))
    # Deleting below the start changes nothing; the answer is the start.
    assert delete(broker.bootstrap, topic_name, {0: 5}) == {0: 12}
    # Whole segments below the start are gone from disk.
    logs = broker.data_dir / "logs" / f"{topic_name}-0"
    assert "00000000000000000000.log" not in {p.name for p in logs.iterdir()}

    if not backend.durable:
        return  # the topic itself does not survive a restart
    broker.restart()  # kill -9: the new start was on disk before the answer

    def restarted_watermarks():
        try:
            return watermarks(broker.bootstrap, topic_name, 0)
        except KafkaException:
            return None
    # The partition is served again once the broker registered and leads it; clients learn
    # that from Metadata only.
    assert wait_for(restarted_watermarks, 30, "the partition to be led again") == (12, 30)
    assert watermarks(broker.bootstrap, topic_name, 1) == (30, 30)
    assert earliest_offsets(broker.bootstrap, topic_name, 0, 18) == list(range(12, 30))


@pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")
@pytest.mark.timeout(180)
def test_delete_records_on_three_nodes_survives_a_leader_change(multi_backend, tmp_path,
                                                                topic_name):
    from cluster_util import layout, metadata_leader
    cluster = Cluster(multi_backend, tmp_path)
    try:
        cluster.start()
        admin = ConfluentAdmin(cluster.bootstrap())
        assert admin.create({topic_name: (1, 3, {})}) == {topic_name: NONE}
        produce_values(cluster.bootstrap(), topic_name, 0, 40)
        # The answer comes once every in-sync replica moved its start: the low watermark.
        assert confluent_delete_records(cluster.bootstrap(), topic_name, {0: 25}) == {0: 25}
        leader, _, _ = layout(cluster.bootstrap(), topic_name)["topics"][topic_name][0]
        metadata_leader_node = metadata_leader(cluster.bootstrap())
        cluster.nodes[leader].kill9()
        survivors = [i for i in (1, 2, 3) if i != leader]
        if cluster.backend.name == "wal" and metadata_leader_node == leader:
            promoted = cluster.command("promote", str(survivors[0]))  # manual failover
            assert promoted.returncode == 0, promoted.stderr
        # A new leader is elected once the old one's session ends; Metadata shows it.
        wait_for(lambda: layout(cluster.bootstrap(*survivors), topic_name)["topics"][topic_name]
                 [0][0] in survivors, 60, "a new partition leader")
        assert watermarks(cluster.bootstrap(*survivors), topic_name, 0) == (25, 40)
        assert earliest_offsets(cluster.bootstrap(*survivors), topic_name, 0, 15) \
            == list(range(25, 40))
        cluster.nodes[leader].start()
        produce_values(cluster.bootstrap(), topic_name, 0, 5)
        assert confluent_delete_records(cluster.bootstrap(), topic_name, {0: 42}) == {0: 42}
    finally:
        cluster.close()


SET, DELETE = 0, 1  # IncrementalAlterConfigs operations
DYNAMIC_BROKER_CONFIG, DYNAMIC_DEFAULT_BROKER_CONFIG = 2, 3  # config sources


def alter_broker(bootstrap: str, name: str, changes, validate_only=False) -> int:
    """IncrementalAlterConfigs of broker resource `name` ("" for the cluster-wide defaults);
    changes: [(key, operation, value)]. Returns the error code."""
    with RawConnection(bootstrap) as connection:
        return connection.alter_broker_configs(name, changes, validate_only)


def broker_configs(bootstrap: str, name: str) -> dict:
    with RawConnection(bootstrap) as connection:
        return connection.broker_configs(name)


@pytest.mark.timeout(90)
def test_dynamic_broker_configs_layer_over_the_static_ones(broker_factory, topic_name):
    broker = broker_factory.start({"SWITCHYARD_KAFKA__LOG_RETENTION_MS": "3600000"})
    admin = ConfluentAdmin(broker.bootstrap)
    assert admin.create({topic_name: (1, 1, {})}) == {topic_name: NONE}
    bootstrap = broker.bootstrap
    # validate_only changes nothing.
    assert alter_broker(bootstrap, "", [("log.retention.ms", SET, "7200000")],
                        validate_only=True) == NONE
    assert admin.topic_configs(topic_name)["retention.ms"] == ("3600000", "STATIC_BROKER_CONFIG")
    # The cluster-wide default, then this broker's own, each over the one below.
    assert alter_broker(bootstrap, "", [("log.retention.ms", SET, "7200000")]) == NONE
    assert admin.topic_configs(topic_name)["retention.ms"] == (
        "7200000", "DYNAMIC_DEFAULT_BROKER_CONFIG")
    assert broker_configs(bootstrap, "") == {
        "log.retention.ms": ("7200000", DYNAMIC_DEFAULT_BROKER_CONFIG)}
    # This broker's own, through confluent-kafka (which can name a broker resource).
    resource = CConfigResource(ResourceType.BROKER, str(BROKER_ID), incremental_configs=[
        ConfigEntry("log.retention.ms", "9000000",
                    incremental_operation=AlterConfigOpType.SET)])
    admin.admin.incremental_alter_configs([resource], request_timeout=30)[resource].result(
        timeout=30)
    assert admin.topic_configs(topic_name)["retention.ms"] == ("9000000", "DYNAMIC_BROKER_CONFIG")
    assert broker_configs(bootstrap, str(BROKER_ID))["log.retention.ms"] == (
        "9000000", DYNAMIC_BROKER_CONFIG)
    assert alter_broker(bootstrap, str(BROKER_ID), [("log.retention.ms", DELETE, None)]) == NONE
    assert admin.topic_configs(topic_name)["retention.ms"] == (
        "7200000", "DYNAMIC_DEFAULT_BROKER_CONFIG")
    # A topic's own override still wins.
    assert admin.alter_incrementally(
        topic_name, [("retention.ms", AlterConfigOpType.SET, "1000")]) == NONE
    assert admin.topic_configs(topic_name)["retention.ms"] == ("1000", "DYNAMIC_TOPIC_CONFIG")
    # Static broker configs, unknown ones and bad values are refused.
    assert alter_broker(bootstrap, "", [("num.partitions", SET, "3")]) == INVALID_REQUEST
    assert alter_broker(bootstrap, "", [("no.such.config", SET, "3")]) == INVALID_REQUEST
    assert alter_broker(bootstrap, "", [("log.retention.ms", SET, "soon")]) == INVALID_CONFIG
    # The dynamic defaults live in the metadata: they survive a restart where it does.
    if broker.backend.durable:
        broker.restart()
        wait_for(lambda: admin.topic_configs(topic_name)["retention.ms"] == (
            "1000", "DYNAMIC_TOPIC_CONFIG"), 30, "the broker to serve again")
        assert broker_configs(bootstrap, "") == {
            "log.retention.ms": ("7200000", DYNAMIC_DEFAULT_BROKER_CONFIG)}


@pytest.mark.timeout(90)
def test_a_dynamic_retention_default_applies_to_running_logs(broker_factory, topic_name):
    broker = broker_factory.start({"SWITCHYARD_KAFKA__LOG_RETENTION_CHECK_INTERVAL_MS": "200"})
    admin = ConfluentAdmin(broker.bootstrap)
    assert admin.create({topic_name: (1, 1, {"segment.bytes": "1024"})}) == {topic_name: NONE}
    produce_values(broker.bootstrap, topic_name, 0, 40, batch_each=True)
    assert watermarks(broker.bootstrap, topic_name, 0) == (0, 40)
    assert alter_broker(broker.bootstrap, "", [("log.retention.bytes", SET, "2048")]) == NONE
    # Retention runs in the background; no client API says when it deleted a segment.
    low = wait_for(lambda: watermarks(broker.bootstrap, topic_name, 0)[0], 30,
                   "retention to delete segments")
    assert 0 < low < 40, low


@pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")
@pytest.mark.timeout(120)
def test_a_dynamic_broker_default_set_through_one_node_applies_on_all_three(
        multi_backend, tmp_path, topic_name):
    cluster = Cluster(multi_backend, tmp_path)
    try:
        cluster.start()
        admin = ConfluentAdmin(cluster.bootstrap(2))
        assert admin.create({topic_name: (1, 3, {})}) == {topic_name: NONE}
        assert alter_broker(cluster.bootstrap(2), "", [("log.retention.ms", SET, "5000000")]) \
            == NONE
        for node in (1, 2, 3):
            other = ConfluentAdmin(cluster.bootstrap(node))
            # Each node learns the change through the metadata backend; no client API says
            # when it applied it.
            wait_for(lambda o=other: o.topic_configs(topic_name)["retention.ms"]
                     == ("5000000", "DYNAMIC_DEFAULT_BROKER_CONFIG"), 30,
                     f"node {node} to see the change")
    finally:
        cluster.close()


@pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")
@pytest.mark.timeout(120)
def test_the_describe_apis_on_three_nodes(multi_backend, tmp_path, topic_name):
    """DescribeLogDirs from every broker (each holds a replica), DescribeProducers from the
    partition's leader, DescribeTopicPartitions through any node, consistent with Metadata."""
    from kafka import TopicPartition as KpTopicPartition

    from cluster_util import layout
    cluster = Cluster(multi_backend, tmp_path)
    try:
        cluster.start()
        assert ConfluentAdmin(cluster.bootstrap()).create({topic_name: (1, 3, {})}) == {
            topic_name: NONE}
        producer = Producer({"bootstrap.servers": cluster.bootstrap(), "enable.idempotence": True,
                             **CONFLUENT_BASE})
        for i in range(3):
            producer.produce(topic_name, value=f"r{i}".encode() * 50)
        assert producer.flush(30) == 0
        leader, replicas, _ = layout(cluster.bootstrap(), topic_name)["topics"][topic_name][0]
        kp = kp_admin(cluster.bootstrap(3))
        try:
            described = kp.describe_log_dirs(topic_partitions={topic_name: [0]})
            holders = {str(cluster.nodes[n].data_dir / "logs") for n in (1, 2, 3)}
            seen = {d["log_dir"] for r in described for d in r["log_dirs"]
                    if any(t["name"] == topic_name for t in d["topics"])}
            assert seen == holders, (seen, holders)
            (state,) = kp.describe_producers([KpTopicPartition(topic_name, 0)]).values()
            assert len(state.active_producers) == 1, state
            assert state.active_producers[0].last_sequence >= 0, state
            page = kp.describe_topic_partitions([topic_name])
            (partition,) = page["topics"][0]["partitions"]
            assert partition["leader_id"] == leader, (partition, leader)
            assert sorted(partition["replica_nodes"]) == sorted(replicas), partition
        finally:
            kp.close()
    finally:
        cluster.close()
