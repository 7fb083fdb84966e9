"""The client half of benchmarks/scorecard.py: one process per client under test.

Started by the scorecard as ``python scorecard_client.py KIND URL SPEC_JSON``. It runs the
client the way an application would (a consumer loop reading messages, a producer sending
one sequence-numbered message every ``send_every`` seconds), and records, with the system-wide
``time.monotonic()`` clock that the scorecard's own process shares:

- every TCP dial the process makes (``loop.create_connection`` is wrapped: a library-neutral
  count, not any client's own counter; refused dials never reach a server, so only the dialing
  side can count them),
- every message the consumer receives (time, and the server's sequence number),
- every error that reaches the consumer (what an application would have to handle),
- sends that returned normally, sends that raised, and dead letters (ours only),
- RSS, open file descriptors and asyncio tasks.

Protocol on stdin/stdout (one JSON object per line): it prints ``{"ready": ...}`` once the
first message arrived; on a ``stats`` line it prints a stats object; on ``stop`` (or EOF) it
closes the client and prints ``{"result": ...}``.

KIND: ``ours`` (ResilientConnection), ``ws`` (websockets' ``async for ws in connect()``),
``rt`` (resilient_conn's RealtimeClient), ``peer`` (supabase-py's ``realtime`` package, run
with its own interpreter; websockets 15 there).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MAX_TIMES = 20_000  # receive timestamps kept (a flood only counts beyond this)


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (0 where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def open_fds() -> int:
    """Open file descriptors of this process (-1 where /proc/self/fd is missing)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


