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

__all__ = ["send_many"]


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
