"""Cost of guarding an async no-op with a circuit breaker: ours vs aiobreaker, purgatory, pybreaker.

Run:  .venv/bin/python benchmarks/bench_breaker.py [--n 100000] [--repeats 5]

Every variant runs N calls per repeat, in one process and one event loop, best of R repeats
(the minimum is the least disturbed measurement; repeats are interleaved across variants).
The breakers stay CLOSED (the success path, the one that sits on every guarded call).
pybreaker is synchronous: its line guards a *sync* no-op, for reference only. Peers missing
from the environment are skipped with a note (install them with ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from resilient_conn import CircuitBreaker, ResiliencePolicy

Runner = Callable[[int], Awaitable[None]]


async def noop() -> None:
    return None


def sync_noop() -> None:
    return None


def build_variants() -> tuple[list[tuple[str, Runner]], list[str]]:
    variants: list[tuple[str, Runner]] = []
    notes: list[str] = []

    async def bare(n: int) -> None:
        for _ in range(n):
            await noop()

    variants.append(("baseline: await noop()", bare))

    ours = CircuitBreaker(name="bench")

    async def ours_async_with(n: int) -> None:
        b = ours
        for _ in range(n):
            async with b:
                await noop()

    async def ours_call(n: int) -> None:
        call = ours.call
        for _ in range(n):
            await call(noop)

    async def ours_lease(n: int) -> None:
        acquire = ours.acquire
        for _ in range(n):
            lease = acquire()
            await noop()
            lease.success()

    policy = ResiliencePolicy("bench")

    async def ours_policy(n: int) -> None:
        call = policy.call
        for _ in range(n):
            await call(noop)

    variants += [
        ("resilient_conn: async with breaker", ours_async_with),
        ("resilient_conn: await breaker.call(fn)", ours_call),
        ("resilient_conn: acquire() + lease.success()", ours_lease),
        ("resilient_conn: await policy.call(fn)", ours_policy),
    ]

    try:
        import aiobreaker

        aio = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=60))

        async def aiobreaker_call(n: int) -> None:
            call = aio.call_async
            for _ in range(n):
                await call(noop)

        variants.append(("aiobreaker: await call_async(fn)", aiobreaker_call))
    except ImportError:
        notes.append("aiobreaker not installed: skipped")

    try:
        import purgatory

        factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=60)

        @factory("bench")
        async def guarded() -> None:
            return None

        async def purgatory_decorator(n: int) -> None:
            for _ in range(n):
                await guarded()

        async def purgatory_async_with(n: int) -> None:
            brk = await factory.get_breaker("bench")
            for _ in range(n):
                async with brk:
                    await noop()

        variants.append(("purgatory: @factory(name) decorator", purgatory_decorator))
        variants.append(("purgatory: async with (breaker fetched once)", purgatory_async_with))
    except ImportError:
        notes.append("purgatory not installed: skipped")

    try:
        import pybreaker

        pyb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)

        async def pybreaker_sync(n: int) -> None:
            call = pyb.call
            for _ in range(n):
                call(sync_noop)

        variants.append(("pybreaker (sync call, sync noop; reference)", pybreaker_sync))
    except ImportError:
        notes.append("pybreaker not installed: skipped")
    return variants, notes


async def measure_all(variants: list[tuple[str, Runner]], n: int, repeats: int) -> list[float]:
    """Best ns/call of each variant; repeats are interleaved so load noise hits all alike."""
    for _, runner in variants:
        await runner(min(n, 1000))  # warm up
    best = [float("inf")] * len(variants)
    for _ in range(repeats):
        for i, (_, runner) in enumerate(variants):
            start = time.perf_counter_ns()
            await runner(n)
            best[i] = min(best[i], (time.perf_counter_ns() - start) / n)
    return best


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


async def main(n: int, repeats: int) -> None:
    variants, notes = build_variants()
    timings = await measure_all(variants, n, repeats)
    results = [(name, ns) for (name, _), ns in zip(variants, timings, strict=True)]
    baseline = results[0][1]
    ours = dict(results)["resilient_conn: async with breaker"]
    print(f"guarded async no-op, N={n:,} calls, best of {repeats}")
    print(
        "versions: "
        + ", ".join(
            f"{d} {version(d)}" for d in ("resilient-conn", "aiobreaker", "purgatory", "pybreaker")
        )
    )
    print(f"{'variant':48} {'ns/call':>9} {'overhead':>9} {'vs ours':>8}")
    for name, ns in results:
        overhead = ns - baseline
        print(f"{name:48} {ns:9.0f} {overhead:9.0f} {ns / ours:7.2f}x")
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="calls per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="repeats (best is reported)")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.repeats))
