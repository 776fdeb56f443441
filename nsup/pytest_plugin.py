"""nsup's pytest plugin, registered through the ``pytest11`` entry point.

Fixtures for pytest-trio tests:

- ``nsup_spawn``: ``worker = await nsup_spawn(["python3", "worker.py"], namespaces=[...])``
  starts an isolated worker (argv plus :class:`nsup.ProcessSpec` keywords, or
  a ready ``ProcessSpec``) and returns a :class:`nsup.testing.Worker`.
- ``nsup_supervisor``: ``sup = await nsup_supervisor(policy_dict_or_path)``
  runs a policy and returns the :class:`nsup.Supervisor` once every service
  is ready.

Why it works this way
---------------------

The promise is that nothing a test started outlives it, whatever the test
did: passed, failed, timed out or was cancelled.  Stopping the processes the
test holds handles to is not enough.  Without a PID namespace, a worker's
children are ordinary processes: a daemon that double-forks leaves the tree
and is re-parented to PID 1 (or to a subreaper), where no parent/child walk
from the worker finds it.

So every process a test starts is *tagged*: the harness adds
``NSUP_TEST_ID=<uuid>`` to its environment (on top of ``os.environ`` when the
spec inherits it), one uuid per test, for workers and for every service of
its supervisors alike.  Children inherit the environment, and it stays in
``/proc/PID/environ`` even after a re-parenting.  At teardown the harness

1. reads ``/proc/*/environ`` and sorts the tagged processes into those still
   below a live worker or service, and those that escaped;
2. stops every worker (its stop signal; SIGKILL after the teardown timeout)
   and every supervisor (gracefully, by the policy's own stop settings),
   concurrently, and reaps them;
3. reads ``/proc`` again and stops whatever is still tagged: SIGTERM, then
   SIGKILL after the teardown timeout, waiting on a pidfd each (so the wait
   is an event, not a poll, even for processes that are not our children);
4. reports every process that escaped and every process that had to be
   killed, with its pid and command line.  The report is raised from a
   plain (not trio) fixture, so pytest shows it as an error in the test's
   teardown; with ``--nsup-leaks=warn`` it is a :class:`nsup.testing.NsupLeakWarning`.
   Everything is already dead when the report is made.

Why not a cgroup per test: cgroups need root (or a delegated subtree), v1
and v2 differ, and ``Process`` already gives a cgroup only to workers with
limits.  The environment tag works unprivileged and everywhere, with two
limits documented in ``docs/testing.md``: a process that replaces its whole
environment (``env -i``, ``execve`` with a new ``envp``) drops the tag, and
an unprivileged run can read ``/proc/PID/environ`` only for its own uid.  A
worker in its own PID namespace cannot escape at all: its init is PID 1 and
the kernel kills the namespace when the init dies.

Options: ``--nsup-teardown-timeout SECONDS`` (ini ``nsup_teardown_timeout``,
default 5) and ``--nsup-leaks error|warn`` (ini ``nsup_leaks``, default
``error``).
"""

from __future__ import annotations

import os
import shlex
import signal
import uuid
import warnings
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from ._clone import syscalls as _sys
from ._engine.supervisor import Supervisor
from ._policy import Policy, load_policy
from ._process import start_process
from ._spec import ProcessSpec
from .testing import NsupLeakWarning, SpawnFixture, SupervisorFixture, Worker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Mapping

__all__ = ["MARKER", "nsup_spawn", "nsup_supervisor"]

MARKER = "NSUP_TEST_ID"
"""The environment variable that tags every process a test starts."""

_KILL_WAIT = 10.0  # seconds to wait for SIGKILL to take effect (a process in D state)
_ROUNDS = 3  # sweeps for processes forked while the previous sweep was stopping them


