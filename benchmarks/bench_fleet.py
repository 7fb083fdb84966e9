"""A fleet of client processes recovering from an upstream restart: local vs Redis coordinator.

An upstream WebSocket server runs in its own process. P client processes each hold C
``ResilientConnection``s to it. Once all are connected the upstream is SIGKILLed and started
again on the same port after the outage. Modes, side by side in the same run:

* ``none``:        no coordinator (each connection's own backoff and breaker)
* ``local``:       one ``RecoveryCoordinator`` per process (``LocalStore``)
* ``redis``:       one coordinator shared by the fleet (``RedisStore`` on a real redis-server)
* ``redis-killed``: as ``redis``, and Redis is SIGKILLed at the start of the outage and
  restarted after the upstream is back (every process must fall back and rejoin)

Printed per mode and outage: probe dials per second during the outage (fleet total), dials
during the outage, peak/mean dials per 100 ms after the return (over the 100 ms bins from the
first dial after the return until all are back), first-back and all-back time after the
return, connections not back, (Redis modes) fallbacks and rejoins summed over processes, and
probe dials after the return (more than one per process for ``local``, or more than one for
``redis``, means the circuit re-opened during the reconnection wave).

Defaults are modest for a shared 2-core machine (4 x 50 connections, outages 2 s and 5 s);
``--full`` is issue 14's size (4 x 250, outages 2 s and 20 s). Needs ``redis-server`` for
the redis modes (Debian: apt-get install redis-server).

Run: .venv/bin/python benchmarks/bench_fleet.py [--full] [--processes 4] [--connections 50]
     [--outages 2,5] [--modes none,local,redis,redis-killed] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.abc
import structlog

from resilient_conn import (
    Backoff,
    ConnectionState,
    LocalStore,
    RecoveryCoordinator,
    RedisStore,
    ResilientConnection,
    StateChange,
)
from resilient_conn.coordination import DialKind
from resilient_conn.testing.redis_server import RedisServer, free_port, redis_server_path

HERE = os.path.abspath(__file__)


def _quiet() -> None:
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


# ---------------------------------------------------------------------------------- upstream
async def upstream(port: int) -> None:
    """Echo server; prints 'ready' once listening."""
    from websockets.asyncio.server import serve

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", port, reuse_address=True, ping_interval=None):
        print("ready", flush=True)
        await asyncio.Future()


# ---------------------------------------------------------------------------------- client
class _RecordingPermit:
    """Wraps a coordinator's permit to timestamp probe admissions."""

    def __init__(self, inner: Any, probes: list[float]) -> None:
        self._inner = inner
        self._probes = probes

    async def __aenter__(self) -> Any:
        permit = await self._inner.__aenter__()
        if permit.kind is DialKind.PROBE:
            self._probes.append(time.time())
        return permit

    async def __aexit__(self, *exc: Any) -> None:
        await self._inner.__aexit__(*exc)


