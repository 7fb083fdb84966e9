"""The dashboard's feed on its own (no event loop, no socket): bounds, diffs, hooks, rates."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from resilient_conn import CircuitBreaker, HealthRegistry, HealthReport, HealthStatus
from resilient_conn.health import DashboardConfig
from resilient_conn.health._feed import DashboardFeed


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        """The set time."""
        return self.now


@dataclass
class Stats:
    """Only what the feed reads of ConnectionStats."""

    dials: int = 0


@dataclass
class Component:
    """A connection-shaped component: a report, dial stats, and state-change hooks."""

    state: str = "connected"
    stats: Stats = field(default_factory=Stats)
    hooks: list[Callable[[Any], None]] = field(default_factory=list)

    def health(self) -> HealthReport:
        """HEALTHY."""
        return HealthReport(HealthStatus.HEALTHY, "c", "ok", 0.0)

    async def check(self, timeout: float | None = None) -> HealthReport:
        """HEALTHY."""
        return self.health()

    def on_state_change(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        """Keep the hook."""
        self.hooks.append(callback)
        return lambda: self.hooks.remove(callback)


@dataclass
class Change:
    """Shaped like a StateChange."""

    old: str
    new: str
    reason: str = "why"
    error: BaseException | None = None
    at: float = 5.0


def make(registry: HealthRegistry, **config: Any) -> tuple[DashboardFeed, Clock]:
    """A feed on a fake clock."""
    clock = Clock()
    return DashboardFeed(registry, DashboardConfig(**config), clock=clock, wall_clock=clock), clock


def test_samples_are_taken_once_per_interval() -> None:
    """tick_if_due samples only when interval has passed; each sample is JSON-safe."""
    registry = HealthRegistry()
    registry.register("b", CircuitBreaker())
    feed, clock = make(registry, interval=1.0)
    assert feed.tick_if_due()
    assert not feed.tick_if_due()
    assert feed.due_in() == 1.0
    clock.now += 1.0
    assert feed.tick_if_due()
    assert feed.sample_no == 2
    json.dumps(feed.snapshot(), allow_nan=False)


def test_tiles_are_bounded_and_the_rest_counted() -> None:
    """1,000 components: max_tiles tiles, the others counted as hidden, memory per shown tile."""
    registry = HealthRegistry()
    for i in range(1000):
        registry.register(f"b{i}", CircuitBreaker())
    feed, _ = make(registry, max_tiles=20)
    feed.tick()
    assert len(feed.sample["tiles"]) == 20
    assert feed.sample["hidden"] == 980
    assert len(feed.snapshot()["series"]) == 20


def test_a_lagging_reader_is_told_to_start_over_when_the_backlog_overflowed() -> None:
    """changes_since returns the missed changes while they are in the backlog, else None."""
    feed, _ = make(HealthRegistry(), backlog=4, history=3)
    for i in range(10):
        feed.record("x", "state", "a", "b", f"change {i}", float(i))
    assert feed.changes_since(10) == []
    assert [n for n, _ in feed.changes_since(7) or []] == [8, 9, 10]
    assert feed.changes_since(6) is not None
    assert feed.changes_since(5) is None
    assert feed.changes_since(0) is None


def test_hooks_give_exact_changes_and_are_removed_with_the_component() -> None:
    """A connection's hook records each transition with its (redacted) reason and error; when
    the component is unregistered the hook is removed and its history forgotten."""
    component = Component()
    registry = HealthRegistry()
    registry.register("c", component)
    feed, clock = make(registry)
    feed.tick()
    assert len(component.hooks) == 1
    component.hooks[0](Change("connected", "backoff", "lost", RuntimeError("token=abc123")))
    change = feed.changes_since(0)
    assert change is not None
    assert change[0][1]["reason"] == "lost: RuntimeError: token=***"
    assert feed.snapshot()["timelines"]["c"][0]["new"] == "backoff"
    registry.unregister("c")
    clock.now += 5
    feed.tick()
    assert component.hooks == []
    assert "c" not in feed.snapshot()["timelines"]


def test_a_dropped_feed_removes_its_hook_on_the_next_change() -> None:
    """Apps that are created and dropped never pile hooks up on a long-lived connection."""
    component = Component()
    registry = HealthRegistry()
    registry.register("c", component)
    feed, _ = make(registry)
    feed.tick()
    hook = component.hooks[0]
    del feed
    gc.collect()
    hook(Change("connected", "backoff"))
    assert component.hooks == []


def test_dial_rate_is_dials_per_second_between_samples() -> None:
    """The chart's dial rate is the dial count's slope; None on the first sample."""
    component = Component()
    registry = HealthRegistry()
    registry.register("c", component)
    feed, clock = make(registry, interval=1.0)
    feed.tick()
    assert feed.sample["points"]["c"][2] is None
    component.stats.dials = 6
    clock.now += 2.0
    feed.tick()
    assert feed.sample["points"]["c"][2] == 3.0
    assert feed.sample["tiles"][0]["dials"] == 6


def test_a_flood_of_changes_stays_bounded() -> None:
    """100,000 changes keep at most backlog log entries and history timeline entries, and a
    sample is scheduled soon after a change, not once per change."""
    component = Component()
    registry = HealthRegistry()
    registry.register("c", component)
    feed, clock = make(registry, backlog=50, history=10, interval=1.0)
    feed.tick()
    for i in range(100_000):
        component.hooks[0](Change("connected" if i % 2 else "backoff", "x"))
    assert len(feed.snapshot()["timelines"]["c"]) == 10
    assert feed.changes_since(feed.seq - 50) is not None
    assert feed.changes_since(feed.seq - 51) is None
    assert feed.due_in() == pytest.approx(0.2)
    clock.now += 0.2
    assert feed.tick_if_due()


def test_a_broken_registry_is_shown_not_raised() -> None:
    """health() raising becomes a sample with an error (redacted), the stream goes on."""

    class Broken:
        name = "broken"

        def health(self) -> HealthReport:
            raise RuntimeError("password=hunter2 went wrong")

    feed = DashboardFeed(Broken())
    feed.tick()
    assert feed.sample["error"] == "RuntimeError: password=*** went wrong"


def test_long_texts_are_cut_after_redaction() -> None:
    """A 100 kB error or reason reaches the page as 500 characters at most, secrets redacted
    before the cut (a cut cannot expose half a token)."""
    huge = "token=abcdef " + "x" * 100_000

    class Loud:
        name = "loud"

        def health(self) -> HealthReport:
            inner = HealthReport(HealthStatus.UNHEALTHY, "c", huge, 0.0, last_error=huge)
            return HealthReport(HealthStatus.UNHEALTHY, "loud", huge, 0.0, components={"c": inner})

    feed = DashboardFeed(Loud())
    feed.tick()
    feed.record("c", "state", "a", "b", huge, 0.0)
    tile = feed.sample["tiles"][0]
    for text in (feed.sample["detail"], tile["detail"], tile["last_error"]):
        assert len(text) <= 500
        assert text.startswith("token=***")
    change = feed.changes_since(0)
    assert change is not None
    assert len(change[0][1]["reason"]) <= 500
