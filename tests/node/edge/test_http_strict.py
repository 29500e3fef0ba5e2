"""The client port refuses what RFC 9110/9112 does not allow, the same on both of its
paths (the lean `http1` server and the requests it relays to aiohttp): a table of raw
byte cases against one real node (the status line it answers, and that no request
hidden behind a refused or last one ran), a differential check of the framing against
h11 (the reference HTTP/1.1 parser), HEAD, `Expect: 100-continue` after the auth and
size checks, and the head and body deadlines and the connection cap of a node started
with small ones."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import h11
import pytest

from dynamo_node.core.errors import Unauthorized
from dynamo_node.edge.auth import Authorizer
from dynamo_node.edge.http1 import (
    MAX_FIELD,
    MAX_HEADERS,
    MAX_LINE,
    BadRequest,
    chunk_size,
    connection_cap,
    head_problem,
    parse_head,
    render,
)
from dynamo_node.edge.kvapi import Reply
from dynamo_node.host.fdbudget import PEER_SHARE, RESERVE, Budget
from tests.harness import Cluster, NodeProc, cluster, wait_for

TOKEN = "strict-token-1"
ADMIN = "strict-cluster-2"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"
VALUE = b"present-value"


# --- pure helpers ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /v1/kv/a HTTP/1.1\r\nContent-Length\x00: 5\r\nHost: x", 400),
        *[
            (b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nX" + bytes([c]) + b"y: 1", 400)
            for c in b'\x01\x7f"(/ '
        ],
        (b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nX-A: a\x00b", 400),
        (b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb", 400),
        (b"GET /v1/kv/a\x01 HTTP/1.1\r\nHost: x", 400),
        (b"GET /v1/kv/a\tb HTTP/1.1\r\nHost: x", 400),
        (b"GET /v1/kv/a HTTP/1.1", 400),  # no Host
        (b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nHost: y", 400),
        (
            b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked",
            400,
        ),
        (b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2", 400),
        (b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1", 400),
        (b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1", 400),
        (b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2", 400),
        (b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked", 400),
        (b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip", 400),
        (b"PUT /v1/kv/a HTTP/1.0\r\nTransfer-Encoding: chunked", 400),
        (b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nAuthorization: a\r\nAuthorization: b", 400),
        (b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nX-Dynamo-Refuse: 200 ok", 400),
        (b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\n folded", 400),
        (b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nHost : x", 400),
        (b"GET /v1/kv/a HTTP/1.1\nHost: x", 400),
        (b"GET /v1/kv/a HTTP/1.1\r\nHo\rst: x", 400),
        (b"GET /v1/kv/a HTTP/2.0\r\nHost: x", 400),
        (b"GET v1/kv/a HTTP/1.1\r\nHost: x", 400),
        (b"GET http:///v1/kv/a HTTP/1.1\r\nHost: x", 400),
        (b"GET /" + b"a" * MAX_LINE + b" HTTP/1.1\r\nHost: x", 414),
        (b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * MAX_FIELD, 431),
        (b"GET /v1/kv/a HTTP/1.1\r\nHost: x" + b"\r\nX-A: a" * MAX_HEADERS, 431),
    ],
)
def test_parse_head_refuses(raw: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_head(raw)
    assert caught.value.status == status


def test_parse_head_accepts_the_limits_and_absolute_form() -> None:
    longest = b"GET /" + b"a" * (MAX_LINE - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(longest) == MAX_LINE
    assert parse_head(longest + b"\r\nHost: x").method == "GET"
    field = b"X-A: " + b"a" * (MAX_FIELD - 5)
    fields = b"\r\n".join([b"Host: x", field] + [b"X-B: b"] * (MAX_HEADERS - 2))
    assert len(parse_head(b"GET /v1/kv/a HTTP/1.1\r\n" + fields).headers) == 3
    head = parse_head(b"GET http://h:1/v1/kv/a?r=1 HTTP/1.1\r\nHost: x\r\nX-T: a\tb")
    assert (head.target, head.absolute, head.headers["x-t"]) == ("/v1/kv/a?r=1", True, "a\tb")
    assert parse_head(b"GET HTTP://h HTTP/1.1\r\nHost: x").target == "/"
    head = parse_head(b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked")
    assert head.chunked and head.length == 0
    assert not parse_head(b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nX-A: \xe9").ascii
    assert parse_head(b"GET /v1/kv/a HTTP/1.0").keep_alive is False


@pytest.mark.parametrize(
    ("partial", "status"),
    [
        (b"GET /v1/kv/a HTTP/1.1\nHost: x\n", 400),
        (b"GET /" + b"a" * (MAX_LINE + 2), 414),
        (b"GET / HTTP/1.1\r\nX-A: " + b"a" * (MAX_FIELD + 2), 431),
        (b"GET / HTTP/1.1\r\n" + b"X-A: a\r\n" * (MAX_HEADERS + 1), 431),
    ],
)
def test_head_problem_refuses_an_incomplete_head_early(partial: bytes, status: int) -> None:
    problem = head_problem(partial)
    assert problem is not None and problem.status == status


def test_head_problem_lets_a_plain_incomplete_head_wait() -> None:
    assert head_problem(b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r") is None
    assert head_problem(b"GET /" + b"a" * (MAX_LINE - 5)) is None


def test_connection_cap_never_exceeds_the_descriptor_budget() -> None:
    assert connection_cap(None, 500) == 500
    assert connection_cap(8, 500) == 8
    assert connection_cap(10_000, 500) == 500
    budget = Budget.of(1024)
    assert budget.connections + budget.rocksdb + RESERVE + 1024 // PEER_SHARE <= 1024


def test_head_is_rendered_without_its_body() -> None:
    reply = Reply(200, {"Content-Type": "a/b"}, b"xyz")
    out = render(reply, True, "D", body=False)
    assert out.endswith(b"Content-Length: 3\r\nDate: D\r\n\r\n")


@pytest.mark.parametrize("header", ["Bearer \xff\xfe", "Bearer \udcff\udcfe", "bearer x\udc80"])
def test_a_non_ascii_token_is_unauthorized_not_an_error(header: str) -> None:
    # latin-1 (the lean server) or surrogate escapes (aiohttp) for bytes beyond ASCII
    with pytest.raises(Unauthorized):
        Authorizer("client", "cluster").check("client", header)


def test_chunk_size() -> None:
    assert chunk_size(b"1a") == 26
    assert chunk_size(b"0;ext=1") == 0
    assert chunk_size(b"A ; x") == 10
    for bad in (b"", b"-1", b"0x1", b"g", b" 1", b"1" * 17, b"1;\x00"):
        assert chunk_size(bad) is None, bad


# --- one real node for the raw cases -----------------------------------------------------------
@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    root = tmp_path_factory.mktemp("strict")
    env = {"DYNAMO_CLIENT_TOKEN": TOKEN, "DYNAMO_CLUSTER_TOKEN": ADMIN}
    with cluster(root, token=ADMIN, env=env) as c:
        config = root / "node.json"
        config.write_text(json.dumps({"value_max_bytes": 4096}))
        n = c.add_node("--config", str(config))
        sock = socket.create_connection((n.host, n.port), timeout=10)
        sock.sendall(put_req("present", VALUE))
        assert read_all(sock).startswith(b"HTTP/1.1 204")
        yield n


def put_req(key: str, value: bytes, extra: str = "", close: bool = True) -> bytes:
    conn = "Connection: close\r\n" if close else ""
    return (
        f"PUT /v1/kv/{key} HTTP/1.1\r\nHost: t\r\n{AUTH}{conn}"
        f"Content-Length: {len(value)}\r\n{extra}\r\n"
    ).encode() + value


def read_all(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes (fails after `timeout`)."""
    sock.settimeout(timeout)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return out


