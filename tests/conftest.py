"""Shared fixtures: a temporary cluster of real processes, cleaned up by PID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Cluster, cluster


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fault-long",
        action="store_true",
        default=False,
        help="run the long fault-injection scenarios (5 nodes, minutes; marked slow)",
    )


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Cluster]:
    with cluster(tmp_path) as c:
        yield c
