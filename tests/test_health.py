"""Pure health logic: the snapshot -> status mapping, reports, breaker reports, alert policy."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_conn._core.errors import ConfigError
from resilient_conn.connection.events import ConnectionState, StateChange
from resilient_conn.connection.metrics import ConnectionSnapshot
from resilient_conn.health import (
    HealthReport,
    HealthStatus,
    breaker_report,
    evaluate,
    policy_report,
)
from resilient_conn.health.alerting import Alert, AlertKind, AlertPolicy
from resilient_conn.resilience.breaker import BreakerState, CircuitBreaker
from resilient_conn.resilience.policy import ResiliencePolicy

S = ConnectionState
H = HealthStatus
B = BreakerState
NOW = 1_700_000_000.0


def snap(**overrides: Any) -> ConnectionSnapshot:
    """A healthy CONNECTED snapshot, with ``overrides`` applied."""
    base = ConnectionSnapshot(
        name="feed",
        url="wss://feed.example/ws",
        state=S.CONNECTED,
        breaker_state=B.CLOSED,
        retry_after=0.0,
        connected_since=NOW - 12.0,
        uptime=12.0,
        disconnected_for=None,
        last_error=None,
        consecutive_failures=0,
        rtt=0.01,
        buffered=0,
        buffered_bytes=0,
        dead_letters=0,
        stats={"reconnects": 3},
    )
    return replace(base, **overrides)


def down(state: ConnectionState, disconnected_for: float | None = 1.0, **kw: Any) -> Any:
    """A snapshot of a connection that is not connected."""
    return snap(
        state=state, connected_since=None, uptime=None, disconnected_for=disconnected_for, **kw
    )


# --- the mapping, state by state ------------------------------------------------------------

EXPECTED = {
    S.IDLE: H.DEGRADED,
    S.CONNECTING: H.DEGRADED,
    S.CONNECTED: H.HEALTHY,
    S.BACKOFF: H.DEGRADED,
    S.CIRCUIT_OPEN: H.UNHEALTHY,
    S.CLOSING: H.UNHEALTHY,
    S.CLOSED: H.UNHEALTHY,
    S.FAILED: H.UNHEALTHY,
}


def test_mapping_table_covers_every_connection_state() -> None:
    """A new ConnectionState cannot be added without deciding its health here."""
    assert set(EXPECTED) == set(ConnectionState)


@pytest.mark.parametrize(("state", "expected"), list(EXPECTED.items()))
def test_each_state_maps_to_its_documented_status(
    state: ConnectionState, expected: HealthStatus
) -> None:
    """With the breaker closed and a short disconnection, each state has its documented status."""
    s = snap() if state is S.CONNECTED else down(state)
    report = evaluate(s, checked_at=NOW, unhealthy_after=30.0)
    assert report.status is expected
    assert report.state is state
    assert report.detail


def test_healthy_report_carries_the_snapshot_facts() -> None:
    """A healthy report copies uptime, rtt, reconnects, buffer and the check time."""
    report = evaluate(snap(buffered=2, dead_letters=1), checked_at=NOW)
    assert (report.status, report.detail) == (H.HEALTHY, "connected for 12.0 s")
    assert report.uptime == 12.0
    assert report.connected_since == NOW - 12.0
    assert report.reconnects == 3
    assert (report.buffered, report.dead_letters, report.rtt) == (2, 1, 0.01)
    assert report.checked_at == NOW
    assert report.breaker_state is B.CLOSED


@pytest.mark.parametrize("state", [S.CONNECTING, S.BACKOFF])
def test_disconnected_at_least_unhealthy_after_is_unhealthy(state: ConnectionState) -> None:
    """Reconnecting for unhealthy_after seconds or more turns DEGRADED into UNHEALTHY."""
    assert evaluate(down(state, 29.9), checked_at=NOW, unhealthy_after=30).status is H.DEGRADED
    exact = evaluate(down(state, 30.0), checked_at=NOW, unhealthy_after=30)
    assert exact.status is H.UNHEALTHY
    assert "disconnected for 30.0 s" in exact.detail


def test_unknown_disconnection_time_stays_degraded() -> None:
    """CONNECTING with no disconnection time (first dial) is DEGRADED, never guessed worse."""
    report = evaluate(down(S.CONNECTING, None), checked_at=NOW, unhealthy_after=0.0)
    assert report.status is H.DEGRADED


def test_unhealthy_after_defaults_to_config_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """unhealthy_after=None resolves the setting: 30 s by default, or the env variable."""
    s = down(S.BACKOFF, 10.0)
    assert evaluate(s, checked_at=NOW).status is H.DEGRADED
    monkeypatch.setenv("RESILIENT_CONN_UNHEALTHY_AFTER", "5")
    assert evaluate(s, checked_at=NOW).status is H.UNHEALTHY


@pytest.mark.parametrize(
    ("breaker", "expected", "words"),
    [
        (B.CLOSED, H.HEALTHY, "connected"),
        (B.DISABLED, H.HEALTHY, "connected"),
        (B.HALF_OPEN, H.DEGRADED, "half-open"),
        (B.OPEN, H.UNHEALTHY, "circuit open"),
        (B.FORCED_OPEN, H.UNHEALTHY, "circuit forced open"),
    ],
)
def test_breaker_state_of_a_connected_connection(
    breaker: BreakerState, expected: HealthStatus, words: str
) -> None:
    """The connection's breaker state weighs in even while a transport is open."""
    report = evaluate(snap(breaker_state=breaker), checked_at=NOW)
    assert report.status is expected
    assert words in report.detail


