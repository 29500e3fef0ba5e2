"""The pure core: clocks, versions, contexts, the object codec, settings, errors, the ring,
membership and gossip state, liveness arithmetic, Merkle trees, quorum arithmetic and
placement. No I/O: nothing here imports a network, storage or framework module.
"""
