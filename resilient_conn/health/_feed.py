"""What the dashboard shows: bounded samples, timelines and chart series of a registry.

:class:`DashboardFeed` turns a :class:`~resilient_conn.health.registry.HealthRegistry` (or
anything with ``health()``) into the JSON the page renders. It owns no task: whoever serves the
page calls :meth:`DashboardFeed.tick_if_due`, so nothing runs while nobody watches. State changes
arrive two ways: from each connection's ``on_state_change`` hook (exact, with the reason; hooked
lazily on the first tick) and, for components without hooks (bare breakers, policies) and for
breaker states, from the difference between two samples.

Everything is bounded by :class:`DashboardConfig`: tiles, timeline entries per component,
chart points per component, and the change log that lagging subscribers resume from. Every text
that leaves the feed goes through ``redact_text`` (reports are already redacted; this is defence
in depth for hook reasons and errors).
"""

from __future__ import annotations

import math
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from .._core.errors import ConfigError
from .._core.log import get_logger, redact_text
from .._core.notify import Notifier
from ..connection.report import HealthReport
from ..resilience.config import check_int

__all__ = ["DashboardConfig", "DashboardFeed", "DashboardSource"]

_log = get_logger()
Change = dict[str, Any]


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    """Settings and bounds of the live dashboard (``/dashboard`` of the health app).

    Attributes:
        interval: Seconds between two samples pushed to open pages.
        max_subscribers: Pages that may watch at once; one more gets 503 and retries later.
        backlog: State changes kept for a page that falls behind; one further behind gets a
            fresh snapshot instead.
        history: Timeline entries kept per component.
        points: Chart points kept per component (``points * interval`` seconds of history).
        max_tiles: Components shown; the rest are counted as hidden.
        write_timeout: Seconds a page may take to accept one update before it is dropped (a
            page that stops reading never holds memory or a slot for long).
    """

    interval: float = 1.0
    max_subscribers: int = 8
    backlog: int = 256
    history: int = 30
    points: int = 120
    max_tiles: int = 100
    write_timeout: float = 5.0

    def __post_init__(self) -> None:
        for name in ("interval", "write_timeout"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("max_subscribers", "backlog", "history", "points", "max_tiles"):
            check_int(getattr(self, name), name, 1)


class DashboardSource(Protocol):
    """What the dashboard needs of a registry: an aggregate report with ``components``."""

    @property
    def name(self) -> str:
        """The registry's name (the page title)."""
        ...

    def health(self) -> HealthReport:
        """The aggregate of every component's cheap report."""
        ...


def _nothing() -> None:
    return None


_MAX_TEXT = 500
"""Characters kept of any one text (a detail, an error, a reason): a page is not a log."""


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = redact_text(str(value))
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _enum(value: object) -> str | None:
    if value is None:
        return None
    member = getattr(value, "value", value)
    return member if isinstance(member, str) else str(getattr(value, "name", value)).lower()


def _tile(report: HealthReport) -> dict[str, Any]:
    data = report.to_dict()
    data.pop("components", None)
    data["detail"] = _text(data["detail"])
    data["last_error"] = _text(data["last_error"])
    return data


class DashboardFeed:
    """Samples a registry into bounded tiles, timelines and chart series.

    Args:
        source: The registry to watch.
        config: Bounds and intervals (default :class:`DashboardConfig`).
        clock: Monotonic seconds, deciding when a sample is due.
        wall_clock: Wall-clock seconds stamped on samples (``time.time``).
    """

    def __init__(
        self,
        source: DashboardSource,
        config: DashboardConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or DashboardConfig()
        self.changed = Notifier()
        """Notified on every new sample and every state change."""
        self.subscribers = 0
        """Pages watching now (the app counts them against ``max_subscribers``)."""
        self.seq = 0
        """Number of the last state change recorded."""
        self.sample_no = 0
        """Number of the last sample taken."""
        self.sample: dict[str, Any] = {}
        """The last sample (empty before the first tick)."""
        self._source = source
        self._clock = clock
        self._wall = wall_clock
        self._next_at = -math.inf
        self._ticked_at = -math.inf
        self._log: deque[tuple[int, Change]] = deque(maxlen=self.config.backlog)
        self._timelines: dict[str, deque[Change]] = {}
        self._series: dict[str, deque[list[float | None]]] = {}
        self._last: dict[str, tuple[str | None, str | None]] = {}
        self._dials: dict[str, tuple[float, int]] = {}
        self._hooks: dict[str, tuple[object, Callable[[], None]]] = {}

    # --- sampling -------------------------------------------------------------------------
    def due_in(self) -> float:
        """Seconds until the next sample is due (0 when it is due now)."""
        return max(0.0, self._next_at - self._clock())

    def tick_if_due(self) -> bool:
        """Take a sample if ``interval`` has passed since the last one; True if it did."""
        now = self._clock()
        if now < self._next_at:
            return False
        self.tick(now)
        return True

    def tick(self, now: float | None = None) -> None:
        """Take a sample now: tiles, chart points, and state changes seen since the last one."""
        now = self._clock() if now is None else now
        self._ticked_at = now
        self._next_at = now + self.config.interval
        wall = self._wall()
        try:
            report = self._source.health()
        except Exception as exc:  # a broken registry shows as such, it never kills the stream
            _log.warning("resilient_conn.dashboard_sample_failed", error=redact_text(repr(exc)))
            self.sample = {"t": wall, "error": redact_text(f"{type(exc).__name__}: {exc}")}
            self.sample_no += 1
            self.changed.notify()
            return
        components = list(report.components.items())
        shown = components[: self.config.max_tiles]
        names = {name for name, _ in shown}
        for gone in [n for n in (*self._last, *self._hooks) if n not in names]:
            self._forget(gone)
        tiles: list[dict[str, Any]] = []
        points: dict[str, list[float | None]] = {}
        for name, sub in shown:
            self._hook(name)
            tile = _tile(sub)
            dials = self._dial_count(name)
            tile["dials"] = dials
            tiles.append(tile)
            self._diff(name, tile, wall)
            point = [wall, tile["rtt"], self._dial_rate(name, wall, dials)]
            self._series.setdefault(name, deque(maxlen=self.config.points)).append(point)
            points[name] = point
        self.sample = {
            "t": wall,
            "name": report.name,
            "status": report.status.value,
            "detail": _text(report.detail),
            "tiles": tiles,
            "hidden": len(components) - len(shown),
            "points": points,
            "interval": self.config.interval,
        }
        self.sample_no += 1
        self.changed.notify()

    def snapshot(self) -> dict[str, Any]:
        """Everything a page needs to draw itself from scratch (JSON-safe, bounded)."""
        if not self.sample:
            self.tick()
        return {
            "seq": self.seq,
            "sample": self.sample,
            "timelines": {name: list(entries) for name, entries in self._timelines.items()},
            "series": {name: list(points) for name, points in self._series.items()},
            "config": asdict(self.config),
        }

    def changes_since(self, seq: int) -> list[tuple[int, Change]] | None:
        """State changes after ``seq``, oldest first; None when some fell out of the backlog."""
        if seq >= self.seq:
            return []
        if not self._log or self._log[0][0] > seq + 1:
            return None
        return [(n, change) for n, change in self._log if n > seq]

    def close(self) -> None:
        """Unsubscribe every state-change hook this feed installed (idempotent)."""
        for name in list(self._hooks):
            self._forget(name)

    # --- state changes --------------------------------------------------------------------
    def record(
        self, name: str, what: str, old: object, new: object, reason: str, at: float
    ) -> None:
        """Add one state change to the timeline of ``name`` and to the change log."""
        self.seq += 1
        change: Change = {
            "seq": self.seq,
            "name": name,
            "what": what,
            "old": _enum(old),
            "new": _enum(new),
            "reason": _text(reason),
            "at": at,
        }
        # bring the tiles up to date soon (not at once: a flapping peer must not cost a sample
        # per change)
        self._next_at = min(self._next_at, self._ticked_at + self.config.interval / 5)
        self._log.append((self.seq, change))
        if name in self._last or len(self._timelines) < self.config.max_tiles:
            self._timelines.setdefault(name, deque(maxlen=self.config.history)).append(change)
        self.changed.notify()

    def _diff(self, name: str, tile: dict[str, Any], wall: float) -> None:
        state, breaker = tile["state"], tile["breaker_state"]
        last = self._last.get(name)
        self._last[name] = (state, breaker)
        if last is None:
            return
        if state != last[0] and name not in self._hooks:
            self.record(name, "state", last[0], state, tile["detail"] or "", wall)
        if breaker != last[1]:
            self.record(name, "breaker", last[1], breaker, tile["detail"] or "", wall)

    def _hook(self, name: str) -> None:
        getter = getattr(self._source, "component", None)
        if not callable(getter):
            return
        try:
            component = getter(name)
        except Exception:
            return
        known = self._hooks.get(name)
        if known is not None and known[0] is component:
            return
        if known is not None:
            self._forget(name)
        subscribe = getattr(component, "on_state_change", None)
        if not callable(subscribe):
            return
        callback, handle = _hook_for(self, name)
        unsubscribe = subscribe(callback)
        if callable(unsubscribe):
            handle.append(unsubscribe)
        self._hooks[name] = (component, unsubscribe if callable(unsubscribe) else _nothing)

    def on_hook(self, name: str, change: Any) -> None:
        """Record a ``StateChange`` delivered by the hook on component ``name``."""
        error = getattr(change, "error", None)
        reason = str(getattr(change, "reason", ""))
        if error is not None:
            reason = f"{reason}: {type(error).__name__}: {error}" if reason else repr(error)
        at = getattr(change, "at", None)
        new = getattr(change, "new", None)
        stamp = at if isinstance(at, int | float) and not isinstance(at, bool) else self._wall()
        self.record(name, "state", getattr(change, "old", None), new, reason, stamp)
        if name in self._last:
            self._last[name] = (_enum(new), self._last[name][1])

    def _forget(self, name: str) -> None:
        hooked = self._hooks.pop(name, None)
        if hooked is not None:
            hooked[1]()
        self._last.pop(name, None)
        self._dials.pop(name, None)
        self._series.pop(name, None)
        self._timelines.pop(name, None)

    # --- dial rate ------------------------------------------------------------------------
    def _dial_count(self, name: str) -> int | None:
        getter = getattr(self._source, "component", None)
        try:
            component = getter(name) if callable(getter) else None
            stats = getattr(component, "stats", None)
            dials = getattr(stats, "dials", None)
        except Exception:
            return None
        return dials if isinstance(dials, int) and not isinstance(dials, bool) else None

    def _dial_rate(self, name: str, wall: float, dials: int | None) -> float | None:
        if dials is None:
            return None
        last = self._dials.get(name)
        self._dials[name] = (wall, dials)
        if last is None or wall <= last[0] or dials < last[1]:
            return None
        return round((dials - last[1]) / (wall - last[0]), 3)


def _hook_for(
    feed: DashboardFeed, name: str
) -> tuple[Callable[[Any], None], list[Callable[[], None]]]:
    """A state-change hook holding the feed weakly, and the cell for its unsubscribe handle.

    Once the feed is garbage (an app that was dropped), the hook removes itself on the next
    change, so discarded dashboards never pile up hooks on a long-lived connection.
    """
    ref = weakref.ref(feed)
    handle: list[Callable[[], None]] = []

    def on_change(change: Any) -> None:
        live = ref()
        if live is None:
            for unsubscribe in handle:
                unsubscribe()
            return
        live.on_hook(name, change)

    return on_change, handle
