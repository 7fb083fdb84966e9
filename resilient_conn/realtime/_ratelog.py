"""Rate-limited warnings: one log line per kind of trouble, not one per frame.

A hostile server can send a million bad frames, and an async handler can fail on every
message; logging each would turn a flood into a disk-filling flood. :class:`RateLimitedLog`
logs the first occurrence of each kind at once, then at most one line per ``interval`` seconds
for that kind, carrying how many were suppressed since the last line. The set of kinds it
remembers is bounded (the oldest is forgotten first), so neither memory nor output grows with
the input. Pure bookkeeping: the caller passes ``now``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Logs ``event`` for each kind at most once per ``interval`` seconds.

    Args:
        log: A structlog-style logger (``log.warning(event, **fields)``).
        event: The event name, e.g. ``"resilient_conn.realtime.malformed_frame"``.
        interval: Seconds between two lines of the same kind.
        max_kinds: How many kinds are remembered.
    """

    __slots__ = ("_event", "_interval", "_kinds", "_log", "_max_kinds")

    def __init__(self, log: Any, event: str, *, interval: float = 10.0, max_kinds: int = 64):
        self._log = log
        self._event = event
        self._interval = interval
        self._max_kinds = max_kinds
        # kind -> [time of the last line, occurrences suppressed since]
        self._kinds: OrderedDict[str, list[float]] = OrderedDict()

    def warn(self, kind: str, now: float, **fields: Any) -> bool:
        """Record one occurrence of ``kind``; log it unless rate-limited. True if logged."""
        entry = self._kinds.get(kind)
        if entry is not None and now - entry[0] < self._interval:
            entry[1] += 1
            return False
        suppressed = 0 if entry is None else int(entry[1])
        self._kinds[kind] = [now, 0]
        self._kinds.move_to_end(kind)
        while len(self._kinds) > self._max_kinds:
            self._kinds.popitem(last=False)
        self._log.warning(self._event, kind=kind, suppressed=suppressed, **fields)
        return True
