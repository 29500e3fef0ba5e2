"""A small async client of the node's admin API (docs/api.md), as the operator drives it.

Nodes are addressed by `HOST:PORT`; `NodeAdmin.address` maps a pod to it through an
injectable resolver (default: the pod's stable DNS name through the headless Service,
`<pod>.<name>-peers.<namespace>.svc:7070`; tests map pods to loopback ports).

Every call has a deadline (`OperatorConfig.node_timeout_s`). Failures raise `NodeError`
(the node answered with an error status) or `NodeUnreachable` (no usable answer); the
caller decides whether that is transient. The calls go through the node client's async
face (`dynamo_node.client.AsyncDynamoClient`, one per node address and token, each
keeping its connections alive); `close()` releases them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from dynamo_node.client import AsyncDynamoClient, ClientError

from .builders import node_address
from .config import DEFAULT_NODE_TIMEOUT_S
from .errors import NodeError, NodeUnreachable

log = logging.getLogger("dynamo.operator.nodes")

#: (cluster name, namespace, pod ordinal) -> "HOST:PORT" of that pod's admin API
Resolver = Callable[[str, str, int], str]

ADMIN = "/v1/admin"


def default_resolver(name: str, namespace: str, ordinal: int) -> str:
    """The pod's DNS name through the headless Service (`builders.node_address`)."""
    return node_address(name, namespace, ordinal)


class NodeAdmin:
    """The admin calls the operator makes: status, stage + commit, anti-entropy."""

    def __init__(
        self, resolver: Resolver = default_resolver, timeout_s: float = DEFAULT_NODE_TIMEOUT_S
    ) -> None:
        self._resolver = resolver
        self._timeout_s = timeout_s
        #: address -> the client of that node (for one token and TLS context)
        self._clients: dict[str, AsyncDynamoClient] = {}
        #: address -> SSL context, for clusters with spec.tls (their CA from the Secret)
        self._tls: dict[str, ssl.SSLContext] = {}
        self._contexts: dict[str, ssl.SSLContext] = {}

    def trust(self, addresses: Iterable[str], ca_pem: str | None) -> None:
        """Talk HTTPS to these node addresses, verifying them against `ca_pem` (None:
        plain HTTP)."""
        ctx = None
        if ca_pem:
            ctx = self._contexts.get(ca_pem)
            if ctx is None:
                ctx = self._contexts[ca_pem] = ssl.create_default_context(cadata=ca_pem)
        for address in addresses:
            if ctx is None:
                self._tls.pop(address, None)
            else:
                self._tls[address] = ctx

    def address(self, name: str, namespace: str, ordinal: int) -> str:
        return self._resolver(name, namespace, ordinal)

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    async def _client(self, address: str, token: str | None) -> AsyncDynamoClient:
        ctx = self._tls.get(address)
        client = self._clients.get(address)
        same_token = client is not None and client.token == ((token or "").strip() or None)
        if client is not None and same_token and client.tls_context is ctx:
            return client
        if client is not None:
            await client.close()  # the token or the TLS trust changed
        scheme = "https" if ctx is not None else "http"
        client = AsyncDynamoClient(
            f"{scheme}://{address}", token=token, timeout=self._timeout_s, tls_context=ctx
        )
        self._clients[address] = client
        return client

    async def _call(
        self, method: str, address: str, path: str, token: str | None, body: Any = None
    ) -> Any:
        headers = {}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        try:
            client = await self._client(address, token)
            resp = await client.request(method, ADMIN + path, data, headers)
        except (ClientError, ValueError, OSError) as exc:
            raise NodeUnreachable(address, f"{method} {path}: {exc!r}") from None
        raw, status = resp.body, resp.status
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            raise NodeUnreachable(address, f"{method} {path}: not JSON", status) from None
        if status >= 300:
            error = payload.get("error") if isinstance(payload, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            detail = message or raw[:200]
            raise NodeError(address, f"{method} {path} -> {status}: {detail!r}", status)
        return payload

    async def status(self, address: str, token: str | None) -> dict[str, Any]:
        payload = await self._call("GET", address, "/status", token)
        if not isinstance(payload, dict):
            raise NodeUnreachable(address, "GET /status: not a JSON object")
        return payload

    async def statuses(
        self, addresses: Mapping[str, str], token: str | None
    ) -> dict[str, dict[str, Any]]:
        """The status of every pod (by pod name) whose node answered; others are left out."""
        names = list(addresses)
        results = await asyncio.gather(
            *(self.status(addresses[name], token) for name in names), return_exceptions=True
        )
        out: dict[str, dict[str, Any]] = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, dict):
                out[name] = result
            elif isinstance(result, NodeError):
                log.debug("no status from %s: %s", name, result)
            elif isinstance(result, BaseException):
                raise result
        return out

    async def change_membership(
        self,
        address: str,
        joins: Sequence[str],
        leaves: Sequence[str],
        token: str | None,
    ) -> dict[str, Any]:
        """On the node at `address`: drop any staged plan, stage the joins (by node
        address) and leaves (by node id), and commit. Returns the commit's answer."""
        await self._call("DELETE", address, "/plan", token)
        for join in joins:
            await self._call("POST", address, "/join", token, {"address": join})
        for node in leaves:
            await self._call("POST", address, "/leave", token, {"node": node})
        result = await self._call("POST", address, "/commit", token)
        return result if isinstance(result, dict) else {}

    async def start_anti_entropy(self, address: str, token: str | None) -> str:
        """Start a full anti-entropy pass; returns the job id."""
        payload = await self._call("POST", address, "/anti-entropy", token)
        job = payload.get("job") if isinstance(payload, dict) else None
        return str(job) if job else ""
