"""The supervisor: one runner per instance, Erlang/OTP strategies, intensity, reload.

Runners (``runner.py``) keep each instance going by the restart table; when
one exits and its restart rule wants it back, it asks :meth:`Supervisor.on_exit`,
which records the restart against the intensity and picks the strategy:

- ``one_for_one``: the runner restarts alone, after its backoff delay;
- ``one_for_all``: every other instance is stopped (in reverse dependency
  order), then all start again in dependency order;
- ``rest_for_one``: the same, for the instance and those after it in
  dependency order.

More than ``max_restarts`` restarts within ``within`` seconds gives up: every
instance is stopped and the supervisor ends with exit code 1, naming the
instance that tripped it.  Stopping honours dependencies both ways: an
instance stops only once everything that depends on it is down, and returns
as soon as the last process is reaped.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal

import trio

from .._errors import NsupError
from .._policy.preflight import runtime_base
from .._words import count, duration
from .events import Event, EventBus
from .output import prefix_writer
from .restart import Input, Intensity, State
from .runner import Runner, ServiceStatus

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from .._exitstatus import ExitStatus
    from .._policy import Policy, ServiceInstance

__all__ = ["GaveUpError", "Supervisor", "open_supervisor"]

Decision = Literal["restart", "group", "give_up"]
QUIET = frozenset({State.DOWN, State.ENDED})
OUTPUT_DRAIN = 1.0  # seconds stop_all waits for output pipes to reach EOF


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


def _runtime_dir() -> str:
    path = tempfile.mkdtemp(prefix="nsup-", dir=runtime_base())
    os.chmod(path, 0o711)  # noqa: S103 - children of other uids may reach their notify socket, not list it
    return path


class Supervisor:
    """A running policy.  Made by :func:`open_supervisor` (or ``nsup run``)."""

    def __init__(
        self,
        policy: Policy,
        nursery: trio.Nursery,
        output: Callable[[str, str], None] | None = None,
    ) -> None:
        """Prepare runners for *policy*; nothing starts until :meth:`start_all`."""
        self.policy = policy
        self._nursery = nursery
        self.output = output or prefix_writer()
        self.bus = EventBus()
        self.runtime_dir = _runtime_dir()
        self.runners: dict[str, Runner] = {}
        self.order: list[str] = []
        self.intensity = Intensity(policy.supervisor.max_restarts, policy.supervisor.within)
        self.gave_up: GaveUpError | None = None
        self.done = trio.Event()
        self.started_at = time.time()
        self._stopping = False
        self._group_busy = False
        self._instances: dict[str, ServiceInstance] = {}
        self.pumps = 0  # output pipes still being read
        self.pumps_changed = trio.Event()

    # --- life cycle -----------------------------------------------------------

    async def _add(self, instance: ServiceInstance) -> Runner:
        runner = Runner(self, instance)
        self.runners[instance.name] = runner
        self._instances[instance.name] = instance
        await self._nursery.start(runner.run)
        return runner

    async def start_all(self) -> None:
        """Start every instance; return once all are ready (or ended, or nsup gave up)."""
        for instance in self.policy.expanded():
            await self._add(instance)
            self.order.append(instance.name)
        for name in self.order:
            self.runners[name].send(Input.START)
        await self._wait_settled(self.order)

    async def _wait_settled(self, names: Iterable[str]) -> None:
        for name in list(names):
            runner = self.runners.get(name)
            if runner is not None:
                await runner.wait_for(
                    lambda r: r.state in (State.UP, State.ENDED) or self.done.is_set()
                )

    async def stop_all(self) -> None:
        """Stop every instance, dependents first; return once every process is reaped."""
        self._stopping = True
        await self._stop_group(list(self.runners))
        # Print what the services wrote before they died.  A descendant that
        # escaped (no PID namespace) may hold a pipe open: wait a little only.
        with trio.move_on_after(OUTPUT_DRAIN):
            while self.pumps:
                await self.pumps_changed.wait()
                self.pumps_changed = trio.Event()
        self._finish()
        for runner in self.runners.values():
            runner.close()

    async def _stop_group(self, names: list[str]) -> None:
        members = set(names)
        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(self._stop_one, name, members)

    def _dependents(self, name: str) -> list[Runner]:
        return [r for r in self.runners.values() if name in r.instance.depends_on]

    async def _stop_one(self, name: str, members: set[str]) -> None:
        runner = self.runners[name]
        for dependent in self._dependents(name):
            if dependent.name in members:
                await dependent.wait_for(lambda r: r.state in QUIET)
        runner.send(Input.STOP)
        await runner.wait_for(lambda r: r.state in QUIET)

    def _finish(self) -> None:
        if not self.done.is_set():
            self.done.set()
            self.bus.close()
            shutil.rmtree(self.runtime_dir, ignore_errors=True)

    # --- what runners ask -----------------------------------------------------------

    def publish(self, event: Event) -> None:
        """Hand *event* to every subscriber."""
        self.bus.publish(event)

    def on_exit(self, runner: Runner, status: ExitStatus | None) -> Decision:
        """Decide what follows an exit that *runner*'s restart rule wants restarted."""
        del status
        if self._stopping:
            return "give_up"
        if self.intensity.record(time.monotonic()):
            sup = self.policy.supervisor
            self.gave_up = GaveUpError(runner.name, sup.max_restarts, sup.within)
            self.publish(Event(kind="gave_up", service=runner.name, message=str(self.gave_up)))
            self._nursery.start_soon(self.stop_all)
            return "give_up"
        strategy = self.policy.supervisor.strategy
        if strategy == "one_for_one" or self._group_busy:
            return "restart"
        index = self.order.index(runner.name)
        group = self.order if strategy == "one_for_all" else self.order[index:]
        self._nursery.start_soon(self._restart_group, runner, list(group))
        return "group"

    async def _restart_group(self, failed: Runner, group: list[str]) -> None:
        self._group_busy = True
        try:
            delay = failed._backoff.next_delay(time.monotonic() - failed._started_mono)  # noqa: SLF001
            self.publish(
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
            for name in group:
                self.runners[name].restarts += name == failed.name
                self.runners[name].send(Input.START)
        finally:
            self._group_busy = False

    def state_changed(self, runner: Runner) -> None:
        """Called after every transition: notice when nothing is left to run."""
        del runner
        if self._stopping or self._group_busy or self.done.is_set():
            return
        if self.runners and all(r.state is State.ENDED for r in self.runners.values()):
            self._finish()

    # --- the public API ---------------------------------------------------------

    def status(self) -> dict[str, ServiceStatus]:
        """A snapshot of every instance, in dependency order."""
        return {name: self.runners[name].snapshot() for name in self.order if name in self.runners}

    def _named(self, names: Iterable[str]) -> list[Runner]:
        found = []
        for name in names:
            matches = [
                r for n, r in self.runners.items() if n == name or n.rpartition(".")[0] == name
            ]
            if not matches:
                known = ", ".join(self.order)
                raise KeyError(f"no service {name!r} in this supervisor (known: {known})")
            found.extend(matches)
        return found

    async def start(self, *names: str) -> None:
        """Start the named services (a service name covers all its instances); wait until ready."""
        runners = self._named(names)
        for runner in runners:
            runner.send(Input.START)
        await self._wait_settled(r.name for r in runners)

    async def stop(self, *names: str) -> None:
        """Stop the named services; return once their processes are reaped."""
        runners = self._named(names)
        for runner in runners:
            runner.send(Input.STOP)
        for runner in runners:
            await runner.wait_for(lambda r: r.state in QUIET)

    async def restart(self, *names: str) -> None:
        """Restart the named services now (no backoff, not counted toward intensity); wait until ready."""
        runners = self._named(names)
        generations = {r.name: r.generation for r in runners}
        for runner in runners:
            runner.send(Input.RESTART)
        for runner in runners:
            await runner.wait_for(
                lambda r: (
                    (r.generation > generations[r.name] and r.state in (State.UP, State.ENDED))
                    or self.done.is_set()
                )
            )

    def signal(self, name: str, signo: int) -> int:
        """Send *signo* to every running instance of *name*; return how many got it."""
        sent = 0
        for runner in self._named([name]):
            if runner.proc is not None and runner.proc.status is None:
                runner.proc.send_signal(signo)
                sent += 1
        return sent

    def events(self) -> AsyncIterator[Event]:
        """Follow events from now on: starting, started, ready, exited, restarting, gave_up..."""
        return self.bus.subscribe()

    async def reload(self, policy: Policy) -> dict[str, list[str]]:
        """Apply *policy*: restart changed instances, stop removed ones, start new ones.

        Unchanged instances are not touched.  Returns the names per outcome.
        """
        new = {i.name: i for i in policy.expanded()}
        removed = [n for n in self.order if n not in new]
        changed = [n for n in self.order if n in new and new[n] != self._instances[n]]
        added = [n for n in new if n not in self.runners]
        self.policy = policy
        self.intensity.max_restarts = policy.supervisor.max_restarts
        self.intensity.within = policy.supervisor.within
        await self._stop_group(removed + changed)
        for name in removed + changed:
            self._forget(name)
        self.order = list(new)
        for name in changed + added:
            await self._add(new[name])
        for name in self.order:
            if name in changed or name in added:
                self.runners[name].send(Input.START)
        await self._wait_settled(changed + added)
        return {"changed": changed, "removed": removed, "added": added}

    def _forget(self, name: str) -> None:
        runner = self.runners.pop(name)
        self._instances.pop(name)
        runner.close()


@asynccontextmanager
async def open_supervisor(
    policy: Policy, *, output: Callable[[str, str], None] | None = None
) -> AsyncIterator[Supervisor]:
    """Run *policy*; yield the :class:`Supervisor` once every service is started and ready.

    Leaving the block, an exception or a cancellation stops every service
    gracefully (dependents first; stop signal, then SIGKILL after its stop
    timeout) and waits until every process is reaped.  If restart intensity
    is exceeded, everything is stopped, the block is cancelled and
    :class:`nsup.GaveUpError` is raised.

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
        sup = Supervisor(policy, nursery, output)
        nursery.start_soon(_cancel_on_give_up, sup, nursery.cancel_scope)
        try:
            await sup.start_all()
            if sup.gave_up is None:
                yield sup
        finally:
            with trio.CancelScope(shield=True):
                await sup.stop_all()
            nursery.cancel_scope.cancel()
    if sup.gave_up is not None:
        raise sup.gave_up


async def _cancel_on_give_up(sup: Supervisor, scope: trio.CancelScope) -> None:
    await sup.done.wait()
    if sup.gave_up is not None:
        scope.cancel()
