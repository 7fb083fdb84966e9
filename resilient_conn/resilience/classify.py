"""Failure classification: one replaceable function decides retry, retry-after or fatal.

The default, :func:`default_classify`, maps what a dial or a lost connection raised:

======================================================  =========================================
What happened                                           Verdict
======================================================  =========================================
HTTP 401, 403, 404 (also 400, 405, 410, 426)            FATAL (state FAILED, no more dials)
invalid URL, TLS certificate failure, ``ConfigError``   FATAL
HTTP 2xx (answered without upgrading)                   FATAL, kind ``not_websocket``
a redirect loop (> 10), to ``ws://``, or unfollowable   FATAL, kind ``redirect``
HTTP 429 / 503 with ``Retry-After``                     RETRY_AFTER that many seconds (at least)
HTTP 429 / 503 without it, other 4xx, 5xx               RETRY with backoff
close 1013 (try again later)                            RETRY_AFTER a number found in the close
                                                        reason, else :data:`TRY_AGAIN_LATER_DELAY`
close 1012 (service restart), 1001 (going away)        RETRY soon (the first, jittered, delay)
close 1009 (message too big, either way)               RETRY with backoff, kind ``message_too_big``
close 1000 from the server, 1006, other codes           RETRY with backoff
refused, reset, timeout, DNS, other ``OSError``         RETRY with backoff
anything else                                           RETRY with backoff
======================================================  =========================================

Failure kinds are metric labels, so they come from a bounded set: close codes are grouped
(:func:`close_kind`), an HTTP status outside the standard ones is ``http_other``.

Pass ``classify=`` to :class:`~resilient_conn.ResilientConnection` to change it, e.g. to retry
a 401 after refreshing a token (see :func:`classifier`).
"""

from __future__ import annotations

import email.utils
import enum
import http
import re
import ssl
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
    SecurityError,
)

from .._core.errors import ConfigError

__all__ = [
    "FATAL_STATUSES",
    "STANDARD_CLOSE_CODES",
    "TRY_AGAIN_LATER_DELAY",
    "Action",
    "Classifier",
    "Verdict",
    "classifier",
    "close_kind",
    "default_classify",
    "parse_retry_after",
]

FATAL_STATUSES: frozenset[int] = frozenset({400, 401, 403, 404, 405, 410, 426})
"""HTTP statuses of a rejected handshake that retrying will not fix."""

TRY_AGAIN_LATER_DELAY = 5.0
"""Seconds to wait at least after close 1013 when its reason names no delay."""

MAX_RETRY_AFTER = 3600.0
"""Cap on a server's ``Retry-After`` hint (a hint of a day would wedge the connection)."""


class Action(enum.Enum):
    """What the supervisor does after a failure."""

    RETRY = "retry"
    """Dial again after the next backoff delay."""
    RETRY_AFTER = "retry_after"
    """Dial again after at least ``Verdict.delay`` seconds (a server hint)."""
    FATAL = "fatal"
    """Stop: the connection enters FAILED and the error reaches the consumer."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The classifier's decision.

    Attributes:
        action: Retry, retry after a delay, or stop.
        kind: Short failure kind for metrics and logs (``"refused"``, ``"http_503"``,
            ``"close_1012"``, ...).
        delay: For RETRY_AFTER, the least number of seconds to wait.
        soon: For RETRY, dial again after the first (jittered) backoff delay instead of the next
            one (server restart or going away: close 1012, 1001).
        status: The HTTP status of a rejected handshake, if any.
    """

    action: Action
    kind: str
    delay: float = 0.0
    soon: bool = False
    status: int | None = None

    @property
    def fatal(self) -> bool:
        """True when the supervisor must stop."""
        return self.action is Action.FATAL


Classifier = Callable[[BaseException], Verdict]
"""A function from the error a dial or a connection ended with, to a :class:`Verdict`."""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Parse an HTTP ``Retry-After`` value (seconds or an HTTP date) into seconds from now.

    Returns None for a missing or unparseable value; negative results become 0.0; results are
    capped at :data:`MAX_RETRY_AFTER`.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


_HTTP_STATUSES = frozenset(int(s) for s in http.HTTPStatus)
_COME_BACK_NOW = frozenset({1001, 1012})
"""Close codes of a server going away on purpose (a deploy, a restart): redial soon."""

_NUMBER = re.compile(r"(\d+(?:\.\d+)?)")


STANDARD_CLOSE_CODES: frozenset[int] = frozenset(
    {1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1010, 1011, 1014, 1015}
)
"""Close codes of RFC 6455 / IANA that keep their own failure kind (``close_1011``...)."""


def close_kind(code: int) -> str:
    """The failure kind of close ``code``, from a bounded set (a server picks the code).

    ``close_<code>`` for the standard codes, ``close_3xxx`` (registered) and ``close_4xxx``
    (private) by range, ``close_other`` for the rest; 1009 is ``message_too_big``, 1012 and
    1013 keep ``close_1012`` / ``close_1013``.
    """
    if code == 1009:
        return "message_too_big"
    if code in STANDARD_CLOSE_CODES or code in (1012, 1013):
        return f"close_{code}"
    if 3000 <= code <= 3999:
        return "close_3xxx"
    if 4000 <= code <= 4999:
        return "close_4xxx"
    return "close_other"


