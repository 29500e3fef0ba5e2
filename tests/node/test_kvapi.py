"""kvapi: the parts both HTTP edges share (key and query parsing, tokens, admission,
error bodies). The API itself is exercised over HTTP in test_web and test_http1."""

from __future__ import annotations

import json

import pytest

from dynamo_node.errors import Forbidden, InvalidKey, QuorumNotMet, Unauthorized
from dynamo_node.kvapi import (
    Admission,
    Authorizer,
    error_reply,
    parse_key,
    query_value,
    scope_of,
)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("/v1/kv/plain", "plain"),
        ("/v1/kv/a%2Fb/c", "a/b/c"),
        ("/v1/kv/%D0%BA%D0%BB%D1%8E%D1%87?r=2", "ключ"),
        ("/v1/kv/with%20space%0Anewline", "with space\nnewline"),
    ],
)
def test_parse_key_decodes_the_raw_path_once(raw: str, key: str) -> None:
    assert parse_key(raw, 1024) == key


@pytest.mark.parametrize("raw", ["/v1/kv/", "/v1/kv/?r=1", "/v1/kv/%FF%FE", "/v1/kv/" + "k" * 11])
def test_parse_key_refuses_empty_invalid_or_long_keys(raw: str) -> None:
    with pytest.raises(InvalidKey):
        parse_key(raw, 10)


def test_query_value_takes_the_first_and_decodes() -> None:
    assert query_value("r=2&r=3&w=all", "r") == "2"
    assert query_value("a=x+y&b=%32", "a") == "x y"
    assert query_value("b=%32", "b") == "2"
    assert query_value("r=", "r") == ""
    assert query_value("w=1", "r") is None
    assert query_value("", "r") is None


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


def test_error_reply_bodies() -> None:
    reply = error_reply(QuorumNotMet("not met", required=2, answered=1))
    assert reply.status == 503 and reply.headers["Content-Type"].startswith("application/json")
    assert json.loads(reply.body) == {
        "error": {"code": "quorum_not_met", "message": "not met", "required": 2, "answered": 1}
    }
    unauthorized = error_reply(Unauthorized("missing bearer token"))
    assert unauthorized.status == 401 and unauthorized.headers["WWW-Authenticate"] == "Bearer"
