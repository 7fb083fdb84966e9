"""Phoenix Channels / Supabase Realtime client on top of a resilient connection.

::

    from resilient_conn.realtime import RealtimeClient

    async with RealtimeClient(url, apikey=key, access_token=get_jwt) as client:
        room = client.channel("room1")
        await room.subscribe()
        async for message in room:
            ...

See ``docs/realtime.md``.
"""

from __future__ import annotations

from .channel import Channel, ChannelState
from .client import RealtimeClient, TokenSource
from .protocol import Message, RefCounter, Serializer, V1Serializer, V2Serializer

__all__ = [
    "Channel",
    "ChannelState",
    "Message",
    "RealtimeClient",
    "RefCounter",
    "Serializer",
    "TokenSource",
    "V1Serializer",
    "V2Serializer",
]