def _close_verdict(exc: ConnectionClosed) -> Verdict:
    close = exc.rcvd
    if exc.sent is not None and exc.sent.code == 1009:
        # We failed the connection: an inbound message was larger than max_size.
        return Verdict(Action.RETRY, "message_too_big")
    if close is None:
        return Verdict(Action.RETRY, "lost")
    code = close.code
    if code == 1013:
        match = _NUMBER.search(close.reason or "")
        delay = min(float(match.group(1)), MAX_RETRY_AFTER) if match else TRY_AGAIN_LATER_DELAY
        return Verdict(Action.RETRY_AFTER, "close_1013", delay=delay)
    if code in _COME_BACK_NOW:
        return Verdict(Action.RETRY, f"close_{code}", soon=True)
    return Verdict(Action.RETRY, close_kind(code))


def _status_verdict(exc: InvalidStatus, fatal_statuses: Collection[int]) -> Verdict:
    response = exc.response
    status = response.status_code
    kind = f"http_{status}" if status in _HTTP_STATUSES else "http_other"
    if status in fatal_statuses:
        return Verdict(Action.FATAL, kind, status=status)
    if 200 <= status < 300:  # answered, but not upgraded: not a WebSocket endpoint
        return Verdict(Action.FATAL, "not_websocket", status=status)
    if 300 <= status < 400:  # a redirect websockets could not follow (no Location, ...)
        return Verdict(Action.FATAL, "redirect", status=status)
    if status in (429, 503):
        delay = parse_retry_after(response.headers.get("Retry-After"))
        if delay is not None:
            return Verdict(Action.RETRY_AFTER, kind, delay=delay, status=status)
    return Verdict(Action.RETRY, kind, status=status)


def _os_verdict(exc: OSError) -> Verdict:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Verdict(Action.FATAL, "tls_certificate")
    if isinstance(exc, ConnectionRefusedError):
        return Verdict(Action.RETRY, "refused")
    if isinstance(exc, ConnectionResetError):
        return Verdict(Action.RETRY, "reset")
    if isinstance(exc, TimeoutError):
        return Verdict(Action.RETRY, "timeout")
    if isinstance(exc, ssl.SSLError):
        return Verdict(Action.RETRY, "tls")
    return Verdict(Action.RETRY, "os_error")


def default_classify(
    exc: BaseException, *, fatal_statuses: Collection[int] = FATAL_STATUSES
) -> Verdict:
    """Classify ``exc`` as the table in this module's docstring says.

    Args:
        exc: The exception a dial raised, or the ``ConnectionClosed`` a connection ended with.
        fatal_statuses: HTTP statuses that stop the connection.

    Returns:
        The verdict.
    """
    if isinstance(exc, InvalidStatus):
        return _status_verdict(exc, fatal_statuses)
    if isinstance(exc, ConnectionClosed):
        return _close_verdict(exc)
    if isinstance(exc, InvalidURI) or (isinstance(exc, ConfigError) and str(exc)[:3] == "url"):
        return Verdict(Action.FATAL, "invalid_url")
    if isinstance(exc, ConfigError):  # e.g. a headers callable returned a CR/LF value
        return Verdict(Action.FATAL, "invalid_config")
    if isinstance(exc, SecurityError):  # a redirect loop, or a redirect to plain ws://
        return Verdict(Action.FATAL, "redirect")
    if isinstance(exc, OSError):  # includes TimeoutError, refused, reset, DNS (gaierror)
        return _os_verdict(exc)
    if isinstance(exc, InvalidHandshake):
        return Verdict(Action.RETRY, "handshake")
    if isinstance(exc, EOFError):
        return Verdict(Action.RETRY, "eof")
    return Verdict(Action.RETRY, type(exc).__name__)


def classifier(
    *,
    retry_statuses: Collection[int] = (),
    fatal_statuses: Collection[int] = (),
    base: Classifier | None = None,
) -> Classifier:
    """Build a classifier from the default with some HTTP statuses moved between the lists.

    ``classifier(retry_statuses={401})`` retries a 401 with backoff (use it with a ``headers``
    callable that fetches a fresh token before every dial).

    Args:
        retry_statuses: Statuses to retry even though the default calls them fatal.
        fatal_statuses: Extra statuses to treat as fatal.
        base: Classifier used for everything else (default :func:`default_classify`).

    Returns:
        The classifier.
    """
    retry = frozenset(retry_statuses)
    fatal = (FATAL_STATUSES | frozenset(fatal_statuses)) - retry

    def classify(exc: BaseException) -> Verdict:
        if isinstance(exc, InvalidStatus) or base is None:
            return default_classify(exc, fatal_statuses=fatal)
        return base(exc)

    return classify
