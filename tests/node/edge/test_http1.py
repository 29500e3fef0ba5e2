"""The lean HTTP/1.1 server of the client port (`http1`): the head parser and router
(pure), and a real node spoken to over raw sockets: keep-alive, pipelining, requests
split into pieces, half-close, 413 before the body, and the hand-over of everything
else (chunked bodies, Expect, other routes, malformed heads) to aiohttp on the same
connection."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamo_node.edge.http1 import BadRequest, parse_head, render, route
from dynamo_node.edge.kvapi import Reply
from tests.harness import Cluster, NodeProc

DATE = "Fri, 27 Nov 2026 01:00:00 GMT"


# --- the parser and router (pure) ---------------------------------------------------------
def test_parse_head_plain_request() -> None:
    head = parse_head(
        b"PUT /v1/kv/a%2Fb?w=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"X-Dynamo-Context:  abc \r\nContent-Type: text/plain"
    )
    assert head is not None
    assert (head.method, head.target, head.keep_alive) == ("PUT", "/v1/kv/a%2Fb?w=2", True)
    assert head.headers["x-dynamo-context"] == "abc"
    assert route(head) is None and head.length == 3


@pytest.mark.parametrize(
    ("raw", "keep_alive"),
    [
        (b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nConnection: close", False),
        (b"GET /v1/kv/a HTTP/1.0", False),
        (b"GET /v1/kv/a HTTP/1.0\r\nConnection: Keep-Alive", True),
        (b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade-Insecure", True),
    ],
)
def test_keep_alive_follows_version_and_connection(raw: bytes, keep_alive: bool) -> None:
    assert parse_head(raw).keep_alive is keep_alive


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /v1/kv/a HTTP/2.0\r\nHost: x",
        b"GET /v1/kv/a",
        b"GET  /v1/kv/a HTTP/1.1\r\nHost: x",
        b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\n folded",  # obsolete line folding
        b"GET /v1/kv/a HTTP/1.1\r\nHost : x",  # space before the colon
        b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nNoColon",
        b"GET /v1/kv/a HTTP/1.1\nHost: x",  # bare LF
        b"GET /v1/kv/a HTTP/1.1\r\nHo\rst: x",  # bare CR
        b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2",
        b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: -1",
        b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10",
        "GET /v1/kv/ключ HTTP/1.1\r\nHost: x".encode(),  # raw non-ASCII target
    ],
)
def test_odd_heads_are_refused(raw: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_head(raw)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"POST /v1/kv/a HTTP/1.1", "method"),
        (b"OPTIONS * HTTP/1.1", "method"),
        (b"GET /v1/admin/status HTTP/1.1", "route"),
        (b"GET /v1/kv/ HTTP/1.1", "route"),
        (b"GET /v1/kv/?r=1 HTTP/1.1", "route"),
        (b"GET http://h/v1/admin/status HTTP/1.1", "route"),
        (b"GET /v1/kv/a HTTP/1.1\r\nX-Note: caf\xc3\xa9", "non-ascii"),
        (b"PUT /v1/kv/a HTTP/1.1\r\nTransfer-Encoding: chunked", "framing"),
        (b"PUT /v1/kv/a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1", "framing"),
        (b"GET /v1/kv/a HTTP/1.1\r\nUpgrade: websocket", "framing"),
        (b"GET /v1/kv/a HTTP/1.1\r\nContent-Length: 4", "framing"),
        (b"HEAD /v1/kv/a HTTP/1.1", None),
        (b"GET http://h/v1/kv/a HTTP/1.1", None),
    ],
)
def test_route_hands_over_what_it_does_not_serve(raw: bytes, why: str | None) -> None:
    line, _, rest = raw.partition(b"\r\n")
    head = parse_head(line + b"\r\nHost: x" + (b"\r\n" + rest if rest else b""))
    assert route(head) == why


def test_render_response() -> None:
    out = render(Reply(204, {"X-Dynamo-Context": "c"}), True, DATE)
    assert out == (
        b"HTTP/1.1 204 No Content\r\nX-Dynamo-Context: c\r\nContent-Length: 0\r\n"
        b"Date: " + DATE.encode() + b"\r\n\r\n"
    )
    closing = render(Reply(200, {"Content-Type": "a/b"}, b"xyz"), False, DATE)
    assert b"Connection: close\r\n" in closing and closing.endswith(b"\r\n\r\nxyz")


# --- a real node over raw sockets ------------------------------------------------------------
@pytest.fixture
def node(procs: Cluster, tmp_path: Path) -> NodeProc:
    config = tmp_path / "node.json"
    config.write_text(json.dumps({"value_max_bytes": 4096}))
    return procs.add_node("--config", str(config))


class Conn:
    """A raw client connection that reads responses one by one (pipelining-safe)."""

    def __init__(self, n: NodeProc) -> None:
        self.sock = socket.create_connection((n.host, n.port), timeout=10)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, head: bool = False) -> tuple[int, dict[str, str], bytes]:
        status_line = self.file.readline()
        assert status_line[:7] == b"HTTP/1.", status_line
        headers: dict[str, str] = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        if head:
            body = b""
        elif "content-length" in headers:
            body = self.file.read(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self.file.readline().strip(), 16):
                body += self.file.read(size)
                self.file.readline()
            self.file.readline()
        else:
            body = b""
        return int(status_line.split()[1]), headers, body

    def closed_by_server(self) -> bool:
        return self.file.read(1) == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def conn(node: NodeProc) -> Iterator[Conn]:
    c = Conn(node)
    yield c
    c.close()


def put_req(key: str, value: bytes, extra: str = "") -> bytes:
    return (
        f"PUT /v1/kv/{key} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(value)}\r\n{extra}\r\n"
    ).encode() + value


def get_req(key: str, extra: str = "") -> bytes:
    return f"GET /v1/kv/{key} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def test_pipelined_requests_answer_in_order(conn: Conn) -> None:
    conn.send(put_req("p1", b"one") + put_req("p2", b"two") + get_req("p1") + get_req("p2"))
    assert conn.response()[0] == 204
    assert conn.response()[0] == 204
    assert conn.response()[::2] == (200, b"one")
    assert conn.response()[::2] == (200, b"two")


def test_many_pipelined_requests_in_one_write(conn: Conn) -> None:
    # requests that finish at once must not recurse one into the next
    conn.send(put_req("many", b"v") + get_req("many") * 3000)
    assert conn.response()[0] == 204
    for _ in range(3000):
        assert conn.response()[::2] == (200, b"v")


def test_request_split_into_single_bytes(conn: Conn) -> None:
    for byte in put_req("split", b"pieces"):
        conn.send(bytes([byte]))
    assert conn.response()[0] == 204
    conn.send(get_req("split"))
    status, headers, body = conn.response()
    assert (status, body) == (200, b"pieces") and headers["x-dynamo-context"]


def test_half_closed_client_still_gets_its_answer(conn: Conn) -> None:
    conn.send(put_req("half", b"x") + get_req("half"))
    conn.sock.shutdown(socket.SHUT_WR)
    assert conn.response()[0] == 204
    assert conn.response()[::2] == (200, b"x")
    assert conn.closed_by_server()


def test_http10_and_connection_close_end_the_connection(node: NodeProc) -> None:
    for raw in (b"GET /v1/kv/none HTTP/1.0\r\n\r\n", get_req("none", "Connection: close\r\n")):
        c = Conn(node)
        c.send(raw)
        status, headers, _ = c.response()
        assert status == 404 and headers["connection"] == "close"
        assert c.closed_by_server()
        c.close()


def test_oversized_value_is_refused_before_its_body(conn: Conn) -> None:
    # only the head is sent: the 413 must come without the server waiting for 1 MiB
    conn.send(b"PUT /v1/kv/big HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n")
    status, headers, body = conn.response()
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
    assert headers["connection"] == "close"
    # the body that follows is read and dropped (no reset that could eat the 413), then
    # the server closes
    conn.send(b"x" * 1048576)
    assert conn.closed_by_server()


def test_oversized_value_sent_whole_still_gets_its_413(node: NodeProc) -> None:
    for _ in range(5):
        c = Conn(node)
        c.send(put_req("big", b"y" * 200_000))
        status, _, body = c.response()
        assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
        c.close()


def test_chunked_put_is_served_by_aiohttp_on_the_same_connection(conn: Conn) -> None:
    conn.send(put_req("before", b"fast"))
    assert conn.response()[0] == 204
    conn.send(
        b"PUT /v1/kv/chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    assert conn.response()[0] == 204
    conn.send(get_req("chunked") + get_req("before"))
    assert conn.response()[::2] == (200, b"abcde")
    assert conn.response()[::2] == (200, b"fast")


def test_chunked_value_over_the_limit_is_413(conn: Conn) -> None:
    chunk = b"x" * 3000
    conn.send(
        b"PUT /v1/kv/chunky HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 2
        + b"0\r\n\r\n"
    )
    status, _, body = conn.response()
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"


def test_expect_100_continue(conn: Conn) -> None:
    conn.send(
        b"PUT /v1/kv/exp HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    assert conn.file.readline().startswith(b"HTTP/1.1 100")
    assert conn.file.readline() == b"\r\n"
    conn.send(b"ok")
    assert conn.response()[0] == 204
    conn.send(get_req("exp"))
    assert conn.response()[::2] == (200, b"ok")


def test_other_routes_after_kv_requests(conn: Conn) -> None:
    conn.send(get_req("nothing") + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert conn.response()[0] == 404
    status, _, body = conn.response()
    assert status == 200 and json.loads(body)["status"] == "ok"
    conn.send(b"POST /v1/kv/x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
    status, headers, _ = conn.response()
    assert status == 405 and "GET" in headers["allow"]


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /v1/kv/a HTTP/9.9\r\n\r\n",
        b"PUT /v1/kv/a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"\x00\x01\x02 garbage\r\n\r\n",
    ],
)
def test_malformed_heads_get_400_and_the_node_lives(node: NodeProc, raw: bytes) -> None:
    c = Conn(node)
    c.send(raw)
    assert c.response()[0] == 400
    c.close()
    c = Conn(node)
    c.send(get_req("alive"))
    assert c.response()[0] == 404
    c.close()


def test_oversized_head_is_refused(node: NodeProc) -> None:
    c = Conn(node)
    c.send(b"GET /v1/kv/a HTTP/1.1\r\nX-Big: " + b"y" * 70_000 + b"\r\n\r\n")
    assert c.response()[0] == 431
    c.close()
