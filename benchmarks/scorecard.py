"""Reliability scorecard: fixed fault scenarios on loopback, ours side by side with the peers.

One command answers "what happens to my consumer when the network or the server misbehaves,
compared with what I use now?". For each scenario and each client it starts a fresh server
(``ScriptedServer`` streaming sequence-numbered messages, or the ``PhoenixServer`` broadcasting
them on a channel) behind a ``ChaosProxy``, all in this process, and the client in a process of
its own (``benchmarks/scorecard_client.py``), then injects the fault and measures.

Clients: ``ours`` = ResilientConnection (defaults), ``ws`` = websockets' ``async for ws in
connect()`` loop (defaults), ``rt`` = resilient_conn's RealtimeClient (defaults), ``peer`` =
supabase-py's ``realtime`` package in another interpreter (``--peer-python``; it pins
websockets 15, so it needs a virtualenv of its own, see benchmarks/bench_realtime.py).

Why a script and not a ``resilient-conn scorecard`` subcommand: it drives other interpreters
and third-party clients, spawns processes and runs for minutes; none of that belongs in the
installed package or its dependency set, and the numbers are about this repository's code
at this commit. It lives next to the other benchmarks and CI runs ``--quick``.

Figures (server side where the server can see it; the client process records only what a
server cannot: refused dials and what reached the consumer, on the same system-wide monotonic
clock):

- notice: fault -> the client abandons the dead connection (the proxy sees it close).
  Only for faults that send no signal (blackhole, a peer that stops reading).
- back->msg: the server's return (or the fault, if the server stays up) -> the first message
  the consumer receives.
- dials: TCP dials during the fault window (the client process's ``create_connection``
  calls, library-neutral); peak/s: most dials in any 1 s window of the run.
- errors: errors that reached the application's consumer/producer code.
- out d/dl/lost: messages the producer sent (send() returned) -> delivered to the server /
  dead-lettered (reported by the library) / lost (neither: gone without a word).
- in lost: messages the server handed to its socket that the consumer never got.
- rss: client RSS growth from ready to the end, MB.

Run::

    .venv/bin/python benchmarks/scorecard.py                       # full table (~6 min)
    .venv/bin/python benchmarks/scorecard.py --peer-python /tmp/rtvenv/bin/python
    .venv/bin/python benchmarks/scorecard.py --quick               # CI: guarantees, ~30 s
    .venv/bin/python benchmarks/scorecard.py --soak 10000          # reconnect cycles, leaks
    .venv/bin/python benchmarks/scorecard.py --only kill_short,flood --clients ours,ws

``--quick`` exits 1 when a guarantee of ours regresses (see ``GUARANTEES``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from resilient_conn.testing import ChaosProxy, PhoenixServer, ScriptedServer  # noqa: E402

CLIENT = str(HERE / "scorecard_client.py")
TICK = 0.02  # the server sends one message every TICK seconds; the client sends as often
PLAIN = ("ours", "ws")
REALTIME = ("rt", "peer")
SHORT_PING = 1.0  # keepalive of the "short keepalive" blackhole (interval and timeout)


# --------------------------------------------------------------------------- servers


class WsBackend:
    """A ScriptedServer that streams ``{"seq": n}`` every TICK and records what it receives."""

    def __init__(self) -> None:
        self.server = ScriptedServer(self.handler, ping_interval=None, max_size=2**22)
        self.written = 0
        self.received = 0
        self.streaming = True
        self.reading = asyncio.Event()
        self.reading.set()
        self.flood = 0  # messages to send back to back on the next connection
        self._seq = 0

    async def handler(self, ws: Any, server: ScriptedServer) -> None:
        async def pump() -> None:
            while True:
                if self.flood:
                    n, self.flood = self.flood, 0
                    for _ in range(n):
                        self._seq += 1
                        await ws.send(json.dumps({"seq": self._seq, "pad": "f" * 256}))
                        self.written += 1
                await asyncio.sleep(TICK)
                if self.streaming:
                    self._seq += 1
                    await ws.send(json.dumps({"seq": self._seq}))
                    self.written += 1

        task = asyncio.create_task(pump())
        try:
            while True:
                await self.reading.wait()
                await ws.recv()
                self.received += 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @property
    def port(self) -> int:
        return self.server.port

    def path(self) -> str:
        return "/"

    async def close_all(self, code: int, reason: str = "") -> None:
        await self.server.close_all(code, reason)

    def connections(self) -> int:
        return self.server.connection_count

    def open_count(self) -> int:
        return len(self.server.open_connections)

    async def __aenter__(self) -> WsBackend:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()


class PhxBackend:
    """A PhoenixServer with a task broadcasting ``tick {"seq": n}`` on the scorecard channel."""

    TOPIC = "realtime:scorecard"

    def __init__(self) -> None:
        self.server = PhoenixServer(idle_timeout=None)
        self.written = 0
        self.streaming = True
        self.flood = 0
        self._seq = 0
        self._task: asyncio.Task[None] | None = None

    async def _pump(self) -> None:
        while True:
            if self.flood:
                n, self.flood = self.flood, 0
                for _ in range(n):
                    self._seq += 1
                    payload = {"seq": self._seq, "pad": "f" * 256}
                    self.written += await self.server.broadcast(self.TOPIC, "tick", payload)
            await asyncio.sleep(TICK)
            if self.streaming:
                self._seq += 1
                self.written += await self.server.broadcast(self.TOPIC, "tick", {"seq": self._seq})

    @property
    def received(self) -> int:
        return sum(
            1
            for m in list(self.server.pushes)
            if m.event == "broadcast"
            and isinstance(m.payload, dict)
            and m.payload.get("event") == "up"
        )

    @property
    def port(self) -> int:
        return self.server.port

    def path(self) -> str:
        return "/realtime/v1/websocket"  # Supabase's path: topics get the realtime: prefix

    async def close_all(self, code: int, reason: str = "") -> None:
        await self.server.close_all(code, reason)

    def connections(self) -> int:
        return sum(1 for j in list(self.server.joins) if j.accepted)

    def open_count(self) -> int:
        return self.server.open_connections

    async def __aenter__(self) -> PhxBackend:
        await self.server.start()
        self._task = asyncio.create_task(self._pump())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.server.stop()


class Responder:
    """Takes the proxy's port while it refuses: answers each dial with an HTTP status (or, with
    ``status=None``, closes the TCP connection at once) and timestamps it (server-side dials)."""

    def __init__(self, port: int, status: int | None, headers: dict[str, str]) -> None:
        self.port, self.status, self.headers = port, status, headers
        self.times: list[float] = []
        self._server: asyncio.Server | None = None

    async def _on(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.times.append(time.monotonic())
        try:
            if self.status is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
                body = b'{"error": "scorecard"}'
                head = f"HTTP/1.1 {self.status} Scorecard\r\nContent-Length: {len(body)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
                writer.write(head.encode() + b"Content-Type: application/json\r\n\r\n" + body)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        for _ in range(50):  # the proxy's socket may linger a moment
            try:
                self._server = await asyncio.start_server(
                    self._on, "127.0.0.1", self.port, reuse_address=True
                )
                return
            except OSError:
                await asyncio.sleep(0.01)
        raise RuntimeError(f"could not take port {self.port}")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)


class ProxyWatch:
    """Timestamps of the proxy's accepted connections and of pairs closing (event-driven)."""

    def __init__(self, proxy: ChaosProxy) -> None:
        self.proxy = proxy
        self.accepts: list[float] = []
        self.closes: list[float] = []

    async def run(self) -> None:
        seen = self.proxy.stats
        while True:
            before = seen
            await self.proxy.wait_until(lambda s, b=before: s != b, timeout=None)
            seen = self.proxy.stats
            now = time.monotonic()
            self.accepts += [now] * max(0, seen.connections_accepted - before.connections_accepted)
            self.closes += [now] * max(0, before.connections_active - seen.connections_active)


