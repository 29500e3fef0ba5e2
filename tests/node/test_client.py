"""Tests for dynamo_node.client against real `dynamo-node` processes.

Pure parts (address parsing, error mapping) are tested without sockets; everything
else talks HTTP to nodes started by the `procs` fixture (tests/harness.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dynamo_node.client import (
    AuthError,
    BadRequest,
    ClientError,
    ConnectionFailed,
    DynamoClient,
    GetResult,
    NotFound,
    Sibling,
    SiblingsError,
    Unavailable,
    _error_from,
    split_node,
)
from tests.harness import Cluster, free_port, wait_for

JSON = "application/json"
AWKWARD_KEYS = ["a/b/c", "with space", "ünïcödé/ключ/鍵", "100%", "?q=1&x#frag", "a%2Fb"]


def cart_merge(siblings: list[Sibling]) -> bytes:
    """The paper's shopping cart: the union of every sibling's items."""
    items: set[str] = set()
    for s in siblings:
        items |= set(json.loads(s.value))
    return json.dumps(sorted(items)).encode()


# --- pure --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7071", ("127.0.0.1", 7071)),
        ("http://db.local:80/", ("db.local", 80)),
        ("[::1]:9000", ("::1", 9000)),
        ("localhost", ("localhost", 7070)),
    ],
)
def test_split_node(text: str, expected: tuple[str, int]) -> None:
    assert split_node(text) == expected


@pytest.mark.parametrize("text", ["", ":7070", "host:port"])
def test_split_node_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        split_node(text)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadRequest),
        (413, BadRequest),
        (401, AuthError),
        (403, AuthError),
        (404, NotFound),
        (503, Unavailable),
        (409, ClientError),
        (500, ClientError),
    ],
)
def test_error_mapping(status: int, kind: type[ClientError]) -> None:
    body = json.dumps({"error": {"code": "some_code", "message": "why"}}).encode()
    error = _error_from(status, body, "Reason")
    assert type(error) is kind
    assert (error.status, error.code, error.message) == (status, "some_code", "why")


def test_error_mapping_keeps_quorum_counts_and_survives_non_json() -> None:
    body = json.dumps(
        {"error": {"code": "quorum_not_met", "message": "m", "required": 3, "answered": 1}}
    ).encode()
    error = _error_from(503, body, "Service Unavailable")
    assert isinstance(error, Unavailable)
    assert (error.required, error.answered) == (3, 1)
    plain = _error_from(502, b"<html>bad gateway</html>", "Bad Gateway")
    assert plain.code == "http_error" and "bad gateway" in plain.message


def test_get_result_properties() -> None:
    absent = GetResult("k", [], None)
    assert not absent.found
    with pytest.raises(NotFound):
        _ = absent.value
    one = GetResult("k", [Sibling(b"v", "text/plain")], "ctx")
    assert one.found and one.value == b"v" and one.content_type == "text/plain"
    two = GetResult("k", [Sibling(b"a", JSON), Sibling(b"b", JSON)], "ctx")
    with pytest.raises(SiblingsError) as info:
        _ = two.value
    assert info.value.count == 2


# --- against a node ------------------------------------------------------------------------


@pytest.mark.cluster
def test_put_get_round_trip_with_content_type(procs: Cluster) -> None:
    node = procs.add_node()
    with DynamoClient(node.address) as client:
        context = client.put("doc", b'{"a": 1}', content_type=JSON)
        assert context
        result = client.get("doc")
        assert result.found and not result.has_siblings
        assert result.value == b'{"a": 1}'
        assert result.content_type == JSON
        assert result.context
        # a write with the read's context supersedes it: still one value
        client.put("doc", b'{"a": 2}', result.context, JSON, w=1)
        assert client.get("doc", r=1).value == b'{"a": 2}'
        # an empty value is a value, not an absence
        client.put("empty", b"")
        assert client.get("empty").value == b""


@pytest.mark.cluster
def test_awkward_keys_round_trip(procs: Cluster) -> None:
    node = procs.add_node()
    with DynamoClient(node.address) as client:
        for i, key in enumerate(AWKWARD_KEYS):
            client.put(key, f"value {i}".encode())
        for i, key in enumerate(AWKWARD_KEYS):
            assert client.get(key).value == f"value {i}".encode(), key
        # "a/b" and its percent-encoded spelling are different keys
        assert client.get("a%2Fb").value != client.get("a/b/c").value


@pytest.mark.cluster
def test_blind_puts_make_siblings_and_resolve_merges_them(procs: Cluster) -> None:
    node = procs.add_node()
    with DynamoClient(node.address) as client:
        client.put("cart", json.dumps(["milk"]).encode(), content_type=JSON)
        client.put("cart", json.dumps(["eggs", "bread"]).encode(), content_type=JSON)
        result = client.get("cart")
        assert result.has_siblings
        assert sorted(json.loads(s.value)[0] for s in result.siblings) == ["eggs", "milk"]
        assert {s.content_type for s in result.siblings} == {JSON}
        with pytest.raises(SiblingsError):
            _ = result.value

        context = client.resolve("cart", cart_merge)
        assert context
        merged = client.get("cart")
        assert json.loads(merged.value) == ["bread", "eggs", "milk"]
        assert merged.content_type == JSON  # the siblings' common type was kept


@pytest.mark.cluster
def test_resolve_of_an_absent_key_merges_nothing(procs: Cluster) -> None:
    node = procs.add_node()
    seen: list[list[Sibling]] = []

    def merge(siblings: list[Sibling]) -> bytes:
        seen.append(siblings)
        return b"[]"

    with DynamoClient(node.address) as client:
        client.resolve("new-cart", merge, content_type=JSON)
        assert seen == [[]]
        assert client.get("new-cart").value == b"[]"


@pytest.mark.cluster
def test_context_carrying_put_resolves_siblings(procs: Cluster) -> None:
    node = procs.add_node()
    with DynamoClient(node.address) as client:
        client.put("k", b"one")
        client.put("k", b"two")
        read = client.get("k")
        assert len(read.siblings) == 2
        client.put("k", b"three", read.context)
        assert client.get("k").value == b"three"


@pytest.mark.cluster
def test_delete_then_get_is_not_found_and_keeps_the_context(procs: Cluster) -> None:
    node = procs.add_node()
    with DynamoClient(node.address) as client:
        client.put("gone", b"x")
        client.delete("gone", client.get("gone").context)
        result = client.get("gone")
        assert not result.found
        assert result.context  # the tombstone's context
        with pytest.raises(NotFound):
            _ = result.value
        never = client.get("never-written")
        assert not never.found and never.context is None


@pytest.mark.cluster
def test_errors_are_typed(procs: Cluster) -> None:
    node = procs.add_node()
    with DynamoClient(node.address) as client:
        with pytest.raises(BadRequest) as bad:
            client.put("k", b"v", context="garbage")
        assert (bad.value.status, bad.value.code) == (400, "invalid_context")
        with pytest.raises(BadRequest, match="r must be"):
            client.get("k", r=99)
        # one node, N=3: asking for every replica cannot succeed
        with pytest.raises(Unavailable) as unavailable:
            client.get("k", r="all")
        assert (unavailable.value.required, unavailable.value.answered) == (3, 1)
        with pytest.raises(ClientError) as conflict:
            client.commit()
        assert conflict.value.status == 409
        with pytest.raises(NotFound):
            client.leave("no-such-node")
        with pytest.raises(NotFound):
            client.job("no-such-job")
        job_id = client.anti_entropy()
        job = wait_for(lambda: (j := client.job(job_id))["state"] != "running" and j, 20)
        assert (job["id"], job["state"]) == (job_id, "done")
        # the connection is still usable after errors
        client.put("k", b"fine")
        assert client.get("k").value == b"fine"


def test_connection_failed_when_nothing_listens() -> None:
    with DynamoClient(f"127.0.0.1:{free_port()}", timeout=2) as client:
        with pytest.raises(ConnectionFailed) as info:
            client.get("k")
        assert info.value.status == 0


@pytest.mark.cluster
def test_timeout_on_a_stalled_node_is_connection_failed(procs: Cluster) -> None:
    node = procs.add_node()
    with DynamoClient(node.address, timeout=0.5) as client:
        client.put("k", b"v")
        procs.pause(node)
        try:
            with pytest.raises(ConnectionFailed, match="did not answer"):
                client.get("k")
        finally:
            procs.resume(node)
        assert client.get("k").value == b"v"


@pytest.mark.cluster
def test_keeps_one_connection_and_reconnects_once_after_a_drop(procs: Cluster) -> None:
    node = procs.add_node()
    with DynamoClient(node.address) as client:
        client.put("k", b"v")
        conn = client._conn
        assert client.get("k").value == b"v"
        assert client._conn is conn  # kept alive between requests
        procs.restart(node)  # the node drops every connection
        assert client.get("k").value == b"v"


@pytest.mark.cluster
def test_auth_token_scopes(procs: Cluster, tmp_path: Path) -> None:
    (tmp_path / "client.token").write_text("client-secret\n")
    (tmp_path / "cluster.token").write_text("cluster-secret\n")
    node = procs.add_node(
        "--client-token-file",
        str(tmp_path / "client.token"),
        "--cluster-token-file",
        str(tmp_path / "cluster.token"),
    )
    with DynamoClient(node.address) as anonymous:
        with pytest.raises(AuthError) as missing:
            anonymous.get("k")
        assert missing.value.status == 401
    with DynamoClient(node.address, token="client-secret") as client:
        client.put("k", b"v")
        assert client.get("k").value == b"v"
        with pytest.raises(AuthError) as forbidden:
            client.status()
        assert forbidden.value.status == 403
    with DynamoClient(node.address, token="cluster-secret") as admin:
        assert admin.status()["node"] == node.node_id


@pytest.mark.cluster
def test_cluster_quorums_and_admin_views(procs: Cluster) -> None:
    nodes = procs.form(3)
    ids = {n.node_id for n in nodes}
    with DynamoClient(nodes[0].address) as first, DynamoClient(nodes[2].address) as last:
        first.put("shared", b"everywhere", w="all")
        assert last.get("shared", r="all").value == b"everywhere"

        status = first.status()
        assert status["node"] == nodes[0].node_id
        assert {m["node"] for m in status["members"]} == ids
        assert all(m["state"] == "up" for m in status["members"])
        assert status["transfers"] == []

        ring = first.ring()
        assert ring["ring_version"] == status["ring_version"]
        assert {p["owner"] for p in ring["partitions"]} == ids
        assert all(len(set(p["preference_list"])) == 3 for p in ring["partitions"])

        assert first.plan() == {"ring_version": ring["ring_version"], "staged": False, "plan": None}
        first.leave(nodes[2].node_id)
        staged = first.plan()
        assert staged["staged"] and staged["plan"]["leaves"] == [nodes[2].node_id]
        assert first.clear_plan() == {"staged": False}
        assert first.plan()["staged"] is False

        procs.kill(nodes[2])
        with pytest.raises(Unavailable) as info:
            first.put("shared", b"again", w="all", timeout_ms=2000)
        assert info.value.required == 3
        assert info.value.answered is not None and info.value.answered < 3
