"""antientropy.jobs: the scheduler loop of the periodic runs."""

from __future__ import annotations

import pytest

from tests.node.cluster.test_coordinator import make_cluster

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(("interval", "periodic"), [(0.0, False), (3600.0, True)])
async def test_periodic_rounds_only_with_a_positive_interval(
    interval: float, periodic: bool
) -> None:
    # interval 0 once ran the loop as asyncio.sleep(0) forever: a node spinning its core
    _, (node,) = await make_cluster(1, anti_entropy_interval_s=interval)
    try:
        assert (node.anti_entropy.runner._task is not None) is periodic
    finally:
        await node.stop()
