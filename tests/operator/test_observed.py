"""Parsing what the operator observes (pure): StatefulSet, pods, node admin status."""

from __future__ import annotations

import pytest

from dynamo_operator.observed import (
    HostView,
    MemberView,
    NodeView,
    PodView,
    StatefulSetView,
    pod_ordinal,
    volume_hosts,
)


def test_pod_ordinal() -> None:
    assert pod_ordinal("demo-0", "demo") == 0
    assert pod_ordinal("demo-12", "demo") == 12
    assert pod_ordinal("my-demo-3", "my-demo") == 3
    assert pod_ordinal("demo-03", "demo") is None  # not a StatefulSet ordinal
    assert pod_ordinal("other-1", "demo") is None
    assert pod_ordinal("demo", "demo") is None


def test_statefulset_revision_only_once_observed() -> None:
    obj = {
        "metadata": {"generation": 3},
        "spec": {"replicas": 5},
        "status": {
            "observedGeneration": 2,
            "replicas": 4,
            "readyReplicas": 3,
            "updateRevision": "r2",
        },
    }
    view = StatefulSetView.from_object(obj)
    assert (view.replicas, view.current_replicas, view.ready_replicas) == (5, 4, 3)
    assert view.update_revision is None  # the controller has not seen generation 3 yet
    obj["status"]["observedGeneration"] = 3
    assert StatefulSetView.from_object(obj).update_revision == "r2"
    assert StatefulSetView.from_object({}).replicas == 1  # the Kubernetes default


def test_pod_view() -> None:
    obj = {
        "metadata": {
            "name": "demo-2",
            "uid": "u2",
            "labels": {"controller-revision-hash": "r1"},
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    view = PodView.from_object(obj, "demo")
    assert view == PodView("demo-2", 2, "u2", True, False, "r1")
    assert view.serving
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    terminating = PodView.from_object(obj, "demo")
    assert terminating is not None and terminating.ready and not terminating.serving
    assert PodView.from_object({"metadata": {"name": "x-1"}}, "demo") is None
    unready = PodView.from_object({"metadata": {"name": "demo-0"}, "status": {}}, "demo")
    assert unready is not None and not unready.ready and unready.revision is None


STATUS = {
    "node": "demo-1",
    "address": "demo-1.demo-peers.kv.svc:7070",
    "peer_address": "demo-1.demo-peers.kv.svc:17070",
    "state": "up",
    "ring_version": 12,
    "members": [
        {"node": "demo-0", "address": "a0", "state": "up", "partitions": 86},
        {"node": "demo-1", "address": "a1", "state": "up", "partitions": 85},
        {"node": "demo-3", "address": "a3", "state": "leaving", "partitions": 85},
    ],
    "partitions": list(range(85)),
    "hints_pending": 2,
    "transfers": [
        {"partition": 7, "from": "demo-3", "to": "demo-0", "keys_done": 1, "keys_total": 9}
    ],
    "last_anti_entropy": None,
}


def test_node_view_from_status() -> None:
    view = NodeView.from_status(STATUS)
    assert (view.name, view.state, view.ring_version, view.partitions) == ("demo-1", "up", 12, 85)
    assert (view.transfers, view.transfer_nodes, view.hints_pending) == (
        1,
        frozenset({"demo-3", "demo-0"}),
        2,
    )
    assert view.member("demo-3") == MemberView("demo-3", "a3", "leaving", 85)
    assert view.member("nobody") is None
    assert view.last_anti_entropy is None


@pytest.mark.parametrize("missing", ["node", "state", "ring_version"])
def test_node_view_rejects_a_status_without_essentials(missing: str) -> None:
    raw = {k: v for k, v in STATUS.items() if k != missing}
    with pytest.raises(ValueError, match="malformed"):
        NodeView.from_status(raw)


def test_node_view_tolerates_odd_optional_fields() -> None:
    view = NodeView.from_status(
        {
            "node": "n",
            "state": "joining",
            "ring_version": "0",
            "members": [{"x": 1}, "junk"],
            "transfers": None,
        }
    )
    assert view.members == () and view.transfers == 0 and view.partitions == 0


# --- where pods run (spec.autoReplace) ------------------------------------------------------


def test_pod_view_placement() -> None:
    obj = {
        "metadata": {"name": "demo-1", "uid": "u1"},
        "spec": {"nodeName": "host-a"},
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "False", "lastTransitionTime": "2024-05-01T11:00:00Z"},
                {"type": "PodScheduled", "status": "True"},
            ],
        },
    }
    view = PodView.from_object(obj, "demo")
    assert view is not None
    assert (view.phase, view.node_name, view.unready_since) == (
        "Running",
        "host-a",
        "2024-05-01T11:00:00Z",
    )
    assert view.unschedulable_since is None
    obj["status"]["conditions"][0]["status"] = "True"
    ready = PodView.from_object(obj, "demo")
    assert ready is not None and ready.ready and ready.unready_since is None


def test_pod_view_unschedulable() -> None:
    obj = {
        "metadata": {"name": "demo-1"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "lastTransitionTime": "2024-05-01T11:00:00Z",
                }
            ],
        },
    }
    view = PodView.from_object(obj, "demo")
    assert view is not None
    assert (view.node_name, view.unschedulable_since) == (None, "2024-05-01T11:00:00Z")
    obj["status"]["conditions"][0]["reason"] = "SchedulerError"
    other = PodView.from_object(obj, "demo")
    assert other is not None and other.unschedulable_since is None


def test_host_view() -> None:
    obj = {
        "metadata": {"name": "ip-10-0-0-1", "labels": {"kubernetes.io/hostname": "worker-1"}},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {
                    "type": "Ready",
                    "status": "Unknown",
                    "lastTransitionTime": "2024-05-01T11:00:00Z",
                },
            ]
        },
    }
    assert HostView.from_object(obj) == HostView(
        "ip-10-0-0-1", "worker-1", ready=False, ready_since="2024-05-01T11:00:00Z"
    )
    assert HostView.from_object({"metadata": {}}) is None
    assert HostView.from_object({"metadata": {"name": "h"}}) == HostView("h", None, False, None)


def test_volume_hosts() -> None:
    local_pv = {
        "spec": {
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": ["w1"],
                                },
                                {"key": "zone", "operator": "In", "values": ["z1"]},
                            ]
                        }
                    ]
                }
            }
        }
    }
    claim = {"metadata": {"annotations": {"volume.kubernetes.io/selected-node": "w2"}}}
    assert volume_hosts(None, local_pv) == {"w1"}
    assert volume_hosts(claim, None) == {"w2"}
    assert volume_hosts(claim, local_pv) == {"w1", "w2"}
    assert volume_hosts({}, {"spec": {}}) == frozenset()  # network storage: anywhere
    assert volume_hosts(None, None) == frozenset()
