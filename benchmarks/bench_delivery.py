"""Delivery under faults: plain sends vs an acknowledged stream vs a durable outbox.

100 tasks send 300 messages of 64 bytes each through one connection to a server in its own
process on 127.0.0.1 while faults are injected, and the server's application counts, from
what it really received (a log it writes before it takes the next message):

* lost: sent (``send()`` returned) but never received;
* duplicated: received more than once by the server's application;
* reordered: received before an earlier message of the same sender.

Faults: the server restarts twice with close 1012 (a new process; an acked server resumes
from its log), 15 RST resets through the chaos proxy, the server process killed twice with
SIGKILL (restarted; resume from its log), and the client process killed with SIGKILL
mid-stream (durable outbox only; a new client process re-sends what was pending).

Then throughput without faults, in the same run: plain sends, acknowledged stream, durable
outbox (64-byte messages, no proxy), the CPU time per message of the client process and of
the server process (steadier than msg/s on a busy machine), and the latency of ``send()``
with a durable outbox.

Run: .venv/bin/python benchmarks/bench_delivery.py [--senders 100] [--messages 300]
     [--rounds 5] [--throughput-only]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import structlog

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))

from resilient_conn import Backoff, CircuitBreaker, ResilientConnection  # noqa: E402
from resilient_conn.delivery import AckedStream, DeliveryHub, DurableOutbox  # noqa: E402
from resilient_conn.testing import ChaosProxy  # noqa: E402

SIZE = 64


def payload(run: str, k: int, i: int) -> str:
    return f"{run}:{k}:{i}:".ljust(SIZE, "x")


# --------------------------------------------------------------------------- server process
def _positions(log_path: str) -> dict[str, tuple[str, int]]:
    """Resume: the application's own record of what it applied, per session."""
    positions: dict[str, tuple[str, int]] = {}
    if os.path.exists(log_path):
        with open(log_path, "rb") as f:
            for line in f:
                session, epoch, seq, _ = line.split(b" ", 3)
                if session != b"-":
                    positions[session.decode()] = (epoch.decode(), int(seq))
    return positions


async def serve(port: int, log_path: str) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    positions = _positions(log_path)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    hub = DeliveryHub(resume=positions.get)

    async def handler(ws: ServerConnection) -> None:
        if ws.request is not None and ws.request.path == "/plain":
            async for message in ws:
                if message == "sync":
                    await ws.send("sync-ok")
                else:
                    os.write(fd, f"- - 0 {message}\n".encode())
            return
        async with hub.serve(ws) as session:
            async for message in session:
                position = session.position
                assert position is not None
                line = f"{session.session} {position[0]} {position[1]} {message}\n"
                os.write(fd, line.encode())  # applied before the next recv() acks it

    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(handler, "127.0.0.1", port, ping_interval=None, max_queue=64) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await stop
        # A restart as process managers do it: close with 1012, then exit after a short
        # grace period (what is still in flight is not waited for).
        server.close(close_connections=True, code=1012, reason="restart")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 0.1)


class Server:
    """The server process, restartable on the same port."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "serve", str(self.port), str(self.log)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def cpu(self) -> float:
        """CPU seconds (user + system) the server process has used so far (Linux /proc)."""
        assert self.proc is not None
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(10)
        self.proc = None

    def count(self, expected: set[str]) -> dict[str, int]:
        """lost / duplicated / reordered, from the server's log."""
        seen: Counter[str] = Counter()
        last: dict[tuple[str, int], int] = defaultdict(lambda: -1)
        reordered = 0
        with open(self.log, "rb") as f:
            for line in f:
                text = line.decode().rstrip("\n").split(" ", 3)[3]
                seen[text] += 1
                run, k, i, _ = text.split(":", 3)
                key = (run, int(k))
                if int(i) < last[key]:
                    reordered += 1
                last[key] = max(last[key], int(i))
        return {
            "lost": len(expected - set(seen)),
            "duplicated": sum(n - 1 for n in seen.values() if n > 1),
            "reordered": reordered,
            "received": sum(seen.values()),
        }


