"""How a picows connection ended, in websockets' vocabulary (``ConnectionClosed`` and ``Close``).

picows keeps the close frames it sent and received on ``WSTransport.close_handshake``; the
supervisor's classifier reads websockets' exceptions, so :class:`PicowsTransport
<resilient_conn.adapters._picows_transport.PicowsTransport>` turns them into those here.
"""

from __future__ import annotations

from typing import Any

from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.frames import OK_CLOSE_CODES, Close

__all__ = ["close_info", "closed_error"]


def close_info(info: Any) -> Close | None:
    """Picows' ``WSCloseInfo`` (or None) as websockets' ``Close`` (or None)."""
    if info is None:
        return None
    code = info.code
    return Close(int(code.value if hasattr(code, "value") else code), info.reason or "")


def closed_error(handshake: Any, failure: BaseException | None) -> ConnectionClosed:
    """The ``ConnectionClosed`` for a connection whose close handshake is ``handshake``.

    ``ConnectionClosedOK`` when both close frames were exchanged with codes 1000 / 1001,
    ``ConnectionClosedError`` otherwise; ``failure`` (an error picows stored) is its cause.
    """
    rcvd = sent = None
    rcvd_then_sent = None
    if handshake is not None:
        rcvd, sent = close_info(handshake.recv), close_info(handshake.sent)
        if rcvd is not None and sent is not None:
            rcvd_then_sent = bool(handshake.recv_then_sent)
    ok = (
        rcvd is not None
        and sent is not None
        and rcvd.code in OK_CLOSE_CODES
        and sent.code in OK_CLOSE_CODES
    )
    exc: ConnectionClosed = (ConnectionClosedOK if ok else ConnectionClosedError)(
        rcvd, sent, rcvd_then_sent
    )
    if failure is not None:
        exc.__cause__ = failure
    return exc
