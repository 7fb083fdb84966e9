"""/metrics text: prometheus_client writes it when installed, the built-in writer otherwise,
and both say exactly the same thing."""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from resilient_conn import HealthRegistry
from resilient_conn.health.prometheus import render

from .test_health_registry import FakeConnection, full_registry


def samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Every sample of ``text`` as (name, sorted labels, value); NaN made comparable."""
    return {
        (s.name, tuple(sorted(s.labels.items())), -1.0 if math.isnan(s.value) else s.value)
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def nasty_registry() -> HealthRegistry:
    """Label values with quotes, backslashes and newlines; a forced-open breaker (+Inf)."""
    registry = HealthRegistry()
    conn = FakeConnection('we"ird\\name\nx')
    conn.snap = replace(conn.snap, stats={**conn.snap.stats, "failures": {'k"1\\': 1}})
    registry.register('we"ird\\name\nx', conn)
    conn.breaker.force_open()
    return registry


@pytest.mark.parametrize("make", [full_registry, nasty_registry, HealthRegistry])
def test_client_and_builtin_writers_agree(make: Any) -> None:
    """The same samples, labels (escaped) and values (+Inf included) from both writers."""
    metrics = make().metrics()
    client = render(metrics, use_client=True)
    builtin = render(metrics, use_client=False)
    assert samples(client) == samples(builtin)
    assert samples(client)  # not vacuous: the aggregate status at least


def test_default_uses_prometheus_client_when_installed() -> None:
    """Installed (dev extra): the text is prometheus_client's (it writes floats as 1.0)."""
    text = render(full_registry().metrics())
    assert text == render(full_registry().metrics(), use_client=True)


def test_without_prometheus_client_the_builtin_writer_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With prometheus_client not importable, render() still works (zero-dependency path)."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    text = render(full_registry().metrics())
    assert text == render(full_registry().metrics(), use_client=False)
