"""choose_replacement (pure): a member whose Kubernetes node is gone is replaced only
when every rule holds; each test below breaks exactly one rule of a qualifying cluster."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from dynamo_operator.builders import statefulset
from dynamo_operator.observed import (
    HostView,
    MemberView,
    NodeView,
    Observed,
    PodView,
    StatefulSetView,
)
from dynamo_operator.replacement import choose_replacement, claim_name, parse_time
from dynamo_operator.ringview import ring_of
from dynamo_operator.spec import AutoReplace, ClusterSpec, Replication
from dynamo_operator.steps import REASON_REPLACING_MEMBER, Operation, ReplaceMember

NAME = "demo"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
LONG_AGO = "2024-05-01T11:40:00Z"  # 20 minutes: longer than the default 10m
RECENT = "2024-05-01T11:55:00Z"  # 5 minutes
ON = ClusterSpec(auto_replace=AutoReplace(enabled=True))


def name(ordinal: int) -> str:
    return f"{NAME}-{ordinal}"


def host(host_name: str, *, ready: bool = True, since: str | None = LONG_AGO) -> HostView:
    return HostView(name=host_name, hostname=host_name, ready=ready, ready_since=since)


def pod_view(ordinal: int, **changes: object) -> PodView:
    base = PodView(
        name=name(ordinal),
        ordinal=ordinal,
        uid=f"uid-{ordinal}",
        ready=True,
        terminating=False,
        revision="r1",
        phase="Running",
        node_name=f"host-{ordinal}",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def node_view(own: str, states: Mapping[str, str]) -> NodeView:
    return NodeView(
        name=own,
        address=f"{own}:7070",
        state=states[own],
        ring_version=7,
        partitions=10,
        transfers=0,
        transfer_nodes=frozenset(),
        hints_pending=0,
        members=tuple(
            MemberView(m, f"{m}:7070", s, 0 if s == "joining" else 10) for m, s in states.items()
        ),
        last_anti_entropy=None,
    )


def cluster(
    replicas: int = 3,
    *,
    lost: int = 1,
    states: Mapping[str, str] | None = None,
    pods: Mapping[int, PodView] | None = None,
    hosts: Mapping[str, HostView] | None = None,
    **changes: object,
) -> Observed:
    """`replicas` pods, each on host-<ordinal>; pod `lost` is not ready since LONG_AGO,
    does not answer, the others see it down, and its host has no Node object."""
    states = dict(states or {name(i): "down" if i == lost else "up" for i in range(replicas)})
    views = {n: node_view(n, states) for n, s in states.items() if s != "down" and n != name(lost)}
    all_pods = {i: pod_view(i) for i in range(replicas)}
    all_pods[lost] = pod_view(lost, ready=False, unready_since=LONG_AGO)
    all_pods.update(pods or {})
    if hosts is None:
        hosts = {f"host-{i}": host(f"host-{i}") for i in range(replicas) if i != lost}
    base = Observed(
        name=NAME,
        requested=replicas,
        n=3,
        statefulset=StatefulSetView(replicas, replicas, replicas - 1, "r1"),
        pods=tuple(all_pods[i] for i in sorted(all_pods)),
        nodes=views,
        operation=None,
        hosts=hosts,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def decide(observed: Observed, spec: ClusterSpec = ON) -> ReplaceMember | None:
    return choose_replacement(spec, observed, ring_of(observed), NOW)


# --- the qualifying cases ---------------------------------------------------------------------


def test_a_member_whose_node_object_is_gone_is_replaced() -> None:
    action = decide(cluster())
    assert action is not None
    assert (action.pod, action.uid, action.claim, action.host) == (
        name(1),
        "uid-1",
        "data-demo-1",
        "host-1",
    )
    assert action.reason == REASON_REPLACING_MEMBER
    assert action.why == "its Kubernetes node host-1 no longer exists"
    assert "deleting PVC data-demo-1" in action.message


def test_a_member_whose_node_is_not_ready_beyond_the_grace_period_is_replaced() -> None:
    hosts = {f"host-{i}": host(f"host-{i}") for i in range(3)}
    hosts["host-1"] = host("host-1", ready=False, since=LONG_AGO)
    action = decide(cluster(hosts=hosts))
    assert action is not None and action.host == "host-1"
    assert "has not been Ready since" in action.why


def test_a_terminating_pod_stuck_on_a_gone_node_is_replaced() -> None:
    lost = pod_view(1, ready=False, unready_since=LONG_AGO, terminating=True)
    action = decide(cluster(pods={1: lost}))
    assert action is not None and action.pod == name(1)


def test_an_unschedulable_pod_whose_volume_is_on_a_vanished_node_is_replaced() -> None:
    # the pod GC removed the pod of the deleted node; the re-created one cannot schedule
    pending = pod_view(
        1, ready=False, phase="Pending", node_name=None, unschedulable_since=LONG_AGO
    )
    observed = cluster(pods={1: pending}, volume_hosts={name(1): frozenset({"host-1"})})
    action = decide(observed)
    assert action is not None and action.host == "host-1"
    assert "volume is tied to Kubernetes node host-1" in action.why


def test_larger_clusters_too() -> None:
    action = decide(cluster(5, lost=3), dataclasses.replace(ON, replicas=5))
    assert action is not None and action.pod == name(3)


# --- each rule, broken alone ---------------------------------------------------------------


def test_not_without_opting_in() -> None:
    assert decide(cluster(), ClusterSpec()) is None
    assert decide(cluster(), ClusterSpec(auto_replace=AutoReplace(enabled=False))) is None


def test_not_when_the_nodes_were_not_observed() -> None:
    assert decide(dataclasses.replace(cluster(), hosts=None)) is None


def test_not_before_the_pod_has_been_unready_for_longer_than_after() -> None:
    recent = pod_view(1, ready=False, unready_since=RECENT)
    assert decide(cluster(pods={1: recent})) is None
    unknown = pod_view(1, ready=False, unready_since=None)
    assert decide(cluster(pods={1: unknown})) is None
    longer = ClusterSpec(auto_replace=AutoReplace(enabled=True, after="30m"))
    assert decide(cluster(), longer) is None


def test_not_while_its_node_exists_and_is_ready() -> None:
    hosts = {f"host-{i}": host(f"host-{i}") for i in range(3)}
    assert decide(cluster(hosts=hosts)) is None


def test_a_node_found_by_its_hostname_label_exists() -> None:
    hosts = {f"host-{i}": host(f"host-{i}") for i in range(3) if i != 1}
    hosts["ip-10-0-0-1"] = HostView("ip-10-0-0-1", "host-1", ready=True, ready_since=LONG_AGO)
    assert decide(cluster(hosts=hosts)) is None


def test_not_while_its_node_has_been_not_ready_only_briefly() -> None:
    hosts = {f"host-{i}": host(f"host-{i}") for i in range(3)}
    hosts["host-1"] = host("host-1", ready=False, since=RECENT)
    assert decide(cluster(hosts=hosts)) is None
    hosts["host-1"] = host("host-1", ready=False, since=None)
    assert decide(cluster(hosts=hosts)) is None


def test_not_when_another_pod_is_not_ready() -> None:
    other = pod_view(2, ready=False, unready_since=LONG_AGO)
    assert decide(cluster(pods={2: other})) is None


def test_not_when_another_pod_is_missing() -> None:
    observed = cluster()
    observed = dataclasses.replace(observed, pods=observed.pods[:2])  # demo-2 gone
    assert decide(observed) is None


def test_not_when_another_pod_does_not_answer() -> None:
    observed = cluster()
    nodes = {n: v for n, v in observed.nodes.items() if n != name(2)}
    assert decide(dataclasses.replace(observed, nodes=nodes)) is None


def test_not_when_the_pod_still_answers() -> None:
    observed = cluster()
    states = {name(0): "up", name(1): "up", name(2): "up"}
    nodes = {**observed.nodes, name(1): node_view(name(1), states)}
    assert decide(dataclasses.replace(observed, nodes=nodes)) is None


def test_not_when_another_member_is_already_replacing() -> None:
    states = {name(0): "up", name(1): "down", name(2): "replacing"}
    assert decide(cluster(states=states)) is None


def test_not_when_a_member_is_leaving() -> None:
    states = {name(0): "up", name(1): "down", name(2): "leaving"}
    assert decide(cluster(states=states)) is None


def test_not_for_a_pod_that_is_no_ring_member() -> None:
    # demo-3 of a 4-pod StatefulSet never joined a ring of 3: nothing of its to refill
    observed = cluster(4, lost=3, states={name(0): "up", name(1): "up", name(2): "up"}, requested=4)
    assert decide(observed, dataclasses.replace(ON, replicas=4)) is None


def test_not_when_fewer_than_n_members_would_remain() -> None:
    one = Replication(n=1, r=1, w=1)
    spec = ClusterSpec(replicas=3, replication=one, auto_replace=AutoReplace(enabled=True))
    assert decide(cluster(n=1), spec) is not None  # the same cluster qualifies with n=1
    # demo-2 answers but has not joined yet: only 2 ring members, n=3
    small = cluster(states={name(0): "up", name(1): "down", name(2): "joining"})
    assert len(ring_of(small).members) == 2
    assert decide(small) is None


def test_not_while_paused() -> None:
    paused = ClusterSpec(replicas=0, auto_replace=AutoReplace(enabled=True))
    assert decide(cluster(requested=0), paused) is None


def test_not_while_scaling() -> None:
    assert decide(cluster(operation=Operation("scale", 3, 5))) is None
    grow = dataclasses.replace(ON, replicas=5)
    assert decide(cluster(requested=5), grow) is None  # StatefulSet not at the size asked
    # a refused request (below n): the spec is parsed as paused, requested differs
    assert decide(cluster(requested=2)) is None


def test_not_while_upgrading() -> None:
    upgrade = Operation("upgrade", pod=name(2), pod_uid="uid-2")
    assert decide(cluster(operation=upgrade)) is None


def test_not_without_a_statefulset() -> None:
    assert decide(cluster(statefulset=None)) is None


def test_unschedulable_pod_rules() -> None:
    pending = pod_view(
        1, ready=False, phase="Pending", node_name=None, unschedulable_since=LONG_AGO
    )
    tied = {name(1): frozenset({"host-1"})}
    # the volume's node still exists: it may come back
    hosts = {f"host-{i}": host(f"host-{i}", ready=False) for i in range(3)}
    hosts.update({"host-0": host("host-0"), "host-2": host("host-2")})
    assert decide(cluster(pods={1: pending}, volume_hosts=tied, hosts=hosts)) is None
    # a volume reachable from anywhere (network storage): the scheduler is the problem
    assert decide(cluster(pods={1: pending})) is None
    # unschedulable only briefly
    brief = dataclasses.replace(pending, unschedulable_since=RECENT)
    assert decide(cluster(pods={1: brief}, volume_hosts=tied)) is None
    # not Pending
    running = dataclasses.replace(pending, phase="Running")
    assert decide(cluster(pods={1: running}, volume_hosts=tied)) is None


# --- helpers -----------------------------------------------------------------------------


def test_claim_name_is_the_statefulsets() -> None:
    sts = statefulset(NAME, "kv", "uid", ClusterSpec(), replicas=3)
    (template,) = sts["spec"]["volumeClaimTemplates"]
    assert claim_name(name(1)) == f"{template['metadata']['name']}-{name(1)}" == "data-demo-1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T11:40:00Z", datetime(2024, 5, 1, 11, 40, tzinfo=UTC)),
        ("2024-05-01T11:40:00+00:00", datetime(2024, 5, 1, 11, 40, tzinfo=UTC)),
        ("2024-05-01T11:40:00", None),  # no zone: cannot be compared
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_time(text: str | None, expected: datetime | None) -> None:
    assert parse_time(text) == expected
