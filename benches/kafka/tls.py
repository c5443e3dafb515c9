#!/usr/bin/env python3
"""TLS against plaintext on the Kafka listener, in the same run, with librdkafka.

Starts two `switchyard serve` processes from the same binary on one machine — one with a
PLAINTEXT listener, one with an SSL listener (certificates made here with trustme) — and
measures, alternating between them round by round, produce throughput (1 KiB messages,
acks=1 and acks=all) and consume throughput with confluent-kafka. Prints a Markdown table
with the median of the rounds and TLS as a share of plaintext.

Usage:
  benches/kafka/tls.py --bin target/release/switchyard [--backend wal] [--messages 100000] [--rounds 3]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile

import trustme
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import consume, free_port, produce, start_broker, stop_broker  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--backend", default="wal")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="switchyard-tls-bench-")
    ca = trustme.CA()
    ca_file = os.path.join(work, "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = os.path.join(work, "broker.pem"), os.path.join(work, "broker.key")
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    secret = os.path.join(work, "cluster.secret")
    with open(secret, "w") as f:
        f.write(os.urandom(32).hex() + "\n")
    os.chmod(secret, 0o600)
    tls_env = {"SWITCHYARD_KAFKA__SECURITY_PROTOCOL": "SSL",
               "SWITCHYARD_KAFKA__SSL_CERTIFICATE_LOCATION": cert_file,
               "SWITCHYARD_KAFKA__SSL_KEY_LOCATION": key_file,
               "SWITCHYARD_KAFKA__SSL_TRUSTSTORE_LOCATION": ca_file,
               "SWITCHYARD_CLUSTER_SECRET_FILE": secret}
    listeners = {}
    brokers = []
    try:
        for name, env, client in (("plaintext", {}, {}),
                                  ("TLS", tls_env, {"security.protocol": "SSL",
                                                    "ssl.ca.location": ca_file})):
            port = free_port()
            brokers.append(start_broker(args.bin, args.backend, os.path.join(work, name), port, env))
            conf = {"bootstrap.servers": f"127.0.0.1:{port}", **client}
            admin = AdminClient(conf)
            topics = [NewTopic(f"bench-{acks}-{r}", 3, 1)
                      for acks in ("acks1", "acksall") for r in range(args.rounds)]
            for future in admin.create_topics(topics).values():
                future.result()
            listeners[name] = conf
        results = {(name, what): [] for name in listeners
                   for what in ("acks=1", "acks=all", "consume")}
        for r in range(args.rounds):
            for name, conf in listeners.items():
                for acks, label in (("1", "acks=1"), ("all", "acks=all")):
                    t = produce(conf, f"bench-acks{'1' if acks == '1' else 'all'}-{r}",
                                args.messages, acks)
                    results[(name, label)].append(args.messages / t)
                t = consume(conf, f"bench-acks1-{r}", args.messages)
                results[(name, "consume")].append(args.messages / t)
        print(f"backend `{args.backend}`, one node, loopback, {os.cpu_count()} CPUs, "
              f"{args.messages:,} × 1 KiB per round, median of {args.rounds} rounds\n")
        print("| measurement | plaintext msg/s | TLS msg/s | TLS / plaintext |")
        print("|---|---|---|---|")
        for what in ("acks=1", "acks=all", "consume"):
            plain = statistics.median(results[("plaintext", what)])
            tls = statistics.median(results[("TLS", what)])
            label = f"produce, {what}" if what != "consume" else "consume"
            print(f"| {label} | {plain:,.0f} | {tls:,.0f} | {tls / plain:.0%} |")
    finally:
        for broker in brokers:
            stop_broker(broker)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