# --------------------------------------------------------------------------- client process


class Client:
    """One client process (scorecard_client.py) and its JSON-lines channel."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.result: dict[str, Any] | None = None
        self.ready: dict[str, Any] | None = None

    @classmethod
    async def start(cls, python: str, kind: str, url: str, spec: dict[str, Any]) -> Client:
        proc = await asyncio.create_subprocess_exec(
            python, CLIENT, kind, url, json.dumps(spec),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=2**24,
        )  # fmt: skip
        return cls(proc)

    async def read(self, key: str, timeout: float) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), left)
            except TimeoutError:
                return None
            if not raw:
                return None
            try:
                obj = json.loads(raw)
            except ValueError:
                continue  # a stray line (a library printing to stdout)
            if not isinstance(obj, dict):
                continue
            if "result" in obj:
                self.result = obj["result"]
            if key in obj:
                return obj[key]  # type: ignore[no-any-return]

    async def say(self, line: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write(line.encode() + b"\n")
            await self.proc.stdin.drain()

    async def stats(self) -> dict[str, Any] | None:
        await self.say("stats")
        return await self.read("stats", 10)

    async def stop(self) -> dict[str, Any] | None:
        if self.result is None and self.proc.returncode is None:
            await self.say("stop")
            await self.read("result", 30)
        if self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.result


# --------------------------------------------------------------------------- scenarios


@dataclass
class Run:
    """The context a scenario's fault function acts on, and what it marks."""

    kind: str
    backend: WsBackend | PhxBackend
    proxy: ChaosProxy
    watch: ProxyWatch
    quick: bool
    t_fault: float = 0.0
    t_back: float | None = None  # the server is reachable again (None: it never left)
    server_dials: list[float] | None = None  # dials the server side saw during the fault
    hint: float | None = None  # a Retry-After / 1013 delay the client was given
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    client: Client | None = None

    async def wait_back(self, cap: float) -> bool:
        """Wait (event-driven) until the backend accepted a connection after t_back."""
        mark = self.backend.connections()
        try:
            await asyncio.wait_for(
                _until(self.backend, lambda: self.backend.connections() > mark), cap
            )
            self.extra["recovered_at"] = time.monotonic()
            return True
        except TimeoutError:
            self.notes.append(f"no reconnect within {cap:g} s")
            return False


