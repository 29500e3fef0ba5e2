"""Fault-suite options: `--fault-long` (or DYNAMO_FAULT_LONG=1) runs the long scenarios;
DYNAMO_FAULT_REQUIRE_NETNS=1 turns a missing-namespaces skip into a failure (for CI,
which runs as root and must never silently lose the partition tests).

`--fault-long` is known when pytest is given this directory (`pytest tests/fault
--fault-long`); the environment variable works from anywhere.
"""

from __future__ import annotations

import contextlib
import functools
import os

import pytest

from tests.fault.netns import probe


def pytest_addoption(parser: pytest.Parser) -> None:
    # tolerated when a conftest higher up declares it too (so `pytest --fault-long`
    # works from the repository root)
    with contextlib.suppress(ValueError):
        parser.addoption(
            "--fault-long",
            action="store_true",
            default=False,
            help="run the long fault-injection scenarios (5 nodes, minutes; marked slow)",
        )


@pytest.fixture(scope="session")
def fault_long(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--fault-long", default=False)) or (
        os.environ.get("DYNAMO_FAULT_LONG") == "1"
    )


@functools.cache
def _netns_problem() -> str | None:
    return probe()


@pytest.fixture
def require_netns() -> None:
    """Skip (loudly, with the reason) when network namespaces cannot be used here;
    fail instead when DYNAMO_FAULT_REQUIRE_NETNS=1."""
    problem = _netns_problem()
    if problem is None:
        return
    message = f"PARTITION TESTS NOT RUN: network namespaces unavailable: {problem}"
    if os.environ.get("DYNAMO_FAULT_REQUIRE_NETNS") == "1":
        pytest.fail(message)
    pytest.skip(message)
