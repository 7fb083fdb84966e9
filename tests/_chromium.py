"""A tiny headless-Chromium driver over the DevTools protocol, with the websockets we depend on.

No Selenium, no Playwright: Chromium is started with ``--remote-debugging-port=0``, prints the
browser's DevTools WebSocket URL on stderr, and we speak JSON-RPC to it. Only what the
dashboard test needs: open a page, evaluate JavaScript (awaiting promises), take a screenshot,
and record console errors, uncaught exceptions and every URL the page requested.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from websockets.asyncio.client import ClientConnection, connect

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
START_TIMEOUT = 30.0
CALL_TIMEOUT = 30.0
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


def find_chromium() -> str | None:
    """The Chromium binary: ``$RESILIENT_CONN_CHROMIUM``, else ``chromium`` on PATH, else None."""
    explicit = os.environ.get("RESILIENT_CONN_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


class CDPError(RuntimeError):
    """A DevTools call answered with an error, or page JavaScript threw."""


@dataclass
class PageLog:
    """What a page did that a test may want to assert on."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


class Page:
    """One tab, attached through a flat DevTools session."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        self.log = PageLog()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Call a DevTools method in this tab."""
        return await self.browser.call(method, session=self.session, **params)

    async def goto(self, url: str) -> None:
        """Navigate and wait for the load event."""
        await self.call("Page.navigate", url=url)
        await self.evaluate(
            "new Promise(r => document.readyState === 'complete' ? r(true) :"
            " addEventListener('load', () => r(true)))"
        )

    async def evaluate(self, expression: str) -> Any:
        """Evaluate ``expression`` in the page, await it if it is a promise, return its value."""
        reply = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"page JavaScript threw: {text}")
        return reply.get("result", {}).get("value")

    async def wait_for(self, predicate_js: str, timeout: float = 20.0) -> Any:
        """Wait until the JS expression ``predicate_js`` is truthy, re-checked on DOM mutations.

        Event-driven inside the page (a MutationObserver), bounded by ``timeout``; the error says
        what the page showed instead.
        """
        script = f"""new Promise((resolve, reject) => {{
          const check = () => {{
            try {{ return ({predicate_js}); }} catch (e) {{ return false; }}
          }};
          const first = check();
          if (first) {{ resolve(first); return; }}
          const obs = new MutationObserver(() => {{
            const v = check();
            if (v) {{ obs.disconnect(); clearTimeout(timer); resolve(v); }}
          }});
          obs.observe(document, {{subtree: true, childList: true, attributes: true,
                                  characterData: true}});
          const timer = setTimeout(() => {{
            obs.disconnect();
            reject(new Error("timed out waiting for " + {json.dumps(predicate_js)} +
                             "; page shows: " + document.body.innerText.slice(0, 800)));
          }}, {int(timeout * 1000)});
        }})"""
        with anyio.fail_after(timeout + 10):
            return await self.evaluate(script)

    async def screenshot(self, path: Path) -> bytes:
        """Write a PNG of the viewport to ``path`` and return its bytes."""
        reply = await self.call("Page.captureScreenshot", format="png")
        data = base64.b64decode(reply["data"])
        await anyio.Path(path).write_bytes(data)
        return data

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        """Record console errors, uncaught exceptions and requests."""
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            self.log.errors.append(f"exception: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
            self.log.errors.append("console: " + " ".join(args))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                self.log.errors.append(f"log: {entry.get('text')} ({entry.get('url', '')})")
        elif method == "Network.requestWillBeSent":
            self.log.requests.append(str(params.get("request", {}).get("url", "")))


class Browser:
    """A running headless Chromium and its DevTools connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._next = 0
        self._waiting: dict[int, tuple[anyio.Event, list[dict[str, Any]]]] = {}
        self._pages: dict[str, Page] = {}

    async def call(self, method: str, *, session: str | None = None, **params: Any) -> Any:
        """Send one DevTools command and wait for its answer."""
        self._next += 1
        ident = self._next
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        done = anyio.Event()
        slot: list[dict[str, Any]] = []
        self._waiting[ident] = (done, slot)
        try:
            await self.ws.send(json.dumps(message))
            with anyio.fail_after(CALL_TIMEOUT):
                await done.wait()
        finally:
            self._waiting.pop(ident, None)
        reply = slot[0]
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def read(self) -> None:
        """Dispatch answers and events until the connection closes."""
        async for raw in self.ws:
            message = json.loads(raw)
            if "id" in message:
                waiting = self._waiting.get(message["id"])
                if waiting is not None:
                    waiting[1].append(message)
                    waiting[0].set()
            elif (page := self._pages.get(message.get("sessionId", ""))) is not None:
                page.on_event(message.get("method", ""), message.get("params", {}))

    async def new_page(self) -> Page:
        """Open a blank tab with console, runtime and network events recorded."""
        target = await self.call("Target.createTarget", url="about:blank")
        attached = await self.call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        page = Page(self, attached["sessionId"])
        self._pages[page.session] = page
        for domain in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
            await page.call(domain)
        return page


async def _devtools_url(process: anyio.abc.Process, seen: list[str]) -> str:
    assert process.stderr is not None
    buffer = ""
    async for chunk in process.stderr:
        buffer += chunk.decode(errors="replace")
        *lines, buffer = buffer.split("\n")
        for line in lines:
            seen.append(line)
            if match := _LISTENING.search(line):
                return match.group(1)
    raise CDPError("chromium exited before it listened:\n" + "\n".join(seen[-20:]))


async def _drain(process: anyio.abc.Process, seen: list[str]) -> None:
    assert process.stderr is not None
    with suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
        async for chunk in process.stderr:
            seen.append(chunk.decode(errors="replace")[-400:])
            del seen[:-50]


@asynccontextmanager
async def launch(binary: str, profile: Path) -> AsyncIterator[Browser]:
    """Start headless Chromium with a fresh profile in ``profile``; stop it on exit."""
    command = [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
    seen: list[str] = []
    process = await anyio.open_process(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        with anyio.fail_after(START_TIMEOUT):
            url = await _devtools_url(process, seen)
        async with (
            connect(url, max_size=64 * 1024 * 1024, ping_interval=None) as ws,
            anyio.create_task_group() as tg,
        ):
            browser = Browser(ws)
            tg.start_soon(browser.read)
            tg.start_soon(_drain, process, seen)
            try:
                yield browser
            finally:
                with anyio.move_on_after(5), suppress(Exception):
                    await browser.call("Browser.close")
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.aclose()