Fault = Callable[[Run], Awaitable[None]]


async def kill(run: Run, outage: float) -> None:
    """The server process dies (RST on open connections, dials refused), back after outage."""
    run.proxy.refuse()
    run.proxy.reset_all()
    await asyncio.sleep(outage)
    run.proxy.heal()
    run.t_back = time.monotonic()
    await run.wait_back(60)


async def close_with(run: Run, code: int, reason: str = "") -> None:
    """The server closes the connection with a close code and stays up."""
    await run.backend.close_all(code, reason)
    run.extra["quiet_from"] = time.monotonic()  # closing handshakes done: old sockets silent
    await run.wait_back(30)


async def reject(run: Run, status: int | None, headers: dict[str, str], window: float) -> None:
    """Every dial is answered by ``status`` (or accepted and closed) for ``window`` seconds."""
    responder = Responder(run.proxy.port, status, headers)
    run.proxy.refuse()
    await responder.start()
    await run.backend.close_all(1001)
    run.proxy.close_all()
    await asyncio.sleep(window)
    await responder.stop()
    run.proxy.heal()
    run.t_back = time.monotonic()
    run.server_dials = responder.times
    if status == 401:
        await asyncio.sleep(1.0)  # anyone still dialing after a 401?
    elif status is None and run.quick:
        await asyncio.sleep(1.0)  # CI checks the dial rate; recovery may wait for the breaker
    else:
        await run.wait_back(30 if run.quick else 70)


async def _client_noticed(run: Run, cap: float) -> None:
    """Wait until the client process closed its dead connection (asked over its pipe)."""
    assert run.client is not None
    base = run.extra["lost_before"]
    deadline = time.monotonic() + cap
    while time.monotonic() < deadline:
        stats = await run.client.stats()
        if stats is None:
            break
        if stats["lost_count"] > base:
            run.extra["noticed_index"] = base
            return
        await asyncio.sleep(0.05)
    run.notes.append(f"not noticed within {cap:g} s")


async def silent(run: Run, keepalive: str) -> None:
    """The network drops every byte (no FIN, no RST) until the client gives up on it."""
    del keepalive  # chosen in the client's spec
    run.proxy.blackhole()
    await _client_noticed(run, 12 if run.quick else 100)
    run.proxy.heal()
    run.t_back = time.monotonic()
    await run.wait_back(30 if run.quick else 70)