class RecordingCoordinator(RecoveryCoordinator):
    """A coordinator that records when it admitted each probe."""

    __slots__ = ("probes",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.probes: list[float] = []

    def permit(self, connection: str = "", *, on_wait: Any = None) -> Any:
        return _RecordingPermit(super().permit(connection, on_wait=on_wait), self.probes)


async def client(config: dict[str, Any]) -> None:
    """C connections; exits with a JSON report once every one came back after a drop."""
    _quiet()
    mode = config["mode"]
    url = f"ws://127.0.0.1:{config['port']}/"
    dials: list[float] = []
    back: dict[int, float] = {}
    dropped: set[int] = set()
    all_back = anyio.Event()
    n = config["connections"]

    async with AsyncExitStack() as stack:
        coordinator: RecordingCoordinator | None = None
        store: RedisStore | None = None
        if mode in ("redis", "redis-killed"):
            store = await stack.enter_async_context(
                RedisStore(config["redis_url"], namespace=config["namespace"])
            )
            coordinator = RecordingCoordinator("upstream", store=store)
        elif mode == "local":
            coordinator = RecordingCoordinator("upstream", store=LocalStore())

        def hook_for(i: int) -> Any:
            def hook(change: StateChange) -> None:
                if change.new is ConnectionState.CONNECTING:
                    dials.append(time.time())
                elif change.new is ConnectionState.CONNECTED and i in dropped and i not in back:
                    back[i] = time.time()
                    if len(back) == n:
                        all_back.set()
                elif change.old is ConnectionState.CONNECTED:
                    dropped.add(i)

            return hook

        conns = []
        for i in range(n):
            conn = ResilientConnection(
                url,
                name=f"c{i}",
                coordinator=coordinator,
                backoff=Backoff(),
                stable_after=2.0,
                ping_interval=0,
                close_timeout=1.0,
                open_timeout=5.0,
            )
            conn.on_state_change(hook_for(i))
            conns.append(await stack.enter_async_context(conn))
        with anyio.fail_after(60):
            for conn in conns:
                await conn.wait_connected(60)
        print(json.dumps({"ready": os.getpid()}), flush=True)
        with anyio.move_on_after(config["deadline"]):
            await all_back.wait()
            if store is not None and mode == "redis-killed":  # stay to see the rejoin
                with anyio.move_on_after(15):
                    await store.health_changed.wait_until(lambda: store.health().rejoins > 0, None)
        report = {
            "dials": dials,
            "back": list(back.values()),
            "not_back": n - len(back),
            "probes": coordinator.probes if coordinator is not None else [],
            "reopenings": coordinator.snapshot().reopenings if coordinator is not None else 0,
            "store": store.health().to_dict() if store is not None else None,
        }
        print(json.dumps({"report": report}), flush=True)
        # Exit without a graceful close of 250 connections: the report is what we wanted.
        os._exit(0)


# ---------------------------------------------------------------------------------- parent
async def _start_upstream(port: int) -> anyio.abc.Process:
    process = await anyio.open_process(
        [sys.executable, HERE, "upstream", str(port)], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    with anyio.fail_after(20):
        async for chunk in process.stdout:
            if b"ready" in chunk:
                break
    return process


async def _kill(process: anyio.abc.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGKILL)
    await process.wait()
    await process.aclose()


async def _read_lines(process: anyio.abc.Process, lines: list[dict[str, Any]], ready: Any) -> None:
    assert process.stdout is not None
    buffer = b""
    async for chunk in process.stdout:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for raw in complete:
            if raw.startswith(b"{"):
                line = json.loads(raw)
                lines.append(line)
                if "ready" in line:
                    ready.set()


async def run_case(
    args: argparse.Namespace, mode: str, outage: float, redis: Any
) -> dict[str, Any]:
    port = free_port()
    up = await _start_upstream(port)
    config = {
        "mode": mode,
        "port": port,
        "connections": args.connections,
        "redis_url": redis.url if redis is not None else "",
        "namespace": f"bench{port}",
        "deadline": outage + args.deadline,
    }
    outputs: list[list[dict[str, Any]]] = [[] for _ in range(args.processes)]
    async with anyio.create_task_group() as tg:
        procs = []
        readies = []
        for i in range(args.processes):
            proc = await anyio.open_process(
                [sys.executable, HERE, "client", json.dumps(config)], stdout=subprocess.PIPE
            )
            procs.append(proc)
            ready = anyio.Event()
            readies.append(ready)
            tg.start_soon(_read_lines, proc, outputs[i], ready)
        with anyio.fail_after(120):
            for ready in readies:
                await ready.wait()
        # Let every connection prove stable first (stable_after=2): a long-lived fleet, whose
        # drops are not failures, so each connection redials once when the upstream dies.
        await anyio.sleep(2.5)
        killed_at = time.time()
        await _kill(up)
        if mode == "redis-killed":
            await redis.kill()
        await anyio.sleep(outage)  # the outage itself
        up = await _start_upstream(port)
        returned_at = time.time()
        if mode == "redis-killed":
            await anyio.sleep(min(1.0, outage))  # Redis comes back after the upstream
            await redis.start()
        with anyio.fail_after(outage + args.deadline + 60):
            for proc in procs:
                await proc.wait()
    await _kill(up)
    for proc in procs:
        await proc.aclose()
    reports = [line["report"] for out in outputs for line in out if "report" in line]
    summary = _summarise(reports, killed_at, returned_at, args.processes * args.connections)
    summary["not_back"] += (args.processes - len(reports)) * args.connections  # crashed
    return summary


def _summarise(
    reports: list[dict[str, Any]], killed_at: float, returned_at: float, total: int
) -> dict[str, Any]:
    dials = sorted(t for r in reports for t in r["dials"])
    probes = [t for r in reports for t in r["probes"]]
    back = sorted(t for r in reports for t in r["back"])
    outage = returned_at - killed_at
    outage_probes = sum(1 for t in probes if killed_at <= t < returned_at)
    outage_dials = sum(1 for t in dials if killed_at <= t < returned_at)
    end = back[-1] if len(back) == total else max([returned_at, *dials])
    # The reconnection wave: from the first dial after the return until all are back (the
    # silent wait for the probe time before it would only lower the mean).
    after = [t for t in dials if returned_at <= t <= end]
    start = after[0] if after else returned_at
    bins = max(1, int((end - start) / 0.1) + 1)
    counts = [0] * bins
    for t in after:
        counts[min(bins - 1, int((t - start) / 0.1))] += 1
    mean = sum(counts) / bins
    return {
        "probes_per_s": outage_probes / outage,
        "probes_after": sum(1 for t in probes if t >= returned_at),
        "outage_dials": outage_dials,
        "peak_mean": (max(counts) / mean) if mean else 0.0,
        "first_back": (back[0] - returned_at) if back else None,
        "all_back": (back[-1] - returned_at) if len(back) == total else None,
        "not_back": sum(r["not_back"] for r in reports),
        "fallbacks": sum((r["store"] or {}).get("fallbacks", 0) for r in reports),
        "rejoins": sum((r["store"] or {}).get("rejoins", 0) for r in reports),
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


async def main(args: argparse.Namespace) -> None:
    _quiet()
    modes = args.modes.split(",")
    outages = [float(x) for x in args.outages.split(",")]
    need_redis = any(m.startswith("redis") for m in modes)
    if need_redis and redis_server_path() is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    print(
        f"fleet: {args.processes} processes x {args.connections} connections, "
        f"rounds={args.rounds}; median over rounds (max in brackets for all-back)"
    )
    header = (
        f"{'mode':<13}{'outage':>7}{'probes/s':>10}{'out.dials':>10}{'peak/mean':>10}"
        f"{'first':>7}{'all back':>15}{'not back':>9}{'fallb.':>7}{'rejoin':>7}{'pr.after':>9}"
    )
    print(header)
    async with AsyncExitStack() as stack:
        redis = None
        if need_redis:
            redis = await stack.enter_async_context(RedisServer())
        for outage in outages:
            for mode in modes:
                rows = []
                for _ in range(args.rounds):
                    if redis is not None and not redis.running:
                        await redis.start()
                    rows.append(await run_case(args, mode, outage, redis))
                med = {
                    k: statistics.median([r[k] for r in rows if r[k] is not None] or [None])
                    if k != "not_back"
                    else sum(r[k] for r in rows)
                    for k in rows[0]
                }
                worst = [r["all_back"] for r in rows if r["all_back"] is not None]
                print(
                    f"{mode:<13}{outage:>7.1f}{med['probes_per_s']:>10.2f}"
                    f"{med['outage_dials']:>10.0f}{med['peak_mean']:>10.2f}"
                    f"{_fmt(med['first_back']):>7}"
                    f"{_fmt(med['all_back']):>8} ({_fmt(max(worst) if worst else None)})"
                    f"{med['not_back']:>8}{med['fallbacks']:>7.0f}{med['rejoins']:>7.0f}"
                    f"{med['probes_after']:>9.0f}",
                    flush=True,
                )


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="issue 14 sizes: 4 x 250, 2 s + 20 s")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--outages", default=None, help="seconds, comma-separated (2,5)")
    parser.add_argument("--modes", default="none,local,redis,redis-killed")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds after the return")
    args = parser.parse_args()
    if args.full:
        args.connections = 250
        args.outages = args.outages or "2,20"
    args.outages = args.outages or "2,5"
    return args


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "upstream":
        _quiet()
        asyncio.run(upstream(int(sys.argv[2])))
    elif len(sys.argv) > 1 and sys.argv[1] == "client":
        asyncio.run(client(json.loads(sys.argv[2])))
    else:
        asyncio.run(main(_parse()))
