"""nsup's PID-1 init: a small synchronous loop, as tini and bubblewrap's do_init.

It runs inside the child's new PID namespace as PID 1, in a process cloned
from the zygote (so plain Python is safe here: no other thread exists).  It

1. starts the command with ``posix_spawn`` (a vfork: cheap, and the command
   starts with an empty signal mask and default dispositions);
2. reports ``S<pid>`` on the report pipe, so the supervisor knows the exec
   worked, or ``E<stage>:<errno>`` and exits 127 if it did not;
3. takes every signal synchronously (all are blocked, inherited from the
   zygote) with ``sigwaitinfo``: SIGCHLD reaps with ``waitpid(-1, WNOHANG)``
   until nothing is left, other signals are forwarded to the command;
4. when the command exits, writes ``X<wait status>`` so the supervisor can
   report a death by signal exactly, and exits with the command's code, or
   128+N for signal N (PID 1 cannot kill itself by a signal).  The kernel then
   kills whatever is left in the namespace.

Without a PID namespace the init cannot rely on the kernel to end the tree,
so it becomes a *child subreaper* instead: orphans anywhere below it are
reparented to it, even double-forked daemons.  When the command exits, or
when the supervisor dies (its parent-death signal, checked against
``getppid()``), it SIGKILLs every descendant, reaps them, and exits.  This is
the same guarantee a PID namespace gives, by hand.  Two more ties hold
without a PID namespace and without a cgroup: the command is started with
``PR_SET_PDEATHSIG(SIGKILL)``, so SIGKILL sent to the init (by anyone) takes
the command with it; and ``Process.kill()`` kills the init's descendants from
the supervisor's side before the init itself.  What the command started and
left running (its own children) is then reparented to the next subreaper:
only a PID namespace or a cgroup holds those when the init is SIGKILLed from
outside.

A signal the terminal sent to the whole foreground process group (si_code
``SI_KERNEL``) already reached the command too when it shares init's process
group (the command always does: a new session, when asked for, is made
for init before it starts), so it is not forwarded a second time.
"""

from __future__ import annotations

import os

from . import syscalls as _sys
from .title import set_title

TYPE_CHECKING = False  # not typing's: see child.py
if TYPE_CHECKING:
    import signal
    from typing import NoReturn
else:
    import _signal as signal  # see child.py

__all__ = ["FORWARD_NEVER", "run_init"]

SI_KERNEL = 0x80
# The parent-death signal of a subreaper init: one nobody else sends, and it is
# never forwarded; getppid() tells whether the supervisor really died.
PARENT_DIED = signal.SIGRTMIN + 3
_MAX_FD = 1 << 20  # above any RLIMIT_NOFILE; closerange uses close_range(2)

# Never forwarded: SIGCHLD is ours; the synchronous faults cannot arrive
# blocked in any meaningful way; KILL and STOP cannot be caught at all.
FORWARD_NEVER = frozenset(
    {
        signal.SIGCHLD,
        signal.SIGKILL,
        signal.SIGSTOP,
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGILL,
        signal.SIGFPE,
        signal.SIGTRAP,
        signal.SIGSYS,
    }
)


