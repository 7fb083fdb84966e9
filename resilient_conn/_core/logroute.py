"""Where the library's log events go: the application's structlog set-up, else stdlib logging.

A library must not decide where an application's output goes. structlog's own default, used
while nobody has called ``structlog.configure``, prints every event to stdout; that is right
for a script and wrong for a library inside someone else's program (a CLI's output, a JSON
pipe). So each event is routed at the moment it is logged:

- structlog configured (by the application, before or after importing us): the event goes
  through the application's structlog pipeline, with our bound context;
- otherwise: to the stdlib logger ``resilient_conn`` (it has a ``NullHandler``, so nothing
  appears until the application configures :mod:`logging`). The record's message reads
  ``event key=value ...``; the fields are also on the record as ``record.event`` and
  ``record.fields`` for structured formatters.

The check is made per event, so configuring structlog after the library was imported works,
and a disabled level costs one flag test and one ``isEnabledFor``.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["LIBRARY_LOGGER", "RoutedLogger"]

LIBRARY_LOGGER = "resilient_conn"
"""Name of the stdlib logger that receives the events while structlog is not configured."""

logging.getLogger(LIBRARY_LOGGER).addHandler(logging.NullHandler())

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


class _Line:
    """``event key=value ...``, formatted only if a handler actually emits the record."""

    __slots__ = ("event", "fields")

    def __init__(self, event: str, fields: dict[str, Any]) -> None:
        self.event = event
        self.fields = fields

    def __str__(self) -> str:
        if not self.fields:
            return self.event
        return self.event + " " + " ".join(f"{k}={v!r}" for k, v in self.fields.items())


class RoutedLogger:
    """A structlog-style bound logger (``info``, ``debug``, ``bind``...) that routes each event.

    Args:
        name: The structlog logger name and the stdlib logger name.
        context: Key/values bound to every event (e.g. ``connection="feed"``).
    """

    __slots__ = ("_context", "_name", "_stdlib")

    def __init__(self, name: str = LIBRARY_LOGGER, context: dict[str, Any] | None = None) -> None:
        self._name = name
        self._context = dict(context or {})
        self._stdlib = logging.getLogger(name)

    def bind(self, **more: Any) -> RoutedLogger:
        """Return a logger with ``more`` added to the bound context."""
        return RoutedLogger(self._name, {**self._context, **more})

    def new(self, **context: Any) -> RoutedLogger:
        """Return a logger bound to ``context`` only."""
        return RoutedLogger(self._name, context)

    def unbind(self, *keys: str) -> RoutedLogger:
        """Return a logger without ``keys`` in its context."""
        return RoutedLogger(self._name, {k: v for k, v in self._context.items() if k not in keys})

    def is_enabled_for(self, level: int) -> bool:
        """Whether an event at ``level`` would be emitted where events go now."""
        if structlog.is_configured():
            bound = structlog.get_logger(self._name)
            check = getattr(bound, "is_enabled_for", None)
            if check is None:  # a lazy proxy: ask the logger it builds
                bound = bound.bind()
                check = getattr(bound, "is_enabled_for", None)
            if check is None:  # structlog < 25: a filtered level's method is a no-op
                method = getattr(type(bound), logging.getLevelName(level).lower(), None)
                return getattr(method, "__name__", "") != "_nop"
            return bool(check(level))
        return self._stdlib.isEnabledFor(level)

    def _log(self, method: str, event: str, kw: dict[str, Any]) -> None:
        if structlog.is_configured():
            bound = structlog.get_logger(self._name).bind(**self._context)
            getattr(bound, method)(event, **kw)
            return
        level = _LEVELS[method]
        if not self._stdlib.isEnabledFor(level):
            return
        exc_info = kw.pop("exc_info", method == "exception")
        fields = {**self._context, **kw}
        self._stdlib.log(
            level,
            "%s",
            _Line(event, fields),
            exc_info=exc_info,
            extra={"event": event, "fields": fields},
            stacklevel=3,
        )

    def debug(self, event: str, **kw: Any) -> None:
        """Log ``event`` at DEBUG."""
        self._log("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        """Log ``event`` at INFO."""
        self._log("info", event, kw)

    def msg(self, event: str, **kw: Any) -> None:
        """Log ``event`` at INFO (structlog's ``msg``)."""
        self._log("msg", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        """Log ``event`` at WARNING."""
        self._log("warning", event, kw)

    warn = warning

    def error(self, event: str, **kw: Any) -> None:
        """Log ``event`` at ERROR."""
        self._log("error", event, kw)

    def exception(self, event: str, **kw: Any) -> None:
        """Log ``event`` at ERROR with the current exception's traceback."""
        self._log("exception", event, kw)

    def critical(self, event: str, **kw: Any) -> None:
        """Log ``event`` at CRITICAL."""
        self._log("critical", event, kw)

    def __repr__(self) -> str:
        return f"RoutedLogger({self._name!r}, {self._context!r})"
