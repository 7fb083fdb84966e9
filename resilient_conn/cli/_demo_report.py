"""Terminal output of the demo: timestamped event lines and the summary."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

__all__ = ["DemoSummary", "Reporter"]

_COLORS = {
    "red": "\x1b[31m",
    "green": "\x1b[32m",
    "yellow": "\x1b[33m",
    "blue": "\x1b[34m",
    "magenta": "\x1b[35m",
    "cyan": "\x1b[36m",
    "bold": "\x1b[1m",
    "dim": "\x1b[2m",
}
_RESET = "\x1b[0m"

STATE_COLORS = {
    "connected": "green",
    "connecting": "cyan",
    "backoff": "yellow",
    "circuit_open": "red",
    "failed": "red",
    "closing": "dim",
    "closed": "dim",
}
"""Color of a state-change line, by the state entered."""


class Reporter:
    """Writes one line per event, stamped with seconds since the demo started.

    Args:
        stream: Where lines go; None discards them (``--quiet``).
        color: Use ANSI colors (only when the stream is a terminal).
    """

    def __init__(self, stream: TextIO | None, *, color: bool = False) -> None:
        self.stream = stream
        self.color = color
        self.started = time.monotonic()

    def elapsed(self) -> float:
        """Seconds since the demo started."""
        return time.monotonic() - self.started

    def paint(self, text: str, color: str | None) -> str:
        """Return ``text`` in ``color`` when colors are on."""
        if not self.color or color is None:
            return text
        return f"{_COLORS[color]}{text}{_RESET}"

    def line(self, kind: str, text: str, color: str | None = None) -> None:
        """Write ``[  12.34s] kind  text``."""
        if self.stream is None:
            return
        stamp = self.paint(f"[{self.elapsed():7.2f}s]", "dim")
        self.stream.write(f"{stamp} {self.paint(f'{kind:<9}', color)} {text}\n")
        self.stream.flush()


@dataclass(slots=True)
class DemoSummary:
    """What the demo measured (``--json`` prints :meth:`to_dict`).

    Attributes:
        seed: The seed of every random choice (pass it back with ``--seed`` to repeat).
        duration: The requested duration in seconds.
        elapsed: How long the demo really ran, drain included.
        sent: Distinct messages the client sent.
        delivered: Distinct messages the server application received.
        dead_lettered: Messages the acknowledged stream gave up and reported (and never
            delivered).
        lost: ``sent - delivered - dead_lettered``: messages gone without a trace (must be 0).
        duplicates_suppressed: Copies the server's delivery hub dropped by sequence number
            before they reached the application.
        duplicates_delivered: Copies that reached the server application anyway (must be 0).
        reordered: Messages the server application received after a higher number (must
            be 0).
        resent: Copies the client's acknowledged stream re-sent after a reconnect.
        gap_notices: Gap notices the stream or the hub raised (none is expected: both keep
            their state for the whole run).
        reconnects: Transports opened after the first.
        dials: Dial attempts.
        breaker_openings: Times the circuit breaker opened.
        disconnected_seconds: Time spent without a transport after the first connect.
        faults_injected: How many faults were injected.
        faults: Their names, in order.
        failures: Failures by kind, as the connection counted them.
        health_url: The health endpoint served during the demo, if any.
        final_health: Health status at the end, before closing.
        realtime: Results of the Realtime part, or None when it did not run.
        problems: Why the run failed; empty when it passed.
    """

    seed: int
    duration: float
    elapsed: float = 0.0
    sent: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    lost: int = 0
    duplicates_suppressed: int = 0
    duplicates_delivered: int = 0
    reordered: int = 0
    resent: int = 0
    gap_notices: int = 0
    reconnects: int = 0
    dials: int = 0
    breaker_openings: int = 0
    disconnected_seconds: float = 0.0
    faults_injected: int = 0
    faults: list[str] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    health_url: str | None = None
    final_health: str | None = None
    realtime: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was lost and nothing else went wrong."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict of every field, plus ``ok``."""
        data = asdict(self)
        data["ok"] = self.ok
        data["elapsed"] = round(self.elapsed, 3)
        data["disconnected_seconds"] = round(self.disconnected_seconds, 3)
        return data

    def render(self, reporter: Reporter) -> str:
        """Return the human-readable SUMMARY block."""
        p = reporter.paint
        rows = [
            ("sent", str(self.sent)),
            ("delivered", f"{self.delivered} (unique, seen by the server application)"),
            ("dead-lettered", str(self.dead_lettered)),
            ("lost", p(str(self.lost), "green" if self.lost == 0 else "red")),
            ("re-sent", f"{self.resent} (after reconnects, by the acknowledged stream)"),
            ("duplicates suppressed", f"{self.duplicates_suppressed} (by the server's hub)"),
            ("exactly once", _once(self)),
            ("reconnects", f"{self.reconnects} ({self.dials} dials)"),
            ("breaker openings", str(self.breaker_openings)),
            ("time disconnected", f"{self.disconnected_seconds:.2f} s"),
            ("faults injected", f"{self.faults_injected} ({', '.join(self.faults)})"),
            ("failures by kind", _kinds(self.failures)),
            ("final health", self.final_health or "-"),
        ]
        if self.realtime is not None:
            rows.append(("realtime", _realtime(self.realtime)))
        rows.append(("elapsed", f"{self.elapsed:.1f} s (seed {self.seed})"))
        width = max(len(k) for k, _ in rows)
        out = [p("SUMMARY", "bold")]
        out += [f"  {k:<{width}}  {v}" for k, v in rows]
        out.append(
            f"  lost = sent - delivered - dead-lettered = {self.sent} - {self.delivered} - "
            f"{self.dead_lettered} = {self.lost}"
        )
        if self.ok:
            out.append(p("RESULT: OK - every message was delivered or reported", "green"))
        else:
            out.append(p("RESULT: FAILED - " + "; ".join(self.problems), "red"))
        return "\n".join(out) + "\n"


def _once(s: DemoSummary) -> str:
    text = f"{s.duplicates_delivered} copies, {s.reordered} out of order reached the application"
    if s.gap_notices:
        text += f"; {s.gap_notices} gap notice(s)"
    return text


def _kinds(failures: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(failures.items())) or "-"


def _realtime(data: dict[str, Any]) -> str:
    if not data.get("available", False):
        return str(data.get("detail", "not available"))
    return ", ".join(f"{k} {v}" for k, v in data.items() if k != "available")
