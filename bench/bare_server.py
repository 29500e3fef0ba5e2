"""The baseline of bench/single_node.py: a bare aiohttp server on uvloop, same routes as
the node's client API but no storage, middleware or metrics.

    GET /v1/kv/{key}  -> 200, a 1 KiB body
    PUT /v1/kv/{key}  -> reads the body, 204

Run: python bench/bare_server.py --port PORT (stops on SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import uvloop
from aiohttp import web

BODY = os.urandom(1024)


async def get(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/octet-stream")


async def put(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=204)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/v1/kv/{key:.+}", get)
    app.router.add_put("/v1/kv/{key:.+}", put)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(build_app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"bare aiohttp server ready on http://{host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
