"""``nsup status|start|stop|restart|signal|reload|reopen-logs|events``: steer a running ``nsup run``.

Each command opens the supervisor's control socket (``--control PATH``, or
the one ``--policy FILE`` names, or ``$NSUP_CONTROL``, or the only socket in
the default directory), sends one request and prints the answer.

Exit codes, the same for every command: 0 done; 1 the supervisor answered
with an error (an unknown service, an invalid policy on reload...); 2 bad
usage; 3 nothing is listening or it stopped answering.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from .._control.client import (
    ControlClient,
    ControlError,
    ControlUnavailableError,
    find_control_path,
)
from .._words import count, event_line

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["COMMANDS", "format_event", "format_status_table", "register"]

#: The sub-commands :func:`register` adds (``nsup._cli`` loads this module for them alone).
COMMANDS = ("status", "start", "stop", "restart", "signal", "reload", "reopen-logs", "events")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

_EPILOG = (
    "the socket: --control PATH, else the one --policy FILE names, else $NSUP_CONTROL,\n"
    "else the only socket in the default directory ($XDG_RUNTIME_DIR/nsup, /run/nsup for root,\n"
    "else /tmp/nsup-UID).\n"
    "exit status: 0 done, 1 the supervisor refused (unknown service...), 2 bad usage,\n"
    "3 nothing listening."
)


def _err(message: str) -> None:
    print(f"nsup: {message}", file=sys.stderr)  # noqa: T201 - the CLI's own error line


def _out(text: str) -> None:
    print(text, flush=True)  # noqa: T201 - the command's answer


def _add(
    subparsers: Any,
    name: str,
    help_text: str,
    func: Callable[[argparse.Namespace], int],
    timeout: float | None,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--control", metavar="PATH", help="the control socket of the nsup run to talk to"
    )
    where.add_argument("--policy", metavar="FILE", help="talk to the nsup run of this policy")
    parser.add_argument(
        "--timeout",
        type=float,
        default=timeout,
        metavar="SECONDS",
        help="give up waiting for the answer after this long"
        + (f" (default {timeout:g})" if timeout else " (default: wait)"),
    )
    parser.set_defaults(func=func)
    return parser


def register(subparsers: Any) -> None:
    """Add the control sub-commands to *subparsers*."""
    status = _add(subparsers, "status", "show the services of a running nsup", _status, 10.0)
    status.add_argument(
        "names", nargs="*", metavar="NAME", help="only these services (default: all)"
    )
    status.add_argument("--json", action="store_true", help="print the full answer as JSON")
    for name, verb in (("start", "start"), ("stop", "stop"), ("restart", "restart")):
        parser = _add(
            subparsers,
            name,
            f"{verb} services of a running nsup and wait until done",
            _action,
            None,
        )
        parser.add_argument("names", nargs="+", metavar="NAME")
        parser.set_defaults(cmd=name)
    sig = _add(
        subparsers, "signal", "send a signal to every running instance of a service", _signal, 10.0
    )
    sig.add_argument("name", metavar="NAME")
    sig.add_argument("signal", metavar="SIG", help="a name (HUP, SIGHUP) or a number")
    _add(
        subparsers, "reload", "make a running nsup re-read its policy (like SIGHUP)", _reload, None
    )
    _add(
        subparsers,
        "reopen-logs",
        "make a running nsup reopen every service log file (like SIGUSR1), after logrotate",
        _reopen_logs,
        None,
    )
    events = _add(subparsers, "events", "follow the event stream of a running nsup", _events, 10.0)
    events.add_argument("--json", action="store_true", help="one JSON object per event")


def _call(args: argparse.Namespace, body: Callable[[ControlClient], int]) -> int:
    try:
        path = find_control_path(args.control, args.policy)
    except ControlUnavailableError as exc:
        _err(str(exc))
        return EXIT_UNAVAILABLE
    except (ValueError, OSError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    try:
        with ControlClient(path, args.timeout) as client:
            return body(client)
    except ControlUnavailableError as exc:
        _err(str(exc))
        return EXIT_UNAVAILABLE
    except ControlError as exc:
        _err(str(exc))
        return EXIT_ERROR


# --- status -------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    """Say *seconds* briefly: ``42s``, ``3m07s``, ``2h05m``, ``4d03h``; ``-`` for None."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_last_exit(service: dict[str, Any]) -> str:
    """Say how the last run ended: ``exited with code 3``, ``killed by SIGKILL (oom)``, or ``-``."""
    last = service.get("last_exit")
    reason = service.get("last_reason") or ""
    if last is None:
        return f"- ({reason})" if reason else "-"
    if last.get("signal") is not None:
        try:
            name = signal.Signals(last["signal"]).name
        except ValueError:
            name = f"signal {last['signal']}"
        text = f"killed by {name}"
    else:
        text = f"exited with code {last.get('code')}"
    if last.get("core_dumped"):
        text += " (core dumped)"
    if not reason and last.get("oom_killed"):
        reason = "oom"
    return f"{text} ({reason})" if reason else text


