"""A typed, synchronous Python client for one dynamokv node (stdlib only).

`DynamoClient` speaks the HTTP API of DESIGN.md §5 over one keep-alive
`http.client` connection. A connection the node dropped while it sat idle is
reopened once, transparently; a node that cannot be reached at all is a
`ConnectionFailed`. The client is not thread-safe: use one per thread.

Versioning follows the paper: `get` returns every sibling plus one opaque context;
`put` with that context supersedes exactly what was read; `resolve` is the
read-merge-write loop of the shopping cart. Keys are any UTF-8 string (`/` included):
they are percent-encoded whole into the path.

Exception tree (every error the client raises on purpose):

    ClientError(status, code, message)   any non-success answer (e.g. 409 conflict, 500)
    ├── NotFound                404      no such key, job or node
    ├── BadRequest              400/413  bad key, context, quorum or value too large
    ├── AuthError               401/403  missing, wrong or under-scoped token
    ├── Unavailable             503      incl. quorum not met (`required`, `answered`)
    ├── ConnectionFailed        -        the node cannot be reached (refused, timeout)
    └── SiblingsError           -        `GetResult.value` on a key with siblings
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote, urlencode

DEFAULT_NODE: Final = "127.0.0.1:7070"
DEFAULT_PORT: Final = 7070
DEFAULT_TIMEOUT_S: Final = 10.0
DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"
CONTEXT_HEADER: Final = "X-Dynamo-Context"
KV_PATH: Final = "/v1/kv/"
ADMIN_PATH: Final = "/v1/admin/"
HTTP_SCHEME: Final = "http://"

# status codes the client interprets (the rest become a plain ClientError)
HTTP_OK: Final = 200
HTTP_NO_CONTENT: Final = 204
HTTP_MULTIPLE_CHOICES: Final = 300
HTTP_BAD_REQUEST: Final = 400
HTTP_UNAUTHORIZED: Final = 401
HTTP_FORBIDDEN: Final = 403
HTTP_NOT_FOUND: Final = 404
HTTP_TOO_LARGE: Final = 413
HTTP_UNAVAILABLE: Final = 503
NO_STATUS: Final = 0  # the error did not come from an HTTP answer

# A per-request quorum: an integer 1..N, or "one", "quorum", "all".
Quorum = int | str
Json = dict[str, Any]


# --- errors ------------------------------------------------------------------------------
class ClientError(Exception):
    """Root of the client's errors: the HTTP status (0 if none), error code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotFound(ClientError):
    """404: no such key (see `GetResult.found` for reads), job or node."""


class BadRequest(ClientError):
    """400 or 413: the request was invalid (key, context, quorum, value size)."""


class AuthError(ClientError):
    """401 or 403: the token is missing, wrong, or lacks the scope (admin) needed."""


