"""The membership and upgrade state machine of one cluster (pure).

`next_step(observed)` takes what is — the StatefulSet, its pods, every node's own admin
status, the operation in progress — and returns the one thing to do next (a `Step`).
It keeps no memory: the ring itself is the progress of a scale (who is joining, leaving,
left, which transfers remain), and the little the ring cannot tell is persisted in
`status.operation` (`Operation`): an anti-entropy pass owed after a committed change, and
the pod an upgrade restarted. So an operator restarted at any point computes the same
step from the same inputs and finishes the job.

Decisions, in order (the first that applies wins):

1. no StatefulSet yet: wait (the create handler makes it);
2. target 0 (pause): shrink the StatefulSet to 0; membership and volumes are kept;
3. an upgrade restarted a pod: wait until it is recreated, ready, back in the ring and
   every node's hints are drained;
4. grow the StatefulSet to cover the target and every ring member (a pod is never
   removed while the ring counts it, whatever the target says);
5. shrink the StatefulSet down to that floor: the pods above it own nothing (never
   joined, or left the ring with their partitions transferred);
6. wait until every pod is ready and answers, and the ring has settled (no transfers,
   one ring version, nobody down);
7. one membership change: stage the joins of pods below the target and the leaves of
   ring members at or above it (the highest ordinals), commit on a coordinator;
8. after a committed change has settled, start anti-entropy on every member;
9. restart one outdated pod (highest ordinal first) once no hints are pending;
10. idle.

A scale request below `replication.n` is refused (`Step.refusal`): the machine then
holds the ring as it is (never fewer than n members) instead of removing anything.
A new request in the middle of a scale needs no special case: steps 4-7 re-derive the
work from the ring, so 3→5 interrupted by 4 shrinks the not-yet-joined pod-4 away, or,
if the joins were already committed, lets the transfers finish and then leaves pod-4.

The node refuses to plan while a committed change still transfers, and staging is kept
in the coordinator's memory only: the shell clears the plan, stages and commits in one
step, so a half-staged plan left by a crash is simply discarded.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import SpecError
from .observed import IN_RING_STATES, LEAVING, UP, NodeView, PodView, StatefulSetView, pod_ordinal
from .spec import ClusterSpec, parse_spec

OperationKind = Literal["scale", "upgrade"]
OPERATION_KINDS: tuple[OperationKind, ...] = ("scale", "upgrade")

# Reasons: the `reason` of events and of the Progressing condition.
REASON_WAITING_FOR_STATEFULSET = "WaitingForStatefulSet"
REASON_WAITING_FOR_PODS = "WaitingForPods"
REASON_WAITING_FOR_RING = "WaitingForRing"
REASON_WAITING_FOR_RESTART = "WaitingForRestart"
REASON_WAITING_FOR_HINTS = "WaitingForHints"
REASON_NO_COORDINATOR = "NoCoordinator"
REASON_SCALING_UP = "ScalingUp"
REASON_SCALING_DOWN = "ScalingDown"
REASON_PAUSING = "Pausing"
REASON_MEMBERSHIP = "MembershipChange"
REASON_ANTI_ENTROPY = "AntiEntropy"
REASON_RESTARTING = "RestartingPod"
REASON_STABLE = "Stable"
REASON_PAUSED = "Paused"


@dataclass(frozen=True, slots=True)
class Operation:
    """The part of an operation the ring cannot tell, kept in `status.operation`.

    `to_dict` always writes every key (None for unused ones), so a JSON merge patch of
    the status replaces the whole record instead of mixing two operations.
    """

    kind: OperationKind
    from_replicas: int | None = None
    to_replicas: int | None = None
    #: a membership change was committed: run anti-entropy once it has settled
    anti_entropy: bool = False
    #: upgrade: the pod deleted to restart it, and its uid then (the new pod's differs)
    pod: str | None = None
    pod_uid: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "fromReplicas": self.from_replicas,
            "toReplicas": self.to_replicas,
            "antiEntropyPending": self.anti_entropy,
            "pod": self.pod,
            "podUid": self.pod_uid,
        }

    @classmethod
    def from_dict(cls, raw: object) -> Operation | None:
        """The operation in `status.operation`; None when absent or unreadable (a
        malformed record is dropped: the ring still tells what remains to do)."""
        if not isinstance(raw, Mapping):
            return None
        kind = raw.get("kind")
        if kind not in OPERATION_KINDS:
            return None

        def optional_int(key: str) -> int | None:
            value = raw.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        def optional_str(key: str) -> str | None:
            value = raw.get(key)
            return value if isinstance(value, str) and value else None

        return cls(
            kind="scale" if kind == "scale" else "upgrade",
            from_replicas=optional_int("fromReplicas"),
            to_replicas=optional_int("toReplicas"),
            anti_entropy=raw.get("antiEntropyPending") is True,
            pod=optional_str("pod"),
            pod_uid=optional_str("podUid"),
        )


# --- actions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to do until the cluster changes (the next observation decides again)."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class ScaleStatefulSet:
    """Set the StatefulSet's replicas (grow first, shrink last)."""

    replicas: int
    previous: int
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Join:
    """A pod to join, by the address its node advertises."""

    pod: str
    address: str


