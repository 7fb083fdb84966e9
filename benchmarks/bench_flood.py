"""A broadcast flood to a slow async ``Channel.on()`` handler: tasks, memory, what got handled.

A PhoenixServer on 127.0.0.1 (same process) sends N broadcasts as fast as it can to one joined
channel that has a slow async handler (10 ms per message, e.g. a database write) and a sync
counter. We report the peak number of live asyncio tasks and the tracemalloc peak while the
flood is read, how many calls the slow handler ran, how many were dropped (counted), and the
wall time until the sync counter saw every message.

Issue 13 measured the old behaviour (one task per message): a 20 s flood reached 109,210 live
tasks and 426 MB. Run the same script against an older tree to compare::

    .venv/bin/python benchmarks/bench_flood.py --messages 20000 --runs 3
    PYTHONPATH=/path/to/old/tree .venv/bin/python benchmarks/bench_flood.py --messages 20000

Figures are medians over ``--runs``; the machine is shared, so wall times are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import tracemalloc
from typing import Any

import structlog

from resilient_conn.realtime import Message, RealtimeClient
from resilient_conn.testing import PhoenixServer


async def one_run(n: int, handler_ms: float, concurrency: int) -> dict[str, float]:
    seen = 0
    ran = 0
    peak_tasks = 0
    all_seen = asyncio.Event()

    def count(message: Message) -> None:
        nonlocal seen, peak_tasks
        seen += 1
        if seen % 100 == 0:
            peak_tasks = max(peak_tasks, len(asyncio.all_tasks()))
        if seen == n:
            all_seen.set()

    async def slow(message: Message) -> None:
        nonlocal ran
        await asyncio.sleep(handler_ms / 1000)
        ran += 1

    async with (
        PhoenixServer() as server,
        RealtimeClient(server.realtime_url, heartbeat_interval=30.0) as client,
    ):
        options = {"handler_concurrency": concurrency} if concurrency > 1 else {}
        room = client.channel("flood", queue_size=0, **options)
        await room.subscribe()
        room.on("broadcast", count)
        room.on("broadcast", slow)
        tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
        start = time.perf_counter()
        for i in range(n):
            await server.broadcast("flood", "tick", {"i": i})
        await asyncio.wait_for(all_seen.wait(), 120)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        dropped = getattr(room, "handler_dropped", float("nan"))
    return {
        "seconds": elapsed,
        "peak_tasks": peak_tasks,
        "peak_mb": (peak - base) / 1e6,
        "slow_ran": ran,
        "dropped": dropped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--handler-ms", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1, help="handler_concurrency")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    results: list[dict[str, Any]] = [
        asyncio.run(one_run(args.messages, args.handler_ms, args.concurrency))
        for _ in range(args.runs)
    ]
    print(
        f"{args.messages} broadcasts, slow handler {args.handler_ms} ms, "
        f"concurrency {args.concurrency}, {args.runs} runs:"
    )
    for key in results[0]:
        print(f"  {key:<10} median {statistics.median(r[key] for r in results):.2f}")


if __name__ == "__main__":
    main()