def statuses(raw: bytes) -> list[int]:
    """The status codes of the final (non-1xx) responses in what a server sent (each
    framed by its Content-Length or chunked; bodies skipped)."""
    found, pos = [], 0
    while pos < len(raw):
        end = raw.index(b"\r\n\r\n", pos)
        lines = raw[pos:end].decode("latin-1").split("\r\n")
        assert lines[0][:9] in ("HTTP/1.1 ", "HTTP/1.0 "), raw[pos : pos + 100]
        code = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        pos = end + 4
        if "content-length" in headers:
            pos += int(headers["content-length"])
        elif headers.get("transfer-encoding") == "chunked":
            while True:
                line_end = raw.index(b"\r\n", pos)
                size = int(raw[pos:line_end].split(b";")[0], 16)
                pos = line_end + 2 + size + 2
                if not size:
                    break
        if code >= 200:
            found.append(code)
    return found


def exchange(n: NodeProc, raw: bytes, timeout: float = 10.0) -> bytes:
    sock = socket.create_connection((n.host, n.port), timeout=timeout)
    sock.sendall(raw)
    return read_all(sock, timeout)


def stored(n: NodeProc, key: str) -> int:
    got = exchange(
        n, f"GET /v1/kv/{key} HTTP/1.1\r\nHost: t\r\n{AUTH}Connection: close\r\n\r\n".encode()
    )
    return statuses(got)[0]


