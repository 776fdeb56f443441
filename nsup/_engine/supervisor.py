"""The supervisor: one runner per instance, Erlang/OTP strategies, intensity, reload.

Runners (``runner.py``) keep each instance going by the restart table; when
one exits and its restart rule wants it back, it asks :meth:`Supervisor._on_exit`,
which records the restart against the intensity and picks the strategy:

- ``one_for_one``: the runner restarts alone, after its backoff delay;
- ``one_for_all``: every other instance is stopped (in reverse dependency
  order), then all start again in dependency order;
- ``rest_for_one``: the same, for the instance and those after it in
  dependency order.

More than ``max_restarts`` restarts within ``within`` seconds gives up.  With
``on_give_up = "exit"`` (the default) every instance is stopped and the
supervisor ends with exit code 1, naming the instance that tripped it; with
``"fail-service"`` the intensity is counted per instance and the one that
trips it is left ``failed`` while the rest run on.  Stopping honours
dependencies both ways: an instance stops only once everything that depends
on it is down, and returns as soon as the last process is reaped.

The failure model (docs/failure-model.md)
-----------------------------------------
- An exception inside one instance's runner fails that instance only: it goes
  to the terminal ``failed`` state, the error is in its status (``error``) and
  in a ``failed`` event, its process is stopped, the others run on.  So do
  spawn errors that a retry cannot cure (``runner.permanent_error``).
- An exception in the supervisor itself (its own tasks, a strategy, a
  reload) propagates out of the nursery that holds the runners.  That
  cancels the runners, and each one's last act, shielded and bounded by the
  stop timeouts, stops its process after its dependents' (see ``runner.py``).
  ``open_supervisor`` then raises it; ``nsup run`` prints the traceback and
  exits 70.
- Only the stop path is shielded, never a runner.  Runners are started with
  ``start_soon`` (``nursery.start`` under an already-cancelled caller never
  moves the task, and would wait for ever), so a cancellation at any
  instant, in start-up or in a reload, returns within the stop timeouts and
  leaves no process.
- Spawns run under a ``trio.CapacityLimiter`` (``SPAWN_CONCURRENCY``): the
  descriptors held by spawns in flight are bounded, and running out of
  descriptors is a transient spawn failure of one instance, retried with
  backoff.  Exec probes run under a limiter of their own
  (``PROBE_CONCURRENCY``), so they never hold up a start, nor a start them.
"""

from __future__ import annotations

import collections
import shutil
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, final

import attrs
import trio

from .._errors import NsupError, PolicyError
from .._policy import Policy
from .._policy.model import PolicyIssue, Service
from .._rundir import make_runtime_dir
from .._util import NoPublicConstructor
from .._words import count, duration
from . import conditions
from .events import Event, EventBus, Subscription
from .lines import LineSubscription, LineTaps
from .output import Line, PrefixView, output_sink
from .restart import Input, Intensity, State
from .routes import OutputRoutes
from .runner import QUIET, Decision, Runner, RunnerHost, ServiceStatus
from .sockets import ServiceSockets

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence

    from .._policy import ServiceInstance
    from .._policy.model import OutputFile, Socket

__all__ = [
    "PROBE_CONCURRENCY",
    "QUIET",
    "SPAWN_CONCURRENCY",
    "GaveUpError",
    "NotReadyError",
    "Supervisor",
    "SupervisorFinishedError",
    "open_supervisor",
]

OUTPUT_DRAIN = 1.0  # seconds stop_all waits for output pipes to reach EOF
SPAWN_CONCURRENCY = 32  # spawns in flight at once (each holds a few descriptors)
PROBE_CONCURRENCY = 32  # exec probes running at once, apart from the spawns of services


class GaveUpError(NsupError, RuntimeError):
    """Restart intensity was exceeded: the supervisor stopped everything.

    ``service`` names the instance whose restart tripped it.
    """

    def __init__(self, service: str, max_restarts: int, within: float) -> None:
        """Record which instance tripped the intensity."""
        self.service = service
        super().__init__(
            f"gave up: {service!r} made more than {count(max_restarts, 'restart')} within "
            f"{duration(within)}; "
            "fix the service or raise [supervisor] max_restarts / within"
        )


