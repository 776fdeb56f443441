"""One child, cloned straight from a single-threaded process and waited for: ``nsup exec``.

``nsup exec`` runs one command and exits with its status.  Its process has one
thread (it never starts trio), so it may clone the child itself and let the
child run the same Python set-up the zygote's children run (``child.py``, and
``init.py`` as PID 1): no other thread exists to hold a lock.  No zygote, no
socket round trip, no trio: the cost is the interpreter's start-up plus one
``clone3``.

Signals, as the zygote handles them: every signal is blocked across the clone
(the child starts with all of them blocked, as init expects, and unblocks them
itself before a plain exec), dispositions the caller ignores are reset to the
default for the child (an ignored signal survives exec), and
``CLONE_CLEAR_SIGHAND`` drops the caller's handlers.  Afterwards the caller
takes the signals it forwards through ``signal.set_wakeup_fd`` and waits on
the pidfd and that pipe with one ``select``: no polling, no timeout needed,
since the child's exit always wakes it.
"""

from __future__ import annotations

import os
import select
import signal

from . import syscalls as _sys
from .clone import spawn_child
from .init import exit_code
from .report import command_status, start_verdict

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable, Collection
    from typing import Any

__all__ = ["Outcome", "run_once"]


class Outcome:
    """How a one-shot child went.

    Attributes:
        pid: the child's pid (0 when the clone failed).
        errno, message: why the clone, or writing the uid/gid maps, failed (0, "").
        has_init: whether nsup's init runs the command (it reports ``S`` and ``X``).
        report: everything the child wrote on its report pipe (see ``child.py``).
        code: the shell's number for the child's own end: its exit code, or
            128+N for signal N (None when the clone failed).

    """

    __slots__ = ("code", "errno", "has_init", "message", "pid", "report")

    def __init__(self, pid: int, errno: int, message: str, *, has_init: bool) -> None:
        """Record the clone's reply; the end comes later."""
        self.pid = pid
        self.has_init = has_init
        self.errno = errno
        self.message = message
        self.report = b""
        self.code: int | None = None

    def failure(self) -> tuple[str, int] | None:
        """Return ``(stage, errno)`` of what failed before the command ran, or None."""
        if self.code is None:
            return "clone3", self.errno
        if self.errno:
            return "uid_map", self.errno
        verdict = start_verdict(self.report)
        if isinstance(verdict, tuple):
            return verdict
        if self.has_init and verdict is None:
            return "init", 0  # init died before it could start the command
        return None

    def exit_code(self) -> int:
        """The command's own end as the shell numbers it: from init's ``X`` line, else the child's."""
        status = command_status(self.report)
        if status is not None:
            return exit_code(status)
        assert self.code is not None  # noqa: S101 - failure() said the command ran
        return self.code


def _ignored_to_default() -> list[int]:
    """Reset every ignored signal to the default (the child inherits that); return them."""
    reset: list[int] = []
    for signo in signal.valid_signals():
        try:
            if signal.getsignal(signo) == signal.SIG_IGN:
                signal.signal(signo, signal.SIG_DFL)
                reset.append(signo)
        except (OSError, ValueError):  # signals the kernel reserves
            pass
    return reset


def _clone(req: dict[str, Any], fds: list[int]) -> tuple[tuple[int, int, str], int]:
    own_pidfd = os.pidfd_open(os.getpid())  # the child checks it: did we die before PDEATHSIG?
    try:
        reply, pidfd = spawn_child(req, fds, own_pidfd, 0)
    finally:
        os.close(own_pidfd)
    return reply, pidfd


def _read_all(fd: int) -> bytes:
    data = b""
    try:
        while chunk := os.read(fd, 4096):
            data += chunk
    except BlockingIOError:
        pass
    return data


def _shell_code(info: os.waitid_result) -> int:
    if info.si_code == os.CLD_EXITED:
        return info.si_status
    return 128 + info.si_status


def run_once(
    req: dict[str, Any],
    stdio: list[int],
    forward: Collection[int],
    keep: Callable[[int], bool],
) -> Outcome:
    """Clone the child *req* describes, with *stdio* (and any passed fds) as its descriptors.

    While it runs, each signal in *forward* that reaches this process is sent
    on to the child through its pidfd when ``keep(signo)`` is true.  Returns
    once the child has been reaped.  ``req["fd_targets"]`` must list where
    each descriptor of *stdio* goes.
    """
    report_r, report_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    old_handlers = {signo: signal.signal(signo, _noted) for signo in forward}
    old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    pidfd = -1
    try:
        reset = _ignored_to_default()
        try:
            (pid, err, message), pidfd = _clone(req, [report_w, *stdio])
        finally:
            os.close(report_w)
            for signo in reset:
                signal.signal(signo, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        outcome = Outcome(pid, err, message, has_init=req["init"])
        if pidfd >= 0:
            outcome.code = _shell_code(_wait(pidfd, wake_r, lambda n: n in forward and keep(n)))
        outcome.report = _read_all(report_r)
    finally:
        signal.set_wakeup_fd(old_wakeup)
        for signo, handler in old_handlers.items():
            signal.signal(signo, handler)
        for fd in (report_r, wake_r, wake_w, pidfd):
            if fd >= 0:
                os.close(fd)
    return outcome


def _noted(_signo: int, _frame: object) -> None:
    """Python's side of a forwarded signal: nothing (the wakeup pipe carries it)."""


def _wait(pidfd: int, wake_r: int, keep: Callable[[int], bool]) -> os.waitid_result:
    """Forward signals until the child exits; reap it."""
    while True:
        ready = select.select([pidfd, wake_r], [], [])[0]
        if wake_r in ready:
            for signo in _read_all(wake_r):
                if keep(signo):
                    try:
                        signal.pidfd_send_signal(pidfd, signo)
                    except ProcessLookupError:
                        pass  # exited; the pidfd tells next
        if pidfd in ready:
            info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | _sys.WALL)
            assert info is not None  # noqa: S101 - a blocking waitid always returns a result
            return info
