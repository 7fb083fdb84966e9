"""Recovery after a server outage: ResilientConnection vs websockets' ``async for connect()``.

The server runs in a process of its own and greets every new connection with one message.
For each outage (2 s, 20 s and 120 s, times ``--scale``) and each case (1 client, and
``--clients`` clients spread over ``--procs`` processes per library, each client its own
connection) the run SIGKILLs the server, waits out the outage, starts a new server process on
the same port and measures, per library, side by side in the same run against the same
server:

* delay from the server's return (it is listening again) to each client's first message:
  median and max, and the all-back time (the last client's first message, after the return);
* dials during the outage (every client together) and per client (median);
* peak and mean dials per 100 ms in the wave of redials after the return, from its first dial
  until every client is back (a stampede has a high peak/mean ratio; a ramp is flat; a
  coordinator's wait for its probe before the wave does not count);
* clients not back within ``--wait`` seconds of the return.

Dials are counted in the clients: ResilientConnection's URL is a callable evaluated before
every dial; websockets' through ``process_exception`` (every failed attempt) plus every
connection it yields. Times are ``time.monotonic()``, which Linux shares across processes.
Between rounds the run waits ``--settle`` seconds (longer than ``stable_after``, 10 s), so each
round starts from stable connections. Library defaults throughout (``--backoff`` to change
ResilientConnection's).

``--coordinator``: the ResilientConnections of each client process share one
``RecoveryCoordinator`` (default settings, in-process store; so ``--procs`` coordinators in
all); with ``--store redis`` every client process uses the same coordinator state in one
Redis (a ``redis-server`` this run starts on 127.0.0.1): all N clients share one circuit, one
probe and one ramp. An error if this checkout has no ``resilient_conn.coordination``.

Run (default: 1,000 clients in 2 processes per library, 3 rounds, full-length outages)::

    .venv/bin/python benchmarks/bench_recovery.py
    .venv/bin/python benchmarks/bench_recovery.py --clients 200 --scale 0.25 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib.util
import json
import logging
import math
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent


def _quiet() -> None:
    """Silence logs (before the library is imported: it binds its loggers at import time)."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    logging.getLogger("websockets").setLevel(logging.CRITICAL)


_quiet()
# find_spec of a submodule imports the package itself, so this comes after _quiet().
HAVE_COORDINATION = importlib.util.find_spec("resilient_conn.coordination") is not None
OUTAGES = (2.0, 20.0, 120.0)
KINDS = ("resilient_conn", "websockets")
SHOW_WAVE = False


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --------------------------------------------------------------------------- server process


