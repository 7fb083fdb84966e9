"""Logging helpers: the structlog logger and the redaction of secrets.

Every event is namespaced ``resilient_conn.<what>``. URLs and headers pass through
:func:`redact_url` / :func:`redact_headers` before they reach a log line, a ``repr``, an
exception message or a health report.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .logroute import LIBRARY_LOGGER, RoutedLogger

__all__ = [
    "SECRET_HEADERS",
    "SECRET_PARAMS",
    "SECRET_WORDS",
    "WEBSOCKETS_LOGGERS",
    "RedactingFilter",
    "connection_logger",
    "debug_enabled",
    "get_logger",
    "install_websockets_redaction",
    "is_secret_name",
    "redact_headers",
    "redact_text",
    "redact_url",
]

REDACTED = "***"

SECRET_WORDS: tuple[str, ...] = (
    "token",
    "secret",
    "key",
    "auth",
    "sig",
    "passw",
    "pwd",
    "session",
    "cookie",
    "credential",
    "jwt",
)
"""A query key or header name containing any of these (any case, ``-`` or ``_`` around
them) is a credential: its value is never shown (``client_secret``, ``X-Api-Key``,
``auth``, ``sig``, ``access-token``, ``Set-Cookie``, ``sessionid``...)."""

_WORDS = "|".join(SECRET_WORDS)
_SECRET_NAME = re.compile(rf"(?i)(?:{_WORDS})")

SECRET_PARAMS = frozenset(
    {"apikey", "api_key", "token", "access_token", "refresh_token", "key", "secret", "jwt"}
)
"""Examples of query keys that are redacted (kept for compatibility; the pattern
:data:`SECRET_WORDS` decides, see :func:`is_secret_name`)."""

SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "apikey", "x-api-key", "cookie", "set-cookie"}
)
"""Examples of header names that are redacted (the pattern :data:`SECRET_WORDS` decides)."""

# Linear-time patterns: a candidate name is matched by a plain character class, and
# whether it looks like a credential is decided in Python (no nested backtracking).
_NAME_CHARS = r"[\w.\-\[\]]"
# key=value in a query string or free text
_TEXT_PAIR = re.compile(rf"(?<!{_NAME_CHARS})({_NAME_CHARS}+)=([^&\s'\",;)\]}}>]+)")
# 'key': 'value' / "key": "value" (reprs of dicts, JSON)
_QUOTED_PAIR = re.compile(r"(['\"])([\w.\-]+)\1(\s*:\s*)(['\"])((?:\\.|(?!\4)[^\\])*)\4")
# a header line: "Authorization: ...", "> apikey: ..." (not "KeyError: ...")
_HEADER_LINE = re.compile(r"(?m)^([<>][ \t]+)?([\w-]+)(:[ \t]*)(\S[^\r\n]*)$")
_NOT_A_HEADER = re.compile(r"(?:Error|Exception|Warning)$")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*)://[^/@\s'\"?#]+@")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*")


def is_secret_name(name: str) -> bool:
    """Whether a query key or header name looks like a credential (see :data:`SECRET_WORDS`).

    >>> is_secret_name("client_secret"), is_secret_name("X-Api-Key"), is_secret_name("vsn")
    (True, True, False)
    """
    return _SECRET_NAME.search(name) is not None


def debug_enabled(log: Any) -> bool:
    """Return whether ``log`` would emit a debug event (True when it cannot tell).

    Guard per-connection debug events with it (``if debug_enabled(log): log.debug(...)``) so
    that, with debug off, building the event's arguments costs nothing either. Works with
    structlog's filtering loggers (``is_enabled_for``) and stdlib-backed ones (``isEnabledFor``).
    """
    check = getattr(log, "is_enabled_for", None) or getattr(log, "isEnabledFor", None)
    return True if check is None else bool(check(logging.DEBUG))


def get_logger(**context: Any) -> Any:
    """Return the library's logger with ``context`` bound (e.g. ``connection="feed"``).

    Events go through the application's structlog set-up when it has one, else to the stdlib
    logger ``resilient_conn`` (silent until the application configures logging); see
    :mod:`resilient_conn._core.logroute`.
    """
    return RoutedLogger(LIBRARY_LOGGER, context)


@functools.lru_cache(maxsize=256)
def connection_logger(name: str) -> Any:
    """Return ``get_logger(connection=name)``, one object per name.

    A bound logger is immutable (``bind`` returns a new one), so the connections of one name
    (by default the URL's host: every connection to one upstream) share it.
    """
    return get_logger(connection=name)


def redact_url(url: str) -> str:
    """Return ``url`` with userinfo and credential-looking query values replaced by ``***``.

    >>> redact_url("wss://u:p@h/ws?apikey=abc&client_secret=s&vsn=2.0.0")
    'wss://***@h/ws?apikey=***&client_secret=***&vsn=2.0.0'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if is_secret_name(k) else v) for k, v in pairs], safe="*")
    fragment = redact_text(parts.fragment) if parts.fragment else ""
    return redact_text(urlunsplit((parts.scheme, netloc, parts.path, query, fragment)))


