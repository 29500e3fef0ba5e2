"""After the faults: converge the cluster, then check the history against what it holds.

`check()` expects every fault to be healed already. It then
1. waits until every node sees one ring with every member up;
2. runs full anti-entropy passes (POST /v1/admin/anti-entropy on one node: a full pass
   covers every partition; the next pass, if one is needed, on another node) until
   every replica of every key touched holds byte-for-byte the same object: each
   replica is read *alone* through the node-to-node protocol (the `get` call a
   coordinator makes, answered from that node's own storage and hints); the time from
   the start of the check to that point is the convergence time; then waits until no
   hint is pending on any node;
3. reads the carts and a sample of the other keys (every key when `api_sample` is 0)
   with r=all through the HTTP API, each from a random node: the answer (200, 300 or
   404) must hold exactly the values the replicas hold;
4. for a sample of keys, reads each node with r=1 while every other node is paused
   (SIGSTOP), so that only that node can answer;
5. checks every acknowledged blind write is there (the value, or among siblings) and
   every acknowledged cart item is in the union of the cart's siblings (an item merged
   into a causally later version is found there too);
6. counts answers that are not documented (docs/api.md).

`Verdict.ok` is the pass condition: nothing lost, nothing diverged, no undocumented
answer, the API agrees with the replicas, and the cluster converged in time.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from dynamo_node.client import ClientError, DynamoClient
from dynamo_node.core.codec import decode_object
from dynamo_node.core.ring import key_hash, partition_of
from dynamo_node.net.rpc_client import TcpTransport
from dynamo_node.store.storage import storage_key
from tests.fault.cluster import FaultCluster, peer_address
from tests.fault.workloads import FAIL, OK, UNDOCUMENTED, UNKNOWN, History
from tests.harness import wait_for

CHECKER_ID = "fault-checker"
RPC_CONCURRENCY = 64
RPC_TIMEOUT_S = 10.0
API_THREADS = 6
EXAMPLES = 10

#: the visible values of one key, sorted (tombstones are not visible)
Values = tuple[bytes, ...]


@dataclass
class Verdict:
    ops: int = 0
    writes: int = 0
    writes_acked: int = 0
    writes_failed: int = 0
    writes_unknown: int = 0
    cart_reads: int = 0
    cart_reads_failed: int = 0
    cart_reads_unknown: int = 0
    cart_writes: int = 0
    items_acked: int = 0
    items_failed: int = 0
    items_unknown: int = 0
    undocumented: int = 0
    undocumented_examples: list[str] = field(default_factory=list)
    #: acknowledged writes and cart items missing after convergence
    lost: int = 0
    lost_examples: list[str] = field(default_factory=list)
    #: unacknowledged (503 or no answer) writes that are present all the same
    unacked_present: int = 0
    #: reads (cart GETs during the run) that saw more than one sibling
    siblings_seen: int = 0
    max_siblings: int = 0
    keys: int = 0
    converge_s: float | None = None
    ae_passes: int = 0
    keys_repaired: int = 0
    ae_errors: list[str] = field(default_factory=list)
    #: seconds from the start of the check until no hint was pending on any node
    hints_drained_s: float | None = None
    hints_left: int = 0
    #: keys whose replicas still differed at the deadline
    diverged: int = 0
    diverged_examples: list[str] = field(default_factory=list)
    api_checked: int = 0
    api_mismatches: int = 0
    api_examples: list[str] = field(default_factory=list)
    alone_checked: int = 0
    alone_mismatches: int = 0
    alone_examples: list[str] = field(default_factory=list)
    final_carts: dict[str, dict[str, int]] = field(default_factory=dict)
    #: seconds spent in each step of the check
    phase_s: dict[str, float] = field(default_factory=dict)

    @property
    def acked(self) -> int:
        return self.writes_acked + self.items_acked

    @property
    def unknown(self) -> int:
        return self.writes_unknown + self.items_unknown + self.cart_reads_unknown

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.diverged == 0
            and self.undocumented == 0
            and self.api_mismatches == 0
            and self.alone_mismatches == 0
            and self.converge_s is not None
            and self.hints_left == 0
        )

    def problems(self) -> str:
        out = []
        for name in ("lost", "diverged", "undocumented", "api_mismatches", "alone_mismatches"):
            if getattr(self, name):
                examples = getattr(self, name.removesuffix("_mismatches") + "_examples", [])
                out.append(f"{name}={getattr(self, name)} e.g. {examples[:5]}")
        if self.converge_s is None:
            out.append("did not converge")
        if self.hints_left:
            out.append(f"{self.hints_left} hints still pending")
        return "; ".join(out) or "none"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "acked": self.acked, "unknown": self.unknown, "ok": self.ok}


# --- reading replicas alone ----------------------------------------------------------------
def replica_sets(cluster: FaultCluster, keys: Iterable[str]) -> dict[str, list[str]]:
    """The preference list (node ids) of each key, from the ring one node reports."""
    ring = cluster.ring(cluster.nodes[0])
    plists = {p["id"]: p["preference_list"] for p in ring["partitions"]}
    q = len(plists)
    return {k: list(plists[partition_of(key_hash(k.encode()), q)]) for k in keys}


def read_replicas(
    cluster: FaultCluster, placement: dict[str, list[str]]
) -> dict[str, dict[str, bytes | None]]:
    """Each replica's own encoded object of each key (None: it holds nothing)."""
    peers = {n.node_id: peer_address(n) for n in cluster.nodes}

    async def main() -> dict[str, dict[str, bytes | None]]:
        transport = TcpTransport(CHECKER_ID, peers.get, connect_timeout=2.0)
        gate = asyncio.Semaphore(RPC_CONCURRENCY)
        out: dict[str, dict[str, bytes | None]] = {k: {} for k in placement}

        async def one(key: str, node: str) -> None:
            async with gate:
                raw = await transport.call(node, "get", [storage_key(key)], RPC_TIMEOUT_S)
            out[key][node] = raw

        try:
            await asyncio.gather(*(one(k, n) for k, nodes in placement.items() for n in nodes))
        finally:
            await transport.close()
        return out

    with cluster.hub():
        return asyncio.run(main())


