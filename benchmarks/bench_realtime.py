"""Realtime benchmark: resilient_conn's RealtimeClient vs supabase-py's ``realtime`` package.

Both clients talk to the same PhoenixServer, which runs in a process of its own; each client
runs in its own process too (the ``realtime`` package pins an older websockets, so it lives in
a separate virtualenv: ``python3 -m venv /tmp/rtvenv && /tmp/rtvenv/bin/pip install realtime``).

Two measurements, in one run, with the client order alternating per round (a third with
``--outage``):

1. throughput: the server fans out ``--messages`` broadcasts on one topic as fast as the
   socket takes them; the client counts them; rate = messages / (last - first arrival).
2. rejoin: the client joins ``--channels`` channels; the server restarts (close 1012, listen
   again on the same port); time from the restart to the last of the channels rejoined, as
   the server sees the joins. Default settings of both clients (their reconnect delays).
3. recovery after a long outage (``--outage SECONDS``, ``--outage-rounds``, ``--outage-wait``):
   the client joins ``--channels`` channels; the server closes every socket with 1012 and
   STOPS LISTENING (dials are refused) for ``--outage`` seconds, then listens again on the
   same port; did every channel get rejoined within ``--outage-wait`` seconds of the server's
   return, and when (as the server sees the joins)? Afterwards each client reports its own
   state: ours its connection state and dial count, ``realtime`` whether it gave up.

   The ``realtime`` package's reconnect schedule (version 2.34.1, file
   ``realtime/_async/client.py``): ``AsyncRealtimeClient.__init__`` defaults to
   ``max_retries=5, initial_backoff=1.0``; ``AsyncRealtimeClient.connect`` loops
   ``while retries < self.max_retries``, and after failed try ``n`` sleeps
   ``min(initial_backoff * 2 ** (n - 1), 60)``, i.e. 1, 2, 4, 8 s, then re-raises after the
   5th failed try ("Connection failed permanently after 5 attempts"). That ``connect`` runs
   in the ``_listen`` task (``_listen`` -> ``_on_connect_error`` -> ``_reconnect`` ->
   ``connect``), so nothing catches the error and nothing dials again: the channels'
   rejoin timers (``AsyncRealtimeChannel._rejoin_if_connected``) only act while connected.
   The whole schedule spans ~15 s (plus five refused dials), so an outage of 20 s or more
   outlasts it.

Run::

    .venv/bin/python benchmarks/bench_realtime.py --peer-python /tmp/rtvenv/bin/python
    .venv/bin/python benchmarks/bench_realtime.py --outage 20 --outage-rounds 2  # + outage

The ``realtime`` package speaks only vsn 1.0.0; ours is measured with 1.0.0 (like for like)
and with its default 2.0.0. Our default reconnect after a 1012 waits a jittered
``uniform(0, 1 s)`` on purpose (no thundering herd after a server restart); the
"v2 fast" row uses ``Backoff(initial_delay=0.01, max_delay=0.05)`` to show the rejoin itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
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
            elif cmd == "outage":
                count, down_for, wait = int(args[0]), float(args[1]), float(args[2])
                topics = [f"realtime:c{i}" for i in range(count)]
                mark = len(server.joins)
                t_down = time.monotonic()
                await server.stop(1012)  # close every socket, stop listening: dials refused
                await asyncio.sleep(down_for)
                await server.start()  # same port
                t_up = time.monotonic()

                def recovered(mark: int = mark, topics: list[str] = topics) -> bool:
                    fresh = {j.topic for j in list(server.joins)[mark:] if j.accepted}
                    return all(t in fresh for t in topics)

                try:
                    await asyncio.wait_for(server.wait_for(recovered), wait)
                    now = time.monotonic()
                    print(f"recovered {now - t_down:.6f} {now - t_up:.6f} {t_down}", flush=True)
                except TimeoutError:
                    print(f"recovered nan nan {t_down}", flush=True)
            elif cmd == "reset":
                server.joins.clear()
                server.pushes.clear()
                print("ok", flush=True)


# --------------------------------------------------------------------------- client processes


async def client_ours(url: str, n: int, channels: int, vsn: str, backoff: float | None) -> None:
    import structlog

    # Logs must not go to stdout: it is the pipe the parent reads (and does not drain while it
    # waits on the server), so a chatty client would block once the pipe buffer is full.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    sys.path.insert(0, str(ROOT))
    from resilient_conn.realtime import ChannelState, RealtimeClient
    from resilient_conn.resilience.backoff import Backoff

    options: dict[str, Any] = {}
    if backoff is not None:
        options["backoff"] = Backoff(initial_delay=backoff, max_delay=backoff * 5)
    async with RealtimeClient(url, apikey="anon", vsn=vsn, max_queue=64, **options) as client:
        if channels:
            rooms = [client.channel(f"c{i}") for i in range(channels)]
            for room in rooms:
                await room.subscribe()
            print("ready", flush=True)
            loop = asyncio.get_running_loop()
            while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "status":
                conn, joined = client.connection, sum(c.state is ChannelState.JOINED for c in rooms)
                print(
                    f"status state={conn.state.value} dials={conn.stats.dials} "
                    f"joined={joined}/{len(rooms)}",
                    flush=True,
                )
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

    watch = _ReconnectWatch()
    logging.getLogger("realtime._async.client").addHandler(watch)
    client = AsyncRealtimeClient(url.removesuffix("/websocket"), "anon")
    await client.connect()
    if channels:
        for i in range(channels):
            await client.channel(f"c{i}").subscribe()
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "status":
            gave_up = "none" if watch.gave_up is None else f"{watch.gave_up:.6f}"
            joined = sum(c.is_joined for c in client.channels.values())
            print(
                f"status connected={client.is_connected} failed_dials={watch.failed} "
                f"joined={joined}/{len(client.channels)} gave_up_at={gave_up}",
                flush=True,
            )
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


class _ReconnectWatch(logging.Handler):
    """Counts the ``realtime`` package's failed dials and notes when it gives up (its logs)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.failed = 0
        self.gave_up: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("Connection attempt failed"):
            self.failed += 1
        elif text.startswith("Connection failed permanently") and self.gave_up is None:
            self.gave_up = time.monotonic()


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
    url = f"ws://127.0.0.1:{port}/realtime/v1/websocket"
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
        outages = await run_outage(args, server, impls, url) if args.outage else {}
    finally:
        await server.stop()
    return {"rates": rates, "rejoins": rejoins, "outages": outages}


