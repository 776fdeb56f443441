"""``Process``, ``start_process`` and ``spawn``: a child held by its pidfd.

Every signal goes through ``pidfd_send_signal`` and every wait through the
pidfd (``trio.lowlevel.wait_readable``, then ``waitid(P_PIDFD)``), so a
recycled pid can never be hit and nothing polls.  Children are made with
``CLONE_PARENT``, so they are the supervisor's own children; the kernel gives
them the zygote's exit signal (SIGCHLD).  nsup itself never calls
``waitpid(-1)``; code elsewhere in the same program that does would steal
their statuses, as it would from any library that runs children.

The report pipe: the child holds the close-on-exec write end.  EOF means the
exec worked; ``E<stage>:<errno>`` means a stage failed before exec (the child
then exits 127); with nsup's init, ``S<pid>`` means the command runs and, at
the end, ``X<wait status>`` gives the command's own status, so a death by
signal inside is reported as such even though PID 1 itself can only exit.
"""

from __future__ import annotations

import functools
import os
import signal
import warnings
from contextlib import ExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, final

import attrs
import trio

from . import _cgroup
from ._clone import syscalls as _sys
from ._clone.report import command_status, start_verdict
from ._errors import SpawnError, SpecError
from ._exitstatus import ExitStatus
from ._request import build_request, has_init, preflight
from ._spawn_errors import spawn_error
from ._util import NoPublicConstructor
from ._zygote_client import OWNED
from ._zygote_client import clone as _clone_child

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ._spec import ProcessSpec

__all__ = ["Process", "run_process", "spawn", "start_process"]


