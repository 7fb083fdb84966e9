"""RedisStore: a recovery coordinator's state shared by a fleet of processes through Redis.

Needs the ``redis`` extra (``pip install 'resilient-conn[redis]'``, redis-py's asyncio client).

Key layout (``ns`` = ``namespace``, default ``"resilient_conn"``):

=====================  =====================================================================
``{ns}:up:{name}``     hash: ``v`` (version, an integer bumped by every write) and ``s`` (the
                       :class:`~resilient_conn.coordination.UpstreamState` as JSON);
                       expires ``idle_ttl`` seconds after its last write
``{ns}:changed``       pub/sub channel; each message is the name of an upstream whose phase,
                       probe lease or ramp changed
=====================  =====================================================================

Atomicity: every change is a compare-and-set in one Lua script on the server (the write
happens only if the version is still the one read, then the key's TTL is refreshed and the
change published, all in the same script). The transition itself is the pure decision core
run in this process on the state and the server's ``TIME``, so one implementation decides
everywhere; a lost race is retried on the fresh state. Within a process, changes to one key
are serialised, so contention is between processes only.

Fail-open: every Redis call has a deadline (``op_timeout``). The first error or timeout
switches this process to a local store (:class:`~resilient_conn.coordination.LocalStore`,
starting from a fresh state), logs ``resilient_conn.coordination_fallback`` and reports it in
:meth:`RedisStore.health`; a background task pings Redis every ``retry_interval`` and, once it
answers, switches back (``resilient_conn.coordination_rejoined``). Waiters are woken at both
switches so they re-decide on the new state. While on Redis, a waiter re-reads the state at
least every ``poll_interval`` even if a pub/sub message was lost.
"""

from __future__ import annotations

import json
import math
import random
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.abc

from .._core.clock import SYSTEM_CLOCK, Clock
from .._core.errors import ConfigError
from .._core.log import get_logger, redact_text, redact_url
from .._core.notify import Notifier
from .decide import UpstreamState
from .store import LocalStore, StoreHealth, Transition, visible_change

try:
    import redis.asyncio as _redis
    from redis.asyncio.retry import Retry as _Retry
    from redis.backoff import NoBackoff as _NoBackoff
    from redis.exceptions import RedisError as _RedisError
except ImportError:  # pragma: no cover - exercised only without the extra
    _redis = None  # type: ignore[assignment]

__all__ = ["RedisStore"]

T = TypeVar("T")

_log = get_logger()

_READ = """
local h = redis.call('HMGET', KEYS[1], 'v', 's')
local t = redis.call('TIME')
return {h[1] or '0', h[2] or '', t[1], t[2]}
"""

_CAS = """
local v = redis.call('HGET', KEYS[1], 'v') or '0'
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', tostring(tonumber(v) + 1), 's', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ARGV[6] == '1' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1
"""

_CAS_TRIES = 64
"""Compare-and-set attempts before a change is treated as a backend failure."""


class _Contention(Exception):
    """Too many lost compare-and-set races in a row."""


