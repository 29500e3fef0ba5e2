"""Concurrent clients and the history of everything they did.

Each worker is a thread with one `DynamoClient` per node (clients are not thread-safe)
and asks a random node each time, so with partitions there are clients on every side.

- blind writer: PUT of a unique key and value without a context; 204 = acknowledged.
- cart worker (the paper's shopping cart): GET a cart, union the JSON item sets of all
  siblings, add one new item, PUT the union back with the read's context; the item is
  acknowledged when that PUT answers 204.

Outcomes (docs/api.md lists the documented answers):

    ok            204 for a write; 200, 300 or 404 for a read
    fail          503 (quorum not met, node unavailable): not acknowledged; may or may
                  not have been applied somewhere, so it may appear later
    unknown       no answer (refused, reset, timed out): never counted as acknowledged
    undocumented  anything else (another status, an unreadable body, a corrupt cart)
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dynamo_node.client import (
    ClientError,
    ConnectionFailed,
    DynamoClient,
    GetResult,
    Unavailable,
)
from tests.fault.cluster import FaultCluster
from tests.harness import NodeProc

#: longer than the node's own deadline (3 s), so a quorum failure comes back as a 503
CLIENT_TIMEOUT_S = 6.0
#: how long a worker avoids a node that did not answer
SHUN_S = 1.0
WRITE_OK = frozenset({204})
READ_OK = frozenset({200, 300, 404})
CART_TYPE = "application/json"

OK, FAIL, UNKNOWN, UNDOCUMENTED = "ok", "fail", "unknown", "undocumented"


@dataclass(frozen=True, slots=True)
class Op:
    worker: int
    #: "write" (blind), "cart-read" or "cart-write"
    kind: str
    key: str
    #: the value written, or the cart item added ("" for reads)
    value: str
    node: str
    outcome: str
    #: the HTTP status (0 when no answer came)
    status: int
    start: float
    end: float
    siblings: int = 0
    detail: str = ""


class History:
    """Every operation, appended from many threads."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._lock = threading.Lock()

    def add(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)

    def of(self, kind: str, outcome: str | None = None) -> list[Op]:
        return [o for o in self.ops if o.kind == kind and (outcome is None or o.outcome == outcome)]

    def keys(self) -> set[str]:
        return {o.key for o in self.ops}


