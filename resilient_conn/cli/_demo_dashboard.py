"""``demo --dashboard``: the health app with its own dashboard, and waiting for a first viewer.

The demo holds the :class:`~resilient_conn.health.dashboard.DashboardApp` itself (rather than
letting ``health_app`` make one) so that it can see when a page is watching, and start the
faults then: a newcomer who opens the URL a few seconds late still sees all of them.
"""

from __future__ import annotations

from ..health.asgi import ASGIApp, Receive, Scope, Send
from ..health.dashboard import DashboardApp

__all__ = ["VIEWER_WAIT", "mount_dashboard", "wait_for_viewer"]

VIEWER_WAIT = 30.0
"""Longest the demo waits for a page before it injects faults anyway (seconds)."""


def mount_dashboard(health: ASGIApp, dashboard: DashboardApp) -> ASGIApp:
    """Serve ``dashboard`` under ``/dashboard`` and everything else with ``health``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope.get("type") == "http" and (path == "/dashboard" or path.startswith("/dashboard/")):
            await dashboard.serve(path[len("/dashboard") :], scope, receive, send)
        else:
            await health(scope, receive, send)

    return app


async def wait_for_viewer(dashboard: DashboardApp, timeout: float = VIEWER_WAIT) -> bool:
    """Wait until a page watches the dashboard; False if none did within ``timeout``."""
    feed = dashboard.feed
    try:
        await feed.changed.wait_until(lambda: feed.subscribers > 0, timeout)
    except TimeoutError:
        return False
    return True
