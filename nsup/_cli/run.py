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
none will restart; 1 when nsup gave up (restart intensity exceeded), or when
every service has ended and some are ``failed``; 2 for an invalid policy or
bad usage; 70 (EX_SOFTWARE) after an unexpected internal error: every service
is stopped within its stop timeout, the traceback is printed, and nsup exits.
It never hangs (docs/failure-model.md).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import sys
import traceback
from typing import TYPE_CHECKING, Any

import trio

from .._cgroup import remove_stale_trees
from .._clone import syscalls as _sys
from .._control.client import resolve_control_path
from .._control.http import HealthServer, open_health_socket
from .._control.sd_notify import ParentNotifier
from .._control.server import BoundSocket, ControlServer, bind_control_socket
from .._engine.descriptors import descriptors_needed, raise_nofile
from .._engine.output import FdWriter, PrefixView, escape
from .._engine.supervisor import PROBE_CONCURRENCY, SPAWN_CONCURRENCY, Supervisor
from .._errors import PolicyError
from .._policy import load_policy
from .._policy.preflight import preflight
from .._rundir import remove_stale_runtime_dirs
from .._words import count
from .._zygote_client import OWNED, hold_zygotes, zygote_pids
from . import RUN_HELP

if TYPE_CHECKING:
    import socket

    from .._engine.events import Event
    from .._policy import Policy

__all__ = ["register", "run"]

STDERR_WAIT = 2.0  # seconds a line may wait for stderr outside the event loop
OUTPUT_FLUSH = 1.0  # seconds nsup waits at exit for stdout and stderr to take what is queued


def register(subparsers: Any) -> None:
    """Add the ``run`` sub-command to *subparsers*."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help=RUN_HELP,
        description="Start the services of POLICY.toml and keep them running by its rules.",
        epilog="signals: TERM/INT/QUIT stop gracefully and exit 0; HUP reloads the policy; "
        "USR1 reopens the log files.\n"
        "exit status: 0 clean stop, 1 gave up (restart intensity exceeded) or every service\n"
        "ended and some failed, 2 invalid policy, 70 internal error (every service stopped).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("policy", metavar="POLICY.toml")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="nsup's own event lines on stderr, and service lines on stdout, as text or JSON",
    )
    parser.add_argument(
        "--control",
        metavar="PATH",
        help="control socket path (overrides [supervisor] control; default printed at start)",
    )
    parser.set_defaults(func=run)


class _Logger:
    """nsup's own lines on stderr, through a bounded non-blocking writer (see ``output.py``).

    While trio runs, the writer's task drains it; before and after, each line
    is written at once, waiting at most :data:`STDERR_WAIT` seconds for a
    stalled reader.
    """

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.err = FdWriter(2)
        self.err.on_drop = lambda _source, n: self.line(f"dropped {n} of nsup's own lines")
        self.live = False  # the writer's task runs

    def _put(self, text: str) -> None:
        self.err.put("nsup", text.encode("utf-8", "replace") + b"\n")
        if not self.live:
            self.err.write_now(STDERR_WAIT)

    def line(self, message: str, **fields: Any) -> None:
        if self.fmt == "json":
            self._put(json.dumps({"event": "log", "message": message, **fields}))
        else:
            self._put(f"nsup: {escape(message)}")

    def event(self, event: Event) -> None:
        if self.fmt == "json":
            self._put(json.dumps(event.to_dict()))
        else:
            self._put(f"nsup: {escape(str(event))}")

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.live = True
        try:
            task_status.started()
            await self.err.run()
        finally:
            self.live = False


def _raise_nofile(policy: Policy, log: _Logger) -> None:
    """Raise RLIMIT_NOFILE for *policy* (see ``_engine/descriptors.py``); say so if it falls short."""
    if short := raise_nofile(descriptors_needed(policy, SPAWN_CONCURRENCY, PROBE_CONCURRENCY)):
        log.line(short)


GC_YOUNG = 10_000  # allocations between young collections (Python's default is 700)


def _tune_gc() -> None:
    """Collect cycles less often: thousands of services keep tens of thousands of objects alive.

    What is loaded by now (modules, the policy) is frozen out of every
    collection; young collections come after 10,000 allocations, not 700.
    With 1,000 services this halves the supervisor's CPU time in the cycle
    collector at start-up (bench/run.py); garbage cycles still go, later.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


