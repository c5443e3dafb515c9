#!/usr/bin/env python3
"""Kafka produce and consume through librdkafka, with the brokers' CPU per message read from
/proc, on one node and on three (replication factor 3).

The client is `rdkafka_bench.c` beside this file, compiled here against the system's
librdkafka (Debian's `librdkafka-dev`; `scripts/install-deps --bench` installs it): a plain
producer and consumer loop, so the broker, not the client, is what runs out first. Each round
starts a fresh cluster of `switchyard serve` processes, creates four topics of 3 partitions
(replication factor = nodes) with `switchyard topic create`, produces N × 1 KiB messages from
one producer to each of two (acks=1 to one, acks=all to the other), consumes the acks=all
topic's with one consumer group member, then produces the same bytes in 64 KiB values to the
other two (acks=1, acks=all): the durable-write phases, where the client's per-message cost is
out of the way. Every partition write is fsynced before it is acknowledged (the broker's
default, `flush.messages` = 1). Measured per phase, from the client's "started" line to its
end: messages/s, MB/s of values, the brokers' CPU time per message (user + system of every
broker process, from /proc/PID/stat) and the client's CPU time per message; after each produce
phase, the write floor: as many bytes written to a new file on the brokers' filesystem as 1 MiB
appends, each followed by fdatasync (see `write_floor`). The
consume phase starts at the first message: joining the group is not reading. With
`--baseline`, a second binary (the build before a change) runs the same rounds, alternating
with `--bin` round by round so both see the same drift; the report is the median of the rounds.

Usage:
  benches/kafka/clients.py --bin target/release/switchyard [--label TEXT]
      [--baseline OLD --baseline-label TEXT] [--backend wal] [--messages 500000] [--rounds 3]
      [--nodes 1,3] [--json OUT]
"""

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

