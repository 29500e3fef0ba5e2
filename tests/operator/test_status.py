"""The status computation (pure): phase, the three conditions and their transition
times, members, ring version, replica counts, selector, lastAntiEntropy."""

from __future__ import annotations

import dataclasses
from typing import Any

from dynamo_operator.observed import Observed
from dynamo_operator.ringview import ring_of
from dynamo_operator.scaling import (
    next_step,
)
from dynamo_operator.status import (
    AVAILABLE,
    DEGRADED,
    PHASE_CREATING,
    PHASE_DEGRADED,
    PHASE_FAILED,
    PHASE_PAUSED,
    PHASE_PENDING,
    PHASE_RUNNING,
    PHASE_SCALING,
    PHASE_UPGRADING,
    PROGRESSING,
    REASON_INVALID_SPEC,
    REASON_MEMBERS_DOWN,
    REASON_MEMBERS_REPLACING,
    REASON_QUORUM_AT_RISK,
    REASON_QUORUM_AVAILABLE,
    REASON_SCALE_DOWN_REFUSED,
    REASON_TOO_FEW_NODES,
    cluster_id,
    compute_status,
    condition,
    failed_status,
    find_condition,
)
from tests.operator.sim import World, pod

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"


def status_of(
    world: World | Observed, previous: dict[str, Any] | None = None, now: str = T0, **kw: Any
) -> dict[str, Any]:
    observed = world.observed() if isinstance(world, World) else world
    return compute_status(
        observed=observed,
        step=next_step(observed),
        r=2,
        w=2,
        generation=4,
        previous=previous,
        now=now,
        **kw,
    )


