"""The aiohttp application of a node: admin API, health, metrics, docs, and the key-value
routes for the requests the lean data-path server (`http1`) hands over.

Contract: docs/api.md. Every error is `{"error": {"code", "message"}}`; `DynamoError`
subclasses map to their status in `kvapi.error_reply` and nowhere else. Keys are taken
from the raw path and percent-decoded once, so any UTF-8 key (with `/`) round-trips.
Request bodies are read incrementally with a cap: an oversized value is refused with 413
without being buffered whole.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import HttpVersion11, web

from dynamo_node.core.context import ContextCodec
from dynamo_node.core.errors import (
    DynamoError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from dynamo_node.edge.auth import Admission, Authorizer, scope_of
from dynamo_node.edge.http1 import REFUSE_HEADER, refusal
from dynamo_node.edge.kvapi import (
    CONTEXT_HEADER,
    KV_PREFIX,
    KvApi,
    Reply,
    error_reply,
    json_reply,
)
from dynamo_node.edge.metrics import Metrics
from dynamo_node.edge.openapi import openapi_document
from dynamo_node.edge.ports import AdminPort, AppPort

log = logging.getLogger("dynamo.web")

#: any character, newlines included (keys are arbitrary UTF-8; parsed from the raw path)
KV_ROUTE = "/v1/kv/{key:[\\s\\S]+}"

NODE_KEY = web.AppKey[AppPort]("node")
METRICS_KEY = web.AppKey("metrics", Metrics)
API_KEY = web.AppKey("kv-api", KvApi)
AUTH_KEY = web.AppKey("auth", Authorizer)
ADMISSION_KEY = web.AppKey("admission", Admission)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: the largest JSON body of an admin call
JSON_BODY_MAX = 64 * 1024


class ExpectationFailed(DynamoError):
    status = 417
    code = "expectation_failed"


def to_response(reply: Reply) -> web.Response:
    return web.Response(status=reply.status, body=reply.body, headers=reply.headers)


def error_response(status: int, code: str, message: str) -> web.Response:
    return to_response(json_reply(status, {"error": {"code": code, "message": message}}))


# --- middleware: errors, auth, limits, metrics --------------------------------------------
def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def make_expect_handler(
    auth: Authorizer, value_max_bytes: int, metrics: Metrics
) -> Callable[[web.Request], Awaitable[web.StreamResponse | None]]:
    """`Expect: 100-continue` is answered 100 only once the token and the size pass;
    else the final 401/403/413 at once, and the connection closed (the body is unsent)."""

    async def expect_handler(request: web.Request) -> web.StreamResponse | None:
        if request.version != HttpVersion11:
            return None
        expect = request.headers.get("Expect", "")
        try:
            if expect.lower() != "100-continue":
                raise ExpectationFailed(f"unknown Expect: {expect[:100]}")
            if auth.enabled:
                auth.check(scope_of(request.path), request.headers.get("Authorization"))
            limit = value_max_bytes if request.path.startswith(KV_PREFIX) else JSON_BODY_MAX
            length = request.content_length
            if length is not None and length > limit:
                raise PayloadTooLarge(f"the body is {length} bytes; the limit is {limit}")
        except DynamoError as exc:
            response = to_response(error_reply(exc))
            response.force_close()
            metrics.observe(_route_name(request), request.method, response.status, 0.0)
            return response
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
        return None

    return expect_handler


def make_middleware(auth: Authorizer, admission: Admission, metrics: Metrics) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        refused = request.headers.get(REFUSE_HEADER)
        if refused is not None:  # a bad head the lean server (http1) found after others
            status, _, message = refused.partition(" ")
            refused_status = int(status) if status.isdigit() and len(status) == 3 else 400
            refusing = to_response(refusal(refused_status, message))
            refusing.force_close()
            metrics.observe("unmatched", "-", refusing.status, 0.0)
            return refusing
        try:
            if auth.enabled:
                auth.check(scope_of(request.path), request.headers.get("Authorization"))
            if not admission.try_enter():
                raise Unavailable("too many concurrent requests")
            try:
                response = await handler(request)
            finally:
                admission.leave()
        except DynamoError as exc:
            response = to_response(error_reply(exc))
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
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            response = error_response(500, "internal", "internal error (logged on the node)")
        metrics.observe(
            _route_name(request), request.method, response.status, time.perf_counter() - start
        )
        return response

    return middleware


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
    """The kv routes on aiohttp: what `http1` hands over (chunked bodies, `Expect`...)."""

    def __init__(self, api: KvApi) -> None:
        self.api = api

    async def get(self, request: web.Request) -> web.Response:
        return to_response(await self.api.get(request.raw_path, request.query_string))

    async def head(self, request: web.Request) -> web.Response:
        """As GET; aiohttp sends the head only (Content-Length of the body GET sends)."""
        return to_response(await self.api.get(request.raw_path, request.query_string))

    async def put(self, request: web.Request) -> web.Response:
        body = await read_body(request, self.api.value_max_bytes)
        reply = await self.api.write(
            request.raw_path,
            request.query_string,
            request.headers.get(CONTEXT_HEADER),
            request.headers.get("Content-Type"),
            body,
        )
        return to_response(reply)

    async def delete(self, request: web.Request) -> web.Response:
        reply = await self.api.write(
            request.raw_path, request.query_string, request.headers.get(CONTEXT_HEADER), None, None
        )
        return to_response(reply)


# --- admin API ---------------------------------------------------------------------------
async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await read_body(request, JSON_BODY_MAX)
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


def _force(body: dict[str, Any]) -> bool:
    """The optional `force` of a leave or force-remove: take the node out even when
    fewer than N ring members would be left."""
    force = body.get("force")
    if force is None:
        return False
    if not isinstance(force, bool):
        raise InvalidRequest('"force" must be true or false')
    return force


class AdminHandlers:
    def __init__(self, node: AdminPort) -> None:
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
            raise InvalidRequest('expected {"node": ID, "force": false}')
        outcome = self.node.claimant.stage_leave(node_id, _force(body))
        if outcome == "forgotten":
            return web.json_response({"forgotten": True, "node": node_id})
        return web.json_response({"staged": "leave", "node": node_id}, status=202)

    async def force_remove(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        node_id = body.get("node")
        if not isinstance(node_id, str) or not node_id:
            raise InvalidRequest('expected {"node": ID, "force": false}')
        self.node.claimant.stage_remove(node_id, _force(body))
        return web.json_response({"staged": "force-remove", "node": node_id}, status=202)

    async def replace(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        old, new = body.get("old"), body.get("new")
        if not isinstance(old, str) or not old or not isinstance(new, str) or not new:
            raise InvalidRequest('expected {"old": ID, "new": "HOST:PORT" or ID}')
        new_id = await self.node.claimant.stage_replace(old, new)
        return web.json_response({"staged": "replace", "old": old, "new": new_id}, status=202)

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
def build_app(node: AppPort, metrics: Metrics | None = None) -> web.Application:
    """The application; the objects the lean server shares with it are in its keys."""
    metrics = metrics or Metrics()
    config = node.config
    api = KvApi(node, ContextCodec(config.cluster_token))
    auth = Authorizer(config.client_token, config.cluster_token)
    admission = Admission(config.max_concurrent_requests)
    app = web.Application(
        middlewares=[make_middleware(auth, admission, metrics)],
        client_max_size=config.value_max_bytes + 1,
    )
    app[NODE_KEY] = node
    app[METRICS_KEY] = metrics
    app[API_KEY] = api
    app[AUTH_KEY] = auth
    app[ADMISSION_KEY] = admission
    kv = KvHandlers(api)
    admin = AdminHandlers(node)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "node": node.node_id})

    async def readyz(request: web.Request) -> web.Response:
        failure = node.storage_failure()
        if failure is not None:
            return error_response(503, "storage_failed", f"storage cannot write: {failure}")
        if not node.ready or node.state is None:
            return error_response(503, "not_ready", "storage not open or ring not known yet")
        return web.json_response({"status": "ready", "ring_version": node.state.version})

    async def metrics_handler(request: web.Request) -> web.Response:
        return web.Response(
            body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    async def openapi(request: web.Request) -> web.Response:
        n = node.state.n if node.state is not None else node.config.n
        return web.json_response(
            openapi_document(
                n,
                key_max_bytes=config.key_max_bytes,
                value_max_bytes=config.value_max_bytes,
                object_max_bytes=config.object_max_bytes,
                siblings_max=config.siblings_max,
            )
        )

    expect = make_expect_handler(auth, config.value_max_bytes, metrics)
    r = app.router
    r.add_route("GET", KV_ROUTE, kv.get, expect_handler=expect)
    r.add_route("PUT", KV_ROUTE, kv.put, expect_handler=expect)
    r.add_route("DELETE", KV_ROUTE, kv.delete, expect_handler=expect)
    r.add_route("HEAD", KV_ROUTE, kv.head, expect_handler=expect)
    r.add_get("/v1/admin/status", admin.status, expect_handler=expect)
    r.add_get("/v1/admin/ring", admin.ring, expect_handler=expect)
    r.add_post("/v1/admin/join", admin.join, expect_handler=expect)
    r.add_post("/v1/admin/leave", admin.leave, expect_handler=expect)
    r.add_post("/v1/admin/force-remove", admin.force_remove, expect_handler=expect)
    r.add_post("/v1/admin/replace", admin.replace, expect_handler=expect)
    r.add_get("/v1/admin/plan", admin.plan, expect_handler=expect)
    r.add_delete("/v1/admin/plan", admin.clear, expect_handler=expect)
    r.add_post("/v1/admin/commit", admin.commit, expect_handler=expect)
    r.add_post("/v1/admin/anti-entropy", admin.anti_entropy, expect_handler=expect)
    r.add_get("/v1/admin/jobs/{job_id}", admin.job, expect_handler=expect)
    r.add_get("/healthz", healthz, expect_handler=expect)
    r.add_get("/readyz", readyz, expect_handler=expect)
    r.add_get("/metrics", metrics_handler, expect_handler=expect)
    r.add_get("/openapi.json", openapi, expect_handler=expect)
    return app
