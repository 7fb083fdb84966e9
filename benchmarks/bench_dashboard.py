"""What the live dashboard costs: one sample of N components, and the bytes pushed to a page.

Run:  .venv/bin/python benchmarks/bench_dashboard.py [--components 10 100 1000] [--repeats 7]

For each N, a registry holds N real ``ResilientConnection`` objects (never started: the sample
reads their cheap ``health()`` snapshot, as the dashboard does) and the feed takes ``repeats``
samples; the median time per sample is printed, with the size of one ``sample`` event and of
the first ``snapshot`` a page receives (after ``points`` samples, the chart series are full).
Tiles are capped by ``max_tiles`` (100 by default), so past 100 components only the registry's
own ``health()`` keeps growing. No network is used.
"""

from __future__ import annotations

import argparse
import statistics
import time

from resilient_conn import HealthRegistry, ResilientConnection
from resilient_conn.health import DashboardConfig
from resilient_conn.health._feed import DashboardFeed
from resilient_conn.health.dashboard import sse_event


def run(n: int, repeats: int) -> tuple[float, int, int]:
    registry = HealthRegistry(name="bench")
    for i in range(n):
        registry.register(f"conn-{i}", ResilientConnection(f"ws://127.0.0.1:9/{i}", name=f"c{i}"))
    config = DashboardConfig()
    feed = DashboardFeed(registry, config)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        feed.tick()
        times.append(time.perf_counter() - started)
    for _ in range(config.points):
        feed.tick()
    sample = len(sse_event("sample", feed.sample))
    snapshot = len(sse_event("snapshot", feed.snapshot()))
    return statistics.median(times), sample, snapshot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"{'components':>10}  {'sample (median)':>16}  {'sample event':>12}  {'snapshot':>10}")
    for n in args.components:
        seconds, sample, snapshot = run(n, args.repeats)
        print(f"{n:>10}  {seconds * 1000:>13.2f} ms  {sample:>10} B  {snapshot:>8} B")


if __name__ == "__main__":
    main()
