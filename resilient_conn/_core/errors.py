"""Exceptions raised by resilient_conn.

Every exception the library raises on purpose derives from one root, so a caller can catch
everything of ours with one clause and still tell the cases apart::

    ResilientConnError
    ├── ConfigError (also ValueError)       bad argument or RESILIENT_CONN_* variable
    ├── CircuitOpenError                    the breaker refused a call; has .retry_after
    ├── RetryError                          retries exhausted; chained to the last error
    ├── ConnectionFailedError               a connection reached FAILED (401, 403, bad URL...)
    ├── ConnectionClosedError               the user closed the connection; no more I/O
    ├── NotConnectedError                   send(..., buffer=False) while no transport is open
    ├── BufferFullError                     outbound buffer full (overflow="raise" or a
    │                                       "block" wait that timed out)
    └── RealtimeError                       Phoenix Channels / Supabase Realtime
        ├── ChannelJoinError                the server refused a join; has .reason
        ├── ChannelClosedError              the channel was closed (by us or the server)
        ├── PushTimeoutError                no reply to a push within its timeout
        └── RealtimeProtocolError           a frame that is not valid Phoenix (logged, skipped)

Errors are chained with ``raise ... from exc`` so the transport-level cause is never lost.
Messages never contain secrets: URLs in them are redacted.
"""

from __future__ import annotations

__all__ = [
    "BufferFullError",
    "ChannelClosedError",
    "ChannelJoinError",
    "CircuitOpenError",
    "ConfigError",
    "ConnectionClosedError",
    "ConnectionFailedError",
    "NotConnectedError",
    "PushTimeoutError",
    "RealtimeError",
    "RealtimeProtocolError",
    "ResilientConnError",
    "RetryError",
]


class ResilientConnError(Exception):
    """Root of every exception resilient_conn raises on purpose."""


class ConfigError(ResilientConnError, ValueError):
    """An argument or a ``RESILIENT_CONN_*`` environment variable has a bad value.

    The message names the parameter or the variable and the value that was rejected.
    """


class CircuitOpenError(ResilientConnError):
    """A circuit breaker refused the call.

    Attributes:
        retry_after: Seconds until the breaker will admit a probe (0.0 when it is waiting
            for a probe slot held by another caller, ``inf`` when forced open).
        name: The breaker's name, if it has one.
    """

    def __init__(self, retry_after: float, name: str | None = None) -> None:
        self.retry_after = retry_after
        self.name = name
        label = f"circuit {name!r}" if name else "circuit"
        super().__init__(f"{label} is open; retry after {retry_after:.3f}s")


class RetryError(ResilientConnError):
    """Every attempt failed (or the deadline passed); ``__cause__`` is the last error.

    Attributes:
        attempts: How many attempts were made.
        last_error: The exception of the last attempt (same object as ``__cause__``).
    """

    def __init__(self, attempts: int, last_error: BaseException | None, reason: str = "") -> None:
        self.attempts = attempts
        self.last_error = last_error
        detail = f": {reason}" if reason else ""
        super().__init__(f"gave up after {attempts} attempt(s){detail}; last error: {last_error!r}")


class ConnectionFailedError(ResilientConnError):
    """The connection reached the FAILED state and will not dial again.

    Raised from ``recv()``, ``send()`` and iteration once a fatal error (HTTP 401/403/404, an
    invalid URL, a TLS certificate failure, or an error the classifier marks fatal) stopped
    the supervisor. ``__cause__`` is the underlying error.

    Attributes:
        status: The HTTP status of a rejected handshake, if that was the cause.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ConnectionClosedError(ResilientConnError):
    """The connection was closed by its user; it neither sends nor receives any more."""


class NotConnectedError(ResilientConnError):
    """``send(..., buffer=False)`` was called while no transport is open."""


class BufferFullError(ResilientConnError):
    """The outbound buffer is full (``overflow="raise"``, or ``"block"`` timed out)."""


class RealtimeError(ResilientConnError):
    """Base of the Phoenix Channels / Supabase Realtime errors."""


class ChannelJoinError(RealtimeError):
    """The server refused to join a channel.

    Attributes:
        topic: The channel topic.
        reason: The server's reason (e.g. ``"Unauthorized: ..."``), or ``"timeout"``.
    """

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"join of {topic!r} failed: {reason}")


class ChannelClosedError(RealtimeError):
    """The channel is closed, so it cannot push; ``reason`` says why.

    Attributes:
        topic: The channel topic.
        reason: Why it was closed (unsubscribed, a server system error, ...).
    """

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"channel {topic!r} is closed: {reason}")


class PushTimeoutError(RealtimeError):
    """A push got no reply within its timeout (it may or may not have reached the server).

    Attributes:
        topic: The channel topic.
        event: The pushed event.
        timeout: The timeout in seconds.
    """

    def __init__(self, topic: str, event: str, timeout: float) -> None:
        self.topic = topic
        self.event = event
        self.timeout = timeout
        super().__init__(f"push {event!r} on {topic!r} got no reply within {timeout}s")


class RealtimeProtocolError(RealtimeError):
    """A frame could not be decoded as a Phoenix message (bad JSON, bad shape, bad binary).

    The Realtime client logs, counts and skips such frames; the connection stays open, as
    Phoenix itself does with malformed frames.
    """
