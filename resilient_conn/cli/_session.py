"""What ``connect`` and ``check`` say about a session: subprotocol arguments, errors, losses.

Kept apart from :mod:`.commands` (the parser and the commands) so each stays short.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

import anyio

from .._core.errors import ConnectionClosedError, ConnectionFailedError
from .._core.log import redact_text
from ..adapters.checks import is_token
from ..connection.connection import ResilientConnection
from ..resilience.classify import default_classify

__all__ = [
    "add_subprotocol",
    "describe",
    "dial_kwargs",
    "flush_before_close",
    "subprotocol",
    "undelivered",
]


def subprotocol(text: str) -> str:
    """Argparse type of ``--subprotocol``: an HTTP token (RFC 6455), e.g. ``chat.v2``."""
    if not is_token(text):
        raise argparse.ArgumentTypeError(f"a subprotocol must be an HTTP token, got {text!r}")
    return text


def add_subprotocol(parser: argparse.ArgumentParser) -> None:
    """Add ``--subprotocol NAME`` (repeatable) to a command's parser."""
    parser.add_argument(
        "--subprotocol",
        type=subprotocol,
        action="append",
        default=[],
        metavar="NAME",
        help="offer this WebSocket subprotocol (repeatable, in order of preference)",
    )


async def flush_before_close(conn: ResilientConnection) -> None:
    """Give lines still buffered at EOF up to ``drain_timeout`` to go out.

    ``echo x | connect URL`` reaches EOF before the connection is up; the connection gets
    that long to come up and flush the buffer before it is closed.
    """
    if not conn.buffered:
        return
    with (
        anyio.move_on_after(conn.options.drain_timeout),
        contextlib.suppress(ConnectionFailedError, ConnectionClosedError),
    ):
        await conn.wait_connected()


def dial_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The websockets options a command's arguments ask for (``subprotocols``)."""
    return {"subprotocols": list(args.subprotocol)} if args.subprotocol else {}


def describe(error: BaseException | None) -> str:
    """One redacted line for an error; a message too big says which limit to raise."""
    if error is None:
        return "unknown error"
    text = redact_text(f"{type(error).__name__}: {error}")
    if default_classify(error).kind == "message_too_big":
        text += " - a message exceeded a size limit (ours: max_size, default 1 MiB)"
    return text


def undelivered(conn: ResilientConnection) -> str | None:
    """The line ``connect`` ends with when messages were dead-lettered, else None."""
    lost = conn.stats.dead_letters
    if not lost:
        return None
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(lost.items()))
    return f"{sum(lost.values())} message(s) not delivered (dead-lettered: {reasons})"
