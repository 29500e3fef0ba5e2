"""Cluster identity with real processes: a node told its cluster never founds another,
a wiped node 0 rejoins its cluster instead of forking it, and gossip or saved state of
another cluster is refused (node.py, gossiper.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.harness import Cluster, NodeProc, Writers, unreadable, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


def cluster_ids(c: Cluster, nodes: list[NodeProc]) -> set[str | None]:
    return {c.status(n)["cluster"] for n in nodes if n.alive()}


def wipe(node: NodeProc) -> None:
    shutil.rmtree(node.data_dir)


def with_cluster_id(node: NodeProc, cluster: str) -> None:
    node.args += ["--cluster-id", cluster]


def test_a_node_told_its_cluster_never_founds_one(procs: Cluster) -> None:
    node = procs.add_node("--cluster-id", "c0ffee")
    assert procs.request(node, "GET", "/readyz")[0] == 503
    status = procs.status(node)
    assert status["cluster"] is None and status["members"] == []
    code, _, body = procs.put(node, "k", b"v", query="?w=1")
    assert code == 503, body
    assert "has not joined a cluster" in body.decode()


@pytest.mark.parametrize("index", [0, 2], ids=["node0-the-seed", "node2"])
def test_a_wiped_node_rejoins_its_cluster_and_loses_no_acknowledged_write(
    procs: Cluster, index: int
) -> None:
    nodes = procs.form(3)
    wiped = nodes[index]
    (cluster,) = cluster_ids(procs, nodes)
    assert cluster
    before = [f"before-{i}" for i in range(300)]
    for key in before:
        assert procs.put(nodes[1], key, key.encode(), query="?w=all")[0] == 204
    # the node (node 0 is the founder and everybody's seed) loses its volume and comes
    # back with the cluster id the operator (or `dynamoctl local`) gives it, while
    # writers keep writing through every node
    with Writers(procs, nodes, "during-") as writers:
        procs.kill(wiped)
        wipe(wiped)
        with_cluster_id(wiped, cluster)
        procs.start(wiped)
        seen: set[str | None] = set()

        def rejoined() -> bool:
            seen.update(cluster_ids(procs, nodes))
            return procs.request(wiped, "GET", "/readyz")[0] == 200

        wait_for(rejoined, 60, interval=0.1, what="the wiped node to learn its ring")
        wait_for(lambda: len(writers.acked) > 200, 30, what="writes acknowledged meanwhile")
    # None: the wiped node before it learned the ring; never a second cluster id
    assert seen <= {cluster, None} and cluster in seen, seen
    assert cluster_ids(procs, nodes) == {cluster}
    procs.wait_converged(nodes)
    assert procs.status(wiped)["foreign_cluster"] is None
    # the node is a member again, with the partitions it had; anti-entropy refills it
    job = procs.anti_entropy(wiped)
    assert job["state"] == "done", job
    reader = nodes[(index + 1) % 3]
    lost = unreadable(procs, reader, before + writers.acked)
    assert not lost, f"{len(lost)} of {len(before) + len(writers.acked)} lost: {lost[:5]}"
    # and the wiped node itself answers every key (its own replica, refilled)
    lost = unreadable(procs, wiped, before + writers.acked, r="1")
    assert not lost, f"{len(lost)} unreadable through the wiped node: {lost[:5]}"


def test_saved_state_of_another_cluster_is_refused_at_start(procs: Cluster) -> None:
    node = procs.add_node()
    (cluster,) = cluster_ids(procs, [node])
    procs.stop(node)
    with_cluster_id(node, "not-" + str(cluster))
    procs.start(node, wait=False)
    assert node.proc is not None
    assert node.proc.wait(20) != 0
    assert f"belongs to cluster {cluster!r}" in node.log()


def test_gossip_of_another_cluster_is_refused_by_a_node_that_holds_data(
    procs: Cluster,
) -> None:
    a = procs.add_node()
    b = procs.add_node()  # no seed: founds a cluster of its own
    (cluster_a,) = cluster_ids(procs, [a])
    (cluster_b,) = cluster_ids(procs, [b])
    assert cluster_a != cluster_b
    assert procs.put(b, "precious", b"b's data", query="?w=1")[0] == 204
    # b is now pointed at a (a typo in a seed list, a reused address): it introduces
    # itself, a lists it, and b must not give up its own cluster and data for a's
    procs.stop(b)
    b.args += ["--seed", a.address]
    procs.start(b)
    wait_for(lambda: procs.status(b)["foreign_cluster"] == cluster_a, 20, what="b refusing a")
    assert procs.status(b)["cluster"] == cluster_b
    assert procs.get(b, "precious", "?r=1")[2] == b"b's data"
    metrics = procs.request(b, "GET", "/metrics")[2].decode()
    refused = [
        float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("dynamo_gossip_foreign_refused_total ")
    ]
    assert refused and refused[0] >= 1, refused
    assert "refused gossip from cluster" in b.log()


def test_an_empty_node_started_alone_can_still_be_joined(procs: Cluster, tmp_path: Path) -> None:
    a = procs.add_node()
    b = procs.add_node()  # founds its own cluster, holds nothing
    (cluster_a,) = cluster_ids(procs, [a])
    procs.admin(a, "POST", "join", {"address": b.address})
    procs.admin(a, "POST", "commit")
    wait_for(lambda: procs.status(b)["cluster"] == cluster_a, 20, what="b adopting a's cluster")
    procs.wait_converged([a, b])
    assert procs.status(b)["foreign_cluster"] is None


def test_a_node_back_with_an_empty_directory_is_a_replacement_until_refilled(
    procs: Cluster,
) -> None:
    nodes = procs.form(3, "--anti-entropy-interval", "0", "--no-hinted-handoff")
    n0, n1, n2 = nodes
    keys = [f"key-{i}" for i in range(300)]
    for key in keys:
        assert procs.put(n0, key, key.encode(), query="?w=all")[0] == 204
    # written at W=2 while n0 was away: on n1 and n2 only
    procs.stop(n0)
    only_n1_n2 = [f"late-{i}" for i in range(30)]
    for key in only_n1_n2:
        assert procs.put(n1, key, key.encode(), query="?w=2")[0] == 204
    procs.start(n0)
    procs.wait_converged(nodes)
    # n2 loses its volume while n1 is unreachable: the late keys live on n1 alone
    procs.kill(n2)
    wipe(n2)
    procs.pause(n1)
    try:
        procs.start(n2)

        def replacing() -> bool:
            members = {m["node"]: m["state"] for m in procs.status(n0)["members"]}
            return members.get(n2.node_id) == "replacing"

        wait_for(replacing, 20, what="n0 to see n2 as a replacement")
        # it refills what it can and waits for n1 (down) for the partitions n1 holds
        wait_for(
            lambda: n1.node_id in procs.status(n2)["refill"]["waiting_for"],
            20,
            what="n2 to wait for n1",
        )
        progress = procs.status(n2)["refill"]
        assert progress["partitions_done"] < progress["partitions_total"], progress
        # n2 does not count: a read at R=2 cannot be met by n0 (which never had the late
        # keys) and an empty n2, so it fails, and is never answered "not found" as if
        # n2's emptiness were authoritative
        for key in only_n1_n2:
            code = procs.get(n0, key, "?r=2&timeout_ms=1000")[0]
            assert code == 503, (key, code)
    finally:
        procs.resume(n1)
    # once every replica of its partitions answers, n2 refills and rejoins the quorums
    wait_for(lambda: procs.status(n2)["refill"] is None, 60, what="n2 refilled")
    procs.wait_converged(nodes)
    assert {m["state"] for m in procs.status(n0)["members"]} == {"up"}
    assert "refilled" in n2.log()
    # every key, the late ones included, is readable again
    assert not unreadable(procs, n2, keys + only_n1_n2)
    # a restart does not make it a replacement again (its directory is not new)
    procs.restart(n2)
    procs.wait_converged(nodes)
    assert procs.status(n2)["refill"] is None