@dataclass(frozen=True, slots=True)
class ChangeMembership:
    """On `coordinator`: clear any staged plan, stage these joins and leaves, commit."""

    coordinator: str
    joins: tuple[Join, ...]
    leaves: tuple[str, ...]
    message: str
    reason: str = REASON_MEMBERSHIP


@dataclass(frozen=True, slots=True)
class RunAntiEntropy:
    """Start a full anti-entropy pass on these nodes (best effort)."""

    nodes: tuple[str, ...]
    message: str
    reason: str = REASON_ANTI_ENTROPY


@dataclass(frozen=True, slots=True)
class RestartPod:
    """Delete this pod (uid as a precondition) so it comes back on the new template."""

    pod: str
    uid: str
    message: str
    reason: str = REASON_RESTARTING


@dataclass(frozen=True, slots=True)
class Idle:
    """The cluster is as asked."""

    message: str
    reason: str = REASON_STABLE


Action = Wait | ScaleStatefulSet | ChangeMembership | RunAntiEntropy | RestartPod | Idle


@dataclass(frozen=True, slots=True)
class Step:
    """What to do now, the operation to persist (before acting), and a refusal if the
    requested size was refused."""

    action: Action
    operation: Operation | None
    refusal: str | None = None


# --- observations ----------------------------------------------------------------------


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

    def ordinal(self, name: str) -> int | None:
        return pod_ordinal(name, self.name)

    def pod(self, name: str) -> PodView | None:
        return next((p for p in self.pods if p.name == name), None)

    def pod_name(self, ordinal: int) -> str:
        return f"{self.name}-{ordinal}"


@dataclass(frozen=True, slots=True)
class RingView:
    """The ring as the answering nodes report it, read conservatively: a node counts as a
    member if *any* report says so (its own, a peer's member list, a pending transfer),
    so the operator never removes a pod some node still counts on."""

    coordinator: NodeView | None  # lowest-ordinal node that is an "up" ring member
    members: frozenset[str]  # committed members, leaving ones included
    leaving: frozenset[str]
    down: frozenset[str]  # members the coordinator sees down, or that do not answer
    busy: str | None  # why the ring has not settled, or None

    @property
    def active(self) -> frozenset[str]:
        """Members that stay (not leaving)."""
        return self.members - self.leaving


def ring_of(observed: Observed) -> RingView:
    views = list(observed.nodes.values())
    candidates = (
        {p.name for p in observed.pods}
        | set(observed.nodes)
        | {m.name for v in views for m in v.members}
    )
    members = frozenset(name for name in candidates if _in_ring(observed, name))
    ups = [
        (ordinal, view)
        for name, view in observed.nodes.items()
        if view.state == UP and (ordinal := observed.ordinal(name)) is not None
    ]
    coordinator = min(ups, key=lambda item: item[0])[1] if ups else None
    leaving = frozenset(
        name
        for name in members
        if ((own := observed.nodes.get(name)) is not None and own.state == LEAVING)
        or any((m := v.member(name)) is not None and m.state == LEAVING for v in views)
    )
    down = set(name for name in members if name not in observed.nodes)
    if coordinator is not None:
        down |= {m.name for m in coordinator.members if m.name in members and m.state == "down"}
    return RingView(
        coordinator=coordinator,
        members=members,
        leaving=leaving,
        down=frozenset(down),
        busy=_busy(observed, members, leaving, frozenset(down)),
    )


def _in_ring(observed: Observed, name: str) -> bool:
    own = observed.nodes.get(name)
    if own is not None and own.state in IN_RING_STATES:
        return True
    for view in observed.nodes.values():
        member = view.member(name)
        if member is not None and (member.state in IN_RING_STATES or member.partitions > 0):
            return True
        if name in view.transfer_nodes:
            return True
    return False


