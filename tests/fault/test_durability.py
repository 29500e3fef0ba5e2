"""Durability: kill -9 of every node in the middle of write bursts, restart, and check
that no acknowledged write is lost (issue 7, Deliver 3; tests/fault/durability.py says
what `wal` can lose on a machine crash and why that is not measurable here).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fault import durability

pytestmark = [pytest.mark.cluster]


def assert_durable(result: durability.DurabilityResult) -> None:
    v = result.verdict
    print(result.summary())
    assert v.writes_acked > 0, result.summary()
    assert v.lost == 0, f"acknowledged writes lost after kill -9: {v.lost_examples}"
    assert v.undocumented == 0, v.undocumented_examples
    assert v.converge_s is not None, v.diverged_examples
    assert result.verdict.ok, result.summary()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["sync", "wal"])
def test_single_node_keeps_every_acknowledged_write_through_kill9(
    mode: str, tmp_path: Path
) -> None:
    """N=R=W=1: the only copy is on the killed node, so only its own disk can keep it."""
    assert_durable(durability.run(tmp_path, mode, nodes=1, rounds=2))


@pytest.mark.timeout(150)
def test_cluster_keeps_every_acknowledged_write_when_every_node_is_killed(
    tmp_path: Path,
) -> None:
    assert_durable(durability.run(tmp_path, "sync", nodes=3, rounds=2))


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["sync", "wal"])
def test_long_cluster_kill9_rounds(mode: str, tmp_path: Path, fault_long: bool) -> None:
    if not fault_long:
        pytest.skip("long fault scenarios run with --fault-long or DYNAMO_FAULT_LONG=1")
    assert_durable(durability.run(tmp_path, mode, nodes=3, rounds=8))