def test_circuit_open_state_says_when_the_next_probe_comes() -> None:
    """CIRCUIT_OPEN is UNHEALTHY at once and the detail tells when it retries."""
    s = down(S.CIRCUIT_OPEN, 2.0, breaker_state=B.OPEN, retry_after=42.0)
    report = evaluate(s, checked_at=NOW, unhealthy_after=30.0)
    assert report.status is H.UNHEALTHY
    assert "next probe in 42.0 s" in report.detail
    assert report.retry_after == 42.0


def test_forced_open_retry_after_is_infinite_but_json_safe() -> None:
    """A forced-open breaker has retry_after inf in the report and null in its dict."""
    report = evaluate(snap(breaker_state=B.FORCED_OPEN, retry_after=math.inf), checked_at=NOW)
    assert report.retry_after == math.inf
    assert "forever" in report.detail
    data = report.to_dict()
    assert data["retry_after"] is None
    json.dumps(data, allow_nan=False)


def test_failed_detail_names_the_error() -> None:
    """FAILED says why, from the snapshot's last error."""
    s = down(S.FAILED, 3.0, last_error="InvalidStatus(401)")
    report = evaluate(s, checked_at=NOW)
    assert report.status is H.UNHEALTHY
    assert report.detail.startswith("failed: InvalidStatus(401)")


def test_rtt_over_the_limit_is_degraded_and_measured_rtt_wins() -> None:
    """A slow round trip degrades; the rtt measured by check() replaces the snapshot's."""
    assert evaluate(snap(rtt=0.2), checked_at=NOW, rtt_limit=0.5).status is H.HEALTHY
    slow = evaluate(snap(rtt=0.2), checked_at=NOW, rtt_limit=0.5, rtt=0.9)
    assert slow.status is H.DEGRADED
    assert slow.rtt == 0.9
    assert "rtt 0.900 s > rtt_limit 0.5 s" in slow.detail
    assert evaluate(snap(rtt=9.0), checked_at=NOW).status is H.HEALTHY  # no limit, no rule


def test_stale_rtt_of_a_disconnected_connection_is_ignored() -> None:
    """The rtt rule applies only while CONNECTED (an old rtt says nothing about now)."""
    report = evaluate(down(S.BACKOFF, 1.0, rtt=5.0), checked_at=NOW, rtt_limit=0.1)
    assert "rtt" not in report.detail


def test_buffer_at_high_water_is_degraded() -> None:
    """Buffered messages at or above the high-water mark degrade the connection."""
    assert evaluate(snap(buffered=7), checked_at=NOW, buffer_high_water=8).status is H.HEALTHY
    full = evaluate(snap(buffered=8), checked_at=NOW, buffer_high_water=8)
    assert full.status is H.DEGRADED
    assert "8 messages buffered (high water 8)" in full.detail


