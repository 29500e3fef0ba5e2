"""Kopf handlers: the operator's edge, where specs, observations and decisions meet I/O.

- `reconcile` (create, resume, update): converge the owned objects on the builders'
  output (`reconcile.py`); the StatefulSet is created at the requested size, later only
  its template changes here (its replicas belong to the scaling machine).
- `observe` (every `OperatorConfig.interval_s`, run by a `Ticker` that watch events
  start and stop, not by a Kopf timer: a timer would put Kopf's finalizer on every
  cluster): read the StatefulSet, its pods and every node's admin status, run one step
  of `scaling.next_step` (or, with `spec.autoReplace` on, the replacement
  `replacement.choose_replacement` picks: the Kubernetes Nodes are then observed too),
  and write `status`. The operation a step starts is written to
  `status.operation` *before* the step acts, so an operator killed in between finds it
  on restart.
- Deletion: no handler and no finalizer (the operator has no deletion work), so a
  cluster deleted while the operator is down goes at once. Owned objects carry owner
  references and go with the DynamoCluster; volumes follow `spec.pvcRetention` (the
  StatefulSet's PVC retention policy).

Nothing here sleeps: a failed API call raises `kopf.TemporaryError(delay=...)`, an
invalid spec `kopf.PermanentError` (with a Failed status and a warning event), and a
node that is not ready is simply observed again at the next tick.

Collaborators come from Kopf's memo (`memo.kube`, `memo.nodes`), filled at startup when
the caller did not inject them (tests inject a mock API server and loopback nodes).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from .builders import (
    API_GROUP,
    CLUSTER_TOKEN_KEY,
    auth_secret_name,
    configmap_name,
    identity_configmap_name,
    selector,
)
from .config import SCANNING_ENV, OperatorConfig
from .errors import KubeError, NodeError, SpecError
from .kube import Kube
from .nodes import NodeAdmin
from .observed import (
    HostView,
    NodeView,
    Observed,
    PodView,
    StatefulSetView,
    volume_hosts,
)
from .reconcile import (
    applied_spec,
    ensure_identity,
    ensure_owned,
    ensure_statefulset,
    scale_statefulset,
)
from .replacement import choose_replacement, claim_name
from .ringview import ring_of
from .scaling import (
    next_step,
    parse_request,
)
from .spec import ClusterSpec, check_name, check_update
from .status import (
    DEGRADED,
    PHASE_FAILED,
    REASON_SCALE_DOWN_REFUSED,
    compute_status,
    failed_status,
    find_condition,
    previous_conditions,
)
from .steps import (
    ChangeMembership,
    Idle,
    Operation,
    ReplaceMember,
    RestartPod,
    RunAntiEntropy,
    ScaleStatefulSet,
    Step,
    Wait,
)
from .ticker import Ticker

log = logging.getLogger("dynamo.operator")

GROUP = API_GROUP
VERSION = "v1alpha1"
PLURAL = "dynamoclusters"
KIND = "DynamoCluster"

CONFIG = OperatorConfig.from_env()

# Event reasons (besides the step reasons of `scaling`).
EVENT_CREATED = "Created"
EVENT_TEMPLATE_CHANGED = "TemplateChanged"
EVENT_INVALID_SPEC = "InvalidSpec"
EVENT_MEMBERSHIP_FAILED = "MembershipChangeFailed"
EVENT_ANTI_ENTROPY_UNAVAILABLE = "AntiEntropyUnavailable"
EVENT_SCALE_COMPLETE = "ScaleComplete"
EVENT_POD_RESTARTED = "PodRestarted"
EVENT_ACTION_FAILED = "ActionFailed"


@dataclass(frozen=True, slots=True)
class Services:
    """What the handlers talk to."""

    kube: Kube
    nodes: NodeAdmin
    config: OperatorConfig


def _services(memo: Any) -> Services:
    kube, nodes = memo.get("kube"), memo.get("nodes")
    if not isinstance(kube, Kube) or not isinstance(nodes, NodeAdmin):
        raise kopf.TemporaryError("the operator is still starting", delay=CONFIG.retry_delay_s)
    config = memo.get("config")
    return Services(kube, nodes, config if isinstance(config, OperatorConfig) else CONFIG)


def _namespaced(namespace: str | None) -> str:
    if not namespace:  # the CRD is namespaced: only a broken API server sends none
        raise kopf.PermanentError("a DynamoCluster must be namespaced")
    return namespace


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _generation(meta: Mapping[str, Any]) -> int:
    generation = meta.get("generation")
    return generation if isinstance(generation, int) else 0


# --- lifecycle --------------------------------------------------------------------------


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Kopf's own handler log lines are not events; the operator posts its own, explicitly.
    settings.posting.level = logging.WARNING
    if os.environ.get(SCANNING_ENV) == "off":
        settings.scanning.disabled = True
    if memo.get("kube") is None:
        memo["kube"] = await asyncio.to_thread(Kube.from_environment)
    if memo.get("nodes") is None:
        memo["nodes"] = NodeAdmin(timeout_s=CONFIG.node_timeout_s)
    config = memo.setdefault("config", CONFIG)
    interval = config.interval_s if isinstance(config, OperatorConfig) else CONFIG.interval_s

    async def tick(body: Mapping[str, Any]) -> None:
        await _tick(memo, body)

    memo["ticker"] = Ticker(tick, interval, delay_of=_temporary_delay)


def _temporary_delay(exc: BaseException) -> float | None:
    if isinstance(exc, kopf.TemporaryError):
        return exc.delay
    return None


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    ticker = memo.get("ticker")
    if isinstance(ticker, Ticker):
        await ticker.close()
    nodes = memo.get("nodes")
    if isinstance(nodes, NodeAdmin):
        await nodes.close()


# --- desired objects --------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def reconcile(
    body: kopf.Body,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    name: str,
    namespace: str | None,
    uid: str,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Converge the owned objects on the spec (level-based: any event, same result)."""
    svc = _services(memo)
    namespace = _namespaced(namespace)
    try:
        check_name(name)
        cluster_spec, requested = parse_request(spec)
        sts, config = await asyncio.gather(
            svc.kube.get("StatefulSet", namespace, name),
            svc.kube.get("ConfigMap", namespace, configmap_name(name)),
        )
        check_update(applied_spec(cluster_spec, config, sts), cluster_spec)
        if sts is None and 0 < requested < cluster_spec.replication.n:
            raise SpecError(
                "spec.replicas",
                f"must be at least replication.n ({cluster_spec.replication.n}), got {requested}",
            )
    except SpecError as exc:
        await _fail(svc, body, namespace, name, meta, status, exc)
        raise kopf.PermanentError(str(exc)) from None
    except KubeError as exc:
        raise kopf.TemporaryError(str(exc), delay=svc.config.retry_delay_s) from None

    tokens = (secrets.token_hex(32), secrets.token_hex(32))
    try:
        outcomes = await ensure_owned(svc.kube, name, namespace, uid, cluster_spec, tokens)
        outcomes[f"StatefulSet/{name}"] = await ensure_statefulset(
            svc.kube, name, namespace, uid, cluster_spec, initial_replicas=requested
        )
        recorded = status.get("clusterId")
        if isinstance(recorded, str) and recorded:
            outcomes[f"ConfigMap/{identity_configmap_name(name)}"] = await ensure_identity(
                svc.kube, name, namespace, uid, recorded
            )
    except KubeError as exc:
        raise kopf.TemporaryError(str(exc), delay=svc.config.retry_delay_s) from None
    created = sorted(key for key, outcome in outcomes.items() if outcome == "created")
    if created:
        _event(body, EVENT_CREATED, f"created {', '.join(created)}")
    if outcomes[f"StatefulSet/{name}"] == "patched":
        _event(
            body,
            EVENT_TEMPLATE_CHANGED,
            "the pod template changed: pods restart one at a time, each once the previous "
            "one is back in the ring and its hints are drained",
        )
    log.info("reconciled %s/%s: %s", namespace, name, outcomes)


