"""The node-to-node network: the transport port, its TCP implementation (framing, the RPC
client and server), TLS contexts and HTTP discovery of peers.
"""
