"""serve_health(server=...): the built-in server by default, uvicorn on request, clear errors."""

from __future__ import annotations

import signal
import sys

import anyio
import pytest

from resilient_conn import ConfigError, HealthRegistry, serve_health

from .test_health_slowloris import get

pytestmark = pytest.mark.anyio


async def test_uvicorn_serves_the_same_endpoints_and_leaves_signals_alone() -> None:
    """server="uvicorn" answers /livez, /readyz and /metrics, and does not take over SIGINT or
    SIGTERM from the application while it runs."""
    pytest.importorskip("uvicorn")
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    async with serve_health(HealthRegistry(name="t"), server="uvicorn") as server:
        assert server.port > 0
        assert [await get(server.port, p) for p in ("/livez", "/readyz", "/metrics")] == [200] * 3
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with pytest.raises(OSError, match="connection attempts failed"):  # nothing listens now
        await anyio.connect_tcp("127.0.0.1", server.port)


async def test_auto_picks_uvicorn_when_installed_else_builtin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """server="auto" works with and without uvicorn installed."""
    pytest.importorskip("uvicorn")
    async with serve_health(HealthRegistry(name="t"), server="auto") as server:
        assert await get(server.port) == 200
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    async with serve_health(HealthRegistry(name="t"), server="auto") as server:
        assert await get(server.port) == 200


async def test_bad_server_choices_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown server name, or "uvicorn" without uvicorn, is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="server must be"):
        async with serve_health(HealthRegistry(), server="gunicorn"):
            pass
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(ConfigError, match="needs uvicorn"):
        async with serve_health(HealthRegistry(), server="uvicorn"):
            pass


@pytest.mark.parametrize("kind", ["builtin", "uvicorn"])
@pytest.mark.parametrize("after", [0.0, 0.001, 0.01, 0.05])
async def test_cancelled_at_any_point_it_leaves_no_task_behind(kind: str, after: float) -> None:
    """Cancelling serve_health while it starts, serves or stops leaves no task running."""
    import asyncio

    pytest.importorskip("uvicorn")
    before = len(asyncio.all_tasks())
    with anyio.move_on_after(after):
        async with serve_health(HealthRegistry(name="t"), server=kind) as server:
            await get(server.port)
            await anyio.sleep_forever()
    await anyio.lowlevel.checkpoint()
    assert len(asyncio.all_tasks()) == before
