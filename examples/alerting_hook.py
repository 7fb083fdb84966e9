"""Turn state changes into alerts: one per incident, one on recovery, nothing for short flaps.

Runs on its own, against an embedded WebSocket server on 127.0.0.1::

    python examples/alerting_hook.py

The sink below prints JSON lines; in a real service it would post to a chat webhook or a
pager (keep it quick, or make it async: hooks that hang are cancelled after ``hook_timeout``).

A grace period can only expire *between* state changes, so a small watcher task calls
``policy.poll_and_send()`` when :attr:`AlertPolicy.next_deadline` comes; without it the
warning would go out on the next state change (the next reconnect attempt) instead.
"""

from __future__ import annotations

import json
import time

import anyio

from resilient_conn import (
    Alert,
    AlertPolicy,
    Backoff,
    CircuitBreaker,
    ResilientConnection,
)
from resilient_conn.testing import ScriptedServer


async def watch_deadlines(policy: AlertPolicy, stop: anyio.Event) -> None:
    """Call ``poll_and_send`` when a grace period expires (no busy loop: sleeps until then)."""
    while not stop.is_set():
        deadline = policy.next_deadline
        wait = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.time()))
        with anyio.move_on_after(wait):
            await stop.wait()
        pending = policy.poll_and_send(time.time())
        if pending is not None:
            await pending


class Outbox:
    """The alert sink: prints each alert as a JSON line (stand-in for a webhook / pager)."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self._changed = anyio.Event()

    def __call__(self, alert: Alert) -> None:
        """Deliver one alert."""
        self.alerts.append(alert)
        print(json.dumps(alert.to_dict()), "|", alert.summary())
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, count: int) -> None:
        """Wait until ``count`` alerts have gone out."""
        with anyio.fail_after(10):
            while len(self.alerts) < count:
                await self._changed.wait()


async def main() -> list[Alert]:
    """Run three scenarios and return the alerts that went out (the tests check them)."""
    sink = Outbox()
    policy = AlertPolicy(grace=0.5, cooldown=0.0, sink=sink)
    async with ScriptedServer() as upstream:
        conn = ResilientConnection(
            upstream.url,
            name="feed",
            backoff=Backoff(initial_delay=0.05, max_delay=0.2),
            breaker=CircuitBreaker(name="feed", failure_threshold=50, recovery_timeout=0.3),
            stable_after=0.2,
        )
        stop = anyio.Event()
        async with conn, anyio.create_task_group() as tg:
            conn.on_state_change(policy)
            tg.start_soon(watch_deadlines, policy, stop)
            await conn.wait_connected(10)

            print("-- 1. a server restart that recovers within the grace period: silence")
            await upstream.restart()
            await conn.wait_connected(10)

            print("-- 2. an outage longer than the grace period: one warning, one recovery")
            await upstream.stop()
            await sink.wait_for(1)
            await upstream.start()
            await conn.wait_connected(10)

            print("-- 3. the circuit opens: a critical alert at once")
            conn.breaker.force_open()
            await upstream.restart()  # drop the transport; the breaker refuses the next dial
            await sink.wait_for(3)
            conn.breaker.reset()
            await conn.wait_connected(10)
            await sink.wait_for(4)
            stop.set()
    return sink.alerts


if __name__ == "__main__":
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    anyio.run(main)
