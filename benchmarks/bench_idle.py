"""Idle cost per connection: RSS, tasks and CPU of N open, silent connections in one process.

Clients compared (each measured in a fresh child process, so RSS is its own):

- ``raw connect``: ``websockets.asyncio.client.connect()`` N times, nothing reading (its own
  keepalive task pings every 20 s);
- ``raw async-for``: the same plus one task per connection running ``async for message in ws``
  (how a websockets user consumes a feed);
- ``ours connect``: ``ResilientConnection`` (keepalive on, 20 s), nothing reading: like for like
  with ``raw connect`` (websockets' queue holds what arrives either way);
- ``ours``: the same plus one ``async for`` consumer task each, on the websockets adapter: like
  for like with ``raw async-for``; ``ours picows`` on the picows adapter.

Both sides use the same settings: compression (``--no-compression`` turns it off on the server
and every client), keepalive every 20 s with a 20 s timeout, ``max_queue`` 16 and ``max_size``
1 MiB (websockets' defaults and ours). The ``like`` column is each client's ratio to its like:
``ours connect`` / ``raw connect`` and ``ours`` / ``raw async-for`` (the issue's target is
``ours connect`` <= 1.1x ``raw connect``).

The echo server runs in a separate process on 127.0.0.1 and never sends. Variants run in
interleaved rounds (the machine is shared, so figures are noisy); medians are reported, with
ratios to ``raw connect``. RSS per connection = (RSS with N open - RSS before dialing) / N.
That includes what the last ``--dialing`` dials in flight (200 by default) allocated and freed:
memory the allocator keeps; ``--dialing 20`` shows the idle cost more nearly alone.

Run: .venv/bin/python benchmarks/bench_idle.py [--n 1000] [--rounds 3] [--idle 25]
     .venv/bin/python benchmarks/bench_idle.py --ten-thousand     # N = 10,000
     .venv/bin/python benchmarks/bench_idle.py --tracemalloc "ours connect"  # where our bytes go
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

SERVER = """
import asyncio, resource, sys
from websockets.asyncio.server import serve

async def silent(ws):
    await ws.wait_closed()

