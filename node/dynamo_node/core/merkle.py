"""Merkle trees for anti-entropy, one per partition replica (pure; Riak AAE style).

This module owns the hash-tree *state* and the *pure* exchange algorithm that finds the
differing segments of two trees; moving hashes between nodes, scanning keys and repairing
them belong to the sync layer (Garage keeps `merkle.rs` apart from `sync.rs` the same way).

Shape: `segments` leaves (buckets), grouped `fanout` at a time into parents, level by
level, until one root. Both numbers are powers of two, so every level has
`segments / fanout**k` nodes and only the root may have fewer than `fanout` children
(1024 segments, fanout 16: levels of 1, 4, 64 and 1024 nodes). Level 0 is the root, the
leaves are level `level_count - 1`; node `i` of a level has the children
`range(i * fanout, ...)` on the next level. Two trees can be compared only if they have
the same shape (`shape`); the sync protocol must agree on it before descending.

Contents: the tree mirrors a mapping khash -> item without storing it, where an item is
`item_digest(khash, version)`: one BLAKE2b over the key and the bytes of its stored
version, so it binds both (two keys holding equal versions never cancel out). A key
belongs to the segment given by the bits of its hash right after the first
`prefix_bits` (the partition's bits, which every key of a partition shares): storage
keys begin with that hash, big-endian, so the keys of a segment are one contiguous key
range, and listing a segment reads that range only. A leaf is the XOR of the items of
its segment, so inserting, removing or updating a key costs one XOR on the leaf.

Layout history: until layout 2 a key's segment was a hash of the key and a leaf held
H(khash || H(version)) per key: three more hashes per write, and a segment's keys were
spread over its whole partition. Trees of different layouts cannot be compared
(`antientropy` versions its calls by `LAYOUT`).

Invariants:
- The root depends only on the set of (khash, item) pairs, never on the order of
  updates; `update(k, a, b)` is `remove(k, a)` followed by `insert(k, b)`.
- An empty subtree hashes to `EMPTY_HASH` (16 zero bytes), so every empty tree has the
  root `EMPTY_HASH` whatever its shape; an inner node is otherwise H(its children).
- Inner nodes are recomputed lazily: an update marks its leaf's ancestors dirty (a dirty
  node's ancestors are always dirty too, so marking stops at the first dirty one), and any
  read (`root`, `hashes`) first recomputes the dirty nodes bottom-up: O(dirty), not O(all).
- The caller keeps the tree in step with the store: insert only absent keys, remove only
  present (khash, item) pairs. XOR cannot see a duplicate insert; a per-segment key count
  catches the misuse that empties a segment to a non-empty hash (ValueError, tree unchanged).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Protocol

#: the tree layout (see "Layout history")
LAYOUT = 2
HASH_SIZE = 16
EMPTY_HASH = bytes(HASH_SIZE)
DEFAULT_SEGMENTS = 1024
DEFAULT_FANOUT = 16
#: a leaf costs ~60 bytes of memory; a node holds one tree per partition replica
MAX_SEGMENTS = 1 << 20

_ITEM_PERSON = b"dynamokv.item"
_NODE_PERSON = b"dynamokv.node"
#: bits of the hash every key begins with
KEY_HASH_BITS = 64


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def item_digest(khash: bytes, version: bytes) -> bytes:
    """What the tree holds for `khash` storing `version` (its encoded bytes)."""
    # the length prefix keeps (khash, version) pairs unambiguous once concatenated
    data = len(khash).to_bytes(4, "big") + khash + version
    return blake2b(data, digest_size=HASH_SIZE, person=_ITEM_PERSON).digest()


def _node_hash(children: bytes) -> bytes:
    if not children.strip(b"\x00"):
        return EMPTY_HASH
    return blake2b(children, digest_size=HASH_SIZE, person=_NODE_PERSON).digest()


class MerkleTree:
    """The hash tree of one partition replica; see the module docstring."""

    __slots__ = (
        "_counts",
        "_dirty",
        "_fanout",
        "_inner",
        "_leaves",
        "_segments",
        "_shift",
        "_sizes",
    )

    def __init__(
        self, segments: int = DEFAULT_SEGMENTS, fanout: int = DEFAULT_FANOUT, prefix_bits: int = 0
    ) -> None:
        if not _is_power_of_two(segments) or segments > MAX_SEGMENTS:
            raise ValueError(f"segments must be a power of two <= {MAX_SEGMENTS}: {segments}")
        if not _is_power_of_two(fanout) or fanout < 2:
            raise ValueError(f"fanout must be a power of two >= 2: {fanout}")
        segment_bits = segments.bit_length() - 1
        if not 0 <= prefix_bits <= KEY_HASH_BITS - segment_bits:
            raise ValueError(f"prefix_bits must leave {segment_bits} bits: {prefix_bits}")
        self._segments = segments
        self._fanout = fanout
        self._shift = KEY_HASH_BITS - prefix_bits - segment_bits
        sizes = [segments]
        while sizes[-1] > 1:
            sizes.append(max(1, sizes[-1] // fanout))
        sizes.reverse()
        self._sizes = sizes  # nodes per level, root first
        self._leaves = [0] * segments  # leaf hashes as ints: XOR without copying bytes
        self._counts = [0] * segments
        self._inner = [[EMPTY_HASH] * n for n in sizes[:-1]]
        self._dirty: list[set[int]] = [set() for _ in sizes[:-1]]

    @classmethod
    def build(
        cls,
        items: Iterable[tuple[bytes, bytes]],
        segments: int = DEFAULT_SEGMENTS,
        fanout: int = DEFAULT_FANOUT,
        prefix_bits: int = 0,
    ) -> MerkleTree:
        """A tree of (khash, item) pairs with distinct khashes (e.g. a store scan)."""
        tree = cls(segments, fanout, prefix_bits)
        leaves, counts, segment_of = tree._leaves, tree._counts, tree.segment_of
        for khash, item in items:
            seg = segment_of(khash)
            leaves[seg] ^= int.from_bytes(item)
            counts[seg] += 1
        tree._dirty = [set(range(n)) for n in tree._sizes[:-1]]
        return tree

    @classmethod
    def from_leaves(
        cls,
        leaves: bytes,
        counts: Sequence[int],
        segments: int = DEFAULT_SEGMENTS,
        fanout: int = DEFAULT_FANOUT,
        prefix_bits: int = 0,
    ) -> MerkleTree:
        """The tree whose leaves are `leaves` (HASH_SIZE bytes each, in segment order) and
        whose segments count `counts` keys: what `leaf_state` returned (a saved tree).
        The inner nodes are derived, at the first read. Raises ValueError on leaves that
        no store could produce (wrong sizes, a negative count, an empty non-zero leaf)."""
        tree = cls(segments, fanout, prefix_bits)
        if len(leaves) != segments * HASH_SIZE or len(counts) != segments:
            raise ValueError(f"{len(leaves)} leaf bytes, {len(counts)} counts: not {segments}")
        values = [
            int.from_bytes(leaves[i : i + HASH_SIZE]) for i in range(0, len(leaves), HASH_SIZE)
        ]
        if any(type(c) is not int for c in counts) or min(counts) < 0:
            raise ValueError("key counts must be non-negative integers")
        if any(values[seg] for seg, count in enumerate(counts) if not count):
            raise ValueError("a segment counting no key has a non-empty leaf")
        tree._leaves, tree._counts = values, list(counts)
        tree._dirty = [set(range(n)) for n in tree._sizes[:-1]]
        return tree

    def leaf_state(self) -> tuple[bytes, list[int]]:
        """The leaves (HASH_SIZE bytes each, in segment order) and the key count of every
        segment: all of a tree's state (`from_leaves` makes it again)."""
        return b"".join(v.to_bytes(HASH_SIZE) for v in self._leaves), list(self._counts)

    # --- shape -------------------------------------------------------------------
    @property
    def segments(self) -> int:
        return self._segments

    @property
    def fanout(self) -> int:
        return self._fanout

    @property
    def shape(self) -> tuple[int, int]:
        """(segments, fanout): what two replicas must agree on before comparing."""
        return self._segments, self._fanout

    @property
    def level_count(self) -> int:
        return len(self._sizes)

    @property
    def leaf_level(self) -> int:
        return len(self._sizes) - 1

    def level_size(self, level: int) -> int:
        self._check_level(level)
        return self._sizes[level]

    def children(self, level: int, index: int) -> range:
        """The indices, on level + 1, of the children of node `index` (empty for a leaf)."""
        self._check_level(level)
        if not 0 <= index < self._sizes[level]:
            raise IndexError(f"node {index} out of range on level {level}")
        if level == self.leaf_level:
            return range(0)
        start = index * self._fanout
        return range(start, min(start + self._fanout, self._sizes[level + 1]))

    def segment_of(self, khash: bytes) -> int:
        """The leaf that covers `khash` (which begins with its 64-bit hash, big-endian):
        the hash bits after the first `prefix_bits`."""
        return (int.from_bytes(khash[:8]) >> self._shift) & (self._segments - 1)

    def segment_span(self, segment: int) -> tuple[int, int]:
        """The key hashes [lo, hi) of `segment` below a prefix of zeros: add the prefix
        (the partition's first hash) to get the storage range of the segment."""
        return segment << self._shift, (segment + 1) << self._shift

    # --- contents ------------------------------------------------------------------
    def insert(self, khash: bytes, item: bytes) -> None:
        self.update(khash, None, item)

    def remove(self, khash: bytes, item: bytes) -> None:
        self.update(khash, item, None)

    def update(self, khash: bytes, old_item: bytes | None, new_item: bytes | None) -> None:
        """Replace (khash, old_item) by (khash, new_item); None means absent."""
        if old_item == new_item:
            return
        seg = self.segment_of(khash)
        leaf, count = self._leaves[seg], self._counts[seg]
        if old_item is not None:
            leaf ^= int.from_bytes(old_item)
            count -= 1
        if new_item is not None:
            leaf ^= int.from_bytes(new_item)
            count += 1
        if count < 0 or (count == 0 and leaf != 0):
            raise ValueError(f"segment {seg} is out of step with the store: removed an absent key")
        self._leaves[seg], self._counts[seg] = leaf, count
        self._mark(seg)

    def set_segment(self, segment: int, items: Iterable[bytes]) -> None:
        """Make `segment` hold exactly `items` (those of its keys, e.g. a scan of its key
        range): for callers that recompute stale segments instead of updating per key."""
        if not 0 <= segment < self._segments:
            raise IndexError(f"segment {segment} out of range")
        leaf, count = 0, 0
        for item in items:
            leaf ^= int.from_bytes(item)
            count += 1
        if (leaf, count) == (self._leaves[segment], self._counts[segment]):
            return
        self._leaves[segment], self._counts[segment] = leaf, count
        self._mark(segment)

    def _mark(self, segment: int) -> None:
        index = segment
        for level in range(self.leaf_level - 1, -1, -1):
            index //= self._fanout
            dirty = self._dirty[level]
            if index in dirty:
                break  # its ancestors are dirty already
            dirty.add(index)

    def __len__(self) -> int:
        return sum(self._counts)

    def segment_size(self, segment: int) -> int:
        """How many keys the tree counts in `segment`."""
        return self._counts[segment]

    @property
    def dirty_nodes(self) -> int:
        """Inner nodes whose hash the next read recomputes."""
        return sum(len(d) for d in self._dirty)

    # --- hashes --------------------------------------------------------------------
    def root(self) -> bytes:
        return self.hashes(0, (0,))[0]

    def hashes(self, level: int, indices: Sequence[int]) -> list[bytes]:
        """The hashes of the nodes `indices` of `level` (level 0 = the root)."""
        self._check_level(level)
        self._refresh()
        size = self._sizes[level]
        if any(not 0 <= i < size for i in indices):
            raise IndexError(f"node index out of range on level {level} (size {size})")
        if level == self.leaf_level:
            return [self._leaves[i].to_bytes(HASH_SIZE) for i in indices]
        nodes = self._inner[level]
        return [nodes[i] for i in indices]

    def _refresh(self) -> None:
        leaf_level = self.leaf_level
        for level in range(leaf_level - 1, -1, -1):
            dirty = self._dirty[level]
            if not dirty:
                continue
            nodes, below, fanout = self._inner[level], self._sizes[level + 1], self._fanout
            for index in dirty:
                lo, hi = index * fanout, min((index + 1) * fanout, below)
                if level + 1 == leaf_level:
                    joined = b"".join(v.to_bytes(HASH_SIZE) for v in self._leaves[lo:hi])
                else:
                    joined = b"".join(self._inner[level + 1][lo:hi])
                nodes[index] = _node_hash(joined)
            dirty.clear()

    def _check_level(self, level: int) -> None:
        if not 0 <= level < len(self._sizes):
            raise IndexError(f"level {level} out of range (0..{len(self._sizes) - 1})")

    def __repr__(self) -> str:
        return f"MerkleTree(segments={self._segments}, fanout={self._fanout}, keys={len(self)})"


