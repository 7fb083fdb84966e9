"""HealthRegistry: aggregation, concurrent checks under one timeout, metrics and Prometheus text."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resilient_conn._core.clock import set_testing
from resilient_conn._core.errors import ConfigError
from resilient_conn.connection.events import ConnectionState
from resilient_conn.connection.metrics import ConnectionSnapshot
from resilient_conn.health import HealthReport, HealthStatus, evaluate
from resilient_conn.health.prometheus import CONTENT_TYPE, RegistryCollector, render, to_jsonable
from resilient_conn.health.registry import HealthRegistry
from resilient_conn.resilience.breaker import BreakerState, CircuitBreaker
from resilient_conn.resilience.policy import ResiliencePolicy

H = HealthStatus
NOW = 1_700_000_000.0


class Fixed:
    """A component whose health is whatever the test sets."""

    def __init__(self, status: HealthStatus, detail: str = "fixed") -> None:
        self.status = status
        self.detail = detail

    def health(self) -> HealthReport:
        """The set status."""
        return HealthReport(self.status, "fixed", self.detail, NOW)

    async def check(self, timeout: float | None = None) -> HealthReport:
        """The set status, after yielding once."""
        await anyio.lowlevel.checkpoint()
        return self.health()


class Hanging(Fixed):
    """A component whose check never returns; records that it was cancelled."""

    def __init__(self) -> None:
        super().__init__(H.HEALTHY, "connected for 3.0 s")
        self.cancelled = False

    async def check(self, timeout: float | None = None) -> HealthReport:
        """Hang until cancelled."""
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        raise AssertionError("unreachable")


class Raising(Fixed):
    """A component whose check and health raise, with a secret in the message."""

    def __init__(self) -> None:
        super().__init__(H.HEALTHY)

    def health(self) -> HealthReport:
        """Raise."""
        raise RuntimeError("health broke, token=SECRETTOKEN")

    async def check(self, timeout: float | None = None) -> HealthReport:
        """Raise."""
        raise RuntimeError("check broke, token=SECRETTOKEN")


class FakeConnection:
    """The parts of ResilientConnection a registry uses, health built by evaluate()."""

    def __init__(self, name: str = "feed", **overrides: Any) -> None:
        self.name = name
        self.breaker = CircuitBreaker(name=name)
        self.snap = ConnectionSnapshot(
            name=name,
            url="wss://u:pw@feed.example/ws?apikey=SECRETKEY",
            state=ConnectionState.CONNECTED,
            breaker_state=BreakerState.CLOSED,
            retry_after=0.0,
            connected_since=NOW - 5,
            uptime=5.0,
            disconnected_for=None,
            last_error="old error token=SECRETTOKEN",
            consecutive_failures=0,
            rtt=0.002,
            buffered=3,
            buffered_bytes=30,
            dead_letters=2,
            stats={
                "dials": 4,
                "connects": 3,
                "reconnects": 2,
                "failures": {"refused": 1, "lost": 2},
                "messages_in": 10,
                "messages_out": 7,
                "bytes_in": 100,
                "bytes_out": 70,
                "dead_letters": {"expired": 2},
                "circuit_opens": 0,
                "disconnected_seconds": 1.5,
                "generation": 3,
                "buffer_capacity": 1000,
            },
        )
        self.snap = replace(self.snap, **overrides)
        self.timeouts: list[float | None] = []

    def snapshot(self) -> ConnectionSnapshot:
        """The fixed snapshot."""
        return self.snap

    def health(self) -> HealthReport:
        """evaluate() of the snapshot, as the real connection does."""
        return evaluate(self.snap, checked_at=NOW)

    async def check(self, timeout: float | None = None) -> HealthReport:
        """Record the timeout it was given and report with a measured rtt."""
        self.timeouts.append(timeout)
        return evaluate(self.snap, checked_at=NOW, rtt=0.001)


def make_policy() -> ResiliencePolicy:
    """A policy with some retry history: one call that failed once, then succeeded."""
    policy = ResiliencePolicy("payments", max_attempts=3)
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("first try fails")
        return "ok"

    with set_testing():
        assert anyio.run(policy.call, flaky) == "ok"
    return policy


# --- registration -----------------------------------------------------------------------------


def test_register_rejects_duplicates_and_empty_names() -> None:
    """A name can be registered once; an empty name is refused; both say what is wrong."""
    registry = HealthRegistry()
    registry.register("a", Fixed(H.HEALTHY))
    with pytest.raises(ConfigError, match="'a' is already registered"):
        registry.register("a", Fixed(H.HEALTHY))
    with pytest.raises(ConfigError, match="name"):
        registry.register("", Fixed(H.HEALTHY))
    assert registry.names == ("a",)


def test_register_rejects_unsupported_components() -> None:
    """An object that is neither a health check, a breaker nor a policy is a TypeError."""
    with pytest.raises(TypeError, match="component must have health"):
        HealthRegistry().register("x", object())


def test_unregister_removes_and_frees_the_name() -> None:
    """After unregister the component is gone and its name can be reused."""
    registry = HealthRegistry()
    registry.register("a", Fixed(H.UNHEALTHY))
    registry.unregister("a")
    assert "a" not in registry
    assert registry.health().status is H.HEALTHY
    registry.register("a", Fixed(H.HEALTHY))
    assert len(registry) == 1
    with pytest.raises(KeyError):
        registry.unregister("nope")


@pytest.mark.parametrize("timeout", [0, -1, math.inf, "5"])
def test_bad_timeouts_are_config_errors(timeout: Any) -> None:
    """check_timeout must be a finite positive number."""
    with pytest.raises(ConfigError, match="check_timeout"):
        HealthRegistry(check_timeout=timeout)


def test_check_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad RESILIENT_CONN_CHECK_TIMEOUT is reported, naming the variable."""
    monkeypatch.setenv("RESILIENT_CONN_CHECK_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="RESILIENT_CONN_CHECK_TIMEOUT"):
        HealthRegistry()


# --- aggregation ------------------------------------------------------------------------------


def test_empty_registry_is_healthy() -> None:
    """No components: HEALTHY, and the detail says why."""
    report = HealthRegistry(name="svc").health()
    assert (report.status, report.name, report.kind) == (H.HEALTHY, "svc", "aggregate")
    assert report.detail == "no components registered"


def test_worst_status_wins_and_components_are_reported_by_name() -> None:
    """The aggregate is the worst component; each component's report is kept under its name."""
    registry = HealthRegistry()
    registry.register("ok", Fixed(H.HEALTHY))
    registry.register("slow", Fixed(H.DEGRADED, "rtt high"))
    assert registry.health().status is H.DEGRADED
    registry.register("down", Fixed(H.UNHEALTHY, "circuit open"))
    report = registry.health()
    assert report.status is H.UNHEALTHY
    assert list(report.components) == ["ok", "slow", "down"]
    assert report.components["down"].name == "down"
    assert report.detail == "down: unhealthy (circuit open); slow: degraded (rtt high)"


def test_non_critical_component_only_degrades_the_aggregate() -> None:
    """An UNHEALTHY component registered critical=False makes the aggregate DEGRADED (ready)."""
    registry = HealthRegistry()
    registry.register("main", Fixed(H.HEALTHY))
    registry.register("optional", Fixed(H.UNHEALTHY), critical=False)
    report = registry.health()
    assert report.status is H.DEGRADED
    assert report.components["optional"].status is H.UNHEALTHY
    assert report.components["optional"].critical is False
    assert registry.is_ready(report)


def test_readiness_with_and_without_ready_on_degraded() -> None:
    """DEGRADED is ready by default and not ready with ready_on_degraded=False."""
    for flag, expected in ((True, True), (False, False)):
        registry = HealthRegistry(ready_on_degraded=flag)
        registry.register("slow", Fixed(H.DEGRADED))
        assert registry.is_ready(registry.health()) is expected


def test_health_of_a_raising_component_is_unhealthy_and_redacted() -> None:
    """health() never raises: a component that raises is UNHEALTHY with a redacted reason."""
    registry = HealthRegistry()
    registry.register("bad", Raising())
    report = registry.health()
    assert report.status is H.UNHEALTHY
    assert "health() raised RuntimeError" in report.components["bad"].detail
    assert "SECRETTOKEN" not in json.dumps(report.to_dict())


def test_breakers_and_policies_are_adapted() -> None:
    """A CircuitBreaker and a ResiliencePolicy can be registered directly."""
    registry = HealthRegistry()
    breaker = CircuitBreaker(name="db")
    policy = make_policy()
    registry.register("db", breaker)
    registry.register("payments", policy)
    report = registry.health()
    assert report.status is H.HEALTHY
    assert [r.kind for r in report.components.values()] == ["breaker", "policy"]
    policy.breaker.force_open()
    assert registry.health().components["payments"].status is H.UNHEALTHY


# --- check_all --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_check_all_runs_checks_concurrently() -> None:
    """Two checks that each wait for the other can only finish if they run at the same time."""
    a_started, b_started = anyio.Event(), anyio.Event()

    class Waiter(Fixed):
        def __init__(self, mine: anyio.Event, other: anyio.Event) -> None:
            super().__init__(H.HEALTHY)
            self.mine, self.other = mine, other

        async def check(self, timeout: float | None = None) -> HealthReport:
            """Signal, then wait for the other one."""
            self.mine.set()
            await self.other.wait()
            return self.health()

    registry = HealthRegistry()
    registry.register("a", Waiter(a_started, b_started))
    registry.register("b", Waiter(b_started, a_started))
    report = await registry.check_all(timeout=5.0)
    assert report.status is H.HEALTHY


@pytest.mark.anyio
async def test_hanging_check_is_unhealthy_timeout_and_the_call_returns() -> None:
    """A check that hangs is cut at the overall timeout, cancelled, and reported UNHEALTHY."""
    registry = HealthRegistry()
    hanging = Hanging()
    registry.register("stuck", hanging)
    registry.register("ok", Fixed(H.HEALTHY))
    with anyio.fail_after(0.2 + 2.0):
        report = await registry.check_all(timeout=0.2)
    stuck = report.components["stuck"]
    assert stuck.status is H.UNHEALTHY
    assert stuck.detail.startswith("check timed out after 0.2 s")
    assert "last known: connected for 3.0 s" in stuck.detail
    assert report.components["ok"].status is H.HEALTHY
    assert report.status is H.UNHEALTHY
    assert hanging.cancelled


@pytest.mark.anyio
async def test_one_overall_timeout_for_many_hanging_checks() -> None:
    """Ten hanging checks share one timeout: the call returns well before ten timeouts."""
    registry = HealthRegistry(check_timeout=0.2)
    for i in range(10):
        registry.register(f"stuck{i}", Hanging())
    with anyio.fail_after(0.2 + 1.0):  # ten sequential timeouts would need 2 s
        report = await registry.check_all()
    assert all(r.status is H.UNHEALTHY for r in report.components.values())


@pytest.mark.anyio
async def test_raising_or_wrong_checks_are_unhealthy_not_errors() -> None:
    """check_all never raises: a raising check or one returning junk becomes UNHEALTHY."""

    class Junk(Fixed):
        async def check(self, timeout: float | None = None) -> HealthReport:
            """Return something that is not a report."""
            return "fine"  # type: ignore[return-value]

    registry = HealthRegistry()
    registry.register("bad", Raising())
    registry.register("junk", Junk(H.HEALTHY))
    report = await registry.check_all(timeout=1.0)
    assert "check raised RuntimeError: check broke" in report.components["bad"].detail
    assert "returned str, not a HealthReport" in report.components["junk"].detail
    assert report.status is H.UNHEALTHY
    assert "SECRETTOKEN" not in json.dumps(report.to_dict())


@pytest.mark.anyio
async def test_check_all_passes_the_timeout_and_keeps_measured_rtt() -> None:
    """Each component's check gets the overall timeout; its own report (rtt) is kept."""
    conn = FakeConnection()
    registry = HealthRegistry()
    registry.register("feed", conn)
    report = await registry.check_all(timeout=1.5)
    assert conn.timeouts == [1.5]
    assert report.components["feed"].rtt == 0.001


@pytest.mark.anyio
@pytest.mark.parametrize("timeout", [0, -0.5, math.nan])
async def test_check_all_rejects_bad_timeouts(timeout: float) -> None:
    """check_all(timeout=...) must be positive and finite."""
    with pytest.raises(ConfigError, match="timeout"):
        await HealthRegistry().check_all(timeout=timeout)


@pytest.mark.anyio
async def test_registries_nest() -> None:
    """A registry registered in another contributes its aggregate."""
    inner = HealthRegistry(name="inner")
    inner.register("down", Fixed(H.UNHEALTHY))
    outer = HealthRegistry()
    outer.register("inner", inner, critical=False)
    report = await outer.check_all(timeout=1.0)
    assert report.status is H.DEGRADED
    assert report.components["inner"].components["down"].status is H.UNHEALTHY


# --- metrics and Prometheus text --------------------------------------------------------------


def full_registry() -> HealthRegistry:
    """A registry with a connection, a breaker and a policy."""
    registry = HealthRegistry(name="svc")
    registry.register("feed", FakeConnection())
    registry.register("db", CircuitBreaker(name="db"))
    registry.register("payments", make_policy())
    return registry


def families(text: str) -> dict[str, Any]:
    """Parse exposition text with prometheus_client's parser, by family name."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams: dict[str, Any], name: str, **labels: str) -> float:
    """The value of the one sample of family ``name`` with ``labels`` (subset match)."""
    found = [
        s.value
        for f in fams.values()
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return float(found[0])


def test_metrics_snapshot_is_json_safe_and_secret_free() -> None:
    """registry.metrics() dumps as strict JSON and contains no secret from URL or errors."""
    data = full_registry().metrics()
    text = json.dumps(data, allow_nan=False)
    for secret in ("SECRETKEY", "SECRETTOKEN", "pw@"):
        assert secret not in text
    feed = data["components"]["feed"]
    assert feed["kind"] == "connection"
    assert feed["connection"]["state"] == "connected"
    assert feed["connection"]["stats"]["failures"] == {"refused": 1, "lost": 2}
    assert feed["breaker"]["state"] == "closed"
    payments = data["components"]["payments"]
    assert payments["policy"]["retry"]["attempts"] == 2
    assert "breaker" not in payments["policy"]
    assert payments["breaker"]["name"] == "payments"


def test_prometheus_text_parses_and_has_the_documented_metrics() -> None:
    """The rendered text parses with prometheus_client and carries connection/breaker values."""
    fams = families(render(full_registry().metrics()))
    assert sample(fams, "resilient_conn_health_aggregate_status", status="healthy") == 1
    assert sample(fams, "resilient_conn_connection_state", component="feed", state="connected") == 1
    assert sample(fams, "resilient_conn_connection_state", component="feed", state="backoff") == 0
    assert sample(fams, "resilient_conn_connection_dials_total", component="feed") == 4
    assert sample(fams, "resilient_conn_connection_reconnects_total", component="feed") == 2
    assert sample(fams, "resilient_conn_connection_failures_total", kind="lost") == 2
    assert sample(fams, "resilient_conn_connection_messages_total", direction="in") == 10
    assert sample(fams, "resilient_conn_connection_bytes_total", direction="out") == 70
    assert sample(fams, "resilient_conn_connection_dead_letters_total", reason="expired") == 2
    assert sample(fams, "resilient_conn_connection_buffered_messages", component="feed") == 3
    assert sample(fams, "resilient_conn_connection_rtt_seconds", component="feed") == 0.002
    assert sample(fams, "resilient_conn_breaker_state", component="db", state="closed") == 1
    assert sample(fams, "resilient_conn_breaker_transitions_total", component="db") == 0
    assert sample(fams, "resilient_conn_policy_retry_retries_total", component="payments") == 1
    assert sample(fams, "resilient_conn_policy_fail_fast_total", component="payments") == 0
    assert fams["resilient_conn_connection_dials"].type == "counter"
    assert fams["resilient_conn_connection_buffered_messages"].type == "gauge"
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_prometheus_text_reflects_an_open_breaker_and_unknown_rtt() -> None:
    """A forced-open breaker exports +Inf retry_after; an unknown rtt is simply absent."""
    registry = HealthRegistry()
    conn = FakeConnection(rtt=None)
    registry.register("feed", conn)
    conn.breaker.force_open()
    fams = families(render(registry.metrics()))
    assert sample(fams, "resilient_conn_breaker_state", state="forced_open") == 1
    assert sample(fams, "resilient_conn_breaker_retry_after_seconds") == math.inf
    assert "resilient_conn_connection_rtt_seconds" not in fams


def test_label_values_are_escaped() -> None:
    """Quotes, backslashes and newlines in names and reasons survive a parse round trip."""
    nasty = 'we"ird\\name\nx'
    registry = HealthRegistry()
    conn = FakeConnection(nasty)
    conn.snap = replace(conn.snap, stats={**conn.snap.stats, "failures": {'k"1\\': 1}})
    registry.register(nasty, conn)
    fams = families(render(registry.metrics()))
    assert sample(fams, "resilient_conn_connection_failures_total", component=nasty) == 1
    assert sample(fams, "resilient_conn_connection_failures_total", kind='k"1\\') == 1


def test_empty_registry_renders_aggregate_only() -> None:
    """With no components only the aggregate status is exported."""
    fams = families(render(HealthRegistry().metrics()))
    assert set(fams) == {"resilient_conn_health_aggregate_status"}


def test_registry_collector_feeds_prometheus_client() -> None:
    """RegistryCollector exposes the same metrics through a prometheus_client registry."""
    prom = CollectorRegistry()
    prom.register(RegistryCollector(full_registry()))
    fams = families(generate_latest(prom).decode())
    assert sample(fams, "resilient_conn_connection_dials_total", component="feed") == 4
    assert sample(fams, "resilient_conn_breaker_state", component="db", state="closed") == 1


def test_to_jsonable_handles_odd_values() -> None:
    """Non-finite floats become None, sets become lists, unknown objects redacted strings."""
    assert to_jsonable({"a": math.inf, "b": {1}, "c": object}) == {
        "a": None,
        "b": [1],
        "c": "<class 'object'>",
    }
    assert to_jsonable("x?apikey=SECRET") == "x?apikey=***"
