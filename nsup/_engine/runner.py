"""One service instance's runner: it drives the ``_restart`` table with real events.

A runner owns one task that reads its inbox: inputs from the supervisor
(START, STOP, RESTART) and from its own helper tasks (READY, PROBE_FAILED,
the exit, DELAY_DONE).  For each it looks up ``transition(state, input)`` and
performs the action; actions that take time (waiting for dependencies,
spawning, stopping, the backoff delay) run as tasks that report back through
the inbox, so the runner always answers a STOP at once.

Each run of the process is one *generation*; inputs carry the generation they
belong to, and those from an older one are dropped (a READY from a process
that has already exited, say).
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._errors import SpawnError
from .._exitstatus import ExitStatus
from .._process import Process, start_process
from .events import Event, EventKind
from .notify import NotifySocket
from .output import pump_lines
from .probes import RETRY_INTERVAL, exec_probe, tcp_once, tcp_until
from .restart import Action, BackoffCounter, Input, State, transition, wants_restart
from .service_spec import spec_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._policy import ServiceInstance
    from .supervisor import Supervisor

__all__ = ["Runner", "ServiceStatus"]


@attrs.frozen
class ServiceStatus:
    """A snapshot of one instance, as ``Supervisor.status()`` and ``nsup status`` show it.

    Attributes:
        name: the instance name.
        state: ``down``, ``starting``, ``up``, ``stopping``, ``restarting``,
            ``backoff`` or ``ended``.
        pid: the child's pid while it runs.
        started_at: ``time.time()`` of the last start, or None.
        restarts: automatic restarts so far.
        last_exit: how the last run ended, or None.
        last_reason: why nsup ended or restarted it last (``"health"``,
            ``"ready timeout"``, ``"spawn failed"``, ``"oom"``...), or ``""``.
        ready: True while it is up and ready.
        status_text: the last ``STATUS=`` it sent over its notify socket.
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

    @property
    def uptime(self) -> float | None:
        """Seconds since the last start while it runs, else None."""
        if self.pid is None or self.started_at is None:
            return None
        return max(0.0, time.time() - self.started_at)


