"""The ``resilient-conn`` command line (also ``python -m resilient_conn``).

Subcommands:

* ``demo``: a live connection through injected faults, with a summary (see
  :mod:`resilient_conn.demo`).
* ``connect URL``: an interactive client; stdin lines are sent, messages printed, state
  changes reported on stderr; it stays connected across faults; EOF closes gracefully; exit 1
  if the connection failed or any line was dead-lettered (not delivered).
* ``check URL``: dial once, print the health report as JSON, exit 0 healthy, 1 degraded,
  2 unhealthy (usable as an exec probe).
* ``dead-letters PATH``: list or replay a durable outbox's dead letters (see
  :mod:`resilient_conn.delivery.cli`).

Exit codes: 0 success, 1 failure (demo lost messages, connection failed, lines not delivered
by ``connect``, degraded check),
2 bad usage or an unhealthy check, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

import anyio

from .._core.errors import ConfigError, ConnectionClosedError, ConnectionFailedError
from ..connection.connection import ResilientConnection
from ..connection.events import ConnectionState, StateChange
from ..connection.report import HealthReport, HealthStatus
from ._logs import library_logs
from ._session import add_subprotocol, describe, dial_kwargs, flush_before_close, undelivered
from .demo import MAX_DURATION, MIN_DURATION, DemoOptions, run_demo

__all__ = ["build_parser", "main"]

EXIT_CODES = {HealthStatus.HEALTHY: 0, HealthStatus.DEGRADED: 1, HealthStatus.UNHEALTHY: 2}
"""``check`` exit code by health status."""

_S = ConnectionState


# --------------------------------------------------------------------------- argument types
def _ws_url(text: str) -> str:
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a valid URL: {text!r} ({exc})") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"must be a ws:// or wss:// URL, got {text!r}")
    return text


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"a header must look like 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def _number(low: float, *, inclusive: bool) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        ok = value >= low if inclusive else value > low
        if not ok or not math.isfinite(value):
            bound = f">= {low:g}" if inclusive else f"> {low:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text!r}")
        return value

    return parse


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port must be in [0, 65535], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the ``resilient-conn`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="resilient-conn",
        description="Long-lived WebSocket connections that survive faults: demo, client, probe.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show the library's info logs on stderr"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run a live connection through injected faults on 127.0.0.1 and print a summary",
        description="Stream messages through an embedded server behind a chaos proxy while "
        "injecting a restart, a blackhole, a 503, flapping and an outage; exit 0 if nothing "
        "was lost.",
    )
    demo.add_argument(
        "--duration",
        type=_number(MIN_DURATION, inclusive=True),
        default=60.0,
        metavar="SECONDS",
        help=f"length of the fault schedule (default 60, {MIN_DURATION:g} to {MAX_DURATION:g})",
    )
    demo.add_argument("--seed", type=int, default=None, help="seed of every random choice")
    demo.add_argument(
        "--realtime", action="store_true", help="also run a Phoenix/Realtime part, if available"
    )
    demo.add_argument("--quiet", action="store_true", help="print only the summary")
    demo.add_argument(
        "--transport",
        choices=("websockets", "picows"),
        default="websockets",
        help="transport adapter (picows needs the resilient-conn[picows] extra)",
    )
    demo.add_argument(
        "--json", action="store_true", help="print the summary as JSON (events go to stderr)"
    )
    demo.add_argument(
        "--dashboard",
        action="store_true",
        help="print the URL of a live dashboard of the connection and watch the faults there",
    )
    demo.add_argument(
        "--dashboard-port",
        type=_port,
        default=0,
        metavar="PORT",
        help="port of the dashboard / health server on 127.0.0.1 (default: a free one)",
    )

    connect = sub.add_parser(
        "connect",
        help="interactive client: send stdin lines, print messages, survive faults",
        description="Send each stdin line as a text message and print every message received. "
        "State changes go to stderr. EOF on stdin closes the connection gracefully.",
    )
    connect.add_argument("url", type=_ws_url, help="ws:// or wss:// URL")
    _add_headers(connect)
    connect.add_argument(
        "--ping-interval", type=_number(0, inclusive=True), default=None, metavar="S",
        help="seconds between keepalive pings (0 disables; default 20)",
    )  # fmt: skip
    connect.add_argument(
        "--ping-timeout", type=_number(0, inclusive=False), default=None, metavar="S",
        help="seconds to wait for a pong before reconnecting (default 20)",
    )  # fmt: skip
    connect.add_argument(
        "--linger", type=_number(0, inclusive=True), default=0.0, metavar="S",
        help="after EOF, keep printing received messages this long before closing (default 0)",
    )  # fmt: skip

    check = sub.add_parser(
        "check",
        help="dial once and print the health report as JSON (exit 0/1/2)",
        description="Dial once, wait up to --timeout for the connection (or a fatal error), "
        "measure a round trip, print the health report as JSON. Exit code: 0 healthy, "
        "1 degraded, 2 unhealthy.",
    )
    check.add_argument("url", type=_ws_url, help="ws:// or wss:// URL")
    check.add_argument(
        "--timeout", type=_number(0, inclusive=False), default=5.0, metavar="S",
        help="seconds to wait for the connection and for the round trip (default 5)",
    )  # fmt: skip
    _add_headers(check)
    dead_letters = sub.add_parser(
        "dead-letters",
        help="list or replay the dead letters of a durable outbox file",
        add_help=False,
    )
    dead_letters.add_argument("args", nargs=argparse.REMAINDER, help="PATH [--json] [--replay]")
    return parser


def _add_headers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--header",
        "-H",
        type=_header,
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra handshake header (repeatable)",
    )
    add_subprotocol(parser)


# --------------------------------------------------------------------------- logging


async def _demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    options = DemoOptions(
        duration=args.duration,
        seed=args.seed,
        realtime=args.realtime,
        quiet=args.quiet,
        json=args.json,
        dashboard=args.dashboard,
        dashboard_port=args.dashboard_port,
        transport=args.transport,
    )
    events = err if args.json else out
    color = _use_color(events)
    summary = await run_demo(options, events, color=color)
    if args.json:
        out.write(json.dumps(summary.to_dict(), indent=2, sort_keys=True) + "\n")
    else:
        from ._demo_report import Reporter

        out.write("\n" + summary.render(Reporter(None, color=color)))
    out.flush()
    if not summary.ok:
        err.write("resilient-conn demo: FAILED: " + "; ".join(summary.problems) + "\n")
        return 1
    return 0


def _use_color(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ


# --------------------------------------------------------------------------- connect
def _start_stdin_reader(
    stdin: TextIO, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]
) -> None:
    """Read stdin lines in a daemon thread (it must not keep the process alive at exit)."""

    def put(item: str | None) -> bool:
        try:
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()
        except BaseException:  # the loop is gone or the put was cancelled: stop reading
            return False
        return True

    def read() -> None:
        while True:
            try:
                line = stdin.readline()
            except (OSError, ValueError):
                line = ""
            if not line:
                put(None)
                return
            if not put(line.rstrip("\r\n")):
                return

    threading.Thread(target=read, name="resilient-conn stdin", daemon=True).start()


async def _connect(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    headers = dict(args.header) or None
    conn = ResilientConnection(
        args.url,
        headers=headers,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        **dial_kwargs(args),
    )

    def report(change: StateChange) -> None:
        why = "" if change.error is None else f" ({describe(change.error)})"
        err.write(f"* {change.new.value}: {change.reason}{why}\n")
        err.flush()

    conn.on_state_change(report)
    failure: list[BaseException] = []
    queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=64)

    async def receive() -> None:
        try:
            async for message in conn:
                if isinstance(message, bytes):
                    message = f"<binary {len(message)} bytes: {message[:32].hex()}>"
                out.write(message + "\n")
                out.flush()
        except ConnectionFailedError as exc:
            failure.append(exc)

    async with conn, anyio.create_task_group() as tg:
        tg.start_soon(receive)
        _start_stdin_reader(stdin, asyncio.get_running_loop(), queue)
        with anyio.CancelScope() as sending:
            tg.start_soon(_cancel_when_failed, conn, sending)
            while (line := await queue.get()) is not None:
                try:
                    await conn.send(line)
                except (ConnectionFailedError, ConnectionClosedError) as exc:
                    failure.append(exc)
                    break
            if not failure:
                await flush_before_close(conn)
            if args.linger and not failure:
                await anyio.sleep(args.linger)
        tg.cancel_scope.cancel()
    code = 0
    if failure or conn.state is _S.FAILED:
        error = failure[0] if failure else conn.last_error
        err.write(f"resilient-conn connect: connection failed: {describe(error)}\n")
        code = 1
    lost = undelivered(conn)
    if lost:
        err.write(f"resilient-conn connect: {lost}\n")
        code = 1
    return code


async def _cancel_when_failed(conn: ResilientConnection, scope: anyio.CancelScope) -> None:
    """Stop reading stdin when the connection fails (a fatal error ends the session)."""
    changed = asyncio.Event()
    unsubscribe = conn.on_state_change(lambda _: changed.set())
    try:
        while conn.state is not _S.FAILED:
            await changed.wait()
            changed.clear()
        scope.cancel()
    finally:
        unsubscribe()


# --------------------------------------------------------------------------- check
async def _check(args: argparse.Namespace, out: TextIO) -> int:
    timeout: float = args.timeout
    conn = ResilientConnection(
        args.url,
        headers=dict(args.header) or None,
        open_timeout=timeout,
        ping_interval=0,
        **dial_kwargs(args),
    )
    # Dial once: the first outcome (open, fatal, or a failure the supervisor would retry)
    # settles it; closing the connection then stops any further dial.
    settled = asyncio.Event()
    outcomes = (_S.CONNECTED, _S.FAILED, _S.BACKOFF, _S.CIRCUIT_OPEN)
    conn.on_state_change(lambda c: settled.set() if c.new in outcomes else None)
    async with conn:
        with anyio.move_on_after(timeout):
            await settled.wait()
        if conn.state is _S.CONNECTED:
            with anyio.move_on_after(timeout):
                await conn.wait_connected()
            report = await conn.check(timeout)
        else:
            report = _not_connected(conn, timeout)
    out.write(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
    out.flush()
    return EXIT_CODES[report.status]


def _not_connected(conn: ResilientConnection, timeout: float) -> HealthReport:
    error = conn.last_error
    why = (str(error) or repr(error)) if error is not None else f"no answer within {timeout:g} s"
    if conn.state is _S.FAILED:
        detail = f"failed: {why}"
    else:
        detail = f"could not connect (one dial, timeout {timeout:g} s): {why}"
    return dataclasses.replace(conn.health(), status=HealthStatus.UNHEALTHY, detail=detail)


# --------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``resilient-conn`` command line and return its exit code.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The process exit code (argparse exits with 2 itself on bad usage).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    out, err = sys.stdout, sys.stderr
    parser = build_parser()
    args = None if argv[:1] == ["dead-letters"] else parser.parse_args(argv)
    if args is None or args.command == "dead-letters":  # its own parser: delivery/cli.py
        from ..delivery.cli import run_dead_letters

        return run_dead_letters(argv[1:] if args is None else args.args, out, err)
    try:
        # the demo prints its own line for every event the library would warn about
        with library_logs(args.verbose, args.command == "demo", err):
            if args.command == "demo":
                return asyncio.run(_demo(args, out, err))
            if args.command == "connect":
                return asyncio.run(_connect(args, out, err, sys.stdin))
            return asyncio.run(_check(args, out))
    except ConfigError as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
