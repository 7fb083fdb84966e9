"""The ``resilient-conn`` command line (placeholder until the demo lands)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Run the ``resilient-conn`` command line and return its exit code."""
    parser = argparse.ArgumentParser(prog="resilient-conn")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the fault-injection demo against an embedded server")
    args = parser.parse_args(argv)
    if args.command == "demo":
        print("resilient-conn demo: not built yet (placeholder until the demo issue lands)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
