"""The node-to-node network: the transport port, its TCP implementation (`framing`, the RPC
client `rpc_client` and server `rpc_server`), TLS contexts and HTTP discovery of peers.
"""