def test_worst_reason_comes_first_and_all_reasons_are_listed() -> None:
    """With several findings, detail lists the worst first, then the others."""
    s = down(S.BACKOFF, 60.0, buffered=100)
    report = evaluate(s, checked_at=NOW, unhealthy_after=30.0, buffer_high_water=10)
    assert report.status is H.UNHEALTHY
    first, second = report.detail.split("; ")
    assert first.startswith("disconnected for 60.0 s")
    assert second.startswith("100 messages buffered")


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"unhealthy_after": -1.0}, "unhealthy_after"),
        ({"rtt_limit": 0}, "rtt_limit"),
        ({"rtt_limit": math.nan}, "rtt_limit"),
        ({"buffer_high_water": 0}, "buffer_high_water"),
        ({"buffer_high_water": 2.5}, "buffer_high_water"),
    ],
)
def test_bad_limits_raise_config_error_naming_the_parameter(
    kwargs: dict[str, Any], param: str
) -> None:
    """A bad limit is a ConfigError (a ValueError) whose message names the parameter."""
    with pytest.raises(ConfigError, match=param):
        evaluate(snap(), checked_at=NOW, **kwargs)


@given(
    state=st.sampled_from(list(ConnectionState)),
    breaker=st.sampled_from(list(BreakerState)),
    gone=st.none() | st.floats(0, 1e6),
    longer=st.floats(0, 1e6),
    rtt=st.none() | st.floats(0, 100),
    buffered=st.integers(0, 10_000),
)
def test_mapping_is_total_json_safe_and_never_improves_with_longer_outages(
    state: ConnectionState,
    breaker: BreakerState,
    gone: float | None,
    longer: float,
    rtt: float | None,
    buffered: int,
) -> None:
    """For any snapshot, evaluate returns a JSON-safe report; a longer outage is never better."""
    s = snap(state=state, breaker_state=breaker, disconnected_for=gone, rtt=rtt, buffered=buffered)
    kw: dict[str, Any] = {"checked_at": NOW, "rtt_limit": 1.0, "buffer_high_water": 100}
    report = evaluate(s, **kw)
    json.dumps(report.to_dict(), allow_nan=False)
    if gone is not None:
        later = evaluate(replace(s, disconnected_for=gone + longer), **kw)
        assert later.status >= report.status


# --- reports: ordering, JSON, secrets -------------------------------------------------------


def test_status_order_and_worst() -> None:
    """HEALTHY < DEGRADED < UNHEALTHY, and worst() picks the worst (HEALTHY when empty)."""
    assert H.HEALTHY < H.DEGRADED < H.UNHEALTHY
    assert H.worst([H.DEGRADED, H.HEALTHY, H.UNHEALTHY, H.DEGRADED]) is H.UNHEALTHY
    assert H.worst([]) is H.HEALTHY
    assert max([H.DEGRADED, H.HEALTHY]) is H.DEGRADED


def test_to_dict_uses_strings_for_enums_and_is_valid_json() -> None:
    """to_dict has enum values as strings and nested components as dicts; json.dumps works."""
    child = evaluate(down(S.BACKOFF, 2.0), checked_at=NOW)
    parent = HealthReport(H.DEGRADED, "all", "x", NOW, kind="aggregate", components={"a": child})
    data = json.loads(json.dumps(parent.to_dict(), allow_nan=False))
    assert data["status"] == "degraded"
    sub = data["components"]["a"]
    assert (sub["state"], sub["breaker_state"], sub["status"]) == ("backoff", "closed", "degraded")
    assert sub["uptime"] is None


def test_components_of_a_report_cannot_be_mutated() -> None:
    """A report's components mapping is a read-only copy."""
    source = {"a": evaluate(snap(), checked_at=NOW)}
    report = HealthReport(H.HEALTHY, "all", "", NOW, components=source)
    source.clear()
    assert list(report.components) == ["a"]
    with pytest.raises(TypeError):
        report.components["b"] = report  # type: ignore[index]


def test_no_secret_reaches_a_report() -> None:
    """Secrets in the URL and in the error text never appear in a report or its JSON."""
    s = down(
        S.FAILED,
        5.0,
        url="wss://user:hunter2@feed.example/ws?apikey=SECRETKEY&vsn=2",
        last_error="handshake to wss://feed.example/ws?token=SECRETTOKEN failed: Bearer abc.def",
    )
    report = evaluate(s, checked_at=NOW)
    text = json.dumps(report.to_dict()) + repr(report)
    for secret in ("SECRETKEY", "SECRETTOKEN", "hunter2", "abc.def"):
        assert secret not in text
    assert "token=***" in (report.last_error or "")


def test_hand_built_reports_are_redacted_too() -> None:
    """Whoever builds a HealthReport, its detail and last_error are redacted."""
    report = HealthReport(
        H.UNHEALTHY, "x", "boom access_token=XYZ", NOW, last_error="apikey=ABC rejected"
    )
    assert "XYZ" not in report.detail
    assert "ABC" not in (report.last_error or "")


