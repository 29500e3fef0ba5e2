"""Keys moved when a cluster grows 3 -> 4 and shrinks 4 -> 3, versus the ideal.

A real cluster (N=3, Q=256) holds K keys. A 4th node is joined (staged join + commit),
then it leaves again. Moved = keys streamed by partition transfers (sum of every node's
`transfer_keys_sent`). Ideal for S -> S+1: the new node takes 1/(S+1) of the ownership,
i.e. K/(S+1) keys as primary; with N replicas each key has N copies, so the replica
copies it must receive are N*K/(S+1). Target: moved <= 1.1 x ideal.

    python bench/scaling.py [--keys 20000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import Cluster, NodeProc, cluster, wait_for

from bench.antientropy import load


def sent(c: Cluster, nodes: list[NodeProc]) -> int:
    return sum(int(c.status(n)["transfer_keys_sent"]) for n in nodes if n.alive())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keys", type=int)
    args = ap.parse_args()
    k = args.keys or (5_000 if args.quick else 30_000)
    n_rep = 3
    rows = []
    with tempfile.TemporaryDirectory() as tmp, cluster(Path(tmp)) as c:
        nodes = c.form(3)
        load(c, nodes[0], [f"key{i}" for i in range(k)])
        before = sent(c, nodes)
        n3 = c.add_node(seed=nodes[0])
        wait_for(lambda: any(m["node"] == "n3" for m in c.status(nodes[0])["members"]), 30)
        c.admin(nodes[0], "POST", "join", {"address": n3.address})
        t = time.monotonic()
        c.admin(nodes[0], "POST", "commit")
        c.wait_converged([*nodes, n3], timeout=600)
        up_s = time.monotonic() - t
        moved_up = sent(c, [*nodes, n3]) - before
        ideal_up = n_rep * k / 4
        rows.append(
            {
                "change": "3->4",
                "moved": moved_up,
                "ideal": ideal_up,
                "ratio": round(moved_up / ideal_up, 3),
                "seconds": round(up_s, 2),
            }
        )
        before = sent(c, [*nodes, n3])
        c.admin(nodes[0], "POST", "leave", {"node": "n3"})
        t = time.monotonic()
        c.admin(nodes[0], "POST", "commit")
        wait_for(lambda: c.status(n3)["state"] == "left", 600)
        c.wait_converged(nodes, timeout=600)
        down_s = time.monotonic() - t
        moved_down = sent(c, [*nodes, n3]) - before
        ideal_down = n_rep * k / 4  # the leaving node's copies go back to the others
        rows.append(
            {
                "change": "4->3",
                "moved": moved_down,
                "ideal": ideal_down,
                "ratio": round(moved_down / ideal_down, 3),
                "seconds": round(down_s, 2),
            }
        )
    print(f"K = {k} keys, N = {n_rep}")
    print(f"{'change':>7} {'moved':>8} {'ideal':>8} {'ratio':>6} {'seconds':>8}")
    for r in rows:
        print(
            f"{r['change']:>7} {r['moved']:>8} {r['ideal']:>8.0f} {r['ratio']:>6} {r['seconds']:>8}"
        )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "scaling.json").write_text(json.dumps({"keys": k, "n": n_rep, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
