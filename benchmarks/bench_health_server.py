"""Health server under idle and slowloris connections: built-in server vs uvicorn.

An orchestrator's probe must get an answer even while other clients hold connections open
without finishing a request (idle port scanners, a load balancer's pre-opened connections,
a slowloris attack). For each server this opens ``--idle`` connections that send nothing and
``--trickle`` connections that send one byte of a request head every second, then times
``GET /livez`` (capped at ``--cap`` seconds) a few times, and reports the median, the worst, the
statuses seen and the open file descriptors of this process.

Run::

    .venv/bin/python benchmarks/bench_health_server.py --idle 64 --trickle 16
    .venv/bin/python benchmarks/bench_health_server.py --idle 256 --server builtin
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resilient_conn import HealthRegistry, serve_health


@contextlib.asynccontextmanager
async def run_server(kind: str, registry: HealthRegistry) -> AsyncIterator[int]:
    async with serve_health(registry, port=0, server=kind) as server:
        yield server.port


async def probe(port: int, cap: float) -> tuple[float, str]:
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(cap):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            line = await reader.readline()
            writer.close()
        status = line.split()[1].decode() if line else "eof"
    except TimeoutError:
        status = "timeout"
    except OSError as exc:
        status = type(exc).__name__
    return time.perf_counter() - t0, status


async def trickle(port: int, stop: asyncio.Event) -> None:
    with contextlib.suppress(OSError):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        head = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
        for byte in head:
            if stop.is_set():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        writer.close()


async def measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    registry = HealthRegistry(name="bench")
    async with run_server(kind, registry) as port:
        stop = asyncio.Event()
        idle = []
        for _ in range(args.idle):
            with contextlib.suppress(OSError):
                idle.append(await asyncio.open_connection("127.0.0.1", port))
        slow = [asyncio.create_task(trickle(port, stop)) for _ in range(args.trickle)]
        await asyncio.sleep(0.5)
        results = []
        for _ in range(args.probes):
            results.append(await probe(port, args.cap))
            await asyncio.sleep(args.every)
        fds = len(os.listdir("/proc/self/fd")) if sys.platform == "linux" else -1
        stop.set()
        await asyncio.gather(*slow, return_exceptions=True)
        for _, writer in idle:
            writer.close()
    times = [t for t, _ in results]
    return {
        "server": kind,
        "median_s": statistics.median(times),
        "worst_s": max(times),
        "statuses": sorted({s for _, s in results}),
        "fds": fds,
    }


async def amain(args: argparse.Namespace) -> None:
    kinds = ["builtin", "uvicorn"] if args.server == "both" else [args.server]
    print(
        f"{args.idle} idle + {args.trickle} trickling connections, {args.probes} probes "
        f"{args.every:g} s apart, cap {args.cap:g} s"
    )
    for kind in kinds:
        row = await measure(kind, args)
        print(
            f"  {row['server']:8s} median {row['median_s'] * 1000:8.1f} ms  worst "
            f"{row['worst_s'] * 1000:8.1f} ms  statuses {row['statuses']}  fds {row['fds']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server", default="both", choices=["both", "builtin", "uvicorn"]
    )
    parser.add_argument("--idle", type=int, default=64)
    parser.add_argument("--trickle", type=int, default=16)
    parser.add_argument("--probes", type=int, default=15)
    parser.add_argument("--every", type=float, default=1.0)
    parser.add_argument("--cap", type=float, default=15.0)
    asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    main()
