"""The supervisor's side of the zygote: start it once per thread, ask it to clone.

A thread may have up to :data:`ZYGOTES` zygotes (one per core, two at most):
a clone is a fork of the zygote, serial within one, so while one zygote is
busy the next request goes to another.  The second starts only when
requests queue up for the first (:data:`BACKLOG`); a caller's own bound (the supervisor's
``SPAWN_CONCURRENCY``) still bounds the requests in flight.

See ``_clone/zygote.py`` for why the zygote exists.  One zygote serves one thread
of one process: children made with ``CLONE_PARENT`` count the thread that
started the zygote as their parent, and ``PR_SET_PDEATHSIG`` fires when that
thread exits.  So the zygote is started with a plain ``subprocess.Popen`` on
the calling thread (the one running ``trio.run``), never from trio's worker
threads, which trio retires after 10 idle seconds.

Never hang on the zygote: before each use it is checked (exited, or stopped
by SIGSTOP or a debugger: replaced at once), every round trip is bounded by
``ROUND_TRIP_TIMEOUT`` (past it the zygote is killed and replaced), and a
zygote that is found gone during a request is replaced and the request sent
once more, so its death never costs a spawn.
"""

from __future__ import annotations

import array
import atexit
import errno as _errno
import marshal
import os
import signal
import socket
import subprocess
import sys
import threading
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from ._errors import SpawnError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = [
    "BACKLOG",
    "OWNED",
    "ROUND_TRIP_TIMEOUT",
    "ZYGOTES",
    "clone",
    "get_zygote",
    "hold_zygotes",
    "zygote_pids",
]

ROUND_TRIP_TIMEOUT = 10.0
"""Seconds one clone request may take, lock wait excluded (a clone takes milliseconds)."""


class ZygoteGoneError(SpawnError):
    """The zygote died or stopped answering; a new one is started for the next request."""


# Every pid a zygote cloned for us that has not been reaped yet.  Children made
# with CLONE_PARENT inherit the zygote's exit signal (SIGCHLD), so they are as
# visible to ``waitid(P_ALL)`` as any child: ``nsup run``'s orphan reaper uses
# this set (and waits out clones in flight) to leave them alone.
OWNED: set[int] = set()

# The zygote's ``-c`` program.  A stub ``nsup`` package stands in for the real
# one, so ``nsup/__init__`` (trio, attrs) is never imported; only ``_clone/``
# is loaded.  ``BOOT_IMPORTS`` is kept apart so a test can boot the same way and
# list what got imported.
BOOT_IMPORTS = (
    "import sys,types;"
    "p=types.ModuleType('nsup');p.__path__=[sys.argv[1]];sys.modules['nsup']=p;"
    "from nsup._clone.zygote import main;"
)
_BOOT = BOOT_IMPORTS + "main(int(sys.argv[2]),int(sys.argv[3]))"


class Zygote:
    """A running zygote and the socket to it."""

    def __init__(self) -> None:
        """Start the zygote from the calling thread."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        here = os.path.dirname(os.path.abspath(__file__))
        argv = [
            sys.executable,
            "-I",
            "-S",
            "-c",
            _BOOT,
            here,
            str(os.getpid()),
            str(theirs.fileno()),
        ]
        try:
            self._proc = subprocess.Popen(
                argv, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.pid = self._proc.pid
        self._stdsock = ours
        self._sock = trio.socket.from_stdlib_socket(ours)
        self._lock = trio.Lock()
        self.broken = False

    def usable(self) -> bool:
        """False once the zygote has exited, or while it is stopped (SIGSTOP, a tracer)."""
        if self.broken or self._proc.poll() is not None:
            return False
        try:  # three syscalls, not open()'s eight: this runs before every clone
            fd = os.open(f"/proc/{self.pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
            try:
                stat = os.read(fd, 4096)
            finally:
                os.close(fd)
            state = stat.rpartition(b")")[2].split()[0]
        except (OSError, IndexError):
            return False
        return state not in (b"T", b"t", b"Z", b"X")

    async def clone(self, request: dict[str, Any], fds: list[int]) -> tuple[int, int, str, int]:
        """Send one clone request; return ``(pid, errno, message, pidfd)``.

        The exchange is shielded from cancellation: once the request is sent,
        the reply carries the pidfd of a live child that must not be lost.  It
        is bounded by ``ROUND_TRIP_TIMEOUT`` all the same.

        Raises:
            ZygoteGoneError: the zygote died or did not answer in time.
        """
        payload = marshal.dumps(request)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        with trio.CancelScope(shield=True):
            async with self._lock:
                if not self.usable():
                    self.broken = True
                    raise ZygoteGoneError(_errno.ESRCH, "the nsup zygote is gone", "zygote")
                with trio.move_on_after(ROUND_TRIP_TIMEOUT) as timer:
                    try:
                        await self._sock.sendmsg([payload], ancillary)
                        msg, anc, flags, _addr = await self._sock.recvmsg(
                            4096,
                            socket.CMSG_SPACE(array.array("i").itemsize),
                            socket.MSG_CMSG_CLOEXEC,  # the pidfd must never leak into a child
                        )
                    except OSError as exc:
                        self.broken = True
                        raise ZygoteGoneError(
                            exc.errno or 0, f"the nsup zygote is gone: {exc}", "zygote"
                        ) from None
                if timer.cancelled_caught:
                    self.broken = True
                    raise ZygoteGoneError(
                        _errno.ETIMEDOUT,
                        f"the nsup zygote did not answer within {ROUND_TRIP_TIMEOUT:g}s",
                        "zygote",
                    )
                if not msg:
                    self.broken = True
                    raise ZygoteGoneError(
                        0, "the nsup zygote exited; see its message above", "zygote"
                    )
                pid, errno, message = marshal.loads(msg)  # noqa: S302 - our own zygote
                if pid > 0:
                    OWNED.add(pid)
        pidfd = -1
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                pidfd = array.array("i", data)[0]
        if pid > 0 and pidfd < 0:
            pidfd = _pidfd_of_orphaned_reply(pid, flags)
        return pid, errno, message, pidfd

    def close(self) -> None:
        """Close the socket (the zygote exits on EOF) and reap the zygote.

        A zygote that is broken or stopped is killed at once: nothing waits on it.
        """
        self._stdsock.close()
        if not self.usable():
            self._proc.kill()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


ZYGOTES = min(2, os.cpu_count() or 1)
"""Zygotes per thread at most: clones run in parallel on that many cores.

