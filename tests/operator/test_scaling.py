"""The scaling machine (pure): every transition of scale up, scale down, refusal below
n, interrupted scales, restarts in the middle, pause, and rolling upgrades — driven on
the `sim.World` model, which asserts the safety invariants at each step (no pod removed
while in the ring, no ring change during transfers, the ring never below n, one pod
restarting at a time)."""

from __future__ import annotations

import dataclasses

import pytest

from dynamo_operator.errors import SpecError
from dynamo_operator.ringview import (
    ring_of,
)
from dynamo_operator.scaling import (
    next_step,
    parse_request,
)
from dynamo_operator.steps import (
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
    ChangeMembership,
    Idle,
    Join,
    Operation,
    RestartPod,
    RunAntiEntropy,
    ScaleStatefulSet,
    Wait,
)
from tests.operator.sim import World, kinds, pod


def test_no_statefulset_waits() -> None:
    world = World(requested=3)
    observed = dataclasses.replace(world.observed(), statefulset=None)
    step = next_step(observed)
    assert step.action == Wait(REASON_WAITING_FOR_STATEFULSET, "the StatefulSet does not exist yet")


def test_formation_joins_every_pod_then_anti_entropy() -> None:
    # the create handler made 3 pods; pod-0 founded a ring of one, the others are known
    world = World(requested=3, sts_replicas=3)
    for i in range(3):
        world.pods[i] = world.new_pod(ready=True)
    world.members[pod(0)] = "up"
    first = world.step()
    assert first.action == ChangeMembership(
        pod(0),
        (Join(pod(1), f"{pod(1)}:7070"), Join(pod(2), f"{pod(2)}:7070")),
        (),
        first.action.message,
    )
    assert first.operation == Operation("scale", 1, 3, anti_entropy=True)
    steps = [first, *world.run()]
    assert kinds(steps) == [
        "ChangeMembership",
        REASON_WAITING_FOR_RING,
        "RunAntiEntropy",
        "Idle",
    ]
    assert world.anti_entropy_runs == 1
    assert world.operation is None


def test_scale_up_grows_waits_joins_transfers_anti_entropy() -> None:
    world = World.running(3, requested=5)
    steps = world.run()
    assert kinds(steps) == [
        "ScaleStatefulSet",
        REASON_WAITING_FOR_PODS,
        "ChangeMembership",
        REASON_WAITING_FOR_RING,
        "RunAntiEntropy",
        "Idle",
    ]
    grow = steps[0]
    assert isinstance(grow.action, ScaleStatefulSet)
    assert (grow.action.previous, grow.action.replicas, grow.action.reason) == (
        3,
        5,
        REASON_SCALING_UP,
    )
    assert grow.operation == Operation("scale", 3, 5)
    change = next(s.action for s in steps if isinstance(s.action, ChangeMembership))
    assert [j.pod for j in change.joins] == [pod(3), pod(4)] and change.leaves == ()
    assert sorted(world.members) == [pod(i) for i in range(5)]
    assert set(world.members.values()) == {"up"}


def test_scale_down_leaves_highest_first_and_shrinks_only_after_they_left() -> None:
    world = World.running(5, requested=3)
    first = world.step()
    assert isinstance(first.action, ChangeMembership)
    assert first.action.leaves == (pod(4), pod(3))  # highest ordinals first
    assert first.action.joins == ()
    assert first.operation == Operation("scale", 5, 3, anti_entropy=True)
    assert world.sts_replicas == 5
    # while the leaving nodes still hold partitions, the StatefulSet keeps them
    while world.transfers:
        step = world.step()
        assert step.action.reason == REASON_WAITING_FOR_RING
        assert world.sts_replicas == 5
        world.settle()
    assert world.members[pod(3)] == world.members[pod(4)] == "left"
    rest = world.run()
    assert kinds(rest) == ["ScaleStatefulSet", "RunAntiEntropy", "Idle"]
    shrink = rest[0].action
    assert isinstance(shrink, ScaleStatefulSet) and shrink.reason == REASON_SCALING_DOWN
    assert (shrink.previous, shrink.replicas) == (5, 3)
    assert world.sts_replicas == 3 and sorted(world.pods) == [0, 1, 2]


@pytest.mark.parametrize("size", [3, 5])
def test_scale_below_n_is_refused_and_nothing_is_removed(size: int) -> None:
    world = World.running(size, requested=2)
    steps = world.run()
    assert all(s.refusal is not None for s in steps)
    assert "replication.n=3" in (steps[0].refusal or "")
    assert kinds(steps) == ["Idle"]
    assert world.sts_replicas == size and len(world.pods) == size
    assert set(world.members.values()) == {"up"}


def test_refused_request_during_formation_completes_to_n() -> None:
    world = World(requested=1, sts_replicas=3)
    for i in range(3):
        world.pods[i] = world.new_pod(ready=True)
    world.members[pod(0)] = "up"
    world.run()
    assert sorted(m for m, s in world.members.items() if s == "up") == [pod(i) for i in range(3)]


