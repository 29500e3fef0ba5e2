"""Every tunable of a node, in one frozen object (no magic numbers elsewhere).

Defaults follow the Dynamo paper and Riak where they have one: N=3, R=2, W=2, Q=256
partitions, clocks pruned past 10 entries. `validate()` is the single place that decides
whether a combination is acceptable; `main` and tests build configs through it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Literal

from dynamo_node.core.errors import InvalidRequest

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
        """Every field's type and range (`FIELD_RULES`), then the combinations."""
        for f in dataclasses.fields(self):
            check_field(f.name, getattr(self, f.name))
        if self.peer_port == 0 and self.port + PEER_PORT_OFFSET > 65535:
            raise InvalidRequest("port too high for the default peer port; set peer_port")
        if self.partitions & (self.partitions - 1):
            raise InvalidRequest(f"partitions must be a power of two, got {self.partitions}")
        if not (self.r <= self.n and self.w <= self.n):
            raise InvalidRequest(f"need 1 <= r, w <= n (n={self.n}, r={self.r}, w={self.w})")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise InvalidRequest("TLS needs both a certificate and a key file")
        if self.tls_cert_file and not self.tls_ca_file:
            raise InvalidRequest("TLS needs a CA file to verify peers (tls_ca_file)")
        if self.cluster_id and not _CLUSTER_ID.fullmatch(self.cluster_id):
            raise InvalidRequest(
                f"cluster id must be 1-64 letters, digits, '.', '_' or '-', got {self.cluster_id!r}"
            )
        if self.siblings_warn > self.siblings_max:
            raise InvalidRequest("need 1 <= siblings_warn <= siblings_max")


PEER_PORT_OFFSET = 10000


@dataclass(frozen=True, slots=True)
class Rule:
    """What one NodeConfig field accepts beyond its type (taken from its annotation):
    `min`/`max` inclusive bounds, `above` an exclusive lower bound, `help` a one-line
    description (the `dynamo-node` flag's help)."""

    help: str
    min: float | None = None
    max: float | None = None
    above: float | None = None


#: the shortest period of a background loop: 0 would make it spin
MIN_INTERVAL_S = 0.001

#: one rule per NodeConfig field: a field without one fails at import (and in tests)
FIELD_RULES: dict[str, Rule] = {
    "data_dir": Rule("RocksDB directory of this node"),
    "host": Rule("address to bind"),
    "port": Rule("HTTP port (client + admin API)", min=1, max=65535),
    "peer_port": Rule("node-to-node port (0: PORT+10000)", min=0, max=65535),
    "advertise": Rule("host others use to reach this node (default: host)"),
    "node_id": Rule("stable node id (default: saved, else HOST:PORT)"),
    "seeds": Rule("nodes of the cluster to join by gossip (HOST:PORT)"),
    "cluster_id": Rule("the cluster this node belongs to"),
    "partitions": Rule("Q for a new cluster (a power of two)", min=1, max=1 << 16),
    "n": Rule("replicas per key", min=1, max=16),
    "r": Rule("default read quorum (1..n)", min=1, max=16),
    "w": Rule("default write quorum (1..n)", min=1, max=16),
    "lww": Rule("last-write-wins instead of siblings"),
    "key_max_bytes": Rule("longest key (bytes)", min=1),
    "value_max_bytes": Rule("largest value (bytes)", min=0),
    "object_max_bytes": Rule("largest object, all siblings together (bytes)", min=1),
    "siblings_warn": Rule("siblings of a key past which a write is logged", min=1),
    "siblings_max": Rule("siblings of a key past which a write is refused", min=1),
    "durability": Rule("when a write is acknowledged"),
    "fsync_interval_s": Rule("seconds between WAL fsyncs (durability wal)", min=MIN_INTERVAL_S),
    "row_cache_bytes": Rule("memory for recently used objects (bytes; auto: 1/8 of memory)", min=0),
    "on_corruption": Rule("a data directory found damaged at start: refuse or replace"),
    "clock_max_entries": Rule("vector clock entries kept before pruning", min=1),
    "clock_prune_min_age_s": Rule("never prune a clock entry younger than this (s)", min=0),
    "request_timeout_ms": Rule("deadline of a coordinated request (ms)", min=1),
    "peer_connect_timeout_s": Rule("timeout connecting to a peer (s)", above=0),
    "read_repair": Rule("repair stale replicas on reads"),
    "hinted_handoff": Rule("keep hints for unreachable replicas"),
    "hint_delivery_interval_s": Rule("seconds between hint deliveries", min=MIN_INTERVAL_S),
    "hint_batch": Rule("hints delivered per round", min=1),
    "gossip_interval_s": Rule("seconds between gossip rounds", min=MIN_INTERVAL_S),
    "failure_timeout_s": Rule("a peer not heard from this long is down (s)", above=0),
    "anti_entropy_interval_s": Rule("seconds between anti-entropy rounds (0 disables)", min=0),
    "transfer_batch_keys": Rule("keys per partition-transfer batch", min=1),
    "transfer_batch_pause_s": Rule("pause between transfer batches (s, throttle)", min=0),
    "transfer_concurrency": Rule("partitions sent at the same time", min=1),
    "tombstone_grace_s": Rule("a tombstone is kept at least this long (s)", min=0),
    "client_token": Rule('client token ("" disables auth)'),
    "cluster_token": Rule("cluster (admin/internal) token"),
    "max_concurrent_requests": Rule("client requests served at the same time", min=1),
    "http_head_timeout_s": Rule("a request head must arrive within this (s)", above=0),
    "http_body_timeout_s": Rule("a request body must progress within this (s)", above=0),
    "max_connections": Rule("open client connections (auto: from the fd limit)", min=1),
    "peer_hello_timeout_s": Rule("a peer's hello must arrive within this (s)", above=0),
    "peer_max_unauthenticated": Rule("peer connections waiting for their hello", min=1),
    "tls_cert_file": Rule("PEM certificate (chain) of this node"),
    "tls_key_file": Rule("PEM private key of this node"),
    "tls_ca_file": Rule("PEM CA that signed every node"),
}


