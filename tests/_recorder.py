"""Test helper: record a connection's state changes and wait for them (event-driven)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import anyio

from resilient_conn.connection.events import ConnectionState, StateChange


class StateRecorder:
    """Subscribes to a connection's state changes; tests wait on conditions over them."""

    def __init__(self) -> None:
        self.changes: list[StateChange] = []
        self.times: list[float] = []
        self._changed = asyncio.Event()

    def __call__(self, change: StateChange) -> None:
        self.changes.append(change)
        self.times.append(time.monotonic())
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    @property
    def states(self) -> list[ConnectionState]:
        """Every state entered, in order."""
        return [c.new for c in self.changes]

    def count(self, state: ConnectionState) -> int:
        """How many times ``state`` was entered."""
        return self.states.count(state)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, re-checked after each change."""
        with anyio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()

    async def wait_next(self, timeout: float = 10.0) -> None:
        """Wait for the next state change, whatever it is."""
        with anyio.fail_after(timeout):
            await self._changed.wait()

    async def wait_state(self, state: ConnectionState, n: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``state`` has been entered ``n`` times."""
        await self.wait_for(lambda: self.count(state) >= n, timeout)
