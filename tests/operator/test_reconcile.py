"""The pure patch computations that converge owned objects (reconcile.py)."""

from __future__ import annotations

import copy

import jsonpatch
import pytest

from dynamo_operator.builders import LABEL_MANAGED_BY, auth_secret, configmap, statefulset
from dynamo_operator.errors import ImmutableFieldError
from dynamo_operator.reconcile import (
    MANAGED_PATHS,
    TEMPLATE_HASH_ANNOTATION,
    applied_spec,
    drift_ops,
    pointer,
    scale_ops,
    secret_ops,
    statefulset_ops,
    template_hash,
    with_template_hash,
)
from dynamo_operator.spec import check_update, parse_spec

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


TOKENS = ("client-secret", "cluster-secret")


def test_a_kept_secret_is_owned_or_disowned_but_its_tokens_stay() -> None:
    kept = auth_secret(NAME, NS, "old-uid", ("old-client", "old-cluster"), owned=False)
    # created again with whenDeleted: Delete (new uid, freshly drawn tokens not used)
    owned = auth_secret(NAME, NS, UID, TOKENS, owned=True)
    ops = secret_ops(kept, owned)
    assert {op["path"] for op in ops} == {"/metadata/ownerReferences"}
    patched = jsonpatch.apply_patch(kept, ops)
    assert patched["metadata"]["ownerReferences"][0]["uid"] == UID
    assert patched["data"] == kept["data"]
    # and back to Retain: the reference is removed, the data still never touched
    ops = secret_ops(patched, auth_secret(NAME, NS, UID, TOKENS, owned=False))
    assert jsonpatch.apply_patch(patched, ops)["metadata"]["ownerReferences"] == []
    assert secret_ops(kept, auth_secret(NAME, NS, UID, TOKENS, owned=False)) == []


def test_a_secret_someone_else_made_is_never_adopted() -> None:
    theirs = auth_secret(NAME, NS, UID, TOKENS, owned=False)
    del theirs["metadata"]["labels"][LABEL_MANAGED_BY]
    assert secret_ops(theirs, auth_secret(NAME, NS, UID, TOKENS, owned=True)) == []


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


def test_applied_spec_reads_the_fixed_fields_from_the_running_objects() -> None:
    running = parse_spec({"partitions": 64, "storage": {"size": "2Gi", "storageClassName": "ssd"}})
    config, sts = configmap(NAME, NS, UID, running), statefulset(NAME, NS, UID, running, replicas=3)
    changed = parse_spec({"partitions": 128, "storage": {"size": "2Gi", "storageClassName": "ssd"}})
    applied = applied_spec(changed, config, sts)
    assert (applied.partitions, applied.storage.size, applied.storage.storage_class_name) == (
        64,
        "2Gi",
        "ssd",
    )
    with pytest.raises(ImmutableFieldError, match="partitions"):
        check_update(applied, changed)
    bigger = parse_spec({"partitions": 64, "storage": {"size": "3Gi", "storageClassName": "ssd"}})
    with pytest.raises(ImmutableFieldError, match="storage"):
        check_update(applied_spec(bigger, config, sts), bigger)
    # a quantity the API server wrote in another form is the same quantity
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    claim["resources"]["requests"]["storage"] = "2048Mi"
    check_update(applied_spec(running, config, sts), running)
    # reverting a refused change is accepted (the running objects are the reference)
    check_update(applied_spec(running, config, sts), running)
    # nothing running yet: nothing to compare against
    check_update(applied_spec(changed, None, None), changed)
    assert applied_spec(changed, {"data": {"node.json": "garbage"}}, {}).partitions == 128
