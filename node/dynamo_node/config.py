"""Every tunable of a node, in one frozen object (no magic numbers elsewhere).

Defaults follow the Dynamo paper and Riak where they have one: N=3, R=2, W=2, Q=256
partitions, clocks pruned past 10 entries. `validate()` is the single place that decides
whether a combination is acceptable; `main` and tests build configs through it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

from .errors import InvalidRequest

Durability = Literal["sync", "wal"]
OnCorruption = Literal["refuse", "replace"]

DEFAULT_PARTITIONS = 256
DEFAULT_N = 3
DEFAULT_R = 2
DEFAULT_W = 2
KIB = 1024
MIB = 1024 * KIB
_CLUSTER_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Settings of one node. Cluster-wide values (partitions, n, r, w) must agree on
    every node; the ring carries `partitions`, so a joining node adopts the cluster's."""

    data_dir: str
    host: str = "127.0.0.1"
    port: int = 7070
    #: node-to-node framed protocol port; 0 means port + PEER_PORT_OFFSET
    peer_port: int = 0
    #: host other nodes and clients use to reach this one; "" means `host`
    advertise: str = ""
    #: stable node id; "" means: the one saved in the data dir, else HOST:PORT
    node_id: str = ""
    seeds: tuple[str, ...] = ()
    #: the cluster this node belongs to ("" = not known yet). A node given one never
    #: founds a cluster: with an empty data directory it waits to learn the ring by
    #: gossip; it refuses saved state and gossip of any other cluster.
    cluster_id: str = ""

    partitions: int = DEFAULT_PARTITIONS
    n: int = DEFAULT_N
    r: int = DEFAULT_R
    w: int = DEFAULT_W
    #: last-write-wins instead of siblings (the paper's session-store mode)
    lww: bool = False

    key_max_bytes: int = KIB
    value_max_bytes: int = MIB
    #: an object (all its siblings together) larger than this is refused (413)
    object_max_bytes: int = 8 * MIB
    #: siblings of one key: past `siblings_warn` a write is logged and counted, past
    #: `siblings_max` a write that would add one more is refused (Riak: 25 and 100)
    siblings_warn: int = 25
    siblings_max: int = 100

    #: "sync": acknowledge a write only after its WAL is fsynced (group commit, off the
    #: event loop). "wal": acknowledge once it is in the WAL (survives a process crash);
    #: the WAL is fsynced every `fsync_interval_s`, so a machine crash can lose that much.
    durability: Durability = "wal"
    fsync_interval_s: float = 1.0
    #: recently written or read objects kept in memory (bytes, approximate; 0 = off),
    #: like Cassandra's row cache: a hit skips RocksDB's memtable and block lookups.
    #: None: 1/8 of the memory limit (`memory.default_row_cache_bytes`)
    row_cache_bytes: int | None = None
    #: a data directory RocksDB reports damaged (Corruption) at start: "refuse" (exit 65,
    #: the operator decides), or "replace": move it aside (never deleted) and start
    #: empty, keeping the node and cluster ids, as a replacement that refills from peers
    on_corruption: OnCorruption = "refuse"

    clock_max_entries: int = 10
    #: never prune a clock entry younger than this: replicas converge long before
    clock_prune_min_age_s: float = 86400.0

    request_timeout_ms: int = 3000
    peer_connect_timeout_s: float = 1.0
    read_repair: bool = True
    hinted_handoff: bool = True
    hint_delivery_interval_s: float = 0.5
    hint_batch: int = 256

    gossip_interval_s: float = 1.0
    #: a peer not heard from (directly or by gossip) for this long is reported down
    failure_timeout_s: float = 3.5
    #: as the operator's default (spec.antiEntropy.interval 10m): a pass rehashes what was
    #: written since the last one, which read repair and hints mostly repaired already
    anti_entropy_interval_s: float = 600.0
    transfer_batch_keys: int = 500
    transfer_batch_pause_s: float = 0.0
    #: partitions this node sends at the same time (Riak's transfer_limit)
    transfer_concurrency: int = 2
    #: a tombstone is purged (once every replica holds it) no earlier than this
    tombstone_grace_s: float = 10.0

    #: tokens; "" disables auth. cluster_token guards admin and internal calls and is
    #: also accepted on client calls; client_token only on client calls.
    client_token: str = ""
    cluster_token: str = ""
    max_concurrent_requests: int = 1024
    #: client-port HTTP: the request head (line and headers) must arrive within this
    #: many seconds; a body must make progress within `http_body_timeout_s` (nginx: 60)
    http_head_timeout_s: float = 60.0
    http_body_timeout_s: float = 60.0
    #: open client-port connections; beyond it new ones are refused. None: derived
    #: from the file-descriptor limit (`fdbudget`)
    max_connections: int | None = None
    #: peer port: the hello must arrive within this many seconds, and at most
    #: `peer_max_unauthenticated` connections may be waiting for theirs
    peer_hello_timeout_s: float = 5.0
    peer_max_unauthenticated: int = 64
    #: TLS for the HTTP API and the node-to-node protocol ("" = plain TCP); peers are
    #: verified against tls_ca_file (and present tls_cert_file themselves)
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""

    def __post_init__(self) -> None:
        self.validate()

    @property
    def effective_peer_port(self) -> int:
        return self.peer_port or self.port + PEER_PORT_OFFSET

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def replace(self, **changes: object) -> NodeConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def validate(self) -> None:
        if not 0 < self.port < 65536:
            raise InvalidRequest(f"port {self.port} out of range")
        if self.peer_port == 0 and self.port + PEER_PORT_OFFSET > 65535:
            raise InvalidRequest("port too high for the default peer port; set peer_port")
        if self.partitions < 1 or self.partitions & (self.partitions - 1):
            raise InvalidRequest(f"partitions must be a power of two, got {self.partitions}")
        if self.partitions > 1 << 16:
            raise InvalidRequest("at most 65536 partitions")
        if not 1 <= self.n <= 16:
            raise InvalidRequest(f"n must be in 1..16, got {self.n}")
        if not (1 <= self.r <= self.n and 1 <= self.w <= self.n):
            raise InvalidRequest(f"need 1 <= r, w <= n (n={self.n}, r={self.r}, w={self.w})")
        if self.durability not in ("sync", "wal"):
            raise InvalidRequest(f"durability must be 'sync' or 'wal', got {self.durability}")
        if self.key_max_bytes < 1 or self.value_max_bytes < 0:
            raise InvalidRequest("key and value limits must be positive")
        if self.clock_max_entries < 1:
            raise InvalidRequest("clock_max_entries must be >= 1")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise InvalidRequest("TLS needs both a certificate and a key file")
        if self.tls_cert_file and not self.tls_ca_file:
            raise InvalidRequest("TLS needs a CA file to verify peers (tls_ca_file)")
        if self.request_timeout_ms < 1:
            raise InvalidRequest("request_timeout_ms must be >= 1")
        if self.cluster_id and not _CLUSTER_ID.fullmatch(self.cluster_id):
            raise InvalidRequest(
                f"cluster id must be 1-64 letters, digits, '.', '_' or '-', got {self.cluster_id!r}"
            )
        if self.on_corruption not in ("refuse", "replace"):
            raise InvalidRequest(
                f"on_corruption must be 'refuse' or 'replace', got {self.on_corruption!r}"
            )
        if self.row_cache_bytes is not None and self.row_cache_bytes < 0:
            raise InvalidRequest("row_cache_bytes must be >= 0")
        if self.object_max_bytes < 1:
            raise InvalidRequest("object_max_bytes must be >= 1")
        if not 1 <= self.siblings_warn <= self.siblings_max:
            raise InvalidRequest("need 1 <= siblings_warn <= siblings_max")
        if self.http_head_timeout_s <= 0 or self.http_body_timeout_s <= 0:
            raise InvalidRequest("http_head_timeout_s and http_body_timeout_s must be > 0")
        if self.max_connections is not None and self.max_connections < 1:
            raise InvalidRequest("max_connections must be >= 1")
        if self.peer_hello_timeout_s <= 0 or self.peer_max_unauthenticated < 1:
            raise InvalidRequest("peer_hello_timeout_s must be > 0, peer_max_unauthenticated >= 1")


PEER_PORT_OFFSET = 10000
