"""The typed Python client of one dynamokv node (stdlib only): a sync and an async face.

`DynamoClient` speaks the node's HTTP API (docs/api.md) over one keep-alive
`http.client` connection; `AsyncDynamoClient` has the same methods as coroutines, on
asyncio streams. Both share one request builder and one reading of answers and errors
(`_ClientCore`), and the same retry rule; `request()` on either is the raw exchange
(no error mapping) the rest of the code base uses to talk to nodes. docs/client.md is
the guide. A connection the node closed
while it sat idle is noticed before it is reused and reopened. A request whose
connection is lost after it was sent is retried only when it is idempotent (GET:
reads, status, ring, plan, job): a write may have been stored, so it fails with
`ConnectionFailed(maybe_applied=True)` instead of being sent twice (a second copy of
a blind write would be a spurious sibling). A node that cannot be reached at all is a
`ConnectionFailed`. The client is not thread-safe: use one per thread.

Values are bytes; a `str` value is sent as UTF-8. A key, value or context of the wrong
type is a `TypeError` and an empty key a `ValueError`, both raised before anything is
sent (the client stays usable).

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
    ├── ConnectionFailed        -        the node cannot be reached (refused, timeout,
    │                                    TLS certificate not verified, connection lost)
    ├── NotDynamoNode           -        the address answers, but not as a dynamokv node
    └── SiblingsError           -        `GetResult.value` on a key with siblings

`maybe_applied` (every ClientError has it) is True when a failed PUT or DELETE may
still have been stored on some replicas (a 503 whose body says so, or a connection
lost after the write was sent): read the key before retrying.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import http.client
import json
import math
import select
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Generic, TypeVar
from urllib.parse import quote, urlencode

DEFAULT_NODE: Final = "127.0.0.1:7070"
DEFAULT_PORT: Final = 7070
DEFAULT_TIMEOUT_S: Final = 10.0
DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"
CONTEXT_HEADER: Final = "X-Dynamo-Context"
KV_PATH: Final = "/v1/kv/"
ADMIN_PATH: Final = "/v1/admin/"
HTTP_SCHEME: Final = "http://"
HTTPS_SCHEME: Final = "https://"
#: methods that may be sent again after a lost connection (they change nothing)
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD"})
QUORUM_NAMES: Final = ("one", "quorum", "all")
MAYBE_APPLIED: Final = (
    "the write may have been applied on some replicas; read the key before retrying"
)
ERROR_SNIPPET: Final = 120

# status codes the client interprets (the rest become a plain ClientError)
HTTP_OK: Final = 200
HTTP_NO_CONTENT: Final = 204
HTTP_MULTIPLE_CHOICES: Final = 300
HTTP_BAD_REQUEST: Final = 400
HTTP_UNAUTHORIZED: Final = 401
HTTP_FORBIDDEN: Final = 403
HTTP_NOT_FOUND: Final = 404
HTTP_TOO_LARGE: Final = 413
HTTP_INTERNAL_ERROR: Final = 500
HTTP_UNAVAILABLE: Final = 503
NO_STATUS: Final = 0  # the error did not come from an HTTP answer

# A per-request quorum: an integer 1..N, or "one", "quorum", "all".
Quorum = int | str
Json = dict[str, Any]


# --- errors ------------------------------------------------------------------------------
class ClientError(Exception):
    """Root of the client's errors: the HTTP status (0 if none), error code, message."""

    def __init__(
        self, status: int, code: str, message: str, *, maybe_applied: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        #: a failed write that may have been stored on some replicas anyway
        self.maybe_applied = maybe_applied

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
    needed and how many answered; `maybe_applied` is True when the node says the
    write may have been stored on some of them.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        required: int | None = None,
        answered: int | None = None,
        *,
        maybe_applied: bool = False,
    ) -> None:
        super().__init__(status, code, message, maybe_applied=maybe_applied)
        self.required = required
        self.answered = answered


class ConnectionFailed(ClientError):
    """The node could not be reached (refused, reset, DNS, timed out, TLS not verified),
    or the connection was lost. `maybe_applied`: the lost request was a write that had
    been sent (it is never retried)."""

    def __init__(self, message: str, *, maybe_applied: bool = False) -> None:
        super().__init__(NO_STATUS, "connection_failed", message, maybe_applied=maybe_applied)
        #: the underlying error (an OSError, ssl.SSLError...), when there is one
        self.reason: BaseException | None = None