# --- exchange ------------------------------------------------------------------------
class HashSource(Protocol):
    """Where the other replica's hashes come from (a tree, or a peer behind a call)."""

    def hashes(self, level: int, indices: Sequence[int]) -> list[bytes]: ...


class AsyncHashSource(Protocol):
    async def hashes(self, level: int, indices: Sequence[int]) -> list[bytes]: ...


@dataclass(frozen=True, slots=True)
class ExchangeStats:
    """What a comparison cost: remote calls made and hashes received from the remote."""

    calls: int
    hashes_transferred: int


class _Descent:
    """The exchange as a state machine, shared by the sync and async drivers: ask for
    `indices` of `level`, `feed` the remote's answer, repeat until `done`."""

    def __init__(self, local: MerkleTree) -> None:
        self.local = local
        self.level = 0
        self.indices: list[int] = [0]
        self.done = False
        self.differing: list[int] = []
        self.calls = 0
        self.transferred = 0

    def feed(self, remote: list[bytes]) -> None:
        if len(remote) != len(self.indices):
            raise ValueError(f"remote sent {len(remote)} hashes for {len(self.indices)} nodes")
        self.calls += 1
        self.transferred += len(remote)
        mine = self.local.hashes(self.level, self.indices)
        differing = [i for i, a, b in zip(self.indices, mine, remote, strict=True) if a != b]
        if not differing or self.level == self.local.leaf_level:
            self.done, self.differing = True, differing
            return
        self.indices = [c for i in differing for c in self.local.children(self.level, i)]
        self.level += 1

    def result(self) -> tuple[list[int], ExchangeStats]:
        return self.differing, ExchangeStats(self.calls, self.transferred)