async def stop_reading(run: Run) -> None:
    """The server stops reading (its socket buffers fill, pings go unanswered)."""
    assert isinstance(run.backend, WsBackend)
    run.backend.reading.clear()
    await _client_noticed(run, 12 if run.quick else 100)
    run.backend.reading.set()
    run.t_back = time.monotonic()
    await run.wait_back(30 if run.quick else 70)


async def flap_ws(run: Run, window: float) -> None:
    """Each connection is dropped right after its handshake and first frames."""
    run.proxy.cut_after(400, "downstream", reset=False)
    await asyncio.sleep(window)
    run.proxy.heal()
    run.t_back = time.monotonic()
    if not run.backend.open_count():  # one dialed just before the heal may still be up
        await run.wait_back(30 if run.quick else 70)


async def flood(run: Run, count: int) -> None:
    """The server sends ``count`` messages back to back to a consumer that takes 1 ms each."""
    run.backend.flood = count
    # wait until the consumer has had time to catch up: the client says how much it got
    run.extra["flood"] = count


async def herd(run: Run) -> None:
    """N clients; the server restarts (1012) and is down for 1 s."""
    await run.backend.close_all(1012)
    run.proxy.refuse()
    run.proxy.close_all()
    await asyncio.sleep(1.0)
    run.proxy.heal()
    run.t_back = time.monotonic()
    mark = run.backend.connections()
    n = run.extra["count"]
    try:
        await asyncio.wait_for(
            _until(run.backend, lambda: run.backend.connections() - mark >= n),
            30 if run.quick else 70,
        )
        run.extra["all_back"] = time.monotonic() - run.t_back
    except TimeoutError:
        run.notes.append("not all clients came back")


