"""``nsup check POLICY``: validate a policy (placeholder until the policy model lands)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``check`` sub-command to *subparsers*."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check", help="validate a policy file"
    )
    parser.add_argument("policy", metavar="POLICY.toml")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate ``args.policy``."""
    raise NotImplementedError(args.policy)
