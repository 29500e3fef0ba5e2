"""Tests for dynamo_node.client against real `dynamo-node` processes.

Pure parts (address parsing, error mapping) are tested without sockets; everything
else talks HTTP to nodes started by the `procs` fixture (tests/harness.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import EllipsisType

import pytest

from dynamo_node.client import (
    DEFAULT_NODE,
    MAYBE_APPLIED,
    AsyncDynamoClient,
    AuthError,
    BadRequest,
    ClientError,
    ConnectionFailed,
    DynamoClient,
    GetResult,
    NotDynamoNode,
    NotFound,
    Sibling,
    SiblingsError,
    Unavailable,
    _error_from,
    split_node,
)
from tests.certs import make_certs
from tests.harness import Cluster, NodeProc, cluster, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]

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
        with pytest.raises(ClientError) as too_few:  # 2 members left, N=3
            first.leave(nodes[2].node_id)
        assert (too_few.value.status, too_few.value.code) == (409, "too_few_members")
        assert first.plan()["staged"] is False
        first.leave(nodes[2].node_id, force=True)
        staged = first.plan()
        assert staged["staged"] and staged["plan"]["leaves"] == [nodes[2].node_id]
        assert first.clear_plan() == {"staged": False}
        assert first.plan()["staged"] is False

        procs.kill(nodes[2])
        with pytest.raises(Unavailable) as info:
            first.put("shared", b"again", w="all", timeout_ms=2000)
        assert info.value.required == 3
        assert info.value.answered is not None and info.value.answered < 3


# --- a stand-in HTTP server (not a dynamokv node) -------------------------------------------
@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: close the connection after answering, without saying so (an idle close)
    close: bool = False


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


#: answers a request, or None: read it whole, then drop the connection unanswered
Responder = Callable[[Seen], "Answer | None"]


def dynamo_error(status: int, code: str, message: str, **extra: object) -> Answer:
    body = json.dumps({"error": {"code": code, "message": message, **extra}}).encode()
    return Answer(status, body, {"Content-Type": JSON})


class FakeNode:
    """An HTTP/1.1 server on loopback that records every request it read and answers
    with `respond` (keep-alive unless told otherwise). A context manager."""

    def __init__(self, respond: Responder) -> None:
        self.respond = respond
        self.seen: list[Seen] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Seen(self.command, self.path, dict(self.headers), body)
                outer.seen.append(request)
                answer = outer.respond(request)
                if answer is None:
                    self.close_connection = True
                    return
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
                self.wfile.flush()
                if answer.close:
                    self.close_connection = True

            do_GET = do_PUT = do_DELETE = do_POST = do_HEAD = serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def methods(self) -> list[str]:
        return [s.method for s in self.seen]

    def __enter__(self) -> FakeNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def kv_node(put: Callable[[Seen], Answer | None] | None = None) -> Responder:
    """A dynamokv-shaped responder: GET -> 404 not found, PUT/DELETE -> `put` (default:
    204 with a context), POST admin -> {"node": ...}."""

    def respond(request: Seen) -> Answer | None:
        if request.method == "GET":
            return dynamo_error(404, "not_found", "no value")
        if request.method in ("PUT", "DELETE"):
            if put is not None:
                return put(request)
            return Answer(204, headers={"X-Dynamo-Context": "ctx"})
        return Answer(200, json.dumps({"node": "n1"}).encode(), {"Content-Type": JSON})

    return respond


# --- writes are never sent twice; reads are retried --------------------------------------
def test_a_write_lost_after_it_was_sent_is_not_resent() -> None:
    with FakeNode(kv_node(put=lambda _: None)) as fake, DynamoClient(fake.address) as client:
        assert not client.get("k").found  # the connection is now a kept-alive, reused one
        with pytest.raises(ConnectionFailed) as info:
            client.put("k", b"v")
        assert fake.methods().count("PUT") == 1
        assert info.value.maybe_applied
        assert MAYBE_APPLIED in str(info.value)
        with pytest.raises(ConnectionFailed) as deleted:
            client.delete("k", "ctx")
        assert fake.methods().count("DELETE") == 1 and deleted.value.maybe_applied
        # a fresh connection (not reused) is not resent either
        client.close()
        with pytest.raises(ConnectionFailed):
            client.put("k", b"v")
        assert fake.methods().count("PUT") == 2


def test_a_read_lost_on_a_reused_connection_is_retried_once() -> None:
    drops = [1]

    def respond(request: Seen) -> Answer | None:
        if request.method == "GET" and request.path.endswith("/dropped") and drops:
            drops.pop()
            return None
        return dynamo_error(404, "not_found", "no value")

    with FakeNode(respond) as fake, DynamoClient(fake.address) as client:
        assert not client.get("k").found
        assert not client.get("dropped").found  # dropped once, then asked again
        assert fake.methods() == ["GET", "GET", "GET"]


def test_a_connection_closed_while_idle_is_reopened_before_a_write() -> None:
    def respond(request: Seen) -> Answer | None:
        if request.method == "GET":
            answer = dynamo_error(404, "not_found", "no value")
            answer.close = True  # keep-alive as far as the client knows, then closed
            return answer
        return Answer(204, headers={"X-Dynamo-Context": "ctx"})

    with FakeNode(respond) as fake, DynamoClient(fake.address) as client:
        assert not client.get("k").found
        conn = client._conn
        assert conn is not None
        wait_for(lambda: DynamoClient._idle_closed(conn), 5, what="the server closed it")
        assert client.put("k", b"v") == "ctx"
        assert fake.methods() == ["GET", "PUT"]


def test_a_503_write_exposes_maybe_applied() -> None:
    body = json.dumps(
        {
            "error": {
                "code": "quorum_not_met",
                "message": "m",
                "required": 2,
                "answered": 1,
                "maybe_applied": True,
            }
        }
    ).encode()
    error = _error_from(503, body, "Service Unavailable")
    assert isinstance(error, Unavailable) and error.maybe_applied
    plain = _error_from(503, json.dumps({"error": {"code": "x", "message": "m"}}).encode(), "")
    assert not plain.maybe_applied


# --- arguments are checked before anything is sent ------------------------------------------
def test_bad_arguments_raise_before_sending_and_str_is_utf8() -> None:
    with FakeNode(kv_node()) as fake, DynamoClient(fake.address) as client:
        bad_calls: list[Callable[[], object]] = [
            lambda: client.put("k", 123),  # type: ignore[arg-type]
            lambda: client.put(None, b"v"),  # type: ignore[arg-type]
            lambda: client.get(None),  # type: ignore[arg-type]
            lambda: client.put("k", b"v", context=5),  # type: ignore[arg-type]
            lambda: client.delete(b"k"),  # type: ignore[arg-type]
            lambda: client.get("k", r=1.5),  # type: ignore[arg-type]
            lambda: client.put("k", b"v", content_type=None),  # type: ignore[arg-type]
        ]
        for call in bad_calls:
            with pytest.raises(TypeError):
                call()
        for call in [
            lambda: client.get(""),
            lambda: client.put("", b"v"),
            lambda: client.delete(""),
            lambda: client.put("k", b"v", w=0),
            lambda: client.put("k", b"v", content_type="text/plain\r\nX-Evil: 1"),
            lambda: client.put("k", b"v", content_type="text/✓"),
            lambda: client.delete("k", "ctx\n"),
        ]:
            with pytest.raises(ValueError):
                call()
        assert fake.seen == []  # nothing was sent
        assert client.put("k", "héllo ✓") == "ctx"  # and the client is still usable
        assert fake.seen[-1].body == "héllo ✓".encode()
    with pytest.raises(ValueError, match="timeout"):
        DynamoClient("127.0.0.1:1", timeout=-1)
    with pytest.raises(ValueError, match="token"):
        DynamoClient("127.0.0.1:1", token="a\nb")
    with pytest.raises(ValueError, match="CA file"):
        DynamoClient("127.0.0.1:1", tls_ca="/no/such/ca.pem")


def test_leave_and_force_remove_send_force_only_when_asked() -> None:
    with FakeNode(kv_node()) as fake, DynamoClient(fake.address) as client:
        client.leave("n1")
        client.leave("n1", force=True)
        client.force_remove("n2")
        client.force_remove("n2", force=True)
    bodies = [(s.path, json.loads(s.body)) for s in fake.seen]
    assert bodies == [
        ("/v1/admin/leave", {"node": "n1"}),
        ("/v1/admin/leave", {"node": "n1", "force": True}),
        ("/v1/admin/force-remove", {"node": "n2"}),
        ("/v1/admin/force-remove", {"node": "n2", "force": True}),
    ]


# --- something that is not a dynamokv node -------------------------------------------------
@pytest.mark.parametrize("status", [200, 404])
def test_a_foreign_http_server_is_not_a_dynamokv_node(status: int) -> None:
    page = Answer(status, b"<html><body>Hello</body></html>", {"Content-Type": "text/html"})
    with FakeNode(lambda _: page) as fake, DynamoClient(fake.address) as client:
        calls: list[Callable[[], object]] = [
            lambda: client.get("k"),
            lambda: client.put("k", b"v"),
            lambda: client.delete("k", "ctx"),
            client.status,
            lambda: client.leave("n1"),
        ]
        for call in calls:
            with pytest.raises(NotDynamoNode) as info:
                call()
            assert str(info.value).startswith(
                f"{fake.address} does not look like a dynamokv node: "
            ), info.value
            assert f"HTTP {status}" in str(info.value)


# --- TLS ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProc, Path]]:
    root = tmp_path_factory.mktemp("tls")
    certs = root / "certs"
    certs.mkdir()
    cert, key, ca = make_certs(certs)
    with cluster(root) as c:
        c.scheme = "https"
        c.ssl_context = ssl.create_default_context(cafile=str(ca))
        node = c.add_node("--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca))
        yield node, ca


@pytest.mark.cluster
def test_tls_node_without_the_ca_and_with_https(tls_node: tuple[NodeProc, Path]) -> None:
    node, ca = tls_node
    with DynamoClient(f"https://{node.address}", timeout=5) as client:
        with pytest.raises(ConnectionFailed, match=r"certificate .* could not be verified") as e:
            client.get("k")
        assert "--tls-ca" in str(e.value) and not e.value.maybe_applied
    with DynamoClient(f"https://{node.address}", tls_ca=str(ca)) as client:
        client.put("k", "über")
        assert client.get("k").value == "über".encode()
    plain = DynamoClient(node.address, timeout=5)  # plain HTTP to a TLS port
    with plain, pytest.raises(ConnectionFailed, match="https://"):
        plain.get("k")


# --- the documented examples run -----------------------------------------------------------
DOC_SOURCES = [ROOT / "README.md", ROOT / "docs" / "client.md"]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), re.MULTILINE | re.DOTALL)


@pytest.mark.cluster
@pytest.mark.parametrize("doc", DOC_SOURCES, ids=lambda p: p.name)
def test_documented_client_examples_run(procs: Cluster, doc: Path) -> None:
    blocks = python_blocks(doc)
    assert blocks, f"no python example in {doc}"
    node = procs.add_node()
    namespace: dict[str, object] = {"__name__": "doc_example"}  # blocks run in order
    for block in blocks:
        code = block.replace(DEFAULT_NODE, node.address)
        exec(compile(code, str(doc), "exec"), namespace)


# --- the async face ------------------------------------------------------------------------
@pytest.mark.cluster
async def test_async_face_every_method_against_a_node(procs: Cluster) -> None:
    node = procs.add_node()
    async with AsyncDynamoClient(node.address) as client:
        context = await client.put("doc", b'{"a": 1}', content_type=JSON)
        assert context
        result = await client.get("doc")
        assert (result.value, result.content_type) == (b'{"a": 1}', JSON)
        for key in AWKWARD_KEYS:
            await client.put(key, key)
        for key in AWKWARD_KEYS:
            assert (await client.get(key, r=1)).value == key.encode()
        await client.put("cart", b'["milk"]', content_type=JSON)
        await client.put("cart", b'["eggs"]', content_type=JSON)
        assert (await client.get("cart")).has_siblings
        await client.resolve("cart", cart_merge)
        assert json.loads((await client.get("cart")).value) == ["eggs", "milk"]
        await client.delete("doc", (await client.get("doc")).context, w=1)
        assert not (await client.get("doc")).found
        # concurrent calls on one client each get their own connection
        values = await asyncio.gather(*(client.get(k) for k in AWKWARD_KEYS))
        assert [v.value for v in values] == [k.encode() for k in AWKWARD_KEYS]

        status = await client.status()
        assert status["node"] == node.node_id
        ring = await client.ring()
        assert ring["ring_version"] == status["ring_version"]
        assert (await client.plan())["staged"] is False
        assert await client.clear_plan() == {"staged": False}
        with pytest.raises(ClientError) as conflict:
            await client.commit()
        assert conflict.value.status == 409
        with pytest.raises(NotFound):
            await client.leave("no-such-node")
        with pytest.raises(NotFound):
            await client.force_remove("no-such-node", force=True)
        with pytest.raises(ClientError):
            await client.replace("no-such-node", "127.0.0.1:1")
        with pytest.raises(NotFound):
            await client.join(f"127.0.0.1:{free_port()}")
        with pytest.raises(NotFound):
            await client.job("no-such-job")
        job_id = await client.anti_entropy()
        for _ in range(200):
            job = await client.job(job_id)
            if job["state"] != "running":
                break
            await asyncio.sleep(0.1)
        assert (job["id"], job["state"]) == (job_id, "done")

        with pytest.raises(BadRequest) as bad:
            await client.put("k", b"v", context="garbage")
        assert (bad.value.status, bad.value.code) == (400, "invalid_context")
        with pytest.raises(Unavailable) as unavailable:
            await client.get("k", r="all")
        assert (unavailable.value.required, unavailable.value.answered) == (3, 1)
        with pytest.raises(TypeError):
            await client.put("k", 123)  # type: ignore[arg-type]
        raw = await client.request("GET", "/v1/kv/never")  # no error mapping
        assert raw.status == 404 and json.loads(raw.body)["error"]["code"] == "not_found"


@pytest.mark.cluster
async def test_async_face_auth_and_tls(
    procs: Cluster, tmp_path: Path, tls_node: tuple[NodeProc, Path]
) -> None:
    (tmp_path / "cluster.token").write_text("cluster-secret\n")
    node = procs.add_node("--cluster-token-file", str(tmp_path / "cluster.token"))
    async with AsyncDynamoClient(node.address) as anonymous:
        with pytest.raises(AuthError) as missing:
            await anonymous.status()
        assert missing.value.status == 401
    async with AsyncDynamoClient(node.address, token="cluster-secret") as admin:
        assert (await admin.status())["node"] == node.node_id
    tls, ca = tls_node
    async with AsyncDynamoClient(f"https://{tls.address}", timeout=5) as client:
        with pytest.raises(ConnectionFailed, match=r"certificate .* could not be verified"):
            await client.get("k")
    async with AsyncDynamoClient(f"https://{tls.address}", tls_ca=str(ca)) as client:
        await client.put("async-k", "über")
        assert (await client.get("async-k")).value == "über".encode()


class RawServer:
    """An asyncio TCP server on loopback that reads whole requests (head and
    Content-Length body), records them, and answers each with `answer(request number)`:
    bytes to send as is, None to close the connection unanswered, ... to never answer."""

    def __init__(self, answer: Callable[[int], bytes | EllipsisType | None]) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.address = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def methods(self) -> list[str]:
        return [r.split(b" ", 1)[0].decode() for r in self.requests]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                body = await reader.readexactly(int(found.group(1))) if found else b""
                self.requests.append(head + body)
                answer = self.answer(len(self.requests))
                if answer is None:
                    break
                if answer is ...:
                    await asyncio.sleep(3600)
                    break
                writer.write(answer)
                await writer.drain()
                if b"Content-Length" not in answer and b"chunked" not in answer:
                    break  # an answer delimited by the end of the connection
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


NOT_FOUND_BODY = b'{"error": {"code": "not_found", "message": "no value"}}'
NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(NOT_FOUND_BODY) + NOT_FOUND_BODY
)


async def test_async_write_dropped_after_sending_is_not_resent() -> None:
    # request 1 (a GET) is answered, keeping the connection alive; then every request
    # is read whole and the connection closed unanswered
    async with (
        RawServer(lambda n: NOT_FOUND if n == 1 else None) as server,
        AsyncDynamoClient(server.address, timeout=5) as client,
    ):
        assert not (await client.get("k")).found
        with pytest.raises(ConnectionFailed) as info:
            await client.put("k", b"v")  # on the reused connection
        assert server.methods() == ["GET", "PUT"]  # exactly one PUT
        assert info.value.maybe_applied and MAYBE_APPLIED in str(info.value)
        with pytest.raises(ConnectionFailed) as deleted:
            await client.delete("k", "ctx")  # on a fresh connection
        assert server.methods().count("DELETE") == 1 and deleted.value.maybe_applied
        with pytest.raises(ConnectionFailed) as posted:
            await client.commit()
        assert server.methods().count("POST") == 1 and posted.value.maybe_applied


async def test_async_refused_connection_is_unsent() -> None:
    async with AsyncDynamoClient(f"127.0.0.1:{free_port()}", timeout=2) as client:
        with pytest.raises(ConnectionFailed, match="cannot reach") as info:
            await client.put("k", b"v")
        assert info.value.status == 0 and not info.value.maybe_applied


async def test_async_read_lost_on_a_reused_connection_is_retried_once() -> None:
    async with (
        RawServer(lambda n: None if n == 2 else NOT_FOUND) as server,
        AsyncDynamoClient(server.address, timeout=5) as client,
    ):
        assert not (await client.get("k")).found
        assert not (await client.get("dropped")).found  # dropped once, asked again
        assert server.methods() == ["GET", "GET", "GET"]


async def test_async_timeout_bounds_the_whole_call() -> None:
    async with (
        RawServer(lambda n: ...) as server,
        AsyncDynamoClient(server.address, timeout=0.3) as client,
    ):
        started = time.monotonic()
        with pytest.raises(ConnectionFailed, match=r"did not answer within 0\.3s") as info:
            await client.put("k", b"v")
        assert time.monotonic() - started < 2
        assert info.value.maybe_applied and server.methods() == ["PUT"]
        with pytest.raises(ConnectionFailed, match=r"did not answer within 0\.2s"):
            await client.request("GET", "/v1/admin/status", timeout=0.2)
        await asyncio.sleep(0.5)
        assert server.methods().count("GET") <= 1  # a timeout is not retried


async def test_async_reads_chunked_and_until_close_answers() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"nod\r\n7;ext=1\r\ne": "n1\r\n2\r\n"}\r\n0\r\nX-Trailer: 1\r\n\r\n'
    )
    until_close = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + b'{"node": "n2"}'

    def answer(n: int) -> bytes:
        return chunked if n < 3 else until_close

    async with (
        RawServer(answer) as server,
        AsyncDynamoClient(server.address, timeout=5) as client,
    ):
        assert await client.status() == {"node": "n1"}
        assert await client.status() == {"node": "n1"}  # kept alive after chunks
        assert await client.status() == {"node": "n2"}
        assert await client.status() == {"node": "n2"}  # reconnected after the EOF
    assert len(server.requests) == 4


async def test_async_a_foreign_http_server_is_not_a_dynamokv_node() -> None:
    page = b"<html>Hello</html>"
    html = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % (
        len(page)
    )
    async with (
        RawServer(lambda n: html + page) as server,
        AsyncDynamoClient(server.address, timeout=5) as client,
    ):
        for call in (client.get("k"), client.put("k", b"v"), client.status()):
            with pytest.raises(NotDynamoNode, match="does not look like a dynamokv node"):
                await call
    garbage = b"SSH-2.0-OpenSSH_9.6\r\n"
    async with (
        RawServer(lambda n: garbage) as server,
        AsyncDynamoClient(server.address, timeout=5) as client,
    ):
        with pytest.raises(ConnectionFailed, match="not an HTTP answer"):
            await client.status()


@pytest.mark.cluster
async def test_fetch_status_uses_the_cluster_token(procs: Cluster, tmp_path: Path) -> None:
    from dynamo_node.core.config import NodeConfig
    from dynamo_node.core.errors import PeerError
    from dynamo_node.net.discovery import fetch_status

    (tmp_path / "cluster.token").write_text("cluster-secret\n")
    node = procs.add_node("--cluster-token-file", str(tmp_path / "cluster.token"))
    config = NodeConfig(data_dir="", cluster_token="cluster-secret")
    assert (await fetch_status(node.address, config, 5))["node"] == node.node_id
    with pytest.raises(PeerError, match="answered 401"):
        await fetch_status(node.address, NodeConfig(data_dir=""), 5)
    with pytest.raises(PeerError, match="cannot reach"):
        await fetch_status(f"127.0.0.1:{free_port()}", config, 2)


# --- one client: nothing else talks HTTP to nodes by itself -----------------------------
HTTP_CLIENT_APIS = re.compile(
    r"^\s*(import urllib\.request|from urllib(\.request)? import|import http\.client"
    r"|from http\.client import|from http import client)|\bClientSession\(|urlopen\(",
    re.MULTILINE,
)
CLIENT_MODULES = {"client.py", "clientcore.py"}


def test_only_the_client_module_talks_http_to_nodes() -> None:
    sources = [
        *(ROOT / "node" / "dynamo_node").glob("*.py"),
        *(ROOT / "operator" / "dynamo_operator").glob("*.py"),
        ROOT / "tests" / "harness.py",
    ]
    offenders = {
        f"{path.relative_to(ROOT)}: {match.group(0).strip()}"
        for path in sources
        if not (path.parent.name == "dynamo_node" and path.name in CLIENT_MODULES)
        for match in HTTP_CLIENT_APIS.finditer(path.read_text())
    }
    assert not offenders, sorted(offenders)


def test_sync_raw_request_maps_nothing_and_adds_the_token() -> None:
    page = Answer(404, b"<html>no</html>", {"Content-Type": "text/html", "X-Two": "a"})
    with FakeNode(lambda _: page) as fake, DynamoClient(fake.address, token="t") as client:
        resp = client.request("POST", "/anything?x=1", b"body", {"X-Mine": "1"})
        assert (resp.status, resp.reason, resp.body) == (404, "Not Found", b"<html>no</html>")
        assert resp.headers["content-type"] == "text/html" and "x-two" in resp.headers
        seen = fake.seen[0]
        assert (seen.method, seen.path, seen.body) == ("POST", "/anything?x=1", b"body")
        assert seen.headers["Authorization"] == "Bearer t" and seen.headers["X-Mine"] == "1"
