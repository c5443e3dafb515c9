"""SASL_PLAINTEXT listeners with SCRAM and PLAIN, and ACLs: real clients, users made with
`switchyard user`, on one node of every backend and on three nodes of every multi-node
backend.

The users' credentials are metadata: a user created through one node authenticates on every
node, and brokers reach each other's SASL listeners with the cluster secret (replica fetches
of an RF=3 topic prove it).
"""

from __future__ import annotations

import subprocess
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                  AclPermissionType, AdminClient, AlterConfigOpType,
                                  ConfigEntry, ConfigResource, NewPartitions, NewTopic,
                                  ResourcePatternType, ResourceType)
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ACLFilter as KpAclFilter
from kafka.admin import ACLOperation as KpAclOperation
from kafka.admin import ACLPermissionType as KpAclPermissionType
from kafka.admin import ACLResourcePatternType as KpPatternType
from kafka.admin import ResourcePatternFilter as KpResourcePatternFilter
from kafka.admin import ResourceType as KpResourceType
from kafka.errors import KafkaError as KpKafkaError

from client_util import CONFLUENT_BASE, FAST_REBALANCE_ENV, wait_for
from conftest import MULTI_NODE, BrokerProcess, Cluster, switchyard_bin, write_secret

SASL_ENV = {
    "SWITCHYARD_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "SWITCHYARD_KAFKA__SASL_ENABLED_MECHANISMS": '["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]',
}
# What librdkafka reports when the broker refuses its credentials.
AUTHENTICATION_ERROR = KafkaError._AUTHENTICATION


def user_command(secret, bootstrap: str, *args: str, password: str | None = None,
                 command: str = "user"):
    """`switchyard user ARGS` (or another `command`) against `bootstrap`, proving the cluster
    secret in `secret`."""
    return subprocess.run(
        [str(switchyard_bin()), command, *args, "--bootstrap", bootstrap,
         "--cluster-secret-file", str(secret),
         *(["--password-file", "-"] if password is not None else [])],
        input=password, capture_output=True, text=True, timeout=60)


def create_user(secret, bootstrap: str, name: str, password: str,
                mechanism: str = "SCRAM-SHA-512", extra: list[str] | None = None) -> None:
    done = user_command(secret, bootstrap, "create", name, "--mechanism", mechanism,
                        *(extra or []), password=password)
    assert done.returncode == 0, done.stderr
    assert f"user {name}: {mechanism} credential stored" in done.stdout, done.stdout


def confluent(bootstrap: str, user: str, password: str, mechanism: str = "SCRAM-SHA-512",
              **extra) -> dict:
    return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password,
            **CONFLUENT_BASE, **extra}


def kafka_python(bootstrap: str, user: str, password: str,
                 mechanism: str = "SCRAM-SHA-512") -> dict:
    return {"bootstrap_servers": bootstrap, "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": mechanism, "sasl_plain_username": user,
            "sasl_plain_password": password}


def secured_broker(backend, workdir, env: dict, users: dict):
    """A broker of `backend` with `env` and a secret file in `workdir`, and `users` (name →
    password, SCRAM-SHA-512) created; yields it and the secret file."""
    secret = write_secret(workdir / "cluster.secret")
    handle = BrokerProcess(backend, workdir, {
        **FAST_REBALANCE_ENV, **env, "SWITCHYARD_CLUSTER_SECRET_FILE": str(secret)})
    try:
        handle.start()
        for name, password in users.items():
            create_user(secret, handle.bootstrap, name, password)
        yield handle, secret
    finally:
        handle.close()


@pytest.fixture(scope="module")
def sasl_broker(backend, tmp_path_factory):
    """One SASL_PLAINTEXT broker of `backend`, its secret file, and user alice."""
    yield from secured_broker(backend, tmp_path_factory.mktemp(f"sasl-{backend.name}"),
                              SASL_ENV, {"alice": "alice-secret"})


