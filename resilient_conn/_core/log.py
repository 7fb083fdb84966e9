"""Logging helpers: the structlog logger and the redaction of secrets.

Every event is namespaced ``resilient_conn.<what>``. URLs and headers pass through
:func:`redact_url` / :func:`redact_headers` before they reach a log line, a ``repr``, an
exception message or a health report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .logroute import LIBRARY_LOGGER, RoutedLogger

__all__ = [
    "SECRET_HEADERS",
    "SECRET_PARAMS",
    "get_logger",
    "redact_headers",
    "redact_text",
    "redact_url",
]

REDACTED = "***"

SECRET_PARAMS = frozenset(
    {
        "apikey",
        "api_key",
        "token",
        "access_token",
        "refresh_token",
        "key",
        "secret",
        "password",
        "jwt",
    }
)
"""Query parameter names whose values are never shown."""

SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "apikey", "x-api-key", "cookie", "set-cookie"}
)
"""Header names (lower case) whose values are never shown."""

_TEXT_SECRET = re.compile(
    r"(?i)\b(" + "|".join(sorted(SECRET_PARAMS, key=len, reverse=True)) + r")=([^&\s'\"]+)"
)
_USERINFO = re.compile(r"(?i)\b(wss?|https?)://[^/@\s'\"]+@")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")


def get_logger(**context: Any) -> Any:
    """Return the library's logger with ``context`` bound (e.g. ``connection="feed"``).

    Events go through the application's structlog set-up when it has one, else to the stdlib
    logger ``resilient_conn`` (silent until the application configures logging); see
    :mod:`resilient_conn._core.logroute`.
    """
    return RoutedLogger(LIBRARY_LOGGER, context)


def redact_url(url: str) -> str:
    """Return ``url`` with userinfo and secret query values replaced by ``***``.

    >>> redact_url("wss://u:p@h/ws?apikey=abc&vsn=2.0.0")
    'wss://***@h/ws?apikey=***&vsn=2.0.0'
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
        query = urlencode(
            [(k, REDACTED if k.lower() in SECRET_PARAMS else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Redact secrets that appear inside free text (error messages, reprs)."""
    text = _USERINFO.sub(lambda m: f"{m.group(1)}://{REDACTED}@", text)
    text = _TEXT_SECRET.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


def redact_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None,
) -> dict[str, str]:
    """Return a copy of ``headers`` with the values of secret headers replaced by ``***``."""
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {k: (REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in items}
