"""Metrics of a ``HealthRegistry``: a JSON-safe dict, and the Prometheus text format.

``HealthRegistry.metrics()`` returns a plain dict (see ``docs/health.md``);
:func:`render` turns that dict into the Prometheus text exposition format 0.0.4. When
``prometheus_client`` is installed (extra ``resilient-conn[prometheus]``) it writes the text
(format, escaping, ``# HELP``/``# TYPE``: a well-kept library's job); without it a small
writer here does, so probing needs no dependency. :class:`RegistryCollector` plugs a registry
into a ``prometheus_client`` registry for programs that already run one.

Every metric is prefixed ``resilient_conn_`` and labelled ``component`` with the name the
component was registered under.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .._core.log import redact_text
from ..connection.events import ConnectionState
from ..resilience.breaker import BreakerState

if TYPE_CHECKING:
    from ..connection.report import HealthReport

__all__ = [
    "CONTENT_TYPE",
    "MetricsSource",
    "RegistryCollector",
    "component_metrics",
    "render",
    "to_jsonable",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of :func:`render`'s output."""

BREAKER_STATES = tuple(state.value for state in BreakerState)
"""Breaker state names exported as the one-hot ``resilient_conn_breaker_state`` gauge."""

_HEALTH_STATES = ("healthy", "degraded", "unhealthy")
_MAX_DEPTH = 8


def to_jsonable(value: object, _depth: int = 0) -> Any:
    """Return ``value`` as JSON-safe data; every string in it is redacted.

    Dataclasses and mappings become dicts, sequences lists, enums their string value,
    non-finite floats None, and any other object its (redacted) ``str``.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, enum.Enum):
        return value.value if isinstance(value.value, str) else value.name.lower()
    if _depth >= _MAX_DEPTH:
        return redact_text(repr(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_jsonable(getattr(value, f.name), _depth + 1)
            for f in dataclasses.fields(value)
        }
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v, _depth + 1) for v in value]
    return redact_text(str(value))


def component_metrics(kind: str, source: object, report: HealthReport) -> dict[str, Any]:
    """Collect the JSON-safe metrics of one registered component (never raises).

    Args:
        kind: ``"connection"``, ``"breaker"``, ``"policy"`` or ``"component"``.
        source: The registered object.
        report: Its current health report.

    Returns:
        ``{"kind", "critical", "status", "connection"?, "breaker"?, "policy"?, "error"?}``.
    """
    out: dict[str, Any] = {"kind": kind, "critical": report.critical, "status": report.status.value}
    obj: Any = source
    try:
        if kind == "connection":
            out["connection"] = to_jsonable(obj.snapshot())
            breaker = getattr(obj, "breaker", None)
            if breaker is not None and callable(getattr(breaker, "metrics", None)):
                out["breaker"] = to_jsonable(breaker.metrics())
        elif kind == "policy":
            policy = to_jsonable(obj.metrics())
            if isinstance(policy, dict):
                policy.pop("breaker", None)  # exported once, under "breaker"
            out["policy"] = policy
            out["breaker"] = to_jsonable(obj.breaker.metrics())
        elif kind == "breaker":
            out["breaker"] = to_jsonable(obj.metrics())
    except Exception as exc:
        out["error"] = redact_text(f"{type(exc).__name__}: {exc}")
    return out


_Sample = tuple[dict[str, str], "int | float"]


class _Writer:
    """Accumulates metric families (structured), then writes them as text or client metrics."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, list[_Sample]]] = {}

    def add(
        self, name: str, kind: str, help_text: str, labels: Mapping[str, str], value: object
    ) -> None:
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, (int, float)):
            return
        family = self._families.setdefault(name, (kind, help_text, []))
        family[2].append((dict(labels), value))

    def text(self) -> str:
        """The exposition text, written here (the zero-dependency path)."""
        lines: list[str] = []
        for name, (kind, help_text, samples) in self._families.items():
            lines.append(f"# HELP {name} {_escape_help(help_text)}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                pairs = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                number = _number(value)
                lines.append(f"{name}{{{pairs}}} {number}" if pairs else f"{name} {number}")
        return "\n".join(lines) + "\n" if lines else ""

    def client_metrics(self) -> list[Any]:
        """The families as ``prometheus_client`` metrics (needs ``prometheus_client``)."""
        from prometheus_client.metrics_core import Metric

        out = []
        for name, (kind, help_text, samples) in self._families.items():
            family = name.removesuffix("_total") if kind == "counter" else name
            metric = Metric(family, help_text, kind)  # the client writes a counter's "_total"
            for labels, value in samples:
                metric.add_sample(name, labels, float(value))
            out.append(metric)
        return out


def _number(value: object) -> str | None:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return None


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


_P = "resilient_conn_"


def render(metrics: Mapping[str, Any], *, use_client: bool | None = None) -> str:
    """Render ``HealthRegistry.metrics()`` as Prometheus text exposition format 0.0.4.

    Args:
        metrics: The dict returned by ``HealthRegistry.metrics()``.
        use_client: Write the text with ``prometheus_client`` (True), with the built-in writer
            (False), or with ``prometheus_client`` when it is installed (None, the default).

    Returns:
        The exposition text (``Content-Type`` :data:`CONTENT_TYPE`).
    """
    w = _families(metrics)
    if use_client is None:
        use_client = _client_installed()
    if not use_client:
        return w.text()
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(w.client_metrics()))
    return generate_latest(registry).decode()


