"""How much memory this node may use, and the default size of its row cache.

A node sizes its row cache from the memory it is given, as a database does (Scylla takes
the container's memory, the JVM's `MaxRAMPercentage` a share of it). In this order:
1. `DYNAMO_MEMORY_LIMIT_BYTES`, which the operator fills from the pod's own
   `resources.limits.memory` (or, without a limit, `requests.memory`) through the
   downward API: what Kubernetes promised the container, whatever the host has;
2. the cgroup limit, when there is one;
3. the machine's memory (a process outside any container: `dynamoctl local`).
A cache sized from memory lets a data set that fits in memory be served from memory; a
fixed small cache turned a 100k-key YCSB load into RocksDB lookups on every write
(bench/README.md).

The share is deliberately modest (1/8): the rest is Python, RocksDB's memtables and block
cache, and the page cache. Nodes that share one machine (`dynamoctl local`) split it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

MIB = 1024 * 1024
#: the memory the orchestrator gives this node, in bytes (the downward API's
#: `resourceFieldRef` with divisor 1)
MEMORY_LIMIT_ENV = "DYNAMO_MEMORY_LIMIT_BYTES"
#: the row cache takes 1/ROW_CACHE_SHARE of the memory limit by default
ROW_CACHE_SHARE = 8
#: a floor, so a node with a tiny limit still caches its hottest keys
MIN_ROW_CACHE_BYTES = 16 * MIB

_CGROUP_FILES = (
    "sys/fs/cgroup/memory.max",  # cgroup v2
    "sys/fs/cgroup/memory/memory.limit_in_bytes",  # cgroup v1
)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _mem_total(root: Path) -> int | None:
    text = _read(root / "proc/meminfo")
    if text is None:
        return None
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == "MemTotal":
            parts = rest.split()
            if parts and parts[0].isdigit():
                unit = parts[1].lower() if len(parts) > 1 else "b"
                return int(parts[0]) * (1024 if unit == "kb" else 1)
    return None


def declared_limit(environ: Mapping[str, str]) -> int | None:
    """`DYNAMO_MEMORY_LIMIT_BYTES` as a positive integer, None when unset or empty.
    Anything else is a ValueError (a typo must not silently size the cache from the
    host)."""
    text = environ.get(MEMORY_LIMIT_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"{MEMORY_LIMIT_ENV} must be a positive number of bytes, got {text!r}")
    return int(text)


def memory_limit(root: Path = Path("/"), environ: Mapping[str, str] | None = None) -> int | None:
    """The memory this process may use: `DYNAMO_MEMORY_LIMIT_BYTES` when set, else the
    smallest of its cgroup limit (v2 or v1; "max" and v1's huge "unlimited" value are
    no limit) and the machine's total memory. None if nothing can be read."""
    declared = declared_limit(os.environ if environ is None else environ)
    if declared is not None:
        return declared
    limits: list[int] = []
    for name in _CGROUP_FILES:
        text = _read(root / name)
        if text is not None and text.isdigit() and int(text) > 0:
            limits.append(int(text))
    total = _mem_total(root)
    if total is not None:
        limits.append(total)
    return min(limits) if limits else None


def default_row_cache_bytes(limit: int | None, sharing: int = 1) -> int:
    """The row cache a node gets when none is configured: 1/8 of `limit`, split between
    `sharing` nodes on the same machine, never below MIN_ROW_CACHE_BYTES (which is also
    the answer when the limit is unknown)."""
    if sharing < 1:
        raise ValueError(f"sharing must be >= 1, got {sharing}")
    if limit is None:
        return MIN_ROW_CACHE_BYTES
    return max(MIN_ROW_CACHE_BYTES, limit // ROW_CACHE_SHARE // sharing)
