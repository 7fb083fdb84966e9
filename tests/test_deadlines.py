"""adapters/deadlines.py on any Transport: a send bounded only when it has to wait (no timer on
the fast path), its cancellation handed to the write; a close bounded, then aborted."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from resilient_conn.adapters import deadlines
from resilient_conn.adapters.deadlines import close_within, send_within

pytestmark = pytest.mark.anyio


class FakeTransport:
    """The part of a Transport the helpers use: a send that waits while ``blocked`` is set,
    a close that never finishes unless ``close_ok``, an abort that ends it."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.blocked = False
        self.unblock = asyncio.Event()
        self.send_ended: list[str] = []
        self.close_ok = False
        self.aborted = False
        self.gone = asyncio.Event()

    async def send(self, message: Any) -> None:
        """Record the message; wait while blocked (a peer that does not read)."""
        self.sent.append(message)
        try:
            if self.blocked:
                await self.unblock.wait()
        except asyncio.CancelledError:
            self.send_ended.append("cancelled")
            raise
        self.send_ended.append("done")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Finish at once if ``close_ok``, else never (a silent peer)."""
        if not self.close_ok:
            await asyncio.Event().wait()
        self.gone.set()

    async def wait_closed(self) -> None:
        """Wait until closed or aborted."""
        await self.gone.wait()

    def abort(self) -> None:
        """Drop the connection at once."""
        self.aborted = True
        self.gone.set()


async def test_a_send_that_need_not_wait_makes_no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """1,000 sends that finish at once never reach the deadline's slow path."""
    slow: list[None] = []

    class Counting(deadlines._Resumed):
        def __init__(self, *args: Any) -> None:
            slow.append(None)
            super().__init__(*args)

    monkeypatch.setattr(deadlines, "_Resumed", Counting)
    ws = FakeTransport()
    for i in range(1000):
        await send_within(ws, f"m{i}", 5)  # type: ignore[arg-type]
    assert slow == []
    assert ws.sent == [f"m{i}" for i in range(1000)]


async def test_a_send_that_waits_past_the_deadline_raises_timeout_and_ends_the_write() -> None:
    """A write stuck behind a peer that does not read raises TimeoutError after the bound;
    the write itself saw the cancellation (it does not linger)."""
    ws = FakeTransport()
    ws.blocked = True
    with pytest.raises(TimeoutError):
        await send_within(ws, "stuck", 0.05)  # type: ignore[arg-type]
    assert ws.send_ended == ["cancelled"]


async def test_a_send_that_waits_within_the_deadline_completes() -> None:
    """A write that waits, then goes through before the bound, returns normally."""
    ws = FakeTransport()
    ws.blocked = True
    asyncio.get_running_loop().call_soon(ws.unblock.set)
    await send_within(ws, "late", 10)  # type: ignore[arg-type]
    assert ws.send_ended == ["done"]


async def test_cancelling_a_waiting_send_cancels_the_write() -> None:
    """The caller's cancellation while the write waits reaches the write, and the caller."""
    ws = FakeTransport()
    ws.blocked = True
    with anyio.CancelScope() as scope:
        asyncio.get_running_loop().call_soon(scope.cancel)
        await send_within(ws, "x", 10)  # type: ignore[arg-type]
    assert scope.cancelled_caught
    assert ws.send_ended == ["cancelled"]


async def test_a_close_that_hangs_is_aborted_after_its_bound() -> None:
    """close_within: a closing handshake that never finishes is aborted (False); one that
    finishes returns True without an abort."""
    ws = FakeTransport()
    assert await close_within(ws, 1000, "bye", 0.05) is False  # type: ignore[arg-type]
    assert ws.aborted
    ws = FakeTransport()
    ws.close_ok = True
    assert await close_within(ws, 1000, "bye", 5) is True  # type: ignore[arg-type]
    assert not ws.aborted