async def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    async with serve(silent, "127.0.0.1", 0, ping_interval=None, compression=%(compression)r,
                     backlog=4096) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"""

VARIANTS = ["raw connect", "raw async-for", "ours connect", "ours", "ours picows"]
LIKE = {"ours connect": "raw connect", "ours": "raw async-for", "ours picows": "raw async-for"}


DIALING = 200  # connections dialing at once while opening (--dialing)


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def child(variant: str, url: str, n: int, idle: float, compression: str | None,
                trace: bool) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    from resilient_conn import ResilientConnection

    opened: list[Any] = []
    consumers: list[asyncio.Task[None]] = []

    async def drain(source: Any) -> None:
        async for _ in source:
            pass

    # warm up imports and one connection of each kind, so lazily built state is not counted
    warm = await connect(url, compression=compression)
    await warm.close()
    if variant.startswith("ours"):
        transport = "picows" if variant == "ours picows" else "websockets"
        if transport == "picows":
            compression = None  # picows cannot compress
        warm_conn = ResilientConnection(
            url, transport=transport, compression=compression, stable_after=0.5
        )
        async with warm_conn:
            await warm_conn.wait_connected(10)
            await asyncio.sleep(1.0)  # through the same steady idle state as the measured ones
    gc.collect()
    await asyncio.sleep(0.2)
    if trace:
        import tracemalloc

        tracemalloc.start(25)
        snap0 = tracemalloc.take_snapshot()
    tasks0 = len(asyncio.all_tasks())
    rss0 = rss_kb()
    started = time.perf_counter()
    sem = asyncio.Semaphore(DIALING)  # bounded concurrent dials

    async def open_one() -> None:
        async with sem:
            if variant.startswith("ours"):
                conn = ResilientConnection(
                    url, transport=transport, compression=compression, stable_after=0.5
                )
                conn.start()
                await conn.wait_connected(60)
                opened.append(conn)
                if variant != "ours connect":
                    consumers.append(asyncio.create_task(drain(conn)))
            else:
                ws = await connect(url, compression=compression, open_timeout=60)
                opened.append(ws)
                if variant == "raw async-for":
                    consumers.append(asyncio.create_task(drain(ws)))

    await asyncio.gather(*(open_one() for _ in range(n)))
    open_seconds = time.perf_counter() - started
    await asyncio.sleep(1.0)  # past stable_after: the steady idle state
    gc.collect()
    rss1 = rss_kb()
    tasks1 = len(asyncio.all_tasks())
    top: list[str] = []
    if trace:
        snap1 = tracemalloc.take_snapshot()
        # each allocation charged to its innermost line in resilient_conn (the line of ours
        # that made it, however deep in websockets or asyncio it happened), else its own line
        by_line: dict[str, int] = {}
        for stat in snap1.compare_to(snap0, "traceback"):
            frames = list(stat.traceback)[::-1]  # innermost first
            ours = next((f for f in frames if "/resilient_conn/" in f.filename), frames[0])
            key = f"{ours.filename.rsplit('/site-packages/', 1)[-1]}:{ours.lineno}"
            by_line[key] = by_line.get(key, 0) + stat.size_diff
        ranked = sorted(by_line.items(), key=lambda kv: -kv[1])[:25]
        top = [f"{size / n:8.0f} B/conn  {where}" for where, size in ranked]
        top.append(f"{sum(by_line.values()) / n:8.0f} B/conn  traced in all")
        tracemalloc.stop()
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    await asyncio.sleep(idle)
    cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    for c in consumers:
        c.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    if variant.startswith("ours"):
        await asyncio.gather(*(c.aclose() for c in opened))
    else:
        await asyncio.gather(*(ws.close() for ws in opened))
    return {
        "rss_per_conn_kb": (rss1 - rss0) / n,
        "tasks_per_conn": (tasks1 - tasks0 - len(consumers)) / n,
        "idle_cpu_pct": cpu * 100,
        "open_seconds": open_seconds,
        "top": top,
    }


def run_child(args: argparse.Namespace, variant: str, port: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--port", str(port), "--n", str(args.n),
         "--idle", str(args.idle), "--dialing", str(args.dialing)]
        + (["--no-compression"] if args.no_compression else [])
        + (["--tracemalloc", variant] if args.tracemalloc == variant else []),
        capture_output=True, text=True, timeout=600, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--ten-thousand", action="store_true", help="N = 10,000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=25.0, help="seconds of idle CPU sampling")
    parser.add_argument("--no-compression", action="store_true")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--tracemalloc", metavar="VARIANT", default=None)
    parser.add_argument(
        "--dialing", type=int, default=200,
        help="connections dialing at once while opening (what is allocated and freed during "
        "a dial counts in RSS as the peak of this many: fewer shows the idle cost alone)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ten_thousand:
        args.n = 10_000
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    compression = None if args.no_compression else "deflate"
    global DIALING
    DIALING = args.dialing
    if args.child:
        url = f"ws://127.0.0.1:{args.port}/"
        result = asyncio.run(
            child(args.child, url, args.n, args.idle, compression, args.tracemalloc is not None)
        )
        print(json.dumps(result))
        return
    variants = [v for v in args.variants.split(",") if v]
    if "ours picows" in variants and importlib.util.find_spec("picows") is None:
        variants.remove("ours picows")
    if compression and "ours picows" in variants:
        print("note: picows cannot compress; 'ours picows' runs without compression")
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER % {"compression": compression}],
        stdout=subprocess.PIPE, text=True,
    )
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        for i in range(args.rounds):
            order = variants if i % 2 == 0 else variants[::-1]
            for variant in order:
                results[variant].append(run_child(args, variant, port))
                print(f"round {i + 1} {variant}: {results[variant][-1]['rss_per_conn_kb']:.2f} "
                      "KB/conn", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(10)
    print(f"{args.n} idle connections per process, {args.rounds} interleaved rounds, "
          f"{args.idle:g} s idle CPU sample, compression={compression}; medians")
    print(f"{'client':<16}{'RSS KB/conn':>12}{'ratio':>7}{'like':>7}{'tasks/conn*':>12}"
          f"{'idle CPU %':>11}{'ratio':>7}{'open s':>8}")
    base = results[variants[0]]
    base_rss = statistics.median(r["rss_per_conn_kb"] for r in base)
    base_cpu = statistics.median(r["idle_cpu_pct"] for r in base)
    for variant in variants:
        rs = results[variant]
        rss = statistics.median(r["rss_per_conn_kb"] for r in rs)
        cpu = statistics.median(r["idle_cpu_pct"] for r in rs)
        tasks = statistics.median(r["tasks_per_conn"] for r in rs)
        opened = statistics.median(r["open_seconds"] for r in rs)
        like = LIKE.get(variant)
        like_ratio = (
            rss / statistics.median(r["rss_per_conn_kb"] for r in results[like])
            if like in results else float("nan")
        )
        print(f"{variant:<16}{rss:>12.2f}{rss / base_rss:>7.3f}{like_ratio:>7.3f}{tasks:>12.2f}"
              f"{cpu:>11.3f}{cpu / base_cpu if base_cpu else float('nan'):>7.2f}{opened:>8.2f}")
    print("* tasks the client library keeps per connection (the consumer's own task excluded)")
    for variant in variants:
        for line in results[variant][0]["top"]:
            print(f"  [{variant}] {line}")


if __name__ == "__main__":
    main()
