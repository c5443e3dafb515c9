"""Operating a broker: the admin HTTP listener (`--http-listen`) — `/health`, `/ready` and
`/metrics` — scraped by a real Prometheus server (Debian's `prometheus`, installed by
`scripts/install-deps`) and checked with its `promtool`; and the log formats.

Waits poll HTTP endpoints (readiness, Prometheus queries) with deadlines: neither reports a
change by callback.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

from client_util import confluent_admin, wait_for
from cluster_util import consume_all, metadata_leader, produce
from conftest import MULTI_NODE, ClusterFactory, reserve_port, switchyard_bin

# How long a readiness change or a Prometheus query may take to show: an election on a
# loaded CI machine, a few scrapes.
DEADLINE_S = 60.0
# Longest line a broker may log at INFO with the default filter.
MAX_LOG_LINE = 400

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def http_get(port: int, path: str) -> tuple[int, str, str]:
    """Status, content type and body of GET `path` on the admin listener at `port`."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def ready(port: int) -> tuple[int, dict]:
    status, content_type, body = http_get(port, "/ready")
    assert content_type == "application/json", content_type
    return status, json.loads(body)


def samples(text: str) -> list[tuple[str, dict, float]]:
    """The samples of a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = dict(LABEL.findall(m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def value(text: str, name: str, **labels) -> float | None:
    """The one sample of `name` whose labels include `labels`; None if there is none."""
    found = [v for n, l, v in samples(text)
             if n == name and all(l.get(k) == str(want) for k, want in labels.items())]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else None


def total(text: str, name: str, **labels) -> float:
    return sum(v for n, l, v in samples(text)
               if n == name and all(l.get(k) == str(want) for k, want in labels.items()))


def promtool_check(text: str) -> None:
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                             capture_output=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def metrics(port: int) -> str:
    status, content_type, body = http_get(port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    return body


def test_one_node_health_ready_and_metrics(backend, broker_factory):
    broker = broker_factory.start(http=True)
    port = broker.http_port
    status, content_type, body = http_get(port, "/health")
    assert (status, content_type, json.loads(body)) == (
        200, "application/json", {"status": "alive"})
    # The broker logged "broker registered" before start() returned: ready at once.
    status, body = ready(port)
    assert status == 200 and body["ready"], body
    assert body["backend"] == backend.name and body["node"] == "1"
    for check in ("metadata_backend", "broker_registered", "kafka_listeners"):
        assert body[check]["ok"], body
    assert http_get(port, "/nowhere")[0] == 404

    topic, group = f"ops-{uuid.uuid4().hex[:8]}", f"ops-g-{uuid.uuid4().hex[:8]}"
    produce(broker.bootstrap, topic, 25)
    assert len(consume_all(broker.bootstrap, topic, 25, group)) == 25

    # The coordinator answers the last member's LeaveGroup once the group is Empty; polled, as
    # a client's close need not wait for that answer and nothing else reports it.
    def group_empty():
        return value(metrics(port), "switchyard_group_state", group=group, state="Empty") == 1
    wait_for(group_empty, DEADLINE_S, f"{group} Empty in /metrics", 0.1)

    text = metrics(port)
    promtool_check(text)
    assert value(text, "switchyard_metadata_info", backend=backend.name, node=1) == 1
    assert value(text, "switchyard_metadata_role", role="leader") == 1
    assert value(text, "switchyard_metadata_ready") == 1
    assert total(text, "switchyard_kafka_requests_total", api="Produce") >= 1
    assert total(text, "switchyard_kafka_requests_total", api="Fetch") >= 1
    assert total(text, "switchyard_kafka_request_duration_seconds_count", api="Produce") >= 1
    assert total(text, "switchyard_kafka_received_bytes_total") > 0
    assert total(text, "switchyard_kafka_sent_bytes_total") > 0
    assert total(text, "switchyard_kafka_connections_accepted_total") >= 1
    assert value(text, "switchyard_partition_high_watermark", topic=topic, partition=0) == 25
    assert value(text, "switchyard_partition_log_end_offset", topic=topic, partition=0) == 25
    assert value(text, "switchyard_partition_log_start_offset", topic=topic, partition=0) == 0
    assert value(text, "switchyard_partition_size_bytes", topic=topic, partition=0) > 0
    assert value(text, "switchyard_partition_isr_size", topic=topic, partition=0) == 1
    assert value(text, "switchyard_leader_partitions") >= 1
    assert value(text, "switchyard_under_replicated_partitions") == 0
    assert value(text, "switchyard_offline_partitions") == 0
    assert value(text, "switchyard_group_committed_offset",
                 group=group, topic=topic, partition=0) == 25
    assert value(text, "switchyard_group_lag_messages", group=group, topic=topic, partition=0) == 0
    assert value(text, "switchyard_group_state", group=group, state="Empty") == 1
    # Every partition write is fsynced by default (flush.messages=1).
    assert value(text, "switchyard_log_fsync_duration_seconds_count") >= 1
    assert total(text, "switchyard_metadata_propose_duration_seconds_count", result="ok") >= 3
    assert value(text, "switchyard_metadata_proposals_in_flight") == 0
    committed, applied = (value(text, "switchyard_metadata_committed_index"),
                          value(text, "switchyard_metadata_applied_index"))
    assert committed >= 3 and applied >= 3
    if backend.name != "memory":
        # The durable backends write their log in groups; the memory backend has no log.
        assert value(text, "switchyard_metadata_group_commit_commands_count") >= 3


def test_json_logs(backend, broker_factory):
    broker = broker_factory.start(args=["--log-format", "json"])
    lines = [line for line in broker.log_text().splitlines()
             if line and not line.startswith("=====")]
    assert lines
    for line in lines:
        event = json.loads(line)
        assert {"timestamp", "level", "target", "fields"} <= event.keys(), event
        assert "message" in event["fields"], event
    assert any(json.loads(line)["fields"]["message"] == "broker registered" for line in lines)


def wait_ready(port: int, want: bool, what: str) -> dict:
    def check():
        status, body = ready(port)
        assert (status == 200) == body["ready"], (status, body)
        return body if body["ready"] == want else None
    return wait_for(check, DEADLINE_S, what, 0.1)


def test_ready_only_with_a_quorum(cluster_factory, multi_backend):
    cluster = cluster_factory.create(http=True)
    first = cluster.nodes[1]
    first.launch()
    # A lone node of three has no quorum: alive, never ready.
    wait_for(lambda: _health(first.http_port), DEADLINE_S, "node 1's admin listener", 0.1)
    status, body = ready(first.http_port)
    assert status == 503 and not body["ready"], body
    assert not body["broker_registered"]["ok"], body
    for node in list(cluster.nodes.values())[1:]:
        node.launch()
    for node in cluster.nodes.values():
        node.wait_ready()
    for i, node in cluster.nodes.items():
        body = wait_ready(node.http_port, True, f"node {i} ready")
        assert body["metadata_backend"]["ok"] and body["broker_registered"]["ok"], body


def _health(port: int) -> bool:
    try:
        return http_get(port, "/health")[0] == 200
    except OSError:
        return False


# Backends with automatic failover: a node cut off from its quorum notices. (A `wal` follower
# keeps its primary until an operator promotes another.)
AUTOMATIC = [b for b in MULTI_NODE if b.guarantees.get("failover") == "automatic"]


@pytest.mark.parametrize("victim", ["follower", "leader"])
@pytest.mark.parametrize("failover_backend", AUTOMATIC, ids=[b.name for b in AUTOMATIC])
def test_not_ready_when_cut_off_from_the_quorum(failover_backend, victim, tmp_path):
    factory = ClusterFactory(failover_backend, tmp_path)
    try:
        cut_off_and_back(factory.start(http=True), victim)
    finally:
        factory.close()


def cut_off_and_back(cluster, victim: str) -> None:
    leader = wait_for(lambda: metadata_leader(cluster.bootstrap()), DEADLINE_S,
                      "a metadata leader", 0.2)
    node = leader if victim == "leader" else next(i for i in cluster.nodes if i != leader)
    port = cluster.nodes[node].http_port
    wait_ready(port, True, f"node {node} ready")
    others = [n for i, n in cluster.nodes.items() if i != node]
    for other in others:
        other.pause()
    try:
        body = wait_ready(port, False, f"node {node} ({victim}) to see it lost its quorum")
        assert not body["metadata_backend"]["ok"], body
    finally:
        for other in others:
            other.resume()
    wait_ready(port, True, f"node {node} ready again")


def start_prometheus(workdir, targets: list[str]) -> tuple[subprocess.Popen, int]:
    port = reserve_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: switchyard\n    static_configs:\n"
        f"      - targets: [{', '.join(repr(t) for t in targets)}]\n")
    log = open(workdir / "prometheus.log", "w")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: proc.poll() is None and _prometheus_ready(port), DEADLINE_S,
                 "Prometheus to start", 0.2)
    except BaseException:
        proc.kill()
        raise
    return proc, port


def _prometheus_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as r:
        answer = json.load(r)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def check_dashboard(port: int) -> None:
    """Every query of the Grafana dashboard is valid PromQL to a real Prometheus, names only
    documented metrics, and most return data after a workload."""
    docs = Path(__file__).resolve().parents[2] / "docs"
    dashboard = json.loads((docs / "grafana" / "switchyard.json").read_text())
    documented = set(re.findall(r"^\| `(switchyard_[a-z_]+)` \|",
                                (docs / "OPERATIONS.md").read_text(), re.M))
    exprs = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = (target["expr"].replace("$__rate_interval", "15s")
                    .replace('=~"$instance"', '=~".*"'))
            for used in re.findall(r"switchyard_[a-z_]+", expr):
                base = re.sub(r"_(bucket|sum|count)$", "", used)
                assert base in documented, f"{panel['title']}: {used} is not documented"
            exprs.append(expr)

    def mostly_answered():
        answered = sum(1 for expr in exprs if query(port, expr))
        # Snapshots, rejected connections and errors may not happen in a short run; rates
        # answer once two scrapes are in their window.
        return answered >= 0.75 * len(exprs)
    wait_for(mostly_answered, DEADLINE_S, "the dashboard's queries to answer", 1.0)


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="scripts/install-deps installs it")
def test_prometheus_scrapes_a_three_node_cluster(cluster_factory, multi_backend, tmp_path):
    cluster = cluster_factory.start(http=True)
    targets = [f"127.0.0.1:{n.http_port}" for n in cluster.nodes.values()]
    prometheus, port = start_prometheus(tmp_path, targets)
    try:
        topic, group = f"ops-{uuid.uuid4().hex[:8]}", f"ops-g-{uuid.uuid4().hex[:8]}"
        admin = confluent_admin(cluster.bootstrap())
        created = admin.create_topics(
            [NewTopic(topic, num_partitions=3, replication_factor=3)], operation_timeout=30)
        created[topic].result(timeout=60)
        produce(cluster.bootstrap(), topic, 300)
        assert len(consume_all(cluster.bootstrap(), topic, 300, group)) == 300

        def up_everywhere():
            result = query(port, "up")
            return len(result) == 3 and all(r["value"][1] == "1" for r in result)
        wait_for(up_everywhere, DEADLINE_S, "up == 1 for every node", 0.5)

        def scraped(promql, check):
            def seen():
                result = query(port, promql)
                return result and check(float(result[0]["value"][1]))
            wait_for(seen, DEADLINE_S, f"{promql} in Prometheus", 0.5)

        scraped('sum(switchyard_kafka_requests_total{api="Produce"})', lambda v: v > 0)
        scraped("sum(switchyard_metadata_propose_duration_seconds_count)", lambda v: v > 0)
        scraped("sum(switchyard_log_fsync_duration_seconds_count)", lambda v: v > 0)
        scraped(f'sum(switchyard_partition_high_watermark{{topic="{topic}"}})',
                lambda v: v == 300 * 3)
        # One metadata leader, and it reports both followers' replication lag.
        scraped('sum(switchyard_metadata_role{role="leader"})', lambda v: v == 1)
        scraped("count(switchyard_metadata_follower_lag_entries)", lambda v: v == 2)
        scraped(f'sum(switchyard_partition_isr_size{{topic="{topic}"}})', lambda v: v == 9)
        scraped(f'sum(switchyard_group_committed_offset{{group="{group}"}})',
                lambda v: v == 300)
        for node in cluster.nodes.values():
            promtool_check(metrics(node.http_port))
        check_dashboard(port)
    finally:
        prometheus.terminate()
        prometheus.wait(30)
    # The default log filter keeps lines short: no dependency dumps its state at INFO.
    for i, node in cluster.nodes.items():
        for line in node.log_text().splitlines():
            if line.startswith("====="):  # the test harness's own markers
                continue
            assert len(line) <= MAX_LOG_LINE, f"node {i} logged {len(line)} chars: {line[:300]}"



@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd on this machine")
def test_the_systemd_unit_verifies(tmp_path):
    unit = (Path(__file__).resolve().parents[2] / "docs" / "deploy" / "switchyard.service")
    text = unit.read_text()
    assert "ExecStart=/usr/local/bin/switchyard serve" in text
    # The binary under test stands in for the installed one: verify checks it exists.
    local = tmp_path / "switchyard.service"
    local.write_text(text.replace("/usr/local/bin/switchyard", str(switchyard_bin())))
    verified = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True,
                              text=True, timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "switchyard.service" not in verified.stdout + verified.stderr, verified.stderr
