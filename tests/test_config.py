"""Configuration: precedence, bad environment values, and the docs table kept in step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from resilient_conn import Backoff, CircuitBreaker, ConfigError, RetryError, retry
from resilient_conn.resilience.config import ENV_PREFIX, SETTINGS, resolve, resolve_choice
from tests._clock_fake import ManualClock

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test without RESILIENT_CONN_* variables."""
    for setting in SETTINGS.values():
        monkeypatch.delenv(setting.env, raising=False)


def test_default_applies_without_environment() -> None:
    """With nothing set, resolve() returns the default in code."""
    assert resolve("backoff_max_delay") == 60.0
    assert resolve("breaker_failure_threshold") == 5
    assert resolve_choice("backoff_jitter") == "full"


def test_environment_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """A RESILIENT_CONN_* variable overrides the default, for resolve() and for objects."""
    monkeypatch.setenv("RESILIENT_CONN_BACKOFF_MAX_DELAY", "12.5")
    monkeypatch.setenv("RESILIENT_CONN_BREAKER_FAILURE_THRESHOLD", " 7 ")
    monkeypatch.setenv("RESILIENT_CONN_BACKOFF_JITTER", "decorrelated")
    assert resolve("backoff_max_delay") == 12.5
    assert Backoff().max_delay == 12.5
    assert Backoff().jitter == "decorrelated"
    assert CircuitBreaker().failure_threshold == 7


def test_explicit_argument_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit argument wins over the environment variable."""
    monkeypatch.setenv("RESILIENT_CONN_BACKOFF_MAX_DELAY", "12.5")
    monkeypatch.setenv("RESILIENT_CONN_BACKOFF_JITTER", "equal")
    assert resolve("backoff_max_delay", 3.0) == 3.0
    assert Backoff(max_delay=3.0, jitter="none").max_delay == 3.0
    assert resolve_choice("backoff_jitter", "none") == "none"


def test_blank_variable_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty or blank variable falls back to the default."""
    monkeypatch.setenv("RESILIENT_CONN_BACKOFF_MAX_DELAY", "   ")
    assert resolve("backoff_max_delay") == 60.0


@pytest.mark.anyio
async def test_retry_reads_max_attempts_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """retry() without max_attempts uses RESILIENT_CONN_RETRY_MAX_ATTEMPTS."""
    monkeypatch.setenv("RESILIENT_CONN_RETRY_MAX_ATTEMPTS", "5")
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError

    with pytest.raises(RetryError, match="gave up after 5"):
        await retry(failing, clock=ManualClock())
    assert calls == 5


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RESILIENT_CONN_BACKOFF_MAX_DELAY", "sixty"),
        ("RESILIENT_CONN_BACKOFF_MAX_DELAY", "nan"),
        ("RESILIENT_CONN_BACKOFF_MAX_DELAY", "inf"),
        ("RESILIENT_CONN_BACKOFF_MAX_DELAY", "0"),
        ("RESILIENT_CONN_BACKOFF_INITIAL_DELAY", "-1"),
        ("RESILIENT_CONN_BREAKER_RECOVERY_TIMEOUT", "1e400"),
    ],
)
def test_bad_number_in_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A non-number or out-of-range number is a ConfigError naming the variable."""
    monkeypatch.setenv(variable, value)
    name = variable.removeprefix(ENV_PREFIX).lower()
    with pytest.raises(ConfigError, match=variable):
        resolve(name)


def test_bad_choice_in_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown jitter in the environment is a ConfigError naming the variable and choices."""
    monkeypatch.setenv("RESILIENT_CONN_BACKOFF_JITTER", "gaussian")
    with pytest.raises(ConfigError, match=r"RESILIENT_CONN_BACKOFF_JITTER.*full") as info:
        Backoff()
    assert "gaussian" in str(info.value)


def test_integer_setting_rejects_fractions(monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole-number setting rejects "2.5" in the environment and 2.5 as an argument."""
    monkeypatch.setenv("RESILIENT_CONN_BREAKER_FAILURE_THRESHOLD", "2.5")
    with pytest.raises(ConfigError, match=r"RESILIENT_CONN_BREAKER_FAILURE_THRESHOLD.*whole"):
        CircuitBreaker()
    monkeypatch.delenv("RESILIENT_CONN_BREAKER_FAILURE_THRESHOLD")
    with pytest.raises(ConfigError, match="failure_threshold must be a whole number"):
        CircuitBreaker(failure_threshold=2.5)  # type: ignore[arg-type]
    assert CircuitBreaker(failure_threshold=3.0).failure_threshold == 3  # type: ignore[arg-type]


def _docs_table() -> dict[str, tuple[str, str]]:
    """Parse docs/configuration.md: env var -> (default, meaning)."""
    rows: dict[str, tuple[str, str]] = {}
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\|\s*`(RESILIENT_CONN_[A-Z_]+)`\s*\|\s*`([^`]*)`\s*\|([^|]*)\|", line)
        if match:
            rows[match[1]] = (match[2], match[3].strip())
    return rows


def test_docs_table_lists_every_setting_with_its_default() -> None:
    """docs/configuration.md has one row per SETTINGS entry: variable, default and meaning."""
    table = _docs_table()
    assert set(table) == {s.env for s in SETTINGS.values()}
    for setting in SETTINGS.values():
        default, meaning = table[setting.env]
        assert default == str(setting.default), setting.env
        assert meaning == setting.help, setting.env


def test_check_int_refuses_bools_floats_and_out_of_range_values() -> None:
    """check_int: an int in range comes back; True, 2.0, a str and values past either bound
    raise ConfigError naming the parameter and the bound."""
    from resilient_conn.resilience.config import check_int

    assert check_int(3, "n", 1) == 3
    assert check_int(65535, "port", 0, 65535) == 65535
    for bad in (True, 2.0, "3", 0):
        with pytest.raises(ConfigError, match=r"n must be an int >= 1"):
            check_int(bad, "n", 1)
    with pytest.raises(ConfigError, match=r"port must be an int in \[0, 65535\], got 65536"):
        check_int(65536, "port", 0, 65535)