# --------------------------------------------------------------------------- clients
def _conn(url: str, on_open: Any = None) -> ResilientConnection:
    return ResilientConnection(
        url,
        on_open=on_open,
        backoff=Backoff(0.02, 0.2, rng=random.Random(5)),
        breaker=CircuitBreaker(failure_threshold=10_000, name="bench"),
        stable_after=0.2,
        ping_interval=0,
        buffer_size=100_000,
        buffer_bytes=64 << 20,
        send_timeout=60,
        max_queue=64,
    )


async def _senders(
    send: Callable[[str], Awaitable[Any]],
    senders: int,
    messages: int,
    run: str,
    on_sent: Callable[[str], None],
    *,
    pace: bool = False,
) -> None:
    async def one(k: int) -> None:
        for i in range(messages):
            text = payload(run, k, i)
            await send(text)
            on_sent(text)
            if pace:  # yield after each send, as a producer that waits for its data does
                await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for k in range(senders):
            tg.start_soon(one, k)


async def _sync(conn: ResilientConnection) -> None:
    """Plain sends: a round trip after the last message (re-sent: it may be lost too)."""
    with anyio.move_on_after(30):
        while True:
            await conn.wait_connected(30)
            await conn.send("sync")
            with anyio.move_on_after(1.0):
                async for reply in conn:
                    if reply == "sync-ok":
                        return


