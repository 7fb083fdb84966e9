"""The client's URLs, without I/O: normalising what the user gave, building each dial's URL."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._core.errors import ConfigError

__all__ = ["build_dial_url", "normalise_url"]


def normalise_url(url: object) -> str:
    """Return ``url`` as ``ws(s)://...`` with a path (a bare host gets ``/realtime/v1/websocket``).

    Raises:
        ConfigError: ``url`` is not a ws, wss, http or https URL with a host.
    """
    if not isinstance(url, str):
        raise ConfigError(f"url must be a string, got {type(url).__name__}")
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigError(f"url must be a ws://, wss://, http:// or https:// URL, got {url!r}")
    path = parts.path if parts.path not in ("", "/") else "/realtime/v1/websocket"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def build_dial_url(base: str, apikey: str | None, vsn: str) -> str:
    """Return ``base`` with ``apikey`` (when set) and ``vsn`` replacing any in its query."""
    parts = urlsplit(base)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("vsn", "apikey")]
    if apikey is not None:
        query.append(("apikey", apikey))
    query.append(("vsn", vsn))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
