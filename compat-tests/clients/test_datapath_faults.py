"""Seeded fault runs of the Kafka data path on real broker processes (`datapath.py`):
idempotent producers, a committing consumer group, faults on every link and process, then the
checkers. CI runs one schedule per backend; `scripts/soak-datapath` runs many.

Seeds: 1 (three nodes) for every backend and 1003 (five nodes) for hybrid, or the one in
`SWITCHYARD_CONFORMANCE_SEED`; a failure prints its schedule and the
operations that break each check, and `SWITCHYARD_CONFORMANCE_SEED=N
compat-tests/clients/run.sh -k datapath` replays its schedule (the clients' timing still
varies).
"""

from __future__ import annotations

import os

import pytest

from conftest import MULTI_NODE, switchyard_bin
from datapath import nodes_for, run_schedule

REPLAY = os.environ.get("SWITCHYARD_CONFORMANCE_SEED")
SEEDS = [int(REPLAY)] if REPLAY else [1]


pytestmark = pytest.mark.skipif(not MULTI_NODE, reason="no multi-node backend compiled in")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("backend", MULTI_NODE, ids=[b.name for b in MULTI_NODE])
def test_data_path_holds_under_a_seeded_schedule(backend, seed, tmp_path):
    result = run_schedule(backend, tmp_path, seed)
    print(result.report())
    assert not result.violations, result.report()


@pytest.mark.skipif(bool(REPLAY), reason="replaying one seed")
def test_five_nodes_hold_under_seed_1003(tmp_path):
    """Five nodes, a minority split among the faults. This seed found offset commits going
    back (1 run in 4 on hybrid): a group coordinator cut off from the metadata leader kept a
    commit pending while the client committed newer offsets through the next coordinator,
    and applied it once healed. Commits are now fenced by their coordinator."""
    assert nodes_for(1003) == 5
    backend = next((b for b in MULTI_NODE if b.name == "hybrid"), MULTI_NODE[0])
    result = run_schedule(backend, tmp_path, 1003)
    print(result.report())
    assert not result.violations, result.report()


def test_a_broker_acknowledging_before_the_isr_has_the_write_is_caught(tmp_path, monkeypatch):
    """The broken variant: brokers that answer acks=all once the leader has the batch (a
    `conformance` build with `SWITCHYARD_FLAW=acks-before-isr`, which `scripts/test` builds
    as `switchyard-conformance`). An isolated leader, still reached by the clients, then
    acknowledges appends the new leader never had: the checkers must find them lost."""
    flawed = switchyard_bin().parent / "switchyard-conformance"
    assert flawed.is_file(), (
        f"{flawed} not found: build it with `cargo build --workspace --all-targets --features "
        "switchyard/conformance` and copy target/debug/switchyard there (scripts/test does)")
    monkeypatch.setenv("SWITCHYARD_BIN", str(flawed))
    result = run_schedule(MULTI_NODE[0], tmp_path, 1, kinds=("isolate",), flaw="acks-before-isr")
    print(result.report())
    assert any(v.startswith(("lost:", "sequence:")) for v in result.violations), result.report()
