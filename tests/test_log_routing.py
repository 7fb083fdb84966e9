"""Where the library's log events go: never stdout by default, stdlib logging unless the
application configured structlog, and then the application's structlog pipeline."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import structlog
from structlog.testing import capture_logs

from resilient_conn import ResilientConnection
from resilient_conn._core.log import get_logger
from resilient_conn.testing import ScriptedServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(autouse=True)
def _unconfigured_structlog() -> Iterator[None]:
    """Each test starts and ends with structlog unconfigured (its defaults)."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


async def _reconnect_once() -> None:
    async with ScriptedServer() as server:
        async with ResilientConnection(server.url, name="feed") as conn:
            await conn.wait_connected(10)
            await server.close_all(1012)
            await server.wait_for_connection(2, timeout=10)


@pytest.mark.anyio
async def test_unconfigured_application_sees_nothing_on_stdout_or_stderr(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """With neither structlog nor logging configured, a reconnect prints nothing at all (not
    structlog's stdout default, not logging's last-resort stderr)."""
    assert not structlog.is_configured()
    await _reconnect_once()
    out, err = capfd.readouterr()
    assert out == ""
    assert err == ""


@pytest.mark.anyio
async def test_stdlib_logging_receives_events_with_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Unconfigured structlog: events are stdlib records of the `resilient_conn` logger, with
    the event name, bound context and fields in the message and on the record."""
    with caplog.at_level(logging.INFO, logger="resilient_conn"):
        await _reconnect_once()
    records = [r for r in caplog.records if r.name == "resilient_conn"]
    changes = [r for r in records if getattr(r, "event", None) == "resilient_conn.state_changed"]
    assert changes, [r.getMessage() for r in records]
    first = changes[0]
    assert first.levelno == logging.INFO
    assert first.fields["connection"] == "feed"  # type: ignore[attr-defined]
    assert "connection='feed'" in first.getMessage()
    assert first.getMessage().startswith("resilient_conn.state_changed ")


def test_structlog_configured_after_import_takes_over() -> None:
    """A logger made before the application configured structlog still follows it."""
    log = get_logger(connection="early")
    with capture_logs() as logs:  # configures structlog for the block
        log.info("resilient_conn.test_event", answer=42)
    assert logs == [
        {
            "connection": "early",
            "answer": 42,
            "event": "resilient_conn.test_event",
            "log_level": "info",
        }
    ]


def test_disabled_level_formats_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """A debug event while DEBUG is off never formats its fields (no cost beyond a check)."""

    class Loud:
        def __repr__(self) -> str:
            raise AssertionError("formatted although the level is off")

    with caplog.at_level(logging.INFO, logger="resilient_conn"):
        get_logger().debug("resilient_conn.test_debug", value=Loud())
    assert not [r for r in caplog.records if r.name == "resilient_conn"]


def test_exception_keeps_the_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """``exception()`` on the stdlib route carries the current exception."""
    with caplog.at_level(logging.INFO, logger="resilient_conn"):
        try:
            raise ValueError("boom")
        except ValueError:
            get_logger(hook="h").exception("resilient_conn.hook_failed")
    (record,) = [r for r in caplog.records if r.name == "resilient_conn"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError


def test_thousand_bindings_share_one_stdlib_logger() -> None:
    """Binding context (per connection, per channel) creates no new stdlib loggers."""
    before = len(logging.root.manager.loggerDict)
    for i in range(1000):
        get_logger(connection=f"c{i}").bind(topic="t")
    assert len(logging.root.manager.loggerDict) == before


@pytest.mark.anyio
async def test_production_logging_example() -> None:
    """The guide's example: nothing unconfigured, stdlib lines when configured, JSON lines
    through the application's structlog set-up."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location(
        "example_logging", EXAMPLES / "production_logging.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    seen = await module.main()
    assert seen["unconfigured"] == []
    assert any("resilient_conn.state_changed" in line for line in seen["stdlib"])
    events = [json.loads(line) for line in seen["structlog_json"]]
    assert {"event", "level", "timestamp", "connection"} <= set(events[0])
    assert not structlog.is_configured()  # the example restored the defaults
    await anyio.lowlevel.checkpoint()


@pytest.mark.anyio
async def test_cli_verbose_shows_events_on_stderr_with_structlog_unconfigured(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`resilient-conn -v check` prints the library's events on stderr (stdlib route), keeps
    stdout pure JSON, and leaves the `resilient_conn` logger as it found it."""
    import json

    from resilient_conn.cli import main as cli_main

    logger = logging.getLogger("resilient_conn")
    before = (logger.level, logger.propagate, list(logger.handlers))
    async with ScriptedServer() as server:
        with anyio.fail_after(15):
            code = await anyio.to_thread.run_sync(cli_main, ["-v", "check", server.url])
    captured = capsys.readouterr()
    assert code == 0
    json.loads(captured.out)
    assert "resilient_conn.state_changed" in captured.err
    assert (logger.level, logger.propagate, list(logger.handlers)) == before