class NotDynamoNode(ClientError):
    """The address answered HTTP, but not as a dynamokv node does (e.g. an HTML 404)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, "not_dynamokv", message)


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
    """ "HOST:PORT" (or "http://HOST:PORT", "https://HOST:PORT", "[::1]:PORT", "HOST")
    -> (host, port)."""
    text = node.strip().removeprefix(HTTP_SCHEME).removeprefix(HTTPS_SCHEME).rstrip("/")
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
    return KV_PATH + quote(_check_key(key), safe="")


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, not {type(key).__name__}")
    if not key:
        raise ValueError("key must not be empty")
    return key


def _check_value(value: object) -> bytes:
    """The bytes to send: bytes-like as is, str as UTF-8."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"value must be bytes or str, not {type(value).__name__}")


def _check_context(context: object) -> str | None:
    if context is not None and not isinstance(context, str):
        raise TypeError(f"context must be a str or None, not {type(context).__name__}")
    return _check_header("context", context) if context else None


def _check_header(name: str, value: str) -> str:
    """A value sent in a header: printable ASCII (no line breaks, no control characters)."""
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"{name} must be printable ASCII: {value!r}")
    return value


def _check_quorum(name: str, value: object) -> None:
    """Type and range checks of r/w the client can make without knowing N."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"{name} must be an int or one of {QUORUM_NAMES}, not {value!r}")
    if isinstance(value, int) and value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


def is_dynamo_error(body: bytes) -> bool:
    """Is `body` a dynamokv error document, {"error": {"code": ..., "message": ...}}?"""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return isinstance(error, dict) and "code" in error and "message" in error


def _query(**params: object) -> str:
    present = {name: str(value) for name, value in params.items() if value is not None}
    return "?" + urlencode(present) if present else ""


def _error_from(status: int, body: bytes, reason: str) -> ClientError:
    """The typed error for an unsuccessful answer (body: the node's error JSON)."""
    code, message = "http_error", f"HTTP {status} {reason}".strip()
    required: int | None = None
    answered: int | None = None
    maybe_applied = False
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
        maybe_applied = error.get("maybe_applied") is True
    elif body:
        message = f"{message}: {body[:200].decode('utf-8', 'replace')}"
    if status == HTTP_NOT_FOUND:
        return NotFound(status, code, message)
    if status in (HTTP_BAD_REQUEST, HTTP_TOO_LARGE):
        return BadRequest(status, code, message)
    if status in (HTTP_UNAUTHORIZED, HTTP_FORBIDDEN):
        return AuthError(status, code, message)
    if status == HTTP_UNAVAILABLE:
        return Unavailable(status, code, message, required, answered, maybe_applied=maybe_applied)
    return ClientError(status, code, message, maybe_applied=maybe_applied)


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


class Headers(Mapping[str, str]):
    """Response header fields, looked up case-insensitively; a repeated field gives its
    first value (as `http.client` does), iteration yields each name once, as sent."""

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: dict[str, tuple[str, str]] = {}
        for name, value in fields:
            self._fields.setdefault(name.lower(), (name, value))

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._fields.values())

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({dict(self)!r})"


@dataclass(frozen=True)
class Response:
    """One raw answer of a node (or of whatever answered): nothing interpreted."""

    status: int
    reason: str
    headers: Headers
    body: bytes


_Response = Response

