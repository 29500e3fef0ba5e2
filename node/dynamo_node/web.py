"""The HTTP edge of a node (aiohttp): the client API, the admin API, health, metrics.

Contract: DESIGN.md §5. Every error is `{"error": {"code", "message"}}`; `DynamoError`
subclasses map to their status here and nowhere else. Keys are taken from the raw path
and percent-decoded once, so any UTF-8 key (with `/`) round-trips. Request bodies are
read incrementally with a cap: an oversized value is refused with 413 without being
buffered whole.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web

from .context import ContextCodec
from .errors import (
    DynamoError,
    Forbidden,
    InvalidKey,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    QuorumNotMet,
    Unauthorized,
    Unavailable,
)
from .metrics import Metrics
from .node import Node
from .openapi import openapi_document
from .quorum import parse_quorum, parse_timeout_ms
from .storage import storage_key

log = logging.getLogger("dynamo.web")

CONTEXT_HEADER = "X-Dynamo-Context"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
KV_PREFIX = "/v1/kv/"
#: any character, newlines included (keys are arbitrary UTF-8; parsed from the raw path)
KV_ROUTE = "/v1/kv/{key:[\\s\\S]+}"

NODE_KEY = web.AppKey("node", Node)
METRICS_KEY = web.AppKey("metrics", Metrics)
CODEC_KEY = web.AppKey("codec", ContextCodec)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    body.update(extra)
    return web.json_response({"error": body}, status=status)


# --- middleware: errors, auth, limits, metrics --------------------------------------------
def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _scope(path: str) -> str:
    if path.startswith("/v1/kv/") or path == "/v1/kv":
        return "client"
    if path.startswith("/v1/admin"):
        return "admin"
    return "open"


def make_middleware(node: Node, metrics: Metrics) -> Any:
    config = node.config
    client_token = config.client_token.encode()
    cluster_token = config.cluster_token.encode()
    auth_on = bool(client_token or cluster_token)
    limit = asyncio.Semaphore(config.max_concurrent_requests)

    def check_auth(request: web.Request) -> None:
        scope = _scope(request.path)
        if scope == "open":
            return
        header = request.headers.get("Authorization", "")
        token = header[7:].strip().encode() if header.lower().startswith("bearer ") else b""
        if not token:
            raise Unauthorized("missing bearer token")
        is_cluster = bool(cluster_token) and hmac.compare_digest(token, cluster_token)
        is_client = bool(client_token) and hmac.compare_digest(token, client_token)
        if scope == "admin":
            if is_cluster:
                return
            if is_client:
                raise Forbidden("this token may not call the admin API")
            raise Unauthorized("invalid token")
        if not (is_cluster or is_client):
            raise Unauthorized("invalid token")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        try:
            if auth_on:
                check_auth(request)
            if limit.locked():
                raise Unavailable("too many concurrent requests")
            async with limit:
                response = await handler(request)
        except DynamoError as exc:
            extra: dict[str, Any] = {}
            if isinstance(exc, QuorumNotMet):
                extra = {"required": exc.required, "answered": exc.answered}
            response = error_response(exc.status, exc.code, exc.message, **extra)
            if isinstance(exc, Unauthorized):
                response.headers["WWW-Authenticate"] = "Bearer"
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
                exc.status, "http_error"
            )
            response = error_response(exc.status, code, exc.reason)
            if exc.status == 405:
                allow = exc.headers.get("Allow")
                if allow:
                    response.headers["Allow"] = allow
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            response = error_response(500, "internal", "internal error (logged on the node)")
        metrics.observe(
            _route_name(request), request.method, response.status, time.perf_counter() - start
        )
        return response

    return middleware


# --- client API ----------------------------------------------------------------------------
def parse_key(request: web.Request, max_bytes: int) -> str:
    raw_path = request.raw_path.split("?", 1)[0]
    encoded = raw_path[len(KV_PREFIX) :] if raw_path.startswith(KV_PREFIX) else ""
    data = unquote_to_bytes(encoded)
    if not data:
        raise InvalidKey("the key must not be empty")
    if len(data) > max_bytes:
        raise InvalidKey(f"the key is {len(data)} bytes; the limit is {max_bytes}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidKey("the key must be valid UTF-8 (percent-encoded in the path)") from None


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(f"the value is {length} bytes; the limit is {max_bytes}")
    if length is not None:
        return await request.read()  # bounded by the check above (and client_max_size)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the value exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class KvHandlers:
    def __init__(self, node: Node, codec: ContextCodec) -> None:
        self.node = node
        self.codec = codec
        self.config = node.config

    def _n(self) -> int:
        state = self.node.require_state()
        return state.n

    def _timeout(self, request: web.Request) -> int:
        if not request.query_string:  # the common case: skip building the query multidict
            return self.config.request_timeout_ms
        return parse_timeout_ms(request.query.get("timeout_ms"), self.config.request_timeout_ms)

    async def get(self, request: web.Request) -> web.Response:
        key = parse_key(request, self.config.key_max_bytes)
        n = self._n()
        r = parse_quorum(request.query.get("r") if request.query_string else None, n, 0, "r")
        timeout_ms = self._timeout(request)
        obj = await self.node.coordinator.get(storage_key(key), r, timeout_ms)
        headers: dict[str, str] = {}
        if not obj.empty:
            headers[CONTEXT_HEADER] = self.codec.encode(obj.context())
        visible = obj.visible()
        if not visible:
            resp = error_response(404, "not_found", f"no value for key {key!r}")
            resp.headers.update(headers)
            return resp
        if len(visible) == 1:
            s = visible[0]
            headers["Content-Type"] = s.content_type or DEFAULT_CONTENT_TYPE
            return web.Response(body=s.value, headers=headers)
        body = {
            "context": headers[CONTEXT_HEADER],
            "siblings": [
                {
                    "content_type": s.content_type or DEFAULT_CONTENT_TYPE,
                    "value_b64": base64.b64encode(s.value or b"").decode(),
                }
                for s in visible
            ],
        }
        return web.json_response(body, status=300, headers=headers)

    async def _write(self, request: web.Request, delete: bool) -> web.Response:
        key = parse_key(request, self.config.key_max_bytes)
        n = self._n()
        w = parse_quorum(request.query.get("w") if request.query_string else None, n, 0, "w")
        timeout_ms = self._timeout(request)
        context = self.codec.decode(request.headers.get(CONTEXT_HEADER))
        if delete:
            value: bytes | None = None
            content_type = ""
        else:
            value = await read_body(request, self.config.value_max_bytes)
            content_type = request.headers.get("Content-Type", DEFAULT_CONTENT_TYPE)[:256]
        obj = await self.node.coordinator.put(
            storage_key(key), context, value, content_type, w, timeout_ms
        )
        return web.Response(status=204, headers={CONTEXT_HEADER: self.codec.encode(obj.context())})

    async def put(self, request: web.Request) -> web.Response:
        return await self._write(request, delete=False)

    async def delete(self, request: web.Request) -> web.Response:
        return await self._write(request, delete=True)


# --- admin API ---------------------------------------------------------------------------
async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await read_body(request, 64 * 1024)
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


class AdminHandlers:
    def __init__(self, node: Node) -> None:
        self.node = node

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self.node.status())

    async def ring(self, request: web.Request) -> web.Response:
        return web.json_response(self.node.ring_view())

    async def join(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        address = body.get("address")
        if not isinstance(address, str) or not address:
            raise InvalidRequest('expected {"address": "HOST:PORT"}')
        node_id = await self.node.claimant.stage_join(address)
        return web.json_response(
            {"staged": "join", "node": node_id, "address": address}, status=202
        )

    async def leave(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        node_id = body.get("node")
        if not isinstance(node_id, str) or not node_id:
            raise InvalidRequest('expected {"node": ID}')
        outcome = self.node.claimant.stage_leave(node_id)
        if outcome == "forgotten":
            return web.json_response({"forgotten": True, "node": node_id})
        return web.json_response({"staged": "leave", "node": node_id}, status=202)

    async def plan(self, request: web.Request) -> web.Response:
        staged = self.node.claimant.current_plan()
        state = self.node.require_state()
        return web.json_response(
            {
                "ring_version": state.version,
                "staged": staged is not None,
                "plan": staged.to_dict() if staged else None,
            }
        )

    async def clear(self, request: web.Request) -> web.Response:
        self.node.claimant.clear()
        return web.json_response({"staged": False})

    async def commit(self, request: web.Request) -> web.Response:
        state = await self.node.claimant.commit()
        return web.json_response(
            {
                "committed": True,
                "ring_version": state.version,
                "transfers": len(state.pending_transfers()),
            }
        )

    async def anti_entropy(self, request: web.Request) -> web.Response:
        job_id = self.node.start_anti_entropy()
        return web.json_response({"job": job_id}, status=202)

    async def job(self, request: web.Request) -> web.Response:
        job = self.node.jobs.get(request.match_info["job_id"])
        if job is None:
            raise NotFound("no such job")
        return web.json_response(job.to_dict())


# --- health, metrics, docs ----------------------------------------------------------------
def build_app(node: Node, metrics: Metrics | None = None) -> web.Application:
    metrics = metrics or Metrics()
    codec = ContextCodec(node.config.cluster_token)
    app = web.Application(
        middlewares=[make_middleware(node, metrics)],
        client_max_size=node.config.value_max_bytes + 1,
    )
    app[NODE_KEY] = node
    app[METRICS_KEY] = metrics
    app[CODEC_KEY] = codec
    kv = KvHandlers(node, codec)
    admin = AdminHandlers(node)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "node": node.node_id})

    async def readyz(request: web.Request) -> web.Response:
        if not node.ready or node.state is None:
            return error_response(503, "not_ready", "storage not open or ring not known yet")
        return web.json_response({"status": "ready", "ring_version": node.state.version})

    async def metrics_handler(request: web.Request) -> web.Response:
        return web.Response(
            body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    async def openapi(request: web.Request) -> web.Response:
        n = node.state.n if node.state is not None else node.config.n
        return web.json_response(openapi_document(n))

    r = app.router
    r.add_route("GET", KV_ROUTE, kv.get)
    r.add_route("PUT", KV_ROUTE, kv.put)
    r.add_route("DELETE", KV_ROUTE, kv.delete)
    r.add_get("/v1/admin/status", admin.status)
    r.add_get("/v1/admin/ring", admin.ring)
    r.add_post("/v1/admin/join", admin.join)
    r.add_post("/v1/admin/leave", admin.leave)
    r.add_get("/v1/admin/plan", admin.plan)
    r.add_delete("/v1/admin/plan", admin.clear)
    r.add_post("/v1/admin/commit", admin.commit)
    r.add_post("/v1/admin/anti-entropy", admin.anti_entropy)
    r.add_get("/v1/admin/jobs/{job_id}", admin.job)
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/metrics", metrics_handler)
    r.add_get("/openapi.json", openapi)
    return app
