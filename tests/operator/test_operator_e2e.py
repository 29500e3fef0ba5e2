"""End to end: Kopf runs the operator in-process against kmock, and every pod the
StatefulSet should have is a real dynamo-node process (tests/operator/kmock_harness.py).

What each test proves:
- the minimal example becomes an Available 3-node cluster with every owned object in
  place and owned (StatefulSet, both Services, PDB, ConfigMap) and the generated Secret
  kept with the retained volumes; it carries no finalizer (an old one of Kopf's is
  dropped), so deleting it while the operator is not running completes at once, and
  the garbage collector takes what it owned;
- deleted and created again with retained volumes, a cluster comes back with its data,
  its ring and its tokens; switched to `whenDeleted: Delete`, the Secret becomes owned
  and goes with the next delete, and so do the volumes;
- an invalid spec fails permanently (Failed phase, InvalidSpec event, nothing built)
  until the user fixes it;
- a scale below replication.n is refused (Degraded/ScaleDownRefused, a warning event)
  and nothing is removed; a valid request afterwards clears it; a change to partitions
  is refused (Failed) without touching anything, and reverting it recovers;
- 3 -> 5 -> 3 -> 4 through the scale subresource moves data first: keys stay readable
  with R = N, status.members matches the ring, the StatefulSet shrinks only after the
  leaving nodes own nothing, and a node that left (volume deleted) rejoins empty;
- 3 -> 5 interrupted by 4 settles at 4 without getting stuck;
- an operator stopped in the middle of a scale-down finishes it when restarted;
- a rolling upgrade restarts one pod at a time (highest ordinal first), never two down,
  each only after the previous is back and hints are drained, and loses no data.
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dynamo_operator.builders import CONFIG_HASH_ANNOTATION
from tests.operator.conftest import CLUSTERS, Env, minimal_example
from tests.operator.kmock_harness import INTERVAL_S, eventually

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

NAME = "demo"
#: the finalizer Kopf puts on objects that have a timer, a daemon or a deletion handler
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


#: the other tests use fewer partitions than the example's 256: the node transfers and
#: gossips each partition on its own, which makes every ring change take seconds
SMALL_Q = 32


def example(**spec: Any) -> dict[str, Any]:
    """The minimal example with a smaller ring and these spec fields."""
    manifest = minimal_example()
    manifest["spec"] = {"partitions": SMALL_Q, **spec}
    return manifest


def pods(count: int) -> list[str]:
    return [f"{NAME}-{i}" for i in range(count)]


def owned(obj: dict[str, Any] | None, uid: str) -> bool:
    assert obj is not None
    refs = obj["metadata"].get("ownerReferences", [])
    return any(r["uid"] == uid and r["kind"] == "DynamoCluster" and r["controller"] for r in refs)


async def test_minimal_example_becomes_available(env: Env) -> None:
    created = await env.create(minimal_example())
    uid = created["metadata"]["uid"]
    status = await env.wait_stable(NAME, 3, timeout=120)

    kubelet = env.kubelet
    sts = env.statefulset(NAME)
    assert owned(sts, uid) and sts is not None
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["updateStrategy"] == {"type": "OnDelete"}
    for resource, name in [
        ("v1/services", NAME),
        ("v1/services", f"{NAME}-peers"),
        ("policy/v1/poddisruptionbudgets", NAME),
        ("v1/configmaps", f"{NAME}-config"),
    ]:
        assert owned(kubelet.object(resource, name), uid), (resource, name)
    # the volumes are retained (whenDeleted: Retain by default), and so are the tokens
    assert kubelet.object("v1/secrets", f"{NAME}-auth") is not None
    assert not owned(kubelet.object("v1/secrets", f"{NAME}-auth"), uid)

    assert status["selector"] == "app.kubernetes.io/instance=demo,app.kubernetes.io/name=dynamokv"
    assert status["observedGeneration"] == created["metadata"]["generation"]
    await env.assert_members_match_ring(NAME, status, pods(3))
    reasons = [e["reason"] for e in env.events()]
    for reason in ("Created", "MembershipChange", "AntiEntropy", "ScaleComplete"):
        assert reason in reasons, reasons
    # auth is on: the admin API refuses the client token
    code, _ = await env.node(
        pods(1)[0], "GET", "/v1/admin/status", env.secret_value(NAME, "client-token")
    )
    assert code == 403

    # default resources: the node sized its row cache from the pod's memory limit (1Gi,
    # through the downward API), not from the machine it runs on
    code, text = await env.node(
        pods(1)[0], "GET", "/metrics", env.secret_value(NAME, "cluster-token")
    )
    assert code == 200, text
    limits = [
        float(line.split()[1])
        for line in text.decode().splitlines()
        if line.startswith("dynamo_row_cache_limit_bytes ")
    ]
    assert limits == [2**30 // 8], limits

    # the cluster id is recorded once, and every pod started from now on gets it
    node_status = await env.admin(NAME, pods(1)[0], "status")
    await env.wait_status(NAME, 20, "the cluster id recorded", clusterId=node_status["cluster"])
    identity = kubelet.object("v1/configmaps", f"{NAME}-identity")
    assert identity is not None and owned(identity, uid)
    assert identity["data"] == {"cluster-id": node_status["cluster"]}
    # so demo-0, everybody's seed, coming back with an empty volume rejoins this
    # cluster instead of founding one of its own
    written = await env.put_keys(NAME, pods(2)[1], 30)
    await kubelet._stop(kubelet.running.pop(pods(1)[0]))
    shutil.rmtree(kubelet.data_dir(pods(1)[0]))
    assert not kubelet.data_dir(pods(1)[0]).exists()

    async def rejoined() -> bool:
        try:
            view = await env.admin(NAME, pods(1)[0], "status")
        except (AssertionError, OSError):
            return False
        assert view["cluster"] in (None, node_status["cluster"]), view["cluster"]
        return bool(view["cluster"] == node_status["cluster"])

    await eventually(rejoined, 30, "demo-0 to rejoin its cluster", interval=0.1)
    await env.wait_stable(NAME, 3, timeout=60)
    code, _ = await env.node(
        pods(1)[0], "POST", "/v1/admin/anti-entropy", env.secret_value(NAME, "cluster-token")
    )
    assert code in (200, 202), code
    await env.assert_readable(NAME, pods(1)[0], written)

    # no finalizer: the operator has no deletion work. A cluster made by the previous
    # release carries Kopf's (it came with the timer): the operator drops it.
    assert not (await env.cluster(NAME))["metadata"].get("finalizers")
    await env.patch(f"{CLUSTERS}/{NAME}", {"metadata": {"finalizers": [KOPF_FINALIZER]}})

    async def finalizer_dropped() -> bool:
        return not (await env.cluster(NAME))["metadata"].get("finalizers")

    await eventually(finalizer_dropped, 20, "the operator to drop Kopf's old finalizer")

    # deleted while the operator is not running: nothing holds it in Terminating, and
    # the garbage collector (the harness plays it) takes what it owned
    await env.operator.stop()
    await delete_cluster(env)


async def delete_cluster(env: Env) -> None:
    """`kubectl delete dyc demo`; wait until its StatefulSet is gone and no node runs."""
    async with env.api.delete(f"{CLUSTERS}/{NAME}") as resp:
        assert resp.status < 300, await resp.text()
    assert await env.get(f"{CLUSTERS}/{NAME}") is None

    async def collected() -> bool:
        env.check()
        return env.statefulset(NAME) is None and not env.kubelet.running

    await eventually(collected, 30, "the StatefulSet and its pods to be collected")
    owned_objects = [
        ("v1/services", NAME),
        ("v1/services", f"{NAME}-peers"),
        ("policy/v1/poddisruptionbudgets", NAME),
        ("v1/configmaps", f"{NAME}-config"),
    ]
    await eventually(
        lambda: all(env.kubelet.object(*obj) is None for obj in owned_objects),
        10,
        "the owned objects to be collected",
    )


async def test_recreated_cluster_keeps_data_ring_and_tokens(env: Env) -> None:
    await env.create(example())
    await env.wait_stable(NAME, 3, timeout=60)
    written = await env.put_keys(NAME, pods(1)[0], 50)
    tokens = {key: env.secret_value(NAME, key) for key in ("client-token", "cluster-token")}
    ring_before = (await env.admin(NAME, pods(1)[0], "ring"))["partitions"]

    await delete_cluster(env)
    # retained: the volumes (data directories) and the Secret, no longer owned by anyone
    secret = env.kubelet.object("v1/secrets", f"{NAME}-auth")
    assert secret is not None and not secret["metadata"]["ownerReferences"], secret
    assert all((env.kubelet.root / "data" / pod).is_dir() for pod in pods(3))

    created = await env.create(example())
    status = await env.wait_stable(NAME, 3, timeout=90)
    await env.assert_members_match_ring(NAME, status, pods(3))
    assert {key: env.secret_value(NAME, key) for key in tokens} == tokens
    # the nodes started on their own ring: nothing was re-founded, no partition moved
    assert (await env.admin(NAME, pods(1)[0], "ring"))["partitions"] == ring_before
    await env.assert_readable(NAME, f"{NAME}-2", written)

    # whenDeleted: Delete — the kept Secret becomes owned, and goes with the volumes
    uid = created["metadata"]["uid"]
    await env.patch(f"{CLUSTERS}/{NAME}", {"spec": {"pvcRetention": {"whenDeleted": "Delete"}}})

    def switched() -> bool:
        sts = env.statefulset(NAME)
        policy = (sts or {}).get("spec", {}).get("persistentVolumeClaimRetentionPolicy", {})
        secret = env.kubelet.object("v1/secrets", f"{NAME}-auth")
        return policy.get("whenDeleted") == "Delete" and owned(secret, uid)

    await eventually(switched, 20, "the Secret owned and the StatefulSet's policy Delete")
    await delete_cluster(env)
    await eventually(
        lambda: (
            env.kubelet.object("v1/secrets", f"{NAME}-auth") is None
            and not any((env.kubelet.root / "data" / pod).exists() for pod in pods(3))
        ),
        10,
        "the Secret and the volumes to go",
    )


async def test_invalid_spec_fails_permanently(env: Env) -> None:
    await env.create(example(partitions=3))
    status = await env.wait_status(NAME, 20, "Failed", phase="Failed", degraded=True)
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "InvalidSpec" and "spec.partitions" in degraded["message"]
    await eventually(lambda: env.events("InvalidSpec"), 10, "an InvalidSpec event")
    assert env.events("InvalidSpec")[0]["type"] == "Warning"
    assert env.statefulset(NAME) is None
    # fixing the spec is an update the handlers accept: the cluster gets built
    await env.patch(f"{CLUSTERS}/{NAME}", {"spec": {"partitions": SMALL_Q}})
    await env.wait_stable(NAME, 3, timeout=60)


async def test_scale_below_n_is_refused(env: Env) -> None:
    await env.create(example())
    await env.wait_stable(NAME, 3, timeout=60)
    await env.scale(NAME, 2)
    status = await env.wait_status(
        NAME, 20, "the refusal", phase="Degraded", degraded=True, available=True
    )
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "ScaleDownRefused" and "replication.n=3" in degraded["message"]
    events = await eventually(lambda: env.events("ScaleDownRefused"), 10, "a refusal event")
    assert events[0]["type"] == "Warning"
    assert events[0]["involvedObject"]["name"] == NAME
    # nothing was removed, and the refusal is not repeated on every observation
    sts = env.statefulset(NAME)
    assert sts is not None and sts["spec"]["replicas"] == 3
    assert len(status["members"]) == 3 and {m["state"] for m in status["members"]} == {"up"}
    await env.scale(NAME, 3)
    await env.wait_stable(NAME, 3, timeout=20)
    assert len(env.events("ScaleDownRefused")) == 1

    # a change to a field fixed at creation is refused too (the CRD's CEL rules stop it
    # in a real cluster; kmock does not run them), and reverting it is accepted
    config = env.kubelet.object("v1/configmaps", f"{NAME}-config")
    await env.patch(f"{CLUSTERS}/{NAME}", {"spec": {"partitions": 2 * SMALL_Q}})
    status = await env.wait_status(NAME, 20, "the refused change", phase="Failed")
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert "partitions is immutable" in degraded["message"]
    assert env.kubelet.object("v1/configmaps", f"{NAME}-config") == config
    await env.patch(f"{CLUSTERS}/{NAME}", {"spec": {"partitions": SMALL_Q}})
    await env.wait_stable(NAME, 3, timeout=20)


@pytest.mark.slow
async def test_scale_up_and_down_moves_data_first(env: Env) -> None:
    await env.create(example())
    await env.wait_stable(NAME, 3, timeout=60)
    written = await env.put_keys(NAME, pods(1)[0], 300)

    await env.scale(NAME, 5)
    status = await env.wait_stable(NAME, 5, timeout=90)
    await env.assert_members_match_ring(NAME, status, pods(5))
    await env.assert_readable(NAME, f"{NAME}-4", written)
    joined = [e for e in env.events("MembershipChange") if "join demo-3, demo-4" in e["message"]]
    assert joined, [e["message"] for e in env.events("MembershipChange")]

    # 5 -> 3: watch the StatefulSet never shrink before both leaving nodes own nothing
    await env.scale(NAME, 3)
    left: set[str] = set()
    violations: list[str] = []

    async def shrunk() -> bool:
        env.check()
        sts = env.statefulset(NAME)
        assert sts is not None
        try:
            view = await env.admin(NAME, pods(1)[0], "status")
        except (AssertionError, OSError):
            view = {"members": []}
        for member in view["members"]:
            if (
                member["node"] in ("demo-3", "demo-4")
                and member["state"] == "left"
                and member["partitions"] == 0
            ):
                left.add(member["node"])
        if sts["spec"]["replicas"] < 5 and left != {"demo-3", "demo-4"}:
            violations.append(f"replicas {sts['spec']['replicas']} while left={left}")
        return bool(sts["spec"]["replicas"] == 3)

    await eventually(shrunk, 60, "the StatefulSet to shrink to 3", interval=0.05)
    assert not violations, violations
    status = await env.wait_stable(NAME, 3, timeout=60)
    await env.assert_members_match_ring(NAME, status, pods(3))
    await env.assert_readable(NAME, f"{NAME}-0", written)

    # the order of the membership steps, as events (resourceVersion order); Kopf posts
    # events in the background, so the last one may land after the status
    def in_order() -> bool:
        events = env.events()
        reasons = [e["reason"] for e in events]
        leave = max(
            i
            for i, e in enumerate(events)
            if e["reason"] == "MembershipChange" and "leave demo-4, demo-3" in e["message"]
        )
        shrink = max(i for i, r in enumerate(reasons) if r == "ScalingDown")
        assert leave < shrink, reasons
        return shrink < max(i for i, r in enumerate(reasons) if r == "AntiEntropy")

    await eventually(in_order, 10, "an AntiEntropy event after the shrink")

    # and up again: demo-3 left with its volume deleted, so it rejoins empty
    assert not (env.kubelet.root / "data" / "demo-3").exists()
    await env.scale(NAME, 4)
    status = await env.wait_stable(NAME, 4, timeout=90)
    await env.assert_members_match_ring(NAME, status, pods(4))
    await env.assert_readable(NAME, f"{NAME}-3", written)


@pytest.mark.slow
async def test_operator_restart_in_the_middle_of_a_scale_down(env: Env) -> None:
    await env.create(example(replicas=5))
    await env.wait_stable(NAME, 5, timeout=90)
    written = await env.put_keys(NAME, pods(1)[0], 200)

    # hold the StatefulSet shrink back (the API refuses it), so the operator is
    # deterministically caught between the committed leaves and the shrink
    env.emulator.refuse = lambda request: (
        request.resource is not None
        and request.resource.plural == "statefulsets"
        and request.subresource is None
        and request.method == "PATCH"
    )
    await env.scale(NAME, 3)
    await eventually(
        lambda: [e for e in env.events("ActionFailed") if "shrinking" in e["message"]],
        60,
        "the operator to reach the shrink",
    )
    await env.operator.stop()
    env.emulator.refuse = None

    # in the middle: the leaving nodes own nothing, the StatefulSet still has 5 pods,
    # and the operation is on record
    sts = env.statefulset(NAME)
    assert sts is not None and sts["spec"]["replicas"] == 5
    view = await env.admin(NAME, pods(1)[0], "status")
    states = {m["node"]: (m["state"], m["partitions"]) for m in view["members"]}
    assert states["demo-3"] == states["demo-4"] == ("left", 0)
    operation = (await env.cluster(NAME))["status"]["operation"]
    assert operation["kind"] == "scale" and operation["toReplicas"] == 3
    assert operation["antiEntropyPending"] is True

    await env.operator.start()
    status = await env.wait_stable(NAME, 3, timeout=60)
    assert env.operator.starts == 2
    sts = env.statefulset(NAME)
    assert sts is not None and sts["spec"]["replicas"] == 3
    await env.assert_members_match_ring(NAME, status, pods(3))
    await env.assert_readable(NAME, f"{NAME}-2", written)
    assert env.events("AntiEntropy"), "the restarted operator ran the owed anti-entropy"


@pytest.mark.slow
async def test_rolling_upgrade_one_pod_at_a_time(env: Env) -> None:
    await env.create(example())
    await env.wait_stable(NAME, 3, timeout=60)
    written = await env.put_keys(NAME, pods(1)[0], 100)
    before = {p: env.kubelet.object("v1/pods", p) for p in pods(3)}
    env.kubelet.max_unready = 0
    mark = len(env.kubelet.timeline)

    await env.patch(
        f"{CLUSTERS}/{NAME}", {"spec": {"image": "dynamokv/node:0.2.0", "replication": {"r": 3}}}
    )

    async def upgraded() -> bool:
        env.check()
        objs = [env.kubelet.object("v1/pods", p) for p in pods(3)]
        return all(
            o is not None
            and o["spec"]["containers"][0]["image"] == "dynamokv/node:0.2.0"
            and o["metadata"]["uid"] != before[o["metadata"]["name"]]["metadata"]["uid"]
            for o in objs
        )

    await eventually(upgraded, 120, "every pod on the new image")
    status = await env.wait_stable(NAME, 3, timeout=60)
    assert env.kubelet.max_unready <= 1, "two pods were down at once"

    timeline = [
        (event, pod)
        for _, event, pod in env.kubelet.timeline[mark:]
        if event in ("stopped", "ready")
    ]
    assert [pod for event, pod in timeline if event == "stopped"] == ["demo-2", "demo-1", "demo-0"]
    # each pod is stopped only after the previous one is ready again
    assert timeline == [
        ("stopped", "demo-2"), ("ready", "demo-2"),
        ("stopped", "demo-1"), ("ready", "demo-1"),
        ("stopped", "demo-0"), ("ready", "demo-0"),
    ]  # fmt: skip
    restarted = [e["message"] for e in env.events("PodRestarted")]
    assert len(restarted) == 3, restarted
    pod0 = env.kubelet.object("v1/pods", "demo-0")
    assert pod0 is not None
    config_map = env.kubelet.object("v1/configmaps", f"{NAME}-config")
    assert config_map is not None and '"r":3' in config_map["data"]["node.json"]
    sts = env.statefulset(NAME)
    assert sts is not None
    template_hash = sts["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
    assert pod0["metadata"]["annotations"][CONFIG_HASH_ANNOTATION] == template_hash
    await env.assert_members_match_ring(NAME, status, pods(3))
    await env.assert_readable(NAME, f"{NAME}-0", written)


@pytest.mark.slow
async def test_scale_up_interrupted_by_a_smaller_scale_settles_without_getting_stuck(
    env: Env,
) -> None:
    await env.create(example())
    await env.wait_stable(NAME, 3, timeout=60)
    written = await env.put_keys(NAME, pods(1)[0], 100)

    await env.scale(NAME, 5)
    await eventually(lambda: env.events("ScalingUp"), 20, "the StatefulSet to grow")
    await env.scale(NAME, 4)  # while demo-3 and demo-4 start (or join)
    status = await env.wait_stable(NAME, 4, timeout=90)
    sts = env.statefulset(NAME)
    assert sts is not None and sts["spec"]["replicas"] == 4
    await env.assert_members_match_ring(NAME, status, pods(4))
    await env.assert_readable(NAME, f"{NAME}-3", written)
    assert env.kubelet.object("v1/pods", f"{NAME}-4") is None


async def _lose_host(env: Env, pod: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Delete the Node object `pod` runs on (its machine is gone: the kubelet stops the
    process), then backdate the pod's Ready transition by 20 minutes, as if that had
    been long ago. Returns the pod and its claim as they were."""
    kubelet = env.kubelet
    before = kubelet.object("v1/pods", pod)
    claim = kubelet.object("v1/persistentvolumeclaims", f"data-{pod}")
    assert before is not None and claim is not None
    host = before["spec"]["nodeName"]
    async with env.api.delete(f"/api/v1/nodes/{host}") as resp:
        assert resp.status < 300, await resp.text()
    await eventually(lambda: pod not in kubelet.running, 30, f"{pod}'s process to stop")
    long_ago = (datetime.now(UTC) - timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await env.patch(
        f"/api/v1/namespaces/{env.namespace}/pods/{pod}/status",
        {
            "status": {
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": long_ago}]
            }
        },
    )
    return before, claim


async def test_auto_replace_replaces_a_member_whose_node_is_gone(env: Env) -> None:
    await env.create(example(autoReplace={"enabled": True, "after": "10m"}))
    await env.wait_stable(NAME, 3, timeout=120)
    written = await env.put_keys(NAME, pods(3)[0], 30)
    lost = pods(3)[1]
    before, claim = await _lose_host(env, lost)

    async def replaced() -> dict[str, Any] | None:
        env.check()
        status = (await env.cluster(NAME)).get("status") or {}
        record = status.get("lastReplacement")
        return dict(record) if record else None

    record = await eventually(replaced, 60, f"{lost} to be replaced")
    assert record["pod"] == lost and record["node"] == before["spec"]["nodeName"]
    assert "no longer exists" in record["reason"]
    (event,) = env.events("ReplacingMember")
    assert lost in event["message"] and f"data-{lost}" in event["message"]

    # a new claim and a new pod on another Kubernetes node, which refills and is up again
    def recreated() -> dict[str, Any] | None:
        pod = env.kubelet.object("v1/pods", lost)
        return pod if pod and pod["metadata"]["uid"] != before["metadata"]["uid"] else None

    after = await eventually(recreated, 30, f"{lost} re-created")
    assert after["spec"]["nodeName"] != before["spec"]["nodeName"]
    new_claim = env.kubelet.object("v1/persistentvolumeclaims", f"data-{lost}")
    assert new_claim is not None and new_claim["metadata"]["uid"] != claim["metadata"]["uid"]
    await env.wait_stable(NAME, 3, timeout=120)
    await env.assert_readable(NAME, lost, written)
    assert len(env.events("ReplacingMember")) == 1  # one replacement, not a loop


async def test_without_auto_replace_a_member_whose_node_is_gone_is_left_alone(
    env: Env,
) -> None:
    await env.create(example())
    await env.wait_stable(NAME, 3, timeout=120)
    lost = pods(3)[1]
    before, claim = await _lose_host(env, lost)
    await env.wait_status(NAME, 30, f"{lost} seen down", degraded=True)
    await asyncio.sleep(10 * INTERVAL_S)  # many observations
    status = (await env.cluster(NAME)).get("status") or {}
    assert "lastReplacement" not in status
    assert env.events("ReplacingMember") == []
    pod = env.kubelet.object("v1/pods", lost)
    assert pod is not None and pod["metadata"]["uid"] == before["metadata"]["uid"]
    now_claim = env.kubelet.object("v1/persistentvolumeclaims", f"data-{lost}")
    assert now_claim is not None and now_claim["metadata"]["uid"] == claim["metadata"]["uid"]
