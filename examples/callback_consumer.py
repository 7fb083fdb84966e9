"""A consumer driven by a plain function: ``on_message=`` and ``send_nowait()``.

What it shows:

* every message goes to ``handle()`` as it arrives, in order, across a server restart: no
  ``async for``, no queue, no ``await`` per message;
* the handler answers the server's pings with ``send_nowait()`` from inside the callback;
  what cannot be written at once (the restart) waits in the bounded buffer and goes out, in
  order, after the reconnect (a handler that raised would be logged and counted, and the
  next message would still come).

Run it standalone: it starts an embedded server on 127.0.0.1 that streams numbered ticks and
pings, restarts it once midway, and exits 0 once every tick arrived once and in order::

    python examples/callback_consumer.py [--ticks 3000] [--transport picows]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

import anyio
import structlog
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from resilient_conn import Backoff, ResilientConnection
from resilient_conn.testing import ScriptedServer


class TickServer:
    """Streams ticks ``t<n>`` (n counts on across connections) and a ``ping`` every 100."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.next = 0
        self.pings = 0
        self.pongs = 0

    async def handler(self, ws: ServerConnection, server: ScriptedServer) -> None:
        """Stream the ticks still owed; count the pongs that come back."""

        async def read() -> None:
            async for message in ws:
                if message == "pong":
                    self.pongs += 1

        reader = asyncio.create_task(read())
        try:
            while self.next < self.total:
                await ws.send(f"t{self.next}")
                self.next += 1
                if self.next % 100 == 0:
                    await ws.send("ping")
                    self.pings += 1
                    await asyncio.sleep(0.001)  # a live feed: not one burst
            await ws.wait_closed()
        except ConnectionClosed:
            pass  # the restart: the next connection gets the ticks still owed
        finally:  # the reader ends with the connection, after what the client sent first
            with contextlib.suppress(ConnectionClosed):
                await reader


async def main(ticks: int, transport: str) -> int:
    """Consume ``ticks`` ticks through a restart; 0 if each arrived once, in order."""
    feed = TickServer(ticks)
    seen: list[int] = []
    done, half = anyio.Event(), anyio.Event()
    conn: ResilientConnection

    def handle(message: str | bytes) -> None:
        if message == "ping":
            conn.send_nowait("pong")
            return
        assert isinstance(message, str)
        seen.append(int(message[1:]))
        if len(seen) == ticks // 2:
            half.set()
        if len(seen) == ticks:
            done.set()

    async with ScriptedServer(feed.handler) as server:
        conn = ResilientConnection(
            server.url, on_message=handle, transport=transport, compression=None,
            backoff=Backoff(initial_delay=0.05, max_delay=0.5),
        )
        async with conn:
            with anyio.fail_after(30):
                await half.wait()
                await server.restart(downtime=0.3)
                await done.wait()
    ordered = seen == list(range(ticks))
    print(f"ticks {len(seen)}/{ticks}, in order and once each: {ordered}; pings answered: "
          f"{feed.pongs}/{feed.pings}; reconnects: {conn.stats.reconnects}; handler errors: "
          f"{conn.stats.handler_errors}")
    ok = ordered and feed.pongs == feed.pings and conn.stats.reconnects == 1
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=3000)
    parser.add_argument("--transport", default="websockets", choices=["websockets", "picows"])
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    sys.exit(asyncio.run(main(args.ticks, args.transport)))
