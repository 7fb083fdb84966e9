"""Print docs/recovery.md's table: delay after the server returns, against outage length.

No network and no waiting: the model in ``tests/_recovery_model.py`` runs the real backoff,
decisions and breaker on a clock that only moves when the loop sleeps, ``--runs`` times per
outage with different jitter seeds.

Run: .venv/bin/python benchmarks/recovery_table.py [--runs 1000] [--seed-backoff] [--seed-breaker]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from pathlib import Path

import structlog

# Before the library is imported: its loggers are bound at import time.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resilient_conn import Backoff, connection_backoff, recovery_cap  # noqa: E402
from tests._recovery_model import recover  # noqa: E402

OUTAGES = (1, 2, 5, 10, 20, 30, 60, 120, 600, 3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed-backoff", action="store_true", help="Backoff() (1 s, 60 s, full)")
    parser.add_argument("--close", type=int, default=None, help="close code at t=0 (1012...)")
    parser.add_argument("--seed-breaker", action="store_true", help="standalone defaults")
    args = parser.parse_args()
    backoff = Backoff() if args.seed_backoff else connection_backoff()
    label = "CircuitBreaker() (5 failures, 60 s)" if args.seed_breaker else "connection_breaker"
    print(f"{backoff}, breaker {label}, cap {recovery_cap(backoff):g} s, {args.runs} runs\n")
    print("| outage | median | p90 | max | dials during the outage (median) |")
    print("|---:|---:|---:|---:|---:|")
    for outage in OUTAGES:
        runs = [
            recover(
                outage, backoff, seed=i, close_code=args.close, seed_breaker=args.seed_breaker
            )
            for i in range(args.runs)
        ]
        delays = sorted(r.delay for r in runs)
        p90 = delays[int(0.9 * (len(delays) - 1))]
        dials = statistics.median(r.dials for r in runs)
        print(
            f"| {outage:g} s | {statistics.median(delays):.2f} s | {p90:.2f} s "
            f"| {delays[-1]:.2f} s | {dials:g} |"
        )


if __name__ == "__main__":
    main()
