"""``on_message`` on the websockets transport: each message to a handler as it arrives.

websockets queues whole frames in its ``Assembler``; after every read the transport hands what
is queued to the handler (:func:`deliver_queued`, through the coroutine-free
``recv_nowait``), so nothing waits in a queue and reading is never paused for the
application. What that fast half leaves to websockets' own ``recv()`` (a fragmented message
still arriving, invalid UTF-8 that must close with 1007, a websockets release without the
internals it reads) is taken by a reader task that exists only while such a message is in
the queue (:func:`_read_rest`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from websockets.exceptions import ConnectionClosed

from .base import Message

__all__ = ["Handler", "deliver_queued"]

Handler = Callable[[Message], object]
WebsocketsTransport = Any  # websocket.py's (which imports this module): no import circle


def _left_over(ws: WebsocketsTransport) -> bool:
    """True if frames are queued that ``recv_nowait`` did not take."""
    try:
        return bool(ws.recv_messages.frames.queue)
    except AttributeError:  # a websockets release without these internals: recv() reads all
        return True


def deliver_queued(ws: WebsocketsTransport, handler: Handler) -> None:
    """Hand every whole message queued on ``ws`` to ``handler``, in order.

    Starts the reader task for what only ``recv()`` can take (see the module docstring);
    while it runs, it takes everything (so the order stays as received).
    """
    if ws.reader is not None:
        return
    recv_nowait = ws.recv_nowait
    while (message := recv_nowait()) is not None:
        handler(message)
    if _left_over(ws):
        ws.reader = asyncio.get_running_loop().create_task(_read_rest(ws, handler))


async def _read_rest(ws: WebsocketsTransport, handler: Handler) -> None:
    try:
        while True:
            message = ws.recv_nowait()
            if message is None:
                if not _left_over(ws):
                    return
                message = await ws.recv()
            handler(message)
    except ConnectionClosed:
        return
    finally:
        ws.reader = None