T = TypeVar("T")


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One API call, built once for both faces: the request, and how its answer reads."""

    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]
    parse: Callable[[Response], T]


class _Lost(Exception):
    """A request failed on the wire; `sent`: after (some of) it may have been written."""

    def __init__(self, error: BaseException, sent: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.sent = sent


def _may_retry(method: str, lost: _Lost, was_reused: bool) -> bool:
    """Send once more on a fresh connection? Only a request that changes nothing, lost
    on a kept-alive connection the node dropped (a write is never sent twice)."""
    return (
        method in IDEMPOTENT_METHODS
        and lost.sent
        and was_reused
        and isinstance(lost.error, ConnectionError | http.client.HTTPException)
    )


# --- what both faces share: arguments, request building, answer reading ---------------
class _ClientCore:
    """Arguments, request building and answer reading, shared by `DynamoClient` (sync)
    and `AsyncDynamoClient`; the faces only move bytes."""

    def __init__(
        self,
        node: str = DEFAULT_NODE,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        tls_ca: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        _check_text("node", node)
        self.node = node
        self.host, self.port = split_node(node)
        if token is not None:
            token = _check_text("token", token).strip()
            if not token.isascii() or not token.isprintable() or " " in token:
                raise ValueError("token must be printable ASCII without spaces")
        self.token = token or None
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"timeout must be a number of seconds, not {timeout!r}")
        if not math.isfinite(timeout) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = float(timeout)
        #: a CA file: talk HTTPS and verify the node against it
        self.tls_ca = tls_ca
        self._tls: ssl.SSLContext | None = None
        if tls_context is not None:
            if not isinstance(tls_context, ssl.SSLContext):
                raise TypeError("tls_context must be an ssl.SSLContext")
            self._tls = tls_context  # e.g. with a client certificate (node to node)
        elif tls_ca:
            _check_text("tls_ca", tls_ca)
            try:
                self._tls = ssl.create_default_context(cafile=tls_ca)
            except FileNotFoundError:
                raise ValueError(f"CA file {tls_ca}: no such file") from None
            except (OSError, ssl.SSLError) as exc:
                reason = getattr(exc, "strerror", None) or exc
                raise ValueError(f"CA file {tls_ca} is not usable: {reason}") from None
        elif node.strip().startswith(HTTPS_SCHEME):
            self._tls = ssl.create_default_context()  # the system's trusted CAs

    @property
    def uses_tls(self) -> bool:
        return self._tls is not None

    @property
    def tls_context(self) -> ssl.SSLContext | None:
        """The SSL context the node is talked to with (None: plain HTTP)."""
        return self._tls

    def _with_auth(self, headers: Mapping[str, str] | None) -> dict[str, str]:
        sent = dict(headers or {})
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        return sent

    def _failure(
        self, method: str, lost: _Lost, *, fresh: bool, timeout: float | None = None
    ) -> ConnectionFailed:
        """The ConnectionFailed for a request lost on the wire."""
        error = lost.error
        maybe_applied = lost.sent and method not in IDEMPOTENT_METHODS
        suffix = f"; {MAYBE_APPLIED}" if maybe_applied else ""
        if isinstance(error, ssl.SSLCertVerificationError):
            reason = error.verify_message or error.reason or str(error)
            failed = ConnectionFailed(
                f"the TLS certificate of node {self.node} could not be verified ({reason}): "
                "give the cluster's CA file with --tls-ca FILE or DYNAMO_TLS_CA "
                "(DynamoClient(tls_ca=...))"
            )
        elif isinstance(error, ssl.SSLError):
            hint = (
                "; does the node serve plain HTTP? then drop https:// and the CA"
                if "WRONG_VERSION_NUMBER" in str(error) or "wrong version" in str(error)
                else ""
            )
            failed = ConnectionFailed(f"TLS with node {self.node} failed: {error}{hint}")
        elif isinstance(error, TimeoutError):
            failed = ConnectionFailed(
                f"node {self.node} did not answer within {timeout or self.timeout:g}s{suffix}",
                maybe_applied=maybe_applied,
            )
        elif not lost.sent:
            failed = ConnectionFailed(f"cannot reach node {self.node}: {error}")
        else:
            hint = ""
            if fresh and not self.uses_tls:
                hint = " (if the node uses TLS: --node https://HOST:PORT, --tls-ca FILE)"
            failed = ConnectionFailed(
                f"connection to node {self.node} lost: "
                f"{error or type(error).__name__}{hint}{suffix}",
                maybe_applied=maybe_applied,
            )
        failed.reason = error
        return failed

    def _not_dynamo(self, resp: Response, why: str) -> NotDynamoNode:
        ctype = resp.headers.get("Content-Type", "no content type")
        snippet = resp.body[:ERROR_SNIPPET].decode("utf-8", "replace").strip()
        snippet = " ".join(snippet.split())
        shown = f": {snippet!r}" if snippet else ""
        return NotDynamoNode(
            resp.status,
            f"{self.host}:{self.port} does not look like a dynamokv node: {why} "
            f"(HTTP {resp.status} {resp.reason}, {ctype}){shown}",
        )

    def _error(self, resp: Response) -> ClientError:
        """The error for an unsuccessful answer; one without the node's error body
        (and not a gateway's 5xx) comes from something that is not a dynamokv node."""
        if resp.status < HTTP_INTERNAL_ERROR and not is_dynamo_error(resp.body):
            return self._not_dynamo(resp, "no dynamokv error body")
        return _error_from(resp.status, resp.body, resp.reason)

    # --- the calls -------------------------------------------------------------------------
    def _json_call(self, method: str, path: str, payload: Json | None = None) -> _Call[Json]:
        body = json.dumps(payload).encode() if payload is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}

        def parse(resp: Response) -> Json:
            if resp.status >= HTTP_MULTIPLE_CHOICES:
                raise self._error(resp)
            try:
                parsed = json.loads(resp.body)
            except (ValueError, UnicodeDecodeError):
                raise self._not_dynamo(resp, f"{path}: not JSON") from None
            if not isinstance(parsed, dict):
                raise self._not_dynamo(resp, f"{path}: not a JSON object")
            return parsed

        return _Call(method, ADMIN_PATH + path, body, headers, parse)

    def _get_call(self, key: str, r: Quorum | None, timeout_ms: int | None) -> _Call[GetResult]:
        _check_quorum("r", r)
        path = kv_path(key) + _query(r=r, timeout_ms=timeout_ms)

        def parse(resp: Response) -> GetResult:
            context = resp.headers.get(CONTEXT_HEADER)
            if resp.status == HTTP_OK:
                if context is None:
                    raise self._not_dynamo(resp, f"no {CONTEXT_HEADER} header")
                content_type = resp.headers.get("Content-Type", DEFAULT_CONTENT_TYPE)
                return GetResult(key, [Sibling(resp.body, content_type)], context)
            if resp.status == HTTP_MULTIPLE_CHOICES:
                if context is None:
                    raise self._not_dynamo(resp, f"no {CONTEXT_HEADER} header")
                return GetResult(key, _parse_siblings(key, resp.body), context)
            if resp.status == HTTP_NOT_FOUND and is_dynamo_error(resp.body):
                return GetResult(key, [], context)
            raise self._error(resp)

        return _Call("GET", path, None, {}, parse)

    def _put_call(
        self,
        key: str,
        value: bytes | str,
        context: str | None,
        content_type: str,
        w: Quorum | None,
        timeout_ms: int | None,
    ) -> _Call[str]:
        path = kv_path(key)
        data = _check_value(value)
        context = _check_context(context)
        headers = {
            "Content-Type": _check_header("content_type", _check_text("content_type", content_type))
        }
        if context:
            headers[CONTEXT_HEADER] = context
        _check_quorum("w", w)

        def parse(resp: Response) -> str:
            if resp.status >= HTTP_MULTIPLE_CHOICES:
                raise self._error(resp)
            new_context = resp.headers.get(CONTEXT_HEADER)
            if new_context is None:
                raise self._not_dynamo(resp, f"no {CONTEXT_HEADER} header")
            return new_context

        return _Call("PUT", path + _query(w=w, timeout_ms=timeout_ms), data, headers, parse)

    def _delete_call(
        self, key: str, context: str | None, w: Quorum | None, timeout_ms: int | None
    ) -> _Call[None]:
        path = kv_path(key)
        context = _check_context(context)
        _check_quorum("w", w)
        headers = {CONTEXT_HEADER: context} if context else {}

        def parse(resp: Response) -> None:
            if resp.status >= HTTP_MULTIPLE_CHOICES:
                raise self._error(resp)
            if CONTEXT_HEADER not in resp.headers:
                raise self._not_dynamo(resp, f"no {CONTEXT_HEADER} header")

        return _Call("DELETE", path + _query(w=w, timeout_ms=timeout_ms), None, headers, parse)

    def _anti_entropy_call(self) -> _Call[str]:
        call = self._json_call("POST", "anti-entropy")

        def parse(resp: Response) -> str:
            job = call.parse(resp).get("job")
            if not isinstance(job, str):
                raise ClientError(HTTP_OK, "bad_response", "anti-entropy: no job id in the answer")
            return job

        return _Call(call.method, call.path, call.body, call.headers, parse)

    def _job_call(self, job_id: str) -> _Call[Json]:
        if not _check_text("job_id", job_id):
            raise ValueError("job id must not be empty")
        return self._json_call("GET", "jobs/" + quote(job_id, safe=""))

    @staticmethod
    def _resolved(
        result: GetResult,
        merge: Callable[[list[Sibling]], bytes | str],
        content_type: str | None,
    ) -> tuple[bytes | str, str]:
        merged = merge(list(result.siblings))
        if content_type is None:
            types = {s.content_type for s in result.siblings}
            content_type = types.pop() if len(types) == 1 else DEFAULT_CONTENT_TYPE
        return merged, content_type


