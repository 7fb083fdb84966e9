"""Several messages in one write on any websockets asyncio connection, client or server.

The websockets adapter's transport uses it when its fast half cannot
(:meth:`~resilient_conn.adapters.websocket.WebsocketsTransport.start_send_many`), and the
delivery hub writes to its clients' server connections with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from websockets.asyncio.connection import Connection

from .base import Message

__all__ = ["FAST_PATH", "has_fast_path", "send_many"]


def has_fast_path() -> bool:
    """True if websockets has the methods our fast paths call (17.0 to 17.4 do).

    :func:`send_many` and the websockets transport's fast halves (``start_send``,
    ``start_send_many``, ``recv_nowait``) read websockets' internals; a release that renamed
    a method they call after a side effect turns them off here, once, and every message goes
    through websockets' own ``send`` / ``recv``. Instance attributes they read first are
    checked where read (``AttributeError`` falls back before anything is written).
    """
    from websockets.asyncio.client import ClientConnection
    from websockets.asyncio.messages import Assembler
    from websockets.protocol import Protocol

    wanted = (
        (Protocol, ("send_text", "send_binary", "data_to_send")),
        (Connection, ("send_data", "send_context", "drain", "send")),
        (ClientConnection, ("send_data", "drain", "send")),
        (Assembler, ("maybe_resume",)),
    )
    return all(callable(getattr(cls, name, None)) for cls, names in wanted for name in names)


FAST_PATH = has_fast_path()
"""Whether the fast paths are on (see :func:`has_fast_path`)."""


async def send_many(ws: Connection, messages: Sequence[Message]) -> None:
    """Send ``messages`` on ``ws`` in order, each its own message, with one socket write.

    What ``ws.send`` does for each (same frames, same errors), but the frames reach the
    socket in one ``writelines``: one system call for the lot instead of one per message,
    on the sender and usually on the receiver too.

    Raises:
        ConnectionClosed: The connection is closed (nothing was written), or it failed
            while writing (what was written may or may not have arrived, as for ``send``).
        TypeError: A message is neither ``str`` nor ``bytes`` (nothing was written).
    """
    for message in messages:
        if not isinstance(message, (str, bytes)):
            raise TypeError(f"message must be str or bytes, got {type(message).__name__}")
    if not FAST_PATH:  # a websockets release without the internals used below
        for message in messages:
            await ws.send(message)
        return
    while ws.send_in_progress is not None:  # a fragmented message is being sent: wait
        await asyncio.shield(ws.send_in_progress)
    async with ws.send_context():  # checks the state; on exit, writes what is left, drains
        protocol = ws.protocol
        for message in messages:
            if isinstance(message, str):
                protocol.send_text(message.encode())
            else:
                protocol.send_binary(message)
        # Only frames here: the state is OPEN, and the end-of-stream marker websockets
        # queues only after a close is never among them. The rest is send_context's.
        ws.transport.writelines(protocol.data_to_send())
