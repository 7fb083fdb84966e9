"""Echo throughput and round trips: our two adapters vs raw websockets vs raw picows.

Clients, all in this process, all connected to the same echo server:

- ``raw websockets``: ``websockets.asyncio.client.connect``; ``send`` / ``recv``;
- ``raw picows`` (if installed): picows' native style, a ``WSListener`` whose callback counts
  and decodes frames, ``transport.send`` called directly (the ceiling for picows);
- ``ours websockets``: ``ResilientConnection`` (keepalive off), ``send`` / ``async for``;
- ``ours picows``: the same with ``transport="picows"``;
- ``ours websockets cb`` / ``ours picows cb``: ours in raw picows' own style: ``on_message=``
  (a plain function per message, no queue) and ``send_nowait`` (no await), the like for like
  of ``raw picows``. Its buffer is sized for the whole burst (``buffer_size``/
  ``buffer_bytes``), as raw picows' write buffer has no bound (``send_nowait`` hands a peer
  that is behind at most ``buffer_bytes``, then queues behind it).

Servers, each in its own process on 127.0.0.1: a websockets echo server (``websockets-bound``:
the server is the bottleneck, so clients look alike) and, when picows is installed, a picows
echo server (``client-bound``: the server is several times faster than any client here, so
the client's own cost shows). Payloads: 64 B and 16 KiB; compression off, and on
(permessage-deflate, websockets server and websockets clients only: picows cannot compress).

Each scenario runs ``--rounds`` interleaved rounds (the order of the clients alternates), each
client doing one pipelined throughput run (a producer task sends N while the consumer reads N)
and ``--rtts`` sequential round trips. The machine is shared, so we report medians: msgs/s,
the ratio of medians to raw websockets (and to raw picows for picows), the median of the
per-round ratios, p50 round trip (of all rounds' round trips, and the median of each round's
p50 ratio: a round's clients run back to back, so drift on the machine cancels), and this
process's CPU time per message during the throughput runs (the servers run in their own
processes, the other clients are idle then): CPU time is far less disturbed by other jobs on
the machine than wall time, so its ratios are the steadier comparison of what each client
costs.

Targets (issue 15): ours websockets >= 0.99x raw websockets throughput client-bound, p50 RTT
<= 1.02x; ours picows >= 1.8x raw websockets (64 B, client-bound) and >= 0.97x raw picows.

Run: .venv/bin/python benchmarks/bench_connection.py [--messages 20000] [--rounds 5]
     [--rtts 500] [--only client-bound] [--sizes 64] [--clients 'raw picows,ours picows cb']

The focused comparison behind docs/performance.md's picows figures (fewer clients, so each
round is shorter and the machine's drift between the two clients smaller):
``--only client-bound --sizes 64 --clients 'raw picows,ours picows cb' --rounds 16``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import connect

from resilient_conn import ResilientConnection

HAS_PICOWS = importlib.util.find_spec("picows") is not None

WEBSOCKETS_SERVER = """
import asyncio
from websockets.asyncio.server import serve

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(echo, "127.0.0.1", 0, ping_interval=None, max_queue=64,
                     compression=%(compression)r, max_size=2**24) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"""

PICOWS_SERVER = """
import asyncio
import picows

class Echo(picows.WSListener):
    def pause_writing(self):
        pass

    def resume_writing(self):
        pass

    def on_ws_frame(self, transport, frame):
        kind = frame.msg_type
        if kind is picows.WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif kind is picows.WSMsgType.TEXT or kind is picows.WSMsgType.BINARY:
            transport.send(kind, frame.get_payload_as_memoryview())

async def main():
    server = await picows.ws_create_server(lambda request: Echo(), "127.0.0.1", 0,
                                           max_frame_size=2**24)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Future()