class NotReadyError(NsupError, RuntimeError):
    """A service :meth:`Supervisor.wait_ready` waited for will not be ready.

    ``service`` is the name waited for, ``instance`` the instance that will
    not be ready, ``state`` its state (``failed``, ``ended``, ``blocked``,
    ``removed``, or ``finished`` when the supervisor itself finished) and
    ``reason`` why.
    """

    def __init__(self, service: str, instance: str, state: str, reason: str) -> None:
        """Record which instance will not be ready, and why."""
        self.service = service
        self.instance = instance
        self.state = state
        self.reason = reason
        super().__init__(f"{instance!r} will not be ready: it is {state}: {reason}")


class SupervisorFinishedError(NsupError, RuntimeError):
    """The supervisor has finished (or is stopping everything): nothing starts any more."""

    def __init__(self, action: str) -> None:
        """Say which call came too late."""
        super().__init__(
            f"cannot {action}: this supervisor has finished (or is stopping every service); "
            "open a new one with nsup.open_supervisor()"
        )


@final
class Supervisor(metaclass=NoPublicConstructor):
    """A running policy.  Made by :func:`open_supervisor` (or ``nsup run``).

    Only :func:`open_supervisor` makes one (internally
    ``Supervisor._create(policy, nursery, output)``, then ``_start_all()``).
    Its state is private; what a user may read is the read-only properties
    (``policy``, ``started_at``, ``stopping``, ``finished``, ``gave_up``).

    Its runners reach it through a :class:`~nsup._engine.runner.RunnerHost`
    made of its private methods under "what runners ask": none of that is on
    its public surface.
    """

    _made_by = "nsup.open_supervisor()"

    def __init__(
        self,
        policy: Policy,
        nursery: trio.Nursery,
        output: Callable[[str, str], None] | PrefixView | None = None,
    ) -> None:
        """Prepare runners for *policy*; nothing starts until :meth:`start_all`."""
        self._policy = policy
        self._nursery = nursery
        self._output, self._writer = output_sink(output, nursery, policy.supervisor.timestamps)
        self._routes = OutputRoutes(self._output)
        self._bus = EventBus()
        self._taps = LineTaps()  # sup.lines() subscriptions
        self._runtime_dir = make_runtime_dir()
        self._runners: dict[str, Runner] = {}
        self._order: list[str] = []
        self._intensity = Intensity(policy.supervisor.max_restarts, policy.supervisor.within)
        self._own_intensity: dict[str, Intensity] = {}  # per instance, for fail-service
        self._gave_up: GaveUpError | None = None
        self._done = trio.Event()
        self._started_at = time.time()
        self._stopping = False
        self._group_busy = False
        self._instances: dict[str, ServiceInstance] = {}
        # Output pipes still being read, by instance (an instance with none is no key).
        self._pumps_of: collections.Counter[str] = collections.Counter()
        self._pumps_changed = trio.Event()
        self._runners_changed = trio.Event()
        self._reload_lock = trio.Lock()
        self._spawn_limiter = trio.CapacityLimiter(SPAWN_CONCURRENCY)
        self._probe_limiter = trio.CapacityLimiter(PROBE_CONCURRENCY)
        self._sockets: dict[str, ServiceSockets] = {}  # per service, held across its restarts
        self._failed_at_end: list[str] = []  # failed() when everything had ended by itself
        self._dependents: dict[str, list[Runner]] | None = None  # by dependency; None: stale
        self._host = RunnerHost(
            notify_dir=self._runtime_dir,
            spawn_limiter=self._spawn_limiter,
            probe_limiter=self._probe_limiter,
            emit=self._emit,
            output=self._write_line,
            log_sink=self._log_sink,
            output_opened=self._output_opened,
            output_closed=self._output_closed,
            dependency=self._dependency,
            dependents=self._dependents_of,
            listen_fds=self._listen_fds,
            wait_runners_changed=self._wait_runners_changed,
            on_exit=self._on_exit,
            state_changed=self._state_changed,
        )

    @property
    def policy(self) -> Policy:
        """The policy it runs now: the one it was opened with, as changed by reload, add and remove."""
        return self._policy

    @property
    def started_at(self) -> float:
        """When it was made (Unix time)."""
        return self._started_at

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop_all` began (nothing new starts after that)."""
        return self._stopping

    @property
    def finished(self) -> bool:
        """True once it has finished: every service ended by itself, it gave up, or it was stopped."""
        return self._done.is_set()

    @property
    def gave_up(self) -> GaveUpError | None:
        """The :class:`nsup.GaveUpError` if restart intensity was exceeded, else None."""
        return self._gave_up

    async def wait_finished(self) -> None:
        """Return once it has finished (see :attr:`finished`)."""
        await self._done.wait()

    # --- life cycle -----------------------------------------------------------

    def _add(self, instance: ServiceInstance) -> Runner:
        """Make a runner for *instance* and start its task (``start_soon``: never waits)."""
        runner = Runner(self._host, instance)
        self._runners[instance.name] = runner
        self._instances[instance.name] = instance
        self._dependents = None
        self._nursery.start_soon(runner.run, name=f"nsup runner {instance.name}")
        self._runners_changed.set()
        self._runners_changed = trio.Event()
        return runner

    async def _start_all(self) -> None:
        """Start every instance; return once all are settled (up, ended, failed, or nsup gave up)."""
        if self._stopping:
            return
        for instance in self._policy.expanded():
            self._add(instance)
            self._order.append(instance.name)
        for name in self._order:
            self._runners[name].send(Input.START)
        await self._wait_settled(self._order)

    async def _wait_settled(self, names: Iterable[str]) -> None:
        for name in list(names):
            runner = self._runners.get(name)
            if runner is not None:
                await runner.wait_for(lambda r: r.settled or self._done.is_set())

    async def stop_all(self) -> None:
        """Stop every instance, dependents first; return once every process is reaped.

        Safe to call at any time, more than once, and concurrently with a
        start-up or a reload: nothing starts once it began.
        """
        self._stopping = True
        async with self._reload_lock:  # a reload in flight finishes (it stops early) first
            while busy := [n for n, r in self._runners.items() if not r.quiet]:
                await self._stop_group(busy)
        await self._drain()  # print what the services wrote before they died
        self._finish()
        self._taps.close()  # even if a pipe is still held open: the drain wait is over
        for runner in self._runners.values():
            runner.close()

    async def _drain(self, names: Collection[str] | None = None) -> None:
        """Wait until the output pipes of instances *names* (None: of all) are read to the end.

        A descendant that escaped (no PID namespace) may hold a pipe open: wait
        OUTPUT_DRAIN seconds at most.
        """
        with trio.move_on_after(OUTPUT_DRAIN):
            while self._pumps_of if names is None else any(n in self._pumps_of for n in names):
                await self._pumps_changed.wait()

    async def _stop_group(self, names: list[str]) -> None:
        members = set(names)
        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(self._stop_one, name, members)

    def _dependents_of(self, name: str) -> list[Runner]:
        """The runners whose instance depends on *name* (part of the runner host).

        From an index rebuilt after runners change, so stopping n instances is O(n), not O(n^2).
        """
        if self._dependents is None:
            index: dict[str, list[Runner]] = {}
            for runner in self._runners.values():
                for dependency in runner.instance.depends_on:
                    index.setdefault(dependency, []).append(runner)
            self._dependents = index
        return list(self._dependents.get(name, ()))

    async def _stop_one(self, name: str, members: set[str]) -> None:
        runner = self._runners.get(name)
        if runner is None:
            return
        for dependent in self._dependents_of(name):
            if dependent.name in members:
                await dependent.wait_for(lambda r: r.quiet)
        runner.send(Input.STOP)
        await runner.wait_for(lambda r: r.quiet)

    def _finish(self) -> None:
        if not self._done.is_set():
            self._close_sockets(keep=())
            self._done.set()
            self._bus.close()
            if not self._pumps_of:  # else the last pump to close ends them (output_closed)
                self._taps.close()
            shutil.rmtree(self._runtime_dir, ignore_errors=True)

    # --- what runners ask (the RunnerHost interface) ------------------------------

    def _emit(self, event: Event) -> None:
        """Hand *event* to every subscriber."""
        self._bus.publish(event)

    def _write_line(self, line: Line) -> None:
        """Write one line of a service's output through the sink given at creation."""
        self._output(line)

    def _log_sink(self, target: str | OutputFile, pid: int) -> Callable[[Line], None]:
        """Route one stream of a service: its ``lines()`` subscribers, then the view, a file, journald or syslog."""
        route = self._routes.sink(target, pid)
        taps = self._taps
        instances = self._instances

        def sink(line: Line) -> None:
            if taps.wanted:
                instance = instances.get(line.service)
                taps.publish(line, instance.service if instance is not None else line.service)
            route(line)

        return sink

    def _output_opened(self, instance: str) -> None:
        """Count an output pipe of *instance* being read."""
        self._pumps_of[instance] += 1

    def _output_closed(self, instance: str) -> None:
        """Count an output pipe of *instance* done."""
        self._pumps_of[instance] -= 1
        if not self._pumps_of[instance]:
            del self._pumps_of[instance]
        self._pumps_changed.set()
        if not self._pumps_of and self._done.is_set():
            self._taps.close()  # the supervisor finished and every pipe is read to the end
        self._pumps_changed = trio.Event()

    def _dependency(self, name: str) -> Runner | None:
        """The current runner of *name*, if any."""
        return self._runners.get(name)

    def _listen_fds(self, service: str, specs: Sequence[Socket]) -> list[tuple[str, int]]:
        """The bound sockets of *service*: bound at its first start, held until it is removed.

        Every instance and every run shares them, so connections queue in
        them while the service restarts.  A reload that changes a service's
        ``sockets`` (*specs*) binds the new ones at its next start.
        """
        held = self._sockets.get(service)
        if held is not None and held.specs != specs:
            held.close()
            held = None
        if held is None:
            held = self._sockets[service] = ServiceSockets(service, specs)
        held.open()
        return held.listen_fds()

    def _close_sockets(self, keep: Iterable[str]) -> None:
        """Close the sockets of every service not in *keep*."""
        kept = set(keep)
        for service in [s for s in self._sockets if s not in kept]:
            self._sockets.pop(service).close()

    async def _wait_runners_changed(self) -> None:
        """Return at the next runner added (start-up, reload, a failed runner revived)."""
        await self._runners_changed.wait()

    def _on_exit(self, runner: Runner) -> tuple[Decision, str]:
        """Decide what follows an exit that *runner*'s restart rule wants restarted."""
        if self._stopping:
            return "give_up", ""
        sup = self._policy.supervisor
        now = time.monotonic()
        if sup.on_give_up == "fail-service":
            own = self._own_intensity.setdefault(
                runner.name, Intensity(sup.max_restarts, sup.within)
            )
            own.max_restarts, own.within = sup.max_restarts, sup.within
            if own.record(now):
                own.clear()
                message = (
                    f"gave up: more than {sup.max_restarts} restarts within {sup.within:g}s "
                    "(on_give_up = fail-service); `nsup start` tries again"
                )
                return "fail", message
        elif self._intensity.record(now):
            self._gave_up = GaveUpError(runner.name, sup.max_restarts, sup.within)
            self._emit(Event(kind="gave_up", service=runner.name, message=str(self._gave_up)))
            self._nursery.start_soon(self.stop_all)
            return "give_up", ""
        strategy = sup.strategy
        if strategy == "one_for_one" or self._group_busy:
            return "restart", ""
        index = self._order.index(runner.name)
        group = self._order if strategy == "one_for_all" else self._order[index:]
        self._nursery.start_soon(self._restart_group, runner, list(group))
        return "group", ""

    async def _restart_group(self, failed: Runner, group: list[str]) -> None:
        self._group_busy = True
        try:
            delay = failed.next_backoff()
            self._emit(
                Event(
                    kind="restarting",
                    service=failed.name,
                    delay=delay,
                    message=f"{count(len(group), 'service')} restart together",
                )
            )
            await self._stop_group(group)
            await trio.sleep(delay)
            if self._stopping:
                return
            for name in group:  # each one restarts: each one counts it
                runner = self._runners.get(name)
                if runner is not None:
                    runner.count_restart()
                    runner.send(Input.START)
        finally:
            self._group_busy = False

    def _state_changed(self, runner: Runner) -> None:
        """Called after every change: notice when nothing is left to run."""
        del runner
        if self._stopping or self._group_busy or self._done.is_set():
            return
        if self._runners and all(_done(r) for r in self._runners.values()):
            self._failed_at_end = self.failed()  # stopping the blocked ones unblocks them
            self._finish()

    # --- the public API ---------------------------------------------------------

    def status(self) -> dict[str, ServiceStatus]:
        """A snapshot of every instance, in dependency order."""
        return {
            name: self._runners[name].snapshot() for name in self._order if name in self._runners
        }

    def failed(self) -> list[str]:
        """The instances that failed.

        Those in the ``failed`` state, oneshots that ended without success,
        and those ``blocked`` on a dependency that will not meet their condition.
        """
        return [
            n
            for n in self._order
            if n in self._failed_at_end or (n in self._runners and _failed(self._runners[n]))
        ]

    def _named(self, names: Iterable[str]) -> list[Runner]:
        found = []
        for name in names:
            matches = [
                r for n, r in self._runners.items() if n == name or n.rpartition(".")[0] == name
            ]
            if not matches:
                known = ", ".join(self._order)
                raise KeyError(f"no service {name!r} in this supervisor (known: {known})")
            found.extend(matches)
        return found

    def _revive(self, runners: list[Runner]) -> list[Runner]:
        """Replace each runner whose task ended (after an internal error) with a fresh one."""
        out = []
        for runner in runners:
            if runner.finished and not self._stopping:
                fresh = self._add(self._instances[runner.name])
                out.append(fresh)
            else:
                out.append(runner)
        return out

    def _check_open(self, action: str) -> None:
        if self._stopping or self._done.is_set():
            raise SupervisorFinishedError(action)

    async def start(self, *names: str) -> None:
        """Start the named services (a service name covers all its instances); wait until settled.

        Settled: up and ready, ended, failed, or blocked on a dependency.  A
        service that had ended or failed is started anew, and this returns
        once that new run settled.

        Raises:
            KeyError: a name is not a service or instance of this supervisor.
            nsup.SupervisorFinishedError: the supervisor has finished.
        """
        self._check_open(f"start {', '.join(names)}")
        runners = self._revive(self._named(names))
        # A START to a runner that is down, ended or failed spawns (a new
        # generation): wait for that run, not for the state it is in now.
        fresh = {r.name: r.generation for r in runners if r.state in QUIET and not r.running}
        for runner in runners:
            runner.send(Input.START)
        for runner in runners:
            await runner.wait_for(
                lambda r: (
                    (r.generation > fresh.get(r.name, -1) and r.settled)
                    or r.finished
                    or self._done.is_set()
                )
            )

    async def wait_ready(self, name: str) -> None:
        """Return once every instance of *name* is up and ready.

        A service already ready returns at once; one starting, restarting or
        in backoff is waited for.  A oneshot that completed counts as ready.

        Args:
            name: a service (all its instances) or one instance (``web.1``).

        Raises:
            KeyError: *name* is not a service or instance of this supervisor.
            nsup.NotReadyError: it will not be ready without being asked: it
                ``failed`` (the error says why), ``ended``, is ``blocked`` on
                a dependency, was removed, or the supervisor finished.
        """
        for instance in [r.name for r in self._named([name])]:
            await self._wait_one_ready(name, instance)

    async def _wait_one_ready(self, name: str, instance: str) -> None:
        while True:
            runner = self._runners.get(instance)
            if runner is None:
                raise NotReadyError(name, instance, "removed", "it was removed from the supervisor")
            await runner.wait_for(
                lambda r: r.state is State.UP or _done(r) or r.finished or self._done.is_set()
            )
            if runner.state is State.UP:
                return
            if runner.state is State.ENDED and conditions.completed(runner):
                return
            if self._done.is_set() or self._stopping:
                raise NotReadyError(name, instance, "finished", "the supervisor has finished")
            if runner.finished and self._runners.get(instance) is not runner:
                continue  # replaced by a reload or a revive: wait for the new runner
            status = runner.snapshot()
            reason = (
                status.error
                or status.blocked
                or status.last_reason
                or (f"its last run ended: {status.last_exit}" if status.last_exit else "")
                or "it is not running"
            )
            raise NotReadyError(name, instance, status.state, reason)

    async def stop(self, *names: str) -> None:
        """Stop the named services; return once their processes are reaped."""
        runners = self._named(names)
        for runner in runners:
            runner.send(Input.STOP)
        for runner in runners:
            await runner.wait_for(lambda r: r.quiet)

    async def restart(self, *names: str) -> None:
        """Restart the named services now (no backoff, not counted toward intensity); wait until ready.

        Raises:
            KeyError: a name is not a service or instance of this supervisor.
            nsup.SupervisorFinishedError: the supervisor has finished.
        """
        self._check_open(f"restart {', '.join(names)}")
        runners = self._revive(self._named(names))
        generations = {r.name: r.generation for r in runners}
        for runner in runners:
            runner.send(Input.RESTART)
        for runner in runners:
            await runner.wait_for(
                lambda r: (
                    (r.generation > generations[r.name] and r.settled)
                    or r.finished
                    or self._done.is_set()
                )
            )

    def signal(self, name: str, signo: int) -> int:
        """Send *signo* to every running instance of *name*; return how many got it."""
        return sum(runner.send_signal(signo) for runner in self._named([name]))

    def events(self) -> Subscription:
        """Follow events from now on: starting, started, ready, exited, restarting, gave_up...

        The subscription is registered when this is called, not when
        iteration begins.  Use it as an async iterator; ``async with`` (or
        ``close()``) unsubscribes.  It is bounded: a subscriber that falls
        :data:`nsup._engine.events.BACKLOG` events behind gets one final
        ``lagged`` event and the iteration ends.

        Example::

            async with sup.events() as events:
                await sup.restart("web")
                async for event in events:
                    ...
        """
        return self._bus.subscribe()

    def lines(self, name: str) -> LineSubscription:
        """Follow the output of *name* from now on: each line with its stream and time.

        The subscription is registered when this is called, so a service
        started (or restarted) after it is followed from its first line.  It
        covers every instance of a service, run after run; it ends when the
        service is removed, or once the supervisor has finished and the
        service's pipes are read to the end.  Only output nsup reads is
        there: a stream set to ``"null"`` has none.

        It is bounded (:data:`nsup._engine.lines.LINE_BACKLOG_BYTES`, each
        line counting its length plus 64 bytes): a reader that falls behind
        loses lines, never slows nsup; ``dropped`` counts them,
        and the next line it gets says how many were lost just before it
        (``dropped_before``).  Use ``async with`` (or ``close()``) to stop.

        Args:
            name: a service (all its instances) or one instance (``web.1``).

        Raises:
            KeyError: *name* is not a service or instance of this supervisor.

        Example::

            async with sup.lines("web") as lines:
                async for line in lines:
                    print(line.instance, line.stream, line.text)
        """
        self._named([name])
        return self._taps.subscribe(name)

    async def reload(self, policy: Policy) -> dict[str, list[str]]:
        """Apply *policy*: restart changed instances, stop removed ones, start new ones.

        Unchanged instances are not touched.  Returns the names per outcome.
        Reloads are serialised: a second call waits for the first.  Once
        :meth:`stop_all` began, a reload changes nothing.
        """
        async with self._reload_lock:
            if self._stopping:
                return {"changed": [], "removed": [], "added": []}
            changed, removed, added = await self._apply(policy)
        await self._wait_settled(changed + added)
        return {"changed": changed, "removed": removed, "added": added}

    async def add(self, name: str, service: Service | Mapping[str, Any]) -> None:
        """Add the service *name* and start it; return once it settled (see :meth:`start`).

        For a worker per tenant or per job, without a policy file.  The rest
        of the policy is untouched; adds, removes and reloads are serialised.
        A later :meth:`reload` with a policy that lacks *name* removes it.

        Args:
            name: a name no service has yet.
            service: an :class:`nsup.Service`, or its settings shaped like the
                TOML table (``{"command": ["./worker", "--tenant", "a"]}``),
                checked as ``nsup check`` checks a file.

        Raises:
            nsup.PolicyError: *name* is taken, or *service* is invalid
                (the message names the key).
            nsup.SupervisorFinishedError: the supervisor has finished.
        """
        self._check_open(f"add {name!r}")
        async with self._reload_lock:
            self._check_open(f"add {name!r}")
            if name in self._policy.services:
                raise _refusal(
                    name,
                    f"a service named {name!r} is already running; "
                    f"pick another name or remove it first (await sup.remove({name!r}))",
                )
            document = self._policy.to_dict()
            if isinstance(service, Service):
                one = attrs.evolve(self._policy, services={name: service})
                document["services"][name] = one.to_dict()["services"][name]
            else:
                document["services"][name] = dict(service)
            policy = Policy.from_dict(document, self._policy.source or "<dict>")
            _, _, added = await self._apply(policy)
        await self._wait_settled(added)

    async def remove(self, name: str) -> None:
        """Stop the service *name* (every instance) and forget it; return once it is reaped.

        Serialised with :meth:`add` and :meth:`reload`.

        Raises:
            KeyError: *name* is not a service of this supervisor.
            nsup.PolicyError: other services depend on it or share its
                namespaces (remove them first, or reload without the link).
            nsup.SupervisorFinishedError: the supervisor has finished.
        """
        self._check_open(f"remove {name!r}")
        async with self._reload_lock:
            self._check_open(f"remove {name!r}")
            if name not in self._policy.services:
                known = ", ".join(self._policy.services)
                raise KeyError(f"no service {name!r} in this supervisor (known: {known})")
            users = [
                other
                for other, spec in self._policy.services.items()
                if other != name and (name in spec.depends_on or spec.namespaces_from == name)
            ]
            if users:
                raise _refusal(
                    name,
                    f"{', '.join(map(repr, users))} depend on it or share its namespaces; "
                    "remove those first, or reload a policy without the link",
                )
            services = {n: s for n, s in self._policy.services.items() if n != name}
            await self._apply(attrs.evolve(self._policy, services=services))

    async def _apply(self, policy: Policy) -> tuple[list[str], list[str], list[str]]:
        """Move to *policy* (the reload lock held); return (changed, removed, added)."""
        new = {i.name: i for i in policy.expanded()}
        removed = [n for n in self._order if n not in new]
        changed = [n for n in self._order if n in new and new[n] != self._instances[n]]
        added = [n for n in new if n not in self._runners]
        self._policy = policy
        self._intensity.max_restarts = policy.supervisor.max_restarts
        self._intensity.within = policy.supervisor.within
        await self._stop_group(removed + changed)
        await self._drain(removed)  # their lines() subscribers get the last lines too
        for name in removed + changed:
            self._forget(name)
        self._close_sockets(keep=policy.services)  # a removed service's, once it is down
        self._taps.end(keep=[*policy.services, *new])  # lines() of a removed service end
        self._order = list(new)
        if not self._stopping:
            for name in changed + added:
                self._add(new[name])
            for name in self._order:
                if name in changed or name in added:
                    self._runners[name].send(Input.START)
        return changed, removed, added

    async def _close_output(self) -> None:
        """Write what output is still queued (for at most OUTPUT_DRAIN seconds), then close it."""
        self._routes.close()
        if self._writer is not None:
            with trio.move_on_after(OUTPUT_DRAIN):
                await self._writer.flush()
            self._writer.close()

    def reopen_logs(self) -> list[str]:
        """Reopen every service log file (after a logrotate); return the errors, one line each."""
        return self._routes.reopen()

    # --- for nsup's own front ends (nsup run, the control socket, /metrics) ---------

    def _log_files(self) -> list[str]:
        """The log files its services write to."""
        return list(self._routes.files.files)

    def _output_dropped(self) -> dict[str, int]:
        """Lines per service the terminal view dropped (nsup's stdout was not read fast enough)."""
        return dict(self._writer.dropped) if self._writer is not None else {}

    def _log_dropped(self) -> dict[str, int]:
        """Lines per log target (file, journal, syslog) that were not taken."""
        return self._routes.dropped()

    def _add_listener(self, listener: Callable[[Event], None]) -> None:
        """Call *listener* for every event, synchronously (it must not block or raise)."""
        self._bus.add_listener(listener)

    def _forget(self, name: str) -> None:
        runner = self._runners.pop(name, None)
        self._instances.pop(name, None)
        self._dependents = None
        self._own_intensity.pop(name, None)
        if runner is not None:
            runner.close()


def _refusal(name: str, message: str) -> PolicyError:
    """A PolicyError about the service *name* (``<api>: services.NAME: message``)."""
    return PolicyError(
        [PolicyIssue("<api>", f"services.{name}", None, f"services.{name}: {message}")]
    )


def _done(runner: Runner) -> bool:
    """Nothing runs and nothing will without being asked: ended, failed, or blocked for good."""
    if runner.running or runner.reaping:
        return False
    return runner.state in (State.ENDED, State.FAILED) or runner.blocked_on is not None


def _failed(runner: Runner) -> bool:
    if runner.state is State.FAILED or runner.blocked_on is not None:
        return True
    oneshot = runner.instance.spec.type == "oneshot"
    return oneshot and runner.state is State.ENDED and not conditions.completed(runner)


@asynccontextmanager
async def open_supervisor(
    policy: Policy, *, output: Callable[[str, str], None] | None = None
) -> AsyncIterator[Supervisor]:
    """Run *policy*; yield the :class:`Supervisor` once every service is started and ready.

    Leaving the block, an exception or a cancellation stops every service
    gracefully (dependents first; stop signal, then SIGKILL after its stop
    timeout) and waits until every process is reaped.  If restart intensity
    is exceeded, everything is stopped, the block is cancelled and
    :class:`nsup.GaveUpError` is raised.  A service whose runner hits an
    unexpected error (an *output* callback that raises, say) is left
    ``failed`` and the rest run on; an unexpected error in the supervisor
    itself stops everything and is raised here.

    Args:
        policy: from :func:`nsup.load_policy` or :meth:`nsup.Policy.from_dict`.
        output: ``output(name, line)`` for each line services print to an
            ``inherit`` stdout/stderr; default writes ``name | line`` to stdout.

    Example::

        async with nsup.open_supervisor(nsup.load_policy("app.toml")) as sup:
            print(sup.status()["web"].pid)
            await sup.restart("web")

    Raises:
        nsup.GaveUpError: restart intensity was exceeded.
    """
    async with trio.open_nursery() as nursery:
        sup = Supervisor._create(policy, nursery, output)  # noqa: SLF001 - the metaclass's private constructor
        nursery.start_soon(_cancel_on_give_up, sup, nursery.cancel_scope)
        try:
            await sup._start_all()  # noqa: SLF001 - same module
            if sup.gave_up is None:
                yield sup
        finally:
            with trio.CancelScope(shield=True):
                await sup.stop_all()
                await sup._close_output()  # noqa: SLF001 - same module
            nursery.cancel_scope.cancel()
    if sup.gave_up is not None:
        raise sup.gave_up


async def _cancel_on_give_up(sup: Supervisor, scope: trio.CancelScope) -> None:
    await sup.wait_finished()
    if sup.gave_up is not None:
        scope.cancel()
