"""Listen to a Supabase Realtime project: postgres_changes, broadcast, presence, token refresh.

Against a real project::

    export SUPABASE_URL=https://xyz.supabase.co SUPABASE_ANON_KEY=... SUPABASE_TABLE=todos
    python examples/supabase_listener.py

(``SUPABASE_ACCESS_TOKEN`` may hold a user JWT; without it the anon key is used.)

Without one, against a local PhoenixServer that plays a short script (a few inserts, a
broadcast, someone joining, a server restart, a token refresh) and then stops::

    python examples/supabase_listener.py --local
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from resilient_conn.realtime import Channel, Message, RealtimeClient
from resilient_conn.resilience.backoff import Backoff
from resilient_conn.testing import PhoenixServer

_tokens = itertools.count(1)


async def fresh_token() -> str:
    """Return the JWT to send with the next (re)join.

    A real program would refresh a session here (e.g. with supabase-py's auth client); the
    client calls this again before every rejoin round, so rejoins never carry an expired token.
    """
    return os.environ.get("SUPABASE_ACCESS_TOKEN") or f"demo-jwt-{next(_tokens)}"


def show(message: Message) -> None:
    """Print one inbound event."""
    payload = message.payload
    if message.event == "postgres_changes":
        data = payload["data"]
        print(f"[db] {data['type']} {data['table']}: {data.get('record')}")
    elif message.event == "broadcast":
        print(f"[broadcast] {payload['event']}: {payload['payload']}")
    elif message.event in ("presence_state", "presence_diff"):
        print(f"[presence] {message.event}: {payload}")
    elif message.event == "system":
        print(f"[system] {payload.get('message')}")


async def listen(client: RealtimeClient, table: str, stop: asyncio.Event) -> None:
    """Join one channel with all three features and print what arrives until ``stop``."""
    room: Channel = client.channel(
        "room1",
        broadcast={"self": True},
        presence={"key": "listener"},
        postgres_changes=[{"event": "*", "schema": "public", "table": table}],
    )
    room.on("*", show)
    room.on_gap(lambda ch: print(f"[gap] rejoined {ch.topic}: refetch your data here"))
    room.on_close(lambda reason: print(f"[closed] {reason}"))
    await room.subscribe()
    print(f"joined {room.topic}; postgres_changes ids {room.postgres_ids}")
    await room.track({"status": "online"})
    await room.send_broadcast("hello", {"from": "listener"})
    await stop.wait()
    await room.unsubscribe()


@asynccontextmanager
async def local_server() -> AsyncIterator[PhoenixServer]:
    """A PhoenixServer on 127.0.0.1 (the ``--local`` stand-in for Supabase)."""
    async with PhoenixServer() as server:
        yield server


async def play_script(server: PhoenixServer, client: RealtimeClient, stop: asyncio.Event) -> None:
    """Drive the local server through a few events, a restart and a token refresh."""
    await asyncio.wait_for(server.wait_for_join("room1"), 10)
    await server.inject_postgres_change("room1", table="todos", record={"id": 1, "done": False})
    await server.broadcast("room1", "cursor", {"x": 10, "y": 20})
    await server.presence_track("room1", "bob", {"status": "away"})
    print("-- server restarts --")
    await server.restart()
    await asyncio.wait_for(server.wait_for_join("room1", 2), 10)
    print(f"rejoined with token {server.joins_of('room1')[-1].access_token}")
    await client.set_auth(await fresh_token())
    await asyncio.wait_for(server.wait_for_push("access_token"), 10)
    await server.inject_postgres_change(
        "room1", table="todos", type="UPDATE", record={"id": 1, "done": True}
    )
    await asyncio.sleep(0.2)  # let the last event print before leaving
    stop.set()


async def main() -> None:
    """Parse arguments and run against Supabase or the local server."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local", action="store_true", help="run against a local PhoenixServer")
    args = parser.parse_args()
    stop = asyncio.Event()
    if args.local:
        async with local_server() as server:
            client = RealtimeClient(
                server.realtime_url,
                apikey="local-anon-key",
                access_token=fresh_token,
                backoff=Backoff(initial_delay=0.05, max_delay=0.5),
            )
            async with client, asyncio.TaskGroup() as tg:
                tg.create_task(listen(client, "todos", stop))
                tg.create_task(play_script(server, client, stop))
        return
    url, key = os.environ.get("SUPABASE_URL"), os.environ.get("SUPABASE_ANON_KEY")
    if not url or not key:
        parser.error("set SUPABASE_URL and SUPABASE_ANON_KEY, or pass --local")
    async with RealtimeClient(url, apikey=key, access_token=fresh_token) as client:
        print(f"connecting to {client.connection.url}; Ctrl-C to stop")
        await listen(client, os.environ.get("SUPABASE_TABLE", "todos"), stop)


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        asyncio.run(main())
