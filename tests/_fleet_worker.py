"""One process of a test fleet: N simulated connections share a coordinator on a RedisStore.

Run by tests/test_fleet_processes.py as ``python tests/_fleet_worker.py CONFIG_JSON``. Each
connection dials a real TCP upstream on 127.0.0.1 through ``coordinator.permit()`` until one
dial succeeds. Prints JSON lines: ``{"ready": pid}`` once the store is up, one
``{"probe": [t0, t1, ok]}`` per probe dial (wall clock, same machine as the other workers),
and a final ``{"summary": {...}}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import anyio
import structlog

from resilient_conn.coordination import (
    DialKind,
    RecoveryCoordinator,
    RecoverySettings,
    RedisStore,
)


def emit(obj: Any) -> None:
    """Write one JSON line to stdout."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(config: dict[str, Any]) -> None:
    """Run the connections; wait for a rejoin too when asked; print the summary."""
    settings = RecoverySettings(**config["settings"])
    port = config["upstream_port"]
    connected = 0
    dials = 0
    async with RedisStore(
        config["redis_url"],
        namespace=config["namespace"],
        op_timeout=0.3,
        retry_interval=0.1,
        poll_interval=1.0,
    ) as store:
        coordinator = RecoveryCoordinator("upstream", settings=settings, store=store)
        emit({"ready": os.getpid()})

        async def connection(i: int) -> None:
            nonlocal connected, dials
            while True:
                async with coordinator.permit(f"c{i}") as permit:
                    t0 = time.time()
                    dials += 1
                    try:
                        with anyio.fail_after(1.0):
                            _, writer = await asyncio.open_connection("127.0.0.1", port)
                    except (OSError, TimeoutError) as exc:
                        if permit.kind is DialKind.PROBE:
                            emit({"probe": [t0, time.time(), False]})
                        await permit.failed(exc)
                    else:
                        writer.close()
                        if permit.kind is DialKind.PROBE:
                            emit({"probe": [t0, time.time(), True]})
                        await permit.succeeded()
                        connected += 1
                        return
                await anyio.sleep(0.02)  # the supervisor's short jittered first step

        with anyio.move_on_after(config["deadline"]):
            async with anyio.create_task_group() as tg:
                for i in range(config["connections"]):
                    tg.start_soon(connection, i)
            if config.get("await_rejoin"):
                await store.health_changed.wait_until(lambda: store.health().rejoins > 0, None)
        emit(
            {
                "summary": {
                    "connected": connected,
                    "dials": dials,
                    "health": store.health().to_dict(),
                    "admitted": coordinator.snapshot().admitted,
                }
            }
        )


if __name__ == "__main__":
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    anyio.run(main, json.loads(sys.argv[1]))
