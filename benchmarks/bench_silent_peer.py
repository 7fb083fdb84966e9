"""Time to notice a silent peer: raw websockets keepalive vs ResilientConnection.

A ChaosProxy blackholes an open connection (no FIN, no RST: the peer just goes quiet). We
measure how long until the consumer's receive loop learns the connection is dead, with the
same ping_interval / ping_timeout for both and websockets' default close_timeout (10 s).

Run: .venv/bin/python benchmarks/bench_silent_peer.py [--ping 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

import structlog
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from resilient_conn import ConnectionState, ResilientConnection, StateChange
from resilient_conn.testing import ChaosProxy, ScriptedServer


async def raw(proxy: ChaosProxy, ping: float) -> float:
    async with connect(proxy.url_for("/"), ping_interval=ping, ping_timeout=ping) as ws:
        proxy.blackhole()
        start = time.monotonic()
        try:
            await ws.recv()
        except ConnectionClosed:
            return time.monotonic() - start
    raise AssertionError("unreachable")


async def ours(proxy: ChaosProxy, ping: float) -> float:
    left = asyncio.Event()

    def hook(change: StateChange) -> None:
        if change.old is ConnectionState.CONNECTED:
            left.set()

    async with ResilientConnection(
        proxy.url_for("/"), ping_interval=ping, ping_timeout=ping
    ) as conn:
        conn.on_state_change(hook)
        await conn.wait_connected(10)
        proxy.blackhole()
        start = time.monotonic()
        await left.wait()
        return time.monotonic() - start


async def main(ping: float) -> None:
    print(f"blackholed peer, ping_interval = ping_timeout = {ping:g} s, close_timeout = 10 s")
    for label, fn in (("raw websockets keepalive", raw), ("ResilientConnection", ours)):
        async with ScriptedServer() as server, ChaosProxy("127.0.0.1", server.port) as proxy:
            took = await fn(proxy, ping)
        print(f"  {label:<28} noticed after {took:6.2f} s")


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ping", type=float, default=1.0)
    asyncio.run(main(parser.parse_args().ping))