@final
class Process(metaclass=NoPublicConstructor):
    """A running child, held by its pidfd.

    Made by :func:`nsup.spawn`, :func:`nsup.run_process` (through
    ``nursery.start``) and :func:`nsup.lowlevel.start_process`; it has no
    public constructor.  :meth:`send_signal`, :meth:`terminate` and
    :meth:`kill` only signal, as in trio; :meth:`wait` waits for the exit and
    :meth:`stop` stops the child and waits.

    Attributes:
        pid: the child's pid in the supervisor's PID namespace (with nsup's
            init, that is the init; the command is its child).
        pidfd: the pidfd; valid until the handle is closed.
        spec: the :class:`nsup.ProcessSpec` it was started from.
        command_pid: with nsup's init, the command's pid inside the child's
            PID namespace (usually 2); otherwise None.
        stdin, stdout, stderr: trio streams for ``"pipe"`` stdio, else None.
        status: the :class:`nsup.ExitStatus` once reaped, else None.
        escalated: True once :meth:`stop` had to send SIGKILL.

    """

    _made_by = "nsup.spawn()"

    def __init__(  # noqa: PLR0913 - the private constructor, called by start_process alone
        self,
        spec: ProcessSpec,
        pid: int,
        pidfd: int,
        report_fd: int,
        cgroup: _cgroup.Cgroup | None = None,
        *,
        has_init: bool = True,
    ) -> None:
        self.spec = spec
        self._has_init = has_init
        self._cgroup = cgroup
        self.pid = pid
        self.pidfd = pidfd
        self.command_pid: int | None = None
        self.stdin: trio.lowlevel.FdStream | None = None
        self.stdout: trio.lowlevel.FdStream | None = None
        self.stderr: trio.lowlevel.FdStream | None = None
        self.status: ExitStatus | None = None
        self.escalated = False
        self._report_fd = report_fd
        self._report = b""
        self._wait_lock = trio.Lock()

    def __repr__(self) -> str:
        """Show the pid, the command and where it stands."""
        state = "running" if self.status is None else str(self.status)
        return f"<nsup.Process {self.pid} {list(self.spec.argv)!r}: {state}>"

    def send_signal(self, sig: int) -> None:
        """Send *sig* through the pidfd; a no-op once the child has been reaped.

        With nsup's init the signal goes to the init, which forwards it to the
        command (SIGKILL cannot be forwarded: it ends the whole namespace).
        """
        if self.status is not None:
            return
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except ProcessLookupError:
            pass  # exited, not yet reaped: the wait will tell

    def terminate(self) -> None:
        """Send SIGTERM through the pidfd and return at once, as :meth:`trio.Process.terminate` does.

        It only signals: to stop the child and wait until it is gone, use
        :meth:`stop`.  A no-op once the child has been reaped.
        """
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL: with a PID namespace, everything in it dies.

        Without one, every process in the child's cgroup is killed too, so
        descendants that double-forked away are not left behind.  Without a
        cgroup either, nsup's init (a child subreaper, so every descendant is
        still below it) has its tree killed from here first, bottom up, and
        only then dies itself: the tree kill does not depend on the cgroup.
        """
        if self.status is None and "pid" not in self.spec.namespaces and self._has_init:
            kill_descendants(self.pid)
        self.send_signal(signal.SIGKILL)
        if self._cgroup is not None and "pid" not in self.spec.namespaces:
            self._cgroup.kill_all()

    def statistics(self) -> _cgroup.CgroupStatistics:
        """Return what the child's cgroup has counted: CPU time, throttling, memory, tasks.

        All ``None`` (and ``oom_kills`` 0) when the child has no cgroup, or once
        the handle is closed.
        """
        if self._cgroup is None:
            return _cgroup.CgroupStatistics()
        return self._cgroup.statistics()

    def _oom_kills(self) -> int:
        """``statistics().oom_kills`` alone: one file read, not every counter."""
        return 0 if self._cgroup is None else self._cgroup.oom_kills()

    async def wait(self) -> ExitStatus:
        """Wait until the child exits, reap it, and return how it ended.

        Always a checkpoint.  Cancelling a wait is harmless: the next one picks
        up where it left off.
        """
        async with self._wait_lock:
            if self.status is None:
                await trio.lowlevel.wait_readable(self.pidfd)
                # poll() may have reaped it while we slept (as trio's wait re-checks).
                if self.status is None:
                    self._reap()
        await trio.lowlevel.checkpoint_if_cancelled()
        assert self.status is not None  # noqa: S101 - set by _reap
        return self.status

    def poll(self) -> ExitStatus | None:
        """Reap the child if it has exited, without blocking; return its status or None."""
        if self.status is None:
            info = os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | os.WNOHANG | _sys.WALL)
            if info is not None:
                self._record(info)
        return self.status

    def _reap(self) -> None:
        try:
            info = os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | _sys.WALL)
        except ChildProcessError:
            # Another waitpid(-1) in this program reaped it first: the status is gone.
            warnings.warn(
                f"nsup: the exit status of pid {self.pid} was taken by another waitpid() in this "
                "program; reporting code 255",
                RuntimeWarning,
                stacklevel=3,
            )
            OWNED.discard(self.pid)
            self.status = ExitStatus(code=255)
            return
        assert info is not None  # noqa: S101 - blocking waitid always returns a result
        self._record(info)

    def _record(self, info: os.waitid_result) -> None:
        OWNED.discard(self.pid)
        status = ExitStatus.from_siginfo(info.si_code, info.si_status)
        if self._report_fd >= 0:
            self._read_report()
            status = self._reported() or status
        self.status = self._with_oom(status)

    def _reported(self) -> ExitStatus | None:
        """The command's status from init's ``X<status>`` line, if it has arrived."""
        status = command_status(self._report)
        return None if status is None else ExitStatus.from_wait_status(status)

    def _with_oom(self, status: ExitStatus) -> ExitStatus:
        if status.signal == signal.SIGKILL and self._oom_kills() > 0:
            return attrs.evolve(status, oom_killed=True)
        return status

    def _read_report(self) -> bool:
        """Read what the report pipe holds; return True at EOF."""
        chunk = b"-"
        try:
            while chunk:
                chunk = os.read(self._report_fd, 4096)
                self._report += chunk
        except BlockingIOError:
            return False
        return True

    async def stop(self, grace: float | None = None, *, warn: bool = True) -> ExitStatus:
        """Stop the child and reap it: the spec's stop signal, then SIGKILL after *grace* seconds.

        Returns as soon as the child is reaped.  Shielded from cancellation, so
        it always finishes; calling it on a child that already exited just
        returns its status.

        Args:
            grace: seconds to wait after the stop signal; default the spec's
                ``stop_timeout``.
            warn: if SIGKILL was needed, say so with a RuntimeWarning (given
                after the kill, so a warning turned into an error cannot leave
                the child running).  ``escalated`` is set either way.

        Returns:
            How the child ended (:class:`nsup.ExitStatus`).

        Example::

            status = await proc.stop(grace=2)   # SIGTERM, SIGKILL 2 s later if needed

        """
        timeout = self.spec.stop_timeout if grace is None else grace
        with trio.CancelScope(shield=True):
            if self.status is None:
                self.send_signal(self.spec.stop_signal)
                with trio.move_on_after(timeout) as scope:
                    await self.wait()
                if scope.cancelled_caught:
                    self.kill()
                    self.escalated = True
                    if warn:
                        try:
                            warnings.warn(
                                f"nsup: {self!r} ignored {self.spec.stop_signal.name} for "
                                f"{timeout} seconds; sending SIGKILL",
                                RuntimeWarning,
                                stacklevel=2,
                            )
                        finally:
                            await self.wait()
            status = await self.wait()
        return status  # noqa: RET504 - outside the scope: mypy cannot see a shielded scope never swallows

    async def aclose(self) -> None:
        """Stop the child if it still runs (as :meth:`stop` does), reap it, and close every descriptor."""
        try:
            await self.stop()
        finally:
            for stream in (self.stdin, self.stdout, self.stderr):
                if stream is not None:
                    await stream.aclose()
            self._close_fds()
            if self._cgroup is not None:
                await self._cgroup.aclose()

    def _close_fds(self) -> None:
        for attr in ("pidfd", "_report_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                trio.lowlevel.notify_closing(fd)
                os.close(fd)
                setattr(self, attr, -1)


async def wait_command(proc: Process) -> tuple[ExitStatus, bool]:
    """Wait until *proc*'s command has exited; return how it ended and whether *proc* is reaped.

    nsup's init writes ``X<status>`` on its report pipe once the command is
    reaped (and, without a PID namespace, once everything the command left
    behind is killed and reaped), then exits; the kernel tears its
    namespaces down after that.  When the report has come and the init has
    no child left (nothing of the run is still alive), this returns at once
    with ``(status, False)``: the init only exits from there on, and the
    caller still reaps it (``await proc.wait()``, ``proc.aclose()``).  In
    every other case (no init, an init that was killed, a descendant of the
    command still alive in the namespace) it waits for the exit and reaps,
    as :meth:`Process.wait`, and returns ``(status, True)``.
    """
    fd = proc._report_fd  # noqa: SLF001 - same module's private state
    if fd < 0 or not proc._has_init or proc.status is not None:  # noqa: SLF001
        return await proc.wait(), True
    while True:
        eof = proc._read_report()  # noqa: SLF001
        status = proc._reported()  # noqa: SLF001
        if status is not None and not _sys.children(proc.pid) and proc.status is None:
            # Read after the report: an empty list is the init alone, leaving.
            await trio.lowlevel.checkpoint()
            return proc._with_oom(status), False  # noqa: SLF001
        if eof or status is not None:
            return await proc.wait(), True
        await trio.lowlevel.wait_readable(fd)


def oom_kills(proc: Process) -> int:
    """How many processes the OOM killer ended in *proc*'s cgroup (one file read); 0 without one."""
    return proc._oom_kills()  # noqa: SLF001 - same module's private state


