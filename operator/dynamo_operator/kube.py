"""The operator's thin layer over the Kubernetes API.

Raw JSON in and out (plain dicts, the builders' shapes): the sync `kubernetes` client
serialises and authenticates, and every call runs in a worker thread
(`asyncio.to_thread`) so the event loop never blocks. Only the kinds the operator owns or
reads are known (`KINDS`); Node and PersistentVolume are cluster-scoped (namespace None),
read only for `spec.autoReplace`. Errors: a missing object is `None` (get) or `False` (delete);
anything else that fails raises `KubeError` with the HTTP status.

List calls filter by labels on the client side as well: the selector is sent, but the
result is checked again, so a server (or a test double) that ignores it does no harm.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import kubernetes

from .builders import API_VERSION
from .errors import KubeError

# The client has no type hints: use it through one Any-typed name.
_k8s: Any = kubernetes

log = logging.getLogger("dynamo.operator.kube")

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
#: a call that takes longer is failed (seconds): connect, then read
REQUEST_TIMEOUT = (5.0, 30.0)


@dataclass(frozen=True, slots=True)
class Kind:
    """Where a kind lives: `api/v1` or `apis/GROUP/VERSION`, and its plural."""

    prefix: str
    plural: str
    namespaced: bool = True

    def path(
        self, namespace: str | None, name: str | None = None, subresource: str | None = None
    ) -> str:
        if self.namespaced != (namespace is not None):
            scope = "namespaced" if self.namespaced else "cluster-scoped"
            raise ValueError(f"{self.plural} is {scope}: namespace {namespace!r}")
        path = f"/{self.prefix}/{self.plural}"
        if namespace is not None:
            path = f"/{self.prefix}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        if name is not None:
            path += f"/{quote(name, safe='')}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


KINDS: dict[str, Kind] = {
    "ConfigMap": Kind("api/v1", "configmaps"),
    "Secret": Kind("api/v1", "secrets"),
    "Service": Kind("api/v1", "services"),
    "Pod": Kind("api/v1", "pods"),
    "PersistentVolumeClaim": Kind("api/v1", "persistentvolumeclaims"),
    "PersistentVolume": Kind("api/v1", "persistentvolumes", namespaced=False),
    "Node": Kind("api/v1", "nodes", namespaced=False),
    "StatefulSet": Kind("apis/apps/v1", "statefulsets"),
    "PodDisruptionBudget": Kind("apis/policy/v1", "poddisruptionbudgets"),
    "DynamoCluster": Kind(f"apis/{API_VERSION}", "dynamoclusters"),
}


def _kind(kind: str) -> Kind:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"the operator does not handle kind {kind!r}") from None


def matches(obj: Mapping[str, Any], selector: Mapping[str, str]) -> bool:
    """Does `obj` carry every label of `selector`?"""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in selector.items())


class Kube:
    """Get, list, create, patch and delete the operator's kinds, as JSON."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    def from_environment(cls) -> Kube:
        """In a pod: its service account; elsewhere: the current kubeconfig context."""
        configuration = _k8s.client.Configuration()
        try:
            _k8s.config.load_incluster_config(client_configuration=configuration)
        except _k8s.config.ConfigException:
            _k8s.config.load_kube_config(client_configuration=configuration)
        return cls(_k8s.client.ApiClient(configuration))

    @classmethod
    def for_url(cls, url: str, token: str | None = None) -> Kube:
        """A client of the API server at `url` (tests: a mock server)."""
        configuration = _k8s.client.Configuration(host=url.rstrip("/"))
        if token:
            configuration.api_key = {"BearerToken": token}
            configuration.api_key_prefix = {"BearerToken": "Bearer"}
        return cls(_k8s.client.ApiClient(configuration))

    def close(self) -> None:
        self._client.close()

    # --- the one request --------------------------------------------------------------

    def _request_sync(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        request = self._client.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._client.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
            raw = response.read()
        except _k8s.client.exceptions.ApiException as exc:
            raise KubeError(f"{method} {path}: {exc.reason}", exc.status or 0) from None
        except Exception as exc:  # urllib3 errors: connection refused, timeouts
            raise KubeError(f"{method} {path}: {exc!r}") from None
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        return int(response.status), payload

    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        missing_ok: bool = False,
    ) -> Any:
        status, payload = await asyncio.to_thread(
            self._request_sync, method, path, query=query, body=body, content_type=content_type
        )
        if status == 404 and missing_ok:
            return None
        if not 200 <= status < 300:
            message = payload.get("message") if isinstance(payload, dict) else None
            raise KubeError(f"{method} {path} -> {status}: {message or payload!r}", status)
        return payload

    # --- verbs --------------------------------------------------------------------------

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        payload = await self._request("GET", _kind(kind).path(namespace, name), missing_ok=True)
        return cast(dict[str, Any], payload) if isinstance(payload, dict) else None

    async def list_objects(
        self, kind: str, namespace: str | None, selector: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        label_selector = ",".join(f"{key}={value}" for key, value in sorted(selector.items()))
        payload = await self._request(
            "GET", _kind(kind).path(namespace), query=[("labelSelector", label_selector)]
        )
        items = payload.get("items") if isinstance(payload, dict) else None
        return [item for item in items or () if isinstance(item, dict) and matches(item, selector)]

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        payload = await self._request(
            "POST", _kind(str(obj.get("kind"))).path(str(meta.get("namespace"))), body=dict(obj)
        )
        return cast(dict[str, Any], payload) if isinstance(payload, dict) else {}

    async def merge_patch(
        self,
        kind: str,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        payload = await self._request(
            "PATCH",
            _kind(kind).path(namespace, name, subresource),
            body=dict(patch),
            content_type=MERGE_PATCH,
        )
        return cast(dict[str, Any], payload) if isinstance(payload, dict) else {}

    async def json_patch(
        self, kind: str, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        payload = await self._request(
            "PATCH", _kind(kind).path(namespace, name), body=ops, content_type=JSON_PATCH
        )
        return cast(dict[str, Any], payload) if isinstance(payload, dict) else {}

    async def delete(
        self,
        kind: str,
        namespace: str,
        name: str,
        *,
        uid: str | None = None,
        grace_period_s: int | None = None,
    ) -> bool:
        """Delete; with `uid`, only that incarnation of the object; `grace_period_s=0`
        removes a pod at once (its kubelet is gone and would never confirm). False if
        absent."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if uid:
            body["preconditions"] = {"uid": uid}
        if grace_period_s is not None:
            body["gracePeriodSeconds"] = grace_period_s
        payload = await self._request(
            "DELETE", _kind(kind).path(namespace, name), body=body, missing_ok=True
        )
        return payload is not None
