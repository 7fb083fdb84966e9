"""Where the library's own log events go while the command line runs.

The command line's stdout carries its output (``--json`` must stay parseable), so library
events never go there: hidden by default, on stderr with ``-v``, whether the application set up
structlog or the events take the stdlib route (``resilient_conn`` logger).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, TextIO

import structlog

from .._core.logroute import LIBRARY_LOGGER

__all__ = ["library_logs"]


@contextlib.contextmanager
def library_logs(verbose: bool, quiet: bool, stream: TextIO) -> Iterator[None]:
    """Keep the library's log events off stdout while a command runs.

    A command owns its output (``--json`` must print JSON only). Warnings and errors (unless
    ``quiet``; and info with ``verbose``) are written to ``stream`` as one line each; the rest
    is dropped. Both routes of the library's events are covered: the stdlib logger
    ``resilient_conn`` (structlog unconfigured) gets a handler, and a filter is put at the
    front of structlog's current processor chain (the list every logger built from it shares).
    Both are restored afterwards.
    """
    shown = set() if quiet else {"warning", "warn", "error", "critical", "exception", "fatal"}
    if verbose:
        shown |= {"warning", "warn", "error", "critical", "exception", "fatal", "info", "msg"}
    with _stdlib_library_logs(shown, stream):  # the route while structlog is unconfigured
        chain = structlog.get_config()["processors"]
        if not isinstance(chain, list):  # a chain we cannot extend: leave it as configured
            yield
            return
        with _structlog_library_logs(chain, shown, stream):
            yield


@contextlib.contextmanager
def _stdlib_library_logs(shown: set[str], stream: TextIO) -> Iterator[None]:
    """Send the library's stdlib log records at the ``shown`` levels to ``stream`` only."""
    logger = logging.getLogger(LIBRARY_LOGGER)

    class ToStream(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelname.lower() in shown:
                stream.write(f"{record.levelname.lower()}: {record.getMessage()}\n")
                stream.flush()

    saved = (logger.level, logger.propagate)
    handler = ToStream()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if "info" in shown else logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


@contextlib.contextmanager
def _structlog_library_logs(chain: list[Any], shown: set[str], stream: TextIO) -> Iterator[None]:
    """Filter at the front of structlog's processor chain (for a configured structlog)."""

    def to_stream(logger: Any, method: str, event: Any) -> Any:
        if method in shown:
            fields = " ".join(f"{k}={v}" for k, v in event.items() if k != "event")
            stream.write(f"{method}: {event.get('event', '')} {fields}\n")
            stream.flush()
        raise structlog.DropEvent

    chain.insert(0, to_stream)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            chain.remove(to_stream)


# --------------------------------------------------------------------------- demo
