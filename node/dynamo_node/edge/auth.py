"""Who may call what, and how many at once: the checks both HTTP edges run before a
request reaches its handler (the lean HTTP/1.1 server, `http1`, and aiohttp, `web`).

`scope_of` names the token a path needs, `Authorizer` checks the bearer token against
it (docs/operations.md, Authentication), and `Admission` is the node's limit on the
requests in progress (a 503 beyond it).
"""

from __future__ import annotations

import hmac

from dynamo_node.core.errors import Forbidden, Unauthorized


def scope_of(path: str) -> str:
    """Which token a path needs: "client" (kv), "admin", or "open" (health, docs)."""
    if path.startswith("/v1/kv/") or path == "/v1/kv":
        return "client"
    if path.startswith("/v1/admin"):
        return "admin"
    return "open"


class Authorizer:
    """Bearer tokens (docs/operations.md, Authentication): the client token may use the
    kv API, the cluster token everything; with neither configured, auth is off."""

    def __init__(self, client_token: str, cluster_token: str) -> None:
        self._client = client_token.encode()
        self._cluster = cluster_token.encode()
        self.enabled = bool(self._client or self._cluster)

    def check(self, scope: str, authorization: str | None) -> None:
        if scope == "open":
            return
        header = authorization or ""
        try:
            # a header's bytes beyond ASCII come as latin-1 (http1) or with surrogate
            # escapes (aiohttp): never a token, and never an error
            token = header[7:].strip().encode() if header[:7].lower() == "bearer " else b""
        except UnicodeEncodeError:
            raise Unauthorized("invalid token") from None
        if not token:
            raise Unauthorized("missing bearer token")
        is_cluster = bool(self._cluster) and hmac.compare_digest(token, self._cluster)
        is_client = bool(self._client) and hmac.compare_digest(token, self._client)
        if scope == "admin":
            if is_cluster:
                return
            if is_client:
                raise Forbidden("this token may not call the admin API")
            raise Unauthorized("invalid token")
        if not (is_cluster or is_client):
            raise Unauthorized("invalid token")


class Admission:
    """At most `limit` requests in progress on this node; beyond that a 503 at once
    (a counter is enough: both edges run on the one event loop)."""

    __slots__ = ("in_flight", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def try_enter(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1
