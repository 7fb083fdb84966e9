"""benchmarks/scorecard.py's own logic: the figures it derives and the guarantees CI enforces
with ``--quick`` (the fault runs themselves are CI's ``scorecard.py --quick`` step)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "scorecard.py"


@pytest.fixture(scope="module")
def sc() -> ModuleType:
    """The scorecard script, imported as a module."""
    spec = importlib.util.spec_from_file_location("scorecard_under_test", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_peak_counts_the_busiest_window(sc: ModuleType) -> None:
    """Peak dials per window: the most timestamps inside any window of that length."""
    assert sc._peak([], 1.0) == 0
    assert sc._peak([0.0, 0.1, 0.2, 5.0], 1.0) == 3
    assert sc._peak([0.0, 1.5, 3.0], 1.0) == 1
    assert sc._peak([float(i) / 1000 for i in range(1000)], 0.1) == 101


def test_every_quick_scenario_has_a_guarantee_and_exists(sc: ModuleType) -> None:
    """What --quick runs is exactly the (scenario, client) pairs with guarantees."""
    quick = {s.name for s in sc.scenarios(10) if s.quick}
    assert {name for name, _ in sc.GUARANTEES} == quick
    names = [s.name for s in sc.scenarios(10)]
    assert len(names) == len(set(names))


GOOD = {
    "back_to_msg_s": 0.4,
    "errors_to_consumer": 0,
    "out_lost": 1,
    "gave_up": True,
    "server_dials": 1,
    "min_gap_between_rejected_dials_s": 2.01,
    "notice_s": 1.6,
    "peak_dials_per_s": 2,
    "in_lost": 0,
    "rss_growth_mb": 0.8,
}


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("back_to_msg_s", None),
        ("errors_to_consumer", 1),
        ("out_lost", 500),
        ("min_gap_between_rejected_dials_s", 0.5),
        ("notice_s", 12.0),
        ("notice_s", None),
        ("peak_dials_per_s", 50),
        ("in_lost", 3),
        ("rss_growth_mb", 500.0),
    ],
)
def test_each_regression_breaks_a_guarantee(sc: ModuleType, key: str, bad: object) -> None:
    """A row with one figure gone bad fails at least one check; the good row passes all
    (the 401 check has its own test)."""
    checks = [c for cs in sc.GUARANTEES.values() for c in cs if c is not sc._fatal_once]
    assert [c(GOOD) for c in checks] == [None] * len(checks)
    assert any(c({**GOOD, key: bad}) for c in checks)


def test_a_401_that_is_retried_or_silent_breaks_the_guarantee(sc: ModuleType) -> None:
    """401 must end in one dial and a fatal error the consumer sees."""
    ok = {"gave_up": True, "errors_to_consumer": 1, "server_dials": 1}
    assert sc._fatal_once(ok) is None
    assert sc._fatal_once({**ok, "server_dials": 4})
    assert sc._fatal_once({**ok, "gave_up": False})


def test_markdown_table_shape(sc: ModuleType) -> None:
    """One header, one separator, one line per row, with the same number of cells."""
    rows = [
        {"scenario": "kill_short", "client": "ours", **GOOD, "out_sent": 10,
         "out_delivered": 9, "out_dead_lettered": 0, "notes": []},
        {"scenario": "kill_short", "client": "ws", "notes": ["crashed"]},
    ]  # fmt: skip
    lines = sc.markdown(rows, {"kill_short": "server killed"}).splitlines()
    assert len(lines) == 4
    assert len({line.count("|") for line in lines}) == 1
    assert "9/0/1" in lines[2]