async def run_outage(
    args: argparse.Namespace, server: Proc, impls: dict[str, list[str]], url: str
) -> dict[str, list[dict[str, Any]]]:
    """Measurement 3: each client joins, the server is down for args.outage s, then up."""
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in impls}
    for rnd in range(args.outage_rounds):
        order = list(impls) if rnd % 2 == 0 else list(reversed(impls))
        for name in order:
            client = await Proc.start(*impls[name], "--url", url, "--channels", str(args.channels))
            await client.expect("ready")
            await server.say(f"outage {args.channels} {args.outage} {args.outage_wait}")
            timeout = args.outage + args.outage_wait + 30
            since_down, since_up, t_down = map(
                float, await server.expect("recovered", timeout=timeout)
            )
            await asyncio.sleep(1)  # let the client read the join replies the server sent
            await client.say("status")
            status = dict(kv.split("=", 1) for kv in await client.expect("status"))
            if status.get("gave_up_at", "none") != "none":
                status["gave_up_at"] = f"{float(status['gave_up_at']) - t_down:.1f}s after down"
            row = {"since_down": since_down, "since_up": since_up, "status": status}
            if args.verbose:
                print(f"  outage {name}: {row}")
            results[name].append(row)
            await client.say("quit")
            await client.stop()
            await server.say("reset")
            await server.expect("ok")
    return results


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    if args.rounds:  # --rounds 0 measures only the outage
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
    if result["outages"]:
        print(
            f"\nserver DOWN {args.outage:g} s (dials refused), then up -> all {args.channels} "
            f"channels rejoined within {args.outage_wait:g} s of its return? "
            f"({args.outage_rounds} rounds; s after the server came back, median, min-max)"
        )
        for name, rows in result["outages"].items():
            ok = [r["since_up"] for r in rows if not math.isnan(r["since_up"])]
            if ok:
                figure = f"{statistics.median(ok):>10.3f}   ({min(ok):.3f} - {max(ok):.3f})"
            else:
                figure = f"{'never':>10s}   (not within {args.outage_wait:g} s)"
            print(f"  {name:24s} {figure}   rejoined {len(ok)}/{len(rows)}")
            for r in rows:
                status = " ".join(f"{k}={v}" for k, v in r["status"].items())
                print(f"  {'':24s}   client after: {status}")
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
    parser.add_argument(
        "--outage", type=float, default=0, help="also measure a server outage this long (s)"
    )
    parser.add_argument("--outage-rounds", type=int, default=2)
    parser.add_argument(
        "--outage-wait", type=float, default=90, help="bound on the rejoin wait after it (s)"
    )
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
