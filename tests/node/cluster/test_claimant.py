"""The claimant's staging rules on in-process nodes: a leave or force-remove that would
leave fewer ring members than N is refused unless forced (counting what is staged)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from dynamo_node.core.errors import Conflict, TooFewMembers
from dynamo_node.core.membership import Member
from dynamo_node.node import Node
from tests.node.cluster.test_coordinator import Net, make_cluster

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def four() -> AsyncIterator[tuple[Net, list[Node]]]:
    net, nodes = await make_cluster(4)
    yield net, nodes
    for node in nodes:
        await node.stop()


@pytest.fixture
async def three() -> AsyncIterator[tuple[Net, list[Node]]]:
    net, nodes = await make_cluster(3)
    yield net, nodes
    for node in nodes:
        await node.stop()


async def test_a_leave_below_n_is_refused_unless_forced(three: tuple[Net, list[Node]]) -> None:
    _, nodes = three
    claimant = nodes[0].claimant
    with pytest.raises(TooFewMembers) as caught:
        claimant.stage_leave("m2")
    err = caught.value
    assert isinstance(err, Conflict) and err.status == 409 and err.code == "too_few_members"
    assert "every partition would have only 2 replica(s)" in err.message
    assert "writes with w=all and reads with r=all fail until a node joins" in err.message
    assert claimant.staged()["leaves"] == []
    assert claimant.stage_leave("m2", force=True) == "staged"
    assert claimant.staged()["leaves"] == ["m2"]
    plan = claimant.current_plan()
    assert plan is not None and plan.to_dict()["members_after"] == 2


async def test_a_force_remove_below_n_is_refused_unless_forced(
    three: tuple[Net, list[Node]],
) -> None:
    _, nodes = three
    claimant = nodes[0].claimant
    with pytest.raises(TooFewMembers):
        claimant.stage_remove("m1")
    assert claimant.staged()["removes"] == []
    claimant.stage_remove("m1", force=True)
    assert claimant.staged()["removes"] == ["m1"]


async def test_staged_leaves_and_removes_count(four: tuple[Net, list[Node]]) -> None:
    _, nodes = four
    claimant = nodes[0].claimant
    assert claimant.stage_leave("m3") == "staged"  # 4 -> 3: fine with N=3
    with pytest.raises(TooFewMembers):
        claimant.stage_leave("m2")  # 3 -> 2, counting the staged leave
    with pytest.raises(TooFewMembers):
        claimant.stage_remove("m1")
    # staging the same leave again does not count it twice
    assert claimant.stage_leave("m3") == "staged"
    assert claimant.staged()["leaves"] == ["m3"]
    # a refused change leaves what was staged as it was
    claimant.stage_remove("m3")  # the latest command for m3 wins: a removal now
    with pytest.raises(TooFewMembers):
        claimant.stage_leave("m2")
    assert claimant.staged() == {"joins": [], "leaves": [], "removes": ["m3"], "replaces": []}


async def test_staged_joins_count(three: tuple[Net, list[Node]]) -> None:
    """A node joining in the same plan makes up for one leaving (a swap)."""
    _, nodes = three
    node = nodes[0]
    newcomer = Member("m9", "127.0.0.1:7999", "127.0.0.1:17999", "joining")
    node.view.set_state(node.require_state().with_member(newcomer))
    claimant = node.claimant
    claimant.joins.append("m9")  # what stage_join does for a running node
    assert claimant.members_after("m2") == 3
    assert claimant.stage_leave("m2") == "staged"
    with pytest.raises(TooFewMembers):
        claimant.stage_leave("m1")
