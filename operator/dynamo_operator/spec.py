"""The DynamoCluster spec as a frozen value: parsed, defaulted and validated in one place.

`parse_spec` applies the CRD's defaults and enforces the same rules as its schema and CEL
`x-kubernetes-validations` (crds/dynamoclusters.yaml): the API server checks them on a
real cluster, but a mock API server (kmock) does not, and the operator must never act on
a spec the API server would have refused. `check_update` enforces the CRD's transition
rules (fields fixed at creation). A `ClusterSpec` is valid by construction: its
`__post_init__` runs the cross-field checks.

Pure: no Kubernetes client, no Kopf; errors are `SpecError`s naming the offending field.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

from dynamo_node import __version__

from .errors import ImmutableFieldError, SpecError

JsonObject = dict[str, Any]

PullPolicy = Literal["Always", "IfNotPresent", "Never"]
AntiAffinityPreset = Literal["none", "preferred", "required"]
Retention = Literal["Retain", "Delete"]
Durability = Literal["sync", "wal"]

PULL_POLICIES: tuple[PullPolicy, ...] = ("Always", "IfNotPresent", "Never")
ANTI_AFFINITY_PRESETS: tuple[AntiAffinityPreset, ...] = ("none", "preferred", "required")
RETENTIONS: tuple[Retention, ...] = ("Retain", "Delete")
DURABILITIES: tuple[Durability, ...] = ("sync", "wal")

# Defaults and limits: the CRD's values, and the node's (dynamo_node.core.config) where shared.
DEFAULT_MAX_KEY_BYTES = 1024
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024
DEFAULT_MAX_CONCURRENT_REQUESTS = 1024
MAX_KEY_BYTES = 65536
MAX_VALUE_BYTES = 64 * 1024 * 1024
MAX_CONCURRENT_REQUESTS = 100_000
DEFAULT_REPLICAS = 3
DEFAULT_IMAGE = f"dynamokv/node:{__version__}"
DEFAULT_N = 3
DEFAULT_R = 2
DEFAULT_W = 2
MAX_N = 16
DEFAULT_PARTITIONS = 256
MAX_PARTITIONS = 65536
DEFAULT_STORAGE_SIZE = "1Gi"
DEFAULT_ANTI_ENTROPY_INTERVAL = "10m"
MIN_ANTI_ENTROPY_INTERVAL_S = 1.0
DEFAULT_AUTO_REPLACE_AFTER = "10m"
MIN_AUTO_REPLACE_AFTER_S = 60.0
MAX_STRING = 32  # maxLength of storage.size, antiEntropy.interval and autoReplace.after
#: pods are NAME-ORDINAL, the peer Service NAME-peers (a DNS-1035 label), and the
#: StatefulSet's controller-revision-hash label NAME-HASH must fit in 63 characters
MAX_NAME_LENGTH = 52

_POWERS_OF_TWO = frozenset(1 << i for i in range(17))
_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_STORAGE_SIZE = re.compile(r"([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[kMGTPE])?")
_QUANTITY = re.compile(
    r"(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?"
)
_DURATION = re.compile(r"([0-9]+(\.[0-9]+)?(ms|s|m|h))+")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Replication:
    """N replicas of every key; default read (R) and write (W) quorums."""

    n: int = DEFAULT_N
    r: int = DEFAULT_R
    w: int = DEFAULT_W


@dataclass(frozen=True, slots=True)
class Storage:
    """Each node's persistent volume; fixed at creation (volume claim templates)."""

    size: str = DEFAULT_STORAGE_SIZE
    storage_class_name: str | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-node input limits (NodeConfig key_max_bytes, value_max_bytes,
    max_concurrent_requests)."""

    max_key_bytes: int = DEFAULT_MAX_KEY_BYTES
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS


@dataclass(frozen=True, slots=True)
class PvcRetention:
    """The StatefulSet's PVC retention policy; see the CRD's pvcRetention description."""

    when_deleted: Retention = "Retain"
    when_scaled: Retention = "Delete"


@dataclass(frozen=True, slots=True)
class AutoReplace:
    """Opt-in automatic replacement of a member whose Kubernetes node is gone: see
    `replacement.choose_replacement` and the CRD's autoReplace description."""

    enabled: bool = False
    after: str = DEFAULT_AUTO_REPLACE_AFTER

    @property
    def after_s(self) -> float:
        return parse_duration(self.after, "spec.autoReplace.after")


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """A valid, fully defaulted DynamoCluster spec.

    The pass-through Kubernetes shapes (resources, affinity, tolerations, topology spread,
    node selector) are private copies; builders copy them again on the way out, so no
    built manifest aliases a spec.
    """

    replicas: int = DEFAULT_REPLICAS
    image: str = DEFAULT_IMAGE
    image_pull_policy: PullPolicy | None = None
    replication: Replication = Replication()
    partitions: int = DEFAULT_PARTITIONS
    storage: Storage = Storage()
    resources: JsonObject | None = field(default=None, hash=False)
    auth_secret_name: str | None = None
    tls_secret_name: str | None = None
    limits: Limits = Limits()
    anti_entropy_interval: str = DEFAULT_ANTI_ENTROPY_INTERVAL
    pod_anti_affinity: AntiAffinityPreset = "preferred"
    affinity: JsonObject | None = field(default=None, hash=False)
    tolerations: tuple[JsonObject, ...] = field(default=(), hash=False)
    topology_spread_constraints: tuple[JsonObject, ...] = field(default=(), hash=False)
    node_selector: Mapping[str, str] = field(default_factory=dict, hash=False)
    pvc_retention: PvcRetention = PvcRetention()
    lww: bool = False
    durability: Durability = "wal"
    auto_replace: AutoReplace = AutoReplace()

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def paused(self) -> bool:
        """replicas == 0: pods stopped, membership and volumes kept."""
        return self.replicas == 0

    @property
    def anti_entropy_interval_s(self) -> float:
        return parse_duration(self.anti_entropy_interval, "spec.antiEntropy.interval")