# --- options ----------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--nsup-teardown-timeout`` and ``--nsup-leaks`` and their ini keys."""
    group = parser.getgroup("nsup", "nsup test harness")
    group.addoption(
        "--nsup-teardown-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="at teardown, seconds a process may take to exit after its stop signal "
        "before it is killed and reported (default: ini nsup_teardown_timeout, else 5)",
    )
    group.addoption(
        "--nsup-leaks",
        choices=("error", "warn"),
        default=None,
        help="what a process that escaped or had to be killed at teardown does to its test: "
        "'error' (default: ini nsup_leaks) or 'warn' (an NsupLeakWarning)",
    )
    parser.addini(
        "nsup_teardown_timeout", "seconds before SIGKILL at teardown (default 5)", default="5"
    )
    parser.addini("nsup_leaks", "'error' (default) or 'warn' for leaked processes", default="error")


@attrs.frozen
class _Options:
    timeout: float
    leaks: str


def _options(config: pytest.Config) -> _Options:
    timeout = config.getoption("nsup_teardown_timeout")
    if timeout is None:
        raw = config.getini("nsup_teardown_timeout")
        try:
            timeout = float(raw)
        except ValueError:
            raise pytest.UsageError(
                f"nsup_teardown_timeout must be a number of seconds (got {raw!r})"
            ) from None
    if not timeout > 0:
        raise pytest.UsageError(f"the nsup teardown timeout must be positive (got {timeout!r})")
    leaks = config.getoption("nsup_leaks") or config.getini("nsup_leaks")
    if leaks not in ("error", "warn"):
        raise pytest.UsageError(f"nsup_leaks must be 'error' or 'warn' (got {leaks!r})")
    return _Options(float(timeout), leaks)


def pytest_configure(config: pytest.Config) -> None:
    """Check the options once, so that a bad value fails the run before any test."""
    _options(config)


# --- finding tagged processes ------------------------------------------------


@attrs.frozen
class _Found:
    ppid: int
    cmdline: str


def _tagged(needle: bytes) -> dict[int, _Found]:
    r"""Live (not zombie) processes whose environment holds *needle* (``\0NAME=value\0``)."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle not in b"\0" + f.read():
                    continue
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # gone, or another uid's (unprivileged runs see only their own)
        if fields[0] == b"Z":
            continue  # already dead; its parent (or PID 1) reaps it
        argv = [a.decode(errors="replace") for a in cmdline.split(b"\0") if a]
        found[int(name)] = _Found(int(fields[1]), shlex.join(argv))
    return found


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rpartition(b")")[2].split()[1])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return 0


def _below(pid: int, roots: set[int], found: Mapping[int, _Found]) -> bool:
    """True if *pid* is one of *roots* or descends from one."""
    seen: set[int] = set()
    while pid > 1 and pid not in seen:
        if pid in roots:
            return True
        seen.add(pid)
        pid = found[pid].ppid if pid in found else _ppid(pid)
    return False


def _still_tagged(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return needle in b"\0" + f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False


async def _stop_pids(pids: list[int], needle: bytes, grace: float) -> set[int]:
    """SIGTERM each tagged pid, SIGKILL those alive after *grace* seconds; return the killed.

    Each process is held by a pidfd opened after checking the tag again, so a
    recycled pid is never signalled; exits are awaited on the pidfds.
    """
    fds: dict[int, int] = {}
    killed: set[int] = set()
    try:
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            fds[pid] = fd
            if not _still_tagged(pid, needle):
                del fds[pid]
                os.close(fd)
        alive = await _signal_and_wait(fds, signal.SIGTERM, grace)
        killed.update(alive)
        await _signal_and_wait({p: fds[p] for p in alive}, signal.SIGKILL, _KILL_WAIT)
    finally:
        for fd in fds.values():
            _reap_if_ours(fd)
            trio.lowlevel.notify_closing(fd)
            os.close(fd)
    return killed


async def _signal_and_wait(fds: dict[int, int], sig: int, grace: float) -> set[int]:
    """Send *sig* through each pidfd; return the pids still alive after *grace* seconds."""
    alive = set(fds)

    async def wait_one(pid: int) -> None:
        await trio.lowlevel.wait_readable(fds[pid])
        alive.discard(pid)

    for fd in fds.values():
        try:
            signal.pidfd_send_signal(fd, sig)
        except ProcessLookupError:
            pass
    with trio.move_on_after(grace):
        async with trio.open_nursery() as nursery:
            for pid in fds:
                nursery.start_soon(wait_one, pid)
    return alive


def _reap_if_ours(pidfd: int) -> None:
    """Reap the process if it is our child (it is, when we are a subreaper)."""
    try:
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG | _sys.WALL)
    except ChildProcessError:
        pass


# --- the harness --------------------------------------------------------------


class _Supervised:
    """A supervisor the test started, and how to ask its task to stop it."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.stop_requested = trio.Event()
        self.finished = trio.Event()

    def pids(self) -> set[int]:
        # The process nsup started for each instance: the init when there is one.
        statuses = self.sup.status().values()
        return {pid for s in statuses if (pid := s.init_pid or s.pid) is not None}

    async def stop(self) -> None:
        self.stop_requested.set()
        await self.finished.wait()