def redact_text(text: str) -> str:
    """Redact secrets inside free text (error messages, reprs, log lines).

    Removes URL userinfo, the value of any ``name=value``, ``'name': 'value'`` or header
    line ``Name: value`` whose name looks like a credential, ``Bearer``/``Basic``
    credentials and JWTs.

    >>> redact_text("refused: wss://h/ws?client_secret=X&vsn=2 {'auth': 'Y'}")
    "refused: wss://h/ws?client_secret=***&vsn=2 {'auth': '***'}"
    """
    text = _USERINFO.sub(lambda m: f"{m.group(1)}://{REDACTED}@", text)
    text = _TEXT_PAIR.sub(_pair, text)
    text = _QUOTED_PAIR.sub(_quoted, text)
    text = _HEADER_LINE.sub(_header_line, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _JWT.sub(REDACTED, text)


def _pair(m: re.Match[str]) -> str:
    return f"{m.group(1)}={REDACTED}" if is_secret_name(m.group(1)) else m.group(0)


def _quoted(m: re.Match[str]) -> str:
    if not is_secret_name(m.group(2)):
        return m.group(0)
    q, v = m.group(1), m.group(4)
    return f"{q}{m.group(2)}{q}{m.group(3)}{v}{REDACTED}{v}"


def _header_line(m: re.Match[str]) -> str:
    name = m.group(2)
    if not is_secret_name(name) or _NOT_A_HEADER.search(name):
        return m.group(0)
    return f"{m.group(1) or ''}{name}{m.group(3)}{REDACTED}"


def redact_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
) -> dict[str, str]:
    """Return a copy of ``headers`` with credential-looking values replaced by ``***``."""
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {k: (REDACTED if is_secret_name(k) else redact_text(v)) for k, v in items}


class RedactingFilter(logging.Filter):
    """A :mod:`logging` filter that redacts every record it sees (message and arguments).

    Installed on websockets' loggers by :func:`install_websockets_redaction`, so that with
    DEBUG logging the handshake lines (``> GET /ws?apikey=...``, ``> Authorization: ...``)
    show no credential.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the record's message by its redacted text; always keep the record."""
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: redact the raw parts
            message = f"{record.msg} {record.args!r}"
        record.msg = redact_text(message)
        record.args = None
        return True


WEBSOCKETS_LOGGERS = ("websockets", "websockets.client", "websockets.server")
"""The loggers websockets writes to (its connections log to the last two)."""

_FILTER = RedactingFilter()


def install_websockets_redaction() -> None:
    """Filter websockets' own loggers through :class:`RedactingFilter` (idempotent).

    Called when :mod:`resilient_conn` is imported. A logger websockets is given explicitly
    (``logger=`` of ``connect``) is the caller's to filter.
    """
    for name in WEBSOCKETS_LOGGERS:
        target = logging.getLogger(name)
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)


install_websockets_redaction()
