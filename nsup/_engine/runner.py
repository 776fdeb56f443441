"""One service instance's runner: it drives the ``restart`` table with real events.

A runner owns one task that reads its inbox: inputs from the supervisor
(START, STOP, RESTART) and from its own helper tasks (READY, PROBE_FAILED,
the exit, DELAY_DONE, FAIL).  For each it looks up ``transition(state,
input)`` and performs the action; actions that take time (waiting for
dependencies, spawning, stopping, the backoff delay) run as tasks that report
back through the inbox, so the runner always answers a STOP at once.

Each run of the process is one *generation*; inputs carry the generation they
belong to, and those from an older one are dropped (a READY from a process
that has already exited, say).

The runner knows its supervisor only through :class:`RunnerHost`, the small
record of the supervisor's private methods defined here: emit an event, write
an output line, look up a dependency, decide what follows an exit.  Neither
side touches the other's private state.

Failures (see docs/failure-model.md):

- A spawn error that will fail the same way every time (command not found,
  permission denied, a namespace the kernel refuses, a bad bind source or
  log path) puts the instance in the terminal ``failed`` state at once.  A
  transient one (out of descriptors or memory, the zygote gone) is retried
  like a crash, with backoff (a failed start has an uptime of 0).
- An unexpected exception anywhere in the runner's tasks (an ``output``
  callback that raises, a bug) also ends in ``failed``, with the error in the
  status and in a ``failed`` event; the runner's task ends, its process is
  stopped, the rest of the supervisor runs on.
- The runner is never shielded.  When it is cancelled (the code that owns
  the supervisor was cancelled), its last act, shielded and bounded by the
  stop timeouts, waits for the processes of its dependents to go, then stops
  its own: nothing is left running and the dependency order holds.
"""

from __future__ import annotations

import errno as _errno
import math
import os
import time
import traceback
from typing import TYPE_CHECKING, Any, Literal, final

import attrs
import trio

from .._cgroup import CgroupStatistics
from .._errors import SpawnError
from .._exitstatus import ExitStatus
from .._process import Process, oom_kills, start_process, wait_command
from . import conditions
from .events import Event, EventKind
from .notify import NotifySocket
from .output import Line, Stream, pump_lines
from .prepare import prepare
from .probes import RETRY_INTERVAL, LogMatcher, exec_probe, tcp_once, tcp_until
from .restart import Action, BackoffCounter, Input, State, transition, wants_restart
from .service_spec import spec_for

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from .._policy import ServiceInstance
    from .._policy.model import OutputFile, Socket

__all__ = ["Decision", "Runner", "RunnerHost", "ServiceStatus", "permanent_error"]

Decision = Literal["restart", "group", "give_up", "fail"]
"""What follows an exit the restart rule wants restarted (see ``RunnerHost.on_exit``)."""

TERMINAL = frozenset({State.ENDED, State.FAILED})
QUIET = frozenset({State.DOWN, State.ENDED, State.FAILED})

# Errors a retry cannot cure: the same spawn fails the same way every time.
_PERMANENT_ERRNOS = frozenset(
    {
        _errno.ENOENT,
        _errno.EACCES,
        _errno.EPERM,
        _errno.ENOEXEC,
        _errno.ENOTDIR,
        _errno.EISDIR,
        _errno.ELOOP,
        _errno.ENAMETOOLONG,
        _errno.EXDEV,
        _errno.EINVAL,
        _errno.EROFS,
    }
)


def permanent_error(exc: OSError) -> bool:
    """True if retrying the spawn that raised *exc* would fail the same way.

    Running out of descriptors, memory or processes, and a zygote that died,
    are transient; a missing command or path, a refused permission or
    namespace are not.
    """
    if isinstance(exc, SpawnError) and exc.stage == "zygote":
        return False
    return exc.errno in _PERMANENT_ERRNOS


