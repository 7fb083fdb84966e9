"""Join a plain Phoenix app's channels (not Supabase), with a slow async handler under a flood.

Against your Phoenix app (its ``socket "/socket", UserSocket`` with ``channel "rooms:*"``)::

    python examples/phoenix_channels.py ws://localhost:4000/socket/websocket rooms:lobby

Without one, against a local PhoenixServer whose router has ``rooms:*`` only::

    python examples/phoenix_channels.py

What it shows: topics go to a plain Phoenix server exactly as given (no ``realtime:`` prefix);
a topic the router does not match fails with Phoenix's ``unmatched topic``; an async handler
runs through its own bounded queue, so a flood drops (and counts) the oldest calls instead of
piling up one task per message, while a sync counter sees every message.
"""

from __future__ import annotations

import argparse
import asyncio

from resilient_conn import ChannelJoinError
from resilient_conn.realtime import Message, RealtimeClient
from resilient_conn.testing import PhoenixServer


async def run(url: str, topic: str, server: PhoenixServer | None) -> None:
    """Join ``topic`` on ``url``, flood it (local server only) and print what happened."""
    seen = 0
    slow_done = 0
    drained = asyncio.Event()

    def count(message: Message) -> None:
        nonlocal seen
        seen += 1

    async def slow(message: Message) -> None:
        nonlocal slow_done
        await asyncio.sleep(0.01)  # e.g. a database write
        slow_done += 1
        if message.payload.get("event") == "done":
            drained.set()

    async with RealtimeClient(url, heartbeat_interval=5.0) as client:
        print(f"topic prefix for {url}: {client.topic_prefix!r}")
        try:
            await client.channel("lobby").subscribe(timeout=5)
        except ChannelJoinError as exc:
            print(f"join 'lobby' refused: {exc.reason}")
        room = client.channel(topic, handler_queue_size=20, handler_overflow="drop_oldest")
        await room.subscribe(timeout=5)
        print(f"joined {room.topic}")
        room.on("*", count)
        room.on("broadcast", slow)
        if server is None:
            print("listening; Ctrl-C to stop")
            await asyncio.Event().wait()
        for i in range(500):
            await server.broadcast(topic, "tick", {"i": i})
        await server.broadcast(topic, "done", {})
        await asyncio.wait_for(drained.wait(), 10)  # "done" is the newest: never dropped
        print(f"sync handler saw {seen} messages")
        print(f"slow async handler ran {slow_done}, dropped {room.handler_dropped} (bounded)")


async def main() -> None:
    """Parse arguments; run against the given app or a local server."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="ws://host/socket/websocket of your app")
    parser.add_argument("topic", nargs="?", default="rooms:lobby")
    args = parser.parse_args()
    if args.url:
        await run(args.url, args.topic, None)
        return
    async with PhoenixServer(topics=("rooms:*",)) as server:
        await run(server.url, args.topic, server)


if __name__ == "__main__":
    asyncio.run(main())
