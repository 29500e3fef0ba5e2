"""dynamokv node: a Dynamo-style replicated key-value store on RocksDB.

Layers, one direction only (pure core first, I/O shell last):

    config, errors, vclock, versions, context, codec, ring, quorum, merkle   (pure)
    storage, storage_rocks, durability, replica                             (local data)
    transport, framing, rpc_server, rpc_client, hints, coordinator          (cluster)
    web_*, metrics, openapi, node, main                                     (HTTP edge)
    client, cli, local                                                      (tools)
"""

__version__ = "0.1.0"
