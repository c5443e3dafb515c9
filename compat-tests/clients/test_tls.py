"""TLS listeners: SASL_SSL with SCRAM, and SSL with client certificates (mTLS) whose subject
is the principal ACLs name; on one node of every backend and on three SASL_SSL nodes of every
multi-node backend. Certificates are made here (trustme); nothing leaves the machine.
"""

from __future__ import annotations

import pytest
import trustme
from confluent_kafka import KafkaError
from confluent_kafka.admin import AclOperation, AdminClient, NewTopic
from cryptography import x509
from kafka import KafkaConsumer, KafkaProducer

from client_util import CONFLUENT_BASE
from conftest import MULTI_NODE, Cluster
from test_sasl import (accepted_everywhere_then_rf3_written, allow, authenticates, confluent,
                       create_acls, create_user, kafka_python, produce_and_consume_in_a_group,
                       produce_error, secured_broker, user_command)


class Certificates:
    """A CA, one broker certificate for 127.0.0.1 and client certificates, as PEM files."""

    def __init__(self, directory):
        self.ca = trustme.CA()
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        broker = self.ca.issue_cert("127.0.0.1", "localhost", common_name="broker")
        self.broker_cert = directory / "broker.pem"
        self.broker_key = directory / "broker.key"
        broker.cert_chain_pems[0].write_to_path(str(self.broker_cert))
        broker.private_key_pem.write_to_path(str(self.broker_key))
        self.directory = directory

    def client(self, name: str) -> tuple[str, str, str]:
        """A client certificate for `name`: its files and the principal Kafka names it by."""
        issued = self.ca.issue_cert(f"{name}.clients.example", common_name=name)
        cert, key = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        subject = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes()).subject
        return str(cert), str(key), f"User:{subject.rfc4514_string()}"

    def cluster_tls_env(self) -> dict:
        """Cluster TLS between the nodes: the broker certificate names 127.0.0.1, every
        node's cluster address."""
        return {"SWITCHYARD_CLUSTER_TLS_CERTIFICATE": str(self.broker_cert),
                "SWITCHYARD_CLUSTER_TLS_KEY": str(self.broker_key),
                "SWITCHYARD_CLUSTER_TLS_CA": str(self.ca_file)}

    def listener_env(self, protocol: str, client_auth: str = "none") -> dict:
        return {"SWITCHYARD_KAFKA__SECURITY_PROTOCOL": protocol,
                "SWITCHYARD_KAFKA__SSL_CERTIFICATE_LOCATION": str(self.broker_cert),
                "SWITCHYARD_KAFKA__SSL_KEY_LOCATION": str(self.broker_key),
                "SWITCHYARD_KAFKA__SSL_TRUSTSTORE_LOCATION": str(self.ca_file),
                "SWITCHYARD_KAFKA__SSL_CLIENT_AUTH": client_auth}


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("certificates"))