class RedisStore:
    """A :class:`~resilient_conn.coordination.CoordinatorStore` in Redis, failing open.

    Use it as an async context manager (it owns a pub/sub listener and a reconnect task)::

        async with RedisStore("redis://127.0.0.1:6379/0") as store:
            coordinator = RecoveryCoordinator("feed", store=store)
            ...

    Args:
        url: Redis URL (``redis://``, ``rediss://``, ``unix://``); credentials in it are
            never logged.
        namespace: Prefix of every key and channel (1-100 printable characters, no spaces).
        op_timeout: Deadline of every Redis call in seconds; past it the store falls back
            to local state (default 0.5).
        poll_interval: Longest a waiter goes without re-reading the shared state, the
            fallback for lost pub/sub messages (default 2.0).
        retry_interval: Seconds between attempts to reach Redis again after a failure
            (default 1.0).
        idle_ttl: Seconds after its last write that an upstream's key expires (default 3600;
            at least the coordinator's ``max_open`` + ``probe_ttl``).
        clock: Clock of the local fallback store (default: the system clock).

    Raises:
        ConfigError: A bad argument, or redis-py is not installed.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "resilient_conn",
        op_timeout: float = 0.5,
        poll_interval: float = 2.0,
        retry_interval: float = 1.0,
        idle_ttl: float = 3600.0,
        clock: Clock | None = None,
    ) -> None:
        if _redis is None:  # pragma: no cover
            raise ConfigError("RedisStore needs redis-py: pip install 'resilient-conn[redis]'")
        if not isinstance(url, str) or not url:
            raise ConfigError(f"url must be a non-empty string, got {url!r}")
        if (
            not isinstance(namespace, str)
            or not 1 <= len(namespace) <= 100
            or not namespace.isprintable()
            or " " in namespace
        ):
            raise ConfigError(f"namespace must be 1-100 printable characters, got {namespace!r}")
        for name, value in (
            ("op_timeout", op_timeout),
            ("poll_interval", poll_interval),
            ("retry_interval", retry_interval),
            ("idle_ttl", idle_ttl),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        self.url = url
        self.namespace = namespace
        self.op_timeout = float(op_timeout)
        self._poll_interval = float(poll_interval)
        self.retry_interval = float(retry_interval)
        self.idle_ttl = float(idle_ttl)
        self._channel = f"{namespace}:changed"
        self._local = LocalStore(clock if clock is not None else SYSTEM_CLOCK)
        self._notifiers: dict[str, Notifier] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._cache: dict[str, UpstreamState] = {}
        self._fallback = False
        self._fell_back = Notifier()
        self.health_changed = Notifier()
        """Notified whenever the store falls back to local state or rejoins Redis."""
        self._last_error: str | None = None
        self._errors = 0
        self._fallbacks = 0
        self._rejoins = 0
        self._client: Any = None
        self._read: Any = None
        self._cas: Any = None
        self._tg: anyio.abc.TaskGroup | None = None

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> RedisStore:
        if self._tg is not None:
            raise RuntimeError("RedisStore is already entered")
        assert _redis is not None
        self._client = _redis.Redis.from_url(
            self.url,
            socket_timeout=self.op_timeout,
            socket_connect_timeout=self.op_timeout,
            retry=_Retry(_NoBackoff(), 0),
        )
        self._read = self._client.register_script(_READ)
        self._cas = self._client.register_script(_CAS)
        try:
            with anyio.fail_after(self.op_timeout):
                await self._client.ping()
        except (_RedisError, OSError, TimeoutError) as exc:
            self._fall_back(exc)  # start on local state; the watcher rejoins later
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._listen)
        tg.start_soon(self._watch)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the background tasks and close the Redis client (idempotent)."""
        tg, self._tg = self._tg, None
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.op_timeout):
                await client.aclose()

    # ------------------------------------------------------------------ the store interface
    @property
    def poll_interval(self) -> float:
        """Longest a waiter sleeps without re-reading (lost pub/sub messages)."""
        return self._poll_interval

    def key(self, name: str) -> str:
        """Return the Redis key of upstream ``name``."""
        return f"{self.namespace}:up:{name}"

    async def update(self, key: str, transition: Transition[T]) -> T:
        """Apply ``transition`` atomically on Redis, or on the local fallback."""
        if self._fallback or self._client is None:
            return self._apply_local(key, transition)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = anyio.Lock()
        async with lock:
            if not self._fallback and self._client is not None:
                try:
                    # Shielded: once a write may have reached Redis its result must reach
                    # the caller (a probe lease nobody knows of would stall everyone).
                    with anyio.CancelScope(shield=True), anyio.fail_after(self.op_timeout):
                        return await self._update_redis(key, transition)
                except Exception as exc:  # Redis, the network, redis-py: never our caller's
                    self._fall_back(exc)
        return self._apply_local(key, transition)

    def notifier(self, key: str) -> Notifier:
        """Return the notifier woken by changes of ``key`` from any process."""
        notifier = self._notifiers.get(key)
        if notifier is None:
            notifier = self._notifiers[key] = Notifier()
        return notifier

    def peek(self, key: str) -> UpstreamState | None:
        """Return the last state of ``key`` this process read or wrote (no I/O)."""
        if self._fallback:
            return self._local.peek(key)
        return self._cache.get(key)

    def health(self) -> StoreHealth:
        """Return reachability, the last error and whether the local fallback is active."""
        return StoreHealth(
            backend="redis",
            reachable=not self._fallback,
            fallback_active=self._fallback,
            last_error=self._last_error,
            errors=self._errors,
            fallbacks=self._fallbacks,
            rejoins=self._rejoins,
        )

    # ------------------------------------------------------------------ internals
    def _apply_local(self, key: str, transition: Transition[T]) -> T:
        old = self._local.peek(key) or UpstreamState()
        result = self._local.apply(key, transition)
        new = self._local.peek(key)
        if new is not None and visible_change(old, new):
            self.notifier(key).notify()
        return result

    async def _update_redis(self, key: str, transition: Transition[T]) -> T:
        rkey = self.key(key)
        ttl_ms = str(max(1, int(self.idle_ttl * 1000)))
        for attempt in range(_CAS_TRIES):
            if attempt:
                # Lost a race: step aside for a jittered moment, so two processes hammering one
                # key do not fall into lockstep where the same one loses every time.
                await anyio.sleep(random.uniform(0.0, min(0.0005 * attempt, 0.01)))
            version, raw, sec, usec = await self._read(keys=[rkey])
            now = int(sec) + int(usec) / 1_000_000
            old = _decode(raw)
            new, result = transition(old, now)
            if new == old:
                self._cache[key] = old
                return result
            publish = visible_change(old, new)
            data = json.dumps(new.to_dict(), separators=(",", ":"))
            args = [version, data, ttl_ms, self._channel, key, "1" if publish else "0"]
            if await self._cas(keys=[rkey], args=args):
                self._cache[key] = new
                if publish:
                    self.notifier(key).notify()
                return result
        raise _Contention(f"{_CAS_TRIES} lost compare-and-set races on {key!r}")

    def _fall_back(self, exc: BaseException) -> None:
        self._errors += 1
        self._last_error = redact_text(f"{type(exc).__name__}: {exc}")[:300]
        if self._fallback:
            return
        self._fallback = True
        self._fallbacks += 1
        self._local.clear()
        _log.warning(
            "resilient_conn.coordination_fallback",
            redis=redact_url(self.url),
            error=self._last_error,
        )
        self._fell_back.notify()
        self.health_changed.notify()
        self._notify_all()

    def _rejoin(self) -> None:
        self._fallback = False
        self._rejoins += 1
        self._cache.clear()
        _log.info("resilient_conn.coordination_rejoined", redis=redact_url(self.url))
        self.health_changed.notify()
        self._notify_all()

    def _notify_all(self) -> None:
        for notifier in self._notifiers.values():
            notifier.notify()

    async def _watch(self) -> None:
        """While fallen back, ping Redis every ``retry_interval``; rejoin when it answers."""
        while True:
            if not self._fallback:
                await self._fell_back.wait()
                continue
            await anyio.sleep(self.retry_interval)
            try:
                with anyio.fail_after(self.op_timeout):
                    await self._client.ping()
            except Exception as exc:  # still unreachable, whatever redis-py raised
                self._errors += 1
                self._last_error = redact_text(f"{type(exc).__name__}: {exc}")[:300]
                continue
            self._rejoin()

    async def _listen(self) -> None:
        """Turn pub/sub messages into wake-ups; resubscribe after every failure."""
        while True:
            pubsub = self._client.pubsub()
            try:
                with anyio.fail_after(self.op_timeout):
                    await pubsub.subscribe(self._channel)
                self._notify_all()  # changes may have been missed while unsubscribed
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self._poll_interval
                    )
                    if message is not None and message.get("type") == "message":
                        data = message.get("data")
                        name = data.decode("utf-8", "replace") if isinstance(data, bytes) else ""
                        notifier = self._notifiers.get(name)
                        if notifier is not None:
                            notifier.notify()
            except Exception as exc:  # the slow poll covers the gap; resubscribe
                _log.debug("resilient_conn.coordination_pubsub_lost", error=str(exc)[:200])
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(self.op_timeout):
                    await pubsub.aclose()
            await anyio.sleep(self.retry_interval)

    def __repr__(self) -> str:
        mode = "fallback" if self._fallback else "shared"
        return f"RedisStore({redact_url(self.url)!r}, namespace={self.namespace!r}, {mode})"


def _decode(raw: Any) -> UpstreamState:
    if not raw:
        return UpstreamState()
    try:
        return UpstreamState.from_dict(json.loads(raw))
    except (ValueError, TypeError):
        return UpstreamState()