def parse_spec(spec: Mapping[str, Any] | None) -> ClusterSpec:
    """A `ClusterSpec` from a DynamoCluster's `spec`, with the CRD's defaults applied.

    Raises `SpecError` for a value the CRD (schema or CEL rules) would reject. Unknown
    fields are ignored, as the API server prunes them. `null` counts as absent, as it
    does for the API server's defaulting.
    """
    top = _Fields(spec, "spec")
    replication = top.object("replication")
    storage = top.object("storage")
    anti_entropy = top.object("antiEntropy")
    auto_replace = top.object("autoReplace")
    retention = top.object("pvcRetention")
    auth = top.object("auth")
    tls = top.object("tls")
    limits = top.object("limits")
    return ClusterSpec(
        replicas=top.integer("replicas", DEFAULT_REPLICAS, low=0),
        image=top.string("image", DEFAULT_IMAGE),
        image_pull_policy=top.optional_enum("imagePullPolicy", PULL_POLICIES),
        replication=Replication(
            n=replication.integer("n", DEFAULT_N, low=1, high=MAX_N),
            r=replication.integer("r", DEFAULT_R, low=1, high=MAX_N),
            w=replication.integer("w", DEFAULT_W, low=1, high=MAX_N),
        ),
        partitions=top.integer("partitions", DEFAULT_PARTITIONS, low=1, high=MAX_PARTITIONS),
        storage=Storage(
            size=storage.string("size", DEFAULT_STORAGE_SIZE, max_length=MAX_STRING),
            storage_class_name=storage.optional_string("storageClassName"),
        ),
        resources=_resources(top.optional_object("resources"), "spec.resources"),
        auth_secret_name=auth.optional_string("secretName", max_length=253),
        tls_secret_name=tls.optional_string("secretName", max_length=253),
        limits=Limits(
            max_key_bytes=limits.integer(
                "maxKeyBytes", DEFAULT_MAX_KEY_BYTES, low=1, high=MAX_KEY_BYTES
            ),
            max_value_bytes=limits.integer(
                "maxValueBytes", DEFAULT_MAX_VALUE_BYTES, low=1, high=MAX_VALUE_BYTES
            ),
            max_concurrent_requests=limits.integer(
                "maxConcurrentRequests",
                DEFAULT_MAX_CONCURRENT_REQUESTS,
                low=1,
                high=MAX_CONCURRENT_REQUESTS,
            ),
        ),
        anti_entropy_interval=anti_entropy.string(
            "interval", DEFAULT_ANTI_ENTROPY_INTERVAL, max_length=MAX_STRING
        ),
        pod_anti_affinity=top.enum("podAntiAffinity", ANTI_AFFINITY_PRESETS, "preferred"),
        affinity=top.optional_object("affinity"),
        tolerations=top.object_list("tolerations"),
        topology_spread_constraints=top.object_list("topologySpreadConstraints"),
        node_selector=top.string_map("nodeSelector"),
        pvc_retention=PvcRetention(
            when_deleted=retention.enum("whenDeleted", RETENTIONS, "Retain"),
            when_scaled=retention.enum("whenScaled", RETENTIONS, "Delete"),
        ),
        lww=top.boolean("lww", False),
        durability=top.enum("durability", DURABILITIES, "wal"),
        auto_replace=AutoReplace(
            enabled=auto_replace.boolean("enabled", False),
            after=auto_replace.string("after", DEFAULT_AUTO_REPLACE_AFTER, max_length=MAX_STRING),
        ),
    )


