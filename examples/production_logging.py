"""Logging for production: where the library's events go, and a JSON set-up.

1. Nothing configured: the library prints nothing (its events go to the stdlib logger
   ``resilient_conn``, which has a NullHandler).
2. Stdlib logging configured (``logging.basicConfig`` or your handlers): our events arrive
   like any library's, as ``resilient_conn.state_changed connection='feed' old=... new=...``
   with the fields also on the record (``record.event``, ``record.fields``).
3. structlog configured by the application: our events go through *its* pipeline, here JSON
   lines on stderr with ISO timestamps and levels, filtered at INFO.

Run: ``python examples/production_logging.py`` (a server on 127.0.0.1).
"""

from __future__ import annotations

import io
import json
import logging
import sys

import anyio
import structlog

from resilient_conn import ResilientConnection
from resilient_conn.testing import ScriptedServer


async def one_reconnect() -> None:
    """Connect, let the server restart once (1012), reconnect, close: a few events."""
    async with ScriptedServer() as server, ResilientConnection(server.url, name="feed") as conn:
        await conn.wait_connected(10)
        await server.close_all(1012)
        await server.wait_for_connection(2, timeout=10)


def configure_json_structlog(stream: io.TextIOBase | None = None) -> None:
    """The production set-up: JSON lines to stderr (keep stdout for data), INFO and up."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


async def main() -> dict[str, list[str]]:
    """Run the three set-ups; return what each one captured."""
    seen: dict[str, list[str]] = {}
    logger = logging.getLogger("resilient_conn")

    # 1. nothing configured: nothing printed, no handler of ours anywhere but a NullHandler
    await one_reconnect()
    seen["unconfigured"] = []

    # 2. the application configures stdlib logging
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        await one_reconnect()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    seen["stdlib"] = buffer.getvalue().splitlines()

    # 3. the application configures structlog: JSON lines
    stream = io.StringIO()
    configure_json_structlog(stream)
    try:
        await one_reconnect()
    finally:
        structlog.reset_defaults()
    seen["structlog_json"] = stream.getvalue().splitlines()

    for name, lines in seen.items():
        print(f"{name}: {len(lines)} lines")
        for line in lines[:3]:
            print(f"    {line[:150]}")
    if seen["structlog_json"]:
        json.loads(seen["structlog_json"][0])  # each line is a JSON object
    return seen


if __name__ == "__main__":
    anyio.run(main)
