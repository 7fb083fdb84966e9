"""Regenerate the sample outputs in README.md and docs/cli.md from real runs.

::

    python scripts/samples.py          # run the commands (about 25 s) and rewrite the samples
    python scripts/samples.py --check  # exit 1, saying what, if a documented sample is stale

Every sample sits between ``<!-- sample:NAME -->`` and ``<!-- /sample:NAME -->`` in a markdown
file, inside a fenced block; this script owns those blocks, nobody edits them by hand:

* ``demo``: ``resilient-conn demo --duration 20 --seed 7 --realtime``, whole (docs/cli.md);
* ``demo-excerpt``: chosen lines of that same run (README.md);
* ``connect``: ``resilient-conn connect`` against a local server that restarts (docs/cli.md);
* ``check``: ``resilient-conn check`` against a live local server (docs/cli.md).

``tests/test_doc_samples.py`` fails when a sample no longer matches the code: the ``connect``
and ``check`` samples are run again (numbers and ports masked) and compared; the demo's state
reasons are compared with what the supervisor's pure decision code says now, and its SUMMARY
rows with what the summary renders now (a 20 s demo run is too slow for the test suite).
Everything runs on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = {
    "demo": ROOT / "docs" / "cli.md",
    "demo-excerpt": ROOT / "README.md",
    "connect": ROOT / "docs" / "cli.md",
    "check": ROOT / "docs" / "cli.md",
}
DEMO_ARGS = ["demo", "--duration", "20", "--seed", "7", "--realtime"]
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_BLOCK = "<!-- sample:{0} -->\n```{1}\n{2}```\n<!-- /sample:{0} -->"


def normalise(text: str) -> str:
    """``text`` with every number masked as ``#`` and runs of blanks collapsed."""
    text = _NUMBER.sub("#", text)
    return "\n".join(" ".join(line.split()) for line in text.strip().splitlines())


def read_block(name: str, text: str | None = None) -> str | None:
    """The documented body of sample ``name`` (without the fences), or None if absent."""
    source = FILES[name].read_text() if text is None else text
    tag = re.escape(name)
    match = re.search(
        rf"<!-- sample:{tag} -->\n```[a-z]*\n(.*?)```\n<!-- /sample:{tag} -->", source, re.S
    )
    return None if match is None else match.group(1)


def write_block(name: str, body: str, lang: str = "") -> None:
    """Replace sample ``name`` in its file by ``body``."""
    path = FILES[name]
    text = path.read_text()
    pattern = re.compile(
        rf"<!-- sample:{re.escape(name)} -->\n.*?<!-- /sample:{re.escape(name)} -->", re.S
    )
    if not pattern.search(text):
        raise SystemExit(f"{path}: no <!-- sample:{name} --> markers")
    new = _BLOCK.format(name, lang, body if body.endswith("\n") else body + "\n")
    path.write_text(pattern.sub(lambda _: new, text, count=1))


# --------------------------------------------------------------------------- running
async def _cli(
    *argv: str, stdin: bytes | None = None, merge: bool = True
) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "COLUMNS": "100"}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "resilient_conn",
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge else asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )


async def run_demo() -> str:
    """The whole demo sample: the command, its output, its exit code."""
    proc = await _cli(*DEMO_ARGS)
    out, _ = await asyncio.wait_for(proc.communicate(b""), 120)
    return f"$ resilient-conn {' '.join(DEMO_ARGS)}\n{out.decode()}$ echo $?\n{proc.returncode}\n"


def demo_excerpt(demo: str) -> str:
    """README's excerpt of a demo run: the faults, what each did first, the breaker, SUMMARY."""
    lines = demo.splitlines()
    keep = [lines[0]]
    after_fault = False
    for line in lines[1:]:
        match = re.match(r"\[\s*[\d.]+s\]\s+(\S+)", line)
        kind = match.group(1) if match else ""
        if kind == "FAULT":
            keep.append(line)
            after_fault = True
        elif after_fault and kind == "state" and " -> " in line:
            keep.append(line)
            after_fault = False
        elif kind == "breaker" or "rejoined" in line or "-> circuit_open" in line:
            keep.append(line)
        elif line.startswith("SUMMARY"):
            keep.append("...")
            break
    summary = demo[demo.index("SUMMARY") :].splitlines()
    rows = ("SUMMARY", "  sent", "  delivered", "  dead-lettered", "  lost ", "  duplicates")
    rows += ("  reconnects", "  breaker", "  time", "  faults", "  final", "  realtime")
    keep += [line for line in summary if line.startswith(rows)]
    return "\n".join(keep) + "\n"


