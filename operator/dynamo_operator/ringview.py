"""The ring as the answering nodes report it (pure): who is a member, who is leaving,
who is down, which node can coordinate a change, and whether the ring has settled.

Read conservatively: a node counts as a member if *any* report says so (its own state,
a peer's member list, a pending transfer), so the operator never removes a pod some node
still counts on, and never changes membership while any report says the ring is moving.
"""

from __future__ import annotations

from dataclasses import dataclass

from .observed import IN_RING_STATES, LEAVING, REPLACING, UP, NodeView, Observed


@dataclass(frozen=True, slots=True)
class RingView:
    """The ring as one observation of the answering nodes shows it."""

    coordinator: NodeView | None  # lowest-ordinal node that is an "up" ring member
    members: frozenset[str]  # committed members, leaving ones included
    leaving: frozenset[str]
    down: frozenset[str]  # members the coordinator sees down, or that do not answer
    busy: str | None  # why the ring has not settled, or None
    #: members being refilled after they came back with an empty volume
    replacing: frozenset[str] = frozenset()

    @property
    def active(self) -> frozenset[str]:
        """Members that stay (not leaving)."""
        return self.members - self.leaving


def ring_of(observed: Observed) -> RingView:
    views = list(observed.nodes.values())
    candidates = (
        {p.name for p in observed.pods}
        | set(observed.nodes)
        | {m.name for v in views for m in v.members}
    )
    members = frozenset(name for name in candidates if _in_ring(observed, name))
    ups = [
        (ordinal, view)
        for name, view in observed.nodes.items()
        if view.state == UP and (ordinal := observed.ordinal(name)) is not None
    ]
    coordinator = min(ups, key=lambda item: item[0])[1] if ups else None
    leaving = frozenset(
        name
        for name in members
        if ((own := observed.nodes.get(name)) is not None and own.state == LEAVING)
        or any((m := v.member(name)) is not None and m.state == LEAVING for v in views)
    )
    down = set(name for name in members if name not in observed.nodes)
    if coordinator is not None:
        down |= {m.name for m in coordinator.members if m.name in members and m.state == "down"}
    replacing = frozenset(
        name
        for name in members
        if ((own := observed.nodes.get(name)) is not None and own.state == REPLACING)
        or any((m := v.member(name)) is not None and m.state == REPLACING for v in views)
    )
    busy = _busy(observed, members, leaving, frozenset(down))
    if busy is None and replacing:
        busy = (
            f"{_names(replacing, observed)} refilling after a lost volume: no membership "
            "change or restart until it has its data"
        )
    return RingView(
        coordinator=coordinator,
        members=members,
        leaving=leaving,
        down=frozenset(down),
        busy=busy,
        replacing=replacing,
    )


def _in_ring(observed: Observed, name: str) -> bool:
    own = observed.nodes.get(name)
    if own is not None and own.state in IN_RING_STATES:
        return True
    for view in observed.nodes.values():
        member = view.member(name)
        if member is not None and (member.state in IN_RING_STATES or member.partitions > 0):
            return True
        if name in view.transfer_nodes:
            return True
    return False


def _busy(
    observed: Observed,
    members: frozenset[str],
    leaving: frozenset[str],
    down: frozenset[str],
) -> str | None:
    views = observed.nodes.values()
    transfers = max((v.transfers for v in views), default=0)
    if transfers:
        return f"{transfers} partition transfer(s) of the committed ring change in progress"
    versions = {v.ring_version for v in views if v.name in members}
    if len(versions) > 1:
        return f"ring members disagree on the ring version ({sorted(versions)}): gossip converging"
    if leaving:
        return f"{_names(leaving, observed)} leaving the ring"
    if down:
        return f"{_names(down, observed)} down: no membership change until every member is up"
    return None


def _names(names: frozenset[str] | set[str], observed: Observed) -> str:
    ordered = sorted(names, key=lambda n: (observed.ordinal(n) is None, observed.ordinal(n), n))
    return ", ".join(ordered)


def highest_ordinal(observed: Observed, names: frozenset[str]) -> int:
    ordinals = [o for name in names if (o := observed.ordinal(name)) is not None]
    return max(ordinals, default=-1)
