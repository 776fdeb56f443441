"""``nsup run POLICY.toml``: supervise a policy in the foreground.

Signals: SIGTERM and SIGINT stop every service gracefully (dependents first)
and exit 0; SIGHUP re-reads the policy and applies only what changed (an
invalid new policy is reported and the old one keeps running).  nsup makes
itself a child subreaper (as PID 1 of a container it is one already) and
reaps every orphan that is reparented to it: its own children are made with
``exit_signal = 0`` and are invisible to that ``waitid(P_ALL)``, so the
orphan reaper can never steal their statuses.

Exit codes: 0 after a clean shutdown or when every service has ended and
none will restart; 1 when nsup gave up (restart intensity exceeded); 2 for an
invalid policy or bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
from typing import TYPE_CHECKING, Any

import trio

from . import _sys
from ._errors import PolicyError
from ._output import prefix_writer
from ._policy import load_policy
from ._supervisor import Supervisor

if TYPE_CHECKING:
    from ._events import Event

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``run`` sub-command to *subparsers*."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="supervise a policy in the foreground",
        description="Start the services of POLICY.toml and keep them running by its rules.",
        epilog="signals: TERM/INT stop gracefully and exit 0; HUP reloads the policy.\n"
        "exit status: 0 clean stop, 1 gave up (restart intensity exceeded), 2 invalid policy.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("policy", metavar="POLICY.toml")
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="nsup's own event lines on stderr"
    )
    parser.set_defaults(func=run)


class _Logger:
    def __init__(self, fmt: str) -> None:
        self.fmt = fmt

    def line(self, message: str, **fields: Any) -> None:
        if self.fmt == "json":
            print(json.dumps({"event": "log", "message": message, **fields}), file=sys.stderr, flush=True)  # noqa: T201
        else:
            print(f"nsup: {message}", file=sys.stderr, flush=True)  # noqa: T201

    def event(self, event: Event) -> None:
        if self.fmt == "json":
            print(json.dumps(event.to_dict()), file=sys.stderr, flush=True)  # noqa: T201
        else:
            print(f"nsup: {event}", file=sys.stderr, flush=True)  # noqa: T201


def _raise_nofile() -> None:
    """Let a thousand services have their pidfds and pipes: soft NOFILE up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _reap_orphans() -> None:
    """Reap every exited orphan; our own clone children are not visible to this."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            return
        if info is None:
            return


async def _log_events(sup: Supervisor, log: _Logger) -> None:
    async for event in sup.events():
        log.event(event)


async def _reload(sup: Supervisor, path: str, log: _Logger) -> None:
    try:
        policy = load_policy(path)
    except (PolicyError, OSError) as exc:
        log.line(f"reload of {path} refused; the running policy stays: {exc}")
        return
    outcome = await sup.reload(policy)
    summary = ", ".join(f"{k}: {', '.join(v)}" for k, v in outcome.items() if v) or "nothing changed"
    log.line(f"reloaded {path} ({summary})")


async def _main(path: str, log: _Logger) -> int:
    policy = load_policy(path)
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
    with trio.open_signal_receiver(*signals) as receiver:
        async with trio.open_nursery() as nursery:
            sup = Supervisor(policy, nursery, prefix_writer())
            nursery.start_soon(_log_events, sup, log)
            log.line(
                f"running {path}: {len(policy.expanded())} services, pid {os.getpid()}",
                pid=os.getpid(),
            )
            nursery.start_soon(sup.start_all)

            async def handle_signals() -> None:
                async for signo in receiver:
                    if signo == signal.SIGCHLD:
                        _reap_orphans()
                    elif signo == signal.SIGHUP:
                        nursery.start_soon(_reload, sup, path, log)
                    else:
                        log.line(f"{signal.Signals(signo).name}: stopping every service")
                        await sup.stop_all()

            nursery.start_soon(handle_signals)
            await sup.done.wait()
            with trio.CancelScope(shield=True):
                await sup.stop_all()  # after a give-up: make sure everything is down
            nursery.cancel_scope.cancel()
    if sup.gave_up is not None:
        log.line(str(sup.gave_up), service=sup.gave_up.service)
        return 1
    log.line("every service is down; exiting")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``nsup run``; return the exit code."""
    log = _Logger(args.log_format)
    try:
        load_policy(args.policy)
    except PolicyError as exc:
        for issue in exc.errors:
            log.line(str(issue))
        return 2
    except OSError as exc:
        log.line(f"cannot read policy {args.policy}: {exc.strerror}")
        return 2
    _raise_nofile()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # an inherited SIG_IGN would auto-reap ours
    if os.getpid() != 1:
        _sys.prctl(_sys.PR_SET_CHILD_SUBREAPER, 1)
    return trio.run(_main, args.policy, log)