async def serve(port: int) -> None:
    from websockets.asyncio.server import ServerConnection
    from websockets.asyncio.server import serve as ws_serve
    from websockets.exceptions import ConnectionClosed

    async def greet(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send("hello")
            async for _ in ws:
                pass

    async with ws_serve(greet, "127.0.0.1", port, ping_interval=None, backlog=4096):
        print(f"listening {time.monotonic():.6f}", flush=True)
        await asyncio.Future()


# --------------------------------------------------------------------------- client processes


class Tally:
    """How many clients still wait for their first message since the last mark."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.pending = count
        self.all_back = asyncio.Event()

    def mark(self) -> None:
        self.pending = self.count
        self.all_back = asyncio.Event()


class Record:
    """Dial times and first-message time of one client since the last mark."""

    __slots__ = ("dials", "failed", "first", "tally")

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.dials: list[float] = []
        self.failed: list[tuple[float, str]] = []  # ours: dials that failed, and how
        self.first: float | None = None

    def dialed(self) -> None:
        self.dials.append(time.monotonic())

    def got(self) -> None:
        if self.first is None:
            self.first = time.monotonic()
            self.tally.pending -= 1
            if self.tally.pending == 0:
                self.tally.all_back.set()


async def run_ours(url: str, rec: Record, options: dict[str, Any]) -> None:
    from resilient_conn import ResilientConnection

    def dial_url() -> str:
        rec.dialed()
        return url

    def on_change(change: Any) -> None:
        if change.old.name == "CONNECTING" and change.new.name != "CONNECTED":
            rec.failed.append((time.monotonic(), change.reason.split(";")[0]))

    async with ResilientConnection(dial_url, **options) as conn:
        conn.on_state_change(on_change)
        async for _ in conn:
            rec.got()


async def run_websockets(url: str, rec: Record) -> None:
    from websockets.asyncio.client import connect, process_exception
    from websockets.exceptions import ConnectionClosed

    def count_failure(exc: Exception) -> Exception | None:
        rec.dialed()
        return process_exception(exc)

    async for ws in connect(url, process_exception=count_failure, open_timeout=10):
        rec.dialed()
        try:
            async for _ in ws:
                rec.got()
        except ConnectionClosed:
            continue


async def clients(
    kind: str, url: str, count: int, backoff: str | None, coord: bool, redis: str | None
) -> None:
    _raise_fd_limit()
    options: dict[str, Any] = {}
    if backoff:
        from resilient_conn import Backoff

        initial, cap = (float(x) for x in backoff.split(","))
        options["backoff"] = Backoff(initial, cap)
    async with contextlib.AsyncExitStack() as stack:
        if coord:
            options["coordinator"] = await make_coordinator(stack, redis)
        await _serve_clients(kind, url, count, options)


async def _serve_clients(kind: str, url: str, count: int, options: dict[str, Any]) -> None:
    tally = Tally(count)
    records = [Record(tally) for _ in range(count)]
    tasks = [
        asyncio.create_task(
            run_ours(url, rec, options) if kind == "resilient_conn" else run_websockets(url, rec)
        )
        for rec in records
    ]
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        if line == "ready?":  # every client has its first message
            await tally.all_back.wait()
            print("ready", flush=True)
        elif line == "mark":  # start a round: forget what came before
            tally.mark()
            for rec in records:
                rec.dials.clear()
                rec.failed.clear()
                rec.first = None
            print("marked", flush=True)
        elif line.startswith("back?"):  # wait (bounded) until every client has a message
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tally.all_back.wait(), float(line.split()[1]))
            print(json.dumps([[r.dials, r.first, r.failed] for r in records]), flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def make_coordinator(stack: contextlib.AsyncExitStack, redis: str | None) -> Any:
    """One RecoveryCoordinator (default settings) for this process's connections: its state
    in this process, or (``redis``) in the Redis every client process shares."""
    if not HAVE_COORDINATION:
        raise SystemExit("--coordinator: resilient_conn.coordination is not in this checkout")
    from resilient_conn.coordination import RecoveryCoordinator, RedisStore

    if redis is None:
        return RecoveryCoordinator(f"bench-{os.getpid()}")
    store = await stack.enter_async_context(RedisStore(redis, namespace="bench-recovery"))
    return RecoveryCoordinator("bench", store=store)


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    """A throw-away redis-server on 127.0.0.1 (no persistence); its URL."""
    from resilient_conn.testing.redis_server import free_port, redis_server_path

    path = redis_server_path()
    if path is None:
        raise SystemExit("--store redis: no redis-server on this machine")
    port = free_port()
    proc = subprocess.Popen(
        [path, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("--store redis: redis-server did not start")


# --------------------------------------------------------------------------- orchestration


class Proc:
    """A child process of this script, spoken to line by line."""

    def __init__(self, *args: str) -> None:
        self.p = subprocess.Popen(
            [sys.executable, str(HERE), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def say(self, line: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def hear(self) -> str:
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"child {self.p.args} ended (rc={self.p.poll()})")
        return line.strip()

    def stop(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError, ValueError):
            if self.p.stdin is not None:
                self.p.stdin.close()
        try:
            self.p.wait(15)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def start_server(port: int) -> tuple[Proc, float]:
    server = Proc("--serve", str(port))
    word, at = server.hear().split()
    assert word == "listening"
    return server, float(at)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summarise(records: list[Any], down: float, back: float) -> dict:
    delays = sorted(first - back for _, first, _ in records if first is not None)
    missing = sum(1 for _, first, _ in records if first is None)
    during = [sum(1 for t in dials if down <= t < back) for dials, _, _ in records]
    end = back + (delays[-1] if delays else 0.0)
    after = sorted(t for dials, _, _ in records for t in dials if back <= t <= end)
    failed = collections.Counter(
        kind for _, _, fails in records for t, kind in fails if back <= t <= end
    )
    start = after[0] if after else back  # the wave of redials: its first dial to all back
    buckets = max(1, math.ceil((end - start) / 0.1))
    counts = [0] * buckets
    for t in after:
        counts[min(buckets - 1, int((t - start) / 0.1))] += 1
    mean = len(after) / buckets
    return {
        "wave": counts,
        "failed_after": dict(failed),
        "wait": start - back,
        "median": statistics.median(delays) if delays else math.nan,
        "max": delays[-1] if delays else math.nan,
        "dials_outage": sum(during),
        "dials_outage_per_client": statistics.median(during),
        "peak_mean": (max(counts) / mean) if mean else math.nan,
        "missing": missing,
    }


def run_case(args: argparse.Namespace, port: int, n: int, outage: float) -> dict[str, list]:
    per_proc = [n // args.procs + (1 if i < n % args.procs else 0) for i in range(args.procs)]
    per_proc = [c for c in per_proc if c]
    server, _ = start_server(port)
    url = f"ws://127.0.0.1:{port}/"
    kinds = [k for k in KINDS if not (k == "websockets" and args.no_peer)]
    groups: dict[str, list[Proc]] = {}
    for kind in kinds:
        coordinated = args.coordinator and kind == "resilient_conn"
        extra = (["--backoff", args.backoff] if args.backoff else []) + (
            ["--coordinator"] if coordinated else []
        ) + (["--redis", args.redis_url] if coordinated and args.redis_url else [])
        groups[kind] = [
            Proc("--client", kind, url, str(count), *extra) for count in per_proc
        ]
    results: dict[str, list] = {kind: [] for kind in kinds}
    try:
        for procs in groups.values():
            for proc in procs:
                proc.say("ready?")
            for proc in procs:
                assert proc.hear() == "ready"
        for _ in range(args.rounds):
            time.sleep(args.settle)  # a fixed settle time: connections must be stable again
            for procs in groups.values():
                for proc in procs:
                    proc.say("mark")
                    assert proc.hear() == "marked"
            down = time.monotonic()
            server.p.send_signal(signal.SIGKILL)
            server.p.wait()
            time.sleep(outage)  # the outage itself: the server is away this long
            server, back = start_server(port)
            for procs in groups.values():
                for proc in procs:
                    proc.say(f"back? {args.wait}")
            for kind, procs in groups.items():
                records: list[Any] = []
                for proc in procs:
                    line = proc.hear()
                    try:
                        records.extend(json.loads(line))
                    except ValueError:
                        raise RuntimeError(f"bad report from a client: {line[:300]!r}") from None
                results[kind].append(summarise(records, down, back))
    finally:
        for procs in groups.values():
            for proc in procs:
                proc.stop()
        server.p.kill()
        server.p.wait()
    return results


def show(label: str, rounds: list[dict], many: bool) -> None:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    worst = max(r["max"] for r in rounds)
    missing = sum(r["missing"] for r in rounds)
    ratio = f"{med('peak_mean'):5.2f}" if many else "  n/a"  # one dial: no shape to speak of
    print(
        f"  {label:<16} first msg after return: median {med('median'):6.2f} s, "
        f"max {worst:6.2f} s | all back (median of rounds) {med('max'):6.2f} s | "
        f"dials in outage {med('dials_outage'):6.0f} ({med('dials_outage_per_client'):.0f}/client)"
        f" | peak/mean per 100 ms {ratio} | not back {missing}"
    )
    per_round = ", ".join(f"{r['max']:.2f}" for r in rounds)
    print(f"  {'':<16} all back, per round: {per_round} s")
    if many and SHOW_WAVE:
        for r in rounds:
            print(f"  {'':<16} wave from {r['wait']:.2f} s after return, dials per 100 ms: "
                  f"{' '.join(str(c) for c in r['wave'])}; failed dials in it: "
                  f"{r['failed_after'] or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=1000, help="N of the many-client case")
    parser.add_argument("--procs", type=int, default=2, help="client processes per library")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every outage")
    parser.add_argument("--outages", default=",".join(f"{o:g}" for o in OUTAGES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=11.0, help="seconds between rounds")
    parser.add_argument("--wait", type=float, default=150.0, help="max wait after the return")
    parser.add_argument("--backoff", help="ResilientConnection backoff as INITIAL,MAX")
    parser.add_argument("--coordinator", action="store_true")
    parser.add_argument(
        "--store", choices=("local", "redis"), default="local", help="the coordinator's state"
    )
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--no-peer", action="store_true", help="skip websockets' clients")
    parser.add_argument("--only", choices=("1", "N"), help="run only the 1- or N-client case")
    parser.add_argument("--wave", action="store_true", help="print each round's dials per 100 ms")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=3, metavar=("KIND", "URL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        _raise_fd_limit()
        asyncio.run(serve(args.serve))
        return
    if args.client is not None:
        kind, url, count = args.client
        asyncio.run(clients(kind, url, int(count), args.backoff, args.coordinator, args.redis))
        return
    global SHOW_WAVE
    SHOW_WAVE = args.wave
    if args.coordinator and not HAVE_COORDINATION:
        raise SystemExit("--coordinator: resilient_conn.coordination is not in this checkout")
    _raise_fd_limit()
    redis_proc = None
    args.redis_url = None
    if args.coordinator and args.store == "redis":
        redis_proc, args.redis_url = start_redis()
    try:
        run_all(args)
    finally:
        if redis_proc is not None:
            redis_proc.kill()
            redis_proc.wait()


def run_all(args: argparse.Namespace) -> None:
    """Every outage and case of the run, printed as they finish."""
    port = free_port()
    outages = [float(o) * args.scale for o in args.outages.split(",")]
    cases = [n for n in (1, args.clients) if args.only is None or (args.only == "1") == (n == 1)]
    print(
        f"bench_recovery: outages {', '.join(f'{o:g}' for o in outages)} s, cases {cases} "
        f"clients ({args.procs} processes per library for N), {args.rounds} rounds, "
        f"coordinator={args.store if args.coordinator else 'off'}, cpus={os.cpu_count()}"
    )
    for outage in outages:
        for n in cases:
            print(f"outage {outage:g} s, {n} client(s) per library:", flush=True)
            results = run_case(args, port, n, outage)
            for kind, rounds in results.items():
                label = kind + (" +coord" if args.coordinator and kind != "websockets" else "")
                show(label, rounds, n > 1)


if __name__ == "__main__":
    main()
