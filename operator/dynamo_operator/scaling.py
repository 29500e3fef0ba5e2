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
from typing import Any

from .errors import SpecError
from .observed import Observed, StatefulSetView
from .ringview import RingView, highest_ordinal, ring_of
from .spec import ClusterSpec, parse_spec
from .steps import (
    REASON_NO_COORDINATOR,
    REASON_PAUSED,
    REASON_PAUSING,
    REASON_SCALING_DOWN,
    REASON_SCALING_UP,
    REASON_WAITING_FOR_HINTS,
    REASON_WAITING_FOR_PODS,
    REASON_WAITING_FOR_RESTART,
    REASON_WAITING_FOR_RING,
    REASON_WAITING_FOR_STATEFULSET,
    Action,
    ChangeMembership,
    Idle,
    Join,
    Operation,
    RestartPod,
    RunAntiEntropy,
    ScaleStatefulSet,
    Step,
    Wait,
)

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

    floor = max(target, highest_ordinal(observed, ring.members) + 1)
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