def test_readiness_of_a_report() -> None:
    """DEGRADED is ready unless told otherwise; UNHEALTHY never is."""
    degraded = HealthReport(H.DEGRADED, "x", "", NOW)
    assert degraded.is_ready()
    assert not degraded.is_ready(ready_on_degraded=False)
    assert degraded.ok
    unhealthy = HealthReport(H.UNHEALTHY, "x", "", NOW)
    assert not unhealthy.is_ready()
    assert not unhealthy.ok


# --- breakers and policies ------------------------------------------------------------------


class _Clock:
    """A manual clock for breakers."""

    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        """Current reading."""
        return self.t

    async def sleep(self, seconds: float) -> None:
        """Skip time."""
        self.t += max(seconds, 0.0)


def test_breaker_report_follows_the_breaker_through_its_states() -> None:
    """CLOSED healthy, OPEN unhealthy with retry time, HALF_OPEN degraded, forced, disabled."""
    clock = _Clock()
    breaker = CircuitBreaker(2, 10.0, name="db", clock=clock)
    report = breaker_report(breaker, checked_at=NOW)
    assert (report.status, report.name, report.kind) == (H.HEALTHY, "db", "breaker")
    breaker.record_failure(RuntimeError("x"))
    breaker.record_failure(RuntimeError("x"))
    report = breaker_report(breaker, checked_at=NOW)
    assert (report.status, report.breaker_state) == (H.UNHEALTHY, B.OPEN)
    assert report.retry_after == 10.0
    assert report.consecutive_failures == 2
    clock.t += 10.0
    assert breaker_report(breaker).status is H.DEGRADED
    breaker.force_open()
    forced = breaker_report(breaker)
    assert forced.status is H.UNHEALTHY
    assert "forced open" in forced.detail
    breaker.disable()
    disabled = breaker_report(breaker, name="other")
    assert (disabled.status, disabled.name) == (H.HEALTHY, "other")
    assert "disabled" in disabled.detail


def test_policy_report_is_its_breakers_health() -> None:
    """A policy reports its breaker's health under the policy's name and kind."""
    policy = ResiliencePolicy("payments")
    report = policy_report(policy)
    assert (report.status, report.name, report.kind) == (H.HEALTHY, "payments", "policy")
    policy.breaker.force_open()
    assert policy_report(policy, name="p").status is H.UNHEALTHY


# --- alert policy ---------------------------------------------------------------------------


def change(
    old: ConnectionState,
    new: ConnectionState,
    at: float,
    name: str = "feed",
    error: BaseException | None = None,
) -> StateChange:
    """A StateChange event at wall time ``at``."""
    return StateChange(old, new, f"{old.value}->{new.value}", 1, error, at, name)


def test_short_flap_makes_no_alert() -> None:
    """Down and back within the grace period: no incident, no recovery alert."""
    policy = AlertPolicy(grace=30.0)
    assert policy.observe(change(S.CONNECTED, S.BACKOFF, 0.0)) == []
    assert policy.observe(change(S.BACKOFF, S.CONNECTING, 5.0)) == []
    assert policy.poll(29.0) == []
    assert policy.observe(change(S.CONNECTING, S.CONNECTED, 6.0)) == []
    assert policy.open_incidents == ()


def test_long_outage_alerts_once_then_recovers_once() -> None:
    """Past the grace period one warning goes out, whatever follows; then one recovery."""
    policy = AlertPolicy(grace=30.0)
    policy.observe(change(S.CONNECTED, S.BACKOFF, 0.0))
    before = policy.next_deadline
    [alert] = policy.poll(30.0)
    after = policy.next_deadline
    assert (before, after) == (30.0, None)
    assert (alert.kind, alert.severity, alert.state, alert.started_at) == (
        AlertKind.INCIDENT,
        "warning",
        S.BACKOFF,
        0.0,
    )
    assert alert.duration == 30.0
    assert policy.observe(change(S.BACKOFF, S.CONNECTING, 40.0)) == []
    assert policy.observe(change(S.CONNECTING, S.BACKOFF, 41.0)) == []
    assert policy.poll(100.0) == []
    [back] = policy.observe(change(S.CONNECTING, S.CONNECTED, 120.0))
    assert (back.kind, back.severity, back.duration) == (AlertKind.RECOVERED, "info", 120.0)
    assert "recovered after 120.0 s" in back.summary()