_KILL_ROUNDS = 64  # a tree that keeps forking faster than we kill is a fork bomb; stop there


def kill_descendants(pid: int) -> None:
    """SIGKILL every live descendant of *pid* (a subreaper that is still alive), by pidfd.

    Repeated until a round finds nothing alive that was not already killed,
    as a process may fork while we walk; bounded by ``_KILL_ROUNDS``.
    """
    killed: set[int] = set()
    for _ in range(_KILL_ROUNDS):
        todo = [pid]
        fresh: list[tuple[int, int]] = []
        while todo:
            parent = todo.pop()
            below = _sys.children(parent)
            todo.extend(below)
            fresh.extend((parent, p) for p in below if p not in killed)
        if not fresh:
            return
        for parent, child in fresh:
            # Once the pidfd is open the pid cannot change hands: check it is still below us.
            _sys.signal_pid(child, signal.SIGKILL, functools.partial(_is_child, parent, child))
            killed.add(child)


def _is_child(parent: int, child: int) -> bool:
    return child in _sys.children(parent)


def _stdio_fds(spec: ProcessSpec, stack: ExitStack) -> tuple[list[int], list[tuple[str, int]]]:
    """Return the child's fds 0-2 and our ends of any pipes as (attr, fd)."""
    child: list[int] = []
    ours: list[tuple[str, int]] = []
    for number, (attr, mode) in enumerate(
        (("stdin", spec.stdin), ("stdout", spec.stdout), ("stderr", spec.stderr))
    ):
        if mode == "inherit":
            child.append(number)
        elif mode == "null":
            fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            stack.callback(os.close, fd)
            child.append(fd)
        elif mode == "pipe":
            r, w = os.pipe()
            theirs, mine = (r, w) if number == 0 else (w, r)
            stack.callback(os.close, theirs)
            ours.append((attr, mine))
            child.append(theirs)
        else:
            assert isinstance(mode, int)  # noqa: S101 - the spec's converter allows nothing else
            child.append(mode)
    return child, ours