class RecordingClient(DynamoClient):
    """A `DynamoClient` that remembers the HTTP status of its last answer (the client
    itself only says "success" for any 2xx)."""

    last_status = 0

    def _exchange(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> Any:
        resp = super()._exchange(method, path, body, headers)
        self.last_status = resp.status
        return resp


def classify(exc: ClientError) -> tuple[str, int]:
    if isinstance(exc, Unavailable):
        return FAIL, exc.status
    if isinstance(exc, ConnectionFailed):
        return UNKNOWN, 0
    return UNDOCUMENTED, exc.status


def cart_items(result: GetResult) -> set[str]:
    """The union of the item sets of every sibling; ValueError on a corrupt one."""
    items: set[str] = set()
    for sibling in result.siblings:
        parsed = json.loads(sibling.value)
        if not isinstance(parsed, list) or not all(isinstance(i, str) for i in parsed):
            raise ValueError(f"a cart sibling is not a list of strings: {sibling.value[:80]!r}")
        items |= set(parsed)
    return items


class Workload:
    """`writers` blind writers and `cart_workers` cart workers over `carts` carts."""

    def __init__(
        self,
        cluster: FaultCluster,
        history: History,
        *,
        writers: int,
        cart_workers: int,
        carts: int,
        seed: int,
        t0: float,
        prefix: str = "f",
        think_s: float = 0.0,
    ) -> None:
        self.cluster = cluster
        self.history = history
        self.writers = writers
        self.cart_workers = cart_workers
        self.cart_keys = [f"{prefix}/cart/{i}" for i in range(carts)]
        self.seed = seed
        self.t0 = t0
        self.prefix = prefix
        self.think_s = think_s
        self.errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []

    def start(self, stop: threading.Event) -> None:
        for w in range(self.writers + self.cart_workers):
            target = self._blind if w < self.writers else self._cart
            thread = threading.Thread(
                target=self._guard, args=(target, w, stop), name=f"client-{w}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def join(self, timeout: float = CLIENT_TIMEOUT_S * 3) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            raise TimeoutError(f"client threads did not stop: {stuck}")
        if self.errors:
            raise RuntimeError(f"a client thread crashed: {self.errors[0]!r}") from self.errors[0]

    # --- the workers -------------------------------------------------------------------------
    def _guard(self, target: Any, worker: int, stop: threading.Event) -> None:
        self.cluster.enter_hub_for_good()
        session = _Session(self, worker, random.Random(self.seed * 1000 + worker))
        try:
            while not stop.is_set():
                if session.all_shunned():
                    stop.wait(SHUN_S / 10)  # every node just failed: no busy loop
                    continue
                target(session)
                if self.think_s:
                    stop.wait(self.think_s)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            session.close()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 4)

    def _blind(self, s: _Session) -> None:
        node, client = s.pick()
        key = f"{self.prefix}/w/{s.worker}/{s.seq}"
        value = f"{s.worker}-{s.seq}"
        s.seq += 1
        start = self.now()
        s.record("write", key, value, node, start, **s.write(client, key, value.encode(), None))

    def _cart(self, s: _Session) -> None:
        node, client = s.pick()
        key = s.rng.choice(self.cart_keys)
        item = f"i{s.worker}-{s.seq}"
        s.seq += 1
        start = self.now()
        try:
            result = client.get(key)
            items = cart_items(result)
        except ClientError as exc:
            outcome, status = classify(exc)
            s.record("cart-read", key, "", node, start, outcome, status, detail=str(exc)[:200])
            return
        except ValueError as exc:
            detail = str(exc)[:200]
            s.record(
                "cart-read", key, "", node, start, UNDOCUMENTED, client.last_status, detail=detail
            )
            return
        outcome = OK if client.last_status in READ_OK else UNDOCUMENTED
        siblings = len(result.siblings)
        s.record("cart-read", key, "", node, start, outcome, client.last_status, siblings=siblings)
        body = json.dumps(sorted(items | {item})).encode()
        start = self.now()
        s.record(
            "cart-write", key, item, node, start, **s.write(client, key, body, result.context or "")
        )


class _Session:
    """One worker thread's clients (one per node), random source and sequence."""

    def __init__(self, workload: Workload, worker: int, rng: random.Random) -> None:
        self.workload = workload
        self.worker = worker
        self.rng = rng
        self.seq = 0
        self.clients: dict[str, RecordingClient] = {}
        #: node id -> when this worker may ask it again
        self.shunned: dict[str, float] = {}

    def all_shunned(self) -> bool:
        now = time.monotonic()
        return all(self.shunned.get(n.node_id, 0.0) > now for n in self.workload.cluster.nodes)

    def pick(self) -> tuple[NodeProc, RecordingClient]:
        """A random node, avoiding for a while those that just did not answer (as a
        client-side load balancer would), and this worker's client of it."""
        now = time.monotonic()
        nodes = self.workload.cluster.nodes
        node = self.rng.choice(
            [n for n in nodes if self.shunned.get(n.node_id, 0.0) <= now] or nodes
        )
        client = self.clients.get(node.node_id)
        if client is None:
            client = RecordingClient(node.address, timeout=CLIENT_TIMEOUT_S)
            self.clients[node.node_id] = client
        client.last_status = 0
        return node, client

    def write(
        self, client: RecordingClient, key: str, body: bytes, context: str | None
    ) -> dict[str, Any]:
        """PUT and classify the answer (a 2xx other than 204 is undocumented)."""
        client.last_status = 0
        try:
            client.put(key, body, context, CART_TYPE if context is not None else "text/plain")
        except ClientError as exc:
            outcome, status = classify(exc)
            return {"outcome": outcome, "status": status, "detail": str(exc)[:200]}
        ok = client.last_status in WRITE_OK
        return {"outcome": OK if ok else UNDOCUMENTED, "status": client.last_status}

    def record(
        self,
        kind: str,
        key: str,
        value: str,
        node: NodeProc,
        start: float,
        outcome: str,
        status: int,
        siblings: int = 0,
        detail: str = "",
    ) -> None:
        end = self.workload.now()
        op = Op(
            self.worker,
            kind,
            key,
            value,
            node.node_id,
            outcome,
            status,
            start,
            end,
            siblings,
            detail,
        )
        self.workload.history.add(op)
        if outcome == UNKNOWN:
            self.shunned[node.node_id] = time.monotonic() + SHUN_S

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
