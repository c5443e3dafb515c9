"""`scripts/cluster`, the local three-node cluster of docs/OPERATIONS.md, and
`switchyard cluster status` against it: start, status, kill -9 (the broker shows fenced),
restart (live again), stop.

Runs once per backend that runs on several nodes. Waiting for a killed broker to show fenced
polls `cluster status`: nothing reports it by callback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from client_util import wait_for
from cluster_util import RECOVERY_S
from conftest import CLUSTER_ENV, MULTI_NODE, reserve_port, switchyard_bin

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cluster"

pytestmark = pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")


def port_block(size: int) -> int:
    """A base such that base+1..base+size are all free (the script numbers ports so)."""
    while True:
        base = reserve_port()
        free = True
        for n in range(1, size + 1):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", base + n))
                except OSError:
                    free = False
                    break
        if free:
            return base


@pytest.fixture(params=MULTI_NODE, ids=[b.name for b in MULTI_NODE])
def dev_cluster(request, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env.update(CLUSTER_ENV)
    env.update({
        "SWITCHYARD_BIN": str(switchyard_bin()),
        "SWITCHYARD_CLUSTER_DIR": str(tmp_path / "dev-cluster"),
        "SWITCHYARD_CLUSTER_KAFKA_BASE": str(port_block(3)),
        "SWITCHYARD_CLUSTER_PEER_BASE": str(port_block(3)),
        "SWITCHYARD_CLUSTER_HTTP_BASE": str(port_block(3)),
    })

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True,
                              timeout=120)

    run.backend = request.param.name
    run.http_base = int(env["SWITCHYARD_CLUSTER_HTTP_BASE"])
    try:
        yield run
    finally:
        stopped = run("stop")
        assert stopped.returncode == 0, stopped.stderr


def test_start_status_kill_restart_stop(dev_cluster):
    started = dev_cluster("start", dev_cluster.backend)
    assert started.returncode == 0, started.stderr + started.stdout
    for n in (1, 2, 3):
        assert f"node {n} ready" in started.stdout
        admin = f"http://127.0.0.1:{dev_cluster.http_base + n}"
        assert admin in started.stdout, started.stdout
        # Registered means ready, unless the metadata moved on since: then shortly after.
        wait_for(lambda: _ready(f"{admin}/ready"), RECOVERY_S, f"node {n} /ready", 0.2)

    status = dev_cluster("status")
    assert status.returncode == 0, status.stderr
    assert "metadata leader node" in status.stdout, status.stdout
    assert "fenced brokers: none" in status.stdout, status.stdout
    rows = [line.split() for line in status.stdout.splitlines() if line[:1].isdigit()]
    assert [r[0] for r in rows] == ["1", "2", "3"], status.stdout
    assert sum(r[1] == "leader" for r in rows) == 1, status.stdout
    assert all(r[5] == "live" for r in rows), status.stdout

    killed = dev_cluster("kill", "3")
    assert killed.returncode == 0, killed.stderr
    if dev_cluster.backend == "wal" and rows[2][1] == "leader":
        assert dev_cluster("promote", "1").returncode == 0

    def fenced():
        out = dev_cluster("status").stdout
        return "fenced brokers: 3" in out and out

    out = wait_for(fenced, RECOVERY_S, "broker 3 to show fenced", 0.5)
    assert "unreachable" in out, out

    restarted = dev_cluster("restart", "3")
    assert restarted.returncode == 0, restarted.stderr + restarted.stdout
    wait_for(lambda: "fenced brokers: none" in dev_cluster("status").stdout, RECOVERY_S,
             "broker 3 to be live again", 0.5)

    refused = dev_cluster("kill", "7")
    assert refused.returncode != 0 and "node must be one of 1..3" in refused.stderr


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)["ready"] is True
    except urllib.error.HTTPError as e:
        assert e.code == 503, e
        return False


def test_switch_moves_the_cluster_to_another_backend(dev_cluster):
    """`scripts/cluster switch`: stop, export every node, import into the other backend,
    start; the topic made before is there, and every node runs the new backend."""
    target = next(b.name for b in MULTI_NODE if b.name != dev_cluster.backend
                  and b.guarantees.get("durability") != "none")
    started = dev_cluster("start", dev_cluster.backend)
    assert started.returncode == 0, started.stderr + started.stdout
    bootstrap = ",".join(line.split()[4].rstrip(",") for line in started.stdout.splitlines()
                         if line.startswith("node ") and " ready: Kafka " in line)
    made = subprocess.run([str(switchyard_bin()), "topic", "create", "kept", "-p", "2",
                           "--bootstrap", bootstrap], capture_output=True, text=True,
                          timeout=60)
    assert made.returncode == 0, made.stderr

    switched = dev_cluster("switch", target)
    assert switched.returncode == 0, switched.stderr + switched.stdout
    assert f"switched from {dev_cluster.backend} to {target}" in switched.stdout
    status = dev_cluster("status")
    assert f"metadata backend {target}," in status.stdout, status.stdout
    listed = subprocess.run([str(switchyard_bin()), "topic", "list", "--format", "json",
                             "--bootstrap", bootstrap], capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert [t["partitions"] for t in json.loads(listed.stdout) if t["topic"] == "kept"] == [2]
