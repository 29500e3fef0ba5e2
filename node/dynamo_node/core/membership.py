"""Cluster membership and ring state, as gossiped between nodes (pure).

`ClusterState` is what every node converges on:
- `members`: every node known to the cluster with its addresses and status
  (`joining`: known, owns nothing; `valid`: in the ring; `leaving`: its partitions are
  moving away; `left`: owns nothing any more, may be stopped). Each record carries a
  generation; the higher generation wins a merge.
- `ring`: the ring as of the last committed plan, `next`: the ring that plan moves to,
  and `done`: the (partition, receiving node) transfers already completed. A partition
  switches to `next`'s preference list only when every node that gains it has received
  it (ownership switches after the transfer, never before).
- `removed`: ring members the committed plan takes out *without their data* (force-
  removed or replaced: gone for good). They are never a transfer's source; a partition
  they replicated is rebuilt on each node gaining it from every surviving replica.
- `epoch` + `claimant` identify the plan; a higher plan wins a merge, equal plans merge
  `done` by union. `version` (= ring.version + len(done)) grows with every change.

Merging (`merge`) is commutative, associative and idempotent, so gossip in any order
converges. Staging (`plan`) and committing (`commit`) are pure functions too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dynamo_node.core.ring import Ring, claim

STATUSES = ("joining", "valid", "leaving", "left")


@dataclass(frozen=True, slots=True)
class Member:
    node: str
    address: str  # HTTP HOST:PORT (client + admin API)
    peer: str  # HOST:PORT of the node-to-node protocol
    status: str = "joining"
    gen: int = 0
    #: a ring member whose data directory was lost and is being refilled from the other
    #: replicas: it counts towards no quorum until then (placement treats it as down)
    replacing: bool = False

    def to_wire(self) -> list[Any]:
        wire: list[Any] = [self.node, self.address, self.peer, self.status, self.gen]
        if self.replacing:  # only then: nodes of the previous release read 5 fields
            wire.append(True)
        return wire

    @classmethod
    def from_wire(cls, raw: Any) -> Member:
        if not isinstance(raw, list | tuple) or len(raw) not in (5, 6):
            raise ValueError("a member is a list of 5 or 6 fields")
        node, address, peer, status, gen = raw[:5]
        replacing = raw[5] if len(raw) == 6 else False
        if type(gen) is not int:
            raise ValueError("member generation must be an integer")
        if status not in STATUSES:
            raise ValueError(f"unknown member status {status!r}")
        if type(replacing) is not bool:
            raise ValueError("member replacing flag must be a boolean")
        return cls(str(node), str(address), str(peer), str(status), int(gen), replacing)


def _member_rank(m: Member) -> tuple[int, int, str, str]:
    return (m.gen, STATUSES.index(m.status), m.address, m.peer)


@dataclass(frozen=True, slots=True)
class Transfer:
    partition: int
    source: str
    target: str
    #: a replica of the partition is gone for good (force-removed or replaced): the
    #: target rebuilds it from every surviving replica (`source` is the first of them)
    #: instead of receiving one node's stream, which could miss a write that reached
    #: the dead node and one other replica only
    rebuild: bool = False


@dataclass(frozen=True, slots=True)
class ClusterState:
    cluster: str
    n: int
    ring: Ring
    members: Mapping[str, Member] = field(default_factory=dict)
    next: Ring | None = None
    done: frozenset[tuple[int, str]] = frozenset()
    epoch: int = 0
    claimant: str = ""
    removed: frozenset[str] = frozenset()

    # --- construction ----------------------------------------------------------------
    @classmethod
    def founding(cls, cluster: str, me: Member, partitions: int, n: int) -> ClusterState:
        member = replace(me, status="valid", gen=1)
        return cls(cluster, n, Ring.single(me.node, partitions), {me.node: member})

    # --- queries -----------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self.ring.version + len(self.done)

    @property
    def partitions(self) -> int:
        return self.ring.partitions

    def plan_id(self) -> tuple[int, str]:
        return (self.epoch, self.claimant)

    def transfers(self) -> list[Transfer]:
        """Every transfer the committed plan implies (done or not)."""
        if self.next is None:
            return []
        return plan_transfers(self.ring, self.next, self.n, self.removed)

    def pending_transfers(self) -> list[Transfer]:
        return [t for t in self.transfers() if (t.partition, t.target) not in self.done]

    def switched(self, p: int) -> bool:
        """Has partition p moved to the next ring's preference list?"""
        if self.next is None:
            return False
        old, new = self.ring.preference_list(p, self.n), self.next.preference_list(p, self.n)
        return all((p, node) in self.done for node in new if node not in old)

    def effective_ring(self, p: int) -> Ring:
        return self.next if self.next is not None and self.switched(p) else self.ring

    def preference_list(self, p: int) -> list[str]:
        return self.effective_ring(p).preference_list(p, self.n)

    def walk(self, p: int) -> list[str]:
        return self.effective_ring(p).walk(p)

    def owner(self, p: int) -> str:
        return self.effective_ring(p).owner(p)

    def gaining(self, p: int) -> list[str]:
        """Nodes that will replicate p after the switch but do not yet: writes go to
        them too while the transfer runs."""
        if self.next is None or self.switched(p):
            return []
        old = self.ring.preference_list(p, self.n)
        return [node for node in self.next.preference_list(p, self.n) if node not in old]

    def replicas_of(self, node: str) -> list[int]:
        return [p for p in range(self.partitions) if node in self.preference_list(p)]

    def owned_by(self, node: str) -> list[int]:
        return [p for p in range(self.partitions) if self.owner(p) == node]

    def in_transition(self) -> bool:
        return self.next is not None and not all(self.switched(p) for p in range(self.partitions))

    def ring_nodes(self) -> list[str]:
        nodes = set(self.ring.nodes())
        if self.next is not None:
            nodes |= set(self.next.nodes())
        return sorted(nodes)

    # --- changes -----------------------------------------------------------------------
    def with_member(self, member: Member) -> ClusterState:
        members = dict(self.members)
        old = members.get(member.node)
        gen = (old.gen + 1) if old else max(member.gen, 1)
        members[member.node] = replace(member, gen=gen)
        return replace(self, members=members)

    def with_done(self, partition: int, target: str) -> ClusterState:
        return replace(self, done=self.done | {(partition, target)})

    def settle(self) -> ClusterState:
        """Once every partition switched, `next` becomes the ring; then leaving members
        that own nothing are `left`. Deterministic and generation-neutral (status rank
        decides the merge), so settling commutes with merging."""
        state = self
        if self.next is not None and not self.in_transition():
            state = replace(
                self,
                ring=self.next.with_version(self.version),
                next=None,
                done=frozenset(),
                removed=frozenset(),
            )
        if state.next is not None:
            return state
        owners = set(state.ring.nodes())
        departed = {
            node: replace(m, status="left")
            for node, m in state.members.items()
            if m.status == "leaving" and node not in owners
        }
        if departed:
            state = replace(state, members={**state.members, **departed})
        return state

    # --- merge -------------------------------------------------------------------------
    def merge(self, other: ClusterState) -> ClusterState:
        if other.cluster != self.cluster:
            raise ValueError("states of different clusters do not merge")
        members = dict(self.members)
        for node, theirs in other.members.items():
            mine = members.get(node)
            if mine is None or _member_rank(theirs) > _member_rank(mine):
                members[node] = theirs
        mine_key = (self.ring.version, self.plan_id())
        theirs_key = (other.ring.version, other.plan_id())
        if theirs_key > mine_key:
            base = other
        elif theirs_key < mine_key:
            base = self
        else:
            base = replace(self, done=self.done | other.done)
        return replace(base, members=members).settle()

    # --- wire ----------------------------------------------------------------------------
    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "cluster": self.cluster,
            "n": self.n,
            "ring": self.ring.to_dict(),
            "next": self.next.to_dict() if self.next is not None else None,
            "done": sorted([p, t] for p, t in self.done),
            "epoch": self.epoch,
            "claimant": self.claimant,
            "members": [m.to_wire() for m in sorted(self.members.values(), key=lambda m: m.node)],
        }
        if self.removed:  # only then: the previous release reads the state without it
            wire["removed"] = sorted(self.removed)
        return wire

    @classmethod
    def from_wire(cls, raw: Any) -> ClusterState:
        if not isinstance(raw, dict):
            raise ValueError("cluster state must be a mapping")
        try:
            nxt = raw.get("next")
            for name in ("n", "epoch"):
                if type(raw[name]) is not int:
                    raise TypeError(f"{name} must be an integer")
            if raw["n"] < 1:
                raise ValueError("n must be at least 1")
            removed = raw.get("removed", [])
            if not isinstance(removed, list) or not all(isinstance(x, str) for x in removed):
                raise TypeError("removed must be a list of node ids")
            return cls(
                cluster=str(raw["cluster"]),
                n=int(raw["n"]),
                ring=Ring.from_dict(raw["ring"]),
                members={m.node: m for m in (Member.from_wire(x) for x in raw["members"])},
                next=Ring.from_dict(nxt) if nxt is not None else None,
                done=frozenset((int(p), str(t)) for p, t in raw["done"]),
                epoch=int(raw["epoch"]),
                claimant=str(raw["claimant"]),
                removed=frozenset(removed),
            )
        except (KeyError, TypeError, OverflowError) as exc:
            raise ValueError(f"malformed cluster state: {exc}") from None