class Unavailable(ClientError):
    """503: the node or the replicas could not serve the request now.

    When a quorum was not met, `required` and `answered` say how many replicas were
    needed and how many answered.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        required: int | None = None,
        answered: int | None = None,
    ) -> None:
        super().__init__(status, code, message)
        self.required = required
        self.answered = answered


class ConnectionFailed(ClientError):
    """The node could not be reached (refused, reset, DNS, timed out)."""

    def __init__(self, message: str) -> None:
        super().__init__(NO_STATUS, "connection_failed", message)


class SiblingsError(ClientError):
    """A single value was asked of a key holding several concurrent versions."""

    def __init__(self, key: str, count: int) -> None:
        super().__init__(
            HTTP_MULTIPLE_CHOICES,
            "siblings",
            f"key {key!r} has {count} siblings; read them all and write back a merge",
        )
        self.key = key
        self.count = count


# --- results ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sibling:
    """One concurrent version of a value."""

    value: bytes
    content_type: str


@dataclass(frozen=True)
class GetResult:
    """What a read returned: no sibling (absent), one value, or several siblings.

    `context` covers every sibling returned (and tombstones of an absent key, if any):
    pass it to `put` or `delete` to supersede exactly what was read.
    """

    key: str
    siblings: list[Sibling]
    context: str | None

    @property
    def found(self) -> bool:
        return bool(self.siblings)

    @property
    def has_siblings(self) -> bool:
        return len(self.siblings) > 1

    def _single(self) -> Sibling:
        if not self.siblings:
            raise NotFound(HTTP_NOT_FOUND, "not_found", f"no value for key {self.key!r}")
        if len(self.siblings) > 1:
            raise SiblingsError(self.key, len(self.siblings))
        return self.siblings[0]

    @property
    def value(self) -> bytes:
        """The value; `NotFound` if absent, `SiblingsError` if there are several."""
        return self._single().value

    @property
    def content_type(self) -> str:
        """The content type of the single value (same errors as `value`)."""
        return self._single().content_type


# --- helpers -----------------------------------------------------------------------------
def split_node(node: str) -> tuple[str, int]:
    """ "HOST:PORT" (or "http://HOST:PORT", "[::1]:PORT", "HOST") -> (host, port)."""
    text = node.strip().removeprefix(HTTP_SCHEME).rstrip("/")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"node must be HOST:PORT, got {node!r}")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit():
        raise ValueError(f"node must be HOST:PORT, got {node!r}")
    return host, int(port_text)


def kv_path(key: str) -> str:
    return KV_PATH + quote(key, safe="")


def _query(**params: object) -> str:
    present = {name: str(value) for name, value in params.items() if value is not None}
    return "?" + urlencode(present) if present else ""


def _error_from(status: int, body: bytes, reason: str) -> ClientError:
    """The typed error for an unsuccessful answer (body: DESIGN.md §5 error JSON)."""
    code, message = "http_error", f"HTTP {status} {reason}".strip()
    required: int | None = None
    answered: int | None = None
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code", code))
        message = str(error.get("message", message))
        required = error.get("required") if isinstance(error.get("required"), int) else None
        answered = error.get("answered") if isinstance(error.get("answered"), int) else None
    elif body:
        message = f"{message}: {body[:200].decode('utf-8', 'replace')}"
    if status == HTTP_NOT_FOUND:
        return NotFound(status, code, message)
    if status in (HTTP_BAD_REQUEST, HTTP_TOO_LARGE):
        return BadRequest(status, code, message)
    if status in (HTTP_UNAUTHORIZED, HTTP_FORBIDDEN):
        return AuthError(status, code, message)
    if status == HTTP_UNAVAILABLE:
        return Unavailable(status, code, message, required, answered)
    return ClientError(status, code, message)


def _parse_siblings(key: str, body: bytes) -> list[Sibling]:
    try:
        parsed = json.loads(body)
        return [
            Sibling(base64.b64decode(s["value_b64"], validate=True), str(s["content_type"]))
            for s in parsed["siblings"]
        ]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ClientError(
            HTTP_MULTIPLE_CHOICES, "bad_response", f"unreadable siblings for {key!r}: {exc}"
        ) from None


@dataclass(frozen=True)
class _Response:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes


# --- the client ---------------------------------------------------------------------------
class DynamoClient:
    """A client of one node (any node coordinates any request).

    `node` is "HOST:PORT"; `token` is sent as a bearer token; `timeout` (seconds)
    bounds connecting and each read from the socket.
    """

    def __init__(
        self,
        node: str = DEFAULT_NODE,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        tls_ca: str | None = None,
    ) -> None:
        self.node = node
        self.host, self.port = split_node(node)
        self.token = token
        #: a CA file: talk HTTPS and verify the node against it
        self.tls_ca = tls_ca
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._reused = False  # has the open connection already served a request?

    # --- connection ---------------------------------------------------------------------
    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> DynamoClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.tls_ca:
                ctx = ssl.create_default_context(cafile=self.tls_ca)
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=ctx
                )
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._reused = False
        return self._conn

    def _exchange(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> _Response:
        conn = self._connection()
        conn.request(method, path, body=body, headers=dict(headers))
        resp = conn.getresponse()
        data = resp.read()
        if resp.will_close:
            self.close()
        else:
            self._reused = True
        return _Response(resp.status, resp.reason, resp.headers, data)

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Response:
        sent = dict(headers or {})
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        try:
            try:
                return self._exchange(method, path, body, sent)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A kept-alive connection the node closed while idle: the request never
                # reached it, so one retry on a fresh connection is safe.
                was_reused = self._reused
                self.close()
                if not was_reused:
                    raise
                return self._exchange(method, path, body, sent)
        except TimeoutError:
            self.close()
            raise ConnectionFailed(
                f"node {self.node} did not answer within {self.timeout:g}s"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise ConnectionFailed(f"cannot reach node {self.node}: {exc}") from None

    def _json(self, method: str, path: str, payload: Json | None = None) -> Json:
        body = json.dumps(payload).encode() if payload is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        resp = self._request(method, ADMIN_PATH + path, body, headers)
        if resp.status >= HTTP_MULTIPLE_CHOICES:
            raise _error_from(resp.status, resp.body, resp.reason)
        try:
            parsed = json.loads(resp.body)
        except (ValueError, UnicodeDecodeError):
            raise ClientError(resp.status, "bad_response", f"{path}: not JSON") from None
        if not isinstance(parsed, dict):
            raise ClientError(resp.status, "bad_response", f"{path}: not a JSON object")
        return parsed

    # --- key-value -----------------------------------------------------------------------
    def get(self, key: str, *, r: Quorum | None = None, timeout_ms: int | None = None) -> GetResult:
        """Every visible sibling of `key` plus its context (found is False when absent)."""
        resp = self._request("GET", kv_path(key) + _query(r=r, timeout_ms=timeout_ms))
        context = resp.headers.get(CONTEXT_HEADER)
        if resp.status == HTTP_OK:
            content_type = resp.headers.get("Content-Type", DEFAULT_CONTENT_TYPE)
            return GetResult(key, [Sibling(resp.body, content_type)], context)
        if resp.status == HTTP_MULTIPLE_CHOICES:
            return GetResult(key, _parse_siblings(key, resp.body), context)
        if resp.status == HTTP_NOT_FOUND:
            return GetResult(key, [], context)
        raise _error_from(resp.status, resp.body, resp.reason)

    def put(
        self,
        key: str,
        value: bytes,
        context: str | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,
        *,
        w: Quorum | None = None,
        timeout_ms: int | None = None,
    ) -> str:
        """Write `value`; it supersedes the versions `context` covers. Returns the new context."""
        headers = {"Content-Type": content_type}
        if context:
            headers[CONTEXT_HEADER] = context
        query = _query(w=w, timeout_ms=timeout_ms)
        resp = self._request("PUT", kv_path(key) + query, value, headers)
        if resp.status >= HTTP_MULTIPLE_CHOICES:
            raise _error_from(resp.status, resp.body, resp.reason)
        return resp.headers.get(CONTEXT_HEADER, "")

    def delete(
        self,
        key: str,
        context: str | None = None,
        *,
        w: Quorum | None = None,
        timeout_ms: int | None = None,
    ) -> None:
        """Write a tombstone superseding the versions `context` covers.

        Without a context the tombstone supersedes nothing (DESIGN.md §2): pass the
        context of a `get` to delete what was read.
        """
        headers = {CONTEXT_HEADER: context} if context else {}
        resp = self._request(
            "DELETE", kv_path(key) + _query(w=w, timeout_ms=timeout_ms), None, headers
        )
        if resp.status >= HTTP_MULTIPLE_CHOICES:
            raise _error_from(resp.status, resp.body, resp.reason)

    def resolve(
        self,
        key: str,
        merge: Callable[[list[Sibling]], bytes],
        content_type: str | None = None,
        *,
        w: Quorum | None = None,
        r: Quorum | None = None,
    ) -> str:
        """Read every sibling, merge them with `merge`, write the result back.

        `merge([])` is called for an absent key. The write carries the read's context,
        so it supersedes exactly the siblings merged. `content_type` defaults to the
        siblings' common type (else application/octet-stream). Returns the new context.
        """
        result = self.get(key, r=r)
        merged = merge(list(result.siblings))
        if content_type is None:
            types = {s.content_type for s in result.siblings}
            content_type = types.pop() if len(types) == 1 else DEFAULT_CONTENT_TYPE
        return self.put(key, merged, result.context, content_type, w=w)

    # --- admin ----------------------------------------------------------------------------
    def status(self) -> Json:
        return self._json("GET", "status")

    def ring(self) -> Json:
        return self._json("GET", "ring")

    def join(self, address: str) -> Json:
        """Stage the running node at `address` joining the ring (commit to apply)."""
        return self._json("POST", "join", {"address": address})

    def leave(self, node: str) -> Json:
        """Stage node id `node` leaving the ring (commit to apply)."""
        return self._json("POST", "leave", {"node": node})

    def force_remove(self, node: str) -> Json:
        """Stage node id `node`, gone for good, leaving without its data (commit to
        apply): its partitions are rebuilt from the surviving replicas."""
        return self._json("POST", "force-remove", {"node": node})

    def replace(self, old: str, new: str) -> Json:
        """Stage `new` (HOST:PORT of a running node, or a member's id) taking the place
        of `old`, gone for good (commit to apply)."""
        return self._json("POST", "replace", {"old": old, "new": new})

    def plan(self) -> Json:
        return self._json("GET", "plan")

    def clear_plan(self) -> Json:
        return self._json("DELETE", "plan")

    def commit(self) -> Json:
        return self._json("POST", "commit")

    def anti_entropy(self) -> str:
        """Start a full anti-entropy pass; returns its job id."""
        answer = self._json("POST", "anti-entropy")
        job = answer.get("job")
        if not isinstance(job, str):
            raise ClientError(HTTP_OK, "bad_response", "anti-entropy: no job id in the answer")
        return job

    def job(self, job_id: str) -> Json:
        return self._json("GET", "jobs/" + quote(job_id, safe=""))