def produce_and_consume_in_a_group(conf: dict, topic: str, count: int = 20) -> list[bytes]:
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)],
                        request_timeout=15)[topic].result(timeout=30)
    producer = Producer({**conf, "enable.idempotence": True})
    for i in range(count):
        producer.produce(topic, key=str(i).encode(), value=f"v{i}".encode())
    assert producer.flush(30) == 0
    consumer = Consumer({**conf, "group.id": f"g-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    values = []
    try:
        while len(values) < count:
            message = consumer.poll(30)
            assert message is not None, f"only {len(values)} of {count} messages arrived"
            assert message.error() is None, message.error()
            values.append(message.value())
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return sorted(values)


def test_scram_sha_512_clients_produce_consume_in_a_group_and_administer(sasl_broker, topic_name):
    broker, _ = sasl_broker
    conf = confluent(broker.bootstrap, "alice", "alice-secret")
    values = produce_and_consume_in_a_group(conf, topic_name)
    assert values == sorted(f"v{i}".encode() for i in range(20))

    producer = KafkaProducer(**kafka_python(broker.bootstrap, "alice", "alice-secret"))
    producer.send(topic_name, b"from-kafka-python").get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(topic_name, auto_offset_reset="earliest", consumer_timeout_ms=10_000,
                             **kafka_python(broker.bootstrap, "alice", "alice-secret"))
    seen = [m.value for m in consumer]
    consumer.close()
    assert b"from-kafka-python" in seen and len(seen) == 21


def test_the_topic_and_record_commands_prove_the_cluster_secret(sasl_broker, topic_name):
    broker, secret = sasl_broker
    created = user_command(secret, broker.bootstrap, "create", topic_name, "-p", "1",
                           command="topic")
    assert created.returncode == 0 and " OK" in created.stdout, created.stderr
    records = [str(switchyard_bin()), "--bootstrap", broker.bootstrap,
               "--cluster-secret-file", str(secret)]
    produced = subprocess.run([records[0], "produce", topic_name, *records[1:]],
                              input="a\nb\n", capture_output=True, text=True, timeout=60)
    assert produced.returncode == 0, produced.stderr
    consumed = subprocess.run([records[0], "consume", topic_name, "--until-end", *records[1:]],
                              capture_output=True, text=True, timeout=60)
    assert consumed.stdout.splitlines() == ["a", "b"], consumed.stderr
    # Without the secret the listener takes nothing.
    anonymous = subprocess.run(
        [str(switchyard_bin()), "topic", "list", "--bootstrap", broker.bootstrap],
        capture_output=True, text=True, timeout=60)
    assert anonymous.returncode != 0 and topic_name not in anonymous.stdout


def test_plain_and_scram_sha_256_check_the_same_stored_credentials(sasl_broker, topic_name):
    broker, secret = sasl_broker
    create_user(secret, broker.bootstrap, "bob", "bob-secret", mechanism="SCRAM-SHA-256")
    for mechanism in ("SCRAM-SHA-256", "PLAIN"):
        producer = Producer(confluent(broker.bootstrap, "bob", "bob-secret", mechanism))
        producer.produce(topic_name, value=mechanism.encode())
        assert producer.flush(30) == 0, mechanism
    producer = KafkaProducer(**kafka_python(broker.bootstrap, "bob", "bob-secret", "PLAIN"))
    producer.send(topic_name, b"kafka-python PLAIN").get(timeout=30)
    producer.close()


def authenticates(conf: dict) -> bool:
    """Whether a client with `conf` gets metadata."""
    try:
        AdminClient(conf).list_topics(timeout=2)
        return True
    except Exception:  # noqa: BLE001 - refused or not yet: the caller retries
        return False


def authentication_errors(conf: dict) -> list:
    """The errors librdkafka reports while trying to use `conf`'s credentials."""
    errors = []
    admin = AdminClient({**conf, "error_cb": errors.append})
    with pytest.raises(Exception):
        admin.list_topics(timeout=2)
    # Error callbacks run from poll.
    admin.poll(1)
    return [e for e in errors if e.code() == AUTHENTICATION_ERROR]


def test_wrong_passwords_unknown_users_and_unauthenticated_clients_are_refused(sasl_broker):
    broker, _ = sasl_broker
    for user, password, mechanism in [("alice", "wrong", "SCRAM-SHA-512"),
                                      ("mallory", "x", "SCRAM-SHA-512"),
                                      ("alice", "wrong", "PLAIN"),
                                      # alice has no SCRAM-SHA-256 credential.
                                      ("alice", "alice-secret", "SCRAM-SHA-256")]:
        errors = authentication_errors(confluent(broker.bootstrap, user, password, mechanism))
        assert errors, (user, mechanism)
        assert "invalid credentials" in errors[0].str(), errors[0].str()

    with pytest.raises(KpKafkaError):
        KafkaProducer(request_timeout_ms=5_000, bootstrap_timeout_ms=3_000,
                      **kafka_python(broker.bootstrap, "alice", "wrong"))

    # A client that does not authenticate gets no metadata: the broker closes the connection.
    plaintext = AdminClient({"bootstrap.servers": broker.bootstrap, **CONFLUENT_BASE})
    with pytest.raises(Exception):
        plaintext.list_topics(timeout=2)


def test_user_command_lists_replaces_and_deletes_credentials(sasl_broker, topic_name):
    broker, secret = sasl_broker
    create_user(secret, broker.bootstrap, "carol", "first")
    create_user(secret, broker.bootstrap, "carol", "second")
    listed = user_command(secret, broker.bootstrap, "list")
    assert listed.returncode == 0, listed.stderr
    assert "carol SCRAM-SHA-512 (8192 iterations)" in listed.stdout, listed.stdout
    assert "alice SCRAM-SHA-512" in listed.stdout

    assert authentication_errors(confluent(broker.bootstrap, "carol", "first"))
    producer = Producer(confluent(broker.bootstrap, "carol", "second"))
    producer.produce(topic_name, value=b"x")
    assert producer.flush(30) == 0

    deleted = user_command(secret, broker.bootstrap, "delete", "carol")
    assert deleted.returncode == 0, deleted.stderr
    assert authentication_errors(confluent(broker.bootstrap, "carol", "second"))
    again = user_command(secret, broker.bootstrap, "delete", "carol")
    assert again.returncode != 0
    assert "no SCRAM-SHA-512 credential" in again.stderr, again.stderr

    # Without the secret the command cannot authenticate.
    other = write_secret(secret.parent / f"other-{uuid.uuid4().hex[:6]}.secret")
    refused = user_command(other, broker.bootstrap, "list")
    assert refused.returncode != 0
    assert "authentication refused" in refused.stderr, refused.stderr


def accepted_everywhere_then_rf3_written(cluster, conf_for, topic: str) -> dict:
    """Wait until every node of `cluster` accepts the client `conf_for(bootstrap)` describes
    (a credential reaches each node through the metadata backend; no client API says when),
    then write 30 records with acks=all to a new RF=3 topic; returns the client's config."""
    for node in (1, 2, 3):
        node_conf = conf_for(cluster.bootstrap(node))
        wait_for(lambda c=node_conf: authenticates(c), 30, f"node {node} to accept the user")
    conf = conf_for(cluster.bootstrap())
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3)],
                        request_timeout=15)[topic].result(timeout=30)
    producer = Producer({**conf, "acks": "all", "enable.idempotence": True})
    for i in range(30):
        producer.produce(topic, value=f"m{i}".encode())
    assert producer.flush(60) == 0
    return conf


@pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")
def test_three_sasl_nodes_replicate_and_share_users(multi_backend, tmp_path, topic_name):
    cluster = Cluster(multi_backend, tmp_path, env=SASL_ENV)
    try:
        cluster.start()
        create_user(cluster.secret_file, cluster.bootstrap(1), "dave", "dave-secret")
        # Credentials reach every node through the metadata backend; each node checks them
        # against its own copy. A node that has not applied the change yet refuses, so wait
        # (no client API reports when a credential reached a node).
        conf = accepted_everywhere_then_rf3_written(
            cluster, lambda bootstrap: confluent(bootstrap, "dave", "dave-secret"), topic_name)
        # acks=all on RF=3 completed only once both followers fetched over SASL with the
        # cluster secret.
        consumer = Consumer({**confluent(cluster.bootstrap(3), "dave", "dave-secret"),
                             "group.id": "g", "auto.offset.reset": "earliest"})
        consumer.subscribe([topic_name])
        seen = 0
        try:
            while seen < 30:
                message = consumer.poll(30)
                assert message is not None and message.error() is None, message
                seen += 1
        finally:
            consumer.close()
        for node in (1, 2, 3):
            log = cluster.nodes[node].log_text()
            assert "replica fetch from a connection that is not that broker's" not in log
    finally:
        cluster.close()


# ---- ACLs -------------------------------------------------------------------------------

ACL_ENV = {**SASL_ENV, "SWITCHYARD_KAFKA__AUTHORIZER_ENABLED": "true",
           "SWITCHYARD_KAFKA__SUPER_USERS": '["User:admin"]'}