READY_LINE = "broker registered"
START_DEADLINE_S = 60
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
VALUE_BYTES = 1024
# The durable-write phases: values this large take the client's per-message cost out of the
# way (on two cores it shares the CPUs with the broker), so what is measured is the broker's
# write path against the disk's durable write rate. The same bytes as the 1 KiB phases.
LARGE_VALUE_BYTES = 64 * 1024
PARTITIONS = 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """One `switchyard serve` process; its standard error is drained into a log file."""

    def __init__(self, binary, backend, work, node, port, peers, secret):
        self.data_dir = os.path.join(work, f"node-{node}")
        os.makedirs(self.data_dir)
        args = [binary, "serve", "--metadata-backend", backend, "--data-dir", self.data_dir,
                "--listen", f"127.0.0.1:{port}"]
        if peers:
            args += ["--node-id", str(node), "--peers", peers]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        env.update(RUST_LOG="warn,switchyard::broker=info", SWITCHYARD_CLUSTER_SECRET_FILE=secret)
        self.log = open(os.path.join(work, f"node-{node}.log"), "w")
        self.proc = subprocess.Popen(args, cwd=work, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.PIPE, text=True)
        self.ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stderr:
            self.log.write(line)
            if READY_LINE in line:
                self.ready.set()

    def wait_ready(self, deadline):
        while not self.ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"broker not ready; see {self.log.name}")

    def cpu_seconds(self):
        """User + system CPU of the process so far (every thread)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Cluster:
    def __init__(self, binary, backend, nodes):
        self.binary = binary
        self.work = tempfile.mkdtemp(prefix="switchyard-clients-bench-")
        secret = os.path.join(self.work, "cluster.secret")
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        ports = {i: free_port() for i in range(1, nodes + 1)}
        peers = ",".join(f"{i}=127.0.0.1:{free_port()}" for i in ports) if nodes > 1 else None
        self.brokers = [Broker(binary, backend, self.work, i, p, peers, secret)
                        for i, p in ports.items()]
        self.bootstrap = ",".join(f"127.0.0.1:{p}" for p in ports.values())
        deadline = time.monotonic() + START_DEADLINE_S
        for broker in self.brokers:
            broker.wait_ready(deadline)

    def cpu_seconds(self):
        return sum(b.cpu_seconds() for b in self.brokers)

    def close(self):
        for broker in self.brokers:
            broker.stop()
        shutil.rmtree(self.work, ignore_errors=True)


def create_topics(cluster, replication, *topics):
    subprocess.run([cluster.binary, "topic", "create", *topics, "--partitions", str(PARTITIONS),
                    "--replicas", str(replication), "--bootstrap", cluster.bootstrap,
                    "--cluster-secret-file", os.path.join(cluster.work, "cluster.secret")],
                   check=True, stdout=subprocess.DEVNULL, timeout=120)


def compile_client(work):
    """Builds rdkafka_bench.c against the system's librdkafka (Debian's librdkafka-dev)."""
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rdkafka_bench.c")
    binary = os.path.join(work, "rdkafka_bench")
    subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", binary, source, "-lrdkafka"],
                   check=True)
    return binary


def run_client(client, cluster, value_bytes, *args):
    """Runs the C client; times and CPU from its "started" line to its exit."""
    proc = subprocess.Popen([client, *args], stdout=subprocess.PIPE, text=True)
    started = proc.stdout.readline()
    if started.strip() != "started":
        proc.kill()
        proc.wait()
        raise SystemExit(f"rdkafka_bench {args[0]} did not start")
    broker_before = cluster.cpu_seconds()
    client_before = child_cpu(proc.pid)
    result = proc.stdout.readline().split()
    broker = cluster.cpu_seconds() - broker_before
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0 or len(result) != 2:
        raise SystemExit(f"rdkafka_bench {args[0]} failed (status {status})")
    client = usage.ru_utime + usage.ru_stime - client_before
    messages, seconds = int(result[0]), float(result[1])
    return {"seconds": seconds, "msgs_per_s": messages / seconds,
            "mb_per_s": messages * value_bytes / seconds / 1e6,
            "broker_cpu_us_per_msg": broker / messages * 1e6,
            "client_cpu_us_per_msg": client / messages * 1e6}


def write_floor(directory, nbytes):
    """The disk's durable sequential write rate for `nbytes` of new data, in MB/s: a new file in
    `directory` (the brokers' filesystem) written as 1 MiB appends, each followed by
    fdatasync, then deleted. Measured right after a produce phase, with as many bytes as it
    wrote: on a VM, writing into page-cache memory the guest has not touched before costs far
    more than rewriting a small file does (criterion's `floor/sequential_1m`), so the floor of a
    phase is the same volume of new data."""
    block = b"\xa5" * (1 << 20)
    path = os.path.join(directory, "write-floor")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        written = 0
        start = time.monotonic()
        while written < nbytes:
            written += os.write(fd, block)
            os.fdatasync(fd)
        seconds = time.monotonic() - start
    finally:
        os.close(fd)
        os.unlink(path)
    return written / seconds / 1e6


def child_cpu(pid):
    """User + system CPU of a running child process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def one_round(client, binary, backend, nodes, messages):
    cluster = Cluster(binary, backend, nodes)
    try:
        create_topics(cluster, nodes, "acks-1", "acks-all", "large-acks-1", "large-acks-all")
        phases = {}

        def produce(phase, topic, count, value_bytes, acks):
            m = run_client(client, cluster, value_bytes, "produce", cluster.bootstrap, topic,
                           str(count), str(value_bytes), acks)
            m["floor_mb_per_s"] = write_floor(cluster.work, count * value_bytes)
            phases[phase] = m

        for acks in ("1", "all"):
            produce(f"produce acks={acks}", f"acks-{acks}", messages, VALUE_BYTES, acks)
        phases["consume"] = run_client(client, cluster, VALUE_BYTES, "consume", cluster.bootstrap,
                                       "acks-all", str(messages))
        large = max(1, messages * VALUE_BYTES // LARGE_VALUE_BYTES)
        for acks in ("1", "all"):
            produce(f"produce acks={acks}, {LARGE_VALUE_BYTES // 1024} KiB values",
                    f"large-acks-{acks}", large, LARGE_VALUE_BYTES, acks)
        return phases
    finally:
        cluster.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--label", default="this build")
    parser.add_argument("--baseline")
    parser.add_argument("--baseline-label", default="baseline")
    parser.add_argument("--backend", default="wal")
    parser.add_argument("--messages", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nodes", default="1,3")
    parser.add_argument("--json")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="switchyard-rdkafka-")
    client = compile_client(work)
    builds = [("this build", args.bin)] + ([("baseline", args.baseline)] if args.baseline else [])
    labels = {"this build": args.label, "baseline": args.baseline_label}
    started = time.time()
    samples = {}
    for nodes in (int(n) for n in args.nodes.split(",")):
        for r in range(args.rounds):
            order = builds if r % 2 == 0 else list(reversed(builds))
            for name, binary in order:
                result = one_round(client, binary, args.backend, nodes, args.messages)
                for phase, m in result.items():
                    samples.setdefault((name, nodes, phase), []).append(m)
                    print(f"[{name}, {nodes} node(s), round {r + 1}] {phase}: "
                          f"{m['msgs_per_s']:,.0f} msg/s, broker CPU "
                          f"{m['broker_cpu_us_per_msg']:.2f} µs/msg", file=sys.stderr)
    rows = []
    for (name, nodes, phase), ms in samples.items():
        row = {"build": name, "nodes": nodes, "phase": phase, "rounds": len(ms)}
        for key in ms[0]:
            row[key] = statistics.median(m[key] for m in ms)
        rows.append(row)
    shutil.rmtree(work, ignore_errors=True)
    report = {"backend": args.backend, "messages": args.messages, "value_bytes": VALUE_BYTES,
              "large_value_bytes": LARGE_VALUE_BYTES,
              "partitions": PARTITIONS, "rounds": args.rounds,
              "client": "rdkafka_bench (benches/kafka/rdkafka_bench.c)",
              "librdkafka": librdkafka_version(), "started": started, "finished": time.time(),
              "builds": {name: labels[name] for name, _ in builds}, "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    print("| build | nodes | phase | msg/s | MB/s | write floor MB/s | broker CPU µs/msg | "
          "client CPU µs/msg |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        floor = f"{row['floor_mb_per_s']:,.1f}" if "floor_mb_per_s" in row else "-"
        print(f"| {row['build']} | {row['nodes']} | {row['phase']} | {row['msgs_per_s']:,.0f} | "
              f"{row['mb_per_s']:,.1f} | {floor} | {row['broker_cpu_us_per_msg']:.2f} | "
              f"{row['client_cpu_us_per_msg']:.2f} |")


def librdkafka_version():
    """The version of the librdkafka the client is linked with (from its package)."""
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "librdkafka-dev"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