# --- the sync face ------------------------------------------------------------------------
class DynamoClient(_ClientCore):
    """A client of one node (any node coordinates any request).

    `node` is "HOST:PORT" (or "https://HOST:PORT" for a TLS node whose certificate the
    system trusts); `token` is sent as a bearer token; `timeout` (seconds) bounds
    connecting and each read from the socket; `tls_ca`, a CA file: talk HTTPS and
    verify the node against it (or `tls_context`, an `ssl.SSLContext` to use as is). A
    bad argument is a ValueError (TypeError for a wrong type) raised here, before any
    connection.
    """

    def __init__(
        self,
        node: str = DEFAULT_NODE,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        tls_ca: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(node, token, timeout, tls_ca, tls_context)
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
        if self._conn is not None and self._idle_closed(self._conn):
            self.close()  # the node closed it while idle: never send on it
        if self._conn is None:
            if self._tls is not None:
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.timeout, context=self._tls
                )
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._reused = False
        return self._conn

    @staticmethod
    def _idle_closed(conn: http.client.HTTPConnection) -> bool:
        """Is an idle kept-alive connection readable, i.e. closed by the node (EOF) or
        holding bytes nobody asked for? Either way it must not carry a request."""
        sock = conn.sock
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def _exchange(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> Response:
        """One request on the wire; failures are `_Lost`, saying whether any of the
        request may have been written."""
        conn = self._connection()
        if conn.sock is None:
            try:
                conn.connect()  # nothing of the request is written before this succeeds
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise _Lost(exc, sent=False) from None
        try:
            conn.request(method, path, body=body, headers=dict(headers))
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise _Lost(exc, sent=True) from None
        if resp.will_close:
            self.close()
        else:
            self._reused = True
        return Response(resp.status, resp.reason, Headers(resp.getheaders()), data)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send one request (the bearer token added) and return the raw answer, whatever
        its status: no error mapping. A request lost on the wire is a ConnectionFailed;
        only a GET/HEAD lost on a kept-alive connection is sent once more."""
        sent = self._with_auth(headers)
        was_reused = self._conn is not None and self._reused
        try:
            return self._exchange(method, path, body, sent)
        except _Lost as lost:
            if not _may_retry(method, lost, was_reused):
                raise self._failure(method, lost, fresh=not was_reused) from None
        try:
            return self._exchange(method, path, body, sent)
        except _Lost as lost:
            raise self._failure(method, lost, fresh=True) from None

    _request = request

    def _run(self, call: _Call[T]) -> T:
        return call.parse(self.request(call.method, call.path, call.body, call.headers))

    # --- key-value -----------------------------------------------------------------------
    def get(self, key: str, *, r: Quorum | None = None, timeout_ms: int | None = None) -> GetResult:
        """Every visible sibling of `key` plus its context (found is False when absent)."""
        return self._run(self._get_call(key, r, timeout_ms))

    def put(
        self,
        key: str,
        value: bytes | str,
        context: str | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,
        *,
        w: Quorum | None = None,
        timeout_ms: int | None = None,
    ) -> str:
        """Write `value` (bytes; a str is sent as UTF-8); it supersedes the versions
        `context` covers. Returns the new context.

        A failure after the write was sent (a 503, a lost connection) may still have
        stored it on some replicas: `error.maybe_applied` is True then; read the key
        before retrying. A lost write is never resent by the client."""
        return self._run(self._put_call(key, value, context, content_type, w, timeout_ms))

    def delete(
        self,
        key: str,
        context: str | None = None,
        *,
        w: Quorum | None = None,
        timeout_ms: int | None = None,
    ) -> None:
        """Write a tombstone superseding the versions `context` covers.

        Without a context the tombstone supersedes nothing: pass the context of a
        `get` to delete what was read. Failures: as for `put` (`maybe_applied`).
        """
        self._run(self._delete_call(key, context, w, timeout_ms))

    def resolve(
        self,
        key: str,
        merge: Callable[[list[Sibling]], bytes | str],
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
        _check_quorum("w", w)
        result = self.get(key, r=r)
        merged, content_type = self._resolved(result, merge, content_type)
        return self.put(key, merged, result.context, content_type, w=w)

    # --- admin ----------------------------------------------------------------------------
    def status(self) -> Json:
        return self._run(self._json_call("GET", "status"))

    def ring(self) -> Json:
        return self._run(self._json_call("GET", "ring"))

    def join(self, address: str) -> Json:
        """Stage the running node at `address` joining the ring (commit to apply)."""
        return self._run(self._json_call("POST", "join", {"address": address}))

    def leave(self, node: str, *, force: bool = False) -> Json:
        """Stage node id `node` leaving the ring (commit to apply).

        The node refuses (409, code `too_few_members`) a leave that would leave fewer
        than N members, unless `force`: then keys keep fewer than N replicas."""
        return self._run(self._json_call("POST", "leave", _member_change(node, force)))

    def force_remove(self, node: str, *, force: bool = False) -> Json:
        """Stage node id `node`, gone for good, leaving without its data (commit to
        apply): its partitions are rebuilt from the surviving replicas. `force`: as
        for `leave`."""
        return self._run(self._json_call("POST", "force-remove", _member_change(node, force)))

    def replace(self, old: str, new: str) -> Json:
        """Stage `new` (HOST:PORT of a running node, or a member's id) taking the place
        of `old`, gone for good (commit to apply)."""
        return self._run(self._json_call("POST", "replace", {"old": old, "new": new}))

    def plan(self) -> Json:
        return self._run(self._json_call("GET", "plan"))

    def clear_plan(self) -> Json:
        return self._run(self._json_call("DELETE", "plan"))

    def commit(self) -> Json:
        return self._run(self._json_call("POST", "commit"))

    def anti_entropy(self) -> str:
        """Start a full anti-entropy pass; returns its job id."""
        return self._run(self._anti_entropy_call())

    def job(self, job_id: str) -> Json:
        """An admin job (e.g. an anti-entropy pass): its state and progress."""
        return self._run(self._job_call(job_id))


# --- the async face (asyncio streams) -----------------------------------------------------
class _BadAnswer(ConnectionError):
    """The bytes that came back are not an HTTP/1.1 answer (or stopped mid-answer)."""


@dataclass
class _Stream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def usable(self) -> bool:
        """Still open, and nothing arrived while it sat idle (EOF included)."""
        return not (self.reader.at_eof() or self.writer.is_closing())

    def abort(self) -> None:
        transport = self.writer.transport
        transport.abort()


def _request_head(
    method: str, path: str, host: str, body: bytes | None, headers: Mapping[str, str]
) -> bytes:
    if not method.isalpha() or not method.isascii():
        raise ValueError(f"bad HTTP method {method!r}")
    if not path.startswith("/") or not path.isascii() or not path.isprintable() or " " in path:
        raise ValueError(f"the request path must be printable ASCII without spaces: {path!r}")
    names = {name.lower() for name in headers}
    lines = [f"{method} {path} HTTP/1.1"]
    if "host" not in names:  # as http.client: the caller's own Host and length win
        lines.append(f"Host: {host}")
    for name, value in headers.items():
        if not name or not all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in name):
            raise ValueError(f"bad header name {name!r}")
        if "\r" in value or "\n" in value or "\0" in value:
            raise ValueError(f"bad value of header {name}: {value!r}")
        lines.append(f"{name}: {value}")
    if "content-length" not in names and (body is not None or method in ("POST", "PUT", "PATCH")):
        lines.append(f"Content-Length: {len(body or b'')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError:
        raise _BadAnswer("the connection closed before the answer was complete") from None
    except asyncio.LimitOverrunError:
        raise _BadAnswer("an answer line is too long") from None
    return line.rstrip(b"\r\n")


async def _read_exactly(reader: asyncio.StreamReader, size: int) -> bytes:
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise _BadAnswer("the connection closed before the answer was complete") from None


async def _read_response(reader: asyncio.StreamReader, method: str) -> tuple[Response, bool]:
    """One HTTP/1.x answer (Content-Length, chunked, or up to EOF) and whether the
    connection may carry another request."""
    while True:
        line = await _read_line(reader)
        version, _, rest = line.decode("latin-1").partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise _BadAnswer(f"not an HTTP answer: {line[:80]!r}")
        status = int(code)
        fields: list[tuple[str, str]] = []
        while header := await _read_line(reader):
            name, colon, value = header.decode("latin-1").partition(":")
            if not colon:
                raise _BadAnswer(f"bad header line {header[:80]!r}")
            fields.append((name.strip(), value.strip()))
        if not 100 <= status < 200:  # 1xx: an interim answer, the real one follows
            break
    headers = Headers(fields)
    tokens = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
    keep = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
    if method == "HEAD" or status in (HTTP_NO_CONTENT, 304):
        body = b""
    elif "chunked" in headers.get("Transfer-Encoding", "").lower():
        parts: list[bytes] = []
        while True:
            size_text = (await _read_line(reader)).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _BadAnswer(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                while await _read_line(reader):  # trailer fields, ignored
                    pass
                break
            parts.append(await _read_exactly(reader, size))
            await _read_exactly(reader, 2)  # the CRLF after the chunk
        body = b"".join(parts)
    elif "Content-Length" in headers:
        length = headers["Content-Length"]
        if not length.isdigit():
            raise _BadAnswer(f"bad Content-Length {length!r}")
        body = await _read_exactly(reader, int(length))
    else:  # delimited by the end of the connection
        body = await reader.read()
        keep = False
    return Response(status, reason, headers, body), keep


class AsyncDynamoClient(_ClientCore):
    """The async face of `DynamoClient`: the same arguments, methods and errors, as
    coroutines on asyncio streams (standard library only).

    `timeout` bounds each call as a whole (connecting, sending, the answer), and a retried
    read's second attempt too; `request(..., timeout=...)` overrides it for one call.
    Kept-alive connections are pooled (at most `max_idle` idle ones), so concurrent
    calls are safe: each takes its own connection. Close with `await client.close()`
    or `async with`.
    """

    def __init__(
        self,
        node: str = DEFAULT_NODE,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        tls_ca: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        *,
        max_idle: int = 4,
    ) -> None:
        super().__init__(node, token, timeout, tls_ca, tls_context)
        self._idle: list[_Stream] = []
        self._max_idle = max_idle
        self._host_header = (
            f"[{self.host}]:{self.port}" if ":" in self.host else (f"{self.host}:{self.port}")
        )

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for stream in idle:
            stream.writer.close()
        for stream in idle:
            with contextlib.suppress(Exception):
                await stream.writer.wait_closed()

    async def __aenter__(self) -> AsyncDynamoClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _take(self) -> _Stream | None:
        while self._idle:
            stream = self._idle.pop()
            if stream.usable():
                return stream
            stream.abort()  # the node closed it while idle: never send on it
        return None

    async def _exchange(
        self,
        stream: _Stream | None,
        head: bytes,
        body: bytes | None,
        method: str,
        deadline: float,
    ) -> Response:
        sent = False
        done = False
        try:
            async with asyncio.timeout_at(deadline):
                if stream is None:
                    reader, writer = await asyncio.open_connection(
                        self.host,
                        self.port,
                        ssl=self._tls,
                        server_hostname=self.host if self._tls is not None else None,
                    )
                    stream = _Stream(reader, writer)
                sent = True  # from here on, some of the request may reach the node
                stream.writer.write(head + (body or b""))
                await stream.writer.drain()
                resp, keep = await _read_response(stream.reader, method)
            done = True
        except (OSError, EOFError) as exc:  # TimeoutError and ssl errors are OSErrors
            raise _Lost(exc, sent) from None
        finally:
            if not done and stream is not None:
                stream.abort()
        if keep and len(self._idle) < self._max_idle:
            self._idle.append(stream)
        else:
            stream.writer.close()
        return resp

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        timeout: float | None = None,
    ) -> Response:
        """As `DynamoClient.request`: one request (the bearer token added), the raw
        answer whatever its status, a ConnectionFailed when lost on the wire; within
        `timeout` seconds (default: the client's)."""
        head = _request_head(method, path, self._host_header, body, self._with_auth(headers))
        limit = timeout or self.timeout
        deadline = asyncio.get_running_loop().time() + limit
        stream = self._take()
        was_reused = stream is not None
        try:
            return await self._exchange(stream, head, body, method, deadline)
        except _Lost as lost:
            if not _may_retry(method, lost, was_reused):
                raise self._failure(method, lost, fresh=not was_reused, timeout=limit) from None
        try:
            return await self._exchange(None, head, body, method, deadline)
        except _Lost as lost:
            raise self._failure(method, lost, fresh=True, timeout=limit) from None

    async def _run(self, call: _Call[T]) -> T:
        return call.parse(await self.request(call.method, call.path, call.body, call.headers))

    # --- key-value -----------------------------------------------------------------------
    async def get(
        self, key: str, *, r: Quorum | None = None, timeout_ms: int | None = None
    ) -> GetResult:
        """As `DynamoClient.get`."""
        return await self._run(self._get_call(key, r, timeout_ms))

    async def put(
        self,
        key: str,
        value: bytes | str,
        context: str | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,
        *,
        w: Quorum | None = None,
        timeout_ms: int | None = None,
    ) -> str:
        """As `DynamoClient.put` (a lost write is never resent: `maybe_applied`)."""
        return await self._run(self._put_call(key, value, context, content_type, w, timeout_ms))

    async def delete(
        self,
        key: str,
        context: str | None = None,
        *,
        w: Quorum | None = None,
        timeout_ms: int | None = None,
    ) -> None:
        """As `DynamoClient.delete`."""
        await self._run(self._delete_call(key, context, w, timeout_ms))

    async def resolve(
        self,
        key: str,
        merge: Callable[[list[Sibling]], bytes | str],
        content_type: str | None = None,
        *,
        w: Quorum | None = None,
        r: Quorum | None = None,
    ) -> str:
        """As `DynamoClient.resolve`."""
        _check_quorum("w", w)
        result = await self.get(key, r=r)
        merged, content_type = self._resolved(result, merge, content_type)
        return await self.put(key, merged, result.context, content_type, w=w)

    # --- admin ----------------------------------------------------------------------------
    async def status(self) -> Json:
        return await self._run(self._json_call("GET", "status"))

    async def ring(self) -> Json:
        return await self._run(self._json_call("GET", "ring"))

    async def join(self, address: str) -> Json:
        return await self._run(self._json_call("POST", "join", {"address": address}))

    async def leave(self, node: str, *, force: bool = False) -> Json:
        return await self._run(self._json_call("POST", "leave", _member_change(node, force)))

    async def force_remove(self, node: str, *, force: bool = False) -> Json:
        return await self._run(self._json_call("POST", "force-remove", _member_change(node, force)))

    async def replace(self, old: str, new: str) -> Json:
        return await self._run(self._json_call("POST", "replace", {"old": old, "new": new}))

    async def plan(self) -> Json:
        return await self._run(self._json_call("GET", "plan"))

    async def clear_plan(self) -> Json:
        return await self._run(self._json_call("DELETE", "plan"))

    async def commit(self) -> Json:
        return await self._run(self._json_call("POST", "commit"))

    async def anti_entropy(self) -> str:
        return await self._run(self._anti_entropy_call())

    async def job(self, job_id: str) -> Json:
        return await self._run(self._job_call(job_id))


def _member_change(node: str, force: bool) -> Json:
    payload: Json = {"node": _check_text("node", node)}
    if force:
        payload["force"] = True
    return payload