def test_grace_is_also_noticed_on_the_next_state_change() -> None:
    """Without poll(), the next state change after the grace period raises the warning."""
    policy = AlertPolicy(grace=10.0)
    policy.observe(change(S.CONNECTED, S.BACKOFF, 0.0))
    [alert] = policy.observe(change(S.BACKOFF, S.CONNECTING, 12.0))
    assert alert.severity == "warning"


def test_circuit_open_and_failed_alert_at_once() -> None:
    """Entering CIRCUIT_OPEN or FAILED is critical immediately, once per incident."""
    policy = AlertPolicy(grace=300.0)
    policy.observe(change(S.CONNECTED, S.BACKOFF, 0.0))
    [alert] = policy.observe(change(S.BACKOFF, S.CIRCUIT_OPEN, 1.0))
    assert (alert.severity, alert.state) == ("critical", S.CIRCUIT_OPEN)
    assert policy.observe(change(S.CIRCUIT_OPEN, S.FAILED, 2.0)) == []
    other = AlertPolicy()
    err = RuntimeError("401 for wss://h/?apikey=SECRET")
    [failed] = other.observe(change(S.CONNECTING, S.FAILED, 0.0, error=err))
    assert failed.severity == "critical"
    assert "SECRET" not in json.dumps(failed.to_dict())


def test_user_close_ends_an_incident_silently() -> None:
    """CLOSING while down ends the incident without a (false) recovery alert."""
    policy = AlertPolicy(grace=0.0)
    [_] = policy.observe(change(S.CONNECTED, S.BACKOFF, 0.0))
    assert policy.observe(change(S.BACKOFF, S.CLOSING, 1.0)) == []
    assert policy.observe(change(S.CLOSING, S.CLOSED, 1.0)) == []
    assert policy.open_incidents == ()


def test_incidents_are_tracked_per_connection() -> None:
    """Two connections have independent incidents."""
    policy = AlertPolicy(grace=10.0)
    policy.observe(change(S.CONNECTED, S.BACKOFF, 0.0, name="a"))
    policy.observe(change(S.CONNECTED, S.BACKOFF, 5.0, name="b"))
    assert [a.name for a in policy.poll(12.0)] == ["a"]
    assert [a.name for a in policy.poll(15.0)] == ["b"]


def test_cooldown_suppresses_repeat_incidents_and_counts_them() -> None:
    """Within the cooldown a new incident (and its recovery) is suppressed, then counted."""
    policy = AlertPolicy(grace=0.0, cooldown=600.0)
    assert len(policy.observe(change(S.CONNECTED, S.CIRCUIT_OPEN, 0.0))) == 1
    assert len(policy.observe(change(S.CIRCUIT_OPEN, S.CONNECTED, 10.0))) == 1
    assert policy.observe(change(S.CONNECTED, S.CIRCUIT_OPEN, 20.0)) == []
    assert policy.observe(change(S.CIRCUIT_OPEN, S.CONNECTED, 30.0)) == []
    [late] = policy.observe(change(S.CONNECTED, S.CIRCUIT_OPEN, 700.0))
    assert late.suppressed == 1
    assert "1 alert(s) suppressed" in late.summary()


def test_policy_as_hook_delivers_alerts_to_sync_sink() -> None:
    """Calling the policy with a change hands each alert to a sync sink."""
    got: list[Alert] = []
    policy = AlertPolicy(grace=0.0, sink=got.append)
    assert policy(change(S.CONNECTED, S.CIRCUIT_OPEN, 0.0)) is None
    assert [a.kind for a in got] == [AlertKind.INCIDENT]


@pytest.mark.anyio
async def test_policy_as_hook_returns_an_awaitable_for_async_sink() -> None:
    """With an async sink, the hook returns an awaitable that delivers the alerts."""
    got: list[Alert] = []

    async def sink(alert: Alert) -> None:
        got.append(alert)

    policy = AlertPolicy(grace=0.0, sink=sink)
    pending = policy(change(S.CONNECTED, S.FAILED, 0.0))
    assert got == []
    await pending
    assert [a.state for a in got] == [S.FAILED]
    assert policy.poll_and_send(1.0) is None


@pytest.mark.parametrize(
    ("kwargs", "param"), [({"grace": -1}, "grace"), ({"cooldown": "x"}, "cooldown")]
)
def test_alert_policy_rejects_bad_settings(kwargs: dict[str, Any], param: str) -> None:
    """Bad grace/cooldown values are ConfigErrors naming the parameter."""
    with pytest.raises(ConfigError, match=param):
        AlertPolicy(**kwargs)
