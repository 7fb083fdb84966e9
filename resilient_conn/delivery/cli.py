"""``resilient-conn dead-letters PATH``: list and replay a durable outbox's dead letters.

* ``resilient-conn dead-letters PATH``: what the file holds (session, epoch, pending
  messages) and its dead letters, one line each: id, sequence number, reason, time, size and
  the start of the message.
* ``--json``: the same as one JSON document (binary messages in hex).
* ``--replay``: move the dead letters (all, or those named with ``--id``) back into the
  outbox; the stream sends them on its next run, after what is pending. The file must not be
  in use by a running stream.

Exit codes: 0 success, 1 the file is in use or an id is unknown, 2 bad usage or no such
outbox file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from .durable import OutboxError, read_dead_letters, read_summary, requeue_dead_letters

__all__ = ["build_parser", "run_dead_letters"]

PREVIEW = 60
"""Characters of each message shown in the listing."""


def build_parser() -> argparse.ArgumentParser:
    """The ``resilient-conn dead-letters`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="resilient-conn dead-letters",
        description="List the dead letters of a durable outbox file, or replay them (move "
        "them back into the outbox so the stream sends them on its next run).",
    )
    parser.add_argument("path", help="the outbox file (e.g. outbox/NAME.sqlite3)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--limit", type=_positive_int, default=None, metavar="N", help="list at most N"
    )
    parser.add_argument(
        "--replay",
        action="store_true",
        help="requeue the dead letters (all, or those given with --id) into the outbox",
    )
    parser.add_argument(
        "--id",
        type=_positive_int,
        action="append",
        dest="ids",
        default=None,
        metavar="ID",
        help="with --replay: only this dead letter (repeatable)",
    )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def _preview(message: str | bytes) -> str:
    if isinstance(message, bytes):
        text = f"<{len(message)} bytes> {message[: PREVIEW // 2].hex()}"
    else:
        text = message.encode("unicode_escape").decode("ascii")
    return text if len(text) <= PREVIEW else text[: PREVIEW - 3] + "..."


def run_dead_letters(
    argv: Sequence[str], out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run ``resilient-conn dead-letters`` with ``argv`` (the arguments after it).

    Returns:
        The exit code: 0 success, 1 in use / unknown id, 2 bad usage or no outbox file.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # argparse printed the usage
        return int(exc.code) if isinstance(exc.code, int) else 2
    if args.ids and not args.replay:
        err.write("resilient-conn dead-letters: --id needs --replay\n")
        return 2
    try:
        summary = read_summary(args.path)
    except OutboxError as exc:
        err.write(f"resilient-conn dead-letters: {exc}\n")
        return 2
    if args.replay:
        try:
            count = requeue_dead_letters(args.path, args.ids)
        except OutboxError as exc:
            err.write(f"resilient-conn dead-letters: {exc}\n")
            return 1
        if args.json:
            out.write(json.dumps({"requeued": count}) + "\n")
        else:
            out.write(
                f"requeued {count} dead letter(s) into {args.path}; the stream of session "
                f"{summary.session!r} sends them on its next run\n"
            )
        return 0
    letters = read_dead_letters(args.path, limit=args.limit)
    if args.json:
        document = {
            "path": str(args.path),
            "session": summary.session,
            "epoch": summary.epoch,
            "next_seq": summary.next_seq,
            "pending": summary.pending,
            "dead_letters_total": summary.dead_letters,
            "dead_letters": [letter.to_dict() for letter in letters],
        }
        out.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
        return 0
    out.write(
        f"{args.path}: session {summary.session!r}, epoch {summary.epoch}, "
        f"{summary.pending} pending, {summary.dead_letters} dead letter(s)\n"
    )
    if letters:
        out.write(f"{'id':>6} {'seq':>8} {'reason':<10} {'when (UTC)':<20} message\n")
    for letter in letters:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(letter.at))
        out.write(
            f"{letter.id:>6} {letter.seq:>8} {letter.reason:<10} {when:<20} "
            f"{_preview(letter.message)}\n"
        )
    return 0