def _check_join(spec: ProcessSpec, join: object) -> None:
    """Refuse a *join* that is not a live :class:`Process`, or a spec that asks for namespaces too."""
    if join is None:
        return
    if not isinstance(join, Process):
        raise TypeError(f"'join' must be an nsup.Process (got {join!r})")
    if spec.namespaces:
        raise SpecError(
            "'join' enters another child's namespaces; give the spec namespaces=() with it"
        )
    if join.status is not None or join.pidfd < 0:
        raise SpawnError(3, f"'join' names {join!r}, which has exited", "setns")


def _add_cgroup_fds(request: dict[str, Any], fds: list[int], cgroup: _cgroup.Cgroup | None) -> None:
    """Append the cgroup descriptors to *fds* and record their positions in *request*."""
    if cgroup is None:
        return
    if cgroup.dir_fd >= 0:
        request["cgroup"] = len(fds)
        fds.append(cgroup.dir_fd)
    for name, fd in cgroup.join_fds:
        request["cgroup_join"].append((name, len(fds)))
        fds.append(fd)


async def _read_until_started(proc: Process) -> tuple[str, int] | None:
    """Wait for the child's verdict on exec: None if it runs, else (stage, errno)."""
    while True:
        eof = proc._read_report()  # noqa: SLF001 - same module's private state
        verdict = start_verdict(proc._report)  # noqa: SLF001
        if isinstance(verdict, tuple):
            return verdict
        if verdict is not None:
            proc.command_pid = verdict
            return None
        if eof:
            if proc._has_init:  # noqa: SLF001
                return "init", 0  # init died before it could start the command
            return None
        await trio.lowlevel.wait_readable(proc._report_fd)  # noqa: SLF001


async def start_process(spec: ProcessSpec, *, join: Process | None = None) -> Process:
    """Start *spec* and return its :class:`nsup.Process` once the command has been exec'd.

    The low-level form of :func:`nsup.spawn`: the caller owns the result and
    must ``await proc.aclose()`` it (usually in a ``finally``), or the child
    keeps running.

    Args:
        spec: what to run (:class:`nsup.ProcessSpec`).
        join: a running :class:`nsup.Process` whose namespaces the child
            enters (``setns`` on its pidfd) instead of creating new ones, as
            ``nsenter`` does; *spec* must then have ``namespaces=()``, and
            the command runs without nsup's init.

    Returns:
        The running :class:`nsup.Process`.

    Raises:
        nsup.SpawnError: a namespace, mount, exec or other stage failed, or
            *join* has exited; the child (if any) has been reaped and nothing
            is left running.
        nsup.SpecError: *join* was given with a spec that asks for namespaces.
        TypeError: *join* is not an :class:`nsup.Process`.

    Example::

        proc = await nsup.lowlevel.start_process(spec)
        try:
            await proc.wait()
        finally:
            await proc.aclose()

    """
    _check_join(spec, join)
    rootfs = preflight(spec)
    await trio.lowlevel.checkpoint_if_cancelled()  # already cancelled: start nothing
    with ExitStack() as cleanup_on_fail, ExitStack() as child_ends:
        cgroup = _cgroup.create(spec.limits)
        if cgroup is not None:
            cleanup_on_fail.callback(cgroup.remove_now)
            child_ends.callback(cgroup.close_fds)
        report_r, report_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        cleanup_on_fail.callback(os.close, report_r)
        child_ends.callback(os.close, report_w)
        stdio, ours = _stdio_fds(spec, child_ends)
        for _attr, fd in ours:
            cleanup_on_fail.callback(os.close, fd)
        listen = range(3, 3 + len(spec.listen_fds))
        targets = [0, 1, 2, *listen, *spec.pass_fds]
        request = build_request(spec, targets, rootfs, join)
        fds = [report_w, *stdio, *(fd for _name, fd in spec.listen_fds), *spec.pass_fds.values()]
        if join is not None:
            if join.status is not None or join.pidfd < 0:
                raise SpawnError(3, f"'join' names {join!r}, which has exited", "setns")
            request["join"] = len(fds)
            fds.append(join.pidfd)
        _add_cgroup_fds(request, fds, cgroup)
        pid, err, message, pidfd = await _clone_child(request, fds)
        child_ends.close()  # only the child holds them now
        if pid <= 0:
            raise spawn_error(spec, "clone3", err, request["flags"], message)
        cleanup_on_fail.pop_all()
        proc = Process._create(  # noqa: SLF001 - the metaclass's private constructor
            spec, pid, pidfd, report_r, cgroup, has_init=has_init(spec, join)
        )
    for attr, fd in ours:
        setattr(proc, attr, trio.lowlevel.FdStream(fd))  # the stream owns fd now
    try:
        failure = (err and ("uid_map", err)) or await _read_until_started(proc)
        # The clone is shielded and the verdict may already be waiting: honour a
        # cancellation that arrived meanwhile, so this is always a checkpoint.
        await trio.lowlevel.checkpoint_if_cancelled()
    except BaseException:
        with trio.CancelScope(shield=True):
            proc.kill()
            await proc.aclose()
        raise
    if failure is not None:
        with trio.CancelScope(shield=True):
            proc.kill()
            await proc.aclose()
        stage, errno = failure
        raise spawn_error(spec, stage, errno, request["flags"], message)
    if not proc._has_init:  # noqa: SLF001
        os.close(proc._report_fd)  # noqa: SLF001 - EOF seen; nothing more will come
        proc._report_fd = -1  # noqa: SLF001
    return proc


