"""memory: the memory limit a node sees (cgroup v2, v1, machine) and its default row cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamo_node.host.memory import (
    MEMORY_LIMIT_ENV,
    MIB,
    MIN_ROW_CACHE_BYTES,
    default_row_cache_bytes,
    memory_limit,
)

GIB = 1024 * MIB


def _root(
    tmp_path: Path, meminfo: str | None = None, v2: str | None = None, v1: str | None = None
) -> Path:
    files = {
        "proc/meminfo": meminfo,
        "sys/fs/cgroup/memory.max": v2,
        "sys/fs/cgroup/memory/memory.limit_in_bytes": v1,
    }
    for name, text in files.items():
        if text is not None:
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return tmp_path


MEMINFO = "MemTotal:       24683780 kB\nMemFree:        22950000 kB\n"


def test_machine_memory_without_a_cgroup_limit(tmp_path: Path) -> None:
    assert memory_limit(_root(tmp_path, MEMINFO)) == 24683780 * 1024
    assert memory_limit(_root(tmp_path, MEMINFO, v2="max\n")) == 24683780 * 1024


def test_a_cgroup_limit_below_the_machine_wins(tmp_path: Path) -> None:
    assert memory_limit(_root(tmp_path, MEMINFO, v2=f"{4 * GIB}\n")) == 4 * GIB


def test_cgroup_v1_limit_and_its_unlimited_value(tmp_path: Path) -> None:
    assert memory_limit(_root(tmp_path, MEMINFO, v1=f"{2 * GIB}\n")) == 2 * GIB
    # v1 says "unlimited" with a huge number: the machine's memory is the limit then
    unlimited = str(0x7FFFFFFFFFFFF000)
    assert memory_limit(_root(tmp_path, MEMINFO, v1=unlimited)) == 24683780 * 1024


def test_unreadable_or_garbled_files_mean_no_limit(tmp_path: Path) -> None:
    assert memory_limit(tmp_path) is None
    assert memory_limit(_root(tmp_path, "MemFree: 1 kB\n", v2="lots")) is None


def test_default_row_cache_is_an_eighth_split_between_nodes() -> None:
    assert default_row_cache_bytes(8 * GIB) == GIB
    assert default_row_cache_bytes(24 * GIB, sharing=3) == GIB
    assert default_row_cache_bytes(256 * MIB) == 32 * MIB
    assert default_row_cache_bytes(64 * MIB) == MIN_ROW_CACHE_BYTES  # the floor
    assert default_row_cache_bytes(None) == MIN_ROW_CACHE_BYTES
    with pytest.raises(ValueError, match="sharing"):
        default_row_cache_bytes(GIB, sharing=0)


def test_this_machine_has_a_readable_limit() -> None:
    limit = memory_limit()
    assert limit is not None and limit > 64 * MIB


def test_the_downward_api_value_comes_first(tmp_path: Path) -> None:
    root = _root(tmp_path, MEMINFO, v2="max\n")  # a pod without a cgroup limit seen
    assert memory_limit(root, {MEMORY_LIMIT_ENV: str(GIB)}) == GIB
    assert memory_limit(root, {MEMORY_LIMIT_ENV: f" {GIB}\n"}) == GIB
    assert memory_limit(root, {MEMORY_LIMIT_ENV: ""}) == 24683780 * 1024  # unset: as before


@pytest.mark.parametrize("text", ["1Gi", "-5", "0", "1.5e9", "lots"])
def test_a_garbled_downward_api_value_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValueError, match=MEMORY_LIMIT_ENV):
        memory_limit(_root(tmp_path, MEMINFO), {MEMORY_LIMIT_ENV: text})