async def fault_run(
    mode: str, fault: str, senders: int, messages: int, workdir: Path
) -> dict[str, Any]:
    """One scenario: ``mode`` plain/acked/durable, ``fault`` restart/reset/kill."""
    server = Server(workdir / f"{mode}-{fault}.log")
    server.start()
    total = senders * messages
    sent: set[str] = set()
    triggers = {"restart": [total // 3, 2 * total // 3], "kill": [total // 3, 2 * total // 3]}
    reset_at = [total * (j + 1) // 16 for j in range(15)]
    async with ChaosProxy("127.0.0.1", server.port, connect_timeout=2.0) as proxy:
        path = "/plain" if mode == "plain" else "/acked"
        url = proxy.url_for(path)
        faults = 0
        pending: list[int] = list(reset_at if fault == "reset" else triggers[fault])
        due = 0
        fire = anyio.Event()

        def on_sent(text: str) -> None:
            nonlocal due
            sent.add(text)
            if pending and len(sent) >= pending[0]:
                pending.pop(0)
                due += 1
                fire.set()

        async def injector() -> None:
            nonlocal fire, faults
            while True:
                await fire.wait()
                fire = anyio.Event()
                while faults < due:
                    faults += 1
                    if fault == "reset":
                        proxy.reset_all()
                    else:
                        sig = signal.SIGTERM if fault == "restart" else signal.SIGKILL
                        await anyio.to_thread.run_sync(server.stop, sig)
                        await anyio.to_thread.run_sync(server.start)

        start = time.perf_counter()
        if mode == "plain":
            conn = _conn(url)
            async with conn, anyio.create_task_group() as tg:
                await conn.wait_connected(10)  # faults hit a live, busy connection
                tg.start_soon(injector)
                await _senders(conn.send, senders, messages, mode, on_sent, pace=True)
                await _sync(conn)
                tg.cancel_scope.cancel()
            dead = sum(conn.stats.dead_letters.values())
        else:
            outbox = DurableOutbox(workdir / f"{fault}.sqlite3") if mode == "durable" else None
            stream = AckedStream(f"{mode}-{fault}", outbox=outbox, window=2000)
            conn = _conn(url, stream.on_open)
            async with conn, stream.open(conn), anyio.create_task_group() as tg:
                await conn.wait_connected(10)
                tg.start_soon(injector)
                await _senders(stream.send, senders, messages, mode, on_sent, pace=True)
                await stream.wait_acked(60)
                tg.cancel_scope.cancel()
            dead = len(stream.dead_letters)
        elapsed = time.perf_counter() - start
    server.stop()
    result = server.count(sent)
    return {"mode": mode, "fault": fault, "faults": faults, "dead": dead, "s": elapsed, **result}


async def client_process(url: str, outbox: str, run: str, senders: int, messages: int) -> None:
    """The durable client as its own process (killed with SIGKILL by the harness)."""
    stream = AckedStream("durable-clientkill", outbox=DurableOutbox(outbox), window=2000)
    conn = _conn(url, stream.on_open)
    async with conn, stream.open(conn):
        await _senders(
            stream.send, senders, messages, run, lambda t: print(t, flush=True), pace=True
        )
        await stream.wait_acked(60)
    print("done", flush=True)


async def client_kill_run(senders: int, messages: int, workdir: Path) -> dict[str, Any]:
    server = Server(workdir / "durable-clientkill.log")
    server.start()
    url = f"ws://127.0.0.1:{server.port}/acked"
    outbox = str(workdir / "clientkill.sqlite3")
    cmd = [sys.executable, __file__, "client", url, outbox]
    reported: set[str] = set()
    start = time.perf_counter()
    async with await anyio.open_process(
        [*cmd, "r1", str(senders), str(messages)], stderr=subprocess.DEVNULL
    ) as first:
        assert first.stdout is not None
        buffer = b""
        async for chunk in first.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            reported.update(line.decode() for line in lines)
            if len(reported) >= senders * messages // 2:
                break
        first.send_signal(signal.SIGKILL)
        await first.wait()
    second = await anyio.run_process(
        [*cmd, "r2", str(senders), str(messages // 10)], check=True, stderr=subprocess.DEVNULL
    )
    elapsed = time.perf_counter() - start
    lines = second.stdout.decode().split()
    assert lines[-1] == "done"
    expected = reported | set(lines[:-1])
    server.stop()
    result = server.count(expected)
    return {
        "mode": "durable",
        "fault": "client SIGKILL",
        "faults": 1,
        "dead": 0,
        "s": elapsed,
        **result,
    }


# --------------------------------------------------------------------------- throughput
async def throughput(
    senders: int, messages: int, rounds: int, workdir: Path, window: int = 1000
) -> None:
    server = Server(workdir / "throughput.log")
    server.start()
    base = f"ws://127.0.0.1:{server.port}"
    rates: dict[str, list[float]] = {"plain sends": [], "acked stream": [], "durable outbox": []}
    cpu_client: dict[str, list[float]] = {name: [] for name in rates}
    cpu_server: dict[str, list[float]] = {name: [] for name in rates}
    total = senders * messages
    for r in range(rounds):
        order = list(rates)
        random.Random(r).shuffle(order)
        for name in order:
            start = 0.0
            if name == "plain sends":
                conn = _conn(f"{base}/plain")
                async with conn:
                    await conn.wait_connected(10)
                    start = time.perf_counter()
                    cpu0, server0 = time.process_time(), server.cpu()
                    await _senders(conn.send, senders, messages, f"p{r}", lambda t: None)
                    await _sync(conn)
                    elapsed = time.perf_counter() - start
                    cpu1, server1 = time.process_time(), server.cpu()
            else:
                outbox = None
                if name == "durable outbox":
                    outbox = DurableOutbox(workdir / f"tput-{r}.sqlite3")
                stream = AckedStream(f"tput-{name[0]}-{r}", outbox=outbox, window=window)
                conn = _conn(f"{base}/acked", stream.on_open)
                async with conn, stream.open(conn):
                    await conn.wait_connected(10)
                    start = time.perf_counter()
                    cpu0, server0 = time.process_time(), server.cpu()
                    await _senders(stream.send, senders, messages, f"a{r}", lambda t: None)
                    await stream.wait_acked(60)
                    elapsed = time.perf_counter() - start
                    cpu1, server1 = time.process_time(), server.cpu()
            rates[name].append(total / elapsed)
            cpu_client[name].append((cpu1 - cpu0) / total * 1e6)
            cpu_server[name].append((server1 - server0) / total * 1e6)
    plain = statistics.median(rates["plain sends"])
    print(
        f"\nthroughput: {senders} senders x {messages} messages of {SIZE} B, "
        f"{rounds} rounds (order shuffled), window {window}, median msgs/s; acked and durable "
        "count until the last ack, plain until a sync round trip"
    )
    for name, values in rates.items():
        med = statistics.median(values)
        print(f"  {name:<16}{med:>12,.0f}  x{med / plain:.2f}   (min {min(values):,.0f})")
    print("CPU per message, median (us): client process / server process (load-independent)")
    for name in rates:
        c, s = statistics.median(cpu_client[name]), statistics.median(cpu_server[name])
        print(f"  {name:<16}{c:>8.1f} / {s:.1f}")

    # latency of send(): in-memory window vs durable outbox (commit before return)
    for concurrency in (1, senders):
        lat: dict[str, list[float]] = {}
        for name in ("acked stream", "durable outbox"):
            outbox = None
            if name == "durable outbox":
                outbox = DurableOutbox(workdir / f"lat-{concurrency}.sqlite3")
            stream = AckedStream(f"lat-{name[0]}-{concurrency}", outbox=outbox)
            conn = _conn(f"{base}/acked", stream.on_open)
            samples: list[float] = []

            async def timed(text: str, s: AckedStream = stream, out: list[float] = samples) -> None:
                t = time.perf_counter()
                await s.send(text)
                out.append(time.perf_counter() - t)

            async with conn, stream.open(conn):
                await conn.wait_connected(10)
                n = 2000 // concurrency if concurrency > 1 else 2000
                await _senders(timed, concurrency, n, "lat", lambda t: None)
                await stream.wait_acked(60)
            lat[name] = samples
        print(f"send() latency, {concurrency} concurrent sender(s), median / p99 (us):")
        for name, samples in lat.items():
            q = statistics.quantiles(samples, n=100)
            print(f"  {name:<16}{statistics.median(samples) * 1e6:>10.0f} / {q[98] * 1e6:.0f}")
    server.stop()


# --------------------------------------------------------------------------- main
async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        workdir = Path(tmp)
        if args.throughput_only:
            await throughput(args.senders, args.messages, args.rounds, workdir, args.window)
            return
        rows = []
        for fault in ("restart", "reset", "kill"):
            for mode in ("plain", "acked", "durable"):
                rows.append(await fault_run(mode, fault, args.senders, args.messages, workdir))
                _print_row(rows[-1], header=len(rows) == 1)
        rows.append(await client_kill_run(args.senders, args.messages, workdir))
        _print_row(rows[-1], header=False)
        await throughput(args.senders, args.messages, args.rounds, workdir, args.window)


def _print_row(row: dict[str, Any], *, header: bool) -> None:
    if header:
        print(
            f"{'mode':<9}{'fault':<16}{'faults':>7}{'received':>10}{'lost':>7}{'dup':>6}"
            f"{'reord':>7}{'dead':>6}{'seconds':>9}"
        )
    fault = {"restart": "1012 restart", "reset": "RST reset", "kill": "server SIGKILL"}.get(
        row["fault"], row["fault"]
    )
    print(
        f"{row['mode']:<9}{fault:<16}{row['faults']:>7}{row['received']:>10}{row['lost']:>7}"
        f"{row['duplicated']:>6}{row['reordered']:>7}{row['dead']:>6}{row['s']:>9.2f}",
        flush=True,
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(int(sys.argv[2]), sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        url, outbox, run_name, senders, messages = sys.argv[2:7]
        anyio.run(client_process, url, outbox, run_name, int(senders), int(messages))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--senders", type=int, default=100)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--throughput-only", action="store_true", help="skip the fault runs")
    parser.add_argument("--window", type=int, default=1000, help="AckedStream window")
    anyio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
