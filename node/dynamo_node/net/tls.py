"""TLS contexts for the HTTP API and the node-to-node protocol (from `NodeConfig`).

One certificate per node (its key and chain), one CA that signs all nodes: the server
side presents the node's certificate; the client side (peer calls, seed and join
lookups) verifies the peer against the CA and checks its host name.
"""

from __future__ import annotations

import ssl

from dynamo_node.core.config import NodeConfig


def server_context(config: NodeConfig) -> ssl.SSLContext | None:
    if not config.tls:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    return ctx


def client_context(config: NodeConfig) -> ssl.SSLContext | None:
    if not config.tls:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=config.tls_ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    return ctx