The second one starts only when a request finds the first busy with
:data:`BACKLOG` requests waiting.
"""

BACKLOG = 4
"""Requests waiting for the least busy zygote before another one is started."""

_zygotes: dict[tuple[int, int, int], Zygote] = {}  # (pid, thread, slot)


def zygote_pids() -> set[int]:
    """The pids of this process's zygotes (its own ``subprocess`` children)."""
    return {z.pid for key, z in _zygotes.items() if key[0] == os.getpid()}


@asynccontextmanager
async def hold_zygotes() -> AsyncIterator[None]:
    """Hold every zygote's lock: inside, no clone request is in flight."""
    async with AsyncExitStack() as stack:
        for key, zygote in list(_zygotes.items()):
            if key[0] == os.getpid():
                await stack.enter_async_context(zygote._lock)  # noqa: SLF001 - same module
        yield


def _pidfd_of_orphaned_reply(pid: int, flags: int) -> int:
    """The reply named a child but its pidfd did not arrive (out of descriptors: MSG_CTRUNC).

    The child is ours and unreaped, so its pid cannot be recycled: open a
    pidfd for it; if even that fails, kill and reap it, and report a
    transient spawn failure.
    """
    try:
        return os.pidfd_open(pid)
    except OSError as exc:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)  # SIGKILLed: returns at once
        OWNED.discard(pid)
        truncated = " (reply truncated)" if flags & socket.MSG_CTRUNC else ""
        raise SpawnError(
            exc.errno or _errno.EMFILE,
            f"no descriptor left for the new child's pidfd{truncated}: {exc.strerror}",
            "zygote",
        ) from None


def get_zygote(slot: int = 0) -> Zygote:
    """Return this thread's zygote number *slot*, starting it if needed, or anew if it is dead or stopped."""
    key = (os.getpid(), threading.get_ident(), slot)
    zygote = _zygotes.get(key)
    # The cheap check here; the full one (stopped?) comes with the request, under the lock.
    if zygote is None or zygote.broken or zygote._proc.poll() is not None:  # noqa: SLF001
        if zygote is not None:
            del _zygotes[key]
            zygote.close()
        zygote = _zygotes[key] = Zygote()
    return zygote


def _pick() -> int:
    """The slot of the zygote the next request goes to.

    An idle zygote first, in slot order.  With every one busy, a zygote not
    started yet, but only once :data:`BACKLOG` requests wait for the least
    busy one: a program that spawns a few children at a time keeps one
    zygote (and its memory).  Otherwise the zygote with the fewest requests
    waiting.  A zygote found exited is reaped here and its slot is free.
    """
    here = (os.getpid(), threading.get_ident())
    waiting = []
    free = None
    for slot in range(ZYGOTES):
        zygote = _zygotes.get((*here, slot))
        if zygote is not None and (zygote.broken or zygote._proc.poll() is not None):  # noqa: SLF001
            del _zygotes[(*here, slot)]
            zygote.close()
            zygote = None
        if zygote is None:
            free = slot if free is None else free
            continue
        lock = zygote._lock  # noqa: SLF001 - same module
        if not lock.locked():
            return slot
        waiting.append((lock.statistics().tasks_waiting, slot))
    if free is not None and (not waiting or min(waiting)[0] >= BACKLOG):
        return free
    return min(waiting)[1]


async def clone(request: dict[str, Any], fds: list[int]) -> tuple[int, int, str, int]:
    """Ask one of this thread's zygotes to clone; a zygote found gone is replaced and asked again once."""
    slot = _pick()
    try:
        return await get_zygote(slot).clone(request, fds)
    except ZygoteGoneError:
        return await get_zygote(slot).clone(request, fds)


@atexit.register
def _close_all() -> None:
    for key, zygote in list(_zygotes.items()):
        if key[0] == os.getpid():
            zygote.close()
    _zygotes.clear()
