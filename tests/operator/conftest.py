"""The `env` fixture: a kmock API server, the kubelet harness and Kopf running the
operator in-process, torn down (every node process stopped by PID) after the test."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import kmock
import pytest
import yaml

from tests.operator.kmock_harness import (
    EXAMPLES,
    KubeEmulator,
    Kubelet,
    OperatorRunner,
    declare,
    eventually,
)

NAMESPACE = "kv"
CLUSTERS = f"/apis/dynamokv.io/v1alpha1/namespaces/{NAMESPACE}/dynamoclusters"


@dataclass
class Env:
    emulator: KubeEmulator
    api: aiohttp.ClientSession
    kubelet: Kubelet
    operator: OperatorRunner
    namespace: str = NAMESPACE

    def check(self) -> None:
        """Fail fast if the harness itself broke (rather than time out later)."""
        self.kubelet.check()
        self.operator.check()

    # --- the API -------------------------------------------------------------------------
    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(manifest)
        body["metadata"]["namespace"] = self.namespace
        async with self.api.post(CLUSTERS, json=body) as resp:
            assert resp.status < 300, await resp.text()
            return dict(await resp.json())

    async def get(self, path: str) -> dict[str, Any] | None:
        async with self.api.get(path) as resp:
            if resp.status == 404:
                return None
            assert resp.status < 300, await resp.text()
            return dict(await resp.json())

    async def cluster(self, name: str) -> dict[str, Any]:
        obj = await self.get(f"{CLUSTERS}/{name}")
        assert obj is not None
        return obj

    async def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self.api.patch(path, data=json.dumps(body), headers=headers) as resp:
            assert resp.status < 300, await resp.text()
            return dict(await resp.json())

    async def scale(self, name: str, replicas: int) -> dict[str, Any]:
        """`kubectl scale dyc/NAME --replicas=N`: a merge patch of the scale subresource."""
        scale = await self.patch(f"{CLUSTERS}/{name}/scale", {"spec": {"replicas": replicas}})
        assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == replicas
        return scale

    def statefulset(self, name: str) -> dict[str, Any] | None:
        return self.kubelet.object("apps/v1/statefulsets", name)

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        """Events in the namespace, in the order they were written."""
        events = self.kubelet.objects("v1/events")
        events.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
        return [e for e in events if reason is None or e.get("reason") == reason]

    # --- waiting -------------------------------------------------------------------------
    async def wait_status(
        self, name: str, timeout: float, what: str, **expected: Any
    ) -> dict[str, Any]:
        """Wait until status has these values and Available/Progressing/Degraded are as
        given by `available=`, `progressing=`, `degraded=` (True/False) if given."""
        conditions = {
            k: expected.pop(k) for k in ("available", "progressing", "degraded") if k in expected
        }

        last: dict[str, Any] = {}

        async def probe() -> dict[str, Any] | None:
            self.check()
            status = (await self.cluster(name)).get("status") or {}
            last.clear()
            last.update(status)
            for key, value in expected.items():
                if status.get(key) != value:
                    return None
            for kind, value in conditions.items():
                found = [c for c in status.get("conditions", []) if c["type"] == kind.capitalize()]
                if not found or found[0]["status"] != str(value):
                    return None
            return status

        try:
            return dict(await eventually(probe, timeout, what))
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; last status: {json.dumps(last, indent=1)}") from None

    async def wait_stable(self, name: str, replicas: int, timeout: float = 60) -> dict[str, Any]:
        status = await self.wait_status(
            name, timeout, f"{name} running with {replicas} nodes",
            phase="Running", readyReplicas=replicas, replicas=replicas, operation=None,
            available=True, progressing=False, degraded=False,
        )  # fmt: skip
        assert len(status["members"]) == replicas, status["members"]
        return status

    # --- the nodes -----------------------------------------------------------------------
    def secret_value(self, name: str, key: str) -> str:
        secret = self.kubelet.object("v1/secrets", f"{name}-auth")
        assert secret is not None
        return base64.b64decode(secret["data"][key]).decode()

    async def node(
        self, pod: str, method: str, path: str, token: str, data: bytes | None = None
    ) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.request(
                method, f"{self.kubelet.url(pod)}{path}", data=data, headers=headers
            ) as resp,
        ):
            return resp.status, await resp.read()

    async def admin(self, name: str, pod: str, path: str) -> dict[str, Any]:
        status, body = await self.node(
            pod, "GET", f"/v1/admin/{path}", self.secret_value(name, "cluster-token")
        )
        assert status == 200, body
        return dict(json.loads(body))

    async def put_keys(
        self, name: str, pod: str, count: int, prefix: str = "key"
    ) -> dict[str, bytes]:
        token = self.secret_value(name, "client-token")
        written = {}
        for i in range(count):
            key, value = f"{prefix}/{i:04d}", f"value {i} of {prefix}".encode()
            status, body = await self.node(
                pod, "PUT", f"/v1/kv/{quote(key, safe='')}?w=all", token, value
            )
            assert status == 204, (status, body)
            written[key] = value
        return written

    async def assert_readable(self, name: str, pod: str, written: dict[str, bytes]) -> None:
        """Every key, read with R = N (every replica must answer with it). A 503 (a
        replica too slow for the deadline on a loaded machine) is retried; a missing
        or wrong value fails at once."""
        token = self.secret_value(name, "client-token")
        deadline = time.monotonic() + 60
        for key, value in written.items():
            path = f"/v1/kv/{quote(key, safe='')}?r=all"
            status, body = await self.node(pod, "GET", path, token)
            while status == 503 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)  # poll interval (bounded by the deadline)
                status, body = await self.node(pod, "GET", path, token)
            assert (status, body) == (200, value), (key, status, body[:200])

    async def assert_members_match_ring(
        self, name: str, status: dict[str, Any], pods: list[str]
    ) -> None:
        ring = await self.admin(name, pods[0], "ring")
        owners: dict[str, int] = {}
        for partition in ring["partitions"]:
            owners[partition["owner"]] = owners.get(partition["owner"], 0) + 1
        members = {m["name"]: m["partitions"] for m in status["members"]}
        assert members == owners, (members, owners)
        assert sorted(members) == sorted(pods)
        assert {m["state"] for m in status["members"]} == {"up"}
        assert status["ringVersion"] == ring["ring_version"]


def minimal_example() -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES / "minimal.yaml").read_text()))


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with KubeEmulator() as emulator, kmock.Server(emulator) as server:
        declare(emulator, NAMESPACE)
        url = str(server.url).rstrip("/")
        async with aiohttp.ClientSession(base_url=server.url) as api:
            kubelet = Kubelet(api, emulator, NAMESPACE, tmp_path)
            kubelet.start()
            operator = OperatorRunner(url, NAMESPACE, kubelet.resolver)
            started = time.monotonic()
            await operator.start()
            try:
                yield Env(emulator, api, kubelet, operator)
            finally:
                try:
                    await operator.stop()
                finally:
                    await kubelet.stop()
                # captured: pytest shows it only when the test failed
                print(kubelet.logs())
                print(f"env torn down after {time.monotonic() - started:.1f}s")
