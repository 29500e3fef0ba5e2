"""The ring: hashing keys to Q equal partitions, partition ownership, placement (pure).

Owns Dynamo's partitioning strategy 3 (as riak_core's `chash` + `riak_core_claim`):
the 64-bit hash space is cut into Q equal partitions (Q a power of two, fixed at cluster
creation) and a versioned `Ring` maps every partition to the node that owns it.

- `key_hash` / `partition_of` / `partition_range`: key -> hash -> partition.
- `Ring`: who owns what; preference lists and the full fallback walk of a partition.
- `claim`: placement. Given the old ring and the new member list, the next ring.
- `transfers`: the partition moves between two rings (what handoff must stream).
The sloppy-quorum targets of a key given liveness (riak_core_apl's `get_apl_ann`) are
`core.placement`'s.

Invariants:
- `len(ring.owners) == ring.partitions`, a power of two >= 1; every owner is a non-empty
  str. A ring is immutable; a change is a new ring with a higher version.
- `partition_of(h, Q)` ranges over exactly [0, Q); `partition_range` tiles [0, 2**64).
- A preference list holds distinct physical nodes, starts with the partition's owner and
  is a prefix of `walk(p)`.
- `claim` is deterministic and balanced (per-node counts differ by at most one), and moves
  the fewest partitions any balanced ring could: a surviving node gives partitions away
  only if it holds more than its share, and only nodes below their share receive.

No I/O, no clock, no randomness: ties are broken by partition id, then node id.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

HASH_BITS = 64
HASH_SPACE = 1 << HASH_BITS
#: placement tries to keep a node's partitions more than SPREAD apart, so that the owners
#: of any SPREAD + 1 consecutive partitions differ (preference lists of N=3 hit three
#: nodes in three consecutive partitions, as riak_core's target_n_val). A window of
#: SPREAD + 1 consecutive partitions that repeats an owner is a *clump*.
SPREAD = 2


def key_hash(key: bytes) -> int:
    """The stable 64-bit hash of a key (BLAKE2b, 8-byte digest, big-endian)."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def _check_partitions(partitions: int) -> int:
    """Return log2(partitions); ValueError unless it is a power of two >= 1."""
    if (
        not isinstance(partitions, int)
        or isinstance(partitions, bool)
        or partitions < 1
        or partitions & (partitions - 1)
    ):
        raise ValueError(f"partitions must be a power of two >= 1, got {partitions!r}")
    bits = partitions.bit_length() - 1
    if bits > HASH_BITS:
        raise ValueError(f"partitions must be at most 2**{HASH_BITS}, got {partitions}")
    return bits


#: Q -> the shift that maps a hash to its partition (validated once per Q; hot path)
_SHIFTS: dict[int, int] = {}


def partition_of(h: int, partitions: int) -> int:
    """The partition holding 64-bit hash `h`: its top log2(Q) bits."""
    shift = _SHIFTS.get(partitions)
    if shift is None:
        shift = _SHIFTS[partitions] = HASH_BITS - _check_partitions(partitions)
    if not 0 <= h < HASH_SPACE:
        raise ValueError(f"hash out of range: {h}")
    return h >> shift


def partition_range(p: int, partitions: int) -> tuple[int, int]:
    """[start, end) of the hashes in partition `p`; `end` of the last one is 2**64."""
    bits = _check_partitions(partitions)
    if not 0 <= p < partitions:
        raise ValueError(f"partition {p} out of range [0, {partitions})")
    width = 1 << (HASH_BITS - bits)
    return p * width, (p + 1) * width


