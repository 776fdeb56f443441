"""``nsup run POLICY.toml``: supervise a policy in the foreground.

Signals: SIGTERM, SIGINT and SIGQUIT stop every service gracefully (dependents first)
and exit 0; SIGHUP re-reads the policy and applies only what changed (an
invalid new policy is reported and the old one keeps running).  nsup makes
itself a child subreaper (as PID 1 of a container it is one already) and
reaps every orphan that is reparented to it.  It never waits for "any
child": on SIGCHLD it lists its children and reaps, by pid, only those that
are neither its zygote nor a child it holds a pidfd for (``OWNED``); while a
clone is in flight (the child exists, its pid is not known yet) it waits
for the reply, so a fast-dying new child is never mistaken for an orphan.

Exit codes: 0 after a clean shutdown or when every service has ended and
none will restart; 1 when nsup gave up (restart intensity exceeded); 2 for an
invalid policy or bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import sys
from typing import TYPE_CHECKING, Any

import trio

from .._clone import syscalls as _sys
from .._control.client import resolve_control_path
from .._control.http import HealthServer, open_health_socket
from .._control.sd_notify import ParentNotifier
from .._control.server import BoundSocket, ControlServer, bind_control_socket
from .._engine.output import prefix_writer
from .._engine.supervisor import Supervisor
from .._errors import PolicyError
from .._policy import load_policy
from .._zygote_client import OWNED, hold_zygotes, zygote_pids

if TYPE_CHECKING:
    import socket

    from .._engine.events import Event

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``run`` sub-command to *subparsers*."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="supervise a policy in the foreground",
        description="Start the services of POLICY.toml and keep them running by its rules.",
        epilog="signals: TERM/INT/QUIT stop gracefully and exit 0; HUP reloads the policy.\n"
        "exit status: 0 clean stop, 1 gave up (restart intensity exceeded), 2 invalid policy.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("policy", metavar="POLICY.toml")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="nsup's own event lines on stderr",
    )
    parser.add_argument(
        "--control",
        metavar="PATH",
        help="control socket path (overrides [supervisor] control; default printed at start)",
    )
    parser.set_defaults(func=run)


class _Logger:
    def __init__(self, fmt: str) -> None:
        self.fmt = fmt

    def line(self, message: str, **fields: Any) -> None:
        if self.fmt == "json":
            record = {"event": "log", "message": message, **fields}
            print(json.dumps(record), file=sys.stderr, flush=True)  # noqa: T201
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


def reap_orphans() -> None:
    """Reap every exited child that is not ours (see the module docstring)."""
    for pid in set(_sys.children()) - OWNED - zygote_pids():
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            pass


async def _reap_orphans_when_safe() -> None:
    async with hold_zygotes():  # no clone in flight while we look
        reap_orphans()


async def _log_events(sup: Supervisor, log: _Logger, drained: trio.Event) -> None:
    try:
        async for event in sup.events():  # ends once the supervisor closes its bus
            log.event(event)
    finally:
        drained.set()


async def _reload(
    sup: Supervisor, path: str, log: _Logger, lock: trio.Lock, parent: ParentNotifier
) -> dict[str, list[str]]:
    """Re-read *path* and apply it; SIGHUP and the control socket's ``reload`` both come here.

    Raises:
        PolicyError, OSError: the new policy is invalid or unreadable; the old one stays.

    """
    async with lock:  # one reload at a time, whoever asked
        parent.reloading()
        try:
            try:
                policy = load_policy(path)
            except (PolicyError, OSError) as exc:
                log.line(f"reload of {path} refused; the running policy stays: {exc}")
                raise
            outcome = await sup.reload(policy)
        finally:
            parent.reloaded()
    summary = (
        ", ".join(f"{k}: {', '.join(v)}" for k, v in outcome.items() if v) or "nothing changed"
    )
    log.line(f"reloaded {path} ({summary})")
    return outcome


async def _reload_on_hup(
    sup: Supervisor, path: str, log: _Logger, lock: trio.Lock, parent: ParentNotifier
) -> None:
    with contextlib.suppress(PolicyError, OSError):  # already reported
        await _reload(sup, path, log, lock, parent)


async def _main(
    path: str,
    log: _Logger,
    control: BoundSocket,
    health: socket.socket | None,
    parent: ParentNotifier,
) -> int:
    policy = load_policy(path)
    reload_lock = trio.Lock()
    # SIGQUIT too: as PID 1 of a container, a signal nsup has no handler for is dropped.
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD)
    with trio.open_signal_receiver(*signals) as receiver:
        async with trio.open_nursery() as nursery:
            sup = Supervisor(policy, nursery, prefix_writer())
            drained = trio.Event()
            nursery.start_soon(_log_events, sup, log, drained)
            log.line(
                f"running {path}: {len(policy.expanded())} services, pid {os.getpid()}",
                pid=os.getpid(),
            )
            server = ControlServer(
                sup,
                reload=lambda: _reload(sup, path, log, reload_lock, parent),
                policy_path=path,
                log=log.line,
            )
            nursery.start_soon(server.serve, control.sock)
            log.line(f"control socket {control.path}", control=control.path)
            if health is not None:
                host, port = health.getsockname()[:2]
                nursery.start_soon(
                    HealthServer(sup, lambda: server.stopping, log.line).serve, health
                )
                log.line(f"health endpoint http://{host}:{port}/ (/healthz, /readyz, /metrics)")
            nursery.start_soon(parent.serve, sup, lambda: server.stopping)  # start_all, READY=1

            async def handle_signals() -> None:
                async for signo in receiver:
                    if signo == signal.SIGCHLD:
                        await _reap_orphans_when_safe()
                    elif signo == signal.SIGHUP:
                        nursery.start_soon(_reload_on_hup, sup, path, log, reload_lock, parent)
                    else:
                        log.line(f"{signal.Signals(signo).name}: stopping every service")
                        server.stopping = True
                        parent.stopping()
                        await sup.stop_all()

            nursery.start_soon(handle_signals)
            await sup.done.wait()
            server.stopping = True  # /readyz is 503 from here on, whatever the cause
            parent.stopping(str(sup.gave_up) if sup.gave_up else "every service has ended")
            with trio.CancelScope(shield=True):
                await sup.stop_all()  # after a give-up: make sure everything is down
                with trio.move_on_after(5):
                    await drained.wait()  # every event line written before we exit
            nursery.cancel_scope.cancel()
    if sup.gave_up is not None:
        log.line(str(sup.gave_up), service=sup.gave_up.service)
        return 1
    log.line("every service is down; exiting")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``nsup run``; return the exit code."""
    log = _Logger(args.log_format)
    parent = ParentNotifier.from_environ(log=log.line)  # services never see NOTIFY_SOCKET
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:
        for issue in exc.errors:
            log.line(str(issue))
        return 2
    except OSError as exc:
        log.line(f"cannot read policy {args.policy}: {exc.strerror}")
        return 2
    control_path = args.control or resolve_control_path(policy.supervisor.control, args.policy)
    try:
        # Before any service starts: never two supervisors on one socket.
        control = bind_control_socket(control_path)
    except OSError as exc:
        log.line(exc.strerror or f"cannot create control socket {control_path}: {exc}")
        return 2
    health = None
    if policy.supervisor.health is not None:
        try:
            health = open_health_socket(*policy.supervisor.health)
        except OSError as exc:
            control.close()
            log.line(exc.strerror or str(exc))
            return 2
    _raise_nofile()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # an inherited SIG_IGN would auto-reap ours
    if os.getpid() != 1:
        _sys.prctl(_sys.PR_SET_CHILD_SUBREAPER, 1)
    try:
        return trio.run(_main, args.policy, log, control, health, parent)
    finally:
        parent.close()
        control.close()
        if health is not None:
            health.close()
