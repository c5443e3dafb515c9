#!/usr/bin/env python3
"""Kafka-protocol benchmarks against a real `switchyard serve` process.

Measures, on one node:
  * creating 1,000 topics through the admin API (one CreateTopics request of 1,000 topics);
  * produce throughput with confluent-kafka (librdkafka), 1 KiB messages, acks=1 and acks=all;
  * consume throughput of the same messages with a confluent-kafka consumer.

Prints a Markdown table. Usage:
  benches/kafka/throughput.py --bin target/release/switchyard [--backend wal] [--messages 200000]
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(binary, backend, data_dir, port, extra_env=None):
    env = dict(os.environ, RUST_LOG="warn,switchyard::broker=info", **(extra_env or {}))
    proc = subprocess.Popen(
        [binary, "serve", "--metadata-backend", backend, "--data-dir", data_dir,
         "--listen", f"127.0.0.1:{port}"],
        stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 30
    for line in proc.stderr:
        if "broker registered" in line:
            return proc
        if time.time() > deadline:
            break
    proc.kill()
    raise SystemExit("broker did not register within 30 s")


def create_topics(bootstrap, count):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [NewTopic(f"bench-topic-{i}", 1, 1) for i in range(count)]
    start = time.perf_counter()
    futures = admin.create_topics(topics, operation_timeout=60, request_timeout=120)
    for f in futures.values():
        f.result()
    return time.perf_counter() - start


def client_conf(client):
    """A client's settings: a bootstrap address, or the settings themselves (TLS, SASL)."""
    return {"bootstrap.servers": client} if isinstance(client, str) else dict(client)


def produce(client, topic, messages, acks):
    producer = Producer({**client_conf(client), "acks": acks, "linger.ms": 5,
                         "batch.size": 1 << 20, "queue.buffering.max.messages": 1_000_000})
    value = b"x" * 1024
    start = time.perf_counter()
    for i in range(messages):
        while True:
            try:
                producer.produce(topic, value=value, key=str(i % 64))
                break
            except BufferError:
                producer.poll(0.01)
    left = producer.flush(120)
    elapsed = time.perf_counter() - start
    if left:
        raise SystemExit(f"{left} messages not delivered")
    return elapsed


def consume(client, topic, messages):
    consumer = Consumer({**client_conf(client), "group.id": f"bench-{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "fetch.max.bytes": 64 << 20})
    consumer.subscribe([topic])
    seen = 0
    start = None
    deadline = time.time() + 300
    while seen < messages and time.time() < deadline:
        batch = consumer.consume(10_000, 1.0)
        for m in batch:
            if m.error():
                continue
            if start is None:
                start = time.perf_counter()
            seen += 1
    elapsed = time.perf_counter() - (start or time.perf_counter())
    consumer.close()
    if seen < messages:
        raise SystemExit(f"consumed {seen} of {messages}")
    return elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--backend", default="wal")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--topics", type=int, default=1000)
    args = parser.parse_args()
    data_dir = tempfile.mkdtemp(prefix="switchyard-bench-")
    port = free_port()
    broker = start_broker(args.bin, args.backend, data_dir, port)
    bootstrap = f"127.0.0.1:{port}"
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for f in admin.create_topics([NewTopic("bench-acks1", 3, 1), NewTopic("bench-acksall", 3, 1)]).values():
            f.result()
        rows = []
        t = create_topics(bootstrap, args.topics)
        rows.append((f"create {args.topics} topics (one CreateTopics request)", f"{t:.3f} s", f"{args.topics / t:,.0f} topics/s"))
        for acks, topic in (("1", "bench-acks1"), ("all", "bench-acksall")):
            t = produce(bootstrap, topic, args.messages, acks)
            rows.append((f"produce {args.messages:,} × 1 KiB, acks={acks}", f"{t:.2f} s",
                         f"{args.messages / t:,.0f} msg/s, {args.messages * 1024 / t / 2**20:,.1f} MiB/s"))
        t = consume(bootstrap, "bench-acks1", args.messages)
        rows.append((f"consume {args.messages:,} × 1 KiB", f"{t:.2f} s",
                     f"{args.messages / t:,.0f} msg/s, {args.messages * 1024 / t / 2**20:,.1f} MiB/s"))
        print(f"backend `{args.backend}`, one node, loopback, {os.cpu_count()} CPUs\n")
        print("| measurement | time | rate |")
        print("|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    finally:
        stop_broker(broker)
        shutil.rmtree(data_dir, ignore_errors=True)


def stop_broker(broker):
    """SIGTERM, and kill -9 if it has not exited 30 s later."""
    broker.send_signal(signal.SIGTERM)
    try:
        broker.wait(30)
    except subprocess.TimeoutExpired:
        broker.kill()


if __name__ == "__main__":
    sys.exit(main())
