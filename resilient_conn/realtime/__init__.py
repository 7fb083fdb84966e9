"""Phoenix Channels / Supabase Realtime client on top of a resilient connection."""

from __future__ import annotations

from .channel import ChannelState
from .protocol import Message, RefCounter, V1Serializer, V2Serializer

__all__ = ["ChannelState", "Message", "RefCounter", "V1Serializer", "V2Serializer"]
