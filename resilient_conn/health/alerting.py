"""Turn connection state changes into alerts a human wants: one per incident, one on recovery.

:class:`AlertPolicy` is pure: it reads :class:`~resilient_conn.events.StateChange` events (and,
through :meth:`AlertPolicy.poll`, the wall-clock time) and returns :class:`Alert` values; it
never sleeps and never sends anything itself. Plug it into a connection::

    policy = AlertPolicy(grace=30.0, sink=page_someone)    # sink: sync or async callable
    conn.on_state_change(policy)

Rules, per connection name:

* An incident starts when the connection enters CONNECTING, BACKOFF, CIRCUIT_OPEN or FAILED
  while none is open (leaving CONNECTED, or the very first dial).
* It raises ONE ``incident`` alert: at once (severity ``critical``) when the connection enters
  CIRCUIT_OPEN or FAILED; otherwise (severity ``warning``) once it has lasted ``grace`` seconds,
  noticed on the next state change or by :meth:`AlertPolicy.poll`.
* Reaching CONNECTED ends it: a ``recovered`` alert if (and only if) an incident alert went
  out; a flap shorter than ``grace`` makes no noise at all.
* The user closing the connection (CLOSING / CLOSED) ends it silently.
* ``cooldown``: an incident alert less than ``cooldown`` seconds after the previous one for the
  same connection is suppressed (and so is its recovery); the next alert that does go out says
  how many were suppressed.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .._core.log import redact_text
from ..connection.events import ConnectionState, StateChange
from ..resilience.config import check_non_negative

__all__ = ["Alert", "AlertKind", "AlertPolicy"]

_S = ConnectionState
_DOWN = frozenset({_S.CONNECTING, _S.BACKOFF, _S.CIRCUIT_OPEN, _S.FAILED})


class AlertKind(enum.Enum):
    """What an :class:`Alert` announces."""

    INCIDENT = "incident"
    """The connection is down (too long, or the circuit opened, or it failed)."""
    RECOVERED = "recovered"
    """The connection is back after an incident that was alerted."""


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert for one connection.

    Attributes:
        kind: Incident or recovery.
        name: The connection's name.
        severity: ``"critical"`` (circuit open / failed), ``"warning"`` (down longer than the
            grace period) or ``"info"`` (recovered).
        state: The connection state the alert was raised in.
        reason: The reason of the state change behind it.
        started_at: Wall-clock time the incident started.
        at: Wall-clock time of the alert.
        error: The error of the latest state change, redacted, or None.
        suppressed: Incident alerts suppressed by the cooldown since the previous alert.
    """

    kind: AlertKind
    name: str
    severity: str
    state: ConnectionState
    reason: str
    started_at: float
    at: float
    error: str | None = None
    suppressed: int = 0

    @property
    def duration(self) -> float:
        """Seconds from the start of the incident to this alert."""
        return max(0.0, self.at - self.started_at)

    def summary(self) -> str:
        """One line for a chat message or a pager."""
        if self.kind is AlertKind.RECOVERED:
            text = f"{self.name}: recovered after {self.duration:.1f} s"
        else:
            text = f"{self.name}: {self.state.value} for {self.duration:.1f} s ({self.reason})"
        if self.suppressed:
            text += f" [{self.suppressed} alert(s) suppressed]"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (enums as strings)."""
        return {
            "kind": self.kind.value,
            "name": self.name,
            "severity": self.severity,
            "state": self.state.value,
            "reason": self.reason,
            "started_at": self.started_at,
            "at": self.at,
            "duration": self.duration,
            "error": self.error,
            "suppressed": self.suppressed,
        }


@dataclass(slots=True)
class _Incident:
    started_at: float
    state: ConnectionState
    reason: str
    error: str | None
    alerted: bool = False
    suppressed: bool = False


class AlertPolicy:
    """Rate-limited alerting from state changes (see the module docstring for the rules).

    Args:
        grace: Seconds a connection may be down (reconnecting) before an alert; a flap
            shorter than this is silent.
        cooldown: Minimum seconds between two incident alerts for the same connection.
        critical_states: States that alert at once, without waiting for ``grace``.
        sink: Called with each alert when the policy is used as a hook (``policy(change)``)
            or polled through :meth:`poll_and_send`; sync or async.

    Raises:
        ConfigError: ``grace`` or ``cooldown`` is negative or not a number.
    """

    __slots__ = ("_critical", "_incidents", "_last_alert", "_pending", "cooldown", "grace", "sink")

    def __init__(
        self,
        *,
        grace: float = 30.0,
        cooldown: float = 0.0,
        critical_states: Iterable[ConnectionState] = (_S.CIRCUIT_OPEN, _S.FAILED),
        sink: Callable[[Alert], Any] | None = None,
    ) -> None:
        self.grace = check_non_negative(grace, "grace")
        self.cooldown = check_non_negative(cooldown, "cooldown")
        self._critical = frozenset(critical_states)
        if sink is not None and not callable(sink):
            raise TypeError(f"sink must be callable, got {sink!r}")
        self.sink = sink
        self._incidents: dict[str, _Incident] = {}
        self._last_alert: dict[str, float] = {}
        self._pending: dict[str, int] = {}  # suppressed incident alerts, by name

    def observe(self, change: StateChange) -> list[Alert]:
        """Feed one state change; return the alerts it raises (zero or one)."""
        name, new = change.name, change.new
        incident = self._incidents.get(name)
        if new is _S.CONNECTED:
            if incident is None:
                return []
            del self._incidents[name]
            if not incident.alerted or incident.suppressed:
                return []
            recovered = Alert(
                AlertKind.RECOVERED,
                name,
                "info",
                new,
                change.reason,
                incident.started_at,
                change.at,
            )
            return [recovered]
        if new not in _DOWN:  # CLOSING / CLOSED: the user is closing, not an incident
            self._incidents.pop(name, None)
            return []
        error = None if change.error is None else redact_text(repr(change.error))
        if incident is None:
            incident = _Incident(change.at, new, change.reason, error)
            self._incidents[name] = incident
        else:
            incident.state, incident.reason, incident.error = new, change.reason, error
        if incident.alerted:
            return []
        if new in self._critical:
            return self._fire(name, incident, change.at, "critical")
        if change.at - incident.started_at >= self.grace:
            return self._fire(name, incident, change.at, "warning")
        return []

    def poll(self, now: float) -> list[Alert]:
        """Raise the grace-period alerts due at wall-clock time ``now`` (call it on a timer)."""
        alerts: list[Alert] = []
        for name, incident in list(self._incidents.items()):
            if not incident.alerted and now - incident.started_at >= self.grace:
                alerts.extend(self._fire(name, incident, now, "warning"))
        return alerts

    @property
    def next_deadline(self) -> float | None:
        """Wall-clock time at which :meth:`poll` will next have something to say, or None."""
        due = [i.started_at + self.grace for i in self._incidents.values() if not i.alerted]
        return min(due, default=None)

    @property
    def open_incidents(self) -> tuple[str, ...]:
        """Names of connections with an incident in progress."""
        return tuple(self._incidents)

    def __call__(self, change: StateChange) -> Any:
        """Observe ``change`` and hand its alerts to ``sink`` (use the policy as a hook)."""
        return self._send(self.observe(change))

    def poll_and_send(self, now: float) -> Any:
        """:meth:`poll`, then hand the alerts to ``sink``; returns an awaitable if it is async."""
        return self._send(self.poll(now))

    def _send(self, alerts: list[Alert]) -> Any:
        if self.sink is None or not alerts:
            return None
        results = [self.sink(alert) for alert in alerts]
        waiting = [r for r in results if inspect.isawaitable(r)]
        if not waiting:
            return None

        async def wait_all() -> None:
            for awaitable in waiting:
                await awaitable

        return wait_all()

    def _fire(self, name: str, incident: _Incident, at: float, severity: str) -> list[Alert]:
        incident.alerted = True
        last = self._last_alert.get(name)
        if last is not None and self.cooldown and at - last < self.cooldown:
            incident.suppressed = True
            self._pending[name] = self._pending.get(name, 0) + 1
            return []
        self._last_alert[name] = at
        return [
            Alert(
                AlertKind.INCIDENT,
                name,
                severity,
                incident.state,
                incident.reason,
                incident.started_at,
                at,
                incident.error,
                self._pending.pop(name, 0),
            )
        ]
