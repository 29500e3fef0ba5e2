"""Converge the owned objects on what the builders describe: create what is missing,
patch only the fields the operator manages, and only when they differ.

Level-based and idempotent: run it any number of times, from any state, and the objects
end up as built. Fields the API server defaults or other controllers own are never
touched (a patch names each managed path). Two kinds are special:
- the generated auth Secret is created once and its data never rewritten (its tokens
  are random: rewriting them would lock the running nodes out); only its labels and
  owner reference are kept as built (owned or not, after `pvcRetention.whenDeleted`),
  and only on a Secret the operator made (labelled managed-by it);
- the StatefulSet's replicas belong to the scaling machine, not to this module; its pod
  template is compared through a hash annotation (the API server adds defaults to a
  stored template, so comparing the template itself would always see a difference).

The pure parts (`drift_ops`, `statefulset_ops`, `scale_ops`) compute RFC 6902 JSON
patches and are unit-tested; the `ensure_*` coroutines apply them through `Kube`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from .builders import (
    API_GROUP,
    CONFIG_FILE,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    auth_secret,
    auth_secret_owned,
    client_service,
    configmap,
    headless_service,
    identity_configmap,
    pdb,
    statefulset,
)
from .errors import KubeError
from .kube import Kube
from .spec import ClusterSpec, Replication, Storage

TEMPLATE_HASH_ANNOTATION = f"{API_GROUP}/template-hash"

Outcome = Literal["created", "patched", "unchanged"]
Path = tuple[str, ...]

_OWNERSHIP: tuple[Path, ...] = (("metadata", "labels"), ("metadata", "ownerReferences"))

#: the fields the operator manages on each kind it updates in place
MANAGED_PATHS: dict[str, tuple[Path, ...]] = {
    "ConfigMap": (*_OWNERSHIP, ("data",)),
    "Service": (
        *_OWNERSHIP,
        ("spec", "selector"),
        ("spec", "ports"),
        ("spec", "publishNotReadyAddresses"),
    ),
    "Secret": _OWNERSHIP,  # never `data`: see `ensure_secret`
    "PodDisruptionBudget": (
        *_OWNERSHIP,
        ("spec", "maxUnavailable"),
        ("spec", "selector"),
        ("spec", "unhealthyPodEvictionPolicy"),
    ),
}
#: the StatefulSet fields that follow the template hash (all of them may change in place)
_STATEFULSET_ROLLING: tuple[Path, ...] = (
    ("spec", "template"),
    ("spec", "updateStrategy"),
    ("spec", "persistentVolumeClaimRetentionPolicy"),
    ("metadata", "annotations", TEMPLATE_HASH_ANNOTATION),
)

_MISSING = object()


def pointer(path: Sequence[str]) -> str:
    """The JSON pointer (RFC 6901) of a path."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in path)


def _get(obj: Mapping[str, Any], path: Path) -> Any:
    value: Any = obj
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _set_op(current: Mapping[str, Any], path: Path, value: Any) -> dict[str, Any]:
    """An `add` op that sets `path` to `value`, creating missing parent objects."""
    for depth in range(1, len(path)):
        if _get(current, path[:depth]) is _MISSING:
            nested: Any = copy.deepcopy(value)
            for part in reversed(path[depth:]):
                nested = {part: nested}
            return {"op": "add", "path": pointer(path[:depth]), "value": nested}
    return {"op": "add", "path": pointer(path), "value": copy.deepcopy(value)}


def drift_ops(
    current: Mapping[str, Any], desired: Mapping[str, Any], paths: Sequence[Path]
) -> list[dict[str, Any]]:
    """JSON-patch ops setting each of `paths` that `desired` has and `current` differs on."""
    ops = []
    for path in paths:
        want = _get(desired, path)
        if want is not _MISSING and _get(current, path) != want:
            ops.append(_set_op(current, path, want))
    return ops