@dataclass(frozen=True, slots=True)
class FieldType:
    """A NodeConfig field's type, from its annotation."""

    kind: type  # int, float, bool or str
    optional: bool = False  # None is accepted too
    many: bool = False  # a tuple of `kind`
    choices: tuple[str, ...] = ()


def _field_type(hint: object) -> FieldType:
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin is Literal:
        return FieldType(str, choices=tuple(str(a) for a in args))
    if origin is tuple:
        return FieldType(args[0], many=True)
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        return FieldType(inner, optional=True)
    if hint in (int, float, bool, str):
        return FieldType(typing.cast(type, hint))
    raise TypeError(f"NodeConfig: no rule for the type {hint!r}")


FIELD_TYPES: dict[str, FieldType] = {
    name: _field_type(hint) for name, hint in typing.get_type_hints(NodeConfig).items()
}
_UNRULED = set(FIELD_TYPES) ^ set(FIELD_RULES)
if _UNRULED:  # pragma: no cover - caught by tests/node/core/test_config.py
    raise RuntimeError(f"NodeConfig fields without a rule in FIELD_RULES: {sorted(_UNRULED)}")

_KIND_NAMES = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}


def _type_ok(kind: type, value: object) -> bool:
    if kind is float:
        return type(value) in (int, float) and math.isfinite(typing.cast(float, value))
    return type(value) is kind


def check_field(name: str, value: object) -> None:
    """Raise InvalidRequest (naming the field) unless `value` suits field `name`."""
    ftype = FIELD_TYPES.get(name)
    if ftype is None:
        raise InvalidRequest(f"unknown setting {name!r}")
    rule = FIELD_RULES[name]
    if value is None and ftype.optional:
        return
    what = _KIND_NAMES[ftype.kind]
    if ftype.many:
        if not isinstance(value, tuple) or not all(_type_ok(ftype.kind, v) for v in value):
            raise InvalidRequest(f"{name} must be a list of strings, got {value!r}")
        return
    if not _type_ok(ftype.kind, value):
        extra = " or null" if ftype.optional else ""
        raise InvalidRequest(f"{name} must be {what}{extra}, got {value!r}")
    if ftype.choices and value not in ftype.choices:
        options = " or ".join(repr(c) for c in ftype.choices)
        raise InvalidRequest(f"{name} must be {options}, got {value!r}")
    number = typing.cast(float, value)
    if rule.min is not None and number < rule.min:
        raise InvalidRequest(f"{name} must be >= {rule.min:g}, got {value!r}")
    if rule.max is not None and number > rule.max:
        raise InvalidRequest(f"{name} must be <= {rule.max:g}, got {value!r}")
    if rule.above is not None and number <= rule.above:
        raise InvalidRequest(f"{name} must be > {rule.above:g}, got {value!r}")
