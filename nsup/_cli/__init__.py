"""The ``nsup`` command line: one argparse sub-command per module.

Each command lives in its own ``nsup/_cmd_<name>.py`` module that exposes
``register(subparsers)``; the parser it adds carries ``run(args) -> int`` as
its ``func`` default.  This module only wires them together and maps errors to
exit codes: 2 for bad usage or an invalid policy, as the spec says.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from .. import __version__
from .._errors import NsupError
from . import check as _cmd_check
from . import control as _cmd_control
from . import exec as _cmd_exec
from . import run as _cmd_run

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["build_parser", "main"]

_COMMANDS = (_cmd_run, _cmd_check, _cmd_exec, _cmd_control)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for every ``nsup`` sub-command."""
    parser = argparse.ArgumentParser(
        prog="nsup",
        description="Supervise Linux processes in fresh namespaces.",
    )
    parser.add_argument("--version", action="version", version=f"nsup {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _COMMANDS:
        module.register(subparsers)
    return parser


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush finds no closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nsup`` with *argv* (default ``sys.argv[1:]``) and return the exit code.

    A closed stdout (``nsup status | head -1``) ends any command quietly, with 0.
    """
    try:
        try:
            args = build_parser().parse_args(argv)
            code: int = args.func(args)
        except NsupError as exc:
            print(f"nsup: {exc}", file=sys.stderr)  # noqa: T201 - the CLI's own error line
            code = 2
        except SystemExit as exc:  # argparse, after --help, --version or bad usage
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    return code
