"""Staged membership changes (the claimant role, like `riak admin cluster plan/commit`).

Joins (by address of a running node) and leaves (by node id) are staged on the node
that receives the admin calls; `plan` shows the ring they lead to and the transfers it
implies; `commit` turns them into a new cluster state (membership.commit) and pushes
it to every member at once. A commit is refused while an earlier one still transfers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from .discovery import fetch_status, split_hostport
from .errors import Conflict, NotFound
from .membership import ClusterState, Member, Plan, PlanError, commit, plan

if TYPE_CHECKING:
    from .node import Node

LOOKUP_TIMEOUT_S = 5.0


class Claimant:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.joins: list[str] = []
        self.leaves: list[str] = []

    async def stage_join(self, address: str) -> str:
        node = self.node
        state = node.require_state()
        split_hostport(address)
        member = next((m for m in state.members.values() if m.address == address), None)
        if member is None:
            member = await self._lookup(address)
            node.set_state(state.with_member(member))
            state = node.require_state()
        if member.node in state.ring_nodes() and member.node not in self.leaves:
            raise Conflict(f"node {member.node} at {address} is already in the ring")
        if member.node in self.leaves:
            self.leaves.remove(member.node)
        elif member.node not in self.joins:
            self.joins.append(member.node)
        return member.node

    async def _lookup(self, address: str) -> Member:
        try:
            info = await fetch_status(address, self.node.config, LOOKUP_TIMEOUT_S)
            return Member(str(info["node"]), address, str(info["peer_address"]), "joining")
        except Exception as exc:
            raise NotFound(f"no dynamo node reachable at {address}: {exc}") from None

    def stage_leave(self, node_id: str) -> str:
        """Stage the leave of a ring member; a member that owns nothing (known by
        gossip, never joined) is forgotten at once. Returns "staged" or "forgotten"."""
        node = self.node
        state = node.require_state()
        if node_id not in state.members:
            raise NotFound(f"unknown node {node_id!r}")
        if node_id in self.joins:
            self.joins.remove(node_id)
            return "staged"
        if node_id not in state.ring_nodes():
            member = state.members[node_id]
            if member.status != "left":
                node.set_state(state.with_member(replace(member, status="left")))
                node.gossiper.push_soon()
            return "forgotten"
        if node_id not in self.leaves:
            self.leaves.append(node_id)
        return "staged"

    def current_plan(self) -> Plan | None:
        if not self.joins and not self.leaves:
            return None
        try:
            return plan(self.node.require_state(), self.joins, self.leaves)
        except PlanError as exc:
            raise Conflict(str(exc)) from None

    async def commit(self) -> ClusterState:
        staged = self.current_plan()
        if staged is None:
            raise Conflict("nothing is staged: stage a join or leave first")
        new = commit(self.node.require_state(), staged, self.node.node_id)
        self.node.set_state(new)
        self.clear()
        self.node.gossiper.push_soon()  # never block the admin call on a down member
        return new

    def clear(self) -> None:
        self.joins.clear()
        self.leaves.clear()
