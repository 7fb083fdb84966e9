"""The sample outputs in README.md and docs/cli.md are what the code prints now.

They are written by ``scripts/samples.py`` from real runs; this test fails when one is stale
(run ``python scripts/samples.py`` to regenerate them). Issue 13: README's and docs/cli.md's
demo output said ``next dial in 0.347s`` where the code had long said ``circuit open, next
probe in ...``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import anyio
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _samples() -> ModuleType:
    spec = importlib.util.spec_from_file_location("samples", ROOT / "scripts" / "samples.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("samples", module)
    spec.loader.exec_module(module)
    return module


samples = _samples()


@pytest.mark.parametrize("name", ["demo", "demo-excerpt"])
def test_the_documented_demo_says_what_the_code_says(name: str) -> None:
    """Every state reason in the demo samples is what the supervisor's decision code says now
    for that failure, and the SUMMARY rows are the ones the summary prints now."""
    block = samples.read_block(name)
    assert block is not None, f"sample {name} missing"
    assert samples.demo_problems(block, excerpt=name == "demo-excerpt") == []


def test_the_staleness_check_catches_the_old_wording() -> None:
    """The check is not vacuous: the stale line issue 13 found is reported."""
    old = (
        "[  10.96s] state     connected -> circuit_open (close_1011; next dial in 0.347s)  "
        "health=unhealthy\nSUMMARY\n  sent  1\n"
    )
    problems = samples.demo_problems(old, excerpt=True)
    assert any("circuit open, next probe in" in p for p in problems)


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["connect", "check"])
async def test_connect_and_check_samples_match_a_fresh_run(name: str) -> None:
    """A fresh run of the documented session prints the same lines (numbers masked)."""
    run = {"connect": samples.run_connect, "check": samples.run_check}[name]
    with anyio.fail_after(30):
        fresh = await run()
    documented = samples.read_block(name)
    assert documented is not None
    assert samples.normalise(fresh) == samples.normalise(documented), (
        "stale sample: run `python scripts/samples.py`"
    )


def test_normalise_masks_numbers_and_blanks() -> None:
    """Ports, timings and counts differ between runs; the text around them must not."""
    assert samples.normalise("[  1.60s] x  in 0.015s  port :4242 rtt 2.4e-05") == (
        "[ #s] x in #s port :# rtt #"
    )
