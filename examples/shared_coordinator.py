"""Many connections to one upstream share a RecoveryCoordinator across a server restart.

Run:  python examples/shared_coordinator.py [--redis redis://127.0.0.1:6379/0]

An echo server on 127.0.0.1 goes down for 2 s. The 50 connections share one circuit: while
the server is down, one probe at a time dials for all of them; when it is back, one probe
gets through and the rest reconnect through the ramp (20 at once, then 50 per second here),
each saying in its state change why it waits. With ``--redis`` the coordinator's state lives
in Redis, as it would for a fleet of processes (docs/fleet.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections import Counter

import structlog

if __name__ == "__main__":  # quiet the library's per-connection logs (before it binds them)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

from resilient_conn import (
    Backoff,
    ConnectionState,
    LocalStore,
    RecoveryCoordinator,
    RecoverySettings,
    RedisStore,
    ResilientConnection,
    StateChange,
)
from resilient_conn.testing import ScriptedServer

CONNECTIONS = 50


async def main(redis_url: str | None = None, outage: float = 2.0) -> Counter[str]:
    """Run the scenario; print and return how often each wait reason was reported."""
    reasons: Counter[str] = Counter()

    def on_change(change: StateChange) -> None:
        if change.new in (ConnectionState.CIRCUIT_OPEN, ConnectionState.BACKOFF):
            reason = change.reason.split(";")[-1].strip()
            if reason.startswith("next dial in"):
                reason = "short jittered pause after the drop"
            reasons[reason] += 1

    settings = RecoverySettings(ramp_rate=50.0, ramp_burst=20)
    async with contextlib.AsyncExitStack() as stack:
        if redis_url:
            store: LocalStore | RedisStore = await stack.enter_async_context(RedisStore(redis_url))
        else:
            store = LocalStore()
        coordinator = RecoveryCoordinator("echo", settings=settings, store=store)
        server = await stack.enter_async_context(ScriptedServer())
        conns = []
        for i in range(CONNECTIONS):
            conn = ResilientConnection(
                server.url,
                name=f"conn-{i}",
                coordinator=coordinator,
                backoff=Backoff(0.2, 5.0),
                stable_after=1.0,
                ping_interval=0,
            )
            conn.on_state_change(on_change)
            conns.append(await stack.enter_async_context(conn))
        for conn in conns:
            await conn.wait_connected(10)
        print(f"{CONNECTIONS} connected; restarting the server ({outage:.0f} s down)")
        await server.restart(downtime=outage)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for conn in conns:
            await conn.wait_connected(30)
        print(f"all {CONNECTIONS} back {loop.time() - started:.2f} s after the server returned")
        print("why connections waited (state change reasons):")
        for reason, count in reasons.most_common():
            print(f"  {count:4d}  {reason}")
        print(f"coordinator: {coordinator.snapshot().to_dict()}")
    return reasons


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="a Redis URL: keep the coordinator's state there")
    asyncio.run(main(parser.parse_args().redis))
