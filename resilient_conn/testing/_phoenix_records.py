"""What the Phoenix test server keeps per connection and records for tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import anyio.abc
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Response

from ..realtime.protocol import Serializer

__all__ = ["Conn", "ConnectionRecord", "JoinRecord", "Sub", "json_response", "pg_matches"]


@dataclass(frozen=True, slots=True)
class JoinRecord:
    """One ``phx_join`` the server received.

    Attributes:
        topic: The topic joined.
        join_ref: The join's ref.
        access_token: The ``access_token`` the join carried (``None`` if none).
        config: The join's ``config`` object.
        connection: Id of the socket it came on (see :attr:`PhoenixServer.connections`).
        accepted: Whether the server replied ok.
    """

    topic: str
    join_ref: str | None
    access_token: str | None
    config: dict[str, Any]
    connection: int
    accepted: bool


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    """One accepted WebSocket: its id, path, protocol version and apikey."""

    id: int
    path: str
    vsn: str
    apikey: str | None


@dataclass(slots=True)
class Sub:
    join_ref: str | None
    config: dict[str, Any]
    pg: list[dict[str, Any]]
    presence_key: str
    token: str | None


@dataclass(slots=True, eq=False)
class Conn:
    id: int
    ws: ServerConnection
    ser: Serializer
    tg: anyio.abc.TaskGroup
    subs: dict[str, Sub] = field(default_factory=dict)


def pg_matches(entry: dict[str, Any], schema: str, table: str, type_: str) -> bool:
    return (
        entry.get("schema", "public") in ("*", schema)
        and entry.get("table", "*") in ("*", table)
        and entry.get("event", "*") in ("*", type_)
    )


def json_response(status: int, error: str) -> Response:
    body = json.dumps({"error": error}).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return Response(status, phrase, headers, body)
