"""`xlcf serve` (placeholder until its issue lands)."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="(not yet implemented)")
    parser.set_defaults(func=run)


def run(args) -> int:
    raise NotImplementedError("xlcf serve")
