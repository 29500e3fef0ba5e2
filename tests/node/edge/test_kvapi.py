"""kvapi: the parts both HTTP edges share (key and query parsing, error bodies). The API
itself is exercised over HTTP in test_web and test_http1; tokens and admission are in
test_auth."""

from __future__ import annotations

import json

import pytest

from dynamo_node.core.errors import (
    MAYBE_APPLIED,
    InvalidKey,
    InvalidParameter,
    QuorumNotMet,
    Unauthorized,
)
from dynamo_node.edge.kvapi import (
    READ_PARAMETERS,
    WRITE_PARAMETERS,
    error_reply,
    parse_key,
    parse_query,
    query_value,
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


def test_error_reply_bodies() -> None:
    reply = error_reply(QuorumNotMet("not met", required=2, answered=1))
    assert reply.status == 503 and reply.headers["Content-Type"].startswith("application/json")
    assert json.loads(reply.body) == {
        "error": {"code": "quorum_not_met", "message": "not met", "required": 2, "answered": 1}
    }
    unauthorized = error_reply(Unauthorized("missing bearer token"))
    assert unauthorized.status == 401 and unauthorized.headers["WWW-Authenticate"] == "Bearer"


# --- query parameters -------------------------------------------------------------------


def test_parse_query_accepts_the_parameters_of_the_method() -> None:
    assert parse_query("r=2&timeout_ms=500", READ_PARAMETERS) == {"r": "2", "timeout_ms": "500"}
    assert parse_query("w=all", WRITE_PARAMETERS) == {"w": "all"}
    assert parse_query("w=", WRITE_PARAMETERS) == {"w": ""}
    assert parse_query("", READ_PARAMETERS) == {}


@pytest.mark.parametrize(
    ("query", "allowed", "named"),
    [
        ("W=all", WRITE_PARAMETERS, "'W'"),  # misspelt: must not write at the default W
        ("r=1", WRITE_PARAMETERS, "'r'"),  # r on a PUT or DELETE
        ("w=1", READ_PARAMETERS, "'w'"),  # w on a GET
        ("timeout=5", READ_PARAMETERS, "'timeout'"),
        ("r=1&x=2&y", READ_PARAMETERS, "'x', 'y'"),
        ("w=1&w=3", WRITE_PARAMETERS, "'w'"),  # repeated
        ("timeout_ms=1&timeout_ms=2", READ_PARAMETERS, "'timeout_ms'"),
    ],
)
def test_parse_query_refuses_unknown_misplaced_and_repeated(
    query: str, allowed: frozenset[str], named: str
) -> None:
    with pytest.raises(InvalidParameter) as caught:
        parse_query(query, allowed)
    assert caught.value.code == "invalid_parameter" and caught.value.status == 400
    assert named in caught.value.message


# --- a 503 after a write may have applied it -----------------------------------------------


def test_error_reply_says_when_a_failed_write_may_have_been_applied() -> None:
    reply = error_reply(
        QuorumNotMet("write quorum not met", required=3, answered=1, maybe_applied=True)
    )
    error = json.loads(reply.body)["error"]
    assert reply.status == 503
    assert error["maybe_applied"] is True
    assert error["message"] == f"write quorum not met; {MAYBE_APPLIED}"
    assert "read the key before retrying" in error["message"]
    # a read (or a write that reached no replica) does not say it
    plain = json.loads(error_reply(QuorumNotMet("read", required=2, answered=1)).body)["error"]
    assert "maybe_applied" not in plain and "may have been applied" not in plain["message"]
