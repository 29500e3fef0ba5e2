"""A pure, deterministic model of a dynamokv cluster under a StatefulSet, for driving the
scaling machine step by step without processes or an API server.

`World` holds what Kubernetes and the nodes would hold (StatefulSet replicas, pods,
ring membership, pending transfers and hints) and renders it as the operator observes
it (`observed()`); `apply(step)` plays the step's effect, and `settle()` advances time
(pods become ready, transfers finish, leaving nodes become "left"). `run()` alternates
them until the machine idles, checking safety invariants on every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dynamo_operator.observed import (
    MemberView,
    NodeView,
    Observed,
    PodView,
    StatefulSetView,
)
from dynamo_operator.scaling import (
    next_step,
)
from dynamo_operator.steps import (
    ChangeMembership,
    Idle,
    Operation,
    RestartPod,
    RunAntiEntropy,
    ScaleStatefulSet,
    Step,
    Wait,
)

NAME = "demo"
PARTITIONS_EACH = 8


def pod(ordinal: int) -> str:
    return f"{NAME}-{ordinal}"


@dataclass
class PodState:
    uid: str
    revision: str
    ready: bool = False
    warmup: int = 0  # settles to wait before getting ready


@dataclass
class World:
    requested: int
    n: int = 3
    sts_replicas: int = 0
    update_revision: str = "r1"
    pods: dict[int, PodState] = field(default_factory=dict)
    #: ring membership by node: joining (known, owns nothing), up, leaving, left
    members: dict[str, str] = field(default_factory=dict)
    transfers: int = 0
    transferring: frozenset[str] = frozenset()
    hints: int = 0
    ring_version: int = 1
    operation: Operation | None = None
    #: pods whose node does not answer although the pod exists (e.g. crashed)
    silent: set[str] = field(default_factory=set)
    uids: int = 0
    history: list[Step] = field(default_factory=list)
    anti_entropy_runs: int = 0
    restarting: set[str] = field(default_factory=set)
    max_restarting: int = 0

    # --- construction -------------------------------------------------------------------
    @classmethod
    def running(cls, size: int, n: int = 3, requested: int | None = None) -> World:
        """A settled cluster of `size` nodes, all up, all in the ring."""
        world = cls(requested=size if requested is None else requested, n=n)
        world.sts_replicas = size
        for i in range(size):
            world.pods[i] = world.new_pod(ready=True)
            world.members[pod(i)] = "up"
        return world

    def new_pod(self, ready: bool = False) -> PodState:
        self.uids += 1
        return PodState(uid=f"uid-{self.uids}", revision=self.update_revision, ready=ready)

    # --- what the operator sees ---------------------------------------------------------
    def _answering(self) -> list[str]:
        return [
            pod(i) for i, p in sorted(self.pods.items()) if p.ready and pod(i) not in self.silent
        ]

    def member_views(self) -> tuple[MemberView, ...]:
        answering = set(self._answering())
        views = []
        for name, state in sorted(self.members.items()):
            shown = state
            if state not in ("left",) and name not in answering:
                shown = "down"
            partitions = PARTITIONS_EACH if state in ("up", "leaving", "replacing") else 0
            views.append(MemberView(name, f"{name}:7070", shown, partitions))
        return tuple(views)

    def observed(self) -> Observed:
        members = self.member_views()
        nodes = {}
        for name in self._answering():
            own = self.members.get(name, "joining")
            nodes[name] = NodeView(
                name=name,
                address=f"{name}:7070",
                state=own,
                ring_version=self.ring_version if own in ("up", "leaving", "replacing") else 0,
                partitions=PARTITIONS_EACH if own in ("up", "leaving", "replacing") else 0,
                transfers=self.transfers,
                transfer_nodes=self.transferring if self.transfers else frozenset(),
                hints_pending=self.hints if name == pod(0) else 0,
                members=members,
                last_anti_entropy=None,
            )
        pods = tuple(
            PodView(pod(i), i, p.uid, p.ready, False, p.revision)
            for i, p in sorted(self.pods.items())
        )
        sts = StatefulSetView(
            replicas=self.sts_replicas,
            current_replicas=len(self.pods),
            ready_replicas=sum(p.ready for p in self.pods.values()),
            update_revision=self.update_revision,
        )
        return Observed(NAME, self.requested, self.n, sts, pods, nodes, self.operation)

    # --- effects --------------------------------------------------------------------------
    def apply(self, step: Step) -> None:
        self.history.append(step)
        self.operation = step.operation
        action = step.action
        match action:
            case ScaleStatefulSet():
                if action.replicas < self.sts_replicas:
                    for i in range(action.replicas, self.sts_replicas):
                        state = self.members.get(pod(i))
                        # a pause (0) stops pods but keeps their volumes and membership
                        assert action.replicas == 0 or state not in ("up", "leaving"), (
                            f"removed {pod(i)}, a ring member"
                        )
                        self.pods.pop(i, None)
                self.sts_replicas = action.replicas
                for i in range(self.sts_replicas):
                    self.pods.setdefault(i, self.new_pod())
            case ChangeMembership():
                assert self.transfers == 0, "a ring change while transfers are pending"
                for join in action.joins:
                    self.members[join.pod] = "up"
                for name in action.leaves:
                    self.members[name] = "leaving"
                remaining = [m for m, s in self.members.items() if s == "up"]
                assert len(remaining) >= self.n, f"ring below n: {remaining}"
                self.transfers = 3
                self.transferring = frozenset(j.pod for j in action.joins) | frozenset(
                    action.leaves
                )
                self.ring_version += 1
            case RunAntiEntropy():
                self.anti_entropy_runs += 1
            case RestartPod():
                ordinal = int(action.pod.rsplit("-", 1)[1])
                assert not self.restarting, f"{action.pod} restarted while {self.restarting} is"
                assert self.pods[ordinal].uid == action.uid
                self.pods[ordinal] = self.new_pod()
                self.pods[ordinal].warmup = 1  # a restart takes a while
                self.restarting.add(action.pod)
            case Wait() | Idle():
                pass
        down = [i for i, p in self.pods.items() if not p.ready and pod(i) in self.members]
        self.max_restarting = max(self.max_restarting, len(down))

    def settle(self) -> None:
        """Time passes: pods get ready (known as joining), transfers finish, hints drain."""
        for i, p in self.pods.items():
            if not p.ready:
                if p.warmup:
                    p.warmup -= 1
                    return
                p.ready = True
                self.restarting.discard(pod(i))
                return  # one pod at a time, so tests see the intermediate states
        if self.transfers:
            self.transfers -= 1
            if not self.transfers:
                for name, state in self.members.items():
                    if state == "leaving":
                        self.members[name] = "left"
                self.ring_version += 1
            return
        if self.hints:
            self.hints = 0

    def step(self) -> Step:
        step = next_step(self.observed())
        self.apply(step)
        return step

    def run(self, limit: int = 60) -> list[Step]:
        """Step and settle until the machine idles twice in a row (nothing left to do)."""
        steps: list[Step] = []
        for _ in range(limit):
            step = self.step()
            steps.append(step)
            if (
                isinstance(step.action, Idle)
                and len(steps) > 1
                and isinstance(steps[-2].action, Idle)
            ):
                return steps
            self.settle()
        raise AssertionError(f"no idle after {limit} steps: {[s.action for s in steps[-5:]]}")


def kinds(steps: list[Step]) -> list[str]:
    """The step actions, consecutive duplicates collapsed, waits by reason."""
    out: list[str] = []
    for step in steps:
        action = step.action
        label = action.reason if isinstance(action, Wait) else type(action).__name__
        if not out or out[-1] != label:
            out.append(label)
    return out
