"""Finding a node by its HTTP address: HOST:PORT parsing and a status lookup.

Used where a node is known only by address (a `--seed`, `POST /v1/admin/join`), before
its id and peer address are known.
"""

from __future__ import annotations

from typing import Any

from .config import NodeConfig
from .errors import InvalidRequest, PeerError
from .tls import client_context


def split_hostport(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidRequest(f"address must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


async def fetch_status(address: str, config: NodeConfig, timeout: float) -> dict[str, Any]:
    """GET another node's /v1/admin/status by HTTP address (used before its id is known)."""
    from aiohttp import ClientSession, ClientTimeout, TCPConnector

    token = config.cluster_token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    ctx = client_context(config)
    async with (
        ClientSession(
            timeout=ClientTimeout(total=timeout),
            connector=TCPConnector(ssl=ctx) if ctx is not None else None,
        ) as session,
        session.get(f"{config.scheme}://{address}/v1/admin/status", headers=headers) as resp,
    ):
        if resp.status != 200:
            raise PeerError(f"{address} answered {resp.status}")
        info = await resp.json()
    if not isinstance(info, dict):
        raise PeerError(f"{address} sent a malformed status")
    return info