@final
@attrs.frozen
class RunnerHost:
    """What a runner may ask of the supervisor that hosts it: the supervisor's own private methods.

    Handing runners this record, not the supervisor itself, keeps the interface
    off ``Supervisor``'s public surface.

    Attributes:
        notify_dir: a private directory for notify sockets.
        spawn_limiter: bounds the spawns in flight, and so the descriptors they hold.
        probe_limiter: bounds the exec probes running at once, likewise.
        emit: publish an event to every subscriber; never blocks, never raises.
        output: write one line a service printed (it may raise: the runner fails, not the host).
        log_sink: where lines of one stream go, by its ``stdout``/``stderr`` setting and pid.
        output_opened: an output pipe of the named instance is being read (the host waits
            for them at shutdown, and when it removes the instance).
        output_closed: an output pipe of the named instance reached EOF or was dropped.
        dependency: the current runner of instance *name*, if there is one.
        dependents: the runners whose instance depends on *name*.
        listen_fds: the bound sockets of a service (its *specs*) as ``(name, fd)``, bound at
            the first call and held; raises ``nsup.SpawnError`` when one cannot be bound.
        wait_runners_changed: return when a runner was added or replaced.
        on_exit: decide what follows an exit of a runner that its restart rule wants
            restarted; returns the decision and, for ``fail``, why.
        state_changed: called after every change of a runner's state.

    """

    notify_dir: str
    spawn_limiter: trio.CapacityLimiter
    probe_limiter: trio.CapacityLimiter
    emit: Callable[[Event], None]
    output: Callable[[Line], None]
    log_sink: Callable[[str | OutputFile, int], Callable[[Line], None]]
    output_opened: Callable[[str], None]
    output_closed: Callable[[str], None]
    dependency: Callable[[str], Runner | None]
    dependents: Callable[[str], list[Runner]]
    listen_fds: Callable[[str, Sequence[Socket]], list[tuple[str, int]]]
    wait_runners_changed: Callable[[], Awaitable[None]]
    on_exit: Callable[[Runner], tuple[Decision, str]]
    state_changed: Callable[[Runner], None]


@final
@attrs.frozen
class ServiceStatus:
    """A snapshot of one instance, as ``Supervisor.status()`` and ``nsup status`` show it.

    Attributes:
        name: the instance name.
        state: ``down``, ``starting``, ``up``, ``stopping``, ``restarting``,
            ``backoff``, ``ended`` or ``failed``; or ``blocked`` while it waits
            for a dependency that cannot meet its condition (see ``blocked``).
        pid: the command's pid (in nsup's PID namespace) while it runs;
            with nsup's init that is the init's child, not the init.
        init_pid: the pid of nsup's init while it runs, or None (``init =
            false``, or not running).
        started_at: ``time.time()`` of the last start, or None.
        restarts: every restart so far: after an exit its restart rule
            wanted, as part of a ``one_for_all`` / ``rest_for_one`` group
            (each instance of the group counts one), a manual ``restart()``
            / ``nsup restart``, and following its ``namespaces_from`` owner.
            A ``start()`` after it was stopped or ended is not a restart.
        last_exit: how the last run ended, or None.
        last_reason: why nsup ended or restarted it last (``"health"``,
            ``"ready timeout"``, ``"spawn failed"``, ``"oom"``...), or ``""``.
        ready: True while it is up and ready.
        status_text: the last ``STATUS=`` it sent over its notify socket.
        error: why it is ``failed`` (a permanent spawn error, its give-up, or
            an internal error), else ``""``.
        cpu_seconds, memory_bytes, memory_peak_bytes, tasks: what the running
            process's cgroup has counted (CPU time and peak memory of this
            run), or None where no cgroup hierarchy counts it or nothing runs.
        oom_kills: processes of this service the kernel's OOM killer ended.
        blocked: while ``blocked``, why: which dependency it waits for, and
            why that cannot happen as things stand; else ``""``.
        completed: it ended successfully (exit 0 or one of its
            ``success_codes``) and is left ended: a oneshot that is done.
    """

    name: str
    state: str
    pid: int | None
    started_at: float | None
    restarts: int
    last_exit: ExitStatus | None
    last_reason: str
    ready: bool
    status_text: str
    error: str = ""
    init_pid: int | None = None
    cpu_seconds: float | None = None
    memory_bytes: int | None = None
    memory_peak_bytes: int | None = None
    tasks: int | None = None
    oom_kills: int = 0
    blocked: str = ""
    completed: bool = False

    @property
    def uptime(self) -> float | None:
        """Seconds since the last start while it runs, else None."""
        if self.pid is None or self.started_at is None:
            return None
        return max(0.0, time.time() - self.started_at)


