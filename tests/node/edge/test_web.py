"""One real dynamo-node process: the /v1/kv contract (docs/api.md), bad input, limits,
health, metrics, and kill -9 durability."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading

import pytest

from tests.harness import Cluster, NodeProc

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


@pytest.fixture
def one(procs: Cluster) -> tuple[Cluster, NodeProc]:
    return procs, procs.add_node("--durability", "sync")


def test_overwrite_with_context_keeps_one_version(one: tuple[Cluster, NodeProc]) -> None:
    c, n = one
    status, headers, _ = c.put(n, "k", b"v1", content_type="text/plain")
    assert status == 204 and headers["X-Dynamo-Context"]
    status, headers, body = c.get(n, "k")
    assert (status, body, headers["Content-Type"]) == (200, b"v1", "text/plain")
    assert c.put(n, "k", b"v2", context=headers["X-Dynamo-Context"])[0] == 204
    status, _, body = c.get(n, "k")
    assert (status, body) == (200, b"v2")


def test_blind_writes_become_siblings_and_resolve(one: tuple[Cluster, NodeProc]) -> None:
    c, n = one
    c.put(n, "s", b"a", content_type="application/json")
    c.put(n, "s", b"b")
    status, headers, body = c.get(n, "s")
    assert status == 300
    doc = json.loads(body)
    assert doc["context"] == headers["X-Dynamo-Context"]
    assert sorted(base64.b64decode(s["value_b64"]) for s in doc["siblings"]) == [b"a", b"b"]
    assert {s["content_type"] for s in doc["siblings"]} == {
        "application/json",
        "application/octet-stream",
    }
    c.put(n, "s", b"ab", context=doc["context"])
    assert c.get(n, "s")[::2] == (200, b"ab")


def test_delete_then_recreate(one: tuple[Cluster, NodeProc]) -> None:
    c, n = one
    c.put(n, "d", b"x")
    ctx = c.get(n, "d")[1]["X-Dynamo-Context"]
    assert c.delete(n, "d", context=ctx)[0] == 204
    status, headers, body = c.get(n, "d")
    assert status == 404 and "X-Dynamo-Context" in headers
    assert json.loads(body)["error"]["code"] == "not_found"
    assert c.put(n, "d", b"again")[0] == 204
    assert c.get(n, "d")[::2] == (200, b"again")


def test_absent_key_is_404_without_context(one: tuple[Cluster, NodeProc]) -> None:
    c, n = one
    status, headers, body = c.get(n, "never")
    assert status == 404 and "X-Dynamo-Context" not in headers
    assert json.loads(body)["error"]["code"] == "not_found"


@pytest.mark.parametrize("key", ["a/b/c", "with space", "ünïcödé/ключ", "?#&=%", "k" * 1024])
def test_any_utf8_key_round_trips(one: tuple[Cluster, NodeProc], key: str) -> None:
    c, n = one
    assert c.put(n, key, key.encode())[0] == 204
    assert c.get(n, key)[::2] == (200, key.encode())


def _error(resp: tuple[int, dict[str, str], bytes]) -> tuple[int, str]:
    status, _, body = resp
    return status, json.loads(body)["error"]["code"]


def test_bad_input_is_a_json_4xx(one: tuple[Cluster, NodeProc]) -> None:
    c, n = one
    assert _error(c.put(n, "k" * 1025, b"x")) == (400, "invalid_key")
    assert _error(c.request(n, "GET", "/v1/kv/%FF%FE")) == (400, "invalid_key")
    assert _error(c.put(n, "k", b"x", context="garbage!!")) == (400, "invalid_context")
    good = c.put(n, "k", b"x")[1]["X-Dynamo-Context"]
    tampered = good[:-3] + ("A" if good[-3] != "A" else "B") + good[-2:]
    assert _error(c.put(n, "k", b"x", context=tampered)) == (400, "invalid_context")
    assert _error(c.get(n, "k", "?r=0")) == (400, "invalid_quorum")
    assert _error(c.get(n, "k", "?r=4")) == (400, "invalid_quorum")
    assert _error(c.put(n, "k", b"x", query="?w=lots")) == (400, "invalid_quorum")
    assert _error(c.get(n, "k", "?timeout_ms=-5")) == (400, "invalid_parameter")
    assert _error(c.request(n, "GET", "/v2/nothing")) == (404, "not_found")
    assert _error(c.request(n, "POST", "/v1/kv/k", b"x")) == (405, "method_not_allowed")
    assert _error(c.request(n, "POST", "/v1/admin/join", b"[1,2]")) == (400, "invalid_request")
    assert c.get(n, "k")[0] == 200  # nothing above broke the node


def test_oversized_value_is_413_without_buffering(one: tuple[Cluster, NodeProc]) -> None:
    c, n = one
    assert _error(c.put(n, "big", b"x" * (1024 * 1024 + 1))) == (413, "payload_too_large")
    assert c.put(n, "max", b"x" * (1024 * 1024))[0] == 204
    # a chunked upload that never ends is cut off once it passes the limit
    with socket.create_connection(("127.0.0.1", n.port), timeout=10) as s:
        s.sendall(b"PUT /v1/kv/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        reply = b""
        try:
            for _ in range(40):
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass
        s.settimeout(5)
        with contextlib.suppress(OSError):
            reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:100]
    assert c.get(n, "chunked")[0] == 404


def test_health_readiness_metrics_openapi(one: tuple[Cluster, NodeProc]) -> None:
    c, n = one
    assert c.request(n, "GET", "/healthz")[0] == 200
    assert c.request(n, "GET", "/readyz")[0] == 200
    c.put(n, "m", b"x")
    c.get(n, "m")
    status, headers, body = c.request(n, "GET", "/metrics")
    text = body.decode()
    assert status == 200
    assert 'dynamo_http_requests_total{method="PUT",route="/v1/kv/{key}",status="204"}' in text
    assert "dynamo_http_request_seconds_bucket" in text
    assert "dynamo_storage_bytes" in text and "dynamo_hints_pending" in text
    doc = json.loads(c.request(n, "GET", "/openapi.json")[2])
    assert "/v1/kv/{key}" in doc["paths"]


def test_kill_9_loses_no_acknowledged_write(one: tuple[Cluster, NodeProc]) -> None:
    c, n = one
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(tid: int) -> None:
        i = 0
        while not stop.is_set():
            key = f"w{tid}-{i}"
            try:
                status = c.put(n, key, key.encode(), query="?w=1")[0]
            except OSError:
                return
            if status == 204:
                with lock:
                    acked.append(key)
            i += 1

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    from tests.harness import wait_for

    wait_for(lambda: len(acked) > 300, 30, what="a write burst")
    c.kill(n)  # SIGKILL in the middle of the burst
    stop.set()
    for t in threads:
        t.join(10)
    c.start(n)
    missing = [k for k in acked if c.get(n, k)[::2] != (200, k.encode())]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged writes lost"