@asynccontextmanager
async def spawn(spec: ProcessSpec, *, join: Process | None = None) -> AsyncIterator[Process]:
    """Start *spec* and yield its :class:`nsup.Process`; stop and reap it on the way out.

    Leaving the block, an exception or a cancellation stops the child with
    ``spec.stop_signal``, then SIGKILL after ``spec.stop_timeout``, and waits
    until it is reaped: nothing is ever left behind.

    Args:
        spec: what to run (:class:`nsup.ProcessSpec`).
        join: a running :class:`nsup.Process` whose namespaces the child
            enters instead of creating its own (see
            :func:`nsup.lowlevel.start_process`).

    Example::

        spec = nsup.ProcessSpec(argv=["sleep", "10"], namespaces={"pid", "net"})
        async with nsup.spawn(spec) as proc:
            proc.terminate()             # SIGTERM through the pidfd
            status = await proc.wait()   # ExitStatus(code=None, signal=15)

    Raises:
        nsup.SpawnError: the child could not be started (see
            :func:`nsup.lowlevel.start_process`).

    """
    proc = await start_process(spec, join=join)
    try:
        yield proc
    finally:
        with trio.CancelScope(shield=True):
            await proc.aclose()


async def run_process(
    spec: ProcessSpec,
    *,
    join: Process | None = None,
    task_status: trio.TaskStatus[Process] = trio.TASK_STATUS_IGNORED,
) -> ExitStatus:
    """Run *spec* until it exits and return how it ended; stop it if cancelled.

    Modelled on :func:`trio.run_process`.  Under ``await nursery.start(nsup.run_process,
    spec)`` the running :class:`nsup.Process` is handed back as soon as the
    command has been exec'd, while this task supervises it: it waits for the
    exit, and on cancellation (or any other exception) stops the child (its
    stop signal, then SIGKILL after ``stop_timeout``), reaps it and re-raises.
    Either way every descriptor is closed on return, so the handle's
    ``status`` then says how it ended and ``pidfd`` is -1.

    Unlike :func:`trio.run_process`, an exit with a non-zero code or by a
    signal is not an error: the :class:`nsup.ExitStatus` says what happened.

    Args:
        spec: what to run.  ``"pipe"`` stdio needs ``nursery.start``, since
            the returned handle is the only way to reach the pipe.
        join: a running :class:`nsup.Process` whose namespaces the child
            enters (see :func:`nsup.lowlevel.start_process`).
        task_status: supplied by ``nursery.start``; do not pass it yourself.

    Returns:
        How the child ended.

    Raises:
        nsup.SpawnError: the child could not be started (``nursery.start``
            then raises it, and nothing is left running).
        ValueError: *spec* has ``"pipe"`` stdio but no ``nursery.start``.

    Example::

        async with trio.open_nursery() as nursery:
            proc = await nursery.start(nsup.run_process, spec)
            print(proc.pid)
            ...                             # the child runs while the nursery lives
            nursery.cancel_scope.cancel()   # stops it: SIGTERM, SIGKILL after stop_timeout

    """
    if task_status is trio.TASK_STATUS_IGNORED:
        piped = [name for name in ("stdin", "stdout", "stderr") if getattr(spec, name) == "pipe"]
        if piped:
            raise ValueError(
                f"{'/'.join(piped)}='pipe' in run_process() needs nursery.start(nsup.run_process, "
                "spec), since the returned Process is the only way to reach the pipe; "
                "or use 'null', 'inherit' or a file descriptor"
            )
    async with spawn(spec, join=join) as proc:
        task_status.started(proc)
        return await proc.wait()
