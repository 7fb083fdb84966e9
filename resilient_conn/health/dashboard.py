"""The live dashboard: a page of every connection and breaker, updated by Server-Sent Events.

:class:`DashboardApp` is an ASGI 3 app; the health app (:func:`~resilient_conn.health_app`)
mounts it under ``/dashboard`` unless told ``dashboard=False``:

* ``/dashboard``         the page (HTML; its script and style come from the routes below).
* ``/dashboard/app.js``  the page's script; ``/dashboard/app.css`` its style.
* ``/dashboard/state``   one JSON snapshot (what the page draws first; handy for ``curl``).
* ``/dashboard/events``  ``text/event-stream``: ``snapshot`` first, then ``sample`` every
  ``interval`` and ``change`` on every state change (``id`` = change number). A page that falls
  more than ``backlog`` changes behind gets a new ``snapshot``; a page that does not accept an
  update within ``write_timeout`` is dropped; beyond ``max_subscribers`` pages the answer is 503
  with ``Retry-After``. The page reconnects by itself.

Everything ships inside the package (no build step, no CDN): the page works offline, loads
nothing from elsewhere and sends nothing elsewhere; its Content-Security-Policy forbids it to.
Every text it shows is redacted (reports are, and the feed redacts hook reasons again).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from functools import cache
from importlib import resources
from typing import Any

import anyio

from .._core.errors import ConfigError
from .._core.log import get_logger
from ._feed import DashboardConfig, DashboardFeed, DashboardSource
from ._http import respond

__all__ = ["DashboardApp", "DashboardConfig"]

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]

_log = get_logger()
_RECONNECT_MS = 2000
_STATIC = {
    "": ("dashboard.html", b"text/html; charset=utf-8"),
    "/app.js": ("dashboard.js", b"text/javascript; charset=utf-8"),
    "/app.css": ("dashboard.css", b"text/css; charset=utf-8"),
}
_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY = [
    (b"cache-control", b"no-store"),
    (b"content-security-policy", _CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


@cache
def _asset(filename: str) -> bytes:
    return (
        resources.files(__package__ or "resilient_conn.health")
        .joinpath("static", filename)
        .read_bytes()
    )


def _json(data: object) -> bytes:
    return json.dumps(data, allow_nan=False, separators=(",", ":")).encode()


def sse_event(event: str, data: object, event_id: int | None = None) -> bytes:
    """Encode one Server-Sent Event (``data`` as one line of JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + _json(data) + b"\n\n"


class DashboardApp:
    """The ASGI 3 app of the live dashboard (paths relative to where it is mounted).

    Args:
        source: The registry to show (a :class:`~resilient_conn.HealthRegistry`).
        config: Intervals and bounds (default :class:`DashboardConfig`).
    """

    __slots__ = ("feed",)

    def __init__(self, source: DashboardSource, config: DashboardConfig | None = None) -> None:
        self.feed = DashboardFeed(source, config)

    @classmethod
    def option(
        cls, source: DashboardSource, dashboard: bool | DashboardConfig
    ) -> DashboardApp | None:
        """The app for the health app's ``dashboard`` argument (None when it is False).

        Raises:
            ConfigError: ``dashboard`` is neither a bool nor a :class:`DashboardConfig`.
        """
        if not isinstance(dashboard, bool | DashboardConfig):
            raise ConfigError(f"dashboard must be a bool or a DashboardConfig, got {dashboard!r}")
        if dashboard is False:
            return None
        return cls(source, None if dashboard is True else dashboard)

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        """Serve one request; ``scope["path"]`` is relative to the mount point (``""`` = page)."""
        await self.serve(str(scope.get("path", "")), scope, receive, send)

    async def serve(self, sub: str, scope: _Scope, receive: _Receive, send: _Send) -> None:
        """Serve ``sub`` (the path below ``/dashboard``: ``""``, ``"/events"``, ...)."""
        method = str(scope.get("method", "GET")).upper()
        head = method == "HEAD"
        known = sub in _STATIC or sub in ("/", "/state", "/events")
        if not known:
            await _respond(send, 404, b"application/json", _json({"error": "not found"}), head)
            return
        if method not in ("GET", "HEAD"):
            body = _json({"error": "method not allowed", "allow": ["GET", "HEAD"]})
            extra = [(b"allow", b"GET, HEAD")]
            await _respond(send, 405, b"application/json", body, head, extra)
            return
        if sub == "/":  # relative links resolve against ".../dashboard", not ".../dashboard/"
            await _respond(send, 308, b"text/plain", b"", head, [(b"location", b"../dashboard")])
        elif sub == "/state":
            self.feed.tick_if_due()
            await _respond(send, 200, b"application/json", _json(self.feed.snapshot()), head)
        elif sub == "/events":
            await self._events(receive, send, head)
        else:
            filename, content_type = _STATIC[sub]
            await _respond(send, 200, content_type, _asset(filename), head)

    async def _events(self, receive: _Receive, send: _Send, head: bool) -> None:
        feed = self.feed
        config = feed.config
        if feed.subscribers >= config.max_subscribers:
            body = _json({"error": "too many dashboard subscribers", "max": config.max_subscribers})
            extra = [(b"retry-after", b"5")]
            await _respond(send, 503, b"application/json", body, head, extra)
            return
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"x-accel-buffering", b"no"),
            *_SECURITY,
        ]
        if head:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        feed.subscribers += 1
        feed.changed.notify()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async with anyio.create_task_group() as tg:
                tg.start_soon(_until_disconnect, receive, tg.cancel_scope)
                await self._pump(send)
                tg.cancel_scope.cancel()
        finally:
            feed.subscribers -= 1
            feed.changed.notify()

    async def _pump(self, send: _Send) -> None:
        """Write events until the page goes away or stops reading."""
        feed = self.feed
        limit = feed.config.write_timeout

        async def write(data: bytes) -> bool:
            try:
                with anyio.fail_after(limit):
                    await send({"type": "http.response.body", "body": data, "more_body": True})
            except TimeoutError:
                _log.info("resilient_conn.dashboard_subscriber_dropped", reason="slow reader")
                return False
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):  # page gone
                return False
            return True

        feed.tick_if_due()
        seq, sample_no = feed.seq, feed.sample_no
        first = f"retry: {_RECONNECT_MS}\n\n".encode() + sse_event("snapshot", feed.snapshot())
        if not await write(first):
            return
        while True:
            if feed.seq == seq and feed.sample_no == sample_no:
                with anyio.move_on_after(feed.due_in()):
                    await feed.changed.wait()
            feed.tick_if_due()
            chunks: list[bytes] = []
            changes = feed.changes_since(seq)
            if changes is None:  # fell out of the backlog: start over from a snapshot
                chunks.append(sse_event("snapshot", feed.snapshot()))
            else:
                chunks.extend(sse_event("change", change, n) for n, change in changes)
            seq = feed.seq
            if feed.sample_no != sample_no:
                sample_no = feed.sample_no
                chunks.append(sse_event("sample", feed.sample))
            if chunks and not await write(b"".join(chunks)):
                return


async def _until_disconnect(receive: _Receive, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` once the server says the client went away."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            scope.cancel()
            return


async def _respond(
    send: _Send,
    status: int,
    content_type: bytes,
    body: bytes,
    head: bool,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await respond(send, status, content_type, body, head, [*_SECURITY, *(extra or [])])