def _busy(
    observed: Observed,
    members: frozenset[str],
    leaving: frozenset[str],
    down: frozenset[str],
) -> str | None:
    views = observed.nodes.values()
    transfers = max((v.transfers for v in views), default=0)
    if transfers:
        return f"{transfers} partition transfer(s) of the committed ring change in progress"
    versions = {v.ring_version for v in views if v.name in members}
    if len(versions) > 1:
        return f"ring members disagree on the ring version ({sorted(versions)}): gossip converging"
    if leaving:
        return f"{_names(leaving, observed)} leaving the ring"
    if down:
        return f"{_names(down, observed)} down: no membership change until every member is up"
    return None


def _names(names: frozenset[str] | set[str], observed: Observed) -> str:
    ordered = sorted(names, key=lambda n: (observed.ordinal(n) is None, observed.ordinal(n), n))
    return ", ".join(ordered)


def _highest_ordinal(observed: Observed, names: frozenset[str]) -> int:
    ordinals = [o for name in names if (o := observed.ordinal(name)) is not None]
    return max(ordinals, default=-1)


# --- the request -----------------------------------------------------------------------


def parse_request(raw_spec: Mapping[str, Any] | None) -> tuple[ClusterSpec, int]:
    """The spec and the requested replicas, a request below `replication.n` apart.

    `parse_spec` rejects such a spec outright; the operator must instead refuse just the
    scale (condition + event) and keep running the cluster, so the spec is parsed as if
    paused and the request returned on its own. Any other invalid value still raises.
    """
    raw = dict(raw_spec or {})
    try:
        spec = parse_spec(raw)
    except SpecError as exc:
        requested = raw.get("replicas")
        if exc.field != "spec.replicas" or not isinstance(requested, int) or requested < 1:
            raise
        return parse_spec({**raw, "replicas": 0}), requested
    return spec, spec.replicas


def _target(observed: Observed, ring: RingView, sts: StatefulSetView) -> tuple[int, str | None]:
    requested, n = observed.requested, observed.n
    if requested == 0 or requested >= n:
        return requested, None
    hold = max(n, len(ring.members)) if ring.coordinator is not None else max(n, sts.replicas)
    return hold, (
        f"refused to scale to {requested} node(s): fewer than replication.n={n}, so some "
        f"keys would lose replicas; keeping {hold} node(s). Set spec.replicas to at least {n}."
    )


# --- the machine -----------------------------------------------------------------------


class _Keep(enum.Enum):
    """Marks "keep the current operation" apart from None ("no operation")."""

    KEEP = enum.auto()