def sasl_ssl(certs: Certificates, bootstrap: str, user: str, password: str) -> dict:
    return {**confluent(bootstrap, user, password), "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(certs.ca_file)}


def test_sasl_ssl_clients_produce_and_consume(backend, certificates, tmp_path, topic_name):
    env = {**certificates.listener_env("SASL_SSL"),
           "SWITCHYARD_KAFKA__SASL_ENABLED_MECHANISMS": '["SCRAM-SHA-512"]'}
    # The user command speaks TLS too: it is told the CA.
    broker_and_secret = secured_broker(backend, tmp_path, env, {})
    broker, secret = next(broker_and_secret)
    try:
        create_user(secret, broker.bootstrap, "alice", "alice-secret",
                    extra=["--ssl-truststore-location", str(certificates.ca_file)])
        conf = sasl_ssl(certificates, broker.bootstrap, "alice", "alice-secret")
        values = produce_and_consume_in_a_group(conf, topic_name)
        assert len(values) == 20

        kp = {**kafka_python(broker.bootstrap, "alice", "alice-secret"),
              "security_protocol": "SASL_SSL", "ssl_cafile": str(certificates.ca_file),
              "ssl_check_hostname": True}
        producer = KafkaProducer(**kp)
        producer.send(topic_name, b"kafka-python over TLS").get(timeout=30)
        producer.close()
        consumer = KafkaConsumer(topic_name, auto_offset_reset="earliest",
                                 consumer_timeout_ms=10_000, **kp)
        assert b"kafka-python over TLS" in [m.value for m in consumer]
        consumer.close()

        # A client that does not speak TLS gets nothing.
        plaintext = AdminClient({**confluent(broker.bootstrap, "alice", "alice-secret"),
                                 "security.protocol": "SASL_PLAINTEXT"})
        with pytest.raises(Exception):
            plaintext.list_topics(timeout=2)
    finally:
        broker_and_secret.close()


def test_client_certificates_name_the_principal_acls_are_checked_against(
        backend, certificates, tmp_path, topic_name):
    admin_cert, admin_key, admin_principal = certificates.client("admin")
    alice_cert, alice_key, alice_principal = certificates.client("alice")
    env = {**certificates.listener_env("SSL", client_auth="required"),
           "SWITCHYARD_KAFKA__AUTHORIZER_ENABLED": "true",
           "SWITCHYARD_KAFKA__SUPER_USERS": f'["{admin_principal}"]'}
    broker_and_secret = secured_broker(backend, tmp_path, env, {})
    broker, secret = next(broker_and_secret)

    def mtls(cert: str, key: str) -> dict:
        return {"bootstrap.servers": broker.bootstrap, "security.protocol": "SSL",
                "ssl.ca.location": str(certificates.ca_file),
                "ssl.certificate.location": cert, "ssl.key.location": key, **CONFLUENT_BASE}

    try:
        admin, alice = mtls(admin_cert, admin_key), mtls(alice_cert, alice_key)
        admin_client = AdminClient(admin)
        admin_client.create_topics([NewTopic(topic_name, num_partitions=1, replication_factor=1)],
                                   request_timeout=15)[topic_name].result(timeout=30)
        error = produce_error(alice, topic_name)
        assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error
        create_acls(admin, [allow(topic_name, alice_principal, AclOperation.WRITE)])
        assert produce_error(alice, topic_name) is None

        # Without a certificate the handshake fails: no metadata, nothing produced.
        anonymous = {k: v for k, v in alice.items() if not k.startswith("ssl.certificate")
                     and not k.startswith("ssl.key")}
        assert not authenticates(anonymous)

        # The CLI presents a super user's certificate; without one it cannot connect.
        tls = ["--ssl-truststore-location", str(certificates.ca_file)]
        listed = user_command(secret, broker.bootstrap, "list", *tls,
                              "--ssl-certificate-location", admin_cert,
                              "--ssl-key-location", admin_key, command="acl")
        assert listed.returncode == 0, listed.stderr
        assert alice_principal in listed.stdout, listed.stdout
        refused = user_command(secret, broker.bootstrap, "list", *tls, command="acl")
        assert refused.returncode != 0, refused.stdout
    finally:
        broker_and_secret.close()


@pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")
def test_three_sasl_ssl_nodes_replicate_over_tls(multi_backend, certificates, tmp_path,
                                                 topic_name):
    """SASL_SSL listeners, and cluster TLS between the nodes' metadata backends."""
    cluster = Cluster(multi_backend, tmp_path, env={
        **certificates.listener_env("SASL_SSL"),
        **certificates.cluster_tls_env(),
        "SWITCHYARD_KAFKA__SASL_ENABLED_MECHANISMS": '["SCRAM-SHA-512"]'})
    try:
        cluster.start()
        create_user(cluster.secret_file, cluster.bootstrap(1), "dave", "dave-secret",
                    extra=["--ssl-truststore-location", str(certificates.ca_file)])
        # acks=all on RF=3: every follower fetched over TLS, authenticated by the secret.
        accepted_everywhere_then_rf3_written(
            cluster, lambda bootstrap: sasl_ssl(certificates, bootstrap, "dave", "dave-secret"),
            topic_name)
    finally:
        cluster.close()
