"""Realtime benchmark: resilient_conn's RealtimeClient vs supabase-py's ``realtime`` package.

Both clients talk to the same PhoenixServer, which runs in a process of its own; each client
runs in its own process too (the ``realtime`` package pins an older websockets, so it lives in
a separate virtualenv: ``python3 -m venv /tmp/rtvenv && /tmp/rtvenv/bin/pip install realtime``).

Two measurements, in one run, with the client order alternating per round:

1. throughput: the server fans out ``--messages`` broadcasts on one topic as fast as the
   socket takes them; the client counts them; rate = messages / (last - first arrival).
2. rejoin: the client joins ``--channels`` channels; the server restarts (close 1012, listen
   again on the same port); time from the restart to the last of the channels rejoined, as
   the server sees the joins. Default settings of both clients (their reconnect delays).

Run::

    .venv/bin/python benchmarks/bench_realtime.py --peer-python /tmp/rtvenv/bin/python

The ``realtime`` package speaks only vsn 1.0.0; ours is measured with 1.0.0 (like for like)
and with its default 2.0.0. Our default reconnect after a 1012 waits a jittered
``uniform(0, 1 s)`` on purpose (no thundering herd after a server restart); the
"v2 fast" row uses ``Backoff(initial_delay=0.01, max_delay=0.05)`` to show the rejoin itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent

# --------------------------------------------------------------------------- server process


async def serve(port: int) -> None:
    sys.path.insert(0, str(ROOT))
    from resilient_conn.testing.phoenix import PhoenixServer

    async with PhoenixServer(port=port, idle_timeout=None) as server:
        print(f"port {server.port}", flush=True)
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().split():
            cmd, *args = line
            if cmd == "blast":
                topic, n = args[0], int(args[1])
                pad = "x" * 64
                t0 = time.perf_counter()
                for i in range(n):
                    await server.broadcast(topic, "tick", {"i": i, "pad": pad})
                print(f"blasted {time.perf_counter() - t0:.6f}", flush=True)
            elif cmd == "restart":
                topics = [f"realtime:c{i}" for i in range(int(args[0]))]
                mark = len(server.joins)
                t0 = time.perf_counter()
                await server.restart()

                def rejoined(mark: int = mark, topics: list[str] = topics) -> bool:
                    fresh = {j.topic for j in list(server.joins)[mark:] if j.accepted}
                    return all(t in fresh for t in topics)

                try:
                    await asyncio.wait_for(server.wait_for(rejoined), 60)
                    print(f"rejoined {time.perf_counter() - t0:.6f}", flush=True)
                except TimeoutError:
                    print("rejoined nan", flush=True)
            elif cmd == "reset":
                server.joins.clear()
                server.pushes.clear()
                print("ok", flush=True)


# --------------------------------------------------------------------------- client processes


async def client_ours(url: str, n: int, channels: int, vsn: str, backoff: float | None) -> None:
    sys.path.insert(0, str(ROOT))
    from resilient_conn.backoff import Backoff
    from resilient_conn.realtime import RealtimeClient

    options: dict[str, Any] = {}
    if backoff is not None:
        options["backoff"] = Backoff(initial_delay=backoff, max_delay=backoff * 5)
    async with RealtimeClient(url, apikey="anon", vsn=vsn, max_queue=64, **options) as client:
        if channels:
            for i in range(channels):
                await client.channel(f"c{i}").subscribe()
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            return
        room = client.channel("bench", queue_size=10_000)
        await room.subscribe()
        print("ready", flush=True)
        count, first = 0, 0.0
        async for _ in room:
            count += 1
            if count == 1:
                first = time.perf_counter()
            if count == n:
                break
        print(f"done {time.perf_counter() - first:.6f}", flush=True)


async def client_theirs(url: str, n: int, channels: int) -> None:
    from realtime import AsyncRealtimeClient  # type: ignore[import-not-found]

    client = AsyncRealtimeClient(url.removesuffix("/websocket"), "anon")
    await client.connect()
    if channels:
        for i in range(channels):
            await client.channel(f"c{i}").subscribe()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await client.close()
        return
    done = asyncio.Event()
    state = {"count": 0, "first": 0.0}

    def on_tick(_: Any) -> None:
        state["count"] += 1
        if state["count"] == 1:
            state["first"] = time.perf_counter()
        if state["count"] == n:
            done.set()

    room = client.channel("bench")
    room.on_broadcast("tick", on_tick)
    await room.subscribe()
    print("ready", flush=True)
    await done.wait()
    print(f"done {time.perf_counter() - state['first']:.6f}", flush=True)
    await client.close()


# --------------------------------------------------------------------------- orchestration


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *argv: str) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return cls(proc)

    async def expect(self, word: str, timeout: float = 120) -> list[str]:
        assert self.proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not raw:
                raise RuntimeError(f"process ended while waiting for {word!r}")
            parts = raw.decode().split()
            if parts and parts[0] == word:
                return parts[1:]

    async def say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    me = str(HERE)
    server = await Proc.start(sys.executable, me, "serve", "--port", "0")
    port = int((await server.expect("port"))[0])
    url = f"ws://127.0.0.1:{port}/socket/websocket"
    impls = {
        "resilient_conn v1": [sys.executable, me, "client", "--impl", "ours", "--vsn", "1.0.0"],
        "resilient_conn v2": [sys.executable, me, "client", "--impl", "ours", "--vsn", "2.0.0"],
        "resilient_conn v2 fast": [
            *[sys.executable, me, "client", "--impl", "ours", "--vsn", "2.0.0"],
            *["--backoff", "0.01"],
        ],
    }
    if args.peer_python:
        impls["realtime (supabase-py)"] = [args.peer_python, me, "client", "--impl", "theirs"]
    rates: dict[str, list[float]] = {k: [] for k in impls}
    rejoins: dict[str, list[float]] = {k: [] for k in impls}
    try:
        for rnd in range(args.rounds):
            order = list(impls) if rnd % 2 == 0 else list(reversed(impls))
            for name in order:
                base = [*impls[name], "--url", url]
                client = await Proc.start(*base, "--messages", str(args.messages))
                await client.expect("ready")
                await server.say(f"blast realtime:bench {args.messages}")
                elapsed = float((await client.expect("done"))[0])
                blasted = float((await server.expect("blasted"))[0])
                if args.verbose:
                    print(f"  {name}: client {elapsed:.3f}s, server blast {blasted:.3f}s")
                await client.stop()
                rates[name].append(args.messages / elapsed)

                client = await Proc.start(*base, "--channels", str(args.channels))
                await client.expect("ready")
                await server.say(f"restart {args.channels}")
                rejoins[name].append(float((await server.expect("rejoined"))[0]))
                await client.say("quit")
                await client.stop()
                await server.say("reset")
                await server.expect("ok")
    finally:
        await server.stop()
    return {"rates": rates, "rejoins": rejoins}


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\nbroadcast throughput, {args.messages} messages, {args.rounds} rounds "
        "(median, min-max, msgs/s)"
    )
    for name, values in result["rates"].items():
        print(
            f"  {name:24s} {statistics.median(values):>10,.0f}   "
            f"({min(values):,.0f} - {max(values):,.0f})"
        )
    print(f"\nserver restart -> all {args.channels} channels rejoined (median, min-max, s)")
    for name, values in result["rejoins"].items():
        low, high = min(values), max(values)
        print(f"  {name:24s} {statistics.median(values):>10.3f}   ({low:.3f} - {high:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, default=0)
    c = sub.add_parser("client")
    c.add_argument("--impl", choices=["ours", "theirs"], required=True)
    c.add_argument("--url", required=True)
    c.add_argument("--vsn", default="2.0.0")
    c.add_argument("--messages", type=int, default=0)
    c.add_argument("--channels", type=int, default=0)
    c.add_argument("--backoff", type=float, default=None, help="initial reconnect delay (s)")
    parser.add_argument("--peer-python", default="/tmp/rtvenv/bin/python")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--channels", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--json", default=None, help="also write the raw figures here")
    args = parser.parse_args()
    if args.mode == "serve":
        asyncio.run(serve(args.port))
    elif args.mode == "client":
        if args.impl == "ours":
            asyncio.run(client_ours(args.url, args.messages, args.channels, args.vsn, args.backoff))
        else:
            asyncio.run(client_theirs(args.url, args.messages, args.channels))
    else:
        if args.peer_python and not Path(args.peer_python).exists():
            print(f"peer python {args.peer_python} not found: measuring ours only")
            args.peer_python = None
        report(asyncio.run(run(args)), args)


if __name__ == "__main__":
    main()
