"""One full anti-entropy pass must leave every replica identical (about 5 s).

Regression test: a pass used to exchange each partition with its other replicas one
after the other (n0<->n1, then n0<->n2), so data only n2 had reached n0 but never n1.
A pass now runs a second round whenever the first one repaired anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fault.checker import read_replicas, replica_sets, visible
from tests.fault.cluster import fault_cluster
from tests.fault.scenarios import NODE_FLAGS, form

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(90)]


def test_one_full_pass_makes_all_three_replicas_identical(tmp_path: Path) -> None:
    with fault_cluster(tmp_path, 3, netns=False) as c:
        form(c, 3, *NODE_FLAGS, "--no-hinted-handoff")
        n0, n1, n2 = c.nodes
        # a version only n2 holds: written with w=1 while the two others are down (and
        # no hints); SIGSTOP would not do, the paused nodes would read it from their
        # sockets on SIGCONT
        c.kill(n0)
        c.kill(n1)
        status, _, body = c.put(n2, "only-on-n2", b"v", query="?w=1&timeout_ms=1000")
        assert status == 204, body
        c.start(n0)
        c.start(n1)
        c.wait_converged(c.nodes)
        job = c.anti_entropy(n0)
        assert job["state"] == "done", job
        held = read_replicas(c, replica_sets(c, ["only-on-n2"]))["only-on-n2"]
        assert {node: visible(raw) for node, raw in held.items()} == {
            "n0": (b"v",),
            "n1": (b"v",),
            "n2": (b"v",),
        }