def cond(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found = find_condition(status["conditions"], kind)
    assert found is not None
    return dict(found)


def test_a_settled_cluster_is_running_and_available() -> None:
    status = status_of(World.running(3))
    assert status["phase"] == PHASE_RUNNING
    assert status["replicas"] == status["readyReplicas"] == 3
    assert status["selector"] == "app.kubernetes.io/instance=demo,app.kubernetes.io/name=dynamokv"
    assert status["observedGeneration"] == 4
    assert status["ringVersion"] == 1
    assert status["operation"] is None
    assert [m["name"] for m in status["members"]] == [pod(0), pod(1), pod(2)]
    assert status["members"][0] == {
        "name": pod(0),
        "address": f"{pod(0)}:7070",
        "state": "up",
        "partitions": 8,
    }
    available = cond(status, AVAILABLE)
    assert (available["status"], available["reason"]) == ("True", REASON_QUORUM_AVAILABLE)
    assert available["observedGeneration"] == 4 and available["lastTransitionTime"] == T0
    assert cond(status, PROGRESSING)["status"] == "False"
    assert cond(status, DEGRADED)["status"] == "False"


def test_transition_time_kept_while_status_unchanged() -> None:
    world = World.running(3)
    first = status_of(world, now=T0)
    second = status_of(world, previous=first, now=T1)
    assert cond(second, AVAILABLE)["lastTransitionTime"] == T0
    world.requested = 5  # now progressing: that condition flips, the others stay
    third = status_of(world, previous=second, now=T1)
    assert cond(third, PROGRESSING)["status"] == "True"
    assert cond(third, PROGRESSING)["lastTransitionTime"] == T1
    assert cond(third, AVAILABLE)["lastTransitionTime"] == T0


def test_condition_keeps_time_only_for_the_same_status() -> None:
    before = [{"type": "X", "status": "True", "lastTransitionTime": T0}]
    same = condition("X", "True", "R", "m", now=T1, generation=1, previous=before)
    flipped = condition("X", "False", "R", "m", now=T1, generation=1, previous=before)
    assert same["lastTransitionTime"] == T0 and flipped["lastTransitionTime"] == T1


def test_scaling_phase_and_progressing_reason() -> None:
    world = World.running(3, requested=5)
    status = status_of(world)
    assert status["phase"] == PHASE_SCALING
    progressing = cond(status, PROGRESSING)
    assert (progressing["status"], progressing["reason"]) == ("True", "ScalingUp")
    assert status["operation"]["kind"] == "scale" and status["operation"]["toReplicas"] == 5


def test_creating_until_the_ring_has_n_members() -> None:
    world = World(requested=3, sts_replicas=3)
    for i in range(3):
        world.pods[i] = world.new_pod(ready=True)
    world.members[pod(0)] = "up"
    status = status_of(world)
    assert status["phase"] == PHASE_CREATING
    available = cond(status, AVAILABLE)
    assert (available["status"], available["reason"]) == ("False", REASON_TOO_FEW_NODES)


def test_pending_without_an_answering_ring_member() -> None:
    world = World(requested=3, sts_replicas=3)
    for i in range(3):
        world.pods[i] = world.new_pod(ready=False)
    status = status_of(world)
    assert status["phase"] == PHASE_PENDING
    assert status["ringVersion"] is None and status["members"] == []


def test_refused_scale_down_is_degraded_with_reason() -> None:
    status = status_of(World.running(3, requested=2))
    degraded = cond(status, DEGRADED)
    assert (degraded["status"], degraded["reason"]) == ("True", REASON_SCALE_DOWN_REFUSED)
    assert "replication.n=3" in degraded["message"]
    assert status["phase"] == PHASE_DEGRADED
    assert cond(status, AVAILABLE)["status"] == "True"  # still serving


def test_one_member_down_is_degraded_but_available_two_is_at_risk() -> None:
    world = World.running(5)
    world.silent = {pod(3)}
    status = status_of(world)
    assert cond(status, AVAILABLE)["status"] == "True"  # N=3, R=W=2 tolerate one
    assert cond(status, DEGRADED)["reason"] == REASON_MEMBERS_DOWN
    world.silent = {pod(3), pod(4)}
    status = status_of(world)
    available = cond(status, AVAILABLE)
    assert (available["status"], available["reason"]) == ("False", REASON_QUORUM_AT_RISK)


def test_upgrading_phase() -> None:
    world = World.running(3)
    world.update_revision = "r2"
    assert status_of(world)["phase"] == PHASE_UPGRADING
    world.hints = 3
    assert status_of(world)["phase"] == PHASE_UPGRADING  # waiting for hints first


def test_paused() -> None:
    world = World.running(3, requested=0)
    world.sts_replicas = 0
    world.pods.clear()
    status = status_of(world)
    assert status["phase"] == PHASE_PAUSED
    assert cond(status, AVAILABLE)["reason"] == "Paused"


def test_left_members_are_not_listed() -> None:
    world = World.running(4)
    world.members[pod(3)] = "left"
    world.sts_replicas = 3
    del world.pods[3]
    assert [m["name"] for m in status_of(world)["members"]] == [pod(0), pod(1), pod(2)]


def test_a_remembered_node_whose_pod_never_joined_is_not_listed() -> None:
    world = World.running(3)
    world.members[pod(4)] = "joining"  # known by gossip, its pod since removed
    names = [m["name"] for m in status_of(world)["members"]]
    assert names == [pod(0), pod(1), pod(2)]
    world.pods[3] = world.new_pod(ready=True)  # a pod that is joining is listed
    world.sts_replicas = 4
    world.members[pod(3)] = "joining"
    members = {m["name"]: m["state"] for m in status_of(world)["members"]}
    assert members[pod(3)] == "joining" and pod(4) not in members


def test_last_anti_entropy_is_the_latest_known() -> None:
    world = World.running(3)
    assert status_of(world)["lastAntiEntropy"] is None
    assert status_of(world, {"lastAntiEntropy": T0}, anti_entropy_at=T1)["lastAntiEntropy"] == T1
    observed = world.observed()
    nodes = {
        k: dataclasses.replace(v, last_anti_entropy="2027-01-01T00:00:00Z")
        for k, v in observed.nodes.items()
    }
    observed = dataclasses.replace(observed, nodes=nodes)
    status = compute_status(
        observed=observed,
        step=next_step(observed),
        r=2,
        w=2,
        generation=1,
        previous={"lastAntiEntropy": T1},
        now=T1,
    )
    assert status["lastAntiEntropy"] == "2027-01-01T00:00:00Z"


def test_failed_status_keeps_available_and_marks_degraded() -> None:
    previous = status_of(World.running(3))
    failed = failed_status(message="spec.partitions: bad", generation=5, previous=previous, now=T1)
    assert failed["phase"] == PHASE_FAILED
    degraded = cond(failed, DEGRADED)
    assert (degraded["status"], degraded["reason"]) == ("True", REASON_INVALID_SPEC)
    assert cond(failed, AVAILABLE)["lastTransitionTime"] == T0
    assert [c["type"] for c in failed["conditions"]].count(DEGRADED) == 1


def _reporting(world: World, clusters: dict[str, str | None]) -> Observed:
    observed = world.observed()
    nodes = {
        name: dataclasses.replace(view, cluster=clusters.get(name))
        for name, view in observed.nodes.items()
    }
    return dataclasses.replace(observed, nodes=nodes)


def test_cluster_id_is_recorded_once_the_nodes_agree_and_then_kept() -> None:
    world = World.running(3)
    assert cluster_id(_reporting(world, {}), None) is None
    # a node that has not learned the ring yet (None) does not count
    agreeing = _reporting(world, {pod(0): "c1", pod(1): "c1", pod(2): None})
    assert cluster_id(agreeing, None) == "c1"
    # two ids (a node that founded a cluster of its own): nothing is recorded
    split = _reporting(world, {pod(0): "c1", pod(1): "c2"})
    assert cluster_id(split, None) is None
    # once recorded, what the nodes say never replaces it
    assert cluster_id(split, {"clusterId": "c1"}) == "c1"
    assert cluster_id(_reporting(world, {pod(0): "c9"}), {"clusterId": "c1"}) == "c1"
    assert status_of(agreeing)["clusterId"] == "c1"


def test_a_member_refilling_after_a_lost_volume_is_degraded_and_blocks_changes() -> None:
    world = World.running(3)
    world.members[pod(2)] = "replacing"
    status = status_of(world)
    degraded = cond(status, DEGRADED)
    assert (degraded["status"], degraded["reason"]) == ("True", REASON_MEMBERS_REPLACING)
    assert pod(2) in degraded["message"]
    assert pod(2) in [m["name"] for m in status["members"]]
    # no membership change (nor a pod restart) while it refills
    busy = ring_of(world.observed()).busy
    assert busy is not None and "refilling" in busy