def plan_transfers(
    old: Ring, new: Ring, n: int, removed: Iterable[str] = frozenset()
) -> list[Transfer]:
    """For every partition, each node in the new preference list but not in the old one
    receives the partition from a node of the old list (preferably one losing it). A
    `removed` node is never a source: where one replicated the partition, the transfer
    is a rebuild from the surviving replicas."""
    gone = frozenset(removed)
    out: list[Transfer] = []
    for p in range(old.partitions):
        before, after = old.preference_list(p, n), new.preference_list(p, n)
        alive = [node for node in before if node not in gone]
        rebuild = len(alive) < len(before)
        losing = [node for node in alive if node not in after]
        for target in after:
            if target in before:
                continue
            source = losing.pop(0) if losing else (alive or before)[0]
            out.append(Transfer(p, source, target, rebuild))
    return out


@dataclass(frozen=True, slots=True)
class Plan:
    """A staged change: the ring it leads to and the transfers it implies."""

    joins: tuple[str, ...]
    leaves: tuple[str, ...]
    ring: Ring
    transfers: tuple[Transfer, ...]
    #: ring members taken out without their data (gone for good)
    removes: tuple[str, ...] = ()
    #: (old, new): new takes old's place in the ring; old's data is not used
    replaces: tuple[tuple[str, str], ...] = ()

    @property
    def removed(self) -> frozenset[str]:
        return frozenset(self.removes) | {old for old, _ in self.replaces}

    def to_dict(self) -> dict[str, Any]:
        moves: dict[str, int] = {}
        for t in self.transfers:
            moves[t.target] = moves.get(t.target, 0) + 1
        return {
            "joins": list(self.joins),
            "leaves": list(self.leaves),
            "removes": list(self.removes),
            "replaces": [{"old": old, "new": new} for old, new in self.replaces],
            "ring_version": self.ring.version,
            "nodes": list(self.ring.nodes()),
            "ownership": {node: len(self.ring.owned_by(node)) for node in self.ring.nodes()},
            "transfers": [
                {"partition": t.partition, "from": t.source, "to": t.target, "rebuild": t.rebuild}
                for t in self.transfers
            ],
            "partitions_received": moves,
            "members_after": len(self.ring.nodes()),
        }


