"""Resilience primitives on a flaky async function: CircuitBreaker, retry, ResiliencePolicy.

Run:  python examples/primitives.py

No network. ``set_testing()`` makes every wait of the library instant (a 60 s breaker
recovery "passes" at once), so the example finishes immediately while printing the same
decisions it would make in production.
"""

from __future__ import annotations

import asyncio

from resilient_conn import (
    Backoff,
    BreakerTransition,
    CircuitBreaker,
    CircuitOpenError,
    PolicyRegistry,
    RetryError,
    RetryState,
    retry,
    retrying,
    set_testing,
)


class FlakyService:
    """Fails ``outage`` times in a row, then answers."""

    def __init__(self, outage: int) -> None:
        self.outage = outage
        self.calls = 0

    async def fetch(self, key: str) -> str:
        """Return a value for ``key``, or raise ConnectionError during the outage."""
        self.calls += 1
        if self.calls <= self.outage:
            raise ConnectionError(f"upstream down (call {self.calls})")
        return f"value-of-{key}"


def show(transition: BreakerTransition) -> None:
    """Breaker listener: print every state change."""
    print(f"  breaker {transition.name}: {transition.old.value} -> {transition.new.value}"
          f" ({transition.reason})")  # fmt: skip


def before_sleep(state: RetryState) -> None:
    """Retry hook: print each failed attempt and the wait before the next."""
    print(f"  attempt {state.attempt} failed ({state.error}); sleeping {state.delay:.2f}s")


async def breaker_demo() -> None:
    """A breaker opens after 3 failures, refuses calls, then probes and closes."""
    print("1. CircuitBreaker")
    service = FlakyService(outage=4)
    breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=60.0, name="demo")
    breaker.add_listener(show)
    for _ in range(4):
        try:
            await breaker.call(service.fetch, "a")
        except ConnectionError as exc:
            print(f"  call failed: {exc}")
        except CircuitOpenError as exc:
            print(f"  refused: retry after {exc.retry_after:.0f}s")
    await breaker.wait_until_ready()  # sleeps 60 s (instantly under set_testing)
    for _ in range(3):
        try:
            async with breaker:
                print(f"  probe got {await service.fetch('a')}")
        except ConnectionError as exc:
            print(f"  probe failed: {exc}")
            await breaker.wait_until_ready()
    print(f"  metrics: {breaker.metrics().to_dict()}")


async def retry_demo() -> None:
    """retry() and @retrying with exponential backoff and a hook."""
    print("2. retry / @retrying")
    service = FlakyService(outage=2)
    value = await retry(
        lambda: service.fetch("b"),
        max_attempts=5,
        backoff=Backoff(0.5, 10.0, jitter="equal"),
        before_sleep=before_sleep,
    )
    print(f"  got {value} after {service.calls} calls")

    @retrying(max_attempts=2, retry_on=(ConnectionError,))
    async def hopeless() -> str:
        raise ConnectionError("still down")

    try:
        await hopeless()
    except RetryError as exc:
        print(f"  gave up: {exc} (cause: {exc.__cause__!r})")


async def policy_demo() -> None:
    """A named policy: retries gated by its breaker, with metrics from the registry."""
    print("3. ResiliencePolicy + PolicyRegistry")
    policies = PolicyRegistry()
    service = FlakyService(outage=3)
    # By default a policy fails fast: once its breaker is open, calls raise CircuitOpenError
    # at once (retry_after says when to come back) instead of sleeping out the open time.
    hasty = policies.create(
        "inventory",
        breaker=CircuitBreaker(2, 30.0, success_threshold=1, name="inventory"),
        backoff=Backoff(1.0, 30.0, jitter="full"),
        max_attempts=6,
    )
    hasty.breaker.add_listener(show)
    try:
        await hasty.call(service.fetch, "c")
    except CircuitOpenError as exc:
        print(f"  failed fast after {service.calls} calls: {exc}")

    # A caller that would rather wait says so (or gives a deadline the wait fits).
    patient = policies.create(
        "inventory-patient", breaker=hasty.breaker, max_attempts=6, wait_for_breaker=True
    )

    @patient
    async def lookup(key: str) -> str:
        return await service.fetch(key)

    print(f"  got {await lookup('c')} after {service.calls} calls (waited out the breaker)")
    for name, metrics in policies.all_metrics().items():
        print(f"  {name}: breaker={metrics.breaker.state.value} retry={metrics.retry.to_dict()}")


async def main() -> None:
    """Run the three demos with instant waits."""
    with set_testing():
        await breaker_demo()
        await retry_demo()
        await policy_demo()


if __name__ == "__main__":
    asyncio.run(main())
