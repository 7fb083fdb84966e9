"""Test helper: a DeliveryHub behind a ScriptedServer, with an application that records."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from websockets.asyncio.server import ServerConnection

from resilient_conn.delivery import DeliveryHub, ServerSession
from resilient_conn.testing import ScriptedServer


class HubApp:
    """Serves every connection through ``hub``; records what the application receives.

    Attributes:
        received: Every message the server application got, in order (all incarnations).
        positions: Last ``(epoch, seq)`` applied per session (what ``resume`` hands back).
        reply: Optional ``reply(message) -> str | None`` sent back on the same session.
    """

    def __init__(self, hub: DeliveryHub, reply: Callable[[str | bytes], Any] | None = None) -> None:
        self.hub = hub
        self.reply = reply
        self.received: list[str | bytes] = []
        self.positions: dict[str, tuple[str, int]] = {}
        self.sessions: list[ServerSession] = []
        self.errors: list[BaseException] = []
        self._changed = anyio.Event()

    async def handler(self, ws: ServerConnection, server: ScriptedServer) -> None:
        """The ScriptedServer handler."""
        try:
            async with self.hub.serve(ws) as session:
                self.sessions.append(session)
                async for message in session:
                    self.received.append(message)
                    position = session.position
                    assert position is not None
                    self.positions[session.session] = position
                    self._notify()
                    if self.reply is not None and (answer := self.reply(message)) is not None:
                        await session.send(answer)
        except Exception as exc:  # recorded: the tests assert on it
            self.errors.append(exc)
            self._notify()

    def _notify(self) -> None:
        event, self._changed = self._changed, anyio.Event()
        event.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait (event-driven) until ``predicate()`` holds."""
        with anyio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()