def visible(raw: bytes | None) -> Values:
    if raw is None:
        return ()
    return tuple(sorted(s.value for s in decode_object(raw).visible() if s.value is not None))


# --- the steps ------------------------------------------------------------------------------
def converge(
    cluster: FaultCluster, keys: list[str], verdict: Verdict, timeout: float
) -> dict[str, Values]:
    """Anti-entropy until the replicas agree; returns each key's visible values."""
    start = time.monotonic()
    deadline = start + timeout
    cluster.wait_converged(cluster.nodes, timeout)
    verdict.phase_s["ring"] = _lap(start)
    placement = replica_sets(cluster, keys)
    snapshot: dict[str, dict[str, bytes | None]] = {}
    diverged: list[str] = list(keys)
    while diverged and time.monotonic() < deadline:
        # one full pass covers every partition (the node delegates those it does not
        # hold); a pass that failed (a peer still looked down) is retried elsewhere
        node = cluster.nodes[verdict.ae_passes % len(cluster.nodes)]
        job = cluster.anti_entropy(node, max(1.0, deadline - time.monotonic()))
        verdict.keys_repaired += int(job.get("keys_repaired", 0))
        if job["state"] != "done":
            verdict.ae_errors.extend(f"{node.node_id}: {e}" for e in job.get("errors", []))
        verdict.ae_passes += 1
        verdict.phase_s[f"ae{verdict.ae_passes}"] = _lap(start)
        snapshot = read_replicas(cluster, placement)
        verdict.phase_s[f"read{verdict.ae_passes}"] = _lap(start)
        diverged = [
            k
            for k, by_node in snapshot.items()
            if len(set(by_node.values())) != 1 or len(by_node) != len(placement[k])
        ]
    if not diverged:
        verdict.converge_s = _lap(start)
    try:
        wait_for(
            lambda: cluster.hints_pending() == 0,
            max(1.0, deadline - time.monotonic()),
            interval=0.2,
            what="hints drained",
        )
        verdict.hints_drained_s = _lap(start)
    except TimeoutError:
        verdict.hints_left = cluster.hints_pending()
    verdict.diverged = len(diverged)
    verdict.diverged_examples = [
        f"{k}: {[(n, visible(v)[:3]) for n, v in snapshot.get(k, {}).items()]}"
        for k in diverged[:EXAMPLES]
    ]
    # with replicas still apart, judge by what the first replica holds (diverged fails anyway)
    return {k: visible(next(iter(by_node.values()), None)) for k, by_node in snapshot.items()}


def api_check(
    cluster: FaultCluster, expected: dict[str, Values], verdict: Verdict, sample: int = 0
) -> dict[str, Values]:
    """Read every key (or the carts and `sample` other keys) with r=all from random
    nodes; the answer must equal what the replicas hold."""
    local = threading.local()
    rng = random.Random(7)
    keys = sorted(expected)
    if sample and len(keys) > sample:
        carts = [k for k in keys if "/cart/" in k]
        keys = carts + rng.sample([k for k in keys if "/cart/" not in k], sample)
    verdict.api_checked = len(keys)
    nodes = {k: rng.choice(cluster.nodes) for k in keys}

    def init() -> None:
        cluster.enter_hub_for_good()
        local.clients = {}

    def read(key: str) -> tuple[str, Values | str]:
        node = nodes[key]
        clients: dict[str, DynamoClient] = local.clients
        client = clients.setdefault(node.node_id, DynamoClient(node.address, timeout=10.0))
        try:
            result = client.get(key, r="all")
        except ClientError as exc:
            return key, f"{node.node_id}: {exc.status} {exc}"
        return key, tuple(sorted(s.value for s in result.siblings))

    seen: dict[str, Values] = {}
    with ThreadPoolExecutor(API_THREADS, initializer=init) as pool:
        for key, got in pool.map(read, keys):
            if isinstance(got, str) or got != expected[key]:
                verdict.api_mismatches += 1
                if len(verdict.api_examples) < EXAMPLES:
                    replicas = expected[key][:3]
                    verdict.api_examples.append(f"{key}: api {got!r} vs replicas {replicas!r}")
            if not isinstance(got, str):
                seen[key] = got
    return seen