def hidden(key: str) -> bytes:
    """A request that must never run: it would write `key`."""
    return put_req(key, b"SMUGG", close=False)


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    #: the statuses of the responses, in order (the connection then closes)
    expect: tuple[int, ...]
    #: keys the bytes would write if a request they hide ran
    hidden: tuple[str, ...] = ()


def _get(target: str, extra: str = "", version: str = "1.1") -> bytes:
    host = "Host: t\r\n" if version == "1.1" else ""
    return f"GET {target} HTTP/{version}\r\n{host}{AUTH}{extra}\r\n".encode()


CASES = [
    # 2: nothing after the last request runs, on both paths
    Case(
        "close-then-smuggle",
        _get("/v1/kv/a", "Connection: close\r\n") + hidden("h1"),
        (404,),
        ("h1",),
    ),
    Case("http10-then-smuggle", _get("/v1/kv/a", version="1.0") + hidden("h2"), (404,), ("h2",)),
    Case(
        "http10-keepalive-then-close",
        _get("/v1/kv/a", "Connection: keep-alive\r\n", "1.0")
        + _get("/v1/kv/a", "Connection: close\r\n")
        + hidden("h3"),
        (404, 404),
        ("h3",),
    ),
    Case(
        "relayed-close-then-smuggle",
        _get("/healthz", "Connection: close\r\n") + hidden("h4"),
        (200,),
        ("h4",),
    ),
    Case(
        "chunked-close-then-smuggle",
        b"PUT /v1/kv/c1 HTTP/1.1\r\nHost: t\r\n" + AUTH.encode() + b"Connection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + hidden("h5"),
        (204,),
        ("h5",),
    ),
    Case(
        "relayed-then-lean-close-then-smuggle",
        _get("/healthz") + _get("/v1/kv/present", "Connection: close\r\n") + hidden("h6"),
        (200, 200),
        ("h6",),
    ),
    # 3: names, values, targets, Host, framing
    Case(
        "nul-in-name",
        b"PUT /v1/kv/h7 HTTP/1.1\r\nHost: t\r\n"
        + AUTH.encode()
        + b"Content-Length\x00: 5\r\n\r\nSMUGG",
        (400,),
        ("h7",),
    ),
    *[
        Case(
            f"name-char-{c:02x}",
            b"GET /v1/kv/a HTTP/1.1\r\nHost: t\r\nX"
            + bytes([c])
            + b"y: 1\r\n\r\n"
            + hidden(f"h8{c:02x}"),
            (400,),
            (f"h8{c:02x}",),
        )
        for c in b'\x01\x7f"(/'
    ],
    Case(
        "nul-in-value",
        b"GET /v1/kv/a HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n" + hidden("h9"),
        (400,),
        ("h9",),
    ),
    Case(
        "ctl-in-value",
        b"GET /v1/kv/a HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n" + hidden("h10"),
        (400,),
        ("h10",),
    ),
    Case(
        "ctl-in-target",
        b"GET /v1/kv/a\x01b HTTP/1.1\r\nHost: t\r\n\r\n" + hidden("h11"),
        (400,),
        ("h11",),
    ),
    Case(
        "space-in-target",
        b"GET /v1/kv/a b HTTP/1.1\r\nHost: t\r\n\r\n" + hidden("h12"),
        (400,),
        ("h12",),
    ),
    Case(
        "no-host",
        b"GET /v1/kv/a HTTP/1.1\r\n" + AUTH.encode() + b"\r\n" + hidden("h13"),
        (400,),
        ("h13",),
    ),
    Case(
        "two-hosts",
        b"GET /v1/kv/a HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n" + hidden("h14"),
        (400,),
        ("h14",),
    ),
    Case(
        "cl-and-te",
        b"PUT /v1/kv/h15a HTTP/1.1\r\nHost: t\r\n"
        + AUTH.encode()
        + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n" + hidden("h15"),
        (400,),
        ("h15", "h15a"),
    ),
    Case(
        "two-content-lengths",
        b"PUT /v1/kv/h16a HTTP/1.1\r\nHost: t\r\n"
        + AUTH.encode()
        + b"Content-Length: 1\r\nContent-Length: 5\r\n\r\nSMUGG",
        (400,),
        ("h16a",),
    ),
    Case(
        "content-length-list",
        b"PUT /v1/kv/h17a HTTP/1.1\r\nHost: t\r\n"
        + AUTH.encode()
        + b"Content-Length: 5, 5\r\n\r\nSMUGG",
        (400,),
        ("h17a",),
    ),
    Case(
        "te-identity-chunked",
        b"PUT /v1/kv/h18a HTTP/1.1\r\nHost: t\r\n"
        + AUTH.encode()
        + b"Transfer-Encoding: identity, chunked\r\n\r\n"
        b"5\r\nSMUGG\r\n0\r\n\r\n" + hidden("h18"),
        (400,),
        ("h18", "h18a"),
    ),
    Case(
        "te-gzip",
        b"PUT /v1/kv/h19a HTTP/1.1\r\nHost: t\r\n"
        + AUTH.encode()
        + b"Transfer-Encoding: gzip\r\n\r\n"
        + hidden("h19"),
        (400,),
        ("h19", "h19a"),
    ),
    Case(
        "bad-head-after-relayed",
        _get("/healthz")
        + b"PUT /v1/kv/h20a HTTP/1.1\r\nHost: t\r\n"
        + AUTH.encode()
        + b"Transfer-Encoding: identity, chunked\r\n\r\n5\r\nSMUGG\r\n0\r\n\r\n"
        + hidden("h20"),
        (200, 400),
        ("h20", "h20a"),
    ),
    Case(
        "bad-chunk-size",
        b"PUT /v1/kv/h21a HTTP/1.1\r\nHost: t\r\n"
        + AUTH.encode()
        + b"Transfer-Encoding: chunked\r\n\r\n"
        b"5x\r\nSMUGG\r\n0\r\n\r\n" + hidden("h21"),
        (),
        ("h21", "h21a"),
    ),
    # 6: one set of limits on both paths
    Case("long-line", _get("/v1/kv/" + "a" * MAX_LINE) + hidden("h22"), (414,), ("h22",)),
    Case("long-line-relayed", _get("/healthz?" + "a" * MAX_LINE) + hidden("h23"), (414,), ("h23",)),
    Case(
        "long-field",
        _get("/v1/kv/a", "X-A: " + "a" * MAX_FIELD + "\r\n") + hidden("h24"),
        (431,),
        ("h24",),
    ),
    Case(
        "long-field-relayed",
        _get("/healthz", "X-A: " + "a" * MAX_FIELD + "\r\n") + hidden("h25"),
        (431,),
        ("h25",),
    ),
    Case(
        "many-fields",
        _get("/v1/kv/a", "X-A: a\r\n" * MAX_HEADERS) + hidden("h26"),
        (431,),
        ("h26",),
    ),
    Case(
        "many-fields-after-relayed",
        _get("/healthz") + _get("/healthz", "X-A: a\r\n" * MAX_HEADERS) + hidden("h27"),
        (200, 431),
        ("h27",),
    ),
    Case(
        "fields-at-the-limit",
        _get("/v1/kv/a", "X-A: a\r\n" * (MAX_HEADERS - 3) + "Connection: close\r\n"),
        (404,),
    ),
    Case(
        "fields-at-the-limit-relayed",
        _get("/healthz", "X-A: " + "a" * (MAX_FIELD - 5) + "\r\n" + "Connection: close\r\n"),
        (200,),
    ),
    # 7: Authorization, absolute form, bare LF
    Case(
        "two-authorizations",
        _get("/v1/kv/present", "Authorization: Bearer wrong\r\n") + hidden("h28"),
        (400,),
        ("h28",),
    ),
    Case(
        "non-ascii-token",
        b"GET /v1/kv/present HTTP/1.1\r\nHost: t\r\n"
        b"Authorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n",
        (401,),
    ),
    Case("absolute-form", _get("http://t/v1/kv/present", "Connection: close\r\n"), (200,)),
    Case("absolute-form-relayed", _get("http://t:7070/healthz", "Connection: close\r\n"), (200,)),
    Case("bare-lf", b"GET /v1/kv/a HTTP/1.1\nHost: t\n\n" + hidden("h29"), (400,), ("h29",)),
    # alone (no CRLF CRLF ever follows): answered at once, not after a keep-alive timeout
    Case("bare-lf-alone", b"GET /v1/kv/a HTTP/1.1\nHost: t\n\n", (400,)),
    Case(
        "client-refuse-header",
        _get("/v1/kv/a", "X-Dynamo-Refuse: 200 fine\r\n") + hidden("h30"),
        (400,),
        ("h30",),
    ),
]