EXIT_INTERNAL_ERROR = 70  # EX_SOFTWARE, as sysexits.h


def _remove_leftovers(log: _Logger) -> None:
    """Kill and remove what a supervisor killed by SIGKILL left: cgroups, runtime directories."""
    bases, killed = remove_stale_trees()
    dirs = remove_stale_runtime_dirs()
    if bases or dirs:
        what = [f"cgroups {', '.join(bases)} ({killed} processes killed)"] if bases else []
        what += [f"runtime directories {', '.join(dirs)}"] if dirs else []
        log.line(f"removed what a dead nsup left behind: {'; '.join(what)}")


def reap_orphans() -> None:
    """Reap every exited child that is not ours (see the module docstring).

    Out of descriptors, the listing fails: the next SIGCHLD tries again.
    """
    try:
        children = set(_sys.children())
    except OSError:
        return
    for pid in children - OWNED - zygote_pids():
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            pass


async def _reap_orphans_when_safe() -> None:
    async with hold_zygotes():  # no clone in flight while we look
        reap_orphans()


def _load_for_reload(path: str) -> Policy:
    """Load the new policy; any failure to read it is a refused reload, never a crash.

    Raises:
        PolicyError, OSError: the new policy is invalid or unreadable.

    """
    try:
        return load_policy(path)
    except (PolicyError, OSError):
        raise
    except (RecursionError, MemoryError, ValueError, TypeError) as exc:
        # A pathological file (a 3,000-deep nested table) must not end nsup.
        issue = f"{path}: cannot load the policy: {type(exc).__name__}: {exc}"
        raise PolicyError([issue]) from exc


async def _reload(
    sup: Supervisor, path: str, log: _Logger, parent: ParentNotifier
) -> dict[str, list[str]]:
    """Re-read *path* and apply it; SIGHUP and the control socket's ``reload`` both come here.

    ``Supervisor.reload`` applies one reload at a time, whoever asked.

    Raises:
        PolicyError, OSError: the new policy is invalid or unreadable; the old one stays.

    """
    parent.reloading()
    try:
        try:
            policy = _load_for_reload(path)
        except (PolicyError, OSError) as exc:
            log.line(f"reload of {path} refused; the running policy stays: {exc}")
            raise
        before = sup.policy.supervisor
        _raise_nofile(policy, log)  # more services may need more descriptors
        outcome = await sup.reload(policy)
    finally:
        parent.reloaded()
    summary = (
        ", ".join(f"{k}: {', '.join(v)}" for k, v in outcome.items() if v) or "nothing changed"
    )
    # The control socket and the health endpoint are bound once, at start.
    kept = [k for k in ("control", "health") if getattr(before, k) != getattr(policy.supervisor, k)]
    if kept:
        keys = " and ".join(f"[supervisor] {k}" for k in kept)
        summary += f"; {keys} changed, which takes effect only when nsup starts"
    log.line(f"reloaded {path} ({summary})")
    return outcome


async def _reload_on_hup(sup: Supervisor, path: str, log: _Logger, parent: ParentNotifier) -> None:
    with contextlib.suppress(PolicyError, OSError):  # already reported
        await _reload(sup, path, log, parent)


def _reopen_logs(sup: Supervisor, log: _Logger) -> None:
    """SIGUSR1: reopen every service log file (after an external logrotate)."""
    errors = sup.reopen_logs()
    for error in errors:
        log.line(f"could not reopen a log file: {error}")
    log.line(f"reopened {len(sup._log_files())} log files")  # noqa: SLF001 - nsup's own front end