def check_update(old: ClusterSpec, new: ClusterSpec) -> None:
    """Refuse changes to fields fixed at creation (the CRD's transition rules)."""
    if new.partitions != old.partitions:
        raise ImmutableFieldError("spec.partitions", "partitions is immutable")
    if new.replication.n != old.replication.n:
        raise ImmutableFieldError(
            "spec.replication.n",
            "replication.n is immutable (changing it needs a full re-replication)",
        )
    if new.storage != old.storage:
        raise ImmutableFieldError(
            "spec.storage",
            "storage is immutable (StatefulSet volume claim templates cannot change)",
        )


def check_name(name: str) -> None:
    """Refuse a DynamoCluster name the owned objects cannot be named after."""
    if len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        raise SpecError(
            "metadata.name",
            f"{name!r} must be a DNS-1035 label (lower-case letters, digits, '-', starting "
            f"with a letter) of at most {MAX_NAME_LENGTH} characters",
        )


def parse_duration(text: str, where: str = "duration") -> float:
    """Seconds in a duration such as `90s`, `1.5m`, `1h30m`, `250ms` (units ms, s, m, h)."""
    if not _DURATION.fullmatch(text):
        raise SpecError(where, f"{text!r} is not a duration such as 90s, 10m or 1h30m")
    return sum(
        float(number) * _SECONDS_PER_UNIT[unit] for number, unit in _DURATION_PART.findall(text)
    )


def _validate(spec: ClusterSpec) -> None:
    n, r, w = spec.replication.n, spec.replication.r, spec.replication.w
    if not 1 <= n <= MAX_N:
        raise SpecError("spec.replication.n", f"must be between 1 and {MAX_N}, got {n}")
    if not 1 <= r <= n:
        raise SpecError("spec.replication.r", f"must be between 1 and replication.n ({n}), got {r}")
    if not 1 <= w <= n:
        raise SpecError("spec.replication.w", f"must be between 1 and replication.n ({n}), got {w}")
    if spec.replicas < 0:
        raise SpecError("spec.replicas", f"must not be negative, got {spec.replicas}")
    if spec.replicas != 0 and spec.replicas < n:
        raise SpecError(
            "spec.replicas",
            f"must be at least replication.n ({n}) or 0 to pause the cluster, "
            f"got {spec.replicas}: every key is stored on n distinct nodes",
        )
    if spec.partitions not in _POWERS_OF_TWO:
        raise SpecError(
            "spec.partitions",
            f"must be a power of two between 1 and {MAX_PARTITIONS}, got {spec.partitions}",
        )
    if not spec.image:
        raise SpecError("spec.image", "must not be empty")
    size = spec.storage.size
    if not _STORAGE_SIZE.fullmatch(size):
        raise SpecError("spec.storage.size", f"{size!r} is not a quantity such as 10Gi")
    if not re.search("[1-9]", size):
        raise SpecError("spec.storage.size", "storage.size must be greater than zero")
    if spec.storage.storage_class_name == "":
        raise SpecError("spec.storage.storageClassName", "must not be empty")
    if spec.auth_secret_name == "":
        raise SpecError("spec.auth.secretName", "must not be empty")
    if spec.tls_secret_name == "":
        raise SpecError("spec.tls.secretName", "must not be empty")
    interval = spec.anti_entropy_interval_s
    if interval < MIN_ANTI_ENTROPY_INTERVAL_S:
        raise SpecError("spec.antiEntropy.interval", "antiEntropy.interval must be at least 1s")
    if spec.auto_replace.after_s < MIN_AUTO_REPLACE_AFTER_S:
        raise SpecError("spec.autoReplace.after", "autoReplace.after must be at least 1m")


