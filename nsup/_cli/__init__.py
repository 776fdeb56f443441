"""The ``nsup`` command line: one argparse sub-command per module.

Each command lives in its own ``nsup/_cli/<name>.py`` module that exposes
``register(subparsers)``; the parser it adds carries ``run(args) -> int`` as
its ``func`` default.  This module only wires them together and maps errors to
exit codes: 2 for bad usage or an invalid policy, as the spec says.

Start-up time is part of the interface (``nsup status`` in a shell loop,
``nsup exec`` per request): ``check``, ``exec`` and the control commands
import only the standard library when they load, and pull in what they need
when they run.  ``run`` needs trio and the whole engine, so its module is
imported only when ``nsup run`` is the command; ``nsup --help`` lists it from
:data:`RUN_HELP`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .. import __version__
from .._errors import NsupError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["RUN_HELP", "build_parser", "main"]

#: ``nsup run``'s line in ``nsup --help`` (``run.register`` uses the same text).
RUN_HELP = "supervise a policy in the foreground"

# Sub-commands with a module of their own; the control commands are control.COMMANDS.
_OWN_MODULE = {"run": "run", "check": "check", "exec": "exec"}


def _command(argv: Sequence[str]) -> str | None:
    """Return the sub-command *argv* names (the first word that is not an option)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _width() -> int:
    """The terminal's width as ``shutil.get_terminal_size`` finds it, without importing shutil."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return (columns if columns > 0 else 80) - 2


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose formatters measure the terminal without importing shutil.

    argparse builds a formatter for every ``add_argument``, and its default
    width imports shutil (and with it bz2, lzma and zlib): a few milliseconds
    of every command's start-up.  Sub-command parsers inherit this class.
    """

    def _get_formatter(self) -> argparse.HelpFormatter:
        return self.formatter_class(prog=self.prog, width=_width())  # type: ignore[call-arg]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Return the parser for the ``nsup`` sub-command *argv* selects, or for every one.

    argparse needs only the selected sub-command's parser, so ``nsup exec``
    loads ``exec.py`` alone.  Without a known command (``nsup --help``, a
    typo) every command is registered, with ``run`` listed by its help line
    unless *argv* is None, so trio stays unloaded.
    """
    parser = _Parser(
        prog="nsup",
        description="Supervise Linux processes in fresh namespaces.",
    )
    parser.add_argument("--version", action="version", version=f"nsup {__version__}")
    command = None if argv is None else _command(argv)
    if argv is not None and command is None and "--version" in argv:
        return parser  # it prints and exits before any sub-command is needed
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if command in _OWN_MODULE:
        importlib.import_module(f"{__name__}.{_OWN_MODULE[command]}").register(subparsers)
        return parser
    from . import control  # noqa: PLC0415 - the control commands' module, light

    if command in control.COMMANDS:
        control.register(subparsers)
        return parser
    if argv is None:
        from . import run  # noqa: PLC0415 - trio and the engine

        run.register(subparsers)
    else:
        subparsers.add_parser("run", help=RUN_HELP, add_help=False)
    from . import check, exec  # noqa: PLC0415, A004 - light; `exec` is the sub-command's module

    for module in (check, exec, control):
        module.register(subparsers)
    return parser


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush finds no closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nsup`` with *argv* (default ``sys.argv[1:]``) and return the exit code.

    A closed stdout (``nsup status | head -1``) ends the command quietly, with 0.
    """
    if argv is None:
        argv = sys.argv[1:]
    try:
        try:
            args = build_parser(argv).parse_args(argv)
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