async def run_connect() -> str:
    """A ``connect`` session: a line, the server restarts it (1012), another line, EOF."""
    from resilient_conn.testing import ScriptedServer

    transcript: list[str] = []
    async with ScriptedServer() as server:
        proc = await _cli("connect", server.url, "--ping-interval", "0")
        assert proc.stdin is not None
        assert proc.stdout is not None
        transcript.append(f"$ resilient-conn connect {server.url}")

        async def until(predicate: str) -> None:
            assert proc.stdout is not None
            while True:
                raw = await asyncio.wait_for(proc.stdout.readline(), 20)
                if not raw:
                    raise RuntimeError(f"connect ended before {predicate!r}")
                line = raw.decode().rstrip("\n")
                transcript.append(line)
                if line == predicate:
                    return

        async def say(text: str) -> None:
            assert proc.stdin is not None
            transcript.append(f"{text:<26} <- typed")
            proc.stdin.write(text.encode() + b"\n")
            await proc.stdin.drain()
            await until(f"{text}")
            transcript[-1] = f"{text:<26} <- echoed by the server"

        await until("* connected: handshake complete")
        await say("hello")
        await server.close_all(1012, "service restart")
        await until("* connected: handshake complete")
        await say("still here")
        transcript.append("^D")
        proc.stdin.close()
        rest, _ = await asyncio.wait_for(proc.communicate(), 20)
        transcript += rest.decode().splitlines()
        transcript += ["$ echo $?", str(proc.returncode)]
    return "\n".join(transcript) + "\n"


async def run_check() -> str:
    """``check`` against a live local server: its JSON report."""
    from resilient_conn.testing import ScriptedServer

    async with ScriptedServer() as server:
        proc = await _cli("check", server.url, merge=False)
        out, _ = await asyncio.wait_for(proc.communicate(b""), 20)
    report = json.loads(out)
    return json.dumps(report, indent=2, sort_keys=True) + "\n"


# --------------------------------------------------------------------------- staleness
def demo_problems(demo: str, *, excerpt: bool = False) -> list[str]:
    """Lines of a documented demo run that the current code would no longer print.

    A ``-> backoff`` / ``-> circuit_open`` reason is compared with what the supervisor's pure
    decision code (``connection.decide``) says now for the same failure kind; the SUMMARY row
    labels with what ``DemoSummary.render`` prints now (an ``excerpt`` may leave rows out).
    """
    from resilient_conn.cli._demo_report import DemoSummary, Reporter
    from resilient_conn.connection.decide import Decisions
    from resilient_conn.resilience.backoff import Backoff
    from resilient_conn.resilience.breaker import BreakerState
    from resilient_conn.resilience.classify import Action, Verdict

    problems = []
    for line in demo.splitlines():
        match = re.search(r"-> (backoff|circuit_open) \((\w+); (.*?)\)", line)
        if match is None:
            continue
        state, kind, _ = match.groups()
        breaker = BreakerState.OPEN if state == "circuit_open" else BreakerState.CLOSED
        decisions = Decisions(Backoff())
        decisions.admitted()  # a dial (CONNECTING) ended: what follows
        now = decisions.after(
            Verdict(Action.RETRY, kind), stable=False, breaker_state=breaker, retry_after=1.0
        )
        if normalise(f"({now.reason})") not in normalise(line):
            problems.append(f"demo line {line.strip()!r}: the code now says ({now.reason})")
    shown = DemoSummary(seed=7, duration=20.0, realtime={"available": True}).render(
        Reporter(None, color=False)
    )
    labels_now = [_label(row) for row in shown.splitlines()[1:] if row.startswith("  ")]
    documented = demo[demo.index("SUMMARY") :].splitlines()[1:] if "SUMMARY" in demo else []
    labels_doc = [_label(row) for row in documented if row.startswith("  ")]
    wrong = [x for x in labels_doc if x not in labels_now] if excerpt else labels_doc != labels_now
    if wrong:
        problems.append(f"demo SUMMARY rows {labels_doc} != what the code prints {labels_now}")
    return problems


def _label(row: str) -> str:
    return row.strip().split("  ")[0].split(" = ")[0]


async def fresh_problems() -> list[str]:
    """Samples whose fresh run differs from the documented one (numbers masked)."""
    problems = []
    for name, run in (("connect", run_connect), ("check", run_check)):
        documented = read_block(name)
        if documented is None:
            problems.append(f"{FILES[name]}: sample {name!r} is missing")
            continue
        fresh = await run()
        if normalise(fresh) != normalise(documented):
            problems.append(f"sample {name!r} is stale; a fresh run prints:\n{fresh}")
    for name in ("demo", "demo-excerpt"):
        documented = read_block(name)
        if documented is None:
            problems.append(f"{FILES[name]}: sample {name!r} is missing")
        else:
            problems += demo_problems(documented, excerpt=name == "demo-excerpt")
    return problems


async def regenerate() -> None:
    """Run every sample and rewrite the blocks."""
    demo = await run_demo()
    write_block("demo", demo)
    write_block("demo-excerpt", demo_excerpt(demo))
    write_block("connect", await run_connect())
    write_block("check", await run_check(), "json")


def main() -> int:
    """Regenerate the samples, or with ``--check`` report stale ones (exit 1)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale samples")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.check:
        problems = asyncio.run(fresh_problems())
        for problem in problems:
            print(problem)
        return 1 if problems else 0
    asyncio.run(regenerate())
    return 0


if __name__ == "__main__":
    sys.exit(main())
