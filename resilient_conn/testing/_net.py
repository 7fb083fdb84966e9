"""Small helpers shared by the test servers: loopback checks, RST and FIN, waits."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from .._core.notify import Notifier

__all__ = ["LOOPBACK", "Notifier", "check_loopback", "check_port", "reset_writer"]

LOOPBACK = "127.0.0.1"
"""The only address the test servers listen on."""


def check_loopback(host: str, name: str) -> str:
    """Return ``host`` if it is ``127.0.0.1``, else raise ValueError naming the parameter."""
    if host != LOOPBACK:
        raise ValueError(
            f"{name} must be {LOOPBACK!r} (test servers listen on loopback only), got {host!r}"
        )
    return host


def check_port(port: int, name: str, *, allow_zero: bool = True) -> int:
    """Return ``port`` if it is a valid TCP port (0 = ephemeral when allowed), else ValueError."""
    low = 0 if allow_zero else 1
    if isinstance(port, bool) or not isinstance(port, int) or not low <= port <= 65535:
        raise ValueError(f"{name} must be an int in [{low}, 65535], got {port!r}")
    return port


def reset_writer(writer: asyncio.StreamWriter) -> None:
    """Abort the connection behind ``writer`` with a TCP RST (SO_LINGER 0, then close)."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None and not transport.is_closing():
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close the connection behind ``writer`` gracefully (FIN after pending data)."""
    with contextlib.suppress(OSError, RuntimeError):
        writer.close()
