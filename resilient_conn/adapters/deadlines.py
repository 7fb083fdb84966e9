"""Deadlines on a transport's writes, for any adapter.

A peer that stops reading fills the send buffer; from then on every write waits, with no
limit of its own, on websockets and picows alike (websockets' ``close()`` drains its close
frame the same way). These helpers put a bound on each such wait, through the
:class:`~resilient_conn.adapters.base.Transport` protocol only, so they hold for every
adapter: :func:`send_within` for one message, :func:`close_within` for the closing handshake
(its write included), aborting the transport once the bound is past.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Generator
from typing import Any

import anyio
from websockets.exceptions import ConnectionClosed

from .base import Message, Transport

__all__ = ["ABORT_GRACE", "close_within", "finish_within", "send_within"]

ABORT_GRACE = 1.0
"""Longest wait for the TCP connection to be gone after an abort (it goes at once)."""


async def send_within(ws: Transport, message: Message, timeout: float) -> None:
    """Write one message, waiting at most ``timeout`` seconds for the peer to take it.

    Args:
        ws: The transport.
        message: Text (``str``) or binary (``bytes``).
        timeout: Seconds (> 0) the write may wait for the peer.

    Raises:
        TimeoutError: The peer did not read it in time. The caller declares the peer dead
            (the frame may have reached the socket's buffer, so it may still arrive).
        websockets.exceptions.ConnectionClosed: The transport closed.
    """
    # A timer per message would cost more than the write itself (a few us a send), so the
    # send runs bare up to its first suspension: most writes finish there, with no timer.
    # Only a send that has to wait (the peer is not reading, another frame is in the way)
    # goes on under the deadline.
    send = ws.send(message)
    try:
        first = send.send(None)
    except StopIteration:
        return
    await finish_within(send, first, timeout)


async def finish_within(send: Coroutine[Any, Any, None], first: Any, timeout: float) -> None:
    """Finish a write that suspended (yielding ``first``), within ``timeout`` seconds.

    :func:`send_within`'s slow half, for a caller that runs the fast half inline (the
    connection's ``send()``, where one coroutine less per message shows).

    Raises:
        TimeoutError: The write did not finish in time (it was cancelled).
    """
    async with asyncio.timeout(timeout):
        await _Resumed(send, first)


class _Resumed:
    """Await a coroutine that already ran to its first suspension (which yielded ``first``)."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, None], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, None]:
        coro = self._coro
        yielded = self._first
        self._first = None
        while True:
            try:
                value = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancellation (the deadline): handed on
                try:
                    yielded = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    yielded = coro.send(value)
                except StopIteration:
                    return


async def close_within(ws: Transport, code: int, reason: str, timeout: float) -> bool:
    """Close with ``code``: the closing handshake gets ``timeout`` seconds, then an abort.

    The bound covers writing the close frame too. Returns once the transport is closed (or
    ``ABORT_GRACE`` after the abort, should the connection linger).

    Args:
        ws: The transport.
        code: The close code to send.
        reason: The close reason to send.
        timeout: Seconds the closing handshake may take.

    Returns:
        True if the handshake finished in time, False if the transport had to be aborted.
    """
    clean = False
    with anyio.move_on_after(timeout):
        with contextlib.suppress(ConnectionClosed):
            await ws.close(code, reason)
        clean = True
    if not clean:
        ws.abort()
    with anyio.CancelScope(shield=True), anyio.move_on_after(ABORT_GRACE):
        await ws.wait_closed()  # connection_lost follows an abort at once
    return clean
