"""The dashboard in a real browser: headless Chromium against a live registry on 127.0.0.1.

Skipped when Chromium is not installed, unless ``RESILIENT_CONN_REQUIRE_BROWSER=1`` (CI sets
it, so a CI machine without Chromium fails instead of skipping). The screenshot is written to
the test's tmp path, and also to ``$RESILIENT_CONN_ARTEFACTS`` when that is set.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from resilient_conn import (
    Backoff,
    CircuitBreaker,
    HealthRegistry,
    ResilientConnection,
    health_app,
    serve_health,
)
from resilient_conn.health import DashboardConfig
from resilient_conn.testing import ScriptedServer

from ._chromium import find_chromium, launch

CHROMIUM = find_chromium()
REQUIRED = os.environ.get("RESILIENT_CONN_REQUIRE_BROWSER") == "1"
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not REQUIRED,
    reason="needs Chromium (Debian package 'chromium'); CI installs it",
)
HOSTILE = '<img src=x onerror="window.__pwned=1">'


def tile(name: str) -> str:
    """JS: the tile element of component ``name``."""
    return (
        f"[...document.querySelectorAll('.tile')].find(t => t.dataset.name === {json.dumps(name)})"
    )


def keep(png: Path) -> None:
    """Copy an artefact to $RESILIENT_CONN_ARTEFACTS when that is set."""
    target = os.environ.get("RESILIENT_CONN_ARTEFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(target) / png.name)


@pytest.mark.anyio
async def test_dashboard_shows_a_fault_live_in_chromium(tmp_path: Path) -> None:
    """Chromium opens /dashboard; stopping the server turns the connection's tile from
    connected/healthy to a not-connected, not-healthy state with timeline entries, restarting it
    turns the tile back; a hostile component name is shown as text; the page requests nothing
    but its own server and logs no error; a screenshot of the fault is written."""
    assert CHROMIUM is not None, "RESILIENT_CONN_REQUIRE_BROWSER=1 but no chromium found"
    breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=0.5, name="feed")
    async with ScriptedServer() as server:
        conn = ResilientConnection(
            server.url,
            name="feed",
            backoff=Backoff(0.05, 0.2, rng=random.Random(7)),
            breaker=breaker,
            ping_interval=0.5,
            ping_timeout=0.5,
            stable_after=0.2,
        )
        registry = HealthRegistry(name="browser-test")
        registry.register("feed", conn)
        registry.register(HOSTILE, CircuitBreaker(name="other"), critical=False)
        app = health_app(registry, dashboard=DashboardConfig(interval=0.2, points=60))
        async with (
            conn,
            serve_health(registry, app=app) as health,
            launch(CHROMIUM, tmp_path / "profile") as browser,
        ):
            page = await browser.new_page()
            await page.goto(f"{health.url}/dashboard")
            feed = tile("feed")
            await page.wait_for(
                f"{feed} && {feed}.dataset.state === 'connected' "
                f"&& {feed}.dataset.status === 'healthy' "
                "&& document.getElementById('link').dataset.link === 'live'"
            )

            await server.stop(1001, "outage")  # the fault
            await page.wait_for(
                f"{feed}.dataset.state !== 'connected' && {feed}.dataset.status !== 'healthy' "
                f"&& {feed}.querySelectorAll('.timeline li').length >= 2"
            )
            shot = tmp_path / "dashboard-fault.png"
            png = await page.screenshot(shot)
            keep(shot)
            assert png.startswith(b"\x89PNG\r\n\x1a\n")
            timeline = await page.evaluate(f"{feed}.querySelector('.timeline').innerText")
            assert "connected →" in timeline

            await server.start()
            await page.wait_for(
                f"{feed}.dataset.state === 'connected' && {feed}.dataset.status === 'healthy'"
            )
            name_shown = await page.evaluate(f"{tile(HOSTILE)}.querySelector('h2').textContent")
            assert name_shown == HOSTILE
            assert await page.evaluate("document.querySelectorAll('.tile img').length") == 0
            assert await page.evaluate("window.__pwned === undefined") is True
            page_log = page.log
        assert page_log.errors == []
        assert page_log.requests, "no request recorded"
        assert all(url.startswith(health.url + "/") for url in page_log.requests), page_log.requests


@pytest.mark.anyio
async def test_page_reconnects_by_itself_after_the_server_restarts(tmp_path: Path) -> None:
    """The health server goes away under an open page (the page says it is reconnecting) and
    comes back on the same port: the page reconnects on its own and shows the tile again."""
    assert CHROMIUM is not None, "RESILIENT_CONN_REQUIRE_BROWSER=1 but no chromium found"
    breaker = CircuitBreaker(name="b")
    registry = HealthRegistry(name="restart-test")
    registry.register("b", breaker)
    config = DashboardConfig(interval=0.2)
    link = "document.getElementById('link').dataset.link"
    async with launch(CHROMIUM, tmp_path / "profile") as browser:
        page = await browser.new_page()
        async with serve_health(registry, app=health_app(registry, dashboard=config)) as first:
            await page.goto(f"{first.url}/dashboard")
            await page.wait_for(f"{link} === 'live' && {tile('b')} !== null")
            port = first.port
        await page.wait_for(f"{link} === 'reconnecting'")
        breaker.force_open()
        app = health_app(registry, dashboard=config)
        async with serve_health(registry, port=port, app=app):
            await page.wait_for(
                f"{link} === 'live' && {tile('b')}.dataset.breaker === 'forced_open'", timeout=40
            )
        errors = [e for e in page.log.errors if "ERR_CONNECTION_REFUSED" not in e]
        assert errors == []
