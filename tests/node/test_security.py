"""Security: client and cluster tokens on every API (HTTP and node-to-node), scopes,
JSON 401/403 errors, TLS for clients and peers, and the concurrency limit."""

from __future__ import annotations

import json
import socket
import ssl
import struct
import time
from pathlib import Path

import msgpack
import pytest

from dynamo_node.client import AuthError, DynamoClient
from tests.certs import make_certs
from tests.harness import Cluster, cluster, http, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

CLIENT, ADMIN = "client-secret-1", "cluster-secret-2"


@pytest.fixture
def secured(tmp_path: Path) -> Cluster:
    env = {"DYNAMO_CLIENT_TOKEN": CLIENT, "DYNAMO_CLUSTER_TOKEN": ADMIN}
    with cluster(tmp_path, token=ADMIN, env=env) as c:
        c.form(3)
        yield c  # type: ignore[misc]


def _code(resp: tuple[int, dict[str, str], bytes]) -> tuple[int, str]:
    return resp[0], json.loads(resp[2])["error"]["code"]


def test_tokens_and_scopes(secured: Cluster) -> None:
    n0 = secured.nodes[0]
    kv = f"{n0.url}/v1/kv/k"
    bearer = lambda t: {"Authorization": f"Bearer {t}"}  # noqa: E731
    assert _code(http("PUT", kv, b"x")) == (401, "unauthorized")
    assert _code(http("PUT", kv, b"x", bearer("wrong"))) == (401, "unauthorized")
    assert http("PUT", kv, b"x", bearer(CLIENT))[0] == 204
    assert http("GET", kv, None, bearer(CLIENT))[::2] == (200, b"x")
    assert http("GET", kv, None, bearer(ADMIN))[0] == 200  # the cluster token may too
    status_url = f"{n0.url}/v1/admin/status"
    assert _code(http("GET", status_url)) == (401, "unauthorized")
    assert _code(http("GET", status_url, None, bearer(CLIENT))) == (403, "forbidden")
    assert http("GET", status_url, None, bearer(ADMIN))[0] == 200
    assert _code(http("POST", f"{n0.url}/v1/admin/anti-entropy", b"", bearer(CLIENT))) == (
        403,
        "forbidden",
    )
    # probes and metrics stay open for kubelet and Prometheus
    assert http("GET", f"{n0.url}/healthz")[0] == 200
    assert http("GET", f"{n0.url}/readyz")[0] == 200
    with DynamoClient(n0.address, token=CLIENT) as client, pytest.raises(AuthError):
        client.status()


def _hello(port: int, token: str) -> bytes:
    """Open the node-to-node port, say hello with `token`, return what comes back."""
    body = msgpack.packb([0, "hello", [token, "intruder"]])
    ping = msgpack.packb([1, "ping", []])
    with socket.create_connection(("127.0.0.1", port + 10000), timeout=5) as s:
        s.sendall(struct.pack(">I", len(body)) + body + struct.pack(">I", len(ping)) + ping)
        chunks = b""
        s.settimeout(2)
        try:
            while True:
                data = s.recv(4096)
                if not data:
                    break
                chunks += data
        except TimeoutError:
            pass
    return chunks


def test_internal_port_requires_the_cluster_token(secured: Cluster) -> None:
    port = secured.nodes[0].port
    assert _hello(port, "") == b""  # closed without an answer
    assert _hello(port, CLIENT) == b""  # a client token is never enough
    reply = _hello(port, ADMIN)
    assert b"ok" in reply and b"n0" in reply  # the hello and then the ping answered


def test_tls_for_clients_and_peers(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    cert, key, ca = make_certs(certs)
    tls = ("--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca))
    with cluster(tmp_path) as c:
        c.scheme = "https"
        c.ssl_context = ssl.create_default_context(cafile=str(ca))
        n0, n1, n2 = c.form(3, *tls)  # gossip, join and transfers all over TLS
        with DynamoClient(n0.address, tls_ca=str(ca)) as client:
            client.put("secret", b"over tls")
            assert client.get("secret", r=3).value == b"over tls"
        # plain HTTP to a TLS port gets nowhere
        with pytest.raises(Exception):  # noqa: B017 - a reset, an EOF or a bad status
            status, _, _ = http("GET", f"http://127.0.0.1:{n0.port}/healthz", timeout=3)
            assert status != 200
        c.kill(n2)
        assert c.put(n0, "k", b"v", query="?w=2")[0] == 204
        c.start(n2)
        wait_for(lambda: c.status(n0)["hints_pending"] == 0, 30, what="hints over TLS")


def test_concurrency_limit_sheds_load_with_503(tmp_path: Path) -> None:
    with cluster(tmp_path) as c:
        n0, n1, _ = c.form(3, "--max-concurrent-requests", "1")
        c.pause(n1)
        c.pause(c.nodes[2])
        try:
            import threading

            slow: list[int] = []
            t = threading.Thread(
                target=lambda: slow.append(c.put(n0, "a", b"x", query="?w=3&timeout_ms=3000")[0])
            )
            t.start()
            time.sleep(0.5)  # let the slow request occupy the only slot
            status, _, body = c.put(n0, "b", b"y", query="?w=1")
            assert status == 503 and json.loads(body)["error"]["code"] == "unavailable"
            t.join(10)
            assert slow == [503]
        finally:
            c.resume(n1)
            c.resume(c.nodes[2])