async def _fail(
    svc: Services,
    body: kopf.Body,
    namespace: str,
    name: str,
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    exc: SpecError,
) -> None:
    """Report an invalid spec: a Failed status and a warning event (once per message)."""
    before = find_condition(previous_conditions(status), DEGRADED)
    if before is None or before.get("message") != str(exc):
        kopf.warn(body, reason=EVENT_INVALID_SPEC, message=str(exc))
    new = failed_status(message=str(exc), generation=_generation(meta), previous=status, now=_now())
    try:
        await _patch_status(svc, namespace, name, status, new)
    except KubeError as err:
        log.warning("could not report the invalid spec of %s/%s: %s", namespace, name, err)


# --- observe and step --------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, PLURAL)
async def watch(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Start, feed and stop the cluster's observation loop (Kopf names the kwarg `type`)."""
    ticker = memo.get("ticker")
    if isinstance(ticker, Ticker):
        ticker.seen(type, body)


async def _tick(memo: Any, raw: Mapping[str, Any]) -> None:
    body = raw if isinstance(raw, kopf.Body) else kopf.Body(cast(kopf.RawBody, dict(raw)))
    meta = body.meta
    await observe(
        body=body,
        spec=body.spec,
        meta=meta,
        status=body.status,
        name=meta.name or "",
        namespace=meta.namespace,
        uid=meta.uid or "",
        memo=memo,
    )


async def observe(
    body: kopf.Body,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    name: str,
    namespace: str | None,
    uid: str,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """One observation, one step of the scaling machine, one status update."""
    svc = _services(memo)
    namespace = _namespaced(namespace)
    generation = _generation(meta)
    if status.get("phase") == PHASE_FAILED and status.get("observedGeneration") == generation:
        return  # the spec the handlers refused has not changed: nothing to act on
    try:
        cluster_spec, requested = parse_request(spec)
    except SpecError as exc:
        await _fail(svc, body, namespace, name, meta, status, exc)
        return
    try:
        observed, token = await _observe(svc, name, namespace, cluster_spec, requested, status)
    except KubeError as exc:
        raise kopf.TemporaryError(str(exc), delay=svc.config.interval_s) from None

    step = next_step(observed)
    replacement = choose_replacement(cluster_spec, observed, ring_of(observed), datetime.now(UTC))
    if replacement is not None:
        step = Step(replacement, observed.operation, step.refusal)
    if step.refusal is not None:
        before = find_condition(previous_conditions(status), DEGRADED)
        if before is None or (
            before.get("reason"),
            before.get("message"),
        ) != (REASON_SCALE_DOWN_REFUSED, step.refusal):
            kopf.warn(body, reason=REASON_SCALE_DOWN_REFUSED, message=step.refusal)

    context = _Context(svc, body, name, namespace, uid, cluster_spec, token)
    try:
        if step.operation != observed.operation and isinstance(
            step.action, ScaleStatefulSet | ChangeMembership | RestartPod
        ):
            await _write_operation(context, step.operation)
        anti_entropy_at = await _act(context, observed, step)
    except KubeError as exc:
        kopf.warn(body, reason=EVENT_ACTION_FAILED, message=f"{step.action.message}: {exc}")
        raise kopf.TemporaryError(str(exc), delay=svc.config.interval_s) from None
    _completion_events(body, observed, step)

    new = compute_status(
        observed=observed,
        step=step,
        r=cluster_spec.replication.r,
        w=cluster_spec.replication.w,
        generation=generation,
        previous=status,
        now=_now(),
        anti_entropy_at=anti_entropy_at,
    )
    if isinstance(step.action, ReplaceMember):
        new["lastReplacement"] = {
            "pod": step.action.pod,
            "node": step.action.host,
            "reason": step.action.why,
            "at": _now(),
        }
    try:
        if new["clusterId"] is not None and new["clusterId"] != status.get("clusterId"):
            # the first formation: from now on every pod that starts knows its cluster
            await ensure_identity(svc.kube, name, namespace, uid, new["clusterId"])
            log.info("%s/%s: cluster id %s recorded", namespace, name, new["clusterId"])
        await _patch_status(svc, namespace, name, status, new)
    except KubeError as exc:
        raise kopf.TemporaryError(str(exc), delay=svc.config.interval_s) from None


async def _patch_status(
    svc: Services,
    namespace: str,
    name: str,
    current: Mapping[str, Any],
    new: Mapping[str, Any],
) -> None:
    """Merge-patch `new` into the status, unless it would change nothing (a settled
    cluster then costs no writes and no watch events)."""
    if all(current.get(key) == value for key, value in new.items()):
        return
    await svc.kube.merge_patch(KIND, namespace, name, {"status": dict(new)}, subresource="status")


@dataclass(frozen=True, slots=True)
class _Context:
    svc: Services
    body: kopf.Body
    name: str
    namespace: str
    uid: str
    spec: ClusterSpec
    token: str | None


async def _observe(
    svc: Services,
    name: str,
    namespace: str,
    spec: ClusterSpec,
    requested: int,
    status: Mapping[str, Any],
) -> tuple[Observed, str | None]:
    kube = svc.kube
    sts_object, pod_objects, token, ca_pem = await asyncio.gather(
        kube.get("StatefulSet", namespace, name),
        kube.list_objects("Pod", namespace, selector(name)),
        _cluster_token(kube, namespace, auth_secret_name(name, spec)),
        _tls_ca(kube, namespace, spec.tls_secret_name),
    )
    sts = StatefulSetView.from_object(sts_object) if sts_object is not None else None
    pods = tuple(pod for obj in pod_objects if (pod := PodView.from_object(obj, name)) is not None)
    addresses = {pod.name: svc.nodes.address(name, namespace, pod.ordinal) for pod in pods}
    svc.nodes.trust(addresses.values(), ca_pem)
    nodes: dict[str, NodeView] = {}
    for pod_name, raw in (await svc.nodes.statuses(addresses, token)).items():
        try:
            node = NodeView.from_status(raw)
        except ValueError as exc:
            log.warning("%s/%s: ignoring the status of %s: %s", namespace, name, pod_name, exc)
            continue
        if node.name != pod_name:
            log.warning("%s/%s: pod %s answers as node %r", namespace, name, pod_name, node.name)
            continue
        nodes[pod_name] = node
    hosts: dict[str, HostView] | None = None
    volumes: dict[str, frozenset[str]] = {}
    if spec.auto_replace.enabled and any(not pod.serving or pod.name not in nodes for pod in pods):
        hosts, volumes = await _observe_hosts(kube, namespace, name, pods)
    observed = Observed(
        name=name,
        requested=requested,
        n=spec.replication.n,
        statefulset=sts,
        pods=pods,
        nodes=nodes,
        operation=Operation.from_dict(status.get("operation")),
        hosts=hosts,
        volume_hosts=volumes,
    )
    return observed, token


async def _observe_hosts(
    kube: Kube, namespace: str, name: str, pods: tuple[PodView, ...]
) -> tuple[dict[str, HostView] | None, dict[str, frozenset[str]]]:
    """For `spec.autoReplace`, only while a pod is not ready: the Kubernetes Nodes, and
    for each unscheduled Pending pod the hosts its volume is tied to (its PVC and, once
    bound, its PersistentVolume). Nodes that cannot be read (no permission) are None: no
    replacement is then decided."""
    try:
        objects = await kube.list_objects("Node", None, {})
    except KubeError as exc:
        log.warning(
            "%s/%s: autoReplace is on but the Kubernetes Nodes cannot be read: %s",
            namespace,
            name,
            exc,
        )
        return None, {}
    hosts = {host.name: host for obj in objects if (host := HostView.from_object(obj))}
    volumes: dict[str, frozenset[str]] = {}
    for pod in pods:
        if pod.node_name is not None or pod.unschedulable_since is None:
            continue
        claim = await kube.get("PersistentVolumeClaim", namespace, claim_name(pod.name))
        bound = ((claim or {}).get("spec") or {}).get("volumeName")
        volume = None
        if isinstance(bound, str) and bound:
            try:
                volume = await kube.get("PersistentVolume", None, bound)
            except KubeError as exc:  # no permission: the claim's annotation may still tell
                log.warning("%s/%s: cannot read volume %s: %s", namespace, name, bound, exc)
        volumes[pod.name] = volume_hosts(claim, volume)
    return hosts, volumes


async def _tls_ca(kube: Kube, namespace: str, secret: str | None) -> str | None:
    """The CA (PEM) that signed the nodes' certificates, from spec.tls's Secret."""
    if not secret:
        return None
    obj = await kube.get("Secret", namespace, secret)
    encoded = ((obj or {}).get("data") or {}).get("ca.crt")
    if not isinstance(encoded, str):
        return None
    try:
        return base64.b64decode(encoded).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


async def _cluster_token(kube: Kube, namespace: str, secret: str) -> str | None:
    """The admin token the nodes expect (None if the Secret or key is missing yet)."""
    obj = await kube.get("Secret", namespace, secret)
    data = (obj or {}).get("data") or {}
    encoded = data.get(CLUSTER_TOKEN_KEY)
    if not isinstance(encoded, str):
        return None
    try:
        return base64.b64decode(encoded).decode().strip() or None
    except (binascii.Error, UnicodeDecodeError):
        log.warning("%s/%s: key %s is not valid base64", namespace, secret, CLUSTER_TOKEN_KEY)
        return None


async def _write_operation(context: _Context, operation: Operation | None) -> None:
    """Persist the operation a step starts before the step acts (write-ahead)."""
    record = operation.to_dict() if operation is not None else None
    await context.svc.kube.merge_patch(
        KIND,
        context.namespace,
        context.name,
        {"status": {"operation": record}},
        subresource="status",
    )


async def _act(context: _Context, observed: Observed, step: Step) -> str | None:
    """Carry out the step; returns when anti-entropy was started (None otherwise)."""
    svc, body, action = context.svc, context.body, step.action
    if isinstance(action, Wait | Idle):
        return None
    log.info("%s/%s: %s", context.namespace, context.name, action.message)
    match action:
        case ScaleStatefulSet():
            await scale_statefulset(
                svc.kube,
                context.name,
                context.namespace,
                context.uid,
                context.spec,
                action.replicas,
            )
            _event(body, action.reason, action.message)
        case ChangeMembership():
            await _change_membership(context, observed, action)
        case RunAntiEntropy():
            return await _anti_entropy(context, observed, action)
        case RestartPod():
            await svc.kube.delete("Pod", context.namespace, action.pod, uid=action.uid)
            _event(body, action.reason, action.message)
        case ReplaceMember():
            await svc.kube.delete("PersistentVolumeClaim", context.namespace, action.claim)
            await svc.kube.delete(
                "Pod", context.namespace, action.pod, uid=action.uid, grace_period_s=0
            )
            _event(body, action.reason, action.message)
    return None


async def _change_membership(
    context: _Context, observed: Observed, action: ChangeMembership
) -> None:
    ordinal = observed.ordinal(action.coordinator)
    assert ordinal is not None  # the machine picks coordinators among the pods
    address = context.svc.nodes.address(context.name, context.namespace, ordinal)
    try:
        result = await context.svc.nodes.change_membership(
            address,
            [join.address for join in action.joins],
            list(action.leaves),
            context.token,
        )
    except NodeError as exc:
        log.warning("%s/%s: %s failed: %s", context.namespace, context.name, action.message, exc)
        kopf.warn(context.body, reason=EVENT_MEMBERSHIP_FAILED, message=f"{action.message}: {exc}")
        return
    transfers = result.get("transfers")
    _event(
        context.body,
        action.reason,
        f"{action.message}; committed ring version {result.get('ring_version')}, "
        f"{transfers} partition transfer(s) to go",
    )


async def _anti_entropy(
    context: _Context, observed: Observed, action: RunAntiEntropy
) -> str | None:
    """Best effort: a node that cannot start a pass is reported, not retried."""
    started, failed = [], []
    for node in action.nodes:
        ordinal = observed.ordinal(node)
        if ordinal is None:
            continue
        address = context.svc.nodes.address(context.name, context.namespace, ordinal)
        try:
            await context.svc.nodes.start_anti_entropy(address, context.token)
        except NodeError as exc:
            failed.append(f"{node} ({exc.status or 'unreachable'})")
        else:
            started.append(node)
    if failed:
        kopf.warn(
            context.body,
            reason=EVENT_ANTI_ENTROPY_UNAVAILABLE,
            message=f"could not start anti-entropy on {', '.join(failed)}",
        )
    if not started:
        return None
    _event(context.body, action.reason, f"{action.message} on {', '.join(started)}")
    return _now()


def _completion_events(body: kopf.Body, observed: Observed, step: Step) -> None:
    before, after = observed.operation, step.operation
    if before is None or before == after:
        return
    if before.kind == "scale" and (after is None or after.kind != "scale"):
        _event(
            body,
            EVENT_SCALE_COMPLETE,
            f"scaled from {before.from_replicas} to {before.to_replicas} node(s)",
        )
    if (
        before.kind == "upgrade"
        and before.pod is not None
        and (after is None or after.pod != before.pod)
    ):
        _event(
            body,
            EVENT_POD_RESTARTED,
            f"{before.pod} is back in the ring with its peers' hints drained",
        )


def _event(body: kopf.Body, reason: str, message: str) -> None:
    """A Normal event (`kopf.event`, which is posted whatever the posting level)."""
    kopf.event(body, type="Normal", reason=reason, message=message)
