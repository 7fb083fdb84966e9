"""The demo's Realtime part: a Phoenix channel that rejoins by itself after a server restart.

A :class:`~resilient_conn.realtime.RealtimeClient` subscribes to ``postgres_changes`` and
broadcasts on one channel of an embedded :class:`~resilient_conn.testing.PhoenixServer`; the
server injects changes, restarts (close 1012), and injects more. The client reconnects, rejoins
the channel, tells the application that events may have been missed (the gap hook: Phoenix
has no replay), and receives the later changes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import anyio

from ..connection.events import StateChange
from ..resilience.backoff import Backoff
from ..testing import PhoenixServer
from ._demo_report import STATE_COLORS, Reporter

__all__ = ["run_realtime_part"]

TOPIC = "realtime:orders"
_BEFORE = 3  # changes injected before the restart
_AFTER = 2  # and after


async def run_realtime_part(reporter: Reporter, seed: int, timeout: float = 30.0) -> dict[str, Any]:
    """Run the Realtime part and return its results (``available``, ``ok``, counters).

    Never raises for a failed run: the result says what went wrong (``ok`` False, ``detail``).
    """
    try:
        from ..realtime import RealtimeClient
    except ImportError:
        reporter.line("realtime", "the Realtime client is not available; part skipped", "dim")
        return {"available": False, "detail": "the Realtime client is not available"}

    result: dict[str, Any] = {"available": True, "ok": False, "events": 0, "rejoins": 0}
    gaps: list[int] = []
    changes: list[Any] = []
    notify: list[Callable[[], None]] = []

    def on_state(change: StateChange) -> None:
        text = f"{change.old.value} -> {change.new.value} ({change.reason})"
        reporter.line("realtime", text, STATE_COLORS.get(change.new.value))

    def wake() -> None:
        for callback in tuple(notify):
            callback()

    def on_change(message: Any) -> None:
        record = message.payload.get("data", {}).get("record", {})
        changes.append(record)
        reporter.line("realtime", f"postgres_changes INSERT orders {record}", "cyan")
        wake()

    def on_gap(channel: Any) -> None:
        gaps.append(1)
        reporter.line("realtime", "rejoined: events may have been missed, refetch now", "yellow")
        wake()

    reporter.line("realtime", "Phoenix/Realtime part: channel 'orders' on an embedded server")
    try:
        with anyio.fail_after(timeout):
            async with PhoenixServer() as server:
                client = RealtimeClient(
                    server.realtime_url,
                    apikey="demo-anon-key",
                    heartbeat_interval=1.0,
                    push_timeout=5.0,
                    backoff=Backoff(0.1, 1.0, rng=random.Random(seed)),
                    stable_after=1.0,
                    name="realtime-demo",
                )
                client.connection.on_state_change(on_state)
                async with client:
                    channel = client.channel(
                        TOPIC,
                        postgres_changes=[{"event": "*", "schema": "public", "table": "orders"}],
                        queue_size=0,
                    )
                    channel.on("postgres_changes", on_change)
                    channel.on_gap(on_gap)
                    await channel.subscribe()
                    reporter.line("realtime", f"joined {TOPIC}", "green")
                    await _inject(server, 1, _BEFORE)
                    await _wait(notify, lambda: len(changes) >= _BEFORE)
                    reporter.line("FAULT", "Phoenix server restart (close 1012)", "bold")
                    await server.restart()
                    await server.wait_for_join(TOPIC, 2)
                    await _wait(notify, lambda: bool(gaps))
                    await _inject(server, _BEFORE + 1, _AFTER)
                    await _wait(notify, lambda: len(changes) >= _BEFORE + _AFTER)
                    result["rejoins"] = len(server.joins_of(TOPIC)) - 1
                    result["reconnects"] = client.connection.stats.reconnects
    except Exception as exc:  # a failed part is reported, not raised
        result["detail"] = f"{type(exc).__name__}: {exc}"
        reporter.line("realtime", f"part failed: {result['detail']}", "red")
    result["events"] = len(changes)
    result["gaps_reported"] = len(gaps)
    result["ok"] = "detail" not in result and len(changes) == _BEFORE + _AFTER and bool(gaps)
    return result


async def _inject(server: PhoenixServer, first: int, count: int) -> None:
    for n in range(first, first + count):
        await server.inject_postgres_change(TOPIC, table="orders", record={"id": n})


async def _wait(notify: list[Callable[[], None]], predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate()`` holds, re-checked whenever a handler wakes the waiters."""
    while not predicate():
        event = anyio.Event()
        notify.append(event.set)
        try:
            await event.wait()
        finally:
            notify.remove(event.set)
