"""What the operator observes of one cluster, as immutable values (pure).

Three sources, each parsed defensively from the JSON the APIs return:
- `StatefulSetView`: the StatefulSet's replica count and its controller's progress
  (`update_revision` only once the controller has observed the current generation);
- `PodView`: one pod of the StatefulSet: ordinal, uid, readiness, template revision,
  and where it runs: phase, Kubernetes node, since when it is not ready / unschedulable;
- `HostView`: one Kubernetes Node (read only with `spec.autoReplace` on): its name,
  hostname label and Ready condition;
- `NodeView`: one node's `GET /v1/admin/status` (docs/api.md): its own membership state,
  ring version, transfers, hints and the members as it sees them;

and `Observed`, all of them at one moment plus the request and the persisted operation:
the input of the scaling machine.

Parsing never raises on a missing optional field; a status that lacks what the operator
relies on (node id, state, ring version) raises `ValueError`, and the caller treats that
node as unreachable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .steps import Operation

#: the label the StatefulSet controller puts on each pod: the template revision it runs
REVISION_LABEL = "controller-revision-hash"

#: member states (docs/api.md); "left" is a node that left the ring and owns nothing
JOINING, UP, DOWN, LEAVING, LEFT = "joining", "up", "down", "leaving", "left"
#: a ring member back with an empty volume, being refilled (it counts for no quorum)
REPLACING = "replacing"
#: own states that mean "this node is in the committed ring"
IN_RING_STATES = frozenset({UP, LEAVING, REPLACING})

_ORDINAL = re.compile(r"^(?P<set>.+)-(?P<ordinal>0|[1-9][0-9]*)$")


def pod_ordinal(pod_name: str, statefulset: str) -> int | None:
    """The ordinal of `<statefulset>-<ordinal>`, or None for any other name."""
    match = _ORDINAL.match(pod_name)
    if match is None or match.group("set") != statefulset:
        return None
    return int(match.group("ordinal"))


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object, default: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return value


@dataclass(frozen=True, slots=True)
class StatefulSetView:
    """The StatefulSet as its controller reports it."""

    replicas: int  # spec.replicas: the pods it should have
    current_replicas: int  # status.replicas: the pods that exist
    ready_replicas: int
    #: the revision pods must run; None while the controller has not caught up with the
    #: current template (then nobody can tell which pods are outdated)
    update_revision: str | None

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> StatefulSetView:
        meta, spec, status = (_mapping(obj.get(k)) for k in ("metadata", "spec", "status"))
        generation = _int(meta.get("generation"), 0)
        observed = _int(status.get("observedGeneration"), -1)
        revision = status.get("updateRevision")
        current = generation == 0 or observed >= generation
        return cls(
            replicas=_int(spec.get("replicas"), 1),
            current_replicas=_int(status.get("replicas")),
            ready_replicas=_int(status.get("readyReplicas")),
            update_revision=str(revision) if revision and current else None,
        )


def _condition(conditions: object, kind: str) -> Mapping[str, Any]:
    """The condition of this type in a `status.conditions` list ({} if absent)."""
    if isinstance(conditions, list):
        for item in conditions:
            if isinstance(item, Mapping) and item.get("type") == kind:
                return item
    return {}


@dataclass(frozen=True, slots=True)
class PodView:
    """One pod of the StatefulSet."""

    name: str
    ordinal: int
    uid: str
    ready: bool
    terminating: bool
    revision: str | None
    phase: str | None = None
    #: the Kubernetes node it is bound to (None while not scheduled)
    node_name: str | None = None
    #: lastTransitionTime of its Ready condition while that is not True (RFC 3339)
    unready_since: str | None = None
    #: lastTransitionTime of PodScheduled while False with reason Unschedulable
    unschedulable_since: str | None = None

    @property
    def serving(self) -> bool:
        """Ready and not on its way out (a deleted pod may still pass its probe)."""
        return self.ready and not self.terminating

    @classmethod
    def from_object(cls, obj: Mapping[str, Any], statefulset: str) -> PodView | None:
        """The view of a pod of `statefulset`, or None for a pod that is not one of its."""
        meta, status = _mapping(obj.get("metadata")), _mapping(obj.get("status"))
        name = str(meta.get("name", ""))
        ordinal = pod_ordinal(name, statefulset)
        if ordinal is None:
            return None
        conditions = status.get("conditions")
        ready_condition = _condition(conditions, "Ready")
        ready = ready_condition.get("status") == "True"
        scheduled = _condition(conditions, "PodScheduled")
        unschedulable = scheduled.get("status") == "False" and (
            scheduled.get("reason") == "Unschedulable"
        )
        revision = _mapping(meta.get("labels")).get(REVISION_LABEL)
        return cls(
            name=name,
            ordinal=ordinal,
            uid=str(meta.get("uid", "")),
            ready=ready,
            terminating=bool(meta.get("deletionTimestamp")),
            revision=str(revision) if revision else None,
            phase=_str_or_none(status.get("phase")),
            node_name=_str_or_none(_mapping(obj.get("spec")).get("nodeName")),
            unready_since=(
                None if ready else _str_or_none(ready_condition.get("lastTransitionTime"))
            ),
            unschedulable_since=(
                _str_or_none(scheduled.get("lastTransitionTime")) if unschedulable else None
            ),
        )


#: the label every Node carries with its host name (a local volume's node affinity uses it)
HOSTNAME_LABEL = "kubernetes.io/hostname"
#: the annotation the scheduler puts on a claim it provisions for one node
SELECTED_NODE_ANNOTATION = "volume.kubernetes.io/selected-node"


@dataclass(frozen=True, slots=True)
class HostView:
    """A Kubernetes Node (a "host", apart from the dynamo nodes)."""

    name: str
    hostname: str | None
    ready: bool
    #: lastTransitionTime of its Ready condition (RFC 3339), if reported
    ready_since: str | None

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> HostView | None:
        meta = _mapping(obj.get("metadata"))
        name = _str_or_none(meta.get("name"))
        if name is None:
            return None
        condition = _condition(_mapping(obj.get("status")).get("conditions"), "Ready")
        return cls(
            name=name,
            hostname=_str_or_none(_mapping(meta.get("labels")).get(HOSTNAME_LABEL)),
            ready=condition.get("status") == "True",
            ready_since=_str_or_none(condition.get("lastTransitionTime")),
        )


def volume_hosts(
    claim: Mapping[str, Any] | None, volume: Mapping[str, Any] | None
) -> frozenset[str]:
    """The hosts a pod's volume is tied to: the host names in its PersistentVolume's
    required node affinity (`kubernetes.io/hostname In [...]`, as local volumes have),
    and the node its claim was provisioned for (annotation
    `volume.kubernetes.io/selected-node`). Empty for a volume reachable from anywhere."""
    found: set[str] = set()
    selected = _mapping(_mapping((claim or {}).get("metadata")).get("annotations")).get(
        SELECTED_NODE_ANNOTATION
    )
    if isinstance(selected, str) and selected:
        found.add(selected)
    required = _mapping(
        _mapping(_mapping((volume or {}).get("spec")).get("nodeAffinity")).get("required")
    )
    for term in required.get("nodeSelectorTerms") or ():
        for item in _mapping(term).get("matchExpressions") or ():
            expression = _mapping(item)
            if expression.get("key") == HOSTNAME_LABEL and expression.get("operator") == "In":
                found.update(str(v) for v in expression.get("values") or () if v)
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class MemberView:
    """A ring member as one node sees it."""

    name: str
    address: str
    state: str
    partitions: int


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node's own report (`GET /v1/admin/status`)."""

    name: str
    address: str
    state: str  # this node's own membership state: never "down"
    ring_version: int
    partitions: int  # partitions it owns
    transfers: int  # partition transfers of the committed change not yet done
    transfer_nodes: frozenset[str]  # nodes sending or receiving those transfers
    hints_pending: int
    members: tuple[MemberView, ...]
    last_anti_entropy: str | None
    #: the cluster id of its ring (None until it learned one)
    cluster: str | None = None

    def member(self, name: str) -> MemberView | None:
        return next((m for m in self.members if m.name == name), None)

    @classmethod
    def from_status(cls, raw: Mapping[str, Any]) -> NodeView:
        try:
            name, state = str(raw["node"]), str(raw["state"])
            ring_version = int(raw["ring_version"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed node status: {exc!r}") from None
        members = []
        for item in raw.get("members") or ():
            m = _mapping(item)
            if "node" in m:
                members.append(
                    MemberView(
                        name=str(m["node"]),
                        address=str(m.get("address", "")),
                        state=str(m.get("state", "")),
                        partitions=_int(m.get("partitions")),
                    )
                )
        transfers = [_mapping(t) for t in raw.get("transfers") or ()]
        nodes = {str(t[k]) for t in transfers for k in ("from", "to") if k in t}
        owned = raw.get("partitions")
        last = raw.get("last_anti_entropy")
        return cls(
            name=name,
            address=str(raw.get("address", "")),
            state=state,
            ring_version=ring_version,
            partitions=len(owned) if isinstance(owned, list) else _int(owned),
            transfers=len(transfers),
            transfer_nodes=frozenset(nodes),
            hints_pending=_int(raw.get("hints_pending")),
            members=tuple(members),
            last_anti_entropy=str(last) if last else None,
            cluster=_str_or_none(raw.get("cluster")),
        )


# --- one observation ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observed:
    """Everything `next_step` decides from."""

    name: str  # the cluster's name, which is also the StatefulSet's
    requested: int  # spec.replicas as asked (may be refused)
    n: int  # replication.n
    statefulset: StatefulSetView | None
    pods: tuple[PodView, ...]
    #: own admin status of every node that answered, by pod name
    nodes: Mapping[str, NodeView]
    operation: Operation | None
    #: the Kubernetes Nodes by name; None when not observed (autoReplace off, or no
    #: permission): then no decision may rest on a node being gone
    hosts: Mapping[str, HostView] | None = None
    #: for an unscheduled pod, the hosts its volume is tied to (`volume_hosts`), by pod
    volume_hosts: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def ordinal(self, name: str) -> int | None:
        return pod_ordinal(name, self.name)

    def pod(self, name: str) -> PodView | None:
        return next((p for p in self.pods if p.name == name), None)

    def pod_name(self, ordinal: int) -> str:
        return f"{self.name}-{ordinal}"