def host_pid_of_child(parent: int, inner_pid: int) -> int | None:
    """The pid, in nsup's PID namespace, of *parent*'s descendant whose own pid is *inner_pid*.

    nsup's init reports the command's pid as it sees it (``S<pid>`` on its
    report pipe), in the init's own PID namespace: inside a new one that is
    usually 2 and the process's ``NSpid`` (innermost last) maps it back; an
    init that joined another's namespace (a sidecar) sees nsup's pids.
    Children first, then their children; None if it is gone.
    """
    if inner_pid in _children(parent):
        return inner_pid
    level = [parent]
    for _ in range(3):
        below = [c for p in level for c in _children(p)]
        for child in below:
            if _inner_pid(child) == inner_pid:
                return child
        level = below
    return None


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _inner_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            nspid = next((line.split()[1:] for line in f if line.startswith("NSpid:")), [])
    except OSError:
        return None
    return int(nspid[-1]) if nspid else None


def _describe(exc: BaseException) -> str:
    """``internal error: ValueError: text (at file.py:12 in func)`` for an unexpected exception."""
    leaf = exc
    while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]
    where = ""
    frames = traceback.extract_tb(leaf.__traceback__)
    if frames:
        last = frames[-1]
        where = f" (at {os.path.basename(last.filename)}:{last.lineno} in {last.name})"
    return f"internal error: {type(leaf).__name__}: {leaf}{where}"


