"""What a data directory says about the node that owns it: its node id, its
incarnation (a fresh one per new directory: the actor of its versions is
`node-id.incarnation`, so a node back with an empty volume never reuses a dot), the
cluster state it last knew, and the refill progress of a replacement.

All live in the META column family and are written once, or atomically replaced.
"""

from __future__ import annotations

import uuid

from dynamo_node.core.errors import InvalidRequest
from dynamo_node.store.storage import Family, Storage

META_NODE_ID = b"node-id"
META_STATE = b"cluster-state"
META_INCARNATION = b"incarnation"
#: present while this node is a replacement being refilled: the partitions done so far
META_REFILL = b"refill"


def load_node_id(storage: Storage, wanted: str, default: str) -> str:
    """The node id saved in the directory; a new directory takes `wanted` (or
    `default`). A directory of another node than `wanted` is refused."""
    saved = storage.get(Family.META, META_NODE_ID)
    if saved is not None and wanted and saved.decode() != wanted:
        raise InvalidRequest(f"data dir belongs to node {saved.decode()!r}, not {wanted!r}")
    if saved is not None:
        return saved.decode()
    node_id = wanted or default
    storage.write([(Family.META, META_NODE_ID, node_id.encode())])
    storage.sync_wal()
    return node_id


def is_fresh(storage: Storage) -> bool:
    """The directory is new: no incarnation was saved in it yet."""
    return storage.get(Family.META, META_INCARNATION) is None


def load_incarnation(storage: Storage) -> str:
    saved = storage.get(Family.META, META_INCARNATION)
    if saved is not None:
        return saved.decode()
    incarnation = uuid.uuid4().hex[:8]
    storage.write([(Family.META, META_INCARNATION, incarnation.encode())])
    storage.sync_wal()
    return incarnation
