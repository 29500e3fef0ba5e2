"""Staged membership changes (the claimant role, like `riak admin cluster plan/commit`).

Joins (by address of a running node), leaves (by node id), force-removes (a node gone
for good, by id) and replacements (a gone node by a running one) are staged on the node
that receives the admin calls; `plan` shows the ring they lead to and the transfers it
implies; `commit` turns them into a new cluster state (membership.commit) and pushes
it to every member at once. A commit is refused while an earlier one still transfers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from dynamo_node.cluster.view import ClusterView
from dynamo_node.core.config import NodeConfig
from dynamo_node.core.errors import Conflict, NotFound, TooFewMembers
from dynamo_node.core.membership import ClusterState, Member, Plan, PlanError, commit, plan
from dynamo_node.net.discovery import fetch_status, split_hostport

LOOKUP_TIMEOUT_S = 5.0


class Claimant:
    def __init__(self, view: ClusterView, config: NodeConfig, announce: Callable[[], None]) -> None:
        self.view = view
        self.config = config
        #: send the new state to the members soon (never blocking on a down one)
        self.announce = announce
        self.joins: list[str] = []
        self.leaves: list[str] = []
        self.removes: list[str] = []
        #: old node id -> the node id that takes its place
        self.replaces: dict[str, str] = {}

    async def stage_join(self, address: str) -> str:
        member = await self._member_at(address)
        state = self.view.require_state()
        if member.node in state.ring_nodes() and member.node not in self.leaves:
            raise Conflict(f"node {member.node} at {address} is already in the ring")
        if member.node in self.replaces.values():
            raise Conflict(f"node {member.node} is staged to replace another node")
        if member.node in self.leaves:
            self.leaves.remove(member.node)
        elif member.node not in self.joins:
            self.joins.append(member.node)
        return member.node

    async def _member_at(self, address: str) -> Member:
        view = self.view
        state = view.require_state()
        split_hostport(address)
        member = next((m for m in state.members.values() if m.address == address), None)
        if member is None:
            member = await self._lookup(address)
            view.set_state(state.with_member(member))
        return member

    async def _lookup(self, address: str) -> Member:
        try:
            info = await fetch_status(address, self.config, LOOKUP_TIMEOUT_S)
            return Member(str(info["node"]), address, str(info["peer_address"]), "joining")
        except Exception as exc:
            raise NotFound(f"no dynamo node reachable at {address}: {exc}") from None

    def stage_leave(self, node_id: str, force: bool = False) -> str:
        """Stage the leave of a ring member; a member that owns nothing (known by
        gossip, never joined) is forgotten at once. Returns "staged" or "forgotten".
        A leave that would leave fewer ring members than N is refused (TooFewMembers)
        unless `force`."""
        view = self.view
        state = view.require_state()
        if node_id not in state.members:
            raise NotFound(f"unknown node {node_id!r}")
        if node_id in self.joins:
            self.joins.remove(node_id)
            return "staged"
        if node_id not in state.ring_nodes():
            self._unstage(node_id)
            member = state.members[node_id]
            if member.status != "left":
                view.set_state(state.with_member(replace(member, status="left")))
                self.announce()
            return "forgotten"
        self._check_members(node_id, "the leave of", force)
        self._unstage(node_id)
        if node_id not in self.leaves:
            self.leaves.append(node_id)
        return "staged"

    def stage_remove(self, node_id: str, force: bool = False) -> str:
        """Stage taking a ring member out *without its data* (it is gone for good): each
        partition it replicated is rebuilt on its new replica from the surviving ones.
        Refused (TooFewMembers) as a leave is, unless `force`."""
        self._check_gone(node_id, "force-remove")
        self._check_members(node_id, "the removal of", force)
        self._unstage(node_id)
        self.removes.append(node_id)
        return node_id

    async def stage_replace(self, old: str, new: str) -> str:
        """Stage `new` (a running node's HOST:PORT, or the id of a member that owns
        nothing) taking exactly the partitions of ring member `old`, which is gone for
        good: they are rebuilt on `new` from the surviving replicas. Returns new's id."""
        self._check_gone(old, "replace")
        state = self.view.require_state()
        if ":" in new:
            member = await self._member_at(new)
        elif new in state.members:
            member = state.members[new]
        else:
            raise NotFound(f"unknown node {new!r}: give a running node's HOST:PORT")
        if member.node in self.view.require_state().ring_nodes():
            raise Conflict(f"node {member.node} is already in the ring")
        if member.node in self.joins or member.node in self.replaces.values():
            raise Conflict(f"node {member.node} is already staged to join or replace")
        self._unstage(old)
        self.replaces[old] = member.node
        return member.node

    def _check_gone(self, node_id: str, verb: str) -> None:
        """`node_id` may be staged as gone for good: a ring member other than this node."""
        state = self.view.require_state()
        if node_id not in state.members:
            raise NotFound(f"unknown node {node_id!r}")
        if node_id not in state.ring_nodes():
            raise Conflict(f"node {node_id!r} owns nothing: nothing to {verb}")
        if node_id == self.view.node_id:
            raise Conflict(f"a node cannot {verb} itself: ask another member")

    def members_after(self, taken_out: str) -> int:
        """Ring members once the staged changes and taking `taken_out` out are done."""
        state = self.view.require_state()
        current = list(state.ring.nodes())
        out = {*self.leaves, *self.removes, taken_out}
        swaps = {old: new for old, new in self.replaces.items() if old != taken_out}
        after = {swaps.get(x, x) for x in current if x not in out}
        after |= {x for x in self.joins if x not in current}
        return len(after)

    def _check_members(self, node_id: str, what: str, force: bool) -> None:
        """Refuse taking `node_id` out when fewer than N ring members would be left
        (counting what is staged already), unless forced."""
        n = self.view.require_state().n
        after = self.members_after(node_id)
        if after >= n or force:
            return
        raise TooFewMembers(
            f"{what} {node_id} would leave {after} ring member(s), fewer than N={n}: every "
            f"partition would have only {after} replica(s); writes with w=all and reads "
            'with r=all fail until a node joins. Stage it with "force": true to do it '
            "anyway (dynamoctl --force)"
        )

    def _unstage(self, node_id: str) -> None:
        """Forget any earlier leave, removal or replacement staged for `node_id`: the
        latest command wins."""
        if node_id in self.leaves:
            self.leaves.remove(node_id)
        if node_id in self.removes:
            self.removes.remove(node_id)
        self.replaces.pop(node_id, None)

    def staged(self) -> dict[str, object]:
        return {
            "joins": list(self.joins),
            "leaves": list(self.leaves),
            "removes": list(self.removes),
            "replaces": [{"old": old, "new": new} for old, new in self.replaces.items()],
        }

    def current_plan(self) -> Plan | None:
        if not (self.joins or self.leaves or self.removes or self.replaces):
            return None
        try:
            return plan(
                self.view.require_state(), self.joins, self.leaves, self.removes, self.replaces
            )
        except PlanError as exc:
            raise Conflict(str(exc)) from None

    async def commit(self) -> ClusterState:
        staged = self.current_plan()
        if staged is None:
            raise Conflict("nothing is staged: stage a join, leave, force-remove or replace first")
        new = commit(self.view.require_state(), staged, self.view.node_id)
        self.view.set_state(new)
        self.clear()
        self.announce()  # never block the admin call on a down member
        return new

    def clear(self) -> None:
        self.joins.clear()
        self.leaves.clear()
        self.removes.clear()
        self.replaces.clear()
