"""The node admin client against a fake node (aiohttp test server): the calls, their
order, auth, and how failures map onto NodeError / NodeUnreachable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dynamo_operator.builders import node_address
from dynamo_operator.errors import NodeError, NodeUnreachable
from dynamo_operator.nodes import NodeAdmin, default_resolver
from tests.certs import make_certs
from tests.harness import free_port


class FakeNode:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, str]] = []
        self.commit_status = 200
        self.anti_entropy_status = 202

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.calls.append(
            (request.method, request.path, body, request.headers.get("Authorization", ""))
        )
        path = request.path.removeprefix("/v1/admin")
        if path == "/status":
            return web.json_response({"node": "demo-0", "state": "up", "ring_version": 3})
        if path == "/commit":
            if self.commit_status != 200:
                error = {"code": "conflict", "message": "a committed change is still transferring"}
                return web.json_response({"error": error}, status=self.commit_status)
            return web.json_response({"committed": True, "ring_version": 4, "transfers": 12})
        if path == "/anti-entropy":
            if self.anti_entropy_status != 202:
                return web.json_response(
                    {"error": {"message": "no"}}, status=self.anti_entropy_status
                )
            return web.json_response({"job": "j1"}, status=202)
        if path == "/plan":
            return web.json_response({"staged": False})
        return web.json_response({"staged": path.strip("/")}, status=202)


@pytest.fixture
async def node() -> AsyncIterator[tuple[FakeNode, str]]:
    fake = FakeNode()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, f"127.0.0.1:{server.port}"
    finally:
        await server.close()


async def test_status_and_auth(node: tuple[FakeNode, str]) -> None:
    fake, address = node
    admin = NodeAdmin(timeout_s=2)
    try:
        assert (await admin.status(address, "tok"))["node"] == "demo-0"
        assert fake.calls[-1][3] == "Bearer tok"
        await admin.status(address, None)
        assert fake.calls[-1][3] == ""
    finally:
        await admin.close()


async def test_change_membership_clears_stages_then_commits(node: tuple[FakeNode, str]) -> None:
    fake, address = node
    admin = NodeAdmin(timeout_s=2)
    try:
        result = await admin.change_membership(address, ["h3:7070", "h4:7070"], ["demo-5"], "t")
    finally:
        await admin.close()
    assert result == {"committed": True, "ring_version": 4, "transfers": 12}
    assert [(m, p, b) for m, p, b, _ in fake.calls] == [
        ("DELETE", "/v1/admin/plan", None),
        ("POST", "/v1/admin/join", {"address": "h3:7070"}),
        ("POST", "/v1/admin/join", {"address": "h4:7070"}),
        ("POST", "/v1/admin/leave", {"node": "demo-5"}),
        ("POST", "/v1/admin/commit", None),
    ]


async def test_errors(node: tuple[FakeNode, str]) -> None:
    fake, address = node
    fake.commit_status = 409
    fake.anti_entropy_status = 503
    admin = NodeAdmin(timeout_s=2)
    try:
        with pytest.raises(NodeError) as err:
            await admin.change_membership(address, [], ["demo-1"], None)
        assert err.value.status == 409 and "still transferring" in str(err.value)
        with pytest.raises(NodeError) as err:
            await admin.start_anti_entropy(address, None)
        assert err.value.status == 503
        with pytest.raises(NodeUnreachable):
            await admin.status(f"127.0.0.1:{free_port()}", None)
    finally:
        await admin.close()


async def test_statuses_leaves_out_nodes_that_do_not_answer(node: tuple[FakeNode, str]) -> None:
    _, address = node
    admin = NodeAdmin(timeout_s=2)
    try:
        found = await admin.statuses(
            {"demo-0": address, "demo-1": f"127.0.0.1:{free_port()}"}, None
        )
        assert list(found) == ["demo-0"]
        assert await admin.start_anti_entropy(address, None) == "j1"
    finally:
        await admin.close()


def test_default_resolver_is_the_pod_dns_name() -> None:
    assert default_resolver("demo", "kv", 2) == node_address("demo", "kv", 2)
    assert default_resolver("demo", "kv", 2) == "demo-2.demo-peers.kv.svc:7070"
    assert (
        NodeAdmin(lambda name, ns, i: f"127.0.0.1:{9000 + i}").address("demo", "kv", 1)
        == "127.0.0.1:9001"
    )


async def test_tls_nodes_are_called_over_https_and_verified(tmp_path: Any) -> None:
    import ssl

    cert, key, ca = make_certs(tmp_path)
    ca_pem = ca.read_text()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    fake = FakeNode()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx)
    await site.start()
    admin = NodeAdmin()
    address = f"127.0.0.1:{port}"
    try:
        with pytest.raises(NodeUnreachable):  # plain HTTP to a TLS port
            await admin.status(address, None)
        admin.trust([address], ca_pem)
        assert (await admin.status(address, None))["node"] == "demo-0"
        admin.trust([address], None)  # back to plain HTTP
        with pytest.raises(NodeUnreachable):
            await admin.status(address, None)
    finally:
        await admin.close()
        await runner.cleanup()