@dataclass(frozen=True)
class Ring:
    """Versioned ownership: `owners[p]` is the node id owning partition p."""

    version: int
    owners: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.version, int) or isinstance(self.version, bool):
            raise ValueError(f"ring version must be an int, got {self.version!r}")
        if self.version < 0:
            raise ValueError(f"ring version must be >= 0, got {self.version}")
        if isinstance(self.owners, str):
            raise ValueError("ring owners must be a sequence of node ids, not a str")
        owners = tuple(self.owners)
        _check_partitions(len(owners))
        for owner in owners:
            if not isinstance(owner, str) or not owner:
                raise ValueError(f"every owner must be a non-empty str, got {owner!r}")
        object.__setattr__(self, "owners", owners)

    @classmethod
    def single(cls, node: str, partitions: int) -> Ring:
        """A cluster of one: version 1, `node` owns every partition."""
        _check_partitions(partitions)
        return cls(1, (node,) * partitions)

    @property
    def partitions(self) -> int:
        """Q, the number of partitions."""
        return len(self.owners)

    def nodes(self) -> tuple[str, ...]:
        """The distinct owners, sorted."""
        return self._distinct

    @functools.cached_property
    def _distinct(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.owners)))

    def owner(self, p: int) -> str:
        """The node owning partition `p`."""
        self._check_partition(p)
        return self.owners[p]

    def owned_by(self, node: str) -> list[int]:
        """The partitions `node` owns, ascending."""
        return [p for p, owner in enumerate(self.owners) if owner == node]

    def preference_list(self, p: int, n: int) -> list[str]:
        """The N primaries of partition `p`: its owner, then the owners of p+1, p+2, ...
        (wrapping) skipping nodes already chosen; fewer when the ring has fewer nodes."""
        self._check_partition(p)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        chosen: list[str] = []
        if n == 0:
            return chosen
        for node in self._walk(p):
            chosen.append(node)
            if len(chosen) == n:
                break
        return chosen

    def walk(self, p: int) -> list[str]:
        """Every node, in preference order from `p`: the preference list, then fallbacks."""
        return list(self._walk(p))

    def to_dict(self) -> dict[str, object]:
        """A JSON-able form: {"version": V, "partitions": Q, "owners": [...]}."""
        return {"version": self.version, "partitions": self.partitions, "owners": list(self.owners)}

    @classmethod
    def from_dict(cls, d: object) -> Ring:
        """Parse `to_dict` output (unknown keys are ignored); ValueError on bad input."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a ring must be a mapping, got {type(d).__name__}")
        missing = {"version", "partitions", "owners"} - set(d)
        if missing:
            raise ValueError(f"ring is missing {sorted(missing)}")
        version, partitions, owners = d["version"], d["partitions"], d["owners"]
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(f"ring version must be an int, got {version!r}")
        if not isinstance(partitions, int) or isinstance(partitions, bool):
            raise ValueError(f"ring partitions must be an int, got {partitions!r}")
        if not isinstance(owners, list | tuple):
            raise ValueError(f"ring owners must be a list, got {type(owners).__name__}")
        if len(owners) != partitions:
            raise ValueError(f"ring has {len(owners)} owners for {partitions} partitions")
        return cls(version, tuple(owners))

    def with_version(self, v: int) -> Ring:
        """The same ownership under version `v`."""
        return dataclasses.replace(self, version=v)

    def _check_partition(self, p: int) -> None:
        if not 0 <= p < len(self.owners):
            raise ValueError(f"partition {p} out of range [0, {len(self.owners)})")

    def _walk(self, p: int) -> Iterator[str]:
        """Distinct owners of p, p+1, ... (wrapping), each yielded at its first sighting."""
        self._check_partition(p)
        q = len(self.owners)
        total = len(self._distinct)
        seen: set[str] = set()
        for i in range(q):
            node = self.owners[(p + i) % q]
            if node not in seen:
                seen.add(node)
                yield node
                if len(seen) == total:
                    return


def _member_list(nodes: Sequence[str]) -> list[str]:
    if isinstance(nodes, str):
        raise ValueError("nodes must be a sequence of node ids, not a str")
    members = list(nodes)
    if not members:
        raise ValueError("a ring needs at least one node")
    for node in members:
        if not isinstance(node, str) or not node:
            raise ValueError(f"every node id must be a non-empty str, got {node!r}")
    if len(set(members)) != len(members):
        dupes = sorted({m for m in members if members.count(m) > 1})
        raise ValueError(f"duplicate node ids: {dupes}")
    return members


def _targets(counts: Mapping[str, int], q: int) -> dict[str, int]:
    """Each member's fair share: Q // S, plus one for the Q % S members that already
    hold the most (ties: node id). Favouring current holders maximises what stays put."""
    ranked = sorted(counts, key=lambda m: (-counts[m], m))
    base, extra = divmod(q, len(ranked))
    return {m: base + (1 if i < extra else 0) for i, m in enumerate(ranked)}


def _near(owners: Sequence[str | None], p: int, node: str) -> int:
    """How many of the partitions within SPREAD of `p` (either side) `node` owns."""
    q = len(owners)
    hits = 0
    for d in range(1, SPREAD + 1):
        if d % q:
            hits += (owners[(p + d) % q] == node) + (owners[(p - d) % q] == node)
    return hits


def _clumps(owners: Sequence[str]) -> int:
    """How many windows of SPREAD + 1 consecutive partitions repeat an owner."""
    q = len(owners)
    width = SPREAD + 1
    return sum(len({owners[(p + i) % q] for i in range(width)}) < width for p in range(q))


def claim(ring: Ring, nodes: Sequence[str]) -> Ring:
    """The next ring (version + 1) owned by exactly `nodes` (S members, in any order).

    Balanced: every member ends with Q // S or Q // S + 1 partitions, the extra ones
    going to the members that already hold most (ties: node id); when S > Q, Q members
    own one partition each and the rest none. Minimal movement: only the partitions of
    departed nodes and the surplus of members above their share move, and only to members
    below their share, so no balanced ring moves fewer. Spreading is best-effort within
    those quotas: two strategies fill them (`_greedy`, good at single joins and leaves;
    `_sweep`, good at many joins at once) and the ring with fewer clumps wins (ties:
    `_greedy`). The result depends only on `ring` and the set of `nodes`.
    """
    members = sorted(_member_list(nodes))
    q = ring.partitions
    member_set = set(members)
    owners: list[str | None] = [o if o in member_set else None for o in ring.owners]
    counts = dict.fromkeys(members, 0)
    for o in owners:
        if o is not None:
            counts[o] += 1
    targets = _targets(counts, q)
    excess = {m: counts[m] - targets[m] for m in members if counts[m] > targets[m]}
    deficit = {m: targets[m] - counts[m] for m in members if counts[m] < targets[m]}
    plans = [_greedy(owners, excess, deficit), _sweep(owners, excess, deficit)]
    return Ring(ring.version + 1, min(plans, key=_clumps))


def _complete(owners: Sequence[str | None]) -> tuple[str, ...]:
    done = tuple(o for o in owners if o is not None)
    if len(done) != len(owners):
        raise AssertionError("claim left a partition unowned")
    return done


def _greedy(
    start: Sequence[str | None], excess: Mapping[str, int], deficit: Mapping[str, int]
) -> tuple[str, ...]:
    """Fill the quotas by need: each step, the neediest receiver (ties: node id) that has
    a perfect partition left takes its lowest one; if none has, the neediest takes its
    least bad one. Receivers interleave round the ring."""
    owners = list(start)
    surplus = dict(excess)
    wanted = dict(deficit)
    # While claiming, a receiver's own partitions only grow, donors' clumps and surpluses
    # only shrink, so a partition once rejected for a receiver stays rejected: each scan
    # resumes where it stopped (an optimisation; the result is as if scanned from 0).
    perfect_from = dict.fromkeys(wanted, 0)
    good_from = dict.fromkeys(wanted, 0)
    while wanted:
        ranked = sorted(wanted, key=lambda m: (-wanted[m], m))
        for receiver in ranked:
            p = _perfect(owners, receiver, surplus, perfect_from)
            if p is not None:
                break
        else:
            receiver = ranked[0]
            p = _least_bad(owners, receiver, surplus, good_from)
        donor = owners[p]
        if donor is not None:
            surplus[donor] -= 1
            if not surplus[donor]:
                del surplus[donor]
        owners[p] = receiver
        wanted[receiver] -= 1
        if not wanted[receiver]:
            del wanted[receiver]
    return _complete(owners)


def _perfect(
    owners: Sequence[str | None],
    receiver: str,
    surplus: Mapping[str, int],
    cursor: dict[str, int],
) -> int | None:
    """The lowest perfect partition for `receiver`: movable (an orphan, or held by a
    member with surplus whose own neighbour it is, so moving it unclumps the donor) and
    with none of the receiver's partitions within SPREAD. Advances its cursor."""
    for p in range(cursor[receiver], len(owners)):
        donor = owners[p]
        movable = donor is None or (donor in surplus and _near(owners, p, donor) > 0)
        if movable and not _near(owners, p, receiver):
            cursor[receiver] = p + 1
            return p
    cursor[receiver] = len(owners)
    return None