def test_scale_up_interrupted_before_the_joins_reverses_cleanly() -> None:
    world = World.running(3, requested=5)
    world.step()  # grow to 5
    assert world.sts_replicas == 5
    world.settle()  # pod-3 ready; pod-4 still starting
    world.requested = 4
    step = world.step()
    assert isinstance(step.action, ScaleStatefulSet)
    assert (step.action.replicas, step.action.reason) == (4, REASON_SCALING_DOWN)
    assert step.operation == Operation("scale", 3, 4)
    world.run()
    assert sorted(world.members) == [pod(i) for i in range(4)]
    assert world.sts_replicas == 4


def test_scale_up_interrupted_after_the_commit_finishes_then_leaves() -> None:
    world = World.running(3, requested=5)
    while not any(isinstance(s.action, ChangeMembership) for s in world.history):
        world.step()
        world.settle()
    assert world.transfers  # joins of pod-3 and pod-4 committed, data moving
    world.requested = 4
    step = world.step()
    assert step.action.reason == REASON_WAITING_FOR_RING  # the node cannot plan mid-transfer
    steps = world.run()
    change = next(s.action for s in steps if isinstance(s.action, ChangeMembership))
    assert change.leaves == (pod(4),) and change.joins == ()
    assert world.members[pod(4)] == "left"
    assert world.sts_replicas == 4


def test_scale_down_interrupted_by_scale_up_rejoins_without_losing_nodes() -> None:
    world = World.running(5, requested=3)
    world.step()  # leaves committed
    world.requested = 5
    world.run()
    assert world.sts_replicas == 5
    assert [world.members[pod(i)] for i in range(5)] == ["up"] * 5


def test_a_restarted_operator_takes_the_same_step_from_the_same_inputs() -> None:
    world = World.running(5, requested=3)
    while world.sts_replicas == 5:
        observed = world.observed()
        # a restart re-reads the same world: the same decision, whatever ran before
        assert next_step(observed) == next_step(observed)
        world.step()
        world.settle()
    # the persisted operation round-trips through status.operation
    for step in world.history:
        if step.operation is not None:
            assert Operation.from_dict(step.operation.to_dict()) == step.operation


def test_a_crash_between_write_ahead_and_commit_repeats_the_commit() -> None:
    world = World.running(5, requested=3)
    step = next_step(world.observed())
    assert isinstance(step.action, ChangeMembership)
    world.operation = step.operation  # persisted, then the operator died before acting
    again = next_step(world.observed())
    assert again == step


def test_a_crash_after_the_commit_still_shrinks_after_transfers_and_runs_anti_entropy() -> None:
    world = World.running(5, requested=3)
    world.step()  # write-ahead + commit done; the operator then dies and restarts
    restarted = World(**{f.name: getattr(world, f.name) for f in dataclasses.fields(World)})
    steps = restarted.run()
    assert kinds(steps) == [
        REASON_WAITING_FOR_RING,
        "ScaleStatefulSet",
        "RunAntiEntropy",
        "Idle",
    ]
    assert restarted.sts_replicas == 3


def test_no_shrink_without_a_ring_member_answering() -> None:
    world = World.running(5, requested=3)
    world.members[pod(3)] = world.members[pod(4)] = "left"
    world.silent = {pod(i) for i in range(5)}
    step = next_step(world.observed())
    assert step.action.reason == REASON_NO_COORDINATOR
    assert world.sts_replicas == 5


def test_a_down_member_blocks_membership_changes() -> None:
    world = World.running(5, requested=3)
    world.silent = {pod(1)}
    step = next_step(world.observed())
    assert isinstance(step.action, Wait) and step.action.reason == REASON_WAITING_FOR_PODS
    assert pod(1) in step.action.message


def test_a_member_seen_down_by_the_coordinator_blocks_changes() -> None:
    world = World.running(3, requested=4)
    world.step()
    world.settle()
    observed = world.observed()
    coordinator = observed.nodes[pod(0)]
    members = tuple(
        dataclasses.replace(m, state="down") if m.name == pod(2) else m for m in coordinator.members
    )
    nodes = dict(observed.nodes)
    nodes[pod(0)] = dataclasses.replace(coordinator, members=members)
    step = next_step(dataclasses.replace(observed, nodes=nodes))
    assert step.action.reason == REASON_WAITING_FOR_RING
    assert pod(2) in step.action.message


def test_ring_versions_must_agree_before_a_change() -> None:
    world = World.running(3, requested=4)
    world.step()
    world.settle()
    observed = world.observed()
    nodes = dict(observed.nodes)
    nodes[pod(1)] = dataclasses.replace(nodes[pod(1)], ring_version=0)
    step = next_step(dataclasses.replace(observed, nodes=nodes))
    assert step.action.reason == REASON_WAITING_FOR_RING


def test_ring_view_is_conservative() -> None:
    world = World.running(5)
    world.members[pod(4)] = "left"
    world.transfers, world.transferring = 2, frozenset({pod(4)})
    ring = ring_of(world.observed())
    assert pod(4) in ring.members  # a pending transfer still names it
    assert ring.coordinator is not None and ring.coordinator.name == pod(0)
    assert ring.busy is not None and "transfer" in ring.busy


