"""A resilient consumer of a JSON feed.

What it shows:

* ``on_open`` re-subscribes after every (re)connect, so the feed resumes by itself;
* sequence numbers reveal events missed while disconnected (a real app would refetch them);
* sends made while disconnected wait in a small bounded buffer; what overflows is handed to
  the dead-letter handler with a reason, never dropped silently;
* every state change is printed (this is where alerting would hook in).

Run it standalone: it starts an embedded feed server on 127.0.0.1, restarts it once midway,
and exits 0 after about 10 seconds::

    python examples/json_feed_consumer.py [--seconds 10] [--transport picows]

``--transport picows`` runs the same consumer on the picows adapter (``pip install
'resilient-conn[picows]'``): about twice the messages per second, no compression.

To consume a real feed, drop the embedded server and pass your ``wss://`` URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time

import anyio
import structlog
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from resilient_conn import Backoff, CircuitBreaker, DeadLetter, ResilientConnection, StateChange
from resilient_conn.testing import ScriptedServer

STARTED = time.monotonic()


def log(text: str) -> None:
    """Print a line stamped with the seconds since start."""
    print(f"[{time.monotonic() - STARTED:6.2f}s] {text}", flush=True)


# --------------------------------------------------------------------------- embedded feed
class Feed:
    """A JSON price feed: after {"op": "subscribe"} it streams ticks with a global sequence."""

    def __init__(self) -> None:
        self.seq = 0

    async def handler(self, ws: ServerConnection, server: ScriptedServer) -> None:
        """Serve one subscriber: stream ticks, read (and ignore) its status reports."""
        request = json.loads(await ws.recv())
        if request.get("op") != "subscribe":
            await ws.close(1008, "subscribe first")
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._stream, ws, request["topic"])
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:  # status reports; reading them also sees the close
                    pass
            tg.cancel_scope.cancel()

    async def _stream(self, ws: ServerConnection, topic: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                self.seq += 1  # ticks go on while nobody listens: gaps are real
                tick = {"topic": topic, "seq": self.seq, "price": 100 + self.seq % 7}
                await ws.send(json.dumps(tick))
                await anyio.sleep(0.05)

    async def tick_while_down(self, seconds: float) -> None:
        """The upstream keeps producing while the server restarts (those ticks are missed)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.seq += 1
            await anyio.sleep(0.05)


# --------------------------------------------------------------------------- the consumer
class Consumer:
    """The application: subscribes, handles ticks, notices gaps, reports dead letters."""

    def __init__(self) -> None:
        self.received = 0
        self.subscriptions = 0
        self.missed = 0
        self.dead_letters = 0
        self.last_seq: int | None = None
        self.resumed = asyncio.Event()
        """Set by the first tick received after a re-subscription."""

    async def on_open(self, conn: ResilientConnection) -> None:
        """Runs after every (re)connect, before buffered sends: subscribe again."""
        self.subscriptions += 1
        await conn.send(json.dumps({"op": "subscribe", "topic": "prices"}))
        log(f"subscribed (subscription #{self.subscriptions})")

    def on_state_change(self, change: StateChange) -> None:
        """Print every transition (alerting would hook in here)."""
        log(f"state {change.old.value} -> {change.new.value} ({change.reason})")

    def on_dead_letter(self, letter: DeadLetter) -> None:
        """A message the library could not deliver, with the reason."""
        self.dead_letters += 1
        log(f"dead letter ({letter.reason.value}): {letter.message!r}")

    def handle(self, raw: str | bytes) -> None:
        """Handle one tick; a jump in the sequence means ticks were missed."""
        tick = json.loads(raw)
        seq = tick["seq"]
        if self.last_seq is not None and seq > self.last_seq + 1:
            gap = seq - self.last_seq - 1
            self.missed += gap
            log(f"gap: missed {gap} ticks while disconnected (a real app would refetch)")
        self.last_seq = seq
        self.received += 1
        if self.subscriptions > 1:
            self.resumed.set()

    async def report_status(self, conn: ResilientConnection) -> None:
        """Send a status report every 0.2 s; while disconnected these are buffered."""
        n = 0
        while True:
            n += 1
            await conn.send(json.dumps({"op": "status", "n": n, "received": self.received}))
            await anyio.sleep(0.2)


async def main(seconds: float, transport: str = "websockets") -> int:
    """Run the feed and the consumer for ``seconds``; return the exit code."""
    feed = Feed()
    consumer = Consumer()
    async with ScriptedServer(feed.handler) as server:
        conn = ResilientConnection(
            server.url,
            name="prices",
            backoff=Backoff(initial_delay=0.25, max_delay=1.0),
            breaker=CircuitBreaker(failure_threshold=5, recovery_timeout=2.0),
            ping_interval=1.0,
            ping_timeout=1.0,
            stable_after=0.5,
            on_open=consumer.on_open,
            on_dead_letter=consumer.on_dead_letter,
            buffer_size=3,  # tiny on purpose: the outage overflows it
            overflow="drop_oldest",
            transport=transport,
        )
        conn.on_state_change(consumer.on_state_change)
        async with conn, anyio.create_task_group() as tg:

            async def consume() -> None:
                async for raw in conn:  # keeps going across reconnects
                    consumer.handle(raw)

            tg.start_soon(consume)
            tg.start_soon(consumer.report_status, conn)
            await anyio.sleep(seconds * 0.3)
            log("-- restarting the feed server (down for 1.5 s) --")
            await server.stop(1012, "restart")
            await feed.tick_while_down(1.5)
            await server.start()
            with anyio.move_on_after(10):  # the consumer comes back by itself
                await consumer.resumed.wait()
            await anyio.sleep(max(0.0, seconds - (time.monotonic() - STARTED)))
            log(f"health: {conn.health().status.value} ({conn.health().detail})")
            tg.cancel_scope.cancel()
    log(
        f"done: {consumer.received} ticks, {consumer.subscriptions} subscriptions, "
        f"{consumer.missed} missed (detected), {consumer.dead_letters} dead letters"
    )
    ok = consumer.received > 0 and consumer.subscriptions >= 2
    return 0 if ok else 1


if __name__ == "__main__":
    # The library logs structured events with structlog; keep this example's output to its own
    # lines and the library's warnings.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to run (>= 3)")
    parser.add_argument("--transport", choices=("websockets", "picows"), default="websockets")
    args = parser.parse_args()
    if args.seconds < 3:
        parser.error("--seconds must be >= 3")
    sys.exit(asyncio.run(main(args.seconds, args.transport)))