def _client_installed() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


class _Fixed:
    """A ``prometheus_client`` collector yielding metrics built once."""

    def __init__(self, metrics: list[Any]) -> None:
        self._metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        yield from self._metrics


def _families(metrics: Mapping[str, Any]) -> _Writer:
    w = _Writer()
    registry = str(metrics.get("name", ""))
    aggregate = metrics.get("status")
    for state in _HEALTH_STATES:
        w.add(
            _P + "health_aggregate_status",
            "gauge",
            "Aggregate health of the registry (1 for the current status).",
            {"registry": registry, "status": state},
            int(state == aggregate),
        )
    components: Mapping[str, Any] = metrics.get("components") or {}
    for name, comp in components.items():
        for state in _HEALTH_STATES:
            w.add(
                _P + "health_status",
                "gauge",
                "Health of a component (1 for the current status).",
                {"component": name, "status": state},
                int(state == comp.get("status")),
            )
        if isinstance(conn := comp.get("connection"), Mapping):
            _connection(w, name, conn)
        if isinstance(breaker := comp.get("breaker"), Mapping):
            _breaker(w, name, breaker)
        if isinstance(policy := comp.get("policy"), Mapping):
            _policy(w, name, policy)
    return w


def _connection(w: _Writer, name: str, snap: Mapping[str, Any]) -> None:
    c = {"component": name}
    for state in ConnectionState:
        w.add(
            _P + "connection_state",
            "gauge",
            "Connection state (1 for the current state).",
            {**c, "state": state.value},
            int(snap.get("state") == state.value),
        )
    stats: Mapping[str, Any] = snap.get("stats") or {}
    counters = (
        ("dials", "Dial attempts started."),
        ("connects", "Dials that completed the handshake."),
        ("reconnects", "Connects after the first one."),
        ("circuit_opens", "Times the supervisor found the circuit open."),
    )
    for key, help_text in counters:
        w.add(f"{_P}connection_{key}_total", "counter", help_text, c, stats.get(key))
    for kind, count in (stats.get("failures") or {}).items():
        w.add(
            _P + "connection_failures_total",
            "counter",
            "Failed dials and lost connections, by kind.",
            {**c, "kind": str(kind)},
            count,
        )
    for direction in ("in", "out"):
        w.add(
            _P + "connection_messages_total",
            "counter",
            "Messages received (in) and handed to a transport (out).",
            {**c, "direction": direction},
            stats.get(f"messages_{direction}"),
        )
        w.add(
            _P + "connection_bytes_total",
            "counter",
            "Payload bytes received (in) and sent (out).",
            {**c, "direction": direction},
            stats.get(f"bytes_{direction}"),
        )
    for reason, count in (stats.get("dead_letters") or {}).items():
        w.add(
            _P + "connection_dead_letters_total",
            "counter",
            "Messages dead-lettered, by reason.",
            {**c, "reason": str(reason)},
            count,
        )
    w.add(
        _P + "connection_disconnected_seconds_total",
        "counter",
        "Seconds spent not connected after the first connect.",
        c,
        stats.get("disconnected_seconds"),
    )
    gauges = (
        ("buffered", "connection_buffered_messages", "Messages waiting in the outbound buffer."),
        ("buffered_bytes", "connection_buffered_bytes", "Bytes waiting in the outbound buffer."),
        ("buffer_capacity", "connection_buffer_capacity_messages", "Outbound buffer capacity."),
        ("generation", "connection_generation", "Transports opened so far (generation)."),
        ("rtt", "connection_rtt_seconds", "Last measured round trip."),
        ("uptime", "connection_uptime_seconds", "Seconds the current connection has been up."),
        (
            "consecutive_failures",
            "connection_consecutive_failures",
            "Failures since the last stable connection.",
        ),
    )
    for key, metric, help_text in gauges:
        w.add(_P + metric, "gauge", help_text, c, snap.get(key, stats.get(key)))