@pytest.mark.cluster
@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_raw_case(node: NodeProc, case: Case) -> None:
    got = exchange(node, case.raw)
    assert tuple(statuses(got)) == case.expect, got[:300]
    for key in case.hidden:
        assert stored(node, key) == 404, f"{key} was written: a hidden request ran"


def h11_verdict(raw: bytes) -> tuple[int, bool]:
    """How many requests h11 reads from `raw` before the connection ends, and whether it
    then raised RemoteProtocolError (as a server that answers each request 200)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    conn.receive_data(b"")
    requests = 0
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                requests += 1
            elif isinstance(event, h11.EndOfMessage):
                conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return requests, False
                conn.start_next_cycle()
            elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return requests, False
    except h11.RemoteProtocolError:
        return requests, True


@pytest.mark.cluster
@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_framing_agrees_with_h11(node: NodeProc, case: Case) -> None:
    accepted, refused = h11_verdict(case.raw)
    if not refused:
        return  # h11 reads it all: nothing to hold the node to here
    got = statuses(exchange(node, case.raw))
    # the requests h11 read may be answered; the one it refused gets a 4xx or a close;
    # nothing after it runs
    assert len(got) <= accepted + 1, got
    if len(got) == accepted + 1:
        assert 400 <= got[-1] < 500, got
    for key in case.hidden:
        assert stored(node, key) == 404, f"{key} was written: a hidden request ran"


def test_the_differential_test_sees_h11_refusals() -> None:
    refused = {c.name for c in CASES if h11_verdict(c.raw)[1]}
    assert {"nul-in-name", "two-content-lengths", "te-identity-chunked"} <= refused


# --- HEAD and Expect -------------------------------------------------------------------------
def response_head(sock: socket.socket) -> tuple[int, dict[str, str]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        assert chunk, data
        data += chunk
    lines = data.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


@pytest.mark.cluster
@pytest.mark.timeout(60)
def test_head_answers_as_get_without_the_body(node: NodeProc) -> None:
    sock = socket.create_connection((node.host, node.port), timeout=10)
    # the lean path, then a non-ASCII header value (served by aiohttp), then a miss
    sock.sendall(
        _get("/v1/kv/present").replace(b"GET", b"HEAD", 1)
        + _get("/v1/kv/present", "X-Note: café\r\n").replace(b"GET", b"HEAD", 1)
    )
    for _ in range(2):
        status, headers = response_head(sock)
        assert status == 200
        assert headers["content-length"] == str(len(VALUE))
        assert headers["content-type"] == "application/octet-stream"
        assert headers["x-dynamo-context"]
    sock.sendall(
        _get("/v1/kv/absent").replace(b"GET", b"HEAD", 1)
        + _get("/v1/kv/present", "Connection: close\r\n")
    )
    status, headers = response_head(sock)
    assert status == 404 and int(headers["content-length"]) > 0
    # no body came with the 404: the next bytes are the GET's answer
    rest = read_all(sock)
    assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(VALUE)


def expect_req(key: str, length: int, auth: str = AUTH, chunked: bool = False) -> bytes:
    framing = "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {length}\r\n"
    return (
        f"PUT /v1/kv/{key} HTTP/1.1\r\nHost: t\r\n{auth}{framing}Expect: 100-continue\r\n\r\n"
    ).encode()


@pytest.mark.cluster
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (expect_req("e1", 5, auth=""), 401),
        (expect_req("e2", 5, auth="Authorization: Bearer wrong\r\n"), 401),
        (expect_req("e3", 1 << 20), 413),
    ],
    ids=["no-token", "wrong-token", "too-large"],
)
def test_expect_gets_the_final_answer_before_any_100(
    node: NodeProc, raw: bytes, status: int
) -> None:
    sock = socket.create_connection((node.host, node.port), timeout=10)
    sock.sendall(raw)
    got, _ = response_head(sock)
    assert got == status  # not 100: the client must not send the body
    sock.close()


@pytest.mark.cluster
@pytest.mark.timeout(60)
def test_expect_continues_when_the_checks_pass(node: NodeProc) -> None:
    sock = socket.create_connection((node.host, node.port), timeout=10)
    sock.sendall(expect_req("e4", 2))
    assert response_head(sock)[0] == 100
    sock.sendall(b"ok")
    assert response_head(sock)[0] == 204
    sock.close()
    assert stored(node, "e4") == 200


# --- deadlines and the connection cap -----------------------------------------------------------
HEAD_TIMEOUT_S = 1.5
CAP = 8


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, NodeProc]]:
    root = tmp_path_factory.mktemp("tight")
    with cluster(root) as c:
        config = root / "node.json"
        config.write_text(
            json.dumps(
                {
                    "http_head_timeout_s": HEAD_TIMEOUT_S,
                    "http_body_timeout_s": HEAD_TIMEOUT_S,
                    "max_connections": CAP,
                }
            )
        )
        yield c, c.add_node("--config", str(config))


def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> tuple[bool, bytes]:
    """Whether the server closes `sock` within `seconds`, sending a byte of `trickle`
    every 0.2 s meanwhile; and what it answered."""
    deadline = time.monotonic() + seconds
    got = b""
    sock.settimeout(0.2)
    sent = 0
    while time.monotonic() < deadline:
        if sent < len(trickle):
            try:
                sock.sendall(trickle[sent : sent + 1])
            except OSError:
                return True, got
            sent += 1
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


MARGIN_S = 3.0


@pytest.mark.cluster
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "trickle",
    [
        b"",  # a fresh connection that sends nothing
        b"GET /v1/kv/a HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 200,  # a trickled head
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 200,
    ],
    ids=["idle", "lean", "relayed-route"],
)
def test_a_trickled_head_is_cut_at_the_deadline(
    tight: tuple[Cluster, NodeProc], trickle: bytes
) -> None:
    _, n = tight
    sock = socket.create_connection((n.host, n.port), timeout=5)
    closed, got = closed_within(sock, HEAD_TIMEOUT_S + MARGIN_S, trickle)
    sock.close()
    assert closed, "the connection outlived the head deadline"
    assert statuses(got) == [408]


@pytest.mark.cluster
@pytest.mark.timeout(60)
def test_a_trickled_head_after_relayed_requests_is_closed(tight: tuple[Cluster, NodeProc]) -> None:
    _, n = tight
    sock = socket.create_connection((n.host, n.port), timeout=5)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert response_head(sock)[0] == 200
    closed, _ = closed_within(
        sock, HEAD_TIMEOUT_S + MARGIN_S, b"GET /healthz HTTP/1.1\r\nX-S: " + b"a" * 200
    )
    sock.close()
    assert closed, "the connection outlived the head deadline"


@pytest.mark.cluster
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "head",
    [
        b"PUT /v1/kv/slow HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n",
        b"PUT /v1/kv/slow HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n",
    ],
    ids=["lean", "chunked-relayed"],
)
def test_a_stalled_body_is_cut_at_the_deadline(
    tight: tuple[Cluster, NodeProc], head: bytes
) -> None:
    _, n = tight
    sock = socket.create_connection((n.host, n.port), timeout=5)
    sock.sendall(head + b"abc")
    closed, got = closed_within(sock, HEAD_TIMEOUT_S + MARGIN_S)
    sock.close()
    assert closed, "the connection outlived the body deadline"
    assert statuses(got) in ([], [408])


def metric(c: Cluster, n: NodeProc, name: str) -> float:
    text = c.request(n, "GET", "/metrics")[2].decode()
    (line,) = [x for x in text.splitlines() if x.startswith(name + " ")]
    return float(line.split()[1])


@pytest.mark.cluster
@pytest.mark.timeout(60)
def test_connections_beyond_the_cap_are_refused_and_counted(
    tight: tuple[Cluster, NodeProc],
) -> None:
    c, n = tight
    # the scrape's own connection is open while it is answered
    wait_for(lambda: metric(c, n, "dynamo_http_connections") <= 1, 10, what="idle")
    refused_before = metric(c, n, "dynamo_http_connections_refused_total")
    held = [socket.create_connection((n.host, n.port), timeout=5) for _ in range(CAP)]
    try:
        for s in held:  # each one accepted and served: the cap is reached
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert response_head(s)[0] == 200
        extra = [socket.create_connection((n.host, n.port), timeout=5) for _ in range(3)]
        for s in extra:
            closed, got = closed_within(s, 2.0)
            assert closed and got == b"", "a connection beyond the cap was served"
            s.close()
    finally:
        for s in held:
            s.close()
    wait_for(lambda: metric(c, n, "dynamo_http_connections") <= 1, 10, what="closed")
    assert metric(c, n, "dynamo_http_connections_refused_total") >= refused_before + 3
    assert c.request(n, "GET", "/healthz")[0] == 200  # serves again


@pytest.mark.cluster
@pytest.mark.timeout(60)
def test_timeouts_are_counted(tight: tuple[Cluster, NodeProc]) -> None:
    c, n = tight
    before = metric(c, n, "dynamo_http_timeouts_total")
    sock = socket.create_connection((n.host, n.port), timeout=5)
    assert closed_within(sock, HEAD_TIMEOUT_S + MARGIN_S)[0]
    sock.close()
    wait_for(lambda: metric(c, n, "dynamo_http_timeouts_total") > before, 5, what="counted")