def format_status_table(services: list[dict[str, Any]]) -> str:
    """Return the ``nsup status`` table: name, state, pid, init pid, uptime, restarts, last exit."""
    rows = [("NAME", "STATE", "PID", "INIT", "UPTIME", "RESTARTS", "LAST EXIT")]
    for s in services:
        state = s["state"] + (" (ready)" if s.get("ready") and s["state"] != "up" else "")
        rows.append(
            (
                s["name"],
                state,
                str(s["pid"]) if s.get("pid") is not None else "-",
                str(s["init_pid"]) if s.get("init_pid") is not None else "-",
                format_duration(s.get("uptime")),
                str(s.get("restarts", 0)),
                format_last_exit(s),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    )


def _status(args: argparse.Namespace) -> int:
    def body(client: ControlClient) -> int:
        reply = client.request("status", names=args.names)
        if args.json:
            answer = {"supervisor": reply["supervisor"], "services": reply["services"]}
            _out(json.dumps(answer, indent=2))
        else:
            _out(format_status_table(reply["services"]))
        return EXIT_OK

    return _call(args, body)


# --- actions ----------------------------------------------------------------------------


def _action(args: argparse.Namespace) -> int:
    def body(client: ControlClient) -> int:
        client.request(args.cmd, names=args.names)
        return EXIT_OK

    return _call(args, body)


def _parse_signal(text: str) -> int | None:
    if text.isdigit():
        return int(text) if 0 < int(text) < signal.NSIG else None
    name = text.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    return int(signal.Signals[name]) if name in signal.Signals.__members__ else None


def _signal(args: argparse.Namespace) -> int:
    signo = _parse_signal(args.signal)
    if signo is None:
        _err(f"unknown signal {args.signal!r}; give a name such as HUP or SIGUSR1, or a number")
        return EXIT_USAGE

    def body(client: ControlClient) -> int:
        reply = client.request("signal", name=args.name, signal=signo)
        _out(f"sent {reply['signal']} to {count(reply['sent'], 'instance')} of {reply['name']}")
        return EXIT_OK

    return _call(args, body)


def _reload(args: argparse.Namespace) -> int:
    def body(client: ControlClient) -> int:
        reply = client.request("reload")
        outcome = {k: reply.get(k) or [] for k in ("changed", "removed", "added")}
        summary = (
            "; ".join(f"{k}: {', '.join(v)}" for k, v in outcome.items() if v) or "nothing changed"
        )
        _out(f"reloaded ({summary})")
        return EXIT_OK

    return _call(args, body)


def _reopen_logs(args: argparse.Namespace) -> int:
    def body(client: ControlClient) -> int:
        reply = client.request("reopen-logs")
        _out(f"reopened {len(reply.get('files') or [])} log files")
        return EXIT_OK

    return _call(args, body)


# --- events ----------------------------------------------------------------------------------


def format_event(event: dict[str, Any]) -> str:
    """Return one line for *event*: ``12:03:04 web: killed by SIGTERM``."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.get("time", time.time())))
    return f"{stamp} {event_line(event)}"


def _events(args: argparse.Namespace) -> int:
    def body(client: ControlClient) -> int:
        try:
            for event in client.events():
                event.pop("v", None)
                _out(json.dumps(event) if args.json else format_event(event))
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:  # `nsup events | head`
            return EXIT_OK
        return EXIT_OK

    return _call(args, body)
