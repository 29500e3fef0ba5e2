"""The DynamoCluster's `status`, computed from what was observed and decided (pure).

`compute_status` returns the status fields the operator owns, ready for a JSON merge
patch: a field that no longer applies is None (the patch deletes it). Lists (members,
conditions) are always written whole.

Conditions follow the Kubernetes conventions: one entry per type, `status` "True",
"False" or "Unknown", a CamelCase `reason`, and `lastTransitionTime` that changes only
when `status` does (reason and message may change in between).
- Available: every key can meet the default quorums: the ring has at least N members
  and no more are down than N - max(R, W) (so each preference list keeps max(R, W)
  live replicas).
- Progressing: the operator is working towards the spec (scaling, waiting for a ring
  change, restarting a pod); False once idle.
- Degraded: a ring member is down, a scale request was refused, or the spec is invalid.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .builders import selector_string
from .observed import (
    NodeView,
    Observed,
)
from .ringview import (
    RingView,
    ring_of,
)
from .steps import (
    REASON_WAITING_FOR_HINTS,
    ChangeMembership,
    Idle,
    RestartPod,
    RunAntiEntropy,
    ScaleStatefulSet,
    Step,
    Wait,
)

AVAILABLE = "Available"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CONDITION_TYPES = (AVAILABLE, PROGRESSING, DEGRADED)

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"

PHASE_PENDING = "Pending"
PHASE_CREATING = "Creating"
PHASE_RUNNING = "Running"
PHASE_SCALING = "Scaling"
PHASE_UPGRADING = "Upgrading"
PHASE_PAUSED = "Paused"
PHASE_DEGRADED = "Degraded"
PHASE_FAILED = "Failed"

REASON_QUORUM_AVAILABLE = "QuorumAvailable"
REASON_QUORUM_AT_RISK = "QuorumAtRisk"
REASON_TOO_FEW_NODES = "TooFewNodes"
REASON_NO_RING = "NoRing"
REASON_PAUSED = "Paused"
REASON_SCALE_DOWN_REFUSED = "ScaleDownRefused"
REASON_MEMBERS_DOWN = "MembersDown"
REASON_MEMBERS_REPLACING = "MembersReplacing"
REASON_AS_EXPECTED = "AsExpected"
REASON_INVALID_SPEC = "InvalidSpec"


def condition(
    kind: str,
    status: str,
    reason: str,
    message: str,
    *,
    now: str,
    generation: int,
    previous: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """One condition, keeping the previous `lastTransitionTime` if `status` is unchanged."""
    before = find_condition(previous, kind)
    since = now
    if before is not None and before.get("status") == status and before.get("lastTransitionTime"):
        since = str(before["lastTransitionTime"])
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def find_condition(conditions: Iterable[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if isinstance(c, Mapping) and c.get("type") == kind), None)


def previous_conditions(previous_status: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    raw = (previous_status or {}).get("conditions")
    return [c for c in raw if isinstance(c, Mapping)] if isinstance(raw, list) else []


def compute_status(
    *,
    observed: Observed,
    step: Step,
    r: int,
    w: int,
    generation: int,
    previous: Mapping[str, Any] | None,
    now: str,
    anti_entropy_at: str | None = None,
) -> dict[str, Any]:
    """The status after this observation and step.

    `anti_entropy_at` is when the shell started anti-entropy successfully in this step
    (None when it did not or could not); `lastAntiEntropy` is the latest of that, the
    previous value and what the nodes report. `now` is an RFC 3339 UTC time.
    """
    ring = ring_of(observed)
    sts = observed.statefulset
    before = previous_conditions(previous)
    paused = observed.requested == 0

    available, degraded = _available(observed, ring, r, w, paused), _degraded(step, ring)
    progressing = (
        (FALSE, step.action.reason, step.action.message)
        if isinstance(step.action, Idle)
        else (TRUE, step.action.reason, step.action.message)
    )

    def cond(kind: str, value: tuple[str, str, str]) -> dict[str, Any]:
        return condition(kind, *value, now=now, generation=generation, previous=before)

    # ring members, and nodes that are pods of the cluster (joining ones included); not
    # a node that left, nor one the nodes still remember from a pod that never joined
    source = ring.coordinator or _any_view(observed)
    members = (
        [
            {"name": m.name, "address": m.address, "state": m.state, "partitions": m.partitions}
            for m in source.members
            if m.state != "left" and (m.name in ring.members or observed.pod(m.name) is not None)
        ]
        if source is not None
        else []
    )
    return {
        "phase": _phase(observed, step, ring, paused, degraded[0] == TRUE),
        "replicas": sts.current_replicas if sts is not None else 0,
        "readyReplicas": sts.ready_replicas if sts is not None else 0,
        "selector": selector_string(observed.name),
        "clusterId": cluster_id(observed, previous),
        "ringVersion": ring.coordinator.ring_version if ring.coordinator is not None else None,
        "members": members,
        "conditions": [
            cond(AVAILABLE, available),
            cond(PROGRESSING, progressing),
            cond(DEGRADED, degraded),
        ],
        "lastAntiEntropy": _latest(
            [
                (previous or {}).get("lastAntiEntropy"),
                anti_entropy_at,
                *(v.last_anti_entropy for v in observed.nodes.values()),
            ]
        ),
        "observedGeneration": generation,
        "operation": step.operation.to_dict() if step.operation is not None else None,
    }


def cluster_id(observed: Observed, previous: Mapping[str, Any] | None) -> str | None:
    """`status.clusterId`: once recorded, kept for good; before that, the id every node
    that knows a ring reports, once they agree on one (the first formation)."""
    recorded = (previous or {}).get("clusterId")
    if isinstance(recorded, str) and recorded:
        return recorded
    reported = {v.cluster for v in observed.nodes.values() if v.cluster is not None}
    return reported.pop() if len(reported) == 1 else None


def failed_status(
    *, message: str, generation: int, previous: Mapping[str, Any] | None, now: str
) -> dict[str, Any]:
    """The status of a resource whose spec the operator cannot act on."""
    before = previous_conditions(previous)

    def cond(kind: str, status: str) -> dict[str, Any]:
        return condition(
            kind,
            status,
            REASON_INVALID_SPEC,
            message,
            now=now,
            generation=generation,
            previous=before,
        )

    kept = [c for c in before if c.get("type") not in (PROGRESSING, DEGRADED)]
    return {
        "phase": PHASE_FAILED,
        "observedGeneration": generation,
        "conditions": [*kept, cond(PROGRESSING, FALSE), cond(DEGRADED, TRUE)],
    }


def _any_view(observed: Observed) -> NodeView | None:
    views = sorted(observed.nodes.values(), key=lambda v: observed.ordinal(v.name) or 0)
    return views[0] if views else None


def _available(
    observed: Observed, ring: RingView, r: int, w: int, paused: bool
) -> tuple[str, str, str]:
    n = observed.n
    if paused:
        return FALSE, REASON_PAUSED, "the cluster is paused (spec.replicas is 0)"
    if ring.coordinator is None:
        return FALSE, REASON_NO_RING, "no node answers as an up member of the ring"
    active = len(ring.active)
    if active < n:
        return (
            FALSE,
            REASON_TOO_FEW_NODES,
            f"{active} node(s) in the ring; replication.n={n} needs at least {n}",
        )
    tolerated = n - max(r, w)
    down = len(ring.down)
    if down > tolerated:
        return (
            FALSE,
            REASON_QUORUM_AT_RISK,
            f"{down} ring member(s) down; quorums R={r}, W={w} of N={n} tolerate {tolerated}",
        )
    return (
        TRUE,
        REASON_QUORUM_AVAILABLE,
        f"{active} node(s) in the ring serve every key at R={r}, W={w} (N={n})",
    )


def _degraded(step: Step, ring: RingView) -> tuple[str, str, str]:
    if step.refusal is not None:
        return TRUE, REASON_SCALE_DOWN_REFUSED, step.refusal
    if ring.down:
        names = ", ".join(sorted(ring.down))
        return TRUE, REASON_MEMBERS_DOWN, f"ring member(s) down or not answering: {names}"
    if ring.replacing:
        names = ", ".join(sorted(ring.replacing))
        return (
            TRUE,
            REASON_MEMBERS_REPLACING,
            f"ring member(s) refilling after a lost volume, counted in no quorum: {names}",
        )
    return FALSE, REASON_AS_EXPECTED, "every ring member is up"


def _phase(observed: Observed, step: Step, ring: RingView, paused: bool, degraded: bool) -> str:
    action, op = step.action, step.operation
    if paused:
        return PHASE_PAUSED
    if observed.statefulset is None or ring.coordinator is None:
        return PHASE_PENDING
    if len(ring.active) < observed.n:
        return PHASE_CREATING
    if (op is not None and op.kind == "scale") or isinstance(
        action, ScaleStatefulSet | ChangeMembership | RunAntiEntropy
    ):
        return PHASE_SCALING
    if (
        (op is not None and op.kind == "upgrade")
        or isinstance(action, RestartPod)
        or (isinstance(action, Wait) and action.reason == REASON_WAITING_FOR_HINTS)
    ):
        return PHASE_UPGRADING
    if degraded:
        return PHASE_DEGRADED
    return PHASE_RUNNING


def _latest(times: Iterable[object]) -> str | None:
    """The latest of some RFC 3339 UTC times (same format, so they sort as strings)."""
    valid = [t for t in times if isinstance(t, str) and t]
    return max(valid) if valid else None
