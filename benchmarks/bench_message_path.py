"""What one message costs on the connection's own path, without a network: CPU per message.

``bench_connection.py`` measures whole echo runs against a server process, so its figures
carry the kernel, the server and whatever else runs on the machine. This one isolates the
Python-level cost that an await-per-message API adds over picows' native callback style, on
this interpreter and event loop, in one process (CPU time, interleaved rounds, medians):

- ``callback``: a Python method called per message (what picows' ``on_ws_frame`` costs a
  native user: the floor of any picows client);
- ``await (ready)``: one ``await`` of a coroutine that returns at once (the cost of an
  ``async def`` on the path when nothing has to wait);
- ``loop callback``: the event loop runs a callback per message (a frame arriving, handled
  natively);
- ``task wakeup``: the same callback sets a future that a task awaits, per message (a
  consumer that waits for every message, as in a round trip): the difference to ``loop
  callback`` is what one task wakeup costs;
- ``ours send + __anext__``: ``ResilientConnection.send`` and ``__anext__`` on a transport
  that does nothing (``start_send`` returns None, ``recv_nowait`` pops a deque): everything
  our connection adds per echoed message on top of the transport's own work;
- ``ours send_nowait + on_message``: the callback style of ours (``on_message=``,
  ``send_nowait``) on the same transport: what ours adds per echoed message over
  ``callback`` when used like picows.

Run: .venv/bin/python benchmarks/bench_message_path.py [--messages 200000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable

from resilient_conn import ResilientConnection


class NullTransport:
    """A transport whose writes finish at once and whose messages are already queued."""

    def __init__(self) -> None:
        self.queue: deque[str] = deque()
        self.is_open = True

    def start_send(self, message: str) -> None:
        """Take the message (nothing to write)."""

    def send_now(self, message: str, room: int = 0) -> bool:
        """Take the message at once (nothing to write)."""
        return True

    def recv_nowait(self) -> str | None:
        """The next queued message."""
        queue = self.queue
        return queue.popleft() if queue else None


class Listener:
    """The native callback style: one method per message."""

    def __init__(self) -> None:
        self.count = 0

    def on_frame(self, message: str) -> None:
        """Count the message."""
        self.count += 1


async def callback(n: int, payload: str) -> None:
    on_frame = Listener().on_frame
    for _ in range(n):
        on_frame(payload)


async def ready_await(n: int, payload: str) -> None:
    async def ready(message: str) -> str:
        return message

    for _ in range(n):
        await ready(payload)


async def loop_callback(n: int, payload: str) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    listener = Listener()

    def arrive() -> None:  # a frame arrives: the loop runs the callback, which counts it
        listener.on_frame(payload)
        if listener.count == n:
            done.set_result(None)
        else:
            loop.call_soon(arrive)

    loop.call_soon(arrive)
    await done


async def task_wakeup(n: int, payload: str) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(n):  # a frame arrives: its callback sets the future this task awaits
        future = loop.create_future()
        loop.call_soon(future.set_result, payload)
        await future


def ours_path(conn: ResilientConnection, transport: NullTransport) -> Callable[
    [int, str], Awaitable[None]
]:
    async def run(n: int, payload: str) -> None:
        transport.queue.extend([payload] * n)
        send, anext = conn.send, conn.__anext__
        for _ in range(n):
            await send(payload)
            await anext()

    return run


def ours_callbacks(listener: Listener) -> Callable[[int, str], Awaitable[None]]:
    conn = ResilientConnection("ws://127.0.0.1:9/", ping_interval=0, on_message=listener.on_frame)
    conn._ws, conn._live = NullTransport(), True  # type: ignore[assignment]  # no network here
    deliver = conn._deliver  # what the transport calls per frame

    async def run(n: int, payload: str) -> None:
        send = conn.send_nowait
        for _ in range(n):
            send(payload)
            deliver(payload)

    return run


async def main(args: argparse.Namespace) -> None:
    conn = ResilientConnection("ws://127.0.0.1:9/", ping_interval=0)
    transport = NullTransport()
    conn._ws, conn._live = transport, True  # type: ignore[assignment]  # no network here
    cases: dict[str, Callable[[int, str], Awaitable[None]]] = {
        "callback": callback,
        "await (ready)": ready_await,
        "loop callback": loop_callback,
        "task wakeup": task_wakeup,
        "ours send + __anext__": ours_path(conn, transport),
        "ours send_nowait + on_message": ours_callbacks(Listener()),
    }
    payload = "x" * 64
    results: dict[str, list[float]] = {name: [] for name in cases}
    for run in cases.values():
        await run(min(args.messages, 10_000), payload)  # warm-up
    for i in range(args.rounds):
        order = list(cases.items()) if i % 2 == 0 else list(cases.items())[::-1]
        for name, run in order:
            start = time.process_time()
            await run(args.messages, payload)
            results[name].append((time.process_time() - start) / args.messages * 1e9)
    conn._ws, conn._live = None, False
    print(f"{args.messages} messages x {args.rounds} interleaved rounds; CPU ns per message, "
          "median (min-max)")
    for name, values in results.items():
        print(f"{name:<32}{statistics.median(values):>8.0f}  ({min(values):.0f}-{max(values):.0f})")
    assert conn.stats.messages_out == conn.stats.messages_in  # the path really ran


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    asyncio.run(main(parser.parse_args()))
