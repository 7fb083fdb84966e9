"""Test helper: a plain websockets client with test-friendly settings."""

from __future__ import annotations

from typing import Any

from websockets.asyncio.client import connect


def dial(url: str, **kwargs: Any) -> connect:
    """A websockets client with no keepalive, no compression and short timeouts."""
    options: dict[str, Any] = {
        "proxy": None,
        "compression": None,
        "ping_interval": None,
        "open_timeout": 2,
        "close_timeout": 0.5,
    }
    options.update(kwargs)
    return connect(url, **options)