def alone_check(
    cluster: FaultCluster, expected: dict[str, Values], sample: int, verdict: Verdict, seed: int
) -> None:
    """Each node answers r=1 reads of `sample` keys it replicates while the others are
    paused: only its own data can answer."""
    rng = random.Random(seed)
    placement = replica_sets(cluster, expected)
    for node in cluster.nodes:
        mine = sorted(k for k in expected if node.node_id in placement[k])
        carts = [k for k in mine if "/cart/" in k]
        keys = carts + rng.sample(mine, min(sample, len(mine)))
        others = [n for n in cluster.nodes if n is not node]
        for other in others:
            cluster.pause(other)
        try:
            with cluster.hub(), DynamoClient(node.address, timeout=10.0) as client:
                for key in keys:
                    verdict.alone_checked += 1
                    try:
                        got: Values | str = tuple(
                            sorted(s.value for s in client.get(key, r=1, timeout_ms=2000).siblings)
                        )
                    except ClientError as exc:
                        got = f"{exc.status} {exc}"
                    if got != expected[key]:
                        verdict.alone_mismatches += 1
                        if len(verdict.alone_examples) < EXAMPLES:
                            verdict.alone_examples.append(f"{node.node_id} alone {key}: {got!r}")
        finally:
            for other in others:
                cluster.resume(other)


def judge(history: History, final: dict[str, Values], verdict: Verdict) -> None:
    """Count the history and find acknowledged writes and items that are missing."""
    verdict.ops = len(history.ops)
    verdict.keys = len(final)
    carts: dict[str, set[str]] = {}
    for key, values in final.items():
        if "/cart/" in key:
            items: set[str] = set()
            for value in values:
                items |= set(json.loads(value))
            carts[key] = items
            verdict.final_carts[key] = {"items": len(items), "siblings": len(values)}
    for op in history.ops:
        if op.outcome == UNDOCUMENTED:
            verdict.undocumented += 1
            if len(verdict.undocumented_examples) < EXAMPLES:
                verdict.undocumented_examples.append(
                    f"{op.kind} {op.key} on {op.node}: {op.status} {op.detail}"
                )
        if op.kind == "cart-read":
            verdict.cart_reads += 1
            verdict.cart_reads_failed += op.outcome == FAIL
            verdict.cart_reads_unknown += op.outcome == UNKNOWN
            if op.siblings > 1:
                verdict.siblings_seen += 1
            verdict.max_siblings = max(verdict.max_siblings, op.siblings)
            continue
        if op.kind == "write":
            verdict.writes += 1
            present = op.value.encode() in final.get(op.key, ())
        else:
            verdict.cart_writes += 1
            present = op.value in carts.get(op.key, set())
        acked = op.outcome == OK
        if op.kind == "write":
            verdict.writes_acked += acked
            verdict.writes_failed += op.outcome == FAIL
            verdict.writes_unknown += op.outcome == UNKNOWN
        else:
            verdict.items_acked += acked
            verdict.items_failed += op.outcome == FAIL
            verdict.items_unknown += op.outcome == UNKNOWN
        if acked and not present:
            verdict.lost += 1
            if len(verdict.lost_examples) < EXAMPLES:
                verdict.lost_examples.append(
                    f"{op.kind} {op.key}={op.value} acked by {op.node} at {op.end}s"
                )
        elif not acked and present:
            verdict.unacked_present += 1


def check(
    cluster: FaultCluster,
    history: History,
    *,
    converge_timeout: float = 90.0,
    alone_sample: int = 30,
    api_sample: int = 0,
    seed: int = 0,
) -> Verdict:
    verdict = Verdict()
    keys = sorted(history.keys())
    t = time.monotonic()
    replicas = converge(cluster, keys, verdict, converge_timeout)
    verdict.phase_s["converge"] = _lap(t)
    t = time.monotonic()
    seen = api_check(cluster, replicas, verdict, api_sample)
    verdict.phase_s["api"] = _lap(t)
    if alone_sample:
        t = time.monotonic()
        alone_check(cluster, replicas, alone_sample, verdict, seed)
        verdict.phase_s["alone"] = _lap(t)
    # judge by what a client reads (r=all); a key the API could not read counts as read
    # from the replicas (and is an api_mismatch already)
    judge(history, {k: seen.get(k, v) for k, v in replicas.items()}, verdict)
    return verdict


def _lap(start: float) -> float:
    return round(time.monotonic() - start, 3)
