"""The client key-value API (`/v1/kv/{key}`, docs/api.md), apart from any HTTP server.

Both HTTP edges call it: the lean HTTP/1.1 server (`http1`) that serves the data path,
and the aiohttp application (`web`) for the requests it hands over. Input is what the
request line and headers carry (raw path, query string, context header, content type,
body); output is a `Reply` (status, headers, body) or a `DynamoError`, which
`error_reply` turns into the JSON error body every route answers with (`Reply`,
`json_reply` and `error_reply` serve both edges' other routes too). `KvApi` reaches the
node through a `ports.KvPort` only. The token check and the concurrency limit that run
before it are in `auth`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from dynamo_node.core.context import ContextCodec
from dynamo_node.core.errors import (
    DynamoError,
    InvalidKey,
    InvalidParameter,
    QuorumNotMet,
    Unauthorized,
)
from dynamo_node.core.quorum import parse_quorum, parse_timeout_ms
from dynamo_node.edge.ports import KvPort
from dynamo_node.store.storage import storage_key

CONTEXT_HEADER = "X-Dynamo-Context"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
JSON_TYPE = "application/json; charset=utf-8"
KV_PREFIX = "/v1/kv/"
#: the route's name in metrics (aiohttp's canonical form of web.KV_ROUTE)
KV_ROUTE_NAME = "/v1/kv/{key}"
MAX_CONTENT_TYPE = 256


@dataclass(slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""


def json_reply(status: int, doc: Any, headers: dict[str, str] | None = None) -> Reply:
    out = {"Content-Type": JSON_TYPE}
    if headers:
        out.update(headers)
    return Reply(status, out, json.dumps(doc).encode())


def error_reply(exc: DynamoError) -> Reply:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if isinstance(exc, QuorumNotMet):
        body.update(required=exc.required, answered=exc.answered)
        if exc.maybe_applied:
            body["maybe_applied"] = True
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return json_reply(exc.status, {"error": body}, headers)


# --- the API ------------------------------------------------------------------------------
def parse_key(raw_path: str, max_bytes: int) -> str:
    """The key from the raw (still percent-encoded) request path."""
    raw_path = raw_path.split("?", 1)[0]
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


def query_value(query: str, name: str) -> str | None:
    """The first value of `name` in a query string (as aiohttp's request.query.get)."""
    if not query:
        return None
    for k, v in parse_qsl(query, keep_blank_values=True):
        if k == name:
            return v
    return None


#: the query parameters each kv method accepts
READ_PARAMETERS = frozenset({"r", "timeout_ms"})
WRITE_PARAMETERS = frozenset({"w", "timeout_ms"})


def parse_query(query: str, allowed: frozenset[str]) -> dict[str, str]:
    """The parameters of a query string, each at most once and all in `allowed`; else
    InvalidParameter naming the offenders (a misspelt `W=all` must not silently write
    at the default W)."""
    params: dict[str, str] = {}
    repeated: list[str] = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in params:
            repeated.append(name)
        params[name] = value
    unknown = sorted(name for name in params if name not in allowed)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        accepted = ", ".join(sorted(allowed))
        raise InvalidParameter(
            f"unknown query parameter(s) {names} for this method; accepted: {accepted}"
        )
    if repeated:
        names = ", ".join(repr(name) for name in sorted(set(repeated)))
        raise InvalidParameter(f"query parameter(s) {names} given more than once")
    return params


class KvApi:
    def __init__(self, node: KvPort, codec: ContextCodec) -> None:
        self.node = node
        self.codec = codec
        self.config = node.config
        self.key_max_bytes = node.config.key_max_bytes
        self.value_max_bytes = node.config.value_max_bytes

    def _options(self, query: str, name: str, allowed: frozenset[str]) -> tuple[int | None, int]:
        """(r or w, or None for the default; timeout_ms) from a query string (none: the
        defaults, without parsing anything)."""
        if not query:
            return None, self.config.request_timeout_ms
        params = parse_query(query, allowed)
        n = self.node.require_state().n
        quorum = parse_quorum(params.get(name), n, 0, name)
        timeout_ms = parse_timeout_ms(params.get("timeout_ms"), self.config.request_timeout_ms)
        return quorum, timeout_ms

    async def get(self, raw_path: str, query: str) -> Reply:
        key = parse_key(raw_path, self.key_max_bytes)
        r, timeout_ms = self._options(query, "r", READ_PARAMETERS)
        self.node.require_state()
        skey = storage_key(key)
        obj = await self.node.coordinator.get(skey, r, timeout_ms)
        if obj.empty:
            return json_reply(404, _not_found(key))
        context = self.codec.encode(obj.context(), skey)
        visible = obj.visible()
        if not visible:  # only tombstones: 404 with the context that supersedes them
            return json_reply(404, _not_found(key), {CONTEXT_HEADER: context})
        if len(visible) == 1:
            s = visible[0]
            headers = {
                "Content-Type": s.content_type or DEFAULT_CONTENT_TYPE,
                CONTEXT_HEADER: context,
            }
            return Reply(200, headers, s.value or b"")
        doc = {
            "context": context,
            "siblings": [
                {
                    "content_type": s.content_type or DEFAULT_CONTENT_TYPE,
                    "value_b64": base64.b64encode(s.value or b"").decode(),
                }
                for s in visible
            ],
        }
        return json_reply(300, doc, {CONTEXT_HEADER: context})

    async def write(
        self,
        raw_path: str,
        query: str,
        context_header: str | None,
        content_type: str | None,
        body: bytes | None,
    ) -> Reply:
        """PUT (body is the value) or DELETE (body None: a tombstone)."""
        key = parse_key(raw_path, self.key_max_bytes)
        w, timeout_ms = self._options(query, "w", WRITE_PARAMETERS)
        self.node.require_state()
        skey = storage_key(key)
        context = self.codec.decode(context_header, skey)
        ctype = "" if body is None else (content_type or DEFAULT_CONTENT_TYPE)[:MAX_CONTENT_TYPE]
        obj = await self.node.coordinator.put(skey, context, body, ctype, w, timeout_ms)
        return Reply(204, {CONTEXT_HEADER: self.codec.encode(obj.context(), skey)})


def _not_found(key: str) -> dict[str, Any]:
    return {"error": {"code": "not_found", "message": f"no value for key {key!r}"}}
