"""File descriptors, budgeted so that client connections can never starve storage.

RocksDB needs descriptors for its tables, a new write-ahead log, flushes and compactions;
when one cannot be opened ("Too many open files") the write fails and the storage is
marked failed. So at start the node raises its soft RLIMIT_NOFILE to the hard limit and
splits what it has: RocksDB keeps at most `rocksdb` tables open (it closes the least
used beyond that), RESERVE plus an eighth of the limit stay free for new logs and tables,
peers (their connections grow with the cluster) and the process itself, and the client
port accepts at most `connections` connections (the next ones are closed at once, and
counted; `config.max_connections` may lower the cap, never raise it: `http1`).
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

log = logging.getLogger("dynamo.fdbudget")

#: descriptors never handed to clients: WAL and table writes, peers, logs, the process
RESERVE = 128
#: and this share of the limit on top, for peer connections and what grows with it
PEER_SHARE = 8
MIN_CONNECTIONS = 16


@dataclass(frozen=True, slots=True)
class Budget:
    limit: int
    rocksdb: int
    connections: int

    @classmethod
    def of(cls, limit: int) -> Budget:
        """The split of `limit` descriptors (pure)."""
        rocksdb = max(32, min(1024, limit // 4))
        connections = max(MIN_CONNECTIONS, limit - rocksdb - RESERVE - limit // PEER_SHARE)
        return cls(limit, rocksdb, connections)


def raise_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (where allowed); the result."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d: %s", soft, exc)
    return soft


def budget() -> Budget:
    found = Budget.of(raise_limit())
    log.info(
        "file descriptors: limit %d, RocksDB keeps at most %d tables open, at most %d "
        "client connections",
        found.limit,
        found.rocksdb,
        found.connections,
    )
    return found