def template_hash(sts: Mapping[str, Any]) -> str:
    """SHA-256 (hex, 16 chars) of what rolls the pods: template, strategy, PVC policy."""
    rolling = {pointer(p): _get(sts, p) for p in _STATEFULSET_ROLLING[:-1]}
    canonical = json.dumps(rolling, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def with_template_hash(sts: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a built StatefulSet carrying its template hash annotation."""
    out = copy.deepcopy(dict(sts))
    out["metadata"].setdefault("annotations", {})[TEMPLATE_HASH_ANNOTATION] = template_hash(out)
    return out


def statefulset_ops(current: Mapping[str, Any], desired: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Ops that bring a StatefulSet to `desired` (which carries its template hash),
    leaving `spec.replicas` and the immutable fields alone."""
    ops = drift_ops(current, desired, _OWNERSHIP)
    hash_path = _STATEFULSET_ROLLING[-1]
    if _get(current, hash_path) != _get(desired, hash_path):
        for path in _STATEFULSET_ROLLING:
            want = _get(desired, path)
            if want is not _MISSING:
                ops.append(_set_op(current, path, want))
    return ops


def scale_ops(built: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Ops that set a StatefulSet's replicas and the matching PVC retention (a pause,
    replicas 0, always retains the volumes: see `builders.statefulset`)."""
    return [
        {"op": "add", "path": "/spec/replicas", "value": built["spec"]["replicas"]},
        {
            "op": "add",
            "path": "/spec/persistentVolumeClaimRetentionPolicy",
            "value": copy.deepcopy(built["spec"]["persistentVolumeClaimRetentionPolicy"]),
        },
    ]


def applied_spec(
    spec: ClusterSpec,
    configmap_obj: Mapping[str, Any] | None,
    statefulset_obj: Mapping[str, Any] | None,
) -> ClusterSpec:
    """`spec` with the fields fixed at creation (partitions, replication.n, storage) as
    the running objects have them: the ConfigMap's node.json and the StatefulSet's
    volume claim template. A field that cannot be read keeps `spec`'s value, so only a
    real difference shows. Compare with `spec.check_update(applied, spec)`.

    The running objects, not Kopf's last handled spec, are the reference: a refused
    change becomes the last handled spec, and comparing against it would then refuse
    the user's revert.
    """
    partitions, n = spec.partitions, spec.replication.n
    size, storage_class = spec.storage.size, spec.storage.storage_class_name
    try:
        node = json.loads(((configmap_obj or {}).get("data") or {})[CONFIG_FILE])
        partitions, n = int(node["partitions"]), int(node["n"])
    except (KeyError, TypeError, ValueError):
        pass
    try:
        claim = (statefulset_obj or {})["spec"]["volumeClaimTemplates"][0]["spec"]
        stored = str(claim["resources"]["requests"]["storage"])
        storage_class = claim.get("storageClassName")
        if _quantity(stored) != _quantity(size):  # the server may canonicalise quantities
            size = stored
    except (KeyError, IndexError, TypeError):
        pass
    r, w = spec.replication.r, spec.replication.w
    return dataclasses.replace(
        spec,
        replicas=0,  # replicas is not compared; 0 is valid for any n
        partitions=partitions,
        replication=Replication(n=n, r=min(r, n), w=min(w, n)),
        storage=Storage(size=size, storage_class_name=storage_class),
    )


_QUANTITY_SUFFIXES = {
    "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def _quantity(text: str) -> float | None:
    """The value of a storage quantity such as `10Gi` or `1.5G` (None if unreadable)."""
    number = text.rstrip("kMGTPEi")
    try:
        return float(number) * _QUANTITY_SUFFIXES[text[len(number) :]]
    except (KeyError, ValueError):
        return None


# --- applying ---------------------------------------------------------------------------


def _name_of(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return str(obj["kind"]), str(meta["namespace"]), str(meta["name"])


async def ensure(kube: Kube, desired: Mapping[str, Any]) -> Outcome:
    """Create `desired`, or patch the managed fields of the existing object."""
    kind, namespace, name = _name_of(desired)
    current = await kube.get(kind, namespace, name)
    if current is None:
        try:
            await kube.create(desired)
        except KubeError as exc:
            if exc.status != 409:  # created meanwhile: patch it on the next pass
                raise
        return "created"
    ops = drift_ops(current, desired, MANAGED_PATHS[kind])
    if not ops:
        return "unchanged"
    await kube.json_patch(kind, namespace, name, ops)
    return "patched"


def secret_ops(current: Mapping[str, Any], desired: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Ops that bring a generated Secret's labels and owner references to `desired`,
    never its data; none for a Secret someone else made under that name (it lacks the
    managed-by label), which the operator uses but does not adopt."""
    managed = ((current.get("metadata") or {}).get("labels") or {}).get(LABEL_MANAGED_BY)
    if managed != MANAGED_BY:
        return []
    return drift_ops(current, desired, MANAGED_PATHS["Secret"])


async def ensure_secret(kube: Kube, desired: Mapping[str, Any]) -> Outcome:
    """Create the generated Secret unless one of that name exists; an existing one keeps
    its data (a re-created cluster reuses the tokens of its retained volumes), and its
    ownership follows `desired` (`secret_ops`)."""
    kind, namespace, name = _name_of(desired)
    current = await kube.get(kind, namespace, name)
    if current is None:
        try:
            await kube.create(desired)
        except KubeError as exc:
            if exc.status == 409:  # created meanwhile: its ownership is checked next pass
                return "unchanged"
            raise
        return "created"
    ops = secret_ops(current, desired)
    if not ops:
        return "unchanged"
    await kube.json_patch(kind, namespace, name, ops)
    return "patched"


async def ensure_statefulset(
    kube: Kube, name: str, namespace: str, uid: str, spec: ClusterSpec, initial_replicas: int
) -> Outcome:
    """Create the StatefulSet with `initial_replicas`, or bring its template up to date
    keeping its current replicas (the scaling machine changes those)."""
    current = await kube.get("StatefulSet", namespace, name)
    if current is None:
        built = with_template_hash(
            statefulset(name, namespace, uid, spec, replicas=initial_replicas)
        )
        try:
            await kube.create(built)
        except KubeError as exc:
            if exc.status != 409:
                raise
        return "created"
    replicas = (current.get("spec") or {}).get("replicas")
    replicas = replicas if isinstance(replicas, int) and replicas >= 0 else initial_replicas
    desired = with_template_hash(statefulset(name, namespace, uid, spec, replicas=replicas))
    ops = statefulset_ops(current, desired)
    if not ops:
        return "unchanged"
    await kube.json_patch("StatefulSet", namespace, name, ops)
    return "patched"


async def scale_statefulset(
    kube: Kube, name: str, namespace: str, uid: str, spec: ClusterSpec, replicas: int
) -> None:
    """Set the StatefulSet's replicas (and the PVC retention that goes with them)."""
    built = statefulset(name, namespace, uid, spec, replicas=replicas)
    await kube.json_patch("StatefulSet", namespace, name, scale_ops(built))


async def ensure_identity(
    kube: Kube, name: str, namespace: str, uid: str, cluster_id: str
) -> Outcome:
    """The identity ConfigMap, once `status.clusterId` is known."""
    return await ensure(kube, identity_configmap(name, namespace, uid, cluster_id))


async def ensure_owned(
    kube: Kube,
    name: str,
    namespace: str,
    uid: str,
    spec: ClusterSpec,
    tokens: tuple[str, str],
) -> dict[str, Outcome]:
    """Every owned object except the StatefulSet, by kind/name: the ConfigMap, the
    generated auth Secret (when the spec names none), both Services and the PDB.
    `tokens` are only used if the Secret must be created."""
    outcomes: dict[str, Outcome] = {}
    for desired in (
        configmap(name, namespace, uid, spec),
        headless_service(name, namespace, uid),
        client_service(name, namespace, uid),
        pdb(name, namespace, uid),
    ):
        kind, _, object_name = _name_of(desired)
        outcomes[f"{kind}/{object_name}"] = await ensure(kube, desired)
    if spec.auth_secret_name is None:
        secret = auth_secret(name, namespace, uid, tokens, owned=auth_secret_owned(spec))
        outcomes[f"Secret/{secret['metadata']['name']}"] = await ensure_secret(kube, secret)
    return outcomes