class PlanError(ValueError):
    pass


def plan(
    state: ClusterState,
    joins: Sequence[str],
    leaves: Sequence[str],
    removes: Sequence[str] = (),
    replaces: Mapping[str, str] | None = None,
) -> Plan:
    """The ring after joining `joins`, taking out `leaves` (which hand their data over),
    `removes` (gone for good: their partitions are rebuilt from the surviving replicas)
    and replacing each `old` by `new` in `replaces` (new takes exactly old's partitions,
    rebuilt from the surviving replicas)."""
    swaps = dict(replaces or {})
    if state.in_transition() or state.next is not None:
        raise PlanError("a committed change is still transferring; wait for it to finish")
    current = list(state.ring.nodes())
    for node in joins:
        if node not in state.members:
            raise PlanError(f"unknown node {node!r}")
    for node in [*leaves, *removes, *swaps]:
        if node not in current:
            raise PlanError(f"node {node!r} owns nothing and cannot leave or be removed")
    taken_out = [*leaves, *removes, *swaps]
    if len(set(taken_out)) != len(taken_out):
        raise PlanError("a node can be staged to leave, be removed or be replaced only once")
    for old, new in swaps.items():
        if new not in state.members:
            raise PlanError(f"unknown node {new!r}: start it and stage its join first")
        if new in current or new in joins or list(swaps.values()).count(new) > 1:
            raise PlanError(f"node {new!r} cannot replace {old!r}: it already has a place")
    base = state.ring
    if swaps:  # the replacement takes exactly the old node's partitions
        base = Ring(base.version, tuple(swaps.get(o, o) for o in base.owners))
    kept = [swaps.get(x, x) for x in current if x not in leaves and x not in removes]
    nodes = kept + [x for x in joins if x not in current]
    if not nodes:
        raise PlanError("a plan cannot remove every node")
    ring = base if sorted(nodes) == list(base.nodes()) else claim(base, nodes)
    gone = frozenset(removes) | frozenset(swaps)
    for p in range(state.partitions):
        before = state.ring.preference_list(p, state.n)
        if all(node in gone for node in before):
            raise PlanError(
                f"partition {p} would lose every replica ({', '.join(before)}): "
                "its data exists nowhere else"
            )
    return Plan(
        tuple(joins),
        tuple(leaves),
        ring,
        tuple(plan_transfers(state.ring, ring, state.n, gone)),
        tuple(removes),
        tuple(swaps.items()),
    )


def commit(state: ClusterState, staged: Plan, claimant: str) -> ClusterState:
    """The committed state: members updated, transfers begin (or none are needed)."""
    new = state
    for node in [*staged.joins, *(n for _, n in staged.replaces)]:
        new = new.with_member(replace(new.members[node], status="valid"))
    for node in [*staged.leaves, *staged.removed]:
        new = new.with_member(replace(new.members[node], status="leaving"))
    new = replace(
        new,
        ring=state.ring.with_version(state.version + 1),
        next=staged.ring,
        done=frozenset(),
        epoch=state.epoch + 1,
        claimant=claimant,
        removed=staged.removed,
    )
    return new.settle()


def members_in(state: ClusterState, statuses: Iterable[str]) -> list[Member]:
    wanted = set(statuses)
    return sorted((m for m in state.members.values() if m.status in wanted), key=lambda m: m.node)