def next_step(observed: Observed) -> Step:
    """The next step for this cluster (see the module docstring for the order)."""
    op = observed.operation
    sts = observed.statefulset
    if sts is None:
        return Step(Wait(REASON_WAITING_FOR_STATEFULSET, "the StatefulSet does not exist yet"), op)
    ring = ring_of(observed)
    target, refusal = _target(observed, ring, sts)

    def step(action: Action, operation: Operation | _Keep | None = _Keep.KEEP) -> Step:
        """A step keeping the operation as it now stands unless another is given."""
        return Step(action, op if isinstance(operation, _Keep) else operation, refusal)

    if target == 0:
        if sts.replicas != 0:
            return step(
                ScaleStatefulSet(
                    0,
                    sts.replicas,
                    REASON_PAUSING,
                    "pausing: stopping every pod; ring membership and volumes are kept",
                )
            )
        return step(Idle("paused: no pod runs; membership and volumes are kept", REASON_PAUSED))

    if op is not None and op.kind == "upgrade" and op.pod is not None:
        waiting = _restart_pending(observed, ring, sts, op)
        if waiting is not None:
            return step(Wait(REASON_WAITING_FOR_RESTART, waiting))
        op = None  # the restarted pod is back: the next one may go

    floor = max(target, _highest_ordinal(observed, ring.members) + 1)
    if sts.replicas < floor:
        return step(
            ScaleStatefulSet(
                floor,
                sts.replicas,
                REASON_SCALING_UP,
                f"growing the StatefulSet from {sts.replicas} to {floor} pods",
            ),
            _scale_operation(op, ring, sts, target),
        )
    if sts.replicas > floor:
        if ring.coordinator is None:
            return step(
                Wait(
                    REASON_NO_COORDINATOR,
                    "no ring member answers: cannot tell which pods are safe to remove",
                )
            )
        extra = ", ".join(observed.pod_name(i) for i in range(floor, sts.replicas))
        return step(
            ScaleStatefulSet(
                floor,
                sts.replicas,
                REASON_SCALING_DOWN,
                f"shrinking the StatefulSet from {sts.replicas} to {floor} pods: "
                f"{extra} own no partitions",
            ),
            _scale_operation(op, ring, sts, target),
        )

    unready = [
        name
        for name in map(observed.pod_name, range(sts.replicas))
        if (pod := observed.pod(name)) is None or not pod.serving or name not in observed.nodes
    ]
    if unready:
        return step(
            Wait(
                REASON_WAITING_FOR_PODS,
                f"waiting for {', '.join(unready)} to be ready and answer the admin API",
            )
        )
    coordinator = ring.coordinator
    if coordinator is None:
        return step(Wait(REASON_NO_COORDINATOR, "no node reports itself an up ring member"))
    if ring.busy is not None:
        return step(Wait(REASON_WAITING_FOR_RING, ring.busy))

    joins = tuple(
        Join(name, observed.nodes[name].address)
        for name in map(observed.pod_name, range(target))
        if name not in ring.members
    )
    leaves = tuple(
        sorted(
            (
                name
                for name in ring.members
                if (ordinal := observed.ordinal(name)) is not None and ordinal >= target
            ),
            key=lambda name: -(observed.ordinal(name) or 0),
        )
    )
    if joins or leaves:
        parts = []
        if joins:
            parts.append("join " + ", ".join(j.pod for j in joins))
        if leaves:
            parts.append("leave " + ", ".join(leaves))
        current = _scale_operation(op, ring, sts, target)
        return step(
            ChangeMembership(
                coordinator.name,
                joins,
                leaves,
                f"ring change on {coordinator.name}: {'; '.join(parts)} "
                f"({len(ring.members)} -> {target} members)",
            ),
            Operation(
                "scale",
                from_replicas=current.from_replicas,
                to_replicas=target,
                anti_entropy=True,
            ),
        )

    if op is not None and op.anti_entropy:
        nodes = tuple(sorted(ring.members, key=lambda name: observed.ordinal(name) or 0))
        return step(
            RunAntiEntropy(
                nodes,
                f"ring change settled at version {coordinator.ring_version} "
                f"({len(ring.members)} members): starting anti-entropy",
            ),
            None,
        )

    if sts.update_revision is not None:
        outdated = sorted(
            (
                p
                for p in observed.pods
                if p.ordinal < sts.replicas and p.revision != sts.update_revision
            ),
            key=lambda p: -p.ordinal,
        )
        if outdated:
            pod = outdated[0]
            hints = sum(v.hints_pending for v in observed.nodes.values())
            if hints:
                return step(
                    Wait(
                        REASON_WAITING_FOR_HINTS,
                        f"{hints} hinted write(s) still to deliver before restarting {pod.name}",
                    ),
                    None,
                )
            return step(
                RestartPod(
                    pod.name,
                    pod.uid,
                    f"restarting {pod.name} on revision {sts.update_revision} "
                    f"({len(outdated)} pod(s) outdated)",
                ),
                Operation("upgrade", pod=pod.name, pod_uid=pod.uid),
            )

    return step(
        Idle(
            f"{len(ring.members)} node(s) in the ring at version {coordinator.ring_version}",
        ),
        None,
    )


def _scale_operation(
    op: Operation | None, ring: RingView, sts: StatefulSetView, target: int
) -> Operation:
    """The scale operation towards `target`, keeping where it started from."""
    if op is not None and op.kind == "scale":
        if op.to_replicas == target:
            return op
        start = op.from_replicas
    else:
        start = len(ring.members) if ring.coordinator is not None else sts.replicas
    return Operation(
        "scale",
        from_replicas=start,
        to_replicas=target,
        anti_entropy=op is not None and op.kind == "scale" and op.anti_entropy,
    )


def _restart_pending(
    observed: Observed, ring: RingView, sts: StatefulSetView, op: Operation
) -> str | None:
    """Why the pod an upgrade restarted is not back yet, or None once it is."""
    name = op.pod
    assert name is not None
    ordinal = observed.ordinal(name)
    if ordinal is None or ordinal >= sts.replicas:
        return None  # scaled away meanwhile
    pod = observed.pod(name)
    if pod is None:
        return f"waiting for {name} to be recreated"
    if pod.uid == op.pod_uid:
        return f"waiting for {name} to shut down"
    if not pod.serving:
        return f"waiting for the restarted {name} to be ready"
    if name not in observed.nodes:
        return f"waiting for the restarted {name} to answer the admin API"
    if name in ring.down:
        return f"waiting for the ring to see the restarted {name} up"
    hints = sum(v.hints_pending for v in observed.nodes.values())
    if hints:
        return f"waiting for {hints} hinted write(s) to be delivered after restarting {name}"
    if ring.busy is not None:
        return ring.busy
    return None
