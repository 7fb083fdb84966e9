"""Presence bookkeeping of a channel, validated: a malformed payload raises and changes nothing.

``presence_state`` carries ``{key: {"metas": [meta, ...]}}``; ``presence_diff`` carries
``{"joins": {...}, "leaves": {...}}`` of the same shape. A hostile server may send anything
instead; these functions check the shape first and raise
:class:`~resilient_conn.errors.RealtimeProtocolError`, which the client's reader counts as a
malformed frame.
"""

from __future__ import annotations

from typing import Any

from .._core.errors import RealtimeProtocolError

__all__ = ["apply_diff", "presence_entries"]


def presence_entries(value: Any, what: str) -> dict[str, list[dict[str, Any]]]:
    """``{key: {"metas": [meta, ...]}}`` as ``{key: [meta, ...]}``, validated.

    Raises:
        RealtimeProtocolError: ``value`` does not have that shape.
    """
    if not isinstance(value, dict):
        raise RealtimeProtocolError(f"{what} is not an object: {value!r:.100}")
    out: dict[str, list[dict[str, Any]]] = {}
    for key, entry in value.items():
        metas = entry.get("metas", []) if isinstance(entry, dict) else None
        if not isinstance(metas, list) or not all(isinstance(m, dict) for m in metas):
            raise RealtimeProtocolError(f"{what}[{key!r:.50}] is not {{'metas': [object...]}}")
        out[key] = list(metas)
    return out


def apply_diff(state: dict[str, list[dict[str, Any]]], diff: Any) -> None:
    """Apply a ``presence_diff`` to ``state``; a malformed diff raises and changes nothing."""
    if not isinstance(diff, dict):
        raise RealtimeProtocolError(f"presence_diff is not an object: {diff!r:.100}")
    leaves = presence_entries(diff.get("leaves") or {}, "presence_diff.leaves")
    joins = presence_entries(diff.get("joins") or {}, "presence_diff.joins")
    for key, metas in leaves.items():
        gone = {m.get("phx_ref") for m in metas}
        kept = [m for m in state.get(key, []) if m.get("phx_ref") not in gone]
        if kept:
            state[key] = kept
        else:
            state.pop(key, None)
    for key, metas in joins.items():
        state.setdefault(key, []).extend(metas)
