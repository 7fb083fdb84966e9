"""Dials against a flapping server: websockets' reconnect iterator vs ResilientConnection.

The server completes every handshake and closes at once (code 1011). In a fixed window we
count how many times each client dials. websockets' ``async for ws in connect(...)`` resets its
backoff after every successful handshake, so it reconnects in a tight loop; ResilientConnection
counts a connection that did not stay up ``stable_after`` as a failure, backs off, and opens its
circuit breaker after ``failure_threshold`` failures.

Run: .venv/bin/python benchmarks/bench_flapping.py [--window 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from resilient_conn import ResilientConnection

logging.getLogger("websockets").setLevel(logging.CRITICAL)


async def websockets_iterator(url: str) -> None:
    async for ws in connect(url, open_timeout=2):
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass


async def resilient(url: str) -> None:
    async with ResilientConnection(url, stable_after=10, ping_interval=0) as conn:
        await asyncio.Future()  # runs until cancelled
        del conn


async def count_dials(client: str, window: float) -> int:
    dials = 0

    async def flap(ws: ServerConnection) -> None:
        nonlocal dials
        dials += 1
        await ws.close(1011, "flap")

    async with serve(flap, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        run = websockets_iterator if client == "websockets" else resilient
        task = asyncio.create_task(run(url))
        await asyncio.sleep(window)  # a fixed measurement window, not a wait for a state
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return dials


async def main(window: float) -> None:
    print(f"handshakes against an accept-then-close server in {window:g} s")
    for client in ("websockets", "resilient_conn"):
        dials = await count_dials(client, window)
        label = (
            "websockets async-for connect()" if client == "websockets" else "ResilientConnection"
        )
        print(f"  {label:<34}{dials:>8} dials ({dials / window:,.1f}/s)")


if __name__ == "__main__":
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--window", type=float, default=5.0)
    asyncio.run(main(parser.parse_args().window))
