"""Kopf in-process against kmock, with a "kubelet" that runs real dynamo-node processes.

Three parts:

- `KubeEmulator`: kmock's Kubernetes emulator, fixed where stock kmock 0.8 differs from
  a real API server in ways Kopf and the operator notice: every write gets a new
  `resourceVersion` (one counter for all objects, as etcd's revision) and a uid,
  creationTimestamp and generation (bumped when `spec` changes); lists report the
  current version and watches start *after* the version asked for instead of
  replaying everything; a failed JSON-patch `test` answers 422 (Kopf's optimistic
  concurrency), a stale `resourceVersion` or uid precondition 409; the status and scale
  subresources behave as documented (a status write changes only `status`, a main write
  never does; `/scale` reads and writes a `Scale` mapped onto `spec.replicas`);
  `generateName` and label selectors work. kmock 0.8 also cannot parse
  `/api/v1/namespaces` (Kopf's namespace observer lists it): `_parse_path` fixes that.
- `Kubelet`: plays the StatefulSet controller and the kubelet for the namespace: for
  each pod a StatefulSet should have (`<name>-0..replicas-1`) it creates the Pod
  (labelled with the template's revision) and starts a real `dynamo-node` (node id =
  pod name, seed = pod-0's address, config from the ConfigMap, tokens from the Secret the
  template names), marks it Ready once `/readyz` answers, schedules every new pod onto a
  Kubernetes Node of its own (a Node object `host-<n>`, created for it) with a claim
  `data-<pod>` (a PVC object: a pod created while its claim is missing gets a fresh,
  empty data directory), stops a pod whose Node object is deleted (its machine is gone:
  the pod stays, not Ready, and is not restarted there), restarts a pod whose object was
  deleted (OnDelete upgrades), and on scale-down deletes the pod, stops its process and
  drops its data directory when the PVC retention says Delete (`whenScaled`; and
  `whenDeleted` once the StatefulSet itself is gone). It also plays the garbage
  collector (background propagation): an object all of whose owners are gone is
  deleted. Every process is stopped by PID at the end.
- `OperatorRunner`: `kopf.operator(standalone=True, stop_flag=...)` in a thread with its
  own event loop (when Kopf stops it cancels every task its loop gained since it
  started, which in the test's loop would be pytest's), logged in to the mock by an
  `@kopf.on.login` handler, with the collaborators (Kubernetes client, node admin client
  with a loopback resolver) injected through Kopf's memo; it can be stopped and started
  again (operator restarts).
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import collections
import contextlib
import copy
import datetime
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import kmock
import yaml
from kmock._internal import parsing as kmock_parsing
from kmock._internal.aiobus import Bus

from dynamo_operator.config import INTERVAL_ENV, OperatorConfig
from tests.harness import free_port

# The handlers read the observation interval when they import: set it before importing them.
INTERVAL_S = 0.5
os.environ.setdefault(INTERVAL_ENV, str(INTERVAL_S))

import kopf  # noqa: E402

import dynamo_operator.handlers  # noqa: E402, F401  (registers the handlers)
from dynamo_operator.builders import pod_name  # noqa: E402
from dynamo_operator.kube import Kube  # noqa: E402
from dynamo_operator.nodes import NodeAdmin  # noqa: E402

log = logging.getLogger("tests.kmock_harness")

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "dynamoclusters.yaml"
EXAMPLES = ROOT / "crds" / "examples"

CORE_RESOURCES: dict[str, tuple[str, set[str]]] = {
    # resource: (kind, subresources)
    "v1/namespaces": ("Namespace", {"status"}),
    "v1/pods": ("Pod", {"status"}),
    "v1/services": ("Service", {"status"}),
    "v1/configmaps": ("ConfigMap", set()),
    "v1/secrets": ("Secret", set()),
    "v1/events": ("Event", set()),
    "v1/persistentvolumeclaims": ("PersistentVolumeClaim", {"status"}),
    "v1/nodes": ("Node", {"status"}),
    "apps/v1/statefulsets": ("StatefulSet", {"status", "scale"}),
    "policy/v1/poddisruptionbudgets": ("PodDisruptionBudget", {"status"}),
    "events.k8s.io/v1/events": ("Event", set()),
}
CLUSTER_SCOPED = {"v1/namespaces", "v1/nodes"}
CRD_RESOURCE = "apiextensions.k8s.io/v1/customresourcedefinitions"
DYNAMO_RESOURCE = "dynamokv.io/v1alpha1/dynamoclusters"
VERBS = {"create", "delete", "get", "list", "patch", "update", "watch"}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (None deletes; lists replace)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def to_scale(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The autoscaling/v1 Scale view of an object with spec.replicas/status.replicas."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {"replicas": status.get("replicas", 0), "selector": status.get("selector", "")},
    }


def _rv(event: Mapping[str, Any]) -> int:
    try:
        return int(event["object"]["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return 0


def _selector_matches(obj: Mapping[str, Any], selector: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


_stock_parse_path = kmock_parsing.parse_path


def _parse_path(path: str) -> Any:
    """kmock 0.8 reads `/api/v1/namespaces[/NAME]` as a namespaced path with no plural
    (and fails on the bare list, which Kopf's namespace observer calls): parse it as the
    cluster-scoped `namespaces` resource, as the API server does."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        name = parts[3] if len(parts) == 4 else None
        return kmock_parsing.ParsedPath("", "v1", "namespaces", None, name, None)
    return _stock_parse_path(path)


kmock_parsing.parse_path = _parse_path


class RecordingBus(Bus[Any]):
    """A kmock bus that also keeps every event, so a watch can start from a version."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[Any] = []

    async def put(self, *items: Any) -> None:
        self.history.extend(items)
        await super().put(*items)


class KubeEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with resource versions, versioned watches and real patch errors."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._revision = 0
        self._write_lock = asyncio.Lock()
        self._buses = collections.defaultdict(RecordingBus)
        #: a test's fault injection: requests it returns True for get a 503
        self.refuse: Callable[[kmock.Request], bool] | None = None

    # --- writes --------------------------------------------------------------------------
    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if self.refuse is not None and self.refuse(request):
            raise kmock.KubernetesError(503, "ServiceUnavailable", "refused by the test")
        writes = (kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE)
        if request.resource is None or request.action not in writes:
            return await super()._handle(request)
        async with self._write_lock:
            self._revision += 1
            self._prepare(request, str(self._revision))
            return await super()._handle(request)

    @staticmethod
    def _rewrite(request: kmock.Request, data: Any) -> None:
        # kmock routes a request by identity (the one it recorded), so the frozen request
        # is rewritten in place rather than replaced with an evolved copy
        object.__setattr__(request, "data", data)

    def _prepare(self, request: kmock.Request, rv: str) -> None:
        key = (request.resource, request.namespace, request.name)
        if request.action == kmock.action.CREATE:
            data = copy.deepcopy(request.data) if isinstance(request.data, dict) else {}
            meta = data.setdefault("metadata", {})
            if request.namespace and not meta.get("namespace"):
                meta["namespace"] = request.namespace
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
            meta.update(
                uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1, resourceVersion=rv
            )
            self._rewrite(request, data)
            return
        if key not in self._objects or self._objects[key].deleted:
            return  # kmock answers 404
        current = copy.deepcopy(self._objects[key].raw)
        if request.action == kmock.action.DELETE:
            uid = (
                ((request.data or {}).get("preconditions") or {}).get("uid")
                if isinstance(request.data, dict)
                else None
            )
            if uid and uid != current["metadata"].get("uid"):
                raise kmock.KubernetesError(409, "Conflict", f"uid precondition failed: {uid}")
            self._objects[key].patch({"metadata": {"resourceVersion": rv}})
            return
        new = self._updated(request, current, rv)
        self._rewrite(request, [{"op": "replace", "path": "", "value": new}])

    def _updated(self, request: kmock.Request, current: dict[str, Any], rv: str) -> dict[str, Any]:
        data, sub = request.data, request.subresource
        base = to_scale(current) if sub == "scale" else current
        if isinstance(data, list):
            try:
                patched = jsonpatch.apply_patch(copy.deepcopy(base), data)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise kmock.KubernetesError(
                    422, "Invalid", f"the patch does not apply: {exc}"
                ) from None
        elif isinstance(data, dict):
            asked = (data.get("metadata") or {}).get("resourceVersion")
            if asked and asked != base["metadata"].get("resourceVersion"):
                raise kmock.KubernetesError(409, "Conflict", "the object has been modified")
            patched = merge_patch(base, data)
        else:
            raise kmock.KubernetesError(400, "BadRequest", "a patch must be a JSON object or list")
        new = copy.deepcopy(current)
        if sub == "scale":
            new.setdefault("spec", {})["replicas"] = (patched.get("spec") or {}).get("replicas")
        elif sub == "status":
            new.pop("status", None)
            if patched.get("status") is not None:
                new["status"] = patched["status"]
        else:
            new = dict(patched)
            new["metadata"] = {**patched.get("metadata", {})}
            if "status" in self._declared_subresources(request.resource):
                new.pop("status", None)
                if current.get("status") is not None:
                    new["status"] = current["status"]
        for fixed in ("name", "namespace", "uid", "creationTimestamp"):
            if fixed in current["metadata"]:
                new["metadata"][fixed] = current["metadata"][fixed]
        generation = current["metadata"].get("generation", 1)
        if new.get("spec") != current.get("spec"):
            generation += 1
        new["metadata"]["generation"] = generation
        new["metadata"]["resourceVersion"] = rv
        return new

    def _declared_subresources(self, resource: Any) -> set[str]:
        return set(self._resources[resource].subresources) if resource in self._resources else set()

    # --- reads ---------------------------------------------------------------------------
    async def _serve_list(self, request: kmock.Request) -> Any:
        async with self._write_lock:
            result: Any = await super()._serve_list(request)
            result["metadata"]["resourceVersion"] = str(self._revision)
        selector = request.params.get("labelSelector")
        if selector:
            result["items"] = [i for i in result["items"] if _selector_matches(i, selector)]
        return result

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        obj: Any = await super()._serve_fetch(request)
        return to_scale(obj) if request.subresource == "scale" else obj

    async def _serve_update(self, request: kmock.Request) -> Any:
        obj: Any = await super()._serve_update(request)
        return to_scale(obj) if request.subresource == "scale" else obj

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        yield b""  # send the headers now
        assert request.resource is not None
        since = request.params.get("resourceVersion") or "0"
        bus = self._buses[request.resource]
        check = self._KubernetesEmulator__check  # type: ignore[attr-defined]
        async with self._write_lock:
            if since == "0":  # "any version": the current state first, as ADDED
                objs = self._KubernetesEmulator__get_objs(request, strict=False)  # type: ignore[attr-defined]
                backlog = [{"type": "ADDED", "object": o.raw} for o in objs if not o.deleted]
            else:
                backlog = [e for e in bus.history if _rv(e) > int(since)]
            marker = await bus.mark()
        try:
            for event in backlog:
                meta = event.get("object", {}).get("metadata", {})
                if check(
                    request, request.resource, meta.get("namespace"), meta.get("name"), strict=False
                ):
                    yield event
            async for event in bus.stream(since=marker):
                meta = event.get("object", {}).get("metadata", {})
                if check(
                    request, request.resource, meta.get("namespace"), meta.get("name"), strict=False
                ):
                    yield event
        finally:
            await bus.unmark(marker)


def declare(emulator: KubeEmulator, namespace: str) -> None:
    """The resources the operator and Kopf use, the namespace and the CRD."""
    for name, (kind, subresources) in CORE_RESOURCES.items():
        emulator.resources[name] = kmock.ResourceInfo(
            kind=kind,
            namespaced=name not in CLUSTER_SCOPED,
            verbs=VERBS,
            subresources=subresources,
        )
    emulator.resources[CRD_RESOURCE] = kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs=VERBS
    )
    crd = yaml.safe_load(CRD_FILE.read_text())
    emulator.resources[DYNAMO_RESOURCE] = kmock.ResourceInfo(
        kind=crd["spec"]["names"]["kind"],
        singular=crd["spec"]["names"]["singular"],
        shortnames=set(crd["spec"]["names"]["shortNames"]),
        namespaced=True,
        verbs=VERBS,
        subresources={"status", "scale"},
    )
    seeded = {"uid": str(uuid.uuid4()), "resourceVersion": "1", "creationTimestamp": _now()}
    crd["metadata"].update(seeded)
    emulator.objects[CRD_RESOURCE, None, crd["metadata"]["name"]] = crd
    emulator.objects["v1/namespaces", None, namespace] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, **seeded, "uid": str(uuid.uuid4())},
    }


# --- polling -------------------------------------------------------------------------------


async def eventually(
    probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.2
) -> Any:
    """Poll `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = probe()
            last = await result if asyncio.iscoroutine(result) else result
        except (AssertionError, KeyError, aiohttp.ClientError, OSError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)


# --- the kubelet ---------------------------------------------------------------------------

#: every node process started and not yet stopped; killed by PID at exit as a last resort
#: (a fixture teardown that never ran, an interrupted test session)
_LIVE: dict[int, subprocess.Popen[bytes]] = {}


@atexit.register
def _kill_leftovers() -> None:
    for pid, proc in list(_LIVE.items()):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        _LIVE.pop(pid, None)


@dataclass
class PodProcess:
    pod: str
    uid: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    ready: bool = False

    def alive(self) -> bool:
        return self.proc.poll() is None


_QUANTITY_SUFFIX = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "": 1,
}  # fmt: skip


def _resource_field(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    """A downward-API `resourceFieldRef` as the kubelet renders it (integer quantities
    with divisor 1; requests and limits the container declares)."""
    assert ref.get("containerName") in (None, container["name"]), ref
    assert str(ref.get("divisor", "1")) == "1", ref
    part, _, name = ref["resource"].partition(".")
    amount = str(container["resources"][part][name])
    number = amount.rstrip("KMGTik")
    return str(int(number) * _QUANTITY_SUFFIX[amount[len(number) :]])


@dataclass
class Kubelet:
    """StatefulSet controller + kubelet for one namespace, with real node processes."""

    api: aiohttp.ClientSession  # base URL = the mock server
    emulator: KubeEmulator
    namespace: str
    root: Path
    period_s: float = 0.2
    ports: dict[str, int] = field(default_factory=dict)
    running: dict[str, PodProcess] = field(default_factory=dict)
    #: (monotonic time, event, pod): "stopped", "started", "ready"
    timeline: list[tuple[float, str, str]] = field(default_factory=list)
    max_unready: int = 0
    #: StatefulSet name -> its PVC retention `whenDeleted`, as last seen
    claims_when_deleted: dict[str, str] = field(default_factory=dict)
    #: Node objects created so far (one per pod incarnation)
    hosts_created: int = 0
    _task: asyncio.Task[None] | None = None
    _failure: BaseException | None = None

    # --- addresses ---------------------------------------------------------------------
    def port(self, pod: str) -> int:
        if pod not in self.ports:
            self.ports[pod] = free_port()
        return self.ports[pod]

    def resolver(self, name: str, namespace: str, ordinal: int) -> str:
        return f"127.0.0.1:{self.port(pod_name(name, ordinal))}"

    def url(self, pod: str) -> str:
        return f"http://127.0.0.1:{self.port(pod)}"

    def data_dir(self, pod: str) -> Path:
        return self.root / "data" / pod

    # --- loop --------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="kubelet")

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # surfaced by check(); keep the cluster running
                log.exception("kubelet tick failed")
                self._failure = exc
            await asyncio.sleep(self.period_s)

    def check(self) -> None:
        if self._failure is not None:
            raise AssertionError(f"the kubelet failed: {self._failure!r}") from self._failure

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(self._stop(p) for p in list(self.running.values())))

    # --- reading the mock in-process -------------------------------------------------------
    def objects(self, resource: str) -> list[dict[str, Any]]:
        wanted = kmock.resource(resource)
        out = []
        for (res, ns, _name), obj in list(self.emulator.objects.items()):
            same = (res.group, res.version, res.plural) == (
                wanted.group,
                wanted.version,
                wanted.plural,
            )
            if same and ns == self.namespace and not obj.deleted:
                out.append(copy.deepcopy(obj.raw))
        return out

    def object(self, resource: str, name: str) -> dict[str, Any] | None:
        return next((o for o in self.objects(resource) if o["metadata"]["name"] == name), None)

    def host_names(self) -> set[str]:
        """The Node objects that exist (cluster-scoped)."""
        return {
            name
            for (res, _ns, name), obj in list(self.emulator.objects.items())
            if res.plural == "nodes" and not res.group and not obj.deleted
        }

    async def collect_garbage(self) -> None:
        """Kubernetes' garbage collector with background propagation: delete every object
        whose owner references all name objects that no longer exist (dependents of
        dependents go on later passes, as in the real collector)."""
        live = [
            (res, ns, obj.raw)
            for (res, ns, _name), obj in list(self.emulator.objects.items())
            if not obj.deleted
        ]
        uids = {raw["metadata"].get("uid") for _res, _ns, raw in live}
        for res, ns, raw in live:
            owners = raw["metadata"].get("ownerReferences") or []
            if ns != self.namespace or not owners:
                continue
            if all(owner["uid"] not in uids for owner in owners):
                prefix = f"/apis/{res.group}/{res.version}" if res.group else "/api/v1"
                name = raw["metadata"]["name"]
                path = f"{prefix}/namespaces/{self.namespace}/{res.plural}/{name}"
                async with self.api.delete(path) as resp:
                    assert resp.status < 300 or resp.status == 404, await resp.text()

    # --- one pass ------------------------------------------------------------------------
    async def tick(self) -> None:
        await self.collect_garbage()
        pods = {p["metadata"]["name"]: p for p in self.objects("v1/pods")}
        # a process whose pod object went away (or was replaced) stops, like a kubelet's
        for pod, process in list(self.running.items()):
            obj = pods.get(pod)
            if obj is None or obj["metadata"]["uid"] != process.uid:
                await self._stop(self.running.pop(pod))
        statefulsets = self.objects("apps/v1/statefulsets")
        for sts in statefulsets:
            await self._sync(sts, pods)
        # a StatefulSet that is gone: its claims go too if its policy says so, once no pod
        # of it runs (as the PVC protection finalizer waits for the pods)
        current = {sts["metadata"]["name"] for sts in statefulsets}
        for name in set(self.claims_when_deleted) - current:
            if any(pod.rsplit("-", 1)[0] == name for pod in self.running):
                continue
            if self.claims_when_deleted.pop(name) == "Delete":
                for data_dir in (self.root / "data").glob(f"{name}-*"):
                    if data_dir.name.rsplit("-", 1)[1].isdigit():
                        shutil.rmtree(data_dir, ignore_errors=True)
        unready = [p for p in pods if not self.running.get(p) or not self.running[p].ready]
        self.max_unready = max(self.max_unready, len(unready))

    async def _sync(self, sts: dict[str, Any], pods: dict[str, dict[str, Any]]) -> None:
        name = sts["metadata"]["name"]
        spec = sts["spec"]
        replicas = int(spec.get("replicas", 1))
        template = spec["template"]
        revision = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        mine = {
            p: obj
            for p, obj in pods.items()
            if p.rsplit("-", 1)[0] == name and p.rsplit("-", 1)[1].isdigit()
        }
        # scale-down: pods above the count go, with their volume if the policy says so
        retention = (spec.get("persistentVolumeClaimRetentionPolicy") or {}).get(
            "whenScaled", "Retain"
        )
        for pod, obj in sorted(mine.items()):
            if int(pod.rsplit("-", 1)[1]) >= replicas:
                await self._delete_pod(pod, obj)
                if pod in self.running:
                    await self._stop(self.running.pop(pod))
                if retention == "Delete":
                    shutil.rmtree(self.data_dir(pod), ignore_errors=True)
        self.claims_when_deleted[name] = (
            spec.get("persistentVolumeClaimRetentionPolicy") or {}
        ).get("whenDeleted", "Retain")
        hosts = self.host_names()
        for ordinal in range(replicas):
            pod = pod_name(name, ordinal)
            obj = mine.get(pod)
            if obj is None:
                obj = await self._create_pod(sts, ordinal, revision)
            if (obj.get("spec") or {}).get("nodeName") not in hosts:
                # its machine is gone: so is the process, and nothing restarts it there
                if pod in self.running:
                    await self._stop(self.running.pop(pod))
                    await self._set_ready(pod, False)
                continue
            process = self.running.get(pod)
            if process is None or not process.alive():
                if process is not None:  # crashed: the kubelet restarts the container
                    self.running.pop(pod)
                    await self._set_ready(pod, False)
                if not self._config_present(sts):
                    continue  # CreateContainerConfigError: retried on the next tick
                self.running[pod] = self._start(sts, obj)
                continue
            if not process.ready and await self._readyz(process):
                process.ready = True
                self.timeline.append((time.monotonic(), "ready", pod))
                await self._set_ready(pod, True)
        await self._report(sts, revision, replicas)

    async def _report(self, sts: dict[str, Any], revision: str, replicas: int) -> None:
        name = sts["metadata"]["name"]
        pods = [
            p for p in self.objects("v1/pods") if p["metadata"]["name"].rsplit("-", 1)[0] == name
        ]
        ready = sum(
            1
            for p in pods
            if p["metadata"]["name"] in self.running and self.running[p["metadata"]["name"]].ready
        )
        status = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "updatedReplicas": sum(
                1
                for p in pods
                if p["metadata"]["labels"].get("controller-revision-hash") == revision
            ),
            "currentRevision": revision,
            "updateRevision": revision,
        }
        if sts.get("status") != status:
            await self._patch(
                f"/apis/apps/v1/namespaces/{self.namespace}/statefulsets/{name}/status",
                {"status": status},
            )

    # --- pods ----------------------------------------------------------------------------
    async def _create_pod(self, sts: dict[str, Any], ordinal: int, revision: str) -> dict[str, Any]:
        name = sts["metadata"]["name"]
        pod = pod_name(name, ordinal)
        claim = f"data-{pod}"
        if self.object("v1/persistentvolumeclaims", claim) is None:
            shutil.rmtree(self.data_dir(pod), ignore_errors=True)  # a fresh volume
            body = {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": self.namespace},
                "spec": {"accessModes": ["ReadWriteOnce"]},
            }
            path = f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims"
            async with self.api.post(path, json=body) as resp:
                assert resp.status < 300, await resp.text()
        self.hosts_created += 1
        host = f"host-{self.hosts_created}"
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": host, "labels": {"kubernetes.io/hostname": host}},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": _now()}]
            },
        }
        async with self.api.post("/api/v1/nodes", json=node) as resp:
            assert resp.status < 300, await resp.text()
        template = copy.deepcopy(sts["spec"]["template"])
        meta = template.get("metadata", {})
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod,
                "namespace": self.namespace,
                "labels": {
                    **meta.get("labels", {}),
                    "controller-revision-hash": revision,
                    "statefulset.kubernetes.io/pod-name": pod,
                    "apps.kubernetes.io/pod-index": str(ordinal),
                },
                "annotations": meta.get("annotations", {}),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "StatefulSet",
                        "name": name,
                        "uid": sts["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {
                **template.get("spec", {}),
                "hostname": pod,
                "subdomain": sts["spec"].get("serviceName"),
                "nodeName": host,
            },
        }
        async with self.api.post(f"/api/v1/namespaces/{self.namespace}/pods", json=body) as resp:
            assert resp.status < 300, await resp.text()
            created: dict[str, Any] = await resp.json()
        await self._set_ready(pod, False)
        return created

    async def _delete_pod(self, pod: str, obj: dict[str, Any]) -> None:
        async with self.api.delete(f"/api/v1/namespaces/{self.namespace}/pods/{pod}") as resp:
            assert resp.status < 300 or resp.status == 404, await resp.text()

    async def _set_ready(self, pod: str, ready: bool) -> None:
        status = {
            "phase": "Running" if ready else "Pending",
            "podIP": "127.0.0.1",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": _now(),
                }
            ],
        }
        await self._patch(
            f"/api/v1/namespaces/{self.namespace}/pods/{pod}/status", {"status": status}
        )

    async def _patch(self, path: str, body: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self.api.patch(path, data=json.dumps(body), headers=headers) as resp:
            assert resp.status < 300 or resp.status == 404, await resp.text()

    def _config_present(self, sts: dict[str, Any]) -> bool:
        """The ConfigMap the pod mounts exists (it goes first when a cluster is deleted)."""
        volumes = sts["spec"]["template"]["spec"]["volumes"]
        name = next(v["configMap"]["name"] for v in volumes if "configMap" in v)
        return self.object("v1/configmaps", name) is not None

    # --- processes -----------------------------------------------------------------------
    def _start(self, sts: dict[str, Any], pod_obj: dict[str, Any]) -> PodProcess:
        name = sts["metadata"]["name"]
        pod = pod_obj["metadata"]["name"]
        pod_spec = sts["spec"]["template"]["spec"]
        container = pod_spec["containers"][0]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for var in container.get("env", []):
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                secret = self.object("v1/secrets", ref["name"])
                assert secret is not None, f"secret {ref['name']} missing for {pod}"
                env[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
            config_ref = (var.get("valueFrom") or {}).get("configMapKeyRef")
            if config_ref:
                source = self.object("v1/configmaps", config_ref["name"])
                value = ((source or {}).get("data") or {}).get(config_ref["key"])
                assert value is not None or config_ref.get("optional"), (pod, config_ref)
                if value is not None:
                    env[var["name"]] = value
            resource = (var.get("valueFrom") or {}).get("resourceFieldRef")
            if resource:
                env[var["name"]] = _resource_field(container, resource)
        config_map = next(v["configMap"]["name"] for v in pod_spec["volumes"] if "configMap" in v)
        config = self.object("v1/configmaps", config_map)
        assert config is not None, f"configmap {config_map} missing for {pod}"
        config_dir = self.root / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        config_file = config_dir / f"{pod}.json"
        config_file.write_text(config["data"]["node.json"])
        data_dir = self.data_dir(pod)
        data_dir.mkdir(parents=True, exist_ok=True)
        port = self.port(pod)
        args = [
            sys.executable, "-m", "dynamo_node",
            "--data-dir", str(data_dir),
            "--port", str(port),
            "--host", "127.0.0.1",
            "--advertise", "127.0.0.1",
            "--node-id", pod,
            "--seed", f"127.0.0.1:{self.port(pod_name(name, 0))}",
            "--config", str(config_file),
        ]  # fmt: skip
        log_path = self.root / f"{pod}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        _LIVE[proc.pid] = proc
        self.timeline.append((time.monotonic(), "started", pod))
        return PodProcess(pod, pod_obj["metadata"]["uid"], port, proc, log_path)

    async def _stop(self, process: PodProcess) -> None:
        if process.alive():
            process.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.proc.wait, 20)
            except subprocess.TimeoutExpired:
                process.proc.kill()
                await asyncio.to_thread(process.proc.wait, 5)
        _LIVE.pop(process.proc.pid, None)
        self.timeline.append((time.monotonic(), "stopped", process.pod))

    async def _readyz(self, process: PodProcess) -> bool:
        try:
            timeout = aiohttp.ClientTimeout(total=0.5)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(f"http://127.0.0.1:{process.port}/readyz") as resp,
            ):
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    def logs(self) -> str:
        parts = []
        for path in sorted(self.root.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-2000:]}")
        return "\n".join(parts)


# --- the operator --------------------------------------------------------------------------


class _Login:
    """The mock's URL for the `@kopf.on.login` handler (one operator runs at a time)."""

    url: str = ""


@kopf.on.login(id="kmock-harness")
def _login(**_: Any) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(server=_Login.url, insecure=True, scheme="Bearer", token="kmock")


@dataclass
class OperatorRunner:
    """Kopf in-process against the mock; `stop()` and `start()` again to restart it.

    Kopf runs in a thread with its own event loop: when it stops, it cancels every task
    of its loop created after it started (it cannot tell its own from others), which in
    the test's loop would include pytest's fixture finalizers.
    """

    url: str
    namespace: str
    resolver: Callable[[str, str, int], str]
    thread: threading.Thread | None = None
    stop_flag: threading.Event | None = None
    error: BaseException | None = None
    starts: int = 0

    async def start(self) -> None:
        assert self.thread is None, "already running"
        _Login.url = self.url
        self.stop_flag = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, name=f"kopf-{self.starts}", daemon=True)
        self.thread.start()
        self.starts += 1

    def _run(self) -> None:
        try:
            asyncio.run(self._operate())
        except BaseException as exc:
            self.error = exc

    async def _operate(self) -> None:
        assert self.stop_flag is not None
        kube = Kube.for_url(self.url)
        nodes = NodeAdmin(self.resolver, timeout_s=2.0)
        settings = kopf.OperatorSettings()
        settings.watching.connect_timeout = 5
        settings.networking.request_timeout = 10
        memo = kopf.Memo(kube=kube, nodes=nodes, config=OperatorConfig(interval_s=INTERVAL_S))
        try:
            await kopf.operator(
                standalone=True,
                namespaces=[self.namespace],
                stop_flag=self.stop_flag,
                settings=settings,
                memo=memo,
            )
        finally:
            await nodes.close()
            kube.close()

    async def stop(self) -> None:
        if self.thread is None:
            return
        assert self.stop_flag is not None
        self.stop_flag.set()
        thread, self.thread = self.thread, None
        await asyncio.to_thread(thread.join, 30)
        assert not thread.is_alive(), "the operator did not stop within 30 s"

    def check(self) -> None:
        if self.thread is not None and not self.thread.is_alive():
            raise AssertionError(f"the operator stopped: {self.error!r}")
