"""What the scaling machine decides (pure data): the actions, the step that carries
one, and the operation record persisted in `status.operation`.

Every action has a CamelCase `reason` (an event's and the Progressing condition's
reason) and a human `message`. The handlers carry actions out; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

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
REASON_REPLACING_MEMBER = "ReplacingMember"
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
class ReplaceMember:
    """Delete this pod's claim, then the pod (uid as a precondition, no grace period:
    its Kubernetes node is gone), so the StatefulSet re-creates it with an empty volume
    and the node refills itself from its peers (`replacement.choose_replacement`)."""

    pod: str
    uid: str
    claim: str
    #: the Kubernetes node that is gone (the pod's, or the one its volume is tied to)
    host: str
    #: why it qualifies (one sentence)
    why: str
    message: str
    reason: str = REASON_REPLACING_MEMBER


@dataclass(frozen=True, slots=True)
class Idle:
    """The cluster is as asked."""

    message: str
    reason: str = REASON_STABLE


Action = (
    Wait | ScaleStatefulSet | ChangeMembership | RunAntiEntropy | RestartPod | ReplaceMember | Idle
)


@dataclass(frozen=True, slots=True)
class Step:
    """What to do now, the operation to persist (before acting), and a refusal if the
    requested size was refused."""

    action: Action
    operation: Operation | None
    refusal: str | None = None