def _breaker(w: _Writer, name: str, m: Mapping[str, Any]) -> None:
    c = {"component": name}
    current = m.get("state")
    states = BREAKER_STATES if current in BREAKER_STATES else (*BREAKER_STATES, str(current))
    for state in states:
        w.add(
            _P + "breaker_state",
            "gauge",
            "Circuit breaker state (1 for the current state).",
            {**c, "state": state},
            int(state == current),
        )
    counters = (
        ("calls", "Calls (or dials) the breaker guarded."),
        ("successes", "Calls that succeeded."),
        ("failures", "Calls that failed."),
        ("rejections", "Calls refused while the circuit was open."),
        ("times_opened", "Times the circuit opened (including re-opens from half-open)."),
    )
    for key, help_text in counters:
        w.add(f"{_P}breaker_{key}_total", "counter", help_text, c, m.get(key))
    transitions = m.get("transitions")
    help_t = "Circuit breaker state transitions."
    if isinstance(transitions, Mapping):
        for label, count in transitions.items():
            w.add(
                _P + "breaker_transitions_total",
                "counter",
                help_t,
                {**c, "transition": str(label)},
                count,
            )
    else:
        w.add(_P + "breaker_transitions_total", "counter", help_t, c, transitions)
    w.add(
        _P + "breaker_consecutive_failures",
        "gauge",
        "Consecutive failures counted towards opening the circuit.",
        c,
        m.get("consecutive_failures"),
    )
    gauges = (
        ("retry_after", "retry_after_seconds", "Seconds until the breaker admits a probe."),
        ("recovery_timeout", "recovery_timeout_seconds", "Open time currently in force."),
        ("half_open_in_flight", "half_open_in_flight", "Probe calls outstanding."),
    )
    for key, metric, help_text in gauges:
        value = m.get(key)
        if key == "retry_after" and value is None and current == "forced_open":
            value = math.inf  # the JSON snapshot writes inf as null
        w.add(f"{_P}breaker_{metric}", "gauge", help_text, c, value)


def _policy(w: _Writer, name: str, m: Mapping[str, Any]) -> None:
    # ResiliencePolicy.metrics(): retry counters and fail-fast refusals (its breaker is exported
    # through the component's "breaker" entry).
    c = {"component": name}
    retry: Mapping[str, Any] = m.get("retry") or {}
    counters = (
        ("attempts", "Attempts started by the policy's retry loop."),
        ("successes", "Calls that eventually returned."),
        ("retries", "Sleeps taken before another attempt."),
        ("exhaustions", "Calls that gave up (attempts or deadline)."),
        ("not_retried", "Calls ended by an error the policy does not retry."),
    )
    for key, help_text in counters:
        w.add(f"{_P}policy_retry_{key}_total", "counter", help_text, c, retry.get(key))
    w.add(
        _P + "policy_fail_fast_total",
        "counter",
        "Calls refused at once because the circuit would stay open too long.",
        c,
        m.get("fail_fast"),
    )


class MetricsSource(Protocol):
    """Anything with a ``metrics()`` dict in the registry's shape (a ``HealthRegistry``)."""

    def metrics(self) -> dict[str, Any]:
        """The JSON-safe metrics dict (see ``docs/health.md``)."""
        ...


class RegistryCollector:
    """A ``prometheus_client`` collector exposing a :class:`HealthRegistry`'s metrics.

    ``prometheus_client.REGISTRY.register(RegistryCollector(registry))`` adds the same metrics
    :func:`render` writes to an existing ``prometheus_client`` endpoint.
    """

    def __init__(self, registry: MetricsSource) -> None:
        self._registry = registry

    def describe(self) -> list[Any]:
        """Return no descriptions, so registering does not run a collection."""
        return []

    def collect(self) -> Iterator[Any]:
        """Yield ``prometheus_client`` metric families for the registry's current metrics."""
        yield from _families(self._registry.metrics()).client_metrics()