class Runner:
    """Runs one :class:`ServiceInstance` under the restart table."""

    def __init__(self, supervisor: Supervisor, instance: ServiceInstance) -> None:
        """Prepare (but do not start) the runner for *instance*."""
        self.sup = supervisor
        self.instance = instance
        self.name = instance.name
        self.state = State.DOWN
        self.proc: Process | None = None
        self.generation = 0
        self.started_at: float | None = None
        self._started_mono = 0.0
        self.restarts = 0
        self.last_exit: ExitStatus | None = None
        self.last_reason = ""
        self.status_text = ""
        self.ready = trio.Event()
        self._changed = trio.Event()
        self._backoff = BackoffCounter(instance.spec.backoff)
        self._send, self._inbox = trio.open_memory_channel[tuple[Input, int | None, Any]](math.inf)
        self._abort: trio.CancelScope | None = None
        self._delay_scope: trio.CancelScope | None = None
        self._restart_reason = ""
        self._exit_reason = ""  # why nsup is ending the current run, for last_reason
        self._nursery: trio.Nursery | None = None
        self._scope = trio.CancelScope()

    # --- what others call -------------------------------------------------

    def send(self, event: Input, generation: int | None = None, payload: Any = None) -> None:
        """Queue an input; *generation* (if given) drops it once that run is over."""
        self._send.send_nowait((event, generation, payload))

    def snapshot(self) -> ServiceStatus:
        """The current :class:`ServiceStatus`."""
        running = self.proc is not None and self.proc.status is None
        return ServiceStatus(
            name=self.name,
            state=self.state.value,
            pid=self.proc.pid if running and self.proc is not None else None,
            started_at=self.started_at,
            restarts=self.restarts,
            last_exit=self.last_exit,
            last_reason=self.last_reason,
            ready=self.state is State.UP,
            status_text=self.status_text,
        )

    async def wait_for(self, predicate: Callable[[Runner], bool]) -> None:
        """Wait until ``predicate(self)`` holds (checked at every state change)."""
        while not predicate(self):
            await self._changed.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The runner's task: read the inbox until :meth:`close`.

        It is shielded from outside cancellation: when the code that owns the
        supervisor is cancelled, the runners must live on long enough to stop
        their processes in dependency order.  The supervisor closes them once
        everything is down.
        """
        with trio.CancelScope(shield=True), self._scope:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await self._loop()

    def close(self) -> None:
        """End the runner's task and every task it started."""
        self._scope.cancel()

    async def _loop(self) -> None:
        async for event, generation, payload in self._inbox:
            if generation is not None and generation != self.generation:
                continue
            action, new_state = transition(self.state, event)
            self.state = new_state
            self._perform(action, event, payload)
            self._changed.set()
            self._changed = trio.Event()
            self.sup.state_changed(self)

    # --- actions ------------------------------------------------------------

    def _perform(self, action: Action, event: Input, payload: Any) -> None:  # noqa: C901, PLR0912 - one branch per action, as the table reads
        assert self._nursery is not None  # noqa: S101 - set before the first input
        if event in (Input.EXIT_RESTART, Input.EXIT_FINAL):
            self._record_exit(payload)
        if action is Action.SPAWN:
            self.generation += 1
            self.ready = trio.Event()
            # Made here, not in the task: a STOP may come before the task runs.
            self._abort = trio.CancelScope()
            self._nursery.start_soon(self._incarnation, self.generation, self._abort)
        elif action is Action.ANNOUNCE_READY:
            self.ready.set()
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
            self._on_exit(payload)
        elif action is Action.RESCHEDULE:
            if self._restart_reason == "manual":
                self._schedule(0.0)
            else:
                self._on_exit(payload)
        elif action is Action.CANCEL_DELAY:
            if self._delay_scope is not None:
                self._delay_scope.cancel()
            if event is Input.RESTART:
                self.send(Input.START)

    def _record_exit(self, status: ExitStatus | None) -> None:
        """Keep how the last run ended and why nsup ended it, if it did; nothing older."""
        if status is not None:
            self.last_exit = status
            self.last_reason = "oom" if status.oom_killed else self._exit_reason
        self._exit_reason = ""

    def _on_exit(self, status: ExitStatus | None) -> None:
        uptime = time.monotonic() - self._started_mono
        decision = self.sup.on_exit(self, status)
        if decision == "restart":
            self._schedule(self._backoff.next_delay(uptime))
        else:  # "group" or "give_up": the supervisor takes it from here
            self.state = State.DOWN

    def _schedule(self, delay: float) -> None:
        assert self._nursery is not None  # noqa: S101
        self.state = State.BACKOFF
        self._publish("restarting", delay=delay)
        self._nursery.start_soon(self._delay, delay, self.generation)

    async def _delay(self, delay: float, generation: int) -> None:
        with trio.CancelScope() as self._delay_scope:
            await trio.sleep(delay)
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
        self.sup.publish(Event(kind=kind, service=self.name, **fields))

    # --- one run of the process ----------------------------------------------

    async def _wait_dependencies(self) -> None:
        while True:
            pending = [
                r
                for dep in self.instance.depends_on
                if (r := self.sup.runners.get(dep)) and not r.ready.is_set()
            ]
            if not pending:
                return
            await pending[0].ready.wait()

    async def _incarnation(self, generation: int, abort: trio.CancelScope) -> None:
        started = None
        with abort:
            await self._wait_dependencies()
            self._publish("starting")
            started = await self._start(generation)
        if abort.cancelled_caught:
            self.send(Input.EXIT_FINAL, generation, None)  # stopped before it ran
            return
        if started is None:
            return  # _start reported the failure
        proc, notify, read_fd = started
        try:
            status = await self._supervise(proc, generation, notify, read_fd)
        finally:
            with trio.CancelScope(shield=True):
                await proc.aclose()
            self.proc = None
        self._report_exit(generation, status)

    def _report_exit(self, generation: int, status: ExitStatus) -> None:
        """Feed the exit to the table, as its restart rule classes it."""
        restart = wants_restart(self.instance.spec.restart, status)
        self.send(Input.EXIT_RESTART if restart else Input.EXIT_FINAL, generation, status)

    async def _start(self, generation: int) -> tuple[Process, NotifySocket | None, int] | None:
        """Spawn the process; on failure report it as an exit and return None."""
        notify = None
        if self.instance.spec.ready is not None and self.instance.spec.ready.kind == "notify":
            notify = NotifySocket(self.sup.runtime_dir, self.name)
            await notify.bind()
        read_fd, spec, close_after = spec_for(self.instance, notify.path if notify else None)
        try:
            proc = await start_process(spec)
        except BaseException as exc:
            if read_fd >= 0:
                os.close(read_fd)
            if notify is not None:
                notify.close()
            if not isinstance(exc, SpawnError):
                raise
            self._exit_reason = "spawn failed"
            self._publish("spawn_failed", message=str(exc))
            self._report_exit(generation, ExitStatus(code=exc.exit_code))
            return None
        finally:
            for fd in close_after:
                os.close(fd)
        self.proc = proc
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        self._publish("started", pid=proc.pid)
        return proc, notify, read_fd

    async def _supervise(
        self, proc: Process, generation: int, notify: NotifySocket | None, read_fd: int
    ) -> ExitStatus:
        hooks: list[Callable[[str], None]] = []
        assert self._nursery is not None  # noqa: S101
        if read_fd >= 0:
            # The pump outlives this run if a descendant keeps the pipe open.
            self._nursery.start_soon(self._pump, trio.lowlevel.FdStream(read_fd), hooks)
        try:
            async with trio.open_nursery() as helpers:
                helpers.start_soon(self._readiness, proc, generation, notify, hooks)
                status = await proc.wait()
                helpers.cancel_scope.cancel()
        finally:
            if notify is not None:
                notify.close()
        self._publish("exited", status=status, pid=proc.pid)
        return status

    async def _pump(
        self, stream: trio.lowlevel.FdStream, hooks: list[Callable[[str], None]]
    ) -> None:
        self.sup.pumps += 1
        try:
            async with stream:
                await pump_lines(stream, self.name, self.sup.output, hooks)
        finally:
            self.sup.pumps -= 1
            self.sup.pumps_changed.set()

    async def _readiness(
        self,
        proc: Process,
        generation: int,
        notify: NotifySocket | None,
        hooks: list[Callable[[str], None]],
    ) -> None:
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
            while not await exec_probe(probe.exec, proc, probe.timeout):  # noqa: ASYNC110 - no event for "ready"
                await trio.sleep(RETRY_INTERVAL)
            return True
        matched = trio.Event()

        def on_line(line: str) -> None:
            if probe.log.search(line):
                matched.set()

        hooks.append(on_line)
        try:
            await matched.wait()
        finally:
            hooks.remove(on_line)
        return True

    async def _health(
        self, proc: Process, generation: int, hooks: list[Callable[[str], None]]
    ) -> None:
        health = self.instance.spec.health
        assert health is not None  # noqa: S101
        seen = [False]

        def on_line(line: str) -> None:
            if health.log is not None and health.log.search(line):
                seen[0] = True

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
                ok = await exec_probe(health.exec, proc, health.timeout)
            else:
                ok, seen[0] = seen[0], False
            failures = 0 if ok else failures + 1
            if failures >= health.retries:
                self._publish(
                    "unhealthy", message=f"{health.kind} health probe failed {failures} times"
                )
                self.send(Input.PROBE_FAILED, generation, "health")
                return