def allow(name: str, principal: str, operation, resource=ResourceType.TOPIC,
          permission=AclPermissionType.ALLOW) -> AclBinding:
    return AclBinding(resource, name, ResourcePatternType.LITERAL, principal, "*", operation,
                      permission)


def create_acls(conf: dict, bindings: list) -> None:
    admin = AdminClient(conf)
    for future in admin.create_acls(bindings, request_timeout=15).values():
        future.result(timeout=30)


def produce_error(conf: dict, topic: str, partition: int = 0):
    """Produce one message; the delivery error, or None."""
    outcome = []
    producer = Producer({**conf, "message.timeout.ms": 10_000})
    producer.produce(topic, value=b"x", partition=partition,
                     on_delivery=lambda err, _msg: outcome.append(err))
    producer.flush(30)
    assert outcome, "no delivery report"
    return outcome[0]


def first_consumer_error(conf: dict, topic: str, group: str):
    """Subscribe in `group` and poll until a message or an error arrives."""
    consumer = Consumer({**conf, "group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    try:
        for _ in range(30):
            message = consumer.poll(1)
            if message is not None:
                return message.error()
        return "nothing arrived"
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def acl_broker(backend, tmp_path_factory):
    """One SASL broker of `backend` with the authorizer on; admin (a super user), alice."""
    yield from secured_broker(backend, tmp_path_factory.mktemp(f"acl-{backend.name}"), ACL_ENV,
                              {"admin": "admin-secret", "alice": "alice-secret"})


def test_acls_decide_who_produces_consumes_and_administers(acl_broker, topic_name):
    broker, _ = acl_broker
    admin = confluent(broker.bootstrap, "admin", "admin-secret")
    alice = confluent(broker.bootstrap, "alice", "alice-secret")
    hidden = f"{topic_name}-hidden"
    admin_client = AdminClient(admin)
    created = admin_client.create_topics(
        [NewTopic(t, num_partitions=1, replication_factor=1) for t in (topic_name, hidden)],
        request_timeout=15)
    for future in created.values():
        future.result(timeout=30)

    # No ACL: nothing is allowed, and the topics are not even listed.
    error = produce_error(alice, topic_name)
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error
    assert topic_name not in AdminClient(alice).list_topics(timeout=10).topics
    with pytest.raises(Exception) as refused:
        create_acls(alice, [allow(topic_name, "User:alice", AclOperation.ALL)])
    assert "CLUSTER_AUTHORIZATION_FAILED" in str(refused.value), refused.value

    create_acls(admin, [allow(topic_name, "User:alice", AclOperation.WRITE),
                        allow(topic_name, "User:alice", AclOperation.READ),
                        allow("readers", "User:alice", AclOperation.READ, ResourceType.GROUP)])
    assert produce_error(alice, topic_name) is None
    listed = AdminClient(alice).list_topics(timeout=10).topics
    assert topic_name in listed and hidden not in listed
    # Adding partitions takes ALTER on the topic, which she has not; the admin has.
    alice_admin = AdminClient(alice)
    grown = alice_admin.create_partitions([NewPartitions(topic_name, 2)], request_timeout=15)
    with pytest.raises(KafkaException) as refused:
        grown[topic_name].result(timeout=30)
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused.value
    grown = admin_client.create_partitions([NewPartitions(topic_name, 2)], request_timeout=15)
    grown[topic_name].result(timeout=30)
    # So does changing its configs (ALTER_CONFIGS).
    change = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as refused:
        alice_admin.incremental_alter_configs([change], request_timeout=15)[change].result(30)
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused.value
    admin_client.incremental_alter_configs([change], request_timeout=15)[change].result(30)
    assert first_consumer_error(alice, topic_name, "readers") is None
    # Reading a group is not deleting it.
    deleted = alice_admin.delete_consumer_groups(["readers"], request_timeout=15)["readers"]
    with pytest.raises(KafkaException) as refused:
        deleted.result(timeout=30)
    assert refused.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED, refused.value
    error = first_consumer_error(alice, topic_name, "strangers")
    assert error is not None and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, error

    # A deny beats the allow.
    create_acls(admin, [allow(topic_name, "User:alice", AclOperation.READ,
                              permission=AclPermissionType.DENY)])
    error = first_consumer_error(alice, topic_name, "readers")
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error
    # An offset commit in a group she may read, for the topic she may not: the topic is what
    # is refused, not the group.
    committer = Consumer({**alice, "group.id": "readers"})
    try:
        with pytest.raises(KafkaException) as commit:
            committer.commit(offsets=[TopicPartition(topic_name, 0, 1)], asynchronous=False)
        assert commit.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, commit.value
    finally:
        committer.close()

    # DescribeTopicPartitions: a topic she may not describe is refused, by name or left out.
    alice_kp = KafkaAdminClient(request_timeout_ms=15_000,
                                **kafka_python(broker.bootstrap, "alice", "alice-secret"))
    try:
        named = alice_kp.describe_topic_partitions([topic_name, hidden])["topics"]
        every = alice_kp.describe_topic_partitions([])["topics"]
    finally:
        alice_kp.close()
    assert {t["name"]: t["error_code"] for t in named} == {topic_name: 0, hidden: 29}, named
    assert topic_name in {t["name"] for t in every} and hidden not in {t["name"] for t in every}

    # kafka-python's admin client sees the same bindings; deleting them closes the topic again.
    kp_admin = KafkaAdminClient(request_timeout_ms=15_000,
                                **kafka_python(broker.bootstrap, "admin", "admin-secret"))
    acls, error = kp_admin.describe_acls(KpAclFilter(
        principal="User:alice", host=None, operation=KpAclOperation.ANY,
        permission_type=KpAclPermissionType.ANY,
        resource_pattern=KpResourcePatternFilter(KpResourceType.TOPIC, topic_name,
                                                 KpPatternType.ANY)))
    kp_admin.close()
    assert {(a.operation.name, a.permission_type.name) for a in acls} == {
        ("WRITE", "ALLOW"), ("READ", "ALLOW"), ("READ", "DENY")}, acls
    deleted = admin_client.delete_acls(
        [AclBindingFilter(ResourceType.TOPIC, topic_name, ResourcePatternType.ANY, "User:alice",
                          None, AclOperation.ANY, AclPermissionType.ANY)], request_timeout=15)
    assert len(list(deleted.values())[0].result(timeout=30)) == 3
    error = produce_error(alice, topic_name)
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error


@pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")
def test_an_acl_added_through_one_node_is_enforced_on_all_three(multi_backend, tmp_path,
                                                                 topic_name):
    cluster = Cluster(multi_backend, tmp_path, env=ACL_ENV)
    try:
        cluster.start()
        create_user(cluster.secret_file, cluster.bootstrap(1), "admin", "admin-secret")
        create_user(cluster.secret_file, cluster.bootstrap(1), "alice", "alice-secret")
        admin = confluent(cluster.bootstrap(1), "admin", "admin-secret")
        wait_for(lambda: authenticates(admin), 30, "node 1 to accept admin")
        # Three partitions of one replica each: one led by every node.
        admin_client = AdminClient(admin)
        admin_client.create_topics(
            [NewTopic(topic_name, num_partitions=3, replication_factor=1)],
            request_timeout=15)[topic_name].result(timeout=30)
        created = user_command(cluster.secret_file, cluster.bootstrap(1), "create",
                               "--principal", "User:alice", "--operation", "write",
                               "--topic", topic_name, command="acl")
        assert created.returncode == 0, created.stderr
        alice = confluent(cluster.bootstrap(3), "alice", "alice-secret")
        # The credential and the ACL reach each leader through the metadata backend; no client
        # API says when, so poll.
        for partition in range(3):
            wait_for(lambda p=partition: produce_error(alice, topic_name, p) is None, 60,
                     f"partition {partition}'s leader to let alice write")
        create_acls(admin, [allow(topic_name, "User:alice", AclOperation.WRITE,
                                  permission=AclPermissionType.DENY)])
        for partition in range(3):
            wait_for(lambda p=partition: produce_error(alice, topic_name, p) is not None, 60,
                     f"partition {partition}'s leader to refuse alice")
            error = produce_error(alice, topic_name, partition)
            assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error
        listed = user_command(cluster.secret_file, cluster.bootstrap(2), "list",
                              "--principal", "User:alice", command="acl")
        assert listed.returncode == 0, listed.stderr
        assert sorted(listed.stdout.splitlines()) == [
            f"ALLOW User:alice WRITE on topic {topic_name} from host *",
            f"DENY User:alice WRITE on topic {topic_name} from host *"], listed.stdout
    finally:
        cluster.close()
