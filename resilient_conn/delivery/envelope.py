r"""The acknowledged-stream envelope: three frame kinds on an ordinary WebSocket (pure codec).

Every frame of an acknowledged stream is one WebSocket message that starts with one ASCII
letter naming its kind. The full specification, for peers written in other languages, is in
``docs/delivery.md``; in short::

    D<seq>\n<payload>      data: the application's message, numbered 1, 2, 3... per stream
                            epoch. Sent as a text frame for a str payload and as a binary
                            frame for a bytes payload (the header is then ASCII bytes).
    A<seq>                  cumulative ack (text): every data frame up to <seq> has been
                            handed to the receiving application.
    H<json>                 hello (text), the first frame each side sends on a new
                            transport: {"v": 1, "session": str, "epoch": str, "first": int,
                            "peer_epoch": str | null, "delivered": int}.

``<seq>`` is a decimal integer without sign or leading zeros, at most :data:`MAX_SEQ`.
Decoding never trusts the peer: anything malformed raises :class:`EnvelopeError` (a
``ValueError``) naming what is wrong, and the caller counts and skips it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .._core.errors import ResilientConnError

__all__ = [
    "MAX_HELLO_SIZE",
    "MAX_SEQ",
    "PROTOCOL_VERSION",
    "Ack",
    "Data",
    "EnvelopeError",
    "Frame",
    "Hello",
    "check_epoch",
    "check_session",
    "decode",
    "encode_ack",
    "encode_data",
    "encode_hello",
    "split_data",
]

PROTOCOL_VERSION = 1
"""The envelope version a hello carries (``"v"``)."""
MAX_SEQ = 2**63 - 1
"""Largest sequence number (fits a signed 64-bit integer in every language)."""
MAX_HELLO_SIZE = 2048
"""Longest hello frame accepted, in characters."""

_SESSION = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_EPOCH = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_SEQ_DIGITS = len(str(MAX_SEQ))


class EnvelopeError(ResilientConnError, ValueError):
    """A frame is not a valid acknowledged-stream envelope (the message says why)."""


@dataclass(frozen=True, slots=True)
class Data:
    """A data frame: one application message and its sequence number.

    Attributes:
        seq: Sequence number (1 to :data:`MAX_SEQ`), per stream epoch.
        payload: The application's message, exactly as it was sent (str or bytes).
    """

    seq: int
    payload: str | bytes


@dataclass(frozen=True, slots=True)
class Ack:
    """A cumulative acknowledgement: every data frame up to ``seq`` was delivered.

    Attributes:
        seq: Highest sequence number delivered to the receiving application (0: none).
    """

    seq: int


@dataclass(frozen=True, slots=True)
class Hello:
    """The first frame on every transport: who I am and what I have of your stream.

    Attributes:
        session: Session identity (1-128 characters of ``A-Z a-z 0-9 . _ : @ / + = -``),
            chosen by the client; the server keys its state by it.
        epoch: Identity of the sender's outbound stream (1-64 characters of ``A-Z a-z 0-9 _
            -``). A side that lost its state starts a new epoch, and numbering restarts at 1.
        first: Lowest sequence number the sender still holds (it re-sends from there);
            equal to its next sequence number when nothing is waiting.
        peer_epoch: The epoch of the receiver's stream that the sender has been receiving,
            or None if it has none (a fresh side).
        delivered: Highest sequence number of ``peer_epoch`` the sender has handed to its
            application (0 when none, or when ``peer_epoch`` is None).
        version: Envelope version (:data:`PROTOCOL_VERSION`).
    """

    session: str
    epoch: str
    first: int
    peer_epoch: str | None
    delivered: int
    version: int = PROTOCOL_VERSION


Frame = Data | Ack | Hello
"""Any decoded frame."""


def check_session(session: str) -> str:
    """Return ``session`` if it is a valid session identity, else raise :class:`EnvelopeError`."""
    if not isinstance(session, str) or not _SESSION.fullmatch(session):
        raise EnvelopeError(
            f"session must be 1-128 characters of A-Z a-z 0-9 . _ : @ / + = -, got {session!r:.80}"
        )
    return session


def check_epoch(epoch: str) -> str:
    """Return ``epoch`` if it is a valid epoch, else raise :class:`EnvelopeError`."""
    if not isinstance(epoch, str) or not _EPOCH.fullmatch(epoch):
        raise EnvelopeError(f"epoch must be 1-64 characters of A-Z a-z 0-9 _ -, got {epoch!r:.80}")
    return epoch


def _check_seq(seq: int, low: int, what: str) -> int:
    if isinstance(seq, bool) or not isinstance(seq, int) or not low <= seq <= MAX_SEQ:
        raise EnvelopeError(f"{what} must be an int from {low} to 2**63-1, got {seq!r:.40}")
    return seq


def encode_data(seq: int, payload: str | bytes) -> str | bytes:
    """Return the data frame for ``payload`` (text for str, binary for bytes).

    Raises:
        EnvelopeError: ``seq`` is out of range.
        TypeError: ``payload`` is neither str nor bytes.
    """
    if isinstance(payload, str):
        return f"D{seq}\n{payload}"
    if isinstance(payload, bytes):
        return b"D%d\n" % seq + payload
    raise TypeError(f"message must be str or bytes, got {type(payload).__name__}")


def encode_ack(seq: int) -> str:
    """Return the cumulative ack frame for ``seq``."""
    return f"A{seq}"


def encode_hello(hello: Hello) -> str:
    """Return the hello frame for ``hello`` (after validating every field).

    Raises:
        EnvelopeError: A field is invalid.
    """
    check_session(hello.session)
    check_epoch(hello.epoch)
    if hello.peer_epoch is not None:
        check_epoch(hello.peer_epoch)
    _check_seq(hello.first, 1, "first")
    _check_seq(hello.delivered, 0, "delivered")
    body = {
        "v": hello.version,
        "session": hello.session,
        "epoch": hello.epoch,
        "first": hello.first,
        "peer_epoch": hello.peer_epoch,
        "delivered": hello.delivered,
    }
    return "H" + json.dumps(body, separators=(",", ":"))


def _parse_seq(digits: str, low: int, what: str) -> int:
    if (
        not digits
        or len(digits) > _MAX_SEQ_DIGITS
        or not digits.isascii()
        or not digits.isdigit()
        or (len(digits) > 1 and digits[0] == "0")
    ):
        raise EnvelopeError(f"{what}: not a decimal sequence number: {digits!r:.40}")
    return _check_seq(int(digits), low, what)


def split_data(frame: str | bytes) -> tuple[int, str] | None:
    """Fast path: ``(seq, payload)`` of a valid text data frame, else None (use :func:`decode`).

    Accepts exactly what :func:`decode` accepts as a text data frame.
    """
    if type(frame) is not str or frame[:1] != "D":
        return None
    end = frame.find("\n", 1, _MAX_SEQ_DIGITS + 2)
    if end < 2:
        return None
    digits = frame[1:end]
    if digits[0] == "0" or not digits.isdigit() or not digits.isascii():
        return None
    seq = int(digits)
    if seq > MAX_SEQ:
        return None
    return seq, frame[end + 1 :]


def decode(frame: str | bytes) -> Frame:
    """Decode one WebSocket message into a frame.

    Raises:
        EnvelopeError: The message is not a valid envelope (empty, unknown kind, bad sequence
            number, control frame in a binary message, malformed hello...).
    """
    if isinstance(frame, bytes):
        if frame[:1] != b"D":
            raise EnvelopeError("a binary frame must be a data frame (b'D<seq>\\n...')")
        end = frame.find(b"\n", 1, _MAX_SEQ_DIGITS + 2)
        if end < 0:
            raise EnvelopeError("data frame: no newline after the sequence number")
        seq = _parse_seq(frame[1:end].decode("ascii", "replace"), 1, "data frame")
        return Data(seq, frame[end + 1 :])
    if not isinstance(frame, str):
        raise EnvelopeError(f"a frame must be str or bytes, got {type(frame).__name__}")
    kind = frame[:1]
    if kind == "D":
        end = frame.find("\n", 1, _MAX_SEQ_DIGITS + 2)
        if end < 0:
            raise EnvelopeError("data frame: no newline after the sequence number")
        return Data(_parse_seq(frame[1:end], 1, "data frame"), frame[end + 1 :])
    if kind == "A":
        return Ack(_parse_seq(frame[1:], 0, "ack frame"))
    if kind == "H":
        return _decode_hello(frame)
    raise EnvelopeError(f"unknown frame kind {kind!r} (expected D, A or H)")


def _decode_hello(frame: str) -> Hello:
    if len(frame) > MAX_HELLO_SIZE:
        raise EnvelopeError(f"hello frame longer than {MAX_HELLO_SIZE} characters")
    try:
        body: Any = json.loads(frame[1:])
    except ValueError as exc:
        raise EnvelopeError(f"hello frame: not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise EnvelopeError("hello frame: not a JSON object")
    version = body.get("v")
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise EnvelopeError(f"hello frame: unsupported version {version!r:.20}")
    peer_epoch = body.get("peer_epoch")
    try:
        return Hello(
            session=check_session(body.get("session")),  # type: ignore[arg-type]
            epoch=check_epoch(body.get("epoch")),  # type: ignore[arg-type]
            first=_check_seq(body.get("first"), 1, "hello first"),  # type: ignore[arg-type]
            peer_epoch=None if peer_epoch is None else check_epoch(peer_epoch),
            delivered=_check_seq(body.get("delivered"), 0, "hello delivered"),  # type: ignore[arg-type]
        )
    except EnvelopeError as exc:
        raise EnvelopeError(f"hello frame: {exc}") from None
