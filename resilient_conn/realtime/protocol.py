"""Phoenix Channels wire protocol, without I/O: messages, v1/v2 serializers, refs, replies.

Nothing here touches a socket, reads a clock or sleeps: deadlines are passed in as numbers.
See ``PHOENIX-PROTOCOL.md`` (sections 2 and 3) for the facts this module encodes.

* :class:`Message` is one frame, decoded.
* :class:`V1Serializer` speaks ``vsn=1.0.0`` (JSON objects); :class:`V2Serializer` speaks
  ``vsn=2.0.0`` (JSON arrays plus binary frames of kinds 0-4). Both are built for one side of
  the socket (``"client"`` or ``"server"``), because binary kind 0 is laid out differently in
  each direction and v1 server replies never carry ``join_ref``.
* :class:`RefCounter` hands out the per-socket refs; :class:`ReplyTable` matches replies to
  pending pushes by ref and expires them by deadline (both defined in ``_refs``, re-exported
  here).

Every decoder raises :class:`~resilient_conn.errors.RealtimeProtocolError` (and nothing
else) for a frame it cannot understand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Literal

from .._core.errors import RealtimeProtocolError
from ._refs import RefCounter, ReplyTable

__all__ = [
    "BROADCAST",
    "HEARTBEAT",
    "KIND_BROADCAST",
    "KIND_PUSH",
    "KIND_REPLY",
    "KIND_USER_BROADCAST",
    "KIND_USER_BROADCAST_PUSH",
    "PHOENIX_TOPIC",
    "PHX_CLOSE",
    "PHX_ERROR",
    "PHX_JOIN",
    "PHX_LEAVE",
    "PHX_REPLY",
    "Message",
    "RefCounter",
    "ReplyTable",
    "Serializer",
    "Side",
    "V1Serializer",
    "V2Serializer",
    "close_ref",
    "make_serializer",
    "parse_reply",
]

PHOENIX_TOPIC: Final = "phoenix"
"""The topic of heartbeats; needs no join."""
PHX_JOIN: Final = "phx_join"
PHX_LEAVE: Final = "phx_leave"
PHX_REPLY: Final = "phx_reply"
PHX_CLOSE: Final = "phx_close"
PHX_ERROR: Final = "phx_error"
HEARTBEAT: Final = "heartbeat"
BROADCAST: Final = "broadcast"

KIND_PUSH: Final = 0
"""Binary push (layout differs by direction)."""
KIND_REPLY: Final = 1
"""Binary reply, server to client."""
KIND_BROADCAST: Final = 2
"""Binary broadcast, server to client."""
KIND_USER_BROADCAST_PUSH: Final = 3
"""Supabase user broadcast, client to server."""
KIND_USER_BROADCAST: Final = 4
"""Supabase user broadcast, server to client."""

_ENC_BINARY: Final = 0
_ENC_JSON: Final = 1

Side = Literal["client", "server"]
"""Which end of the socket a serializer works for."""


@dataclass(frozen=True, slots=True)
class Message:
    """One Phoenix message.

    Attributes:
        topic: ``"phoenix"`` or a channel topic such as ``"realtime:room1"``.
        event: ``phx_join``, ``phx_reply``, ``broadcast``, ... (see the protocol table).
        payload: A JSON value (usually a dict) or ``bytes`` for a binary frame. A reply's
            payload is ``{"status": ..., "response": ...}``. A Supabase user broadcast
            (binary kinds 3 and 4) decodes to ``{"type": "broadcast", "event": ...,
            "payload": ..., "meta"?: {...}}``, as realtime-js presents it.
        ref: The push's ref (``None`` for server fan-out).
        join_ref: The ref of the channel's current join (``None`` where the table says null).
        kind: The binary frame kind it came in (0-4), or ``None`` for a text frame. When
            encoding, ``3``/``4`` ask for a Supabase user-broadcast frame.
    """

    topic: str
    event: str
    payload: Any
    ref: str | None = None
    join_ref: str | None = None
    kind: int | None = None


def parse_reply(message: Message) -> tuple[str, Any]:
    """Return ``(status, response)`` of a ``phx_reply``.

    Raises:
        RealtimeProtocolError: The payload is not ``{"status": str, "response": ...}``.
    """
    payload = message.payload
    if not isinstance(payload, dict) or not isinstance(payload.get("status"), str):
        raise RealtimeProtocolError(f"malformed phx_reply payload: {payload!r:.200}")
    return payload["status"], payload.get("response", {})


def close_ref(message: Message) -> str | None:
    """Return the join ref a ``phx_close``/``phx_error`` refers to.

    v2 frames carry it as ``join_ref``; v1 server frames have no ``join_ref``, and Phoenix puts
    the channel's join ref in ``ref`` instead.
    """
    return message.join_ref if message.join_ref is not None else message.ref


# --- helpers --------------------------------------------------------------------------------


def _opt_ref(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise RealtimeProtocolError(f"{what} must be a string or null, got {value!r:.100}")


def _req_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RealtimeProtocolError(f"{what} must be a string, got {value!r:.100}")
    return value


def _loads(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise RealtimeProtocolError(f"invalid JSON: {exc}") from None


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise RealtimeProtocolError(f"payload is not JSON-serialisable: {exc}") from exc


def _b(text: str | None, what: str) -> bytes:
    data = (text or "").encode("utf-8")
    if len(data) > 255:
        raise RealtimeProtocolError(f"{what} is longer than 255 bytes in a binary frame")
    return data


class _Reader:
    """Reads length-prefixed fields of a binary frame, raising on truncation."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 1

    def sizes(self, n: int) -> list[int]:
        out = list(self._data[self._pos : self._pos + n])
        if len(out) != n:
            raise RealtimeProtocolError("binary frame truncated in its header")
        self._pos += n
        return out

    def text(self, size: int) -> str:
        chunk = self._data[self._pos : self._pos + size]
        if len(chunk) != size:
            raise RealtimeProtocolError("binary frame truncated in a field")
        self._pos += size
        try:
            return chunk.decode("utf-8")
        except UnicodeDecodeError:
            raise RealtimeProtocolError("binary frame field is not UTF-8") from None

    def rest(self) -> bytes:
        return self._data[self._pos :]


