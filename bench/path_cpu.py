"""CPU per request of the node's data path, in process: no network, no load generator,
so the machine's noise is only its own (CPU steal, frequency).

GET of an existing key and PUT of a fresh key go through `http1` (head parsing,
routing, rendering) -> `kvapi` (key, query, context) -> the coordinator -> the local
replica, on a one-node cluster over MemoryStorage (RocksDB left out: it is the same in
every version compared). Each case runs `--repeats` times and the fastest is kept (noise
only ever adds time). To compare two checkouts, run this file with PYTHONPATH pointing
at each one's `node/` in turn, interleaved, several times; it also runs against the flat
module layout of releases before the layered packages.

    python bench/path_cpu.py [--requests 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import Any

import uvloop

try:
    from dynamo_node.core.config import NodeConfig
    from dynamo_node.edge.http1 import KvServer
    from dynamo_node.edge.metrics import Metrics
    from dynamo_node.edge.web import ADMISSION_KEY, API_KEY, AUTH_KEY, build_app
    from dynamo_node.store.storage import MemoryStorage
except ImportError:  # a checkout from before the layered packages
    from dynamo_node.config import NodeConfig  # type: ignore[no-redef]
    from dynamo_node.http1 import KvServer  # type: ignore[no-redef]
    from dynamo_node.metrics import Metrics  # type: ignore[no-redef]
    from dynamo_node.storage import MemoryStorage  # type: ignore[no-redef]
    from dynamo_node.web import ADMISSION_KEY, API_KEY, AUTH_KEY, build_app  # type: ignore[no-redef]
from dynamo_node.node import Node

VALUE = b"x" * 1024


class Sink(asyncio.Transport):
    """A transport that counts the answers written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.last = b""

    def write(self, data: Any) -> None:
        self.writes += 1
        self.last = bytes(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def put_request(key: str) -> bytes:
    return (
        f"PUT /v1/kv/{key} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(VALUE)}\r\n\r\n"
    ).encode() + VALUE


async def measure(requests: int, repeats: int) -> dict[str, float]:
    config = NodeConfig(
        data_dir="", port=7000, node_id="m0", partitions=8, n=1, r=1, w=1,
        gossip_interval_s=3600.0, anti_entropy_interval_s=0.0,
    )  # fmt: skip
    node = Node(config, MemoryStorage(), serve_peers=False)
    await node.start()
    metrics = Metrics()
    app = build_app(node, metrics)
    server = KvServer(app[API_KEY], app[AUTH_KEY], app[ADMISSION_KEY], metrics, lambda: None)  # type: ignore[arg-type]
    server.loop = asyncio.get_running_loop()
    proto = server.protocol()
    sink = Sink()
    proto.connection_made(sink)

    async def send(request: bytes) -> None:
        before = sink.writes
        proto.data_received(request)
        while sink.writes == before:  # noqa: ASYNC110 - yield until the answer is written
            await asyncio.sleep(0)

    for i in range(100):
        await send(put_request(f"g{i}"))
    gets = [b"GET /v1/kv/g%d HTTP/1.1\r\nHost: x\r\n\r\n" % (i % 100) for i in range(requests)]
    gc.collect()
    gc.freeze()
    best: dict[str, float] = {}
    for case, ok in (("GET", b"HTTP/1.1 200"), ("PUT", b"HTTP/1.1 204")):
        best[case] = float("inf")
        for r in range(repeats):
            reqs = gets if case == "GET" else [put_request(f"p{r}_{i}") for i in range(requests)]
            start = time.process_time()
            for request in reqs:
                await send(request)
            best[case] = min(best[case], (time.process_time() - start) / requests * 1e6)
            if not sink.last.startswith(ok):
                raise RuntimeError(f"{case} answered {sink.last[:60]!r}")
    await node.stop()
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    best = uvloop.run(measure(args.requests, args.repeats))
    print(f"GET {best['GET']:.1f} us/req  PUT {best['PUT']:.1f} us/req")


if __name__ == "__main__":
    main()
