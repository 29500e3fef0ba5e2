"""auth: the checks both HTTP edges run before a handler (the scope a path needs, the
bearer tokens, the limit on requests in progress)."""

from __future__ import annotations

import pytest

from dynamo_node.core.errors import Forbidden, Unauthorized
from dynamo_node.edge.auth import Admission, Authorizer, scope_of


def test_scopes() -> None:
    assert scope_of("/v1/kv/x") == "client"
    assert scope_of("/v1/admin/status") == "admin"
    assert scope_of("/healthz") == scope_of("/metrics") == "open"


def test_authorizer_scopes_the_two_tokens() -> None:
    auth = Authorizer("client-secret", "cluster-secret")
    assert auth.enabled
    auth.check("client", "Bearer client-secret")
    auth.check("client", "bearer cluster-secret")
    auth.check("admin", "Bearer cluster-secret")
    auth.check("open", None)
    with pytest.raises(Forbidden):
        auth.check("admin", "Bearer client-secret")
    for header in (None, "", "Basic x", "Bearer", "Bearer wrong"):
        with pytest.raises(Unauthorized):
            auth.check("client", header)
    assert not Authorizer("", "").enabled


def test_admission_counts_requests_in_progress() -> None:
    limit = Admission(2)
    assert limit.try_enter() and limit.try_enter()
    assert not limit.try_enter() and limit.in_flight == 2
    limit.leave()
    assert limit.try_enter() and limit.in_flight == 2
