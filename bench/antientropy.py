"""Anti-entropy traffic and time versus the number of differing keys (issue: membership).

A real 3-node cluster (N=3, hinted handoff off, periodic anti-entropy off) holds n keys.
For each d, one replica is paused, d keys are written that it never sees, it is resumed,
and one full anti-entropy pass (POST /v1/admin/anti-entropy) repairs it. Reported: the
bytes the pass exchanged (its job's bytes_exchanged, minus a d=0 pass), the time it took,
and the ratio to a full transfer (every object of the data set once). Target: <= 2% of a
full transfer at d = 100.

    python bench/antientropy.py            # n = 100k
    python bench/antientropy.py --quick    # n = 10k
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import Cluster, NodeProc, cluster, wait_for

VALUE = b"v" * 100


def load(c: Cluster, node: NodeProc, keys: list[str]) -> None:
    def put(key: str) -> None:
        assert c.put(node, key, VALUE, query="?w=3")[0] == 204

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, keys))


def ae_pass(c: Cluster, node: NodeProc) -> dict[str, object]:
    return c.anti_entropy(node)


def diverge(c: Cluster, nodes: list[NodeProc], d: int, tag: str) -> None:
    n0, _, n2 = nodes
    c.pause(n2)
    try:
        wait_for(
            lambda: (
                next(m["state"] for m in c.status(n0)["members"] if m["node"] == "n2") == "down"
            ),
            15,
        )
        for i in range(d):
            assert c.put(n0, f"{tag}-{i}", VALUE, query="?w=2")[0] == 204
    finally:
        c.resume(n2)
    c.wait_converged(nodes)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keys", type=int)
    args = ap.parse_args()
    n = args.keys or (10_000 if args.quick else 100_000)
    results: dict[str, object] = {"keys": n, "rows": []}
    with tempfile.TemporaryDirectory() as tmp, cluster(Path(tmp)) as c:
        nodes = c.form(3, "--no-hinted-handoff", "--anti-entropy-interval", "0")
        t = time.monotonic()
        load(c, nodes[0], [f"key{i}" for i in range(n)])
        print(f"loaded {n} keys in {time.monotonic() - t:.1f}s", flush=True)
        ae_pass(c, nodes[0])  # builds the trees
        base = ae_pass(c, nodes[0])
        base_bytes = int(base["bytes_exchanged"])  # type: ignore[call-overload]
        # one object on the wire: key (~10 B) + msgpack envelope + clock + 100 B value
        full = n * (len(VALUE) + 60)
        rows = []
        for d in (0, 10, 100, 1000):
            if d:
                diverge(c, nodes, d, f"d{d}")
            t = time.monotonic()
            job = ae_pass(c, nodes[0])
            elapsed = time.monotonic() - t
            sent = int(job["bytes_exchanged"]) - (base_bytes if d else 0)  # type: ignore[call-overload]
            row = {
                "d": d,
                "keys_repaired": job["keys_repaired"],
                "bytes": int(job["bytes_exchanged"]),  # type: ignore[call-overload]
                "bytes_beyond_d0": sent if d else 0,
                "seconds": round(elapsed, 3),
                "pct_of_full_transfer": round(100 * int(job["bytes_exchanged"]) / full, 3),  # type: ignore[call-overload]
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        results["rows"] = rows
        results["full_transfer_bytes"] = full
    print(f"\n{'d':>6} {'repaired':>9} {'bytes':>10} {'% of full':>10} {'seconds':>8}")
    for row in rows:
        print(
            f"{row['d']:>6} {row['keys_repaired']:>9} {row['bytes']:>10} "
            f"{row['pct_of_full_transfer']:>9}% {row['seconds']:>8}"
        )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "antientropy.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