def _least_bad(
    owners: Sequence[str | None],
    receiver: str,
    surplus: Mapping[str, int],
    cursor: dict[str, int],
) -> int:
    """The best movable partition for `receiver` when no perfect one is left, by (its own
    partitions within SPREAD, 0 if an orphan or unclumping its donor else 1, partition
    id). The first movable one with none of the receiver's own near it is the answer
    (no perfect one is left), so that scan resumes at its cursor too."""
    q = len(owners)
    for p in range(cursor[receiver], q):
        donor = owners[p]
        if (donor is None or donor in surplus) and not _near(owners, p, receiver):
            cursor[receiver] = p + 1
            return p
    cursor[receiver] = q
    best: tuple[int, int, int] | None = None
    for p, donor in enumerate(owners):
        if donor is not None and donor not in surplus:
            continue
        tidy = 0 if donor is None or _near(owners, p, donor) else 1
        score = (_near(owners, p, receiver), tidy, p)
        if best is None or score < best:
            best = score
    if best is None:
        raise AssertionError("claim ran out of partitions to move")
    return best[2]


def _sweep(
    start: Sequence[str | None], excess: Mapping[str, int], deficit: Mapping[str, int]
) -> tuple[str, ...]:
    """Fill the quotas in one pass round the ring: each movable partition (an orphan, or
    held by a member with surplus) is kept or given in turn, pacing every donor's gifts
    and all takings evenly. The taker is a receiver with fewest of its own within SPREAD
    (then the furthest behind its share of the gifts so far, then node id). An optional
    gift is made if keeping would clump the donor and the taker fits, skipped if the
    taker would clump and the donor would not, else decided by pace."""
    q = len(start)
    final = list(start)
    movable = [o is None or o in excess for o in start]
    decided = [not m for m in movable]
    total_gifts = sum(deficit.values())
    total_movable = sum(movable)
    held = dict.fromkeys(excess, 0)
    for o in start:
        if o in held:
            held[o] += 1
    seen = dict.fromkeys(excess, 0)
    gave = dict.fromkeys(excess, 0)
    got = dict.fromkeys(deficit, 0)
    receivers = sorted(deficit)
    swept = moved = 0

    def settled_near(p: int) -> list[str | None]:
        # only settled neighbours count: undecided ones may still change hands
        return [
            final[x]
            for d in range(1, SPREAD + 1)
            if d % q
            for x in ((p + d) % q, (p - d) % q)
            if decided[x]
        ]

    def taker(p: int, close: list[str | None]) -> str:
        # got * total - deficit * (moved + 1): how far r is behind an even share so far
        return min(
            (r for r in receivers if got[r] < deficit[r]),
            key=lambda r: (close.count(r), got[r] * total_gifts - deficit[r] * (moved + 1), r),
        )

    for p in range(q):
        if not movable[p]:
            continue
        swept += 1
        donor = final[p]
        close = settled_near(p)
        if donor is None:
            give = True
        else:
            own_left, gifts_left = held[donor] - seen[donor], excess[donor] - gave[donor]
            if gifts_left in (0, own_left):
                give = gifts_left > 0
            else:
                fits = taker(p, close) not in close
                clumped = donor in close
                if fits == clumped:
                    give = fits
                else:
                    # behind (global pace) + behind (donor pace) >= 1, scaled to integers
                    k, e, m = held[donor], excess[donor], total_movable
                    global_lag = (total_gifts * swept - moved * m) * k
                    donor_lag = (e * (seen[donor] + 1) - gave[donor] * k) * m
                    give = global_lag + donor_lag >= m * k
            seen[donor] += 1
        if give:
            receiver = taker(p, close)
            final[p] = receiver
            got[receiver] += 1
            moved += 1
            if donor is not None:
                gave[donor] += 1
        decided[p] = True
    return _complete(final)


def transfers(old: Ring, new: Ring) -> list[tuple[int, str, str]]:
    """(partition, from_node, to_node) for every partition whose owner changes."""
    if old.partitions != new.partitions:
        raise ValueError(f"partition counts differ: {old.partitions} != {new.partitions}")
    return [
        (p, before, after)
        for p, (before, after) in enumerate(zip(old.owners, new.owners, strict=True))
        if before != after
    ]
