"""Fresh credentials on every reconnect: a headers callable, a 401 that is retried, Realtime tokens.

Tokens expire; a long-lived connection outlives them. Three patterns:

1. ``headers=`` a callable (sync or async): called before *every* dial, so each reconnect
   carries the token valid at that moment. Nothing to do when the token changes.
2. A server that answers 401 once a token expired: 401 is fatal by default (a wrong key must
   not become a retry storm). If your token source refreshes on demand, make 401 retryable
   with ``classify=classifier(retry_statuses={401})``; the next dial calls the headers
   callable again, gets a fresh token, and the breaker still bounds a key that stays bad.
3. Realtime: ``RealtimeClient(access_token=callable)`` is called before every (re)join round;
   ``await client.set_auth(token)`` pushes a new token to joined channels at once (do it
   when your auth library refreshes, before the old one expires: Supabase closes channels
   whose token expired).

Run: ``python examples/token_refresh.py`` (servers on 127.0.0.1).
"""

from __future__ import annotations

import itertools

import anyio

from resilient_conn import Backoff, ResilientConnection, classifier
from resilient_conn.realtime import RealtimeClient
from resilient_conn.testing import PhoenixServer, ScriptedServer


class TokenSource:
    """Stands in for your auth client: each call returns a newer token."""

    def __init__(self, prefix: str) -> None:
        self._n = itertools.count(1)
        self.prefix = prefix

    async def __call__(self) -> str:
        """Return the next token (an async call, as an auth client's refresh would be)."""
        return f"{self.prefix}-{next(self._n)}"


async def headers_on_every_dial() -> list[str]:
    """Pattern 1 + 2: the server sees a new token on each dial; a 401 is retried once."""
    tokens = TokenSource("jwt")

    async def headers() -> dict[str, str]:
        return {"Authorization": f"Bearer {await tokens()}"}

    async with ScriptedServer() as server:
        conn = ResilientConnection(
            server.url,
            headers=headers,
            classify=classifier(retry_statuses={401}),  # our token source can fix a 401
            backoff=Backoff(initial_delay=0.05, max_delay=0.2),  # short, for the example
        )
        async with conn:
            await conn.wait_connected(10)
            server.reject_next(401)  # the next dial is refused: "token expired"
            await server.close_all(1012)  # the server restarts
            await server.wait_for_connection(2, timeout=10)  # back, with a fresh token
        seen = [r.request_headers["Authorization"] for r in server.connections]
        rejected = [r.request_headers["Authorization"] for r in server.rejections]
    print(f"accepted with {seen}, rejected {rejected}")
    return seen


async def realtime_tokens() -> list[str | None]:
    """Pattern 3: each join round asks the callable; set_auth pushes a token at once."""
    tokens = TokenSource("rt")
    async with PhoenixServer() as server:
        url = server.realtime_url
        async with RealtimeClient(url, apikey="anon", access_token=tokens) as client:
            room = client.channel("room1")
            rejoined = anyio.Event()
            room.on_gap(lambda _: rejoined.set())  # called once the channel is joined again
            await room.subscribe()
            await server.restart()  # every socket closed with 1012: the client rejoins
            with anyio.fail_after(10):
                await rejoined.wait()
            await client.set_auth("rt-pushed")  # pushed to the joined channel at once
            await server.wait_for_push("access_token")
        joins = [j.access_token for j in server.joins_of("realtime:room1")]
    print(f"joins carried {joins}, then set_auth pushed 'rt-pushed'")
    return joins


async def main() -> tuple[list[str], list[str | None]]:
    """Run both patterns; return what the servers saw."""
    return await headers_on_every_dial(), await realtime_tokens()


if __name__ == "__main__":
    anyio.run(main)
