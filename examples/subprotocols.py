"""Subprotocol negotiation (``Sec-WebSocket-Protocol``) across reconnects.

Pass ``subprotocols=["feed.v2", "feed.v1"]`` (most preferred first); it goes to
``websockets.connect`` on every dial. The server picks one; :attr:`ResilientConnection.subprotocol`
says which (None when disconnected or when the server chose none). Check it in ``on_open``:
a server that was rolled back to an older version may pick ``feed.v1`` after a reconnect,
and ``on_open`` runs before anything buffered is sent, so you can adapt (or refuse) first.

If the server supports none of them it answers the handshake with HTTP 400, which is fatal by
default (state FAILED with a clear error): a mismatch does not fix itself by retrying.

Run: ``python examples/subprotocols.py`` (servers on 127.0.0.1).
"""

from __future__ import annotations

import anyio

from resilient_conn import ConnectionFailedError, ResilientConnection
from resilient_conn.testing import ScriptedServer


async def main() -> dict[str, object]:
    """Negotiate with a v2 server, then a v1-only one, then one that speaks neither."""
    chosen: list[str | None] = []

    async def on_open(conn: ResilientConnection) -> None:
        chosen.append(conn.subprotocol)  # decide here how to talk to this server
        await conn.send(f"hello {conn.subprotocol}")

    offered = ["feed.v2", "feed.v1"]
    for supported in (["feed.v2", "feed.v1"], ["feed.v1"]):
        async with (
            ScriptedServer(subprotocols=supported) as server,
            ResilientConnection(server.url, subprotocols=offered, on_open=on_open) as conn,
        ):
            print(f"server with {supported}: negotiated {await conn.recv()!r}")
    async with ScriptedServer(subprotocols=["other"]) as server:
        conn = ResilientConnection(server.url, subprotocols=offered)
        async with conn:
            try:
                await conn.recv()
            except ConnectionFailedError as exc:
                print(f"no common subprotocol: {conn.state.value}: {exc}")
        final = conn.state.value
    return {"chosen": chosen, "mismatch": final}


if __name__ == "__main__":
    anyio.run(main)
