"""Messages that survive restarts, resets and a crash: an acknowledged stream.

What it shows:

* a server with a :class:`DeliveryHub` (three lines in a websockets handler) and a client
  with an :class:`AckedStream` on a :class:`ResilientConnection`;
* the server restarts (close 1012) and the network resets every connection (RST) while 20
  tasks stream 2,000 messages: the server's application still gets each exactly once, in
  order, and its replies reach the client the same way;
* with a :class:`DurableOutbox`, unacknowledged messages are on disk: the file is listed
  at the end, as ``resilient-conn dead-letters PATH`` would.

Run it standalone (everything on 127.0.0.1, about 2 seconds)::

    python examples/acked_stream.py [--messages 2000]

Against your own server, drop the embedded one and pass your ``wss://`` URL; the server
side needs ``DeliveryHub`` (or an implementation of the envelope in ``docs/delivery.md``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import anyio
import structlog
from websockets.asyncio.server import ServerConnection

from resilient_conn import Backoff, ResilientConnection
from resilient_conn.delivery import AckedStream, DeliveryHub, DurableOutbox, read_summary
from resilient_conn.testing import ChaosProxy, ScriptedServer

SENDERS = 20


async def main(messages: int, workdir: Path) -> int:
    """Run the server, the client and the faults; return 0 if nothing was lost or repeated."""
    hub = DeliveryHub()
    applied: list[str] = []  # what the server's application did, in order

    async def handler(ws: ServerConnection, server: ScriptedServer) -> None:
        async with hub.serve(ws) as session:
            async for message in session:
                applied.append(str(message))
                if len(applied) % 100 == 0:
                    await session.send(f"{len(applied)} applied")

    outbox = DurableOutbox.for_connection(workdir, "example")
    stream = AckedStream("example", outbox=outbox, on_gap=lambda n: print("gap:", n.detail))
    replies: list[str | bytes] = []
    async with (
        ScriptedServer(handler, ping_interval=None) as server,
        ChaosProxy("127.0.0.1", server.port) as proxy,
        ResilientConnection(
            proxy.url_for("/"),
            on_open=stream.on_open,
            backoff=Backoff(0.01, 0.1),
            stable_after=0.2,
            ping_interval=0,
        ) as conn,
        stream.open(conn),
        anyio.create_task_group() as tg,
    ):

        async def read() -> None:
            async for reply in stream:  # kept as they come (the task is cancelled at the end)
                replies.append(reply)  # noqa: PERF401

        async def send(k: int) -> None:
            for i in range(messages // SENDERS):
                await stream.send(f"{k}:{i}")
                if k == 0 and i == messages // SENDERS // 3:
                    print("server restart (close 1012)")
                    await server.restart(code=1012)
                if k == 0 and i == 2 * messages // SENDERS // 3:
                    print(f"network reset: {proxy.reset_all()} connection(s) got RST")

        tg.start_soon(read)
        async with anyio.create_task_group() as senders:
            for k in range(SENDERS):
                senders.start_soon(send, k)
        await stream.wait_acked(30)  # the server has every message
        session = hub.get("example")
        assert session is not None
        await session.wait_acked(30)  # and the client every reply
        tg.cancel_scope.cancel()

    sent = {f"{k}:{i}" for k in range(SENDERS) for i in range(messages // SENDERS)}
    in_order = all(
        [int(m.split(":")[1]) for m in applied if m.startswith(f"{k}:")]
        == list(range(messages // SENDERS))
        for k in range(SENDERS)
    )
    duplicates = len(applied) - len(set(applied))
    print(
        f"sent {len(sent)}, applied {len(applied)} (unique {len(set(applied))}), "
        f"duplicates {duplicates}, each sender in order: {in_order}"
    )
    print(f"re-sent after reconnects: {stream.stats.resent}, reconnects: {conn.stats.reconnects}")
    print(f"replies received: {len(replies)} of {messages // 100}")
    summary = read_summary(outbox.path)
    print(f"{outbox.path.name}: {summary.pending} pending, {summary.dead_letters} dead letters")
    ok = set(applied) == sent and duplicates == 0 and in_order
    ok = ok and len(replies) == messages // 100
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory() as tmp:
        sys.exit(anyio.run(main, max(args.messages, SENDERS * 100) // 100 * 100, Path(tmp)))