def _resources(value: JsonObject | None, where: str) -> JsonObject | None:
    """limits and requests, each a map of resource name to quantity; the API server
    prunes anything else (the CRD declares only these two), and so do we."""
    if value is None:
        return None
    fields = _Fields(value, where)
    kept: JsonObject = {}
    for part in ("limits", "requests"):
        amounts = fields.optional_object(part)
        if amounts is None:
            continue
        for resource, amount in amounts.items():
            valid = isinstance(amount, str) and _QUANTITY.fullmatch(amount)
            if not valid and not (isinstance(amount, int) and not isinstance(amount, bool)):
                raise SpecError(f"{where}.{part}.{resource}", f"{amount!r} is not a quantity")
        kept[part] = amounts
    return kept


_T = TypeVar("_T", bound=str)


class _Fields:
    """Typed reads from one object of the spec; every error names the field's path."""

    def __init__(self, value: object, path: str) -> None:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise SpecError(path, f"must be an object, got {type(value).__name__}")
        self._value: Mapping[str, Any] = value
        self._path = path

    def _get(self, key: str) -> object:
        return self._value.get(key)

    def _where(self, key: str) -> str:
        return f"{self._path}.{key}"

    def object(self, key: str) -> _Fields:
        return _Fields(self._get(key), self._where(key))

    def optional_object(self, key: str) -> JsonObject | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise SpecError(self._where(key), f"must be an object, got {type(value).__name__}")
        return copy.deepcopy(dict(value))

    def object_list(self, key: str) -> tuple[JsonObject, ...]:
        value = self._get(key)
        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            raise SpecError(self._where(key), f"must be a list, got {type(value).__name__}")
        for index, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise SpecError(f"{self._where(key)}[{index}]", "must be an object")
        return tuple(copy.deepcopy(dict(item)) for item in value)

    def string_map(self, key: str) -> dict[str, str]:
        value = self.optional_object(key) or {}
        for name, item in value.items():
            if not isinstance(item, str):
                raise SpecError(f"{self._where(key)}.{name}", "must be a string")
        return cast(dict[str, str], value)

    def integer(self, key: str, default: int, *, low: int, high: int | None = None) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(self._where(key), f"must be an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise SpecError(self._where(key), f"must be {bounds}, got {value}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise SpecError(self._where(key), f"must be true or false, got {value!r}")
        return value

    def optional_string(self, key: str, *, max_length: int | None = None) -> str | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise SpecError(self._where(key), f"must be a string, got {value!r}")
        if not value:
            raise SpecError(self._where(key), "must not be empty")
        if max_length is not None and len(value) > max_length:
            raise SpecError(self._where(key), f"must be at most {max_length} characters")
        return value

    def string(self, key: str, default: str, *, max_length: int | None = None) -> str:
        value = self.optional_string(key, max_length=max_length)
        return default if value is None else value

    def optional_enum(self, key: str, choices: tuple[_T, ...]) -> _T | None:
        value = self._get(key)
        if value is None:
            return None
        for choice in choices:
            if value == choice:
                return choice
        raise SpecError(self._where(key), f"must be one of {', '.join(choices)}, got {value!r}")

    def enum(self, key: str, choices: tuple[_T, ...], default: _T) -> _T:
        value = self.optional_enum(key, choices)
        return default if value is None else value