def diff_segments(local: MerkleTree, remote: HashSource) -> tuple[list[int], ExchangeStats]:
    """The leaf segments where `remote` differs from `local`, in ascending order.

    Compares the roots, then only the children of differing nodes, one batched call per
    level: at most 1 + (level_count - 1) * d * fanout hashes for d differing keys. Both
    trees must have the same shape. If either side changes meanwhile, the result may miss
    or include a change made during the exchange; the next round settles it.
    """
    descent = _Descent(local)
    while not descent.done:
        descent.feed(remote.hashes(descent.level, descent.indices))
    return descent.result()


async def adiff_segments(
    local: MerkleTree, remote: AsyncHashSource
) -> tuple[list[int], ExchangeStats]:
    """`diff_segments` against a remote that answers asynchronously."""
    descent = _Descent(local)
    while not descent.done:
        descent.feed(await remote.hashes(descent.level, descent.indices))
    return descent.result()


def diff_keys(
    local: Mapping[bytes, bytes], remote: Mapping[bytes, bytes]
) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Compare the khash -> item maps of differing segments on both sides.

    Returns sorted (only_local, only_remote, differing) khashes.
    """
    only_local = sorted(k for k in local if k not in remote)
    only_remote = sorted(k for k in remote if k not in local)
    differing = sorted(k for k, d in local.items() if k in remote and remote[k] != d)
    return only_local, only_remote, differing
