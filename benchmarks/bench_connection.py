"""Echo throughput and round-trip latency: ResilientConnection vs a raw websockets client.

Both clients talk to the same echo server, which runs in a separate process on 127.0.0.1,
in one run, alternating rounds so drift hits both alike. Targets (issue: supervisor):
throughput >= 0.97x raw, median RTT <= 1.05x raw.

Run: .venv/bin/python benchmarks/bench_connection.py [--messages 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import connect

from resilient_conn import ResilientConnection

SERVER = """
import asyncio, sys
from websockets.asyncio.server import serve

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(echo, "127.0.0.1", 0, ping_interval=None, max_queue=64) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"""


async def throughput(
    send: Callable[[Any], Awaitable[None]], recv: Callable[[], Awaitable[Any]], n: int, payload: str
) -> float:
    async def producer() -> None:
        for _ in range(n):
            await send(payload)

    start = time.perf_counter()
    task = asyncio.create_task(producer())
    for _ in range(n):
        await recv()
    await task
    return n / (time.perf_counter() - start)


async def rtts(
    send: Callable[[Any], Awaitable[None]], recv: Callable[[], Awaitable[Any]], n: int, payload: str
) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await send(payload)
        await recv()
        out.append(time.perf_counter() - start)
    return out


async def run(url: str, messages: int, rounds: int, rtt_count: int) -> None:
    payload = "x" * 64
    tput: dict[str, list[float]] = {"raw websockets": [], "ResilientConnection": []}
    lat: dict[str, list[float]] = {"raw websockets": [], "ResilientConnection": []}
    async with (
        connect(url, ping_interval=None, max_queue=16) as raw,
        ResilientConnection(url, ping_interval=0, max_queue=16) as conn,
    ):
        await conn.wait_connected(10)
        clients = {
            "raw websockets": (raw.send, raw.recv),
            "ResilientConnection": (conn.send, conn.recv),
        }
        for send, recv in clients.values():  # warm-up
            await throughput(send, recv, 1000, payload)
        for i in range(rounds):
            order = list(clients.items())
            if i % 2:
                order.reverse()  # alternate who goes first
            for name, (send, recv) in order:
                tput[name].append(await throughput(send, recv, messages, payload))
                lat[name].extend(await rtts(send, recv, rtt_count, payload))
    raw_t = max(tput["raw websockets"])
    raw_l = statistics.median(lat["raw websockets"])
    print(
        f"echo of {messages} x 64-byte messages, best of {rounds} rounds; "
        f"{rounds * rtt_count} sequential round trips each"
    )
    columns = (
        ("msgs/s (best)", 15),
        ("ratio", 8),
        ("(median)", 10),
        ("median RTT us", 16),
        ("p99 us", 10),
    )
    print(f"{'client':<22}" + "".join(f"{t:>{w}}" for t, w in columns) + f"{'ratio':>8}")
    for name in tput:
        best = max(tput[name])
        mid = statistics.median(tput[name])
        med = statistics.median(lat[name])
        p99 = statistics.quantiles(lat[name], n=100)[98]
        print(
            f"{name:<22}{best:>15,.0f}{best / raw_t:>8.3f}{mid:>10,.0f}"
            f"{med * 1e6:>16.1f}{p99 * 1e6:>10.1f}{med / raw_l:>8.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--rtts", type=int, default=1000)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        asyncio.run(run(f"ws://127.0.0.1:{port}/", args.messages, args.rounds, args.rtts))
    finally:
        server.terminate()
        server.wait(5)


if __name__ == "__main__":
    main()