async def _main(
    path: str,
    log: _Logger,
    control: BoundSocket,
    health: socket.socket | None,
    parent: ParentNotifier,
) -> int:
    policy = load_policy(path)
    # SIGQUIT too: as PID 1 of a container, a signal nsup has no handler for is dropped.
    signals = (
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGQUIT,
        signal.SIGHUP,
        signal.SIGCHLD,
        signal.SIGUSR1,
    )
    with trio.open_signal_receiver(*signals) as receiver:
        async with trio.open_nursery() as nursery:
            await nursery.start(log.serve)
            out = FdWriter(1)
            out.on_drop = lambda name, n: log.line(f"dropped {n} lines of {name}", service=name)
            nursery.start_soon(out.run)
            view = PrefixView(out, timestamps=policy.supervisor.timestamps, json=log.fmt == "json")
            sup = Supervisor._create(policy, nursery, view)  # noqa: SLF001 - the metaclass's private constructor
            # A listener, not a subscription: nsup's own log is never dropped for lagging
            # (log.event only queues the line for the bounded stderr writer).
            sup._add_listener(log.event)  # noqa: SLF001 - nsup's own log
            log.line(
                f"running {path}: {count(len(policy.expanded()), 'service')}, pid {os.getpid()}",
                pid=os.getpid(),
            )
            server = ControlServer(
                sup,
                reload=lambda: _reload(sup, path, log, parent),
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
                        nursery.start_soon(_reload_on_hup, sup, path, log, parent)
                    elif signo == signal.SIGUSR1:
                        _reopen_logs(sup, log)
                    elif not server.stopping:
                        log.line(f"{signal.Signals(signo).name}: stopping every service")
                        server.stopping = True
                        parent.stopping()
                        nursery.start_soon(sup.stop_all)

            nursery.start_soon(handle_signals)
            await sup.wait_finished()
            signalled = server.stopping
            server.stopping = True  # /readyz is 503 from here on, whatever the cause
            parent.stopping(str(sup.gave_up) if sup.gave_up else "every service has ended")
            with trio.CancelScope(shield=True):
                await sup.stop_all()  # after a give-up: make sure everything is down
                with trio.move_on_after(OUTPUT_FLUSH):
                    await out.flush()
                    await log.err.flush()
            unreported = out.unreported()
            out.close()
            nursery.cancel_scope.cancel()
    for name, n in unreported.items():
        log.line(f"dropped {n} lines of {name}", service=name)
    return _exit_code(sup, log, stopped=signalled)


def _exit_code(sup: Supervisor, log: _Logger, *, stopped: bool) -> int:
    """Say why nsup ends, and return its exit code: 1 after a give-up or failures, else 0."""
    if sup.gave_up is not None:
        log.line(str(sup.gave_up), service=sup.gave_up.service)
        return 1
    failed = sup.failed()
    if failed and not stopped:
        log.line(f"every service has ended; failed: {', '.join(failed)}", failed=failed)
        return 1
    log.line("every service is down; exiting")
    return 0


def _log_preflight(policy: Policy, log: _Logger) -> None:
    """Say what ``nsup check`` would say about this host; the services start anyway."""
    found = preflight(policy)
    for issue in found.errors:
        log.line(f"error: {issue}")
    for issue in found.warnings:
        log.line(f"warning: {issue}")


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
    _log_preflight(policy, log)
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
    _raise_nofile(policy, log)
    _remove_leftovers(log)
    _tune_gc()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # an inherited SIG_IGN would auto-reap ours
    if os.getpid() != 1:
        _sys.prctl(_sys.PR_SET_CHILD_SUBREAPER, 1)
    try:
        return trio.run(_main, args.policy, log, control, health, parent)
    except Exception as exc:  # noqa: BLE001 - the failure model: any internal error ends nsup cleanly
        # Every service was stopped on the way out (each runner stops its own process).
        traceback.print_exception(exc, file=sys.stderr)
        log.line(
            f"internal error ({type(exc).__name__}); every service was stopped; exiting "
            f"{EXIT_INTERNAL_ERROR}"
        )
        return EXIT_INTERNAL_ERROR
    finally:
        parent.close()
        control.close()
        if health is not None:
            health.close()