def exit_code(wait_status: int) -> int:
    """Return the shell's number for *wait_status*: the code, or 128+N for signal N."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


def _descendants() -> list[int]:
    found: list[int] = []
    todo = [os.getpid()]
    while todo:
        below = _sys.children(todo.pop())
        found.extend(below)
        todo.extend(below)
    return found


def _kill_tree() -> None:
    """SIGKILL every descendant and reap until none is left (we are their subreaper)."""
    while True:
        for pid in _descendants():
            # Unreaped descendants keep their pids, and only we reap the orphans.
            _sys.signal_pid(pid, signal.SIGKILL)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


class _Reaped:
    """What one round of reaping found: the main child's status, and whether any child is left."""

    __slots__ = ("alone", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.alone = False  # no child left at all (ECHILD): so no descendant either


def _reap(main_pid: int, reaped: _Reaped) -> None:
    """Reap every zombie now present into *reaped*: the main child's status, and whether none is left."""
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            reaped.alone = True
            return
        if pid == 0:
            return
        if pid == main_pid:
            reaped.status = wait_status


def _fork_exec(
    path: str, argv: list[str], env: dict[str, str], *, tied: bool, listen_pid: bool
) -> int:
    """Fork (safe: the init has one thread), arm what posix_spawn cannot, exec.

    With *tied*, the command gets ``PR_SET_PDEATHSIG(SIGKILL)``: it dies when
    the init dies.  With *listen_pid* (socket activation), ``LISTEN_PID`` is
    set to the command's own pid, which only the child knows before exec.  An
    exec failure comes back over a close-on-exec pipe, as ``_posixsubprocess``
    does.
    """
    init_pid = os.getpid()
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            if tied:
                _sys.prctl(_sys.PR_SET_PDEATHSIG, signal.SIGKILL)
                # 0: the init is outside our PID namespace (a joined one, for a
                # sidecar) and so still our parent: an orphan is always adopted
                # inside its own namespace.
                if os.getppid() not in (init_pid, 0):
                    os._exit(128 + signal.SIGKILL)  # the init died before the signal was armed
            if listen_pid:
                env["LISTEN_PID"] = str(os.getpid())
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            os.execve(path, argv, env)  # noqa: S606 - the command's own argv, as posix_spawn
        except OSError as exc:
            os.write(w, b"%d" % (exc.errno or 0))
        finally:
            os._exit(127)
    os.close(w)
    try:
        failed = os.read(r, 32)
    finally:
        os.close(r)
    if failed:
        os.waitpid(pid, 0)
        raise OSError(int(failed), os.strerror(int(failed)))
    return pid


def _start_command(
    path: str, argv: list[str], env: dict[str, str], *, subreaper: bool, listen_pid: bool
) -> int:
    """Start the command with an empty signal mask; posix_spawn (a vfork) unless a fork must arm more."""
    if subreaper or listen_pid:
        return _fork_exec(path, argv, env, tied=subreaper, listen_pid=listen_pid)
    return os.posix_spawn(path, argv, env, setsigmask=())


def run_init(  # noqa: PLR0913 - the command, its report pipe, and two switches
    path: str,
    argv: list[str],
    env: dict[str, str],
    report_fd: int,
    *,
    subreaper: bool = False,
    listen_pid: bool = False,
) -> NoReturn:
    """Be PID 1: spawn *path* with *argv* and *env*, forward signals, reap, exit.

    With *listen_pid*, the command's environment gets ``LISTEN_PID`` set to
    its own pid (socket activation).  Once the command runs, init closes
    every descriptor but 0, 1, 2 and *report_fd*: what the command was given
    is the command's alone.
    """
    parent = os.getppid()
    if subreaper:
        _sys.prctl(_sys.PR_SET_CHILD_SUBREAPER, 1)
        _sys.prctl(_sys.PR_SET_PDEATHSIG, PARENT_DIED)
        if os.getppid() != parent:
            os._exit(1)  # the supervisor died while the signal was being changed
    # Set before the command starts, so that it already sees its init's title.
    name = env.get("NSUP_SERVICE") or path.rpartition("/")[2]  # not os.path: see _resolve
    set_title(f"nsup-init: {name}", "nsup-init")
    try:
        pid = _start_command(path, argv, env, subreaper=subreaper, listen_pid=listen_pid)
    except OSError as exc:
        os.write(report_fd, b"Eexec:%d\n" % (exc.errno or 0))
        os._exit(127)
    os.write(report_fd, b"S%d\n" % pid)
    os.closerange(3, report_fd)
    os.closerange(report_fd + 1, _MAX_FD)
    reaped = _serve(pid, parent, subreaper=subreaper)
    if not reaped.alone:
        if subreaper:
            # What the command left behind goes with it, as in a PID namespace.  (With
            # no child left there is no descendant either: the walk is skipped.)
            _kill_tree()
        _reap(pid, reaped)
    assert reaped.status is not None  # noqa: S101 - _serve returns once the command is reaped
    os.write(report_fd, b"X%d\n" % reaped.status)
    if reaped.alone:
        # Nothing of the run is left, so the supervisor that X just woke starts the
        # next run at once: let it have this CPU before our exit (the copy of the
        # zygote's memory, the namespaces) takes a few hundred microseconds of it.
        os.sched_yield()
    os._exit(exit_code(reaped.status))


def _serve(pid: int, parent: int, *, subreaper: bool) -> _Reaped:
    """Forward signals to the command *pid* and reap, until the command is reaped.

    A subreaper whose supervisor (*parent*) died kills its tree and exits here.
    """
    signals = signal.valid_signals()
    reaped = _Reaped()
    while reaped.status is None:
        info = signal.sigwaitinfo(signals)
        signo = info.si_signo
        if subreaper and os.getppid() != parent:
            _kill_tree()  # the supervisor is gone: nothing of ours may outlive it
            os._exit(128 + signal.SIGKILL)
        if signo == signal.SIGCHLD:
            _reap(pid, reaped)
        elif signo == PARENT_DIED:
            continue
        elif signo not in FORWARD_NEVER and info.si_code != SI_KERNEL:
            # The command is our unreaped child, so its pid cannot be recycled.
            os.kill(pid, signo)
    return reaped