# --- serializers ----------------------------------------------------------------------------


class Serializer:
    """Base of the two serializers.

    Args:
        side: ``"client"`` encodes client-to-server frames and decodes server-to-client ones;
            ``"server"`` the opposite.
    """

    vsn: str = ""

    def __init__(self, side: Side = "client") -> None:
        if side not in ("client", "server"):
            raise ValueError(f"side must be 'client' or 'server', got {side!r}")
        self.side: Side = side

    def encode(self, message: Message) -> str | bytes:
        """Return the frame for ``message`` (``str`` for text, ``bytes`` for binary)."""
        raise NotImplementedError

    def decode(self, frame: str | bytes) -> Message:
        """Return the message in ``frame``.

        Raises:
            RealtimeProtocolError: The frame is not a valid message of this version.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(side={self.side!r})"


class V1Serializer(Serializer):
    """``vsn=1.0.0``: text frames holding ``{"topic","event","payload","ref","join_ref"?}``."""

    vsn = "1.0.0"

    def encode(self, message: Message) -> str:
        """Return the JSON object frame; a server-side frame never carries ``join_ref``."""
        if isinstance(message.payload, bytes):
            raise RealtimeProtocolError("vsn 1.0.0 cannot carry binary payloads")
        obj: dict[str, Any] = {
            "topic": message.topic,
            "event": message.event,
            "payload": message.payload,
            "ref": message.ref,
        }
        if self.side == "client" and message.join_ref is not None:
            obj["join_ref"] = message.join_ref
        return _dumps(obj)

    def decode(self, frame: str | bytes) -> Message:
        """Decode a JSON object frame (binary frames are an error in vsn 1.0.0)."""
        if not isinstance(frame, str):
            raise RealtimeProtocolError("vsn 1.0.0 has no binary frames")
        obj = _loads(frame)
        if not isinstance(obj, dict):
            raise RealtimeProtocolError("vsn 1.0.0 frame is not a JSON object")
        if "payload" not in obj:
            raise RealtimeProtocolError("frame has no payload")
        return Message(
            topic=_req_str(obj.get("topic"), "topic"),
            event=_req_str(obj.get("event"), "event"),
            payload=obj["payload"],
            ref=_opt_ref(obj.get("ref"), "ref"),
            join_ref=_opt_ref(obj.get("join_ref"), "join_ref"),
        )


class V2Serializer(Serializer):
    """``vsn=2.0.0``: ``[join_ref, ref, topic, event, payload]`` text frames, binary kinds 0-4.

    A message whose payload is ``bytes`` is sent as a binary frame; a message with ``kind``
    3 (client) or 4 (server) as a Supabase user broadcast, whose inner ``payload`` is sent
    raw when it is ``bytes`` and as JSON otherwise.
    """

    vsn = "2.0.0"

    def encode(self, message: Message) -> str | bytes:
        """Return the frame for ``message`` (see the class docstring for the binary rules)."""
        if message.kind in (KIND_USER_BROADCAST_PUSH, KIND_USER_BROADCAST):
            return self._encode_user_broadcast(message)
        if isinstance(message.payload, bytes):
            return self._encode_binary(message)
        return _dumps(
            [message.join_ref, message.ref, message.topic, message.event, message.payload]
        )

    def _encode_binary(self, m: Message) -> bytes:
        data = m.payload
        if self.side == "client":
            parts = [_b(m.join_ref, "join_ref"), _b(m.ref, "ref"), _b(m.topic, "topic")]
            parts.append(_b(m.event, "event"))
            return _frame(KIND_PUSH, parts, data)
        topic = _b(m.topic, "topic")
        if m.ref is None and m.join_ref is None:
            return _frame(KIND_BROADCAST, [topic, _b(m.event, "event")], data)
        return _frame(KIND_PUSH, [_b(m.join_ref, "join_ref"), topic, _b(m.event, "event")], data)

    def encode_binary_reply(
        self, topic: str, status: str, response: bytes, ref: str | None, join_ref: str | None
    ) -> bytes:
        """Return a binary reply frame (kind 1, server side only)."""
        if self.side != "server":
            raise RealtimeProtocolError("only a server sends binary replies")
        fields = [_b(join_ref, "join_ref"), _b(ref, "ref"), _b(topic, "topic")]
        fields.append(_b(status, "status"))
        return _frame(KIND_REPLY, fields, response)

    def _encode_user_broadcast(self, m: Message) -> bytes:
        body = m.payload
        if not isinstance(body, dict) or not isinstance(body.get("event"), str):
            raise RealtimeProtocolError("user broadcast payload needs a string 'event'")
        inner = body.get("payload")
        if isinstance(inner, bytes):
            encoding, data = _ENC_BINARY, inner
        else:
            encoding, data = _ENC_JSON, _dumps(inner).encode("utf-8")
        meta = body.get("meta")
        meta_b = b"" if meta is None else _dumps(meta).encode("utf-8")
        if len(meta_b) > 255:
            raise RealtimeProtocolError("meta is longer than 255 bytes in a binary frame")
        if self.side == "client":
            heads = [_b(m.join_ref, "join_ref"), _b(m.ref, "ref"), _b(m.topic, "topic")]
            kind = KIND_USER_BROADCAST_PUSH
        else:
            heads = [_b(m.topic, "topic")]
            kind = KIND_USER_BROADCAST
        heads.append(_b(body["event"], "event"))
        sizes = bytes([kind, *(len(h) for h in heads), len(meta_b), encoding])
        return sizes + b"".join(heads) + meta_b + data

    def decode(self, frame: str | bytes) -> Message:
        """Decode a JSON array frame or a binary frame sent by the other side."""
        if isinstance(frame, (bytes, bytearray, memoryview)):
            return self._decode_binary(bytes(frame))
        arr = _loads(frame)
        if not isinstance(arr, list) or len(arr) < 5:
            raise RealtimeProtocolError("vsn 2.0.0 frame is not an array of 5 elements")
        return Message(
            join_ref=_opt_ref(arr[0], "join_ref"),
            ref=_opt_ref(arr[1], "ref"),
            topic=_req_str(arr[2], "topic"),
            event=_req_str(arr[3], "event"),
            payload=arr[4],
        )

    def _decode_binary(self, data: bytes) -> Message:
        if not data:
            raise RealtimeProtocolError("empty binary frame")
        kind = data[0]
        r = _Reader(data)
        if self.side == "server":
            if kind == KIND_PUSH:
                jr, ref, topic, event = (r.text(n) for n in r.sizes(4))
                return Message(topic, event, r.rest(), ref or None, jr or None, KIND_PUSH)
            if kind == KIND_USER_BROADCAST_PUSH:
                s = r.sizes(6)
                jr, ref, topic, uevent = (r.text(n) for n in s[:4])
                payload = _user_payload(uevent, r.text(s[4]), s[5], r.rest())
                return Message(topic, BROADCAST, payload, ref or None, jr or None, kind)
            raise RealtimeProtocolError(f"binary kind {kind} is not sent by a client")
        if kind == KIND_PUSH:
            jr, topic, event = (r.text(n) for n in r.sizes(3))
            return Message(topic, event, r.rest(), None, jr or None, KIND_PUSH)
        if kind == KIND_REPLY:
            jr, ref, topic, status = (r.text(n) for n in r.sizes(4))
            payload = {"status": status, "response": r.rest()}
            return Message(topic, PHX_REPLY, payload, ref or None, jr or None, KIND_REPLY)
        if kind == KIND_BROADCAST:
            topic, event = (r.text(n) for n in r.sizes(2))
            return Message(topic, event, r.rest(), None, None, KIND_BROADCAST)
        if kind == KIND_USER_BROADCAST:
            s = r.sizes(4)
            topic, uevent = r.text(s[0]), r.text(s[1])
            payload = _user_payload(uevent, r.text(s[2]), s[3], r.rest())
            return Message(topic, BROADCAST, payload, None, None, kind)
        raise RealtimeProtocolError(f"binary kind {kind} is not sent by a server")


def _frame(kind: int, fields: list[bytes], data: Any) -> bytes:
    if not isinstance(data, bytes):
        raise RealtimeProtocolError("binary frame data must be bytes")
    return bytes([kind, *(len(f) for f in fields)]) + b"".join(fields) + data


def _user_payload(event: str, meta_text: str, encoding: int, rest: bytes) -> dict[str, Any]:
    if encoding == _ENC_BINARY:
        inner: Any = rest
    elif encoding == _ENC_JSON:
        inner = _loads(rest)
    else:
        raise RealtimeProtocolError(f"unknown user broadcast encoding {encoding}")
    out: dict[str, Any] = {"type": BROADCAST, "event": event, "payload": inner}
    if meta_text:
        meta = _loads(meta_text)
        if not isinstance(meta, dict):
            raise RealtimeProtocolError("user broadcast meta is not a JSON object")
        out["meta"] = meta
    return out


def make_serializer(vsn: str, side: Side = "client") -> Serializer:
    """Return the serializer for protocol version ``vsn`` (``"1.0.0"`` or ``"2.0.0"``).

    Raises:
        ValueError: ``vsn`` is neither.
    """
    if vsn == V1Serializer.vsn:
        return V1Serializer(side)
    if vsn == V2Serializer.vsn:
        return V2Serializer(side)
    raise ValueError(f"vsn must be '1.0.0' or '2.0.0', got {vsn!r}")