asyncio.run(main())
"""

Send = Callable[[str], Awaitable[None]]
Recv = Callable[[], Awaitable[Any]]


async def throughput(send: Send, recv: Recv, n: int, payload: str) -> float:
    async def producer() -> None:
        for _ in range(n):
            await send(payload)

    start = time.perf_counter()
    task = asyncio.create_task(producer())
    for _ in range(n):
        await recv()
    await task
    return n / (time.perf_counter() - start)


async def rtts(send: Send, recv: Recv, n: int, payload: str) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await send(payload)
        await recv()
        out.append(time.perf_counter() - start)
    return out


class Callbacks:
    """A client in picows' native style: a callback counts the echoes; sends never await.

    Subclasses give ``_sender()`` (a plain function that sends one message) and ``_burst()``
    (sends ``n`` in a tight loop, each calling its library the way a user would).
    """

    def __init__(self) -> None:
        self._want = 0
        self._done: asyncio.Future[None] | None = None

    def _arrived(self) -> None:
        self._want -= 1
        if self._want == 0 and self._done is not None:
            self._done.set_result(None)

    def _sender(self) -> Callable[[str], object]:
        raise NotImplementedError

    def _burst(self, n: int, payload: str) -> None:
        raise NotImplementedError

    async def throughput(self, n: int, payload: str) -> float:
        self._want, self._done = n, asyncio.get_running_loop().create_future()
        start = time.perf_counter()
        self._burst(n, payload)  # like the producer task of the others: these never block
        await self._done
        return n / (time.perf_counter() - start)

    async def rtts(self, n: int, payload: str) -> list[float]:
        loop = asyncio.get_running_loop()
        send = self._sender()
        out = []
        for _ in range(n):
            self._want, self._done = 1, loop.create_future()
            start = time.perf_counter()
            send(payload)
            await self._done
            out.append(time.perf_counter() - start)
        return out


class RawPicows(Callbacks):
    """picows used natively: the frame callback decodes and counts; sends are plain calls."""

    transport: Any = None

    async def open(self, url: str) -> None:
        import picows

        class Listener(picows.WSListener):  # type: ignore[misc]
            def pause_writing(inner) -> None:
                pass  # native style: no flow control, like the callback-only examples

            def resume_writing(inner) -> None:
                pass

            def on_ws_frame(inner, transport: Any, frame: Any) -> None:
                if frame.msg_type is picows.WSMsgType.TEXT:
                    frame.get_payload_as_utf8_text()  # a user would decode it
                    self._arrived()

        self._text = picows.WSMsgType.TEXT
        self.transport, _ = await picows.ws_connect(Listener, url, max_frame_size=2**24)

    def _sender(self) -> Callable[[str], object]:
        return functools.partial(self.transport.send, self._text)

    def _burst(self, n: int, payload: str) -> None:
        send, text = self.transport.send, self._text
        for _ in range(n):
            send(text, payload)

    async def close(self) -> None:
        import picows

        self.transport.send_close(picows.WSCloseCode.OK)
        self.transport.disconnect()
        await self.transport.wait_disconnected()


class OursCallbacks(Callbacks):
    """Ours in raw picows' style: ``on_message=`` counts each echo, ``send_nowait`` sends."""

    conn: Any = None

    def _on_message(self, message: Any) -> None:
        self._arrived()

    async def open(self, url: str, transport: str, compression: str | None = None) -> None:
        self.conn = ResilientConnection(url, ping_interval=0, max_queue=16, transport=transport,
                                        compression=compression, max_size=2**24,
                                        on_message=self._on_message, buffer_size=100_000,
                                        buffer_bytes=2**27)
        await self.conn.__aenter__()
        await self.conn.wait_connected(10)

    def _sender(self) -> Callable[[str], object]:
        send: Callable[[str], object] = self.conn.send_nowait
        return send

    def _burst(self, n: int, payload: str) -> None:
        send = self.conn.send_nowait
        for _ in range(n):
            send(payload)


@dataclass
class Client:
    name: str
    tput: Callable[[int, str], Awaitable[float]]
    rtt: Callable[[int, str], Awaitable[list[float]]]


def pair(send: Send, recv: Recv) -> tuple[Any, Any]:
    return (
        lambda n, p: throughput(send, recv, n, p),
        lambda n, p: rtts(send, recv, n, p),
    )