class _Harness:
    """Everything one test started through the fixtures, and the teardown that ends it."""

    def __init__(
        self,
        options: _Options,
        findings: list[str],
        node: pytest.Item,
        supervisors: trio.Nursery,
        captures: trio.Nursery,
    ) -> None:
        self.options = options
        self.findings = findings
        self.node = node
        self.test_id = uuid.uuid4().hex
        self.needle = f"\0{MARKER}={self.test_id}\0".encode()
        self.workers: list[Worker] = []
        self.supervisors: list[_Supervised] = []
        self._supervisor_nursery = supervisors
        self._captures = captures

    def tagged_env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        """*env* (or ``os.environ`` for None) plus this test's tag."""
        result = dict(os.environ if env is None else env)
        result[MARKER] = self.test_id
        return result

    # --- nsup_spawn ---

    async def spawn(self, argv_or_spec: ProcessSpec | list[str], **options: Any) -> Worker:
        """Start a worker; see the ``nsup_spawn`` fixture."""
        shared_r = shared_w = -1
        if isinstance(argv_or_spec, ProcessSpec):
            if options:
                raise TypeError(
                    "nsup_spawn() takes either a ProcessSpec or argv with keyword options, not "
                    f"both (got a spec and {sorted(options)})"
                )
            spec = attrs.evolve(argv_or_spec, env=self.tagged_env(argv_or_spec.env))
        else:
            options.setdefault("stdin", "pipe")
            if "stdout" not in options or "stderr" not in options:
                shared_r, shared_w = os.pipe()
                options.setdefault("stdout", shared_w)
                options.setdefault("stderr", shared_w)
            options["env"] = self.tagged_env(options.get("env"))
        try:
            if not isinstance(argv_or_spec, ProcessSpec):
                spec = ProcessSpec(argv=argv_or_spec, **options)
            proc = await start_process(spec)
        except BaseException:
            if shared_r >= 0:
                os.close(shared_r)
            raise
        finally:
            if shared_w >= 0:
                os.close(shared_w)  # only the child writes to it now
        streams: list[trio.abc.ReceiveStream] = []
        if shared_r >= 0:
            streams.append(trio.lowlevel.FdStream(shared_r))
        streams.extend(s for s in (proc.stdout, proc.stderr) if s is not None)
        worker: Worker = Worker._create(proc, streams)  # noqa: SLF001 - the metaclass's private constructor
        self.workers.append(worker)
        for stream in streams:
            self._captures.start_soon(worker._capture, stream)  # noqa: SLF001 - ours to run
        return worker

    # --- nsup_supervisor ---

    async def supervise(
        self,
        policy: Policy | Mapping[str, Any] | str | os.PathLike[str],
        *,
        output: Callable[[str, str], None] | None = None,
    ) -> Supervisor:
        """Run a policy; see the ``nsup_supervisor`` fixture."""
        if isinstance(policy, Policy):
            pass
        elif isinstance(policy, str | os.PathLike):
            policy = load_policy(policy)
        else:
            policy = Policy.from_dict(policy)
        services = {
            name: attrs.evolve(service, env=self.tagged_env(service.env))  # type: ignore[arg-type]  # mypy's attrs plugin cannot solve the generic converter
            for name, service in policy.services.items()
        }
        policy = attrs.evolve(policy, services=services)
        sup: Supervisor = await self._supervisor_nursery.start(self._run_supervisor, policy, output)
        return sup

    async def _run_supervisor(
        self,
        policy: Policy,
        output: Callable[[str, str], None] | None,
        *,
        task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            sup = Supervisor._create(policy, nursery, output)  # noqa: SLF001 - the metaclass's private constructor
            handle = _Supervised(sup)
            self.supervisors.append(handle)
            try:
                await sup._start_all()  # noqa: SLF001 - the harness runs its own supervisor
                if sup.gave_up is None:
                    task_status.started(sup)
                    await _until_stopped(handle)
            finally:
                with trio.CancelScope(shield=True):
                    await self._stop_supervisor(sup)
                    handle.finished.set()
                nursery.cancel_scope.cancel()
        if sup.gave_up is not None:
            raise sup.gave_up

    async def _stop_supervisor(self, sup: Supervisor) -> None:
        # The supervisor publishes a "killed" event for each service that ignored
        # its stop signal; each becomes a finding.
        killed = []

        async def collect(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            events = sup.events()
            task_status.started()
            # Ends when stop_all() closes the bus.
            killed.extend([event async for event in events if event.kind == "killed"])

        commands = {i.name: i.spec.command for i in sup.policy.expanded()}
        async with trio.open_nursery() as nursery:
            await nursery.start(collect)
            await sup.stop_all()
        for event in killed:
            command = shlex.join(commands.get(event.service, ()))
            what = event.message.replace("; sent SIGKILL", "")
            self.findings.append(f"pid {event.pid} {what} at teardown and was killed: {command}")

    # --- teardown ---

    async def teardown(self) -> None:
        """Stop and reap everything; record what escaped or had to be killed."""
        roots = {w.pid for w in self.workers if w.poll() is None}
        for handle in self.supervisors:
            roots |= handle.pids()
        before = _tagged(self.needle)
        escaped = {pid for pid in before if not _below(pid, roots, before)}
        async with trio.open_nursery() as nursery:
            for handle in self.supervisors:
                nursery.start_soon(handle.stop)
            for worker in self.workers:
                nursery.start_soon(self._stop_worker, worker)
        killed: dict[int, _Found] = {}
        for _ in range(_ROUNDS):
            left = _tagged(self.needle)
            if not left:
                break
            for pid in await _stop_pids(list(left), self.needle, self.options.timeout):
                killed[pid] = left[pid]
        self._report_leftovers(before, escaped, killed)
        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                nursery.start_soon(worker.wait_output_closed)
        self._captures.cancel_scope.cancel()
        for worker in self.workers:
            if worker.output:
                command = shlex.join(worker.spec.argv)
                self.node.add_report_section(
                    "call", f"output of worker {worker.pid} `{command}`", worker.output
                )
            await worker.process.aclose()

    async def _stop_worker(self, worker: Worker) -> None:
        if worker.poll() is not None:
            return
        timeout = self.options.timeout
        worker.send_signal(worker.spec.stop_signal)
        with trio.move_on_after(timeout):
            await worker.wait()
        if worker.status is None:
            worker.kill()
            await worker.wait()
            self.findings.append(
                f"pid {worker.pid} ignored {worker.spec.stop_signal.name} for {timeout:g}s "
                f"at teardown and was killed: {shlex.join(worker.spec.argv)}"
            )

    def _report_leftovers(
        self, before: dict[int, _Found], escaped: set[int], killed: dict[int, _Found]
    ) -> None:
        # An escapee may already be gone: a worker's cgroup, when it has one,
        # kills what is left in it when the worker is closed.  It escaped all the same.
        for pid in sorted(escaped):
            how = "had to be killed" if pid in killed else "was stopped"
            self.findings.append(
                f"pid {pid} escaped from the test's workers (its parent was pid "
                f"{before[pid].ppid}) and {how} at teardown: {before[pid].cmdline}"
            )
        for pid, found in killed.items():
            if pid not in escaped:
                self.findings.append(
                    f"pid {pid} ignored SIGTERM for {self.options.timeout:g}s at teardown "
                    f"and was killed: {found.cmdline}"
                )


async def _until_stopped(handle: _Supervised) -> None:
    """Return when the test's teardown asks, or when the supervisor gives up."""
    async with trio.open_nursery() as nursery:

        async def watch_give_up() -> None:
            await handle.sup.wait_finished()
            if handle.sup.gave_up is not None:
                nursery.cancel_scope.cancel()

        nursery.start_soon(watch_give_up)
        await handle.stop_requested.wait()
        nursery.cancel_scope.cancel()


def _report(findings: list[str], leaks: str) -> None:
    message = "nsup: the test left processes behind (all are stopped now):\n" + "\n".join(
        f"  {line}" for line in findings
    )
    if leaks == "warn":
        warnings.warn(NsupLeakWarning(message), stacklevel=1)
    else:
        pytest.fail(message, pytrace=False)


# --- the fixtures -------------------------------------------------------------


@pytest.fixture
def _nsup_findings(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Collect what the harness found; report it after the trio part is over.

    A plain fixture, so that pytest shows a leak as an error in the test's
    teardown rather than as a failure of the test itself.
    """
    if request.node.get_closest_marker("trio") is None:
        names = ", ".join(n for n in ("nsup_spawn", "nsup_supervisor") if n in request.fixturenames)
        pytest.fail(
            f"the nsup fixtures ({names}) need a trio test, and {request.node.name!r} is not one; "
            "make it 'async def' and mark it with @pytest.mark.trio, or set trio_mode = true "
            "in the pytest configuration (pytest-trio)",
            pytrace=False,
        )
    findings: list[str] = []
    yield findings
    if findings:
        _report(findings, _options(request.config).leaks)


@pytest.fixture
async def _nsup_harness(
    request: pytest.FixtureRequest, _nsup_findings: list[str]
) -> AsyncIterator[_Harness]:
    """The per-test harness behind ``nsup_spawn`` and ``nsup_supervisor``."""
    async with trio.open_nursery() as supervisors, trio.open_nursery() as captures:
        harness = _Harness(
            _options(request.config), _nsup_findings, request.node, supervisors, captures
        )
        try:
            yield harness
        finally:
            with trio.CancelScope(shield=True):
                await harness.teardown()


@pytest.fixture
async def nsup_spawn(_nsup_harness: _Harness) -> SpawnFixture:
    """Start workers; everything they start is stopped, reaped and checked at teardown.

    Call it as ``await nsup_spawn(argv, **spec_options)`` or
    ``await nsup_spawn(spec)``.  With argv, stdin defaults to a pipe
    (:meth:`nsup.testing.Worker.send`) and stdout and stderr, unless given,
    share one pipe that the harness reads (:attr:`nsup.testing.Worker.output`).
    Returns a :class:`nsup.testing.Worker`.
    """
    return _nsup_harness.spawn


@pytest.fixture
async def nsup_supervisor(_nsup_harness: _Harness) -> SupervisorFixture:
    """Run policies; each is stopped gracefully at teardown, and leaks are checked.

    Call it as ``await nsup_supervisor(policy)`` with a dict in the policy
    file's shape, a path to a TOML policy, or an :class:`nsup.Policy`; it
    returns the :class:`nsup.Supervisor` once every service is ready.  If
    the supervisor gives up during the test, the test is cancelled with
    :class:`nsup.GaveUpError`.
    """
    return _nsup_harness.supervise