async def _until(backend: WsBackend | PhxBackend, predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate()`` holds, woken by the backend's own change notifications."""
    server = backend.server
    if isinstance(server, ScriptedServer):
        await server.wait_until(predicate, timeout=None)
    else:
        await server.wait_for(predicate)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    fault: Fault
    kinds: tuple[str, ...] = PLAIN + REALTIME
    spec: dict[str, Any] = field(default_factory=dict)
    quick: bool = False


def scenarios(herd_n: int) -> list[Scenario]:
    short = {
        "ours": {"ping_interval": SHORT_PING, "ping_timeout": SHORT_PING},
        "ws": {"ping_interval": SHORT_PING, "ping_timeout": SHORT_PING},
        "rt": {"heartbeat_interval": SHORT_PING},
    }
    return [
        Scenario("kill_short", "server killed, back after 1 s", lambda r: kill(r, 1.0), quick=True),
        Scenario("kill_long", "server killed, back after 20 s", lambda r: kill(r, 20.0)),
        Scenario("close_1000", "server closes 1000, stays up", lambda r: close_with(r, 1000)),
        Scenario("close_1001", "server closes 1001 (going away)", lambda r: close_with(r, 1001)),
        Scenario("close_1012", "server closes 1012 (restart)", lambda r: close_with(r, 1012),
                 quick=True),
        Scenario("close_1013", "1013 try again later, no hint", lambda r: close_with(r, 1013)),
        Scenario("close_1013_hint", "1013 with 'retry after 3'",
                 lambda r: close_with(r, 1013, "retry after 3")),
        Scenario("http_503", "503 + Retry-After: 2 for 4 s",
                 lambda r: reject(r, 503, {"Retry-After": "2"}, 4.0), quick=True),
        Scenario("http_429", "429 + Retry-After: 2 for 4 s",
                 lambda r: reject(r, 429, {"Retry-After": "2"}, 4.0)),
        Scenario("http_401", "401 on every dial", lambda r: reject(r, 401, {}, 4.0), quick=True),
        Scenario("blackhole", "blackhole, default keepalive", lambda r: silent(r, "default"),
                 kinds=PLAIN + REALTIME),
        Scenario("blackhole_short", f"blackhole, keepalive {SHORT_PING:g}+{SHORT_PING:g} s",
                 lambda r: silent(r, "short"), kinds=("ours", "ws", "rt"), spec=short,
                 quick=True),
        Scenario("stop_reading", "server stops reading (16 KB sends)", stop_reading,
                 kinds=PLAIN, spec={"send_size": 16_384}),
        Scenario("flap_tcp", "accept then close (TCP) for 6 s",
                 lambda r: reject(r, None, {}, 6.0), quick=True),
        Scenario("flap_ws", "handshake ok then dropped, for 6 s", lambda r: flap_ws(r, 6.0)),
        Scenario("flood", "flood of 3,000 x 256 B to a 1 ms/msg consumer",
                 lambda r: flood(r, 3000), spec={"consume_delay": 0.001}, quick=True),
        Scenario("herd", f"herd of {herd_n} clients, restart + 1 s down", herd,
                 spec={"count": herd_n, "send_every": 0}),
        Scenario("herd_coordinated", "same herd, one RecoveryCoordinator", herd,
                 kinds=("ours",), spec={"count": herd_n, "send_every": 0,
                                        "ours": {"coordinator": True}}),
    ]  # fmt: skip


# --------------------------------------------------------------------------- one measurement


async def measure(sc: Scenario, kind: str, python: str, quick: bool) -> dict[str, Any]:
    backend: WsBackend | PhxBackend = WsBackend() if kind in PLAIN else PhxBackend()
    spec: dict[str, Any] = {"send_every": TICK, **sc.spec}
    row: dict[str, Any] = {"scenario": sc.name, "client": kind}
    async with backend, ChaosProxy("127.0.0.1", backend.port) as proxy:
        watch = ProxyWatch(proxy)
        watcher = asyncio.create_task(watch.run())
        url = f"ws://127.0.0.1:{proxy.port}{backend.path()}"
        client = await Client.start(python, kind, url, spec)
        run = Run(kind, backend, proxy, watch, quick, extra={"count": spec.get("count", 1)})
        run.client = client
        try:
            ready = await client.read("ready", 30)
            if ready is None:
                row["notes"] = ["client never became ready"]
                return row
            if sc.name.startswith("herd"):
                n = spec["count"]
                await _bounded(_until(backend, lambda: backend.connections() >= n), 30)
            await asyncio.sleep(0.3)  # steady state: a few messages each way
            before = await client.stats()
            run.extra["lost_before"] = before["lost_count"] if before else 0
            run.t_fault = time.monotonic()
            await asyncio.wait_for(sc.fault(run), 200)
            if sc.name == "flood":
                await _drain(client, backend, cap=40)
            else:
                await asyncio.sleep(0.5)  # a few messages after recovery
            backend.streaming = False
            await asyncio.sleep(0.2)  # in-flight messages arrive
            result = await client.stop()
        finally:
            await client.stop()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    if result is None:
        row["notes"] = ["client gave no result"]
        return row
    row.update(figures(run, result, before or ready, backend))
    return row


async def _bounded(aw: Awaitable[None], cap: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(aw, cap)


async def _drain(client: Client, backend: WsBackend | PhxBackend, cap: float) -> None:
    """Wait until the consumer has received what the server wrote (or progress stops)."""
    deadline = time.monotonic() + cap
    backend.streaming = False
    last = -1
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        stats = await client.stats()
        got = stats.get("received", 0) if stats else 0
        if got >= backend.written or got == last:
            return
        last = got


def figures(run: Run, res: dict[str, Any], before: dict[str, Any], backend: Any) -> dict[str, Any]:
    t0 = run.t_fault
    back = run.t_back if run.t_back is not None else t0
    fault_end = max(back, run.extra.get("recovered_at", back))
    dials = res["dials"]
    recv = res["recv_times"]
    quiet = max(back, run.extra.get("quiet_from", back))
    first_after = next((t for t in recv if t >= quiet), None)
    errors = [e for e in res["errors"] if e[0] >= t0]
    sent, dead = res["sent_ok"], res["dead_letters"]
    delivered = backend.received
    out_lost = sent - delivered - dead
    # inbound: every seq the server handed to a socket vs distinct seqs the consumer got
    single = run.extra.get("count", 1) == 1  # a herd shares sequence numbers: count them all
    in_lost = backend.written - (res["unique"] if single else res["received"])
    row: dict[str, Any] = {
        "notice_s": (res["lost"][run.extra["noticed_index"]] - t0)
        if "noticed_index" in run.extra
        else None,
        "back_to_msg_s": (first_after - back) if first_after is not None else None,
        "dials_in_fault": sum(1 for t in dials if t0 <= t < fault_end + 0.001),
        "dials_total_after_fault": sum(1 for t in dials if t >= t0),
        "peak_dials_per_s": _peak(dials, 1.0),
        "errors_to_consumer": len(errors),
        "first_errors": sorted({e[1].split(":")[0] for e in errors})[:3],
        "gave_up": res["gave_up"] is not None,
        "out_sent": sent,
        "out_delivered": delivered,
        "out_dead_lettered": dead,
        "out_lost": out_lost,
        "out_send_raised": res["send_failed"],
        "in_written": backend.written,
        "in_received": res["unique"] if single else res["received"],
        "in_lost": in_lost,
        "in_dropped_counted": res.get("in_dropped", 0),
        "rss_growth_mb": (res["rss"] - before["rss"]) / 2**20,
        "rss_peak_mb": res["rss_peak"] / 2**20,
        "notes": run.notes,
    }
    if run.server_dials is not None:
        row["server_dials"] = len(run.server_dials)
        gaps = [b - a for a, b in zip(run.server_dials, run.server_dials[1:], strict=False)]
        row["min_gap_between_rejected_dials_s"] = min(gaps) if gaps else None
    if "all_back" in run.extra:
        row["all_back_s"] = run.extra["all_back"]
        accepts = [t for t in run.watch.accepts if t >= back]
        row["peak_accepts_per_100ms"] = _peak(accepts, 0.1)
    return row


def _peak(times: list[float], window: float) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] < t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# --------------------------------------------------------------------------- guarantees (CI)


def _recovered(row: dict[str, Any]) -> str | None:
    if row.get("back_to_msg_s") is None:
        return "no message reached the consumer after the server came back"
    return None


def _no_errors(row: dict[str, Any]) -> str | None:
    n = row.get("errors_to_consumer")
    return None if n == 0 else f"{n} error(s) reached the consumer"


def _fatal_once(row: dict[str, Any]) -> str | None:
    if not row.get("gave_up") or row.get("errors_to_consumer", 0) < 1:
        return "401 did not surface as a fatal error"
    if row.get("server_dials", 99) > 1:
        return f"{row.get('server_dials')} dials after a 401 (expected 1)"
    return None


def _hint_honoured(row: dict[str, Any]) -> str | None:
    gap = row.get("min_gap_between_rejected_dials_s")
    if gap is not None and gap < 2.0 * 0.95:
        return f"dialed again {gap:.2f} s after a Retry-After: 2"
    return None


def _noticed(limit: float) -> Callable[[dict[str, Any]], str | None]:
    def check(row: dict[str, Any]) -> str | None:
        notice = row.get("notice_s")
        if notice is None or notice > limit:
            return f"silent peer noticed after {notice} s (cap {limit:g} s)"
        return None

    return check


def _gentle(max_rate: int) -> Callable[[dict[str, Any]], str | None]:
    def check(row: dict[str, Any]) -> str | None:
        rate = row.get("peak_dials_per_s", 0)
        return None if rate <= max_rate else f"{rate} dials in 1 s against a flapping server"

    return check


def _bounded_flood(row: dict[str, Any]) -> str | None:
    if row.get("in_lost", 1) != 0:
        return f"{row.get('in_lost')} messages lost on a live connection"
    if row.get("rss_growth_mb", 999) > 64:
        return f"RSS grew {row['rss_growth_mb']:.0f} MB under a flood"
    return None


def _accounted(row: dict[str, Any]) -> str | None:
    # without acks a few in-flight sends may vanish on a kill; never more than ~a second's worth
    lost = row.get("out_lost", 0)
    return None if lost <= 60 else f"{lost} sent messages unaccounted for"


GUARANTEES: dict[tuple[str, str], list[Callable[[dict[str, Any]], str | None]]] = {
    ("kill_short", "ours"): [_recovered, _no_errors, _accounted],
    ("close_1012", "ours"): [_recovered, _no_errors, _accounted],
    ("close_1012", "rt"): [_recovered, _no_errors],
    ("http_503", "ours"): [_recovered, _no_errors, _hint_honoured],
    ("http_401", "ours"): [_fatal_once],
    # ping_interval + ping_timeout, plus 2 s of slack for a loaded CI machine
    ("blackhole_short", "ours"): [_noticed(2 * SHORT_PING + 2.0), _recovered, _no_errors],
    ("flap_tcp", "ours"): [_gentle(5)],
    ("flood", "ours"): [_bounded_flood, _no_errors],
}


# --------------------------------------------------------------------------- soak


async def soak(kind: str, python: str, cycles: int) -> dict[str, Any]:
    """``cycles`` reconnects (server closes 1012, client comes back); stats before/after."""
    backend: WsBackend | PhxBackend = WsBackend() if kind in PLAIN else PhxBackend()
    spec: dict[str, Any] = {"send_every": 0}
    # Fast reconnects, and a breaker that never opens: the soak counts leaks per cycle, it
    # does not measure the breaker (a cycle ends before stable_after, so each is a failure).
    fast = {"backoff": [0.001, 0.005], "no_breaker": True}
    spec["ours" if kind == "ours" else "rt"] = fast
    async with backend:
        url = f"ws://127.0.0.1:{backend.port}{backend.path()}"
        client = await Client.start(python, kind, url, spec)
        try:
            if await client.read("ready", 30) is None:
                return {"client": kind, "notes": ["never ready"]}
            before = await client.stats()
            t0 = time.monotonic()
            done = 0
            for _ in range(cycles):
                mark = backend.connections()
                await backend.close_all(1012)
                try:
                    await asyncio.wait_for(
                        _until(backend, lambda m=mark: backend.connections() > m), 30
                    )
                except TimeoutError:
                    break
                done += 1
            elapsed = time.monotonic() - t0
            await asyncio.sleep(1.0)
            after = await client.stats()
        finally:
            result = await client.stop()
    assert before is not None
    assert after is not None
    return {
        "client": kind,
        "cycles": done,
        "seconds": elapsed,
        "rss_before_mb": before["rss"] / 2**20,
        "rss_after_mb": after["rss"] / 2**20,
        "tasks_before": before["tasks"],
        "tasks_after": after["tasks"],
        "fds_before": before["fds"],
        "fds_after": after["fds"],
        "errors": len(result["errors"]) if result else None,
    }


# --------------------------------------------------------------------------- output


COLUMNS = [
    ("notice", "notice_s", "{:.2f}"),
    ("back→msg", "back_to_msg_s", "{:.2f}"),
    ("dials", "dials_in_fault", "{}"),
    ("peak/s", "peak_dials_per_s", "{}"),
    ("errors", "errors_to_consumer", "{}"),
    ("out d/dl/lost", None, ""),
    ("in lost", "in_lost", "{}"),
    ("rss MB", "rss_growth_mb", "{:+.1f}"),
]


def cell(row: dict[str, Any], key: str | None, fmt: str) -> str:
    if key is None:
        if "out_sent" not in row:
            return "—"
        return f"{row['out_delivered']}/{row['out_dead_lettered']}/{row['out_lost']}"
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return fmt.format(value)


def markdown(rows: list[dict[str, Any]], titles: dict[str, str]) -> str:
    head = "| scenario | client | " + " | ".join(c[0] for c in COLUMNS) + " | notes |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for row in rows:
        notes = list(row.get("notes", []))
        if row.get("gave_up"):
            notes.append("gave up")
        if row.get("in_dropped_counted"):
            notes.append(
                f"{row['in_dropped_counted']} of in lost dropped by a bounded queue, counted"
            )
        if "server_dials" in row:
            gap = row.get("min_gap_between_rejected_dials_s")
            notes.append(
                f"server saw {row['server_dials']} dials"
                + (f", min gap {gap:.2f} s" if gap is not None else "")
            )
        if "all_back_s" in row:
            notes.append(
                f"all back in {row['all_back_s']:.2f} s, peak {row['peak_accepts_per_100ms']}"
                " accepts/100 ms"
            )
        if row.get("first_errors"):
            notes.append("errors: " + ", ".join(row["first_errors"]))
        cells = " | ".join(cell(row, key, fmt) for _, key, fmt in COLUMNS)
        lines.append(
            f"| {titles.get(row['scenario'], row['scenario'])} | {row['client']} | {cells} | "
            f"{'; '.join(notes)} |"
        )
    return "\n".join(lines)


def soak_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| client | cycles | seconds | RSS MB before → after | tasks before → after "
        "| fds before → after | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "cycles" not in r:
            lines.append(f"| {r['client']} | — | — | — | — | — | {r.get('notes')} |")
            continue
        lines.append(
            f"| {r['client']} | {r['cycles']} | {r['seconds']:.1f} | {r['rss_before_mb']:.1f} → "
            f"{r['rss_after_mb']:.1f} | {r['tasks_before']} → {r['tasks_after']} | "
            f"{r['fds_before']} → {r['fds_after']} | {r['errors']} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


async def amain(args: argparse.Namespace) -> int:
    kinds = [k for k in args.clients.split(",") if k]
    pythons = dict.fromkeys(kinds, sys.executable)
    if "peer" in kinds:
        if args.peer_python and Path(args.peer_python).exists():  # noqa: ASYNC240
            pythons["peer"] = args.peer_python
        else:
            print("scorecard: no --peer-python interpreter: the realtime package is skipped")
            kinds.remove("peer")
    if args.soak:
        soak_kinds = [k for k in kinds if k != "peer"]
        rows = []
        for kind in soak_kinds:
            rows.append(await soak(kind, pythons[kind], args.soak))
            print(soak_markdown(rows[-1:]).splitlines()[-1], flush=True)
        print("\n" + soak_markdown(rows))
        if args.json:
            Path(args.json).write_text(json.dumps({"soak": rows}, indent=2))  # noqa: ASYNC240
        return 0
    chosen = [s for s in scenarios(args.herd) if (s.quick if args.quick else True)]
    if args.only:
        names = set(args.only.split(","))
        chosen = [s for s in chosen if s.name in names]
    if args.quick:
        kinds = [k for k in kinds if k in ("ours", "rt")]
    titles = {s.name: s.title for s in chosen}
    rows: list[dict[str, Any]] = []
    t_start = time.monotonic()
    jobs = [
        (sc, k)
        for sc in chosen
        for k in kinds
        if k in sc.kinds and (not args.quick or (sc.name, k) in GUARANTEES)
    ]
    # --quick runs its few scenarios at once (each has its own servers and client process);
    # the full run measures one scenario at a time, its clients side by side.
    batches = [jobs] if args.quick else [[j for j in jobs if j[0] is sc] for sc in chosen]
    for batch in batches:
        results = await asyncio.gather(
            *(measure(sc, k, pythons[k], args.quick) for sc, k in batch), return_exceptions=True
        )
        for (sc, kind), res in zip(batch, results, strict=True):
            if isinstance(res, BaseException):
                if args.verbose:
                    import traceback

                    traceback.print_exception(res)
                res = {"scenario": sc.name, "client": kind, "notes": [f"crashed: {res!r}"]}
            rows.append(res)
            if args.verbose:
                print(markdown([res], titles).splitlines()[-1], flush=True)
    failures = []
    for row in rows:
        for check in GUARANTEES.get((row["scenario"], row["client"]), []):
            problem = check(row)
            if problem:
                failures.append(f"{row['scenario']}/{row['client']}: {problem}")
    print(markdown(rows, titles))
    print(f"\n{len(rows)} measurements in {time.monotonic() - t_start:.0f} s")
    if args.json:
        Path(args.json).write_text(  # noqa: ASYNC240
            json.dumps({"rows": rows, "guarantee_failures": failures}, indent=2, default=str)
        )
    if failures:
        print("\nGUARANTEES BROKEN:")
        for f in failures:
            print(f"  {f}")
        return 1 if args.quick else 0
    checked = sum(1 for r in rows if (r["scenario"], r["client"]) in GUARANTEES)
    print(f"guarantees: {checked} checked, all hold")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI: the guarantee scenarios only")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--clients", default="ours,ws,rt,peer")
    parser.add_argument("--peer-python", default="", help="interpreter with `realtime` installed")
    parser.add_argument("--herd", type=int, default=50, help="clients in the herd scenario")
    parser.add_argument("--soak", type=int, default=0, help="run N reconnect cycles instead")
    parser.add_argument("--json", default="", help="also write the figures here")
    parser.add_argument("--verbose", action="store_true", help="print each row as measured")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    sys.exit(asyncio.run(amain(args)))


if __name__ == "__main__":
    main()