def test_pause_and_resume() -> None:
    world = World.running(3, requested=0)
    steps = world.run()
    assert isinstance(steps[0].action, ScaleStatefulSet)
    assert steps[0].action.reason == REASON_PAUSING and world.sts_replicas == 0
    assert steps[-1].action.reason == REASON_PAUSED
    assert set(world.members.values()) == {"up"}  # membership kept
    world.requested = 3
    world.run()
    assert world.sts_replicas == 3
    assert world.anti_entropy_runs == 0  # no membership change, nothing to repair


def test_rolling_upgrade_one_pod_at_a_time_highest_first() -> None:
    world = World.running(3)
    world.update_revision = "r2"
    world.hints = 0
    steps = world.run()
    restarts = [s.action.pod for s in steps if isinstance(s.action, RestartPod)]
    assert restarts == [pod(2), pod(1), pod(0)]
    assert world.max_restarting == 1
    assert all(p.revision == "r2" for p in world.pods.values())
    assert world.operation is None
    assert REASON_WAITING_FOR_RESTART in kinds(steps)


def test_upgrade_waits_for_hints_before_each_restart() -> None:
    world = World.running(3)
    world.update_revision = "r2"
    world.hints = 7
    step = next_step(world.observed())
    assert isinstance(step.action, Wait) and step.action.reason == REASON_WAITING_FOR_HINTS
    assert "7 hinted" in step.action.message
    world.hints = 0
    first = world.step()
    assert isinstance(first.action, RestartPod) and first.action.pod == pod(2)
    assert first.operation == Operation("upgrade", pod=pod(2), pod_uid=first.action.uid)
    world.settle()
    world.settle()  # pod-2 back and ready, but hints accumulated while it was down
    world.hints = 4
    step = world.step()
    assert step.action.reason == REASON_WAITING_FOR_RESTART and "hinted" in step.action.message
    world.settle()  # hints delivered
    step = world.step()
    assert isinstance(step.action, RestartPod) and step.action.pod == pod(1)


def test_restart_waits_while_the_old_pod_is_still_there() -> None:
    world = World.running(3)
    world.update_revision = "r2"
    step = next_step(world.observed())
    assert isinstance(step.action, RestartPod)
    world.operation = step.operation  # written ahead; the delete not yet visible
    again = next_step(world.observed())
    assert again.action == Wait(REASON_WAITING_FOR_RESTART, f"waiting for {pod(2)} to shut down")


def test_a_finished_restart_is_cleared_even_when_the_next_step_waits() -> None:
    world = World.running(3)
    world.update_revision = "r2"
    world.step()  # restart demo-2
    world.settle()
    world.settle()  # demo-2 back
    # meanwhile the StatefulSet grew (a scale-up) and demo-3 is still starting
    world.requested = world.sts_replicas = 4
    world.pods[3] = world.new_pod()
    step = world.step()
    assert step.action.reason == REASON_WAITING_FOR_PODS
    assert step.operation is None  # the restart of demo-2 is done; nothing else started


def test_scale_completes_before_the_upgrade_continues() -> None:
    world = World.running(3, requested=4)
    world.update_revision = "r2"
    steps = world.run()
    labels = kinds(steps)
    assert labels.index("ChangeMembership") < labels.index("RestartPod")
    assert labels.index("RunAntiEntropy") < labels.index("RestartPod")
    assert all(p.revision == "r2" for p in world.pods.values())


def test_idle_when_as_asked() -> None:
    world = World.running(3)
    step = next_step(world.observed())
    assert isinstance(step.action, Idle) and step.operation is None and step.refusal is None
    assert "3 node(s) in the ring" in step.action.message


def test_anti_entropy_targets_every_member() -> None:
    world = World.running(3, requested=4)
    steps = world.run()
    ae = next(s.action for s in steps if isinstance(s.action, RunAntiEntropy))
    assert ae.nodes == tuple(pod(i) for i in range(4))


def test_parse_request_separates_a_refused_scale() -> None:
    spec, requested = parse_request({"replicas": 2})
    assert requested == 2 and spec.replication.n == 3
    spec, requested = parse_request({"replicas": 5})
    assert (spec.replicas, requested) == (5, 5)
    assert parse_request(None)[1] == 3
    with pytest.raises(SpecError):
        parse_request({"replicas": -1})
    with pytest.raises(SpecError):
        parse_request({"replicas": 3, "partitions": 3})


def test_operation_from_malformed_records() -> None:
    assert Operation.from_dict(None) is None
    assert Operation.from_dict({"kind": "teleport"}) is None
    op = Operation.from_dict({"kind": "scale", "fromReplicas": "3", "toReplicas": 5})
    assert op == Operation("scale", None, 5)
    assert Operation("upgrade", pod="demo-1", pod_uid="u").to_dict() == {
        "kind": "upgrade",
        "fromReplicas": None,
        "toReplicas": None,
        "antiEntropyPending": False,
        "pod": "demo-1",
        "podUid": "u",
    }