async def scenario(
    title: str, url: str, size: int, compression: str | None, args: argparse.Namespace
) -> None:
    payload = "x" * size
    n = args.messages if size <= 1024 else max(500, args.messages // 8)
    clients: list[Client] = []
    closers: list[Callable[[], Awaitable[None]]] = []
    raw = await connect(url, ping_interval=None, max_queue=16, compression=compression,
                        max_size=2**24)
    closers.append(raw.close)
    clients.append(Client("raw websockets", *pair(raw.send, raw.recv)))
    ours = ResilientConnection(url, ping_interval=0, max_queue=16, compression=compression,
                               max_size=2**24)
    await ours.__aenter__()
    await ours.wait_connected(10)
    closers.append(ours.aclose)
    clients.append(Client("ours websockets", *pair(ours.send, ours.__anext__)))
    ows = OursCallbacks()
    await ows.open(url, "websockets", compression)
    closers.append(ows.conn.aclose)
    clients.append(Client("ours websockets cb", ows.throughput, ows.rtts))
    if HAS_PICOWS and compression is None:
        rp = RawPicows()
        await rp.open(url)
        closers.append(rp.close)
        clients.append(Client("raw picows", rp.throughput, rp.rtts))
        op = ResilientConnection(url, ping_interval=0, max_queue=16, transport="picows",
                                 compression=None, max_size=2**24)
        await op.__aenter__()
        await op.wait_connected(10)
        closers.append(op.aclose)
        clients.append(Client("ours picows", *pair(op.send, op.__anext__)))
        oh = OursCallbacks()
        await oh.open(url, "picows")
        closers.append(oh.conn.aclose)
        clients.append(Client("ours picows cb", oh.throughput, oh.rtts))
    if args.clients:  # raw websockets stays: every ratio is also given against it
        keep = {"raw websockets", *args.clients.split(",")}
        clients = [c for c in clients if c.name in keep]
    tput: dict[str, list[float]] = {c.name: [] for c in clients}
    cpu: dict[str, list[float]] = {c.name: [] for c in clients}
    lat: dict[str, list[float]] = {c.name: [] for c in clients}
    p50s: dict[str, list[float]] = {c.name: [] for c in clients}  # each round's p50
    for c in clients:  # warm-up
        await c.tput(min(n, 1000), payload)
    for i in range(args.rounds):
        order = clients if i % 2 == 0 else clients[::-1]
        for c in order:
            started = time.process_time()
            tput[c.name].append(await c.tput(n, payload))
            cpu[c.name].append((time.process_time() - started) / n)
            round_trips = await c.rtt(args.rtts, payload)
            lat[c.name].extend(round_trips)
            p50s[c.name].append(statistics.median(round_trips))
    for close in closers:
        await close()
    report(title, n, size, args, tput, lat, cpu, p50s)


def report(title: str, n: int, size: int, args: argparse.Namespace,
           tput: dict[str, list[float]], lat: dict[str, list[float]],
           cpu: dict[str, list[float]], p50s: dict[str, list[float]]) -> None:
    print(f"\n## {title}: {size} B, {n} messages x {args.rounds} interleaved rounds, "
          f"{args.rtts} round trips per round; medians")
    print(f"{'client':<20}{'msgs/s':>10}{'/raw ws':>9}{'per-round':>10}{'/raw picows':>12}"
          f"{'p50 RTT us':>11}{'/raw ws':>9}{'per-round':>10}{'CPU us/msg':>11}{'/raw ws':>9}"
          f"{'/raw picows':>12}")
    ws_t = tput["raw websockets"]
    ws_l = statistics.median(lat["raw websockets"])
    ws_c = statistics.median(cpu["raw websockets"])
    pic_t = tput.get("raw picows")
    pic_c = statistics.median(cpu["raw picows"]) if "raw picows" in cpu else None
    for name, values in tput.items():
        med = statistics.median(values)
        per_round = statistics.median(v / b for v, b in zip(values, ws_t, strict=True))
        vs_picows = f"{med / statistics.median(pic_t):>12.3f}" if pic_t else f"{'':>12}"
        p50 = statistics.median(lat[name])
        p50_round = statistics.median(
            v / b for v, b in zip(p50s[name], p50s["raw websockets"], strict=True)
        )
        c = statistics.median(cpu[name])
        c_picows = f"{c / pic_c:>12.3f}" if pic_c else f"{'':>12}"
        print(f"{name:<20}{med:>10,.0f}{med / statistics.median(ws_t):>9.3f}{per_round:>10.3f}"
              f"{vs_picows}{p50 * 1e6:>11.1f}{p50 / ws_l:>9.3f}{p50_round:>10.3f}"
              f"{c * 1e6:>11.2f}{c / ws_c:>9.3f}"
              f"{c_picows}")


def start(code: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


async def run(args: argparse.Namespace) -> None:
    procs = []
    try:
        ws_plain, ws_port = start(WEBSOCKETS_SERVER % {"compression": None})
        ws_deflate, wsd_port = start(WEBSOCKETS_SERVER % {"compression": "deflate"})
        procs += [ws_plain, ws_deflate]
        servers = [("websockets-bound", f"ws://127.0.0.1:{ws_port}/")]
        if HAS_PICOWS:
            pic, pic_port = start(PICOWS_SERVER)
            procs.append(pic)
            servers.insert(0, ("client-bound", f"ws://127.0.0.1:{pic_port}/"))
        for bound, url in servers:
            if args.only and args.only != bound:
                continue
            for size in args.sizes:
                await scenario(f"{bound}, no compression", url, size, None, args)
        if args.only in (None, "websockets-bound"):
            for size in args.sizes:
                await scenario("websockets-bound, permessage-deflate",
                               f"ws://127.0.0.1:{wsd_port}/", size, "deflate", args)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20000, help="per round, 64 B")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rtts", type=int, default=500)
    parser.add_argument("--only", choices=("client-bound", "websockets-bound"), default=None)
    parser.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")],
                        default=[64, 16384], help="payload sizes in bytes, comma-separated")
    parser.add_argument("--clients", default=None,
                        help="run only these clients (comma-separated names as printed; raw "
                             "websockets always runs), e.g. 'raw picows,ours picows cb'")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
