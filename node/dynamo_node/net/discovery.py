"""Finding a node by its HTTP address: HOST:PORT parsing and a status lookup.

Used where a node is known only by address (a `--seed`, `POST /v1/admin/join`), before
its id and peer address are known.
"""

from __future__ import annotations

import json
from typing import Any

from dynamo_node.client import AsyncDynamoClient, ClientError
from dynamo_node.core.config import NodeConfig
from dynamo_node.core.errors import InvalidRequest, PeerError
from dynamo_node.net.tls import client_context


def split_hostport(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidRequest(f"address must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


async def fetch_status(address: str, config: NodeConfig, timeout: float) -> dict[str, Any]:
    """GET another node's /v1/admin/status by HTTP address (used before its id is known),
    with the cluster token and, on a TLS cluster, this node's client certificate."""
    ctx = client_context(config)
    try:
        client = AsyncDynamoClient(
            f"{config.scheme}://{address}",
            token=config.cluster_token or None,
            timeout=timeout,
            tls_context=ctx,
        )
    except ValueError as exc:
        raise PeerError(f"{address}: {exc}") from None
    try:
        resp = await client.request("GET", "/v1/admin/status")
    except ClientError as exc:
        raise PeerError(f"{address}: {exc}") from None
    finally:
        await client.close()
    if resp.status != 200:
        raise PeerError(f"{address} answered {resp.status}")
    try:
        info = json.loads(resp.body)
    except (ValueError, UnicodeDecodeError):
        raise PeerError(f"{address} sent a malformed status") from None
    if not isinstance(info, dict):
        raise PeerError(f"{address} sent a malformed status")
    return info