class Runner:
    """Runs one :class:`ServiceInstance` under the restart table, for a :class:`RunnerHost`."""

    def __init__(self, host: RunnerHost, instance: ServiceInstance) -> None:
        """Prepare (but do not start) the runner for *instance*."""
        self._host = host
        self.instance = instance
        self.name = instance.name
        self.state = State.DOWN
        self.proc: Process | None = None
        self.generation = 0
        self.started_at: float | None = None
        self._started_mono: float | None = None  # None: the last start never ran
        self.restarts = 0
        self.last_exit: ExitStatus | None = None
        self.last_reason = ""
        self.status_text = ""
        self.error = ""
        self.blocked_on: str | None = None  # a dependency that ended or failed
        self.blocked_why = ""  # and why it cannot meet what this instance waits for
        self.healthy = False  # its health probe has passed since this run started
        self._joined: Process | None = None  # the namespace owner's process this run entered
        self._rejoin = False  # this run ended because its namespace owner's did
        self.finished = False  # the runner's task has ended
        self.traceback = ""  # the full traceback of an internal error, for debugging
        self.oom_kills = 0  # in runs that have ended
        self._changed = trio.Event()
        self._backoff = BackoffCounter(instance.spec.backoff)
        self._send, self._inbox = trio.open_memory_channel[tuple[Input, int | None, Any]](math.inf)
        self._abort: trio.CancelScope | None = None
        self._delay_scope: trio.CancelScope | None = None
        self._restart_reason = ""
        self._exit_reason = ""  # why nsup is ending the current run, for last_reason
        self._nursery: trio.Nursery | None = None
        self._scope = trio.CancelScope()
        self._crashed = False
        self._command_pid_of: tuple[int, int] | None = None  # (init pid, command pid) cached
        self._command_host_pid: int | None = None
        self._reaping: set[Process] = set()  # ended runs whose init is still exiting

    # --- what the host calls --------------------------------------------------

    def send(self, event: Input, generation: int | None = None, payload: Any = None) -> None:
        """Queue an input; *generation* (if given) drops it once that run is over."""
        self._send.send_nowait((event, generation, payload))

    def snapshot(self) -> ServiceStatus:
        """The current :class:`ServiceStatus`."""
        running = self.proc is not None and self.proc.status is None
        stats = self.proc.statistics() if running and self.proc is not None else CgroupStatistics()
        return ServiceStatus(
            name=self.name,
            state="blocked" if self.blocked_on is not None else self.state.value,
            pid=self._command_pid() if running else None,
            init_pid=self.proc.pid
            if running and self.proc is not None and self.proc.command_pid
            else None,
            started_at=self.started_at,
            restarts=self.restarts,
            last_exit=self.last_exit,
            last_reason=self.last_reason,
            ready=self.state is State.UP,
            status_text=self.status_text,
            error=self.error,
            cpu_seconds=stats.cpu_seconds,
            memory_bytes=stats.memory_bytes,
            memory_peak_bytes=stats.memory_peak_bytes,
            tasks=stats.pids,
            oom_kills=self.oom_kills + stats.oom_kills,
            blocked=self.blocked_why,
            completed=conditions.completed(self),
        )

    def _command_pid(self) -> int | None:
        """The command's pid in nsup's PID namespace (with an init, the init's child)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.command_pid is None:  # no init: the process is the command
            return proc.pid
        if self._command_pid_of != (proc.pid, proc.command_pid):
            self._command_pid_of = (proc.pid, proc.command_pid)
            self._command_host_pid = host_pid_of_child(proc.pid, proc.command_pid)
        return self._command_host_pid

    @property
    def running(self) -> bool:
        """True while a process of this runner exists (not yet reaped)."""
        return self.proc is not None

    @property
    def settled(self) -> bool:
        """Up, ended, failed, finished, or waiting for a dependency that ended or failed."""
        return self.state in (State.UP, *TERMINAL) or self.finished or self.blocked_on is not None

    @property
    def reaping(self) -> bool:
        """An ended run's init is still exiting (its command has exited and nothing of it is left)."""
        return bool(self._reaping)

    @property
    def quiet(self) -> bool:
        """Nothing runs and nothing is scheduled, every process is reaped (or the task has ended)."""
        return self.finished or (self.state in QUIET and self.proc is None and not self._reaping)

    def send_signal(self, signo: int) -> bool:
        """Send *signo* to the running process; return whether there was one."""
        if self.proc is None or self.proc.status is not None:
            return False
        self.proc.send_signal(signo)
        return True

    def next_backoff(self) -> float:
        """Count a restart against this instance's backoff and return its delay."""
        return self._backoff.next_delay(self._uptime())

    def count_restart(self) -> None:
        """Record a restart made on this instance's behalf (group restarts)."""
        self.restarts += 1

    async def wait_for(self, predicate: Callable[[Runner], bool]) -> None:
        """Wait until ``predicate(self)`` holds (checked at every change)."""
        while not predicate(self):
            await self._changed.wait()

    async def wait_ready(self) -> None:
        """Wait until this instance is up and ready (again, after any restart)."""
        await self.wait_for(lambda r: r.state is State.UP)

    async def run(self) -> None:
        """The runner's task: read the inbox until :meth:`close` or cancellation.

        Not shielded.  An exception in any of its tasks fails this instance
        (state ``failed``, a ``failed`` event) and ends the task; a
        cancellation ends it too.  Either way the process is stopped before
        it returns (see the module docstring).
        """
        try:
            with self._scope:
                try:
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        await self._loop()
                except* Exception as group:  # noqa: BLE001 - any error fails this instance only (the failure model)
                    self._crash(group)
        finally:
            with trio.CancelScope(shield=True):
                await self._teardown()
            self.finished = True
            if self._crashed:  # announced once its process is gone
                self._publish("failed", message=self.error)
            self._notify()

    def close(self) -> None:
        """End the runner's task and every task it started (its process is stopped)."""
        self._scope.cancel()

    # --- the loop -------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
        self._host.state_changed(self)

    async def _loop(self) -> None:
        async for first in self._inbox:
            item = first
            while True:
                self._step(*item)
                # Inputs an action queued (a restart without delay queues its start)
                # are taken now, not after another trip through trio's scheduler.
                try:
                    item = self._inbox.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break  # nothing queued (an ended channel ends the loop above)

    def _step(self, event: Input, generation: int | None, payload: Any) -> None:
        """Feed one input to the table and perform its action."""
        if generation is not None and generation != self.generation:
            return
        action, new_state = transition(self.state, event)
        self.state = new_state
        self._perform(action, event, payload)
        self._notify()

    def _crash(self, group: BaseExceptionGroup[Exception]) -> None:
        self._crashed = True
        self.traceback = "".join(traceback.format_exception(group))
        self.state = State.FAILED
        self.error = _describe(group)

    def _fail(self, message: str) -> None:
        """Enter the terminal ``failed`` state, saying why."""
        self.state = State.FAILED
        self.error = message
        self._publish("failed", message=message)

    async def _teardown(self) -> None:
        """Stop and reap the process, if one is left; shielded by the caller, bounded."""
        proc = self.proc
        if proc is None:
            return
        if not self._crashed:
            # Cancelled with the rest: the dependents go first.  Each of them is
            # bounded by its stop timeout; the bound here is a backstop.
            dependents = self._host.dependents(self.name)
            bound = sum(d.instance.spec.stop.timeout for d in dependents) + 1.0
            with trio.move_on_after(bound):
                for dependent in dependents:
                    await dependent.wait_for(lambda r: r.proc is None or r.finished)
        await proc.aclose()
        self.proc = None
        self._notify()

    # --- actions ------------------------------------------------------------

    def _perform(self, action: Action, event: Input, payload: Any) -> None:  # noqa: C901, PLR0912 - one branch per action, as the table reads
        assert self._nursery is not None  # noqa: S101 - set before the first input
        if event in (Input.EXIT_RESTART, Input.EXIT_FINAL):
            self._record_exit(payload)
        if event is Input.EXIT_FINAL and self._rejoin:
            self._follow_owner_restart()
        if action is Action.SPAWN:
            self.generation += 1
            self.error = ""
            self.healthy = False
            self._joined = None
            self._started_mono = None
            # Made here, not in the task: a STOP may come before the task runs.
            self._abort = trio.CancelScope()
            self._nursery.start_soon(self._incarnation, self.generation, self._abort)
        elif action is Action.ANNOUNCE_READY:
            self._publish("ready")
        elif action is Action.KILL:
            if event is Input.PROBE_FAILED:
                self._restart_reason = self._exit_reason = payload or "probe"
            elif event is Input.RESTART:
                self._restart_reason = "manual"
            else:
                self._restart_reason = ""
            self._kill()
        elif action is Action.ON_EXIT:
            self._on_exit()
        elif action is Action.RESCHEDULE:
            if self._restart_reason == "manual":
                self._schedule(0.0)
            else:
                self._on_exit()
        elif action is Action.CANCEL_DELAY:
            if self._delay_scope is not None:
                self._delay_scope.cancel()
            if event is Input.RESTART:  # the pending restart, made now: it counts
                self.restarts += 1
                self.send(Input.START)
        elif action is Action.FAIL:
            self.last_reason = "spawn failed"
            self._fail(str(payload))

    def _follow_owner_restart(self) -> None:
        """Start again, into the new namespaces, once the namespace owner runs again.

        The run ended because the owner's process did (with a PID namespace,
        the kernel ended it; without, nsup stopped it): that is not a failure,
        so it neither backs off nor counts toward intensity.
        """
        self._rejoin = False
        if self.state is State.ENDED:  # not when it was being stopped anyway
            owner = self.instance.spec.namespaces_from
            self.restarts += 1
            self._publish(
                "restarting", delay=0.0, message=f"with {owner!r}, whose namespaces it shares"
            )
            self.send(Input.START)

    def _record_exit(self, status: ExitStatus | None) -> None:
        """Keep how the last run ended and why nsup ended it, if it did; nothing older."""
        if status is not None:
            self.last_exit = status
            self.last_reason = "oom" if status.oom_killed else self._exit_reason
        self._exit_reason = ""

    def _uptime(self) -> float:
        """How long the last run lasted; 0 when the start failed before the command ran."""
        if self._started_mono is None:
            return 0.0
        return time.monotonic() - self._started_mono

    def _on_exit(self) -> None:
        decision, message = self._host.on_exit(self)
        if decision == "restart":
            self._schedule(self.next_backoff())
        elif decision == "fail":
            self._fail(message)
        else:  # "group" or "give_up": the supervisor takes it from here
            self.state = State.DOWN

    def _schedule(self, delay: float) -> None:
        assert self._nursery is not None  # noqa: S101
        self.state = State.BACKOFF
        self._publish("restarting", delay=delay)
        if delay <= 0:
            # No delay to wait out: the next start is queued behind this input at
            # once (a task and a trip through trio's scheduler less per restart).
            # An input queued meanwhile (a stop) comes after it, as it would
            # once a delay had run out.
            self._delay_done(self.generation)
            return
        self._nursery.start_soon(self._delay, delay, self.generation)

    async def _delay(self, delay: float, generation: int) -> None:
        with trio.CancelScope() as self._delay_scope:
            await trio.sleep(delay)
            self._delay_done(generation)

    def _delay_done(self, generation: int) -> None:
        self.restarts += 1
        self.send(Input.DELAY_DONE, generation)

    def _kill(self) -> None:
        assert self._nursery is not None  # noqa: S101
        self._publish("stopping")
        if self.proc is None:
            if self._abort is not None:
                self._abort.cancel()  # still waiting for dependencies, or spawning
            return
        self._nursery.start_soon(self._terminate, self.proc)

    async def _terminate(self, proc: Process) -> None:
        await proc.stop(warn=False)
        if proc.escalated:
            signame = proc.spec.stop_signal.name
            message = f"ignored {signame} for {proc.spec.stop_timeout:g}s; sent SIGKILL"
            self._publish("killed", pid=proc.pid, message=message)

    def _publish(self, kind: EventKind, **fields: Any) -> None:
        self._host.emit(Event(kind=kind, service=self.name, **fields))

    # --- one run of the process ----------------------------------------------

    async def _wait_dependencies(self) -> None:
        """Return once every dependency meets its condition at the same time.

        Waits on the dependencies' states (see ``conditions.py``), not on a
        one-shot event, so a dependency that fails before its first ready and
        then comes up releases its dependents.  While one cannot meet its
        condition (it failed, or ended for good), this instance is
        ``blocked_on`` it, says why in a ``blocked`` event, and counts as
        settled for start-up.
        """
        while True:
            pending = [
                (r, condition)
                for name, condition in self.instance.depends_on.items()
                if (r := self._host.dependency(name)) is not None
                and not conditions.met(r, condition)
            ]
            if not pending:
                return
            dep, condition = pending[0]
            why = conditions.lost(dep, condition)
            self._set_blocked(dep.name if why else None, why or "")
            if dep.finished:
                await self._host.wait_runners_changed()
            elif why is not None:
                await dep.wait_for(conditions.open_again(condition))
            else:
                await dep.wait_for(conditions.decided(condition))

    def _set_blocked(self, name: str | None, why: str = "") -> None:
        if self.blocked_on != name or self.blocked_why != why:
            self.blocked_on = name
            self.blocked_why = why
            if why:
                self._publish("blocked", message=why)
            self._notify()

    async def _incarnation(self, generation: int, abort: trio.CancelScope) -> None:
        started = None
        with abort:
            try:
                await self._wait_dependencies()
            finally:
                self._set_blocked(None)
            self._publish("starting")
            started = await self._start(generation)
        if abort.cancelled_caught:
            self.send(Input.EXIT_FINAL, generation, None)  # stopped before it ran
            return
        if started is None:
            return  # _start reported the failure
        proc, notify, read_fds = started
        # Cancelled or failed here: run()'s teardown stops the process.
        status, reaped = await self._supervise(proc, generation, notify, read_fds)
        self.oom_kills += oom_kills(proc)  # its cgroup goes with it
        if reaped or self._reaping:
            await self._reap(proc)  # at most one earlier run is left to reap at a time
        else:
            # The command has exited and nothing of it is left: the next run may
            # start while its init exits; quiet (and so stop()) waits for the reap.
            self._reaping.add(proc)
            assert self._nursery is not None  # noqa: S101
            self._nursery.start_soon(self._reap_later, proc)
        self.proc = None
        self._report_exit(generation, status)

    async def _reap(self, proc: Process) -> None:
        """Reap a run's init (it only exits now), bounded by its stop timeout; close it."""
        with trio.CancelScope(shield=True):
            if proc.status is None:
                with trio.move_on_after(proc.spec.stop_timeout):
                    await proc.wait()
            await proc.aclose()  # still there past the bound: stop() escalates to SIGKILL

    async def _reap_later(self, proc: Process) -> None:
        await self._reap(proc)
        self._reaping.discard(proc)
        self._notify()

    def _report_exit(self, generation: int, status: ExitStatus) -> None:
        """Feed the exit to the table, as its restart rule classes it."""
        if self._joined is not None and (self._rejoin or self._owner_proc() is not self._joined):
            self._rejoin = True  # its namespace owner's run ended: see _follow_owner_restart
            self.send(Input.EXIT_FINAL, generation, status)
            return
        spec = self.instance.spec
        restart = wants_restart(spec.restart, status, spec.success_codes)
        self.send(Input.EXIT_RESTART if restart else Input.EXIT_FINAL, generation, status)

    def _join_target(self) -> Process | None:
        """The process whose namespaces this run enters, for ``namespaces_from``.

        Raises:
            nsup.SpawnError: the owner is not running (transient: retried with backoff).

        """
        owner = self.instance.spec.namespaces_from
        if owner is None:
            return None
        proc = self._owner_proc()
        if proc is None:
            message = f"{owner!r}, whose namespaces it enters, is not running"
            raise SpawnError(_errno.ESRCH, message, "setns")
        return proc

    def _owner_proc(self) -> Process | None:
        """The running process of the service whose namespaces this one enters, if any."""
        owner = self.instance.spec.namespaces_from
        runner = self._host.dependency(owner) if owner is not None else None
        proc = runner.proc if runner is not None else None
        return proc if proc is not None and proc.status is None else None

    async def _follow_owner(self, owner: Process, proc: Process) -> None:
        """Stop this run as soon as the namespace owner's process has ended."""
        await owner.wait()
        self._rejoin = True
        self._exit_reason = f"{self.instance.spec.namespaces_from} ended"
        assert self._nursery is not None  # noqa: S101
        self._nursery.start_soon(self._terminate, proc)

    async def _start(
        self, generation: int
    ) -> tuple[Process, NotifySocket | None, dict[str, int]] | None:
        """Spawn the process; on failure report it (as an exit, or as FAIL) and return None.

        Spawns run under the host's limiter, so the descriptors held by spawns
        in flight stay bounded however many instances start at once.
        """
        notify = None
        read_fds: dict[str, int] = {}
        try:
            async with self._host.spawn_limiter:
                if (
                    self.instance.spec.ready is not None
                    and self.instance.spec.ready.kind == "notify"
                ):
                    notify = NotifySocket(self._host.notify_dir, self.name)
                    await notify.bind()
                join = self._join_target()
                listen_fds = self._host.listen_fds(
                    self.instance.service, self.instance.spec.sockets
                )
                prepared = await prepare(self.instance)
                read_fds, spec, close_after = spec_for(
                    self.instance,
                    notify.path if notify else None,
                    prepared,
                    listen_fds,
                )
                try:
                    proc = await start_process(spec, join=join)
                finally:
                    for fd in close_after:
                        os.close(fd)
        except BaseException as exc:
            for fd in read_fds.values():
                os.close(fd)
            if notify is not None:
                notify.close()
            if not isinstance(exc, OSError):
                raise
            self._spawn_failed(generation, exc)
            return None
        self.proc = proc
        self._joined = join
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        self._publish("started", pid=proc.pid)
        self._notify()  # dependents waiting for "started" can go
        return proc, notify, read_fds

    def _spawn_failed(self, generation: int, exc: OSError) -> None:
        """A permanent error fails the instance now; a transient one counts as a crash."""
        message = str(exc) if isinstance(exc, SpawnError) else f"cannot start: {exc}"
        self._publish("spawn_failed", message=message)
        if permanent_error(exc):
            self.send(Input.FAIL, generation, message)
            return
        self._exit_reason = "spawn failed"
        code = exc.exit_code if isinstance(exc, SpawnError) else 127
        self._report_exit(generation, ExitStatus(code=code))

    async def _supervise(
        self, proc: Process, generation: int, notify: NotifySocket | None, read_fds: dict[str, int]
    ) -> tuple[ExitStatus, bool]:
        """Watch one run until its command exits; return how, and whether *proc* is reaped."""
        hooks: list[Callable[[str], None]] = []
        assert self._nursery is not None  # noqa: S101
        for name, fd in read_fds.items():
            # A pump outlives this run if a descendant keeps the pipe open.
            stream: Stream = "stderr" if name == "stderr" else "stdout"
            sink = self._host.log_sink(getattr(self.instance.spec, stream), proc.pid)
            self._host.output_opened(self.name)
            self._nursery.start_soon(self._pump, trio.lowlevel.FdStream(fd), hooks, stream, sink)
        try:
            async with trio.open_nursery() as helpers:
                helpers.start_soon(self._readiness, proc, generation, notify, hooks)
                if self._joined is not None:
                    helpers.start_soon(self._follow_owner, self._joined, proc)
                status, reaped = await wait_command(proc)
                helpers.cancel_scope.cancel()
        finally:
            if notify is not None:
                notify.close()
        self._publish("exited", status=status, pid=proc.pid)
        return status, reaped

    async def _pump(
        self,
        pipe: trio.lowlevel.FdStream,
        hooks: list[Callable[[str], None]],
        stream: Stream,
        sink: Callable[[Line], None],
    ) -> None:
        try:
            async with pipe:
                await pump_lines(pipe, self.name, sink, hooks, which=stream)
        finally:
            self._host.output_closed(self.name)

    async def _readiness(
        self,
        proc: Process,
        generation: int,
        notify: NotifySocket | None,
        hooks: list[Callable[[str], None]],
    ) -> None:
        if self.instance.spec.type == "oneshot":
            return  # it is ready once it has completed: see conditions.py
        probe = self.instance.spec.ready
        if probe is not None:
            ok = False
            with trio.move_on_after(probe.timeout):
                ok = await self._probe_ready(probe, proc, notify, hooks)
            if not ok:
                self._publish(
                    "unhealthy", message=f"not ready within {probe.timeout:g}s ({probe.kind} probe)"
                )
                self.send(Input.PROBE_FAILED, generation, "ready timeout")
                return
        self.send(Input.READY, generation)
        async with trio.open_nursery() as nursery:
            if notify is not None:
                nursery.start_soon(notify.serve, self._on_notify)
            if self.instance.spec.health is not None:
                nursery.start_soon(self._health, proc, generation, hooks)

    def _on_notify(self, fields: dict[str, str]) -> None:
        if "STATUS" in fields:
            self.status_text = fields["STATUS"]
            self._publish("status", message=self.status_text)

    async def _probe_ready(
        self,
        probe: Any,
        proc: Process,
        notify: NotifySocket | None,
        hooks: list[Callable[[str], None]],
    ) -> bool:
        if probe.kind == "notify":
            assert notify is not None  # noqa: S101
            got = trio.Event()

            def on_message(fields: dict[str, str]) -> None:
                self._on_notify(fields)
                if fields.get("READY") == "1":
                    got.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(notify.serve, on_message)
                await got.wait()
                nursery.cancel_scope.cancel()
            return True
        if probe.kind == "tcp":
            host, port = probe.tcp
            return await tcp_until(host, port, proc, probe.timeout)
        if probe.kind == "exec":
            while not await exec_probe(probe.exec, proc, probe.timeout, self._host.probe_limiter):  # noqa: ASYNC110 - no event for "ready"
                await trio.sleep(RETRY_INTERVAL)
            return True
        return await self._log_ready(LogMatcher(probe.log), hooks)

    async def _log_ready(self, matcher: LogMatcher, hooks: list[Callable[[str], None]]) -> bool:
        matched = trio.Event()

        def on_line(line: str) -> None:
            if matcher.search(line):
                matched.set()
            elif matcher.over_budget:
                self._publish("unhealthy", message=matcher.explain())
                hooks.remove(on_line)  # it never matches again; readiness times out

        hooks.append(on_line)
        try:
            await matched.wait()
        finally:
            if on_line in hooks:
                hooks.remove(on_line)
        return True

    async def _health(
        self, proc: Process, generation: int, hooks: list[Callable[[str], None]]
    ) -> None:
        health = self.instance.spec.health
        assert health is not None  # noqa: S101
        seen = [False]
        matcher = LogMatcher(health.log) if health.log is not None else None

        def on_line(line: str) -> None:
            if matcher is not None and matcher.search(line):
                seen[0] = True
            elif matcher is not None and matcher.over_budget:
                self._publish("unhealthy", message=matcher.explain())
                hooks.remove(on_line)  # it never matches again: the probe fails

        if health.kind == "log":
            hooks.append(on_line)
        failures = 0
        while True:
            await trio.sleep(health.interval)
            if health.kind == "tcp":
                assert health.tcp is not None  # noqa: S101
                ok = await tcp_once(health.tcp[0], health.tcp[1], proc, health.timeout)
            elif health.kind == "exec":
                assert health.exec is not None  # noqa: S101
                ok = await exec_probe(health.exec, proc, health.timeout, self._host.probe_limiter)
            else:
                ok, seen[0] = seen[0], False
            failures = 0 if ok else failures + 1
            if ok and not self.healthy:
                self.healthy = True
                self._notify()
            if failures >= health.retries:
                self.healthy = False
                self._publish(
                    "unhealthy", message=f"{health.kind} health probe failed {failures} times"
                )
                self.send(Input.PROBE_FAILED, generation, "health")
                return
