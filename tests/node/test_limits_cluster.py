"""Real dynamo-node processes (one 3-node cluster for the module, small limits from a
`--config` file): contexts bound to their key, strict query parameters, the sibling and
object limits of client writes (replication is never refused), leaves below N, and the
effective N/R/W of a cluster smaller than N."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from tests.harness import Cluster, NodeProc, cluster, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

SIBLINGS_MAX = 40
SIBLINGS_WARN = 10
OBJECT_MAX = 64 * 1024


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, list[NodeProc]]]:
    root = tmp_path_factory.mktemp("limits")
    config = root / "limits.json"
    config.write_text(
        json.dumps(
            {
                "siblings_max": SIBLINGS_MAX,
                "siblings_warn": SIBLINGS_WARN,
                "object_max_bytes": OBJECT_MAX,
            }
        )
    )
    with cluster(root) as c:
        nodes = c.form(3, "--config", str(config), "--partitions", "16")
        yield c, nodes


def error(resp: tuple[int, dict[str, str], bytes]) -> tuple[int, dict[str, object]]:
    status, _, body = resp
    return status, json.loads(body)["error"]


def siblings(resp: tuple[int, dict[str, str], bytes]) -> list[bytes]:
    status, _, body = resp
    if status == 200:
        return [body]
    assert status == 300, (status, body[:300])
    return sorted(base64.b64decode(s["value_b64"]) for s in json.loads(body)["siblings"])


# --- 1: a context is bound to its key -----------------------------------------------------
def test_a_context_from_another_key_does_not_overwrite(
    three: tuple[Cluster, list[NodeProc]],
) -> None:
    c, (n0, n1, _) = three
    assert c.put(n0, "victim", b"precious")[0] == 204
    status, headers, _ = c.put(n1, "other", b"x")
    assert status == 204
    foreign = headers["X-Dynamo-Context"]
    status, err = error(c.put(n0, "victim", b"oops", context=foreign))
    assert (status, err["code"]) == (400, "invalid_context")
    assert "issued for another key" in str(err["message"])
    assert error(c.delete(n1, "victim", context=foreign))[0] == 400
    for node in three[1]:
        assert siblings(c.get(node, "victim", "?r=all")) == [b"precious"]
    # the key's own context still supersedes
    own = c.get(n0, "victim")[1]["X-Dynamo-Context"]
    assert c.put(n0, "victim", b"updated", context=own)[0] == 204
    assert siblings(c.get(n1, "victim", "?r=all")) == [b"updated"]


# --- 2: strict query parameters -----------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "query", "named"),
    [
        ("PUT", "?W=all", "'W'"),
        ("PUT", "?r=2", "'r'"),
        ("DELETE", "?r=2", "'r'"),
        ("GET", "?w=2", "'w'"),
        ("GET", "?r=1&r=2", "'r'"),
        ("PUT", "?w=1&w=all", "'w'"),
        ("GET", "?timeout=100", "'timeout'"),
    ],
)
def test_unknown_misplaced_or_repeated_parameters_are_refused(
    three: tuple[Cluster, list[NodeProc]], method: str, query: str, named: str
) -> None:
    c, (n0, _, _) = three
    body = b"v" if method == "PUT" else None
    status, err = error(c.request(n0, method, f"/v1/kv/strict{query}", body))
    assert (status, err["code"]) == (400, "invalid_parameter")
    assert named in str(err["message"])
    assert c.get(n0, "strict")[0] == 404  # nothing was written


def test_a_bad_timeout_is_an_invalid_parameter(three: tuple[Cluster, list[NodeProc]]) -> None:
    c, (n0, _, _) = three
    for query in ("?timeout_ms=abc", "?timeout_ms=0", "?timeout_ms=999999"):
        status, err = error(c.get(n0, "t", query))
        assert (status, err["code"]) == (400, "invalid_parameter"), query
    assert c.put(n0, "t", b"v", query="?w=all&timeout_ms=2000")[0] == 204
    assert c.get(n0, "t", "?r=all&timeout_ms=2000")[0] == 200


# --- 3: sibling and object limits ---------------------------------------------------------
def test_blind_puts_stop_at_siblings_max(three: tuple[Cluster, list[NodeProc]]) -> None:
    c, nodes = three
    n0 = nodes[0]
    codes = [c.put(n0, "hot", b"%d" % i, query="?w=all")[0] for i in range(150)]
    assert codes == [204] * SIBLINGS_MAX + [409] * (150 - SIBLINGS_MAX)
    status, err = error(c.put(n0, "hot", b"more"))
    assert (status, err["code"]) == (409, "too_many_siblings")
    assert "read the key" in str(err["message"]) and "context" in str(err["message"])
    expected = sorted(b"%d" % i for i in range(SIBLINGS_MAX))
    for node in nodes:  # exactly siblings_max on every replica: the refused writes nowhere
        assert siblings(c.get(node, "hot", "?r=all")) == expected
    metrics = c.request(n0, "GET", "/metrics")[2].decode()
    assert f"dynamo_siblings_refused_total {float(150 - SIBLINGS_MAX + 1)}" in metrics
    assert f"dynamo_siblings_warned_total {float(SIBLINGS_MAX - SIBLINGS_WARN)}" in metrics
    # reading and writing back with the context resolves them
    context = c.get(n0, "hot")[1]["X-Dynamo-Context"]
    assert c.put(nodes[1], "hot", b"resolved", context=context, query="?w=all")[0] == 204
    assert siblings(c.get(nodes[2], "hot", "?r=all")) == [b"resolved"]


def test_an_object_past_object_max_bytes_is_413(three: tuple[Cluster, list[NodeProc]]) -> None:
    c, (n0, n1, _) = three
    third = b"x" * (OBJECT_MAX // 3)
    assert c.put(n0, "heavy", third, query="?w=all")[0] == 204
    assert c.put(n0, "heavy", third, query="?w=all")[0] == 204
    status, err = error(c.put(n1, "heavy", third + b"more", query="?w=all"))
    assert (status, err["code"]) == (413, "object_too_large")
    assert len(siblings(c.get(n1, "heavy", "?r=all"))) == 2


def test_leave_and_force_remove_below_n_need_force(
    three: tuple[Cluster, list[NodeProc]],
) -> None:
    c, (n0, _, n2) = three
    for path in ("leave", "force-remove"):
        body = json.dumps({"node": n2.node_id}).encode()
        status, err = error(c.request(n0, "POST", f"/v1/admin/{path}", body))
        assert (status, err["code"]) == (409, "too_few_members"), path
        assert "writes with w=all and reads with r=all fail" in str(err["message"])
        assert c.admin(n0, "GET", "plan")["staged"] is False
        bad = json.dumps({"node": n2.node_id, "force": "yes"}).encode()
        assert error(c.request(n0, "POST", f"/v1/admin/{path}", bad))[0] == 400
        staged = c.admin(n0, "POST", path, {"node": n2.node_id, "force": True})
        assert staged["node"] == n2.node_id
        assert c.admin(n0, "GET", "plan")["plan"]["members_after"] == 2
        c.admin(n0, "DELETE", "plan")  # not committed: the cluster stays at 3
    assert c.status(n0)["effective"] == {"n": 3, "r": 2, "w": 2}


def test_a_one_node_cluster_shows_its_effective_replication(
    three: tuple[Cluster, list[NodeProc]],
) -> None:
    c, _ = three
    alone = c.add_node()  # no seed: a cluster of its own
    status = c.status(alone)
    assert (status["n"], status["r"], status["w"]) == (3, 2, 2)
    assert status["effective"] == {"n": 1, "r": 1, "w": 1}
    c.stop(alone)


def test_replicated_writes_past_the_limit_are_not_refused(
    three: tuple[Cluster, list[NodeProc]],
) -> None:
    """Two sides of a partition each take a key to siblings_max; once healed, hints and
    read repair merge them into 2 x siblings_max siblings on every replica (what the
    coordinators accepted is never refused), and only client writes that add one more
    are. Also: a write that fails its quorum after reaching a replica says so."""
    c, nodes = three
    n0, n1, n2 = nodes
    c.kill(n1)
    c.kill(n2)
    for i in range(SIBLINGS_MAX):
        assert c.put(n0, "split", b"a%d" % i, query="?w=1")[0] == 204
    status, err = error(c.put(n0, "unsure", b"v", query="?w=2&timeout_ms=1000"))
    assert (status, err["code"]) == (503, "quorum_not_met")
    assert err["maybe_applied"] is True
    assert "may have been applied on some replicas" in str(err["message"])
    status, err = error(c.get(n0, "split", "?r=2&timeout_ms=1000"))
    assert status == 503 and "maybe_applied" not in err
    c.kill(n0)
    c.start(n1)
    c.start(n2)
    wait_for(
        lambda: all(
            {m["node"]: m["state"] for m in c.status(a)["members"]}[b.node_id] == "up"
            for a, b in ((n1, n2), (n2, n1))
        ),
        30,
        what="n1 and n2 see each other up",
    )
    for i in range(SIBLINGS_MAX):
        assert c.put(n1, "split", b"b%d" % i, query="?w=2&timeout_ms=3000")[0] == 204
    assert c.put(n1, "split", b"refused", query="?w=2&timeout_ms=3000")[0] == 409
    c.start(n0)
    c.wait_converged(nodes)
    wait_for(
        lambda: sum(c.status(n)["hints_pending"] for n in nodes) == 0, 60, what="hints delivered"
    )
    expected = sorted(
        [b"a%d" % i for i in range(SIBLINGS_MAX)] + [b"b%d" % i for i in range(SIBLINGS_MAX)]
    )
    for node in nodes:
        assert siblings(c.get(node, "split", "?r=all")) == expected
    for node in nodes:
        assert c.put(node, "split", b"one more", query="?w=all")[0] == 409
    context = c.get(n2, "split")[1]["X-Dynamo-Context"]
    assert c.put(n2, "split", b"healed", context=context, query="?w=all")[0] == 204
    assert siblings(c.get(n0, "split", "?r=all")) == [b"healed"]
