"""A third, independent client family: KafkaJS (its own implementation of the protocol, not
librdkafka), pinned by compat-tests/kafkajs/package-lock.json and installed by run.sh. Each
scenario of compat-tests/kafkajs/scenarios.js runs against one node of every backend and three
nodes of every multi-node backend: admin basics, idempotent produce (gzip too) with group
consume, commit and resume, group admin, the day-2 admin APIs (CreatePartitions,
AlterConfigs, DescribeConfigs, DeleteRecords), and transactions (commit, abort, sendOffsets,
read_committed). Also a kcat smoke test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import MULTI_NODE

SCENARIOS = Path(__file__).resolve().parent.parent / "kafkajs" / "scenarios.js"
NODE_MODULES = Path(os.environ.get(
    "SWITCHYARD_KAFKAJS_MODULES",
    Path.home() / ".cache" / "switchyard-kafkajs" / "node_modules"))


def kafkajs(scenario: str, bootstrap: str, topic: str) -> dict:
    if not (NODE_MODULES / "kafkajs").is_dir():
        pytest.fail(f"KafkaJS is not installed in {NODE_MODULES}: run compat-tests/clients/run.sh")
    run = subprocess.run(["node", str(SCENARIOS), scenario, bootstrap, topic],
                         env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
                         capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, f"{scenario}: {run.stderr}"
    return json.loads(run.stdout)


def check_admin(result: dict, brokers: list[int]) -> None:
    assert result["created"] is True and result["again"] is False, result
    assert result["listed"] and not result["afterDelete"], result
    assert result["partitions"] == 3 and result["leaders"], result
    assert result["brokers"] == brokers, result
    assert result["controller"] in brokers and result["clusterId"], result


def check_produce_consume(result: dict) -> None:
    assert all(r["errorCode"] == 0 for r in result["produced"]), result
    expected = sorted([f"m-{i}" for i in range(10)] + [f"gz-{i}" for i in range(10)])
    assert result["first"] == expected, result
    assert result["committed"] == 20, result
    assert result["resumed"] == sorted(f"later-{i}" for i in range(5)), result


def check_group_admin(result: dict) -> None:
    # The consumer left the group when it disconnected.
    assert result["state"] == "Empty" and result["protocolType"] == "consumer", result
    assert result["listed"] and result["deleted"] == [0] and not result["listedAfter"], result


def check_day_two(result: dict) -> None:
    assert result["partitions"] == 3, result
    assert result["retention"] == "3600000", result
    assert result["before"] == ["0", "10"] and result["after"] == ["4", "10"], result


def check_transactions(result: dict) -> None:
    committed = [f"tc-{i}" for i in range(5)] + [f"tc2-{i}" for i in range(5)]
    assert result["read"] == sorted(committed), result
    assert result["offsets"] == [[0, "3"], [1, "-1"]], result


CHECKS = {
    "produce-consume": check_produce_consume,
    "group-admin": check_group_admin,
    "day-two": check_day_two,
    "transactions": check_transactions,
}


@pytest.mark.timeout(180)
def test_admin_basics(broker, topic_name):
    check_admin(kafkajs("admin", broker.bootstrap, topic_name), [1])


@pytest.mark.timeout(180)
@pytest.mark.parametrize("scenario", list(CHECKS))
def test_scenario_on_one_node(broker, topic_name, scenario):
    CHECKS[scenario](kafkajs(scenario, broker.bootstrap, topic_name))


@pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")
@pytest.mark.timeout(300)
def test_every_scenario_on_three_nodes(cluster, topic_name):
    check_admin(kafkajs("admin", cluster.bootstrap(), f"{topic_name}-admin"), [1, 2, 3])
    for scenario, check in CHECKS.items():
        check(kafkajs(scenario, cluster.bootstrap(), f"{topic_name}-{scenario}"))


@pytest.mark.timeout(120)
def test_kcat_lists_produces_and_consumes(broker, topic_name):
    kcat = shutil.which("kcat")
    assert kcat, "kcat is not installed: scripts/install-deps installs it"
    lines = [f"line-{i}" for i in range(5)]
    produced = subprocess.run([kcat, "-b", broker.bootstrap, "-P", "-t", topic_name],
                              input="\n".join(lines) + "\n", capture_output=True, text=True,
                              timeout=60)
    assert produced.returncode == 0, produced.stderr
    listed = subprocess.run([kcat, "-b", broker.bootstrap, "-L", "-t", topic_name],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and f'topic "{topic_name}"' in listed.stdout, listed
    consumed = subprocess.run([kcat, "-b", broker.bootstrap, "-C", "-t", topic_name,
                               "-o", "beginning", "-e", "-q"],
                              capture_output=True, text=True, timeout=60)
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.split() == lines