class Recorder:
    """What the consumer saw; dumped as JSON at the end."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.dials: list[float] = []
        self.lost: list[float] = []  # a TCP connection of this process ended (either side)
        self.recv_times: list[float] = []
        self.received = 0
        self.seqs: set[int] = set()
        self.errors: list[tuple[float, str]] = []
        self.sent_ok = 0
        self.send_failed = 0
        self.dead_letters = 0
        self.in_dropped = 0  # inbound messages the client dropped and counted (rt queue)
        self.gave_up: float | None = None
        self.rss_peak = 0
        self.ready = asyncio.Event()
        self.consume_delay = float(spec.get("consume_delay", 0.0))

    def message(self, raw: Any) -> None:
        now = time.monotonic()
        self.received += 1
        if len(self.recv_times) < MAX_TIMES:
            self.recv_times.append(now)
        seq = _seq_of(raw)
        if seq is not None:
            self.seqs.add(seq)
        if self.received % 256 == 0:
            self.rss_peak = max(self.rss_peak, rss_bytes())
        if not self.ready.is_set():
            self.ready.set()

    def error(self, exc: BaseException | str) -> None:
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"[:200]
        self.errors.append((time.monotonic(), text))

    def stats(self) -> dict[str, Any]:
        return {
            "rss": rss_bytes(),
            "fds": open_fds(),
            "tasks": len(asyncio.all_tasks()),
            "dial_count": len(self.dials),
            "lost_count": len(self.lost),
            "received": self.received,
        }

    def result(self) -> dict[str, Any]:
        return {
            "dials": self.dials,
            "lost": self.lost,
            "recv_times": self.recv_times,
            "received": self.received,
            "unique": len(self.seqs),
            "errors": self.errors,
            "sent_ok": self.sent_ok,
            "send_failed": self.send_failed,
            "dead_letters": self.dead_letters,
            "in_dropped": self.in_dropped,
            "gave_up": self.gave_up,
            "rss_peak": max(self.rss_peak, rss_bytes()),
            **self.stats(),
        }


def _seq_of(raw: Any) -> int | None:
    try:
        data = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
        if isinstance(data, dict):
            if "seq" in data:
                return int(data["seq"])
            payload = data.get("payload")
            if isinstance(payload, dict):
                inner = payload.get("payload", payload)
                if isinstance(inner, dict) and "seq" in inner:
                    return int(inner["seq"])
    except (ValueError, TypeError):
        return None
    return None


def count_dials(rec: Recorder) -> None:
    """Wrap the running loop's ``create_connection``: every TCP dial is timestamped, and so is
    the end of every connection it made (the protocol's ``connection_lost``)."""
    loop = asyncio.get_running_loop()
    original = loop.create_connection

    async def create_connection(*args: Any, **kwargs: Any) -> Any:
        rec.dials.append(time.monotonic())
        transport, protocol = await original(*args, **kwargs)
        lost = protocol.connection_lost

        def connection_lost(exc: BaseException | None) -> None:
            rec.lost.append(time.monotonic())
            lost(exc)

        protocol.connection_lost = connection_lost
        return transport, protocol

    loop.create_connection = create_connection  # type: ignore[method-assign]


def payload(seq: int, size: int) -> str:
    return json.dumps({"seq": seq, "pad": "x" * size})


# --------------------------------------------------------------------------- the clients


async def broadcast_ticks(
    room: Any, every: float, rec: Recorder, *, stop_on_give_up: bool = False
) -> None:
    """Send a numbered broadcast on ``room`` every ``every`` seconds, counting each outcome."""
    seq = 0
    while True:
        await asyncio.sleep(every)
        seq += 1
        try:
            await room.send_broadcast("up", {"seq": seq})
            rec.sent_ok += 1
        except Exception as exc:
            rec.send_failed += 1
            if len(rec.errors) < 1000:
                rec.error(exc)
            if stop_on_give_up and rec.gave_up is not None:
                return


async def run_ours(url: str, spec: dict[str, Any], rec: Recorder, stop: asyncio.Event) -> None:
    sys.path.insert(0, str(ROOT))
    from resilient_conn import Backoff, ResilientConnection

    options: dict[str, Any] = dict(spec.get("ours", {}))
    if options.pop("coordinator", False):  # one RecoveryCoordinator shared by all connections
        from resilient_conn import RecoveryCoordinator

        options["coordinator"] = RecoveryCoordinator("scorecard")
    if options.pop("no_breaker", False):
        from resilient_conn import CircuitBreaker

        options["breaker"] = CircuitBreaker(failure_threshold=1_000_000_000)
    if "backoff" in options:
        initial, cap = options.pop("backoff")
        options["backoff"] = Backoff(initial_delay=initial, max_delay=cap)

    def dead(_: Any) -> None:
        rec.dead_letters += 1

    conns = [
        ResilientConnection(url, on_dead_letter=dead, name=f"c{i}", **options)
        for i in range(int(spec.get("count", 1)))
    ]
    async with contextlib.AsyncExitStack() as stack:
        for conn in conns:
            await stack.enter_async_context(conn)

        async def consume(conn: ResilientConnection) -> None:
            try:
                async for message in conn:
                    rec.message(message)
                    if rec.consume_delay:
                        await asyncio.sleep(rec.consume_delay)
            except Exception as exc:  # what the application would have to handle
                rec.error(exc)
                rec.gave_up = time.monotonic()

        async def produce(conn: ResilientConnection) -> None:
            seq, size, every = 0, int(spec.get("send_size", 16)), float(spec["send_every"])
            while True:
                await asyncio.sleep(every)
                seq += 1
                try:
                    await conn.send(payload(seq, size))
                    rec.sent_ok += 1
                except Exception as exc:
                    rec.send_failed += 1
                    if len(rec.errors) < 1000:
                        rec.error(exc)
                    if rec.gave_up is not None:
                        return

        tasks = [asyncio.create_task(consume(c)) for c in conns]
        if spec.get("send_every"):
            tasks += [asyncio.create_task(produce(c)) for c in conns]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_ws(url: str, spec: dict[str, Any], rec: Recorder, stop: asyncio.Event) -> None:
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.exceptions import ConnectionClosed

    options: dict[str, Any] = dict(spec.get("ws", {}))

    async def produce(ws: ClientConnection) -> None:
        seq, size, every = 0, int(spec.get("send_size", 16)), float(spec["send_every"])
        while True:
            await asyncio.sleep(every)
            seq += 1
            try:
                await ws.send(payload(seq, size))
                rec.sent_ok += 1
            except ConnectionClosed:
                rec.send_failed += 1
                return

    async def one() -> None:
        try:
            async for ws in connect(url, **options):
                producer = asyncio.create_task(produce(ws)) if spec.get("send_every") else None
                try:
                    async for message in ws:
                        rec.message(message)
                        if rec.consume_delay:
                            await asyncio.sleep(rec.consume_delay)
                    rec.error(f"closed {ws.close_code}")  # the iterator ended: a clean close
                except ConnectionClosed as exc:
                    rec.error(exc)
                finally:
                    if producer is not None:
                        producer.cancel()
                        await asyncio.gather(producer, return_exceptions=True)
        except Exception as exc:  # connect() gave up: the error reaches the application
            rec.error(exc)
            rec.gave_up = time.monotonic()

    tasks = [asyncio.create_task(one()) for _ in range(int(spec.get("count", 1)))]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_rt(url: str, spec: dict[str, Any], rec: Recorder, stop: asyncio.Event) -> None:
    sys.path.insert(0, str(ROOT))
    from resilient_conn import Backoff
    from resilient_conn.realtime import RealtimeClient

    options: dict[str, Any] = dict(spec.get("rt", {}))
    if options.pop("no_breaker", False):
        from resilient_conn import CircuitBreaker

        options["breaker"] = CircuitBreaker(failure_threshold=1_000_000_000)
    if "backoff" in options:
        initial, cap = options.pop("backoff")
        options["backoff"] = Backoff(initial_delay=initial, max_delay=cap)
    clients = [
        RealtimeClient(url, apikey="anon", name=f"rt{i}", **options)
        for i in range(int(spec.get("count", 1)))
    ]
    async with contextlib.AsyncExitStack() as stack:
        rooms = []
        for client in clients:
            await stack.enter_async_context(client)
            rooms.append(client.channel("scorecard", queue_size=int(spec.get("queue", 1000))))

        async def consume(room: Any) -> None:
            try:
                await room.subscribe()
                async for message in room:
                    rec.message(message.payload)
                    if rec.consume_delay:
                        await asyncio.sleep(rec.consume_delay)
            except Exception as exc:
                rec.error(exc)
                rec.gave_up = time.monotonic()

        tasks = [asyncio.create_task(consume(r)) for r in rooms]
        if spec.get("send_every"):
            every = float(spec["send_every"])
            tasks += [
                asyncio.create_task(broadcast_ticks(r, every, rec, stop_on_give_up=True))
                for r in rooms
            ]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        rec.in_dropped = sum(r.dropped for r in rooms)


class _GiveUpWatch(logging.Handler):
    """Notes when the ``realtime`` package logs that it gave up (nothing else tells the app)."""

    def __init__(self, rec: Recorder) -> None:
        super().__init__(logging.DEBUG)
        self.rec = rec

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("Connection failed permanently") and self.rec.gave_up is None:
            self.rec.gave_up = time.monotonic()


async def run_peer(url: str, spec: dict[str, Any], rec: Recorder, stop: asyncio.Event) -> None:
    from realtime import AsyncRealtimeClient  # type: ignore[import-not-found]

    logging.getLogger("realtime").addHandler(_GiveUpWatch(rec))
    logging.getLogger("realtime").setLevel(logging.DEBUG)
    clients = [
        AsyncRealtimeClient(url.removesuffix("/websocket"), "anon")
        for _ in range(int(spec.get("count", 1)))
    ]
    rooms = []
    tasks: list[asyncio.Task[Any]] = []
    try:
        for client in clients:
            await client.connect()
            room = client.channel("scorecard")
            room.on_broadcast("tick", lambda m: rec.message(m))
            await room.subscribe()
            rooms.append(room)
    except Exception as exc:
        rec.error(exc)
        rec.gave_up = time.monotonic()

    if spec.get("send_every"):
        every = float(spec["send_every"])
        tasks = [asyncio.create_task(broadcast_ticks(r, every, rec)) for r in rooms]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 5)


RUNNERS = {"ours": run_ours, "ws": run_ws, "rt": run_rt, "peer": run_peer}


async def main(kind: str, url: str, spec: dict[str, Any]) -> None:
    rec = Recorder(spec)
    count_dials(rec)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async def announce() -> None:
        await rec.ready.wait()
        gc.collect()
        say({"ready": rec.stats()})

    announcer = asyncio.create_task(announce())

    async def control() -> None:
        # reads stdin from the start: EOF (the scorecard died) stops this process too
        while line := (await reader.readline()).decode().strip():
            if line == "stats":
                gc.collect()
                say({"stats": rec.stats()})
            elif line == "stop":
                break
        stop.set()

    runner = asyncio.create_task(RUNNERS[kind](url, spec, rec, stop))
    ctl = asyncio.create_task(control())
    done, _ = await asyncio.wait({runner, ctl}, return_when=asyncio.FIRST_COMPLETED)
    if runner in done and runner.exception() is not None:
        rec.error(runner.exception())  # type: ignore[arg-type]
        rec.ready.set()
    stop.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(runner, 15)
    ctl.cancel()
    announcer.cancel()
    say({"result": rec.result()})


if __name__ == "__main__":
    logging.basicConfig(level=logging.CRITICAL)
    asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
