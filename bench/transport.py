"""Node-to-node call cost: dynamo_node.net.rpc_server.RpcServer + rpc_client.TcpTransport
(framed msgpack, one multiplexed connection) versus aiohttp (ClientSession -> aiohttp route
`POST /internal/{method}` with msgpack bodies), plus the same aiohttp route driven by the
lean raw-socket HTTP/1.1 client of bench/httpload.py (one connection per caller).

The server process (both servers, uvloop) runs pinned to core 0; the client (this
process, uvloop) pinned to core 1; `--concurrency` callers (64) loop for `--duration`
seconds. Two calls: "ping" (trivial handler, tiny reply) and "get" (a 1 KiB reply, the
size of a replica read). Reported per case: calls/s, client CPU µs per call
(time.process_time of the client), server CPU µs per call (/proc), p50/p99 latency.

    python bench/transport.py [--duration 10] [--quick]

Writes bench/results/transport.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from array import array
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import uvloop
from aiohttp import ClientSession, TCPConnector, web

import benchlib
import httpload
from benchlib import LOAD_CORE, SERVER_CORE, percentile, taskset

PAYLOAD = os.urandom(1024)
SKEY = b"\x00\x01\x02\x03\x04\x05\x06\x07user00012345"
ARGS: dict[str, list[Any]] = {"ping": [], "get": [SKEY]}


# --- server process -------------------------------------------------------------------------
async def handler(method: str, args: Any, caller: str) -> Any:
    if method == "ping":
        return True
    if method == "get":
        return PAYLOAD
    raise ValueError(method)


async def serve(rpc_port: int, http_port: int) -> None:
    from dynamo_node.net.rpc_server import RpcServer

    rpc = RpcServer(handler)
    await rpc.start("127.0.0.1", rpc_port)

    async def internal(request: web.Request) -> web.Response:
        args = msgpack.unpackb(await request.read(), raw=False)
        result = await handler(request.match_info["method"], args, "bench")
        return web.Response(
            body=msgpack.packb(result, use_bin_type=True), content_type="application/x-msgpack"
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/internal/{method}", internal)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port, reuse_address=True).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("transport bench server ready", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await rpc.stop()


# --- client ------------------------------------------------------------------------------
Call = Callable[[], Awaitable[Any]]


async def drive(call: Call, concurrency: int, seconds: float) -> tuple[int, array, float]:
    """`concurrency` callers loop for `seconds`; returns (calls, latencies µs, client CPU s)."""
    lat = array("d")
    end = time.perf_counter() + seconds
    count = 0

    async def caller() -> None:
        nonlocal count
        perf = time.perf_counter
        while True:
            t0 = perf()
            if t0 >= end:
                return
            await call()
            lat.append((perf() - t0) * 1e6)
            count += 1

    cpu0 = time.process_time()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return count, lat, time.process_time() - cpu0


async def measure(
    name: str,
    make: Callable[[], Awaitable[tuple[Call, Callable[[], Awaitable[None]]]]],
    server_pid: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    call, close = await make()
    try:
        await drive(call, args.concurrency, args.warmup)
        srv0 = benchlib.proc_cpu_seconds(server_pid)
        t0 = time.perf_counter()
        calls, lat, client_cpu = await drive(call, args.concurrency, args.duration)
        wall = time.perf_counter() - t0
        srv_cpu = benchlib.proc_cpu_seconds(server_pid) - srv0
    finally:
        await close()
    lat_sorted = sorted(lat)
    res = {
        "case": name,
        "calls": calls,
        "calls_per_s": round(calls / wall, 1),
        "client_us_per_call": round(1e6 * client_cpu / max(1, calls), 1),
        "server_us_per_call": round(1e6 * srv_cpu / max(1, calls), 1),
        "client_cpu_pct": round(100 * client_cpu / wall, 1),
        "server_cpu_pct": round(100 * srv_cpu / wall, 1),
        "p50_ms": round(percentile(lat_sorted, 50) / 1000, 3),
        "p99_ms": round(percentile(lat_sorted, 99) / 1000, 3),
        "loadavg_1m": os.getloadavg()[0],
    }
    print(
        f"  {name:24s} {res['calls_per_s']:>9,.0f} calls/s  client {res['client_us_per_call']:6.1f}"
        f" µs/call  server {res['server_us_per_call']:6.1f} µs/call  p50 {res['p50_ms']:.2f} ms"
        f"  p99 {res['p99_ms']:.2f} ms"
    )
    return res


def tcp_case(port: int, method: str) -> Callable[[], Awaitable[tuple[Call, Any]]]:
    async def make() -> tuple[Call, Any]:
        from dynamo_node.net.rpc_client import TcpTransport

        transport = TcpTransport("bench-client", lambda _node: ("127.0.0.1", port))
        margs = ARGS[method]

        async def call() -> Any:
            return await transport.call("server", method, margs, 10.0)

        await call()
        return call, transport.close

    return make


def aiohttp_case(port: int, method: str, limit: int) -> Callable[[], Awaitable[tuple[Call, Any]]]:
    async def make() -> tuple[Call, Any]:
        session = ClientSession(connector=TCPConnector(limit=limit))
        url = f"http://127.0.0.1:{port}/internal/{method}"
        body = msgpack.packb(ARGS[method], use_bin_type=True)
        headers = {"Content-Type": "application/x-msgpack"}

        async def call() -> Any:
            async with session.post(url, data=body, headers=headers) as resp:
                data = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"status {resp.status}")
                return msgpack.unpackb(data, raw=False)

        await call()
        return call, session.close

    return make


def raw_http_case(port: int, method: str, conns: int) -> Callable[[], Awaitable[tuple[Call, Any]]]:
    async def make() -> tuple[Call, Any]:
        pool = [await httpload.Conn.open("127.0.0.1", port) for _ in range(conns)]
        free = list(pool)
        req = httpload.build(
            "POST",
            f"/internal/{method}",
            msgpack.packb(ARGS[method], use_bin_type=True),
            [("Content-Type", "application/x-msgpack")],
        )

        async def call() -> Any:
            conn = free.pop()
            try:
                status, _, body = await conn.request(req)
            finally:
                free.append(conn)
            if status != 200:
                raise RuntimeError(f"status {status}")
            return msgpack.unpackb(body, raw=False)

        async def close() -> None:
            for c in pool:
                c.close()

        await call()
        return call, close

    return make


async def client(args: argparse.Namespace, rpc_port: int, http_port: int, pid: int) -> list[Any]:
    results = []
    for method in ("ping", "get"):
        cases = [
            (f"tcp-rpc {method}", tcp_case(rpc_port, method)),
            (f"aiohttp-session {method}", aiohttp_case(http_port, method, args.concurrency)),
            (f"raw-http {method}", raw_http_case(http_port, method, args.concurrency)),
        ]
        for name, make in cases:
            results.append(await measure(name, make, pid, args))
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--serve", nargs=2, type=int, metavar=("RPC_PORT", "HTTP_PORT"), help=argparse.SUPPRESS
    )
    args = p.parse_args()
    if args.serve:
        uvloop.run(serve(*args.serve))
        return
    if args.quick:
        benchlib.use_quick_dir()
        args.duration = min(args.duration, 3.0)
        args.warmup = min(args.warmup, 0.5)
    benchlib.check_cores()
    benchlib.pin_self(LOAD_CORE)
    env = benchlib.environment()
    from tests.harness import free_port, http, wait_for

    rpc_port, http_port = free_port(), free_port()
    print(
        f"transport: {args.duration:.0f}s per case, concurrency {args.concurrency}, server on "
        f"core {SERVER_CORE}, client on core {LOAD_CORE}; loadavg {env['loadavg_at_start'][0]:.2f}"
    )
    proc = subprocess.Popen(
        taskset(SERVER_CORE, [sys.executable, __file__, "--serve", str(rpc_port), str(http_port)]),
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: http("GET", f"http://127.0.0.1:{http_port}/healthz", timeout=2)[0] == 200,
            20,
            what="transport bench server",
        )
        results = uvloop.run(client(args, rpc_port, http_port, proc.pid))
    finally:
        benchlib.stop_process(proc)
    rows = [
        [
            r["case"],
            r["calls_per_s"],
            r["client_us_per_call"],
            r["server_us_per_call"],
            r["p50_ms"],
            r["p99_ms"],
            r["client_cpu_pct"],
            r["server_cpu_pct"],
        ]
        for r in results
    ]
    print()
    print(
        benchlib.table(
            [
                "case",
                "calls/s",
                "client µs/call",
                "server µs/call",
                "p50 ms",
                "p99 ms",
                "client cpu%",
                "server cpu%",
            ],
            rows,
        )
    )
    path = benchlib.write_results(
        "transport",
        {
            "benchmark": "transport",
            "settings": {
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "concurrency": args.concurrency,
                "server_core": SERVER_CORE,
                "client_core": LOAD_CORE,
                "get_reply_bytes": len(PAYLOAD),
                "note": "tcp-rpc multiplexes all callers over one connection; aiohttp-session "
                "pools up to `concurrency` connections; raw-http uses one connection "
                "per caller",
            },
            "results": results,
            "environment": env,
        },
    )
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
