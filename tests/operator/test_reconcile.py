"""The pure patch computations that converge owned objects (reconcile.py)."""

from __future__ import annotations

import copy

import jsonpatch

from dynamo_operator.builders import configmap, statefulset
from dynamo_operator.reconcile import (
    MANAGED_PATHS,
    TEMPLATE_HASH_ANNOTATION,
    drift_ops,
    pointer,
    scale_ops,
    statefulset_ops,
    template_hash,
    with_template_hash,
)
from dynamo_operator.spec import parse_spec

NAME, NS, UID = "demo", "kv", "uid-1"


def test_pointer_escapes() -> None:
    assert pointer(("metadata", "annotations", "dynamokv.io/template-hash")) == (
        "/metadata/annotations/dynamokv.io~1template-hash"
    )
    assert pointer(("a~b",)) == "/a~0b"


def test_no_drift_no_ops_and_server_fields_are_left_alone() -> None:
    desired = configmap(NAME, NS, UID, parse_spec({}))
    current = copy.deepcopy(desired)
    current["metadata"].update(resourceVersion="7", uid="x", annotations={"someone": "else"})
    assert drift_ops(current, desired, MANAGED_PATHS["ConfigMap"]) == []


def test_drift_is_patched_back() -> None:
    desired = configmap(NAME, NS, UID, parse_spec({"replication": {"r": 3}}))
    current = configmap(NAME, NS, UID, parse_spec({}))
    del current["metadata"]["labels"]
    ops = drift_ops(current, desired, MANAGED_PATHS["ConfigMap"])
    assert {op["path"] for op in ops} == {"/metadata/labels", "/data"}
    patched = jsonpatch.apply_patch(current, ops)
    assert drift_ops(patched, desired, MANAGED_PATHS["ConfigMap"]) == []


def test_missing_parents_are_created() -> None:
    desired = {"metadata": {"annotations": {"a/b": "1"}}}
    ops = drift_ops({"metadata": {}}, desired, [("metadata", "annotations", "a/b")])
    assert ops == [{"op": "add", "path": "/metadata/annotations", "value": {"a/b": "1"}}]


def test_statefulset_template_change_keeps_replicas() -> None:
    old = with_template_hash(statefulset(NAME, NS, UID, parse_spec({}), replicas=5))
    current = copy.deepcopy(old)
    current["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"  # a server default
    assert statefulset_ops(current, old) == []  # compared by hash: no churn
    new = with_template_hash(statefulset(NAME, NS, UID, parse_spec({"image": "x:2"}), replicas=3))
    ops = statefulset_ops(current, new)
    paths = {op["path"] for op in ops}
    assert "/spec/template" in paths and "/spec/replicas" not in paths
    patched = jsonpatch.apply_patch(current, ops)
    assert patched["spec"]["replicas"] == 5
    assert patched["spec"]["template"]["spec"]["containers"][0]["image"] == "x:2"
    assert patched["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION] == template_hash(new)


def test_template_hash_ignores_replicas() -> None:
    spec = parse_spec({})
    assert template_hash(statefulset(NAME, NS, UID, spec, replicas=3)) == template_hash(
        statefulset(NAME, NS, UID, spec, replicas=7)
    )


def test_scale_ops_set_replicas_and_retention() -> None:
    spec = parse_spec({})
    current = statefulset(NAME, NS, UID, spec, replicas=3)
    paused = jsonpatch.apply_patch(current, scale_ops(statefulset(NAME, NS, UID, spec, replicas=0)))
    assert paused["spec"]["replicas"] == 0
    assert paused["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    resumed = jsonpatch.apply_patch(paused, scale_ops(statefulset(NAME, NS, UID, spec, replicas=5)))
    assert resumed["spec"]["replicas"] == 5
    assert resumed["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Delete"
