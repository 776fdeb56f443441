"""The supervisor's side of the zygote: start it once per thread, ask it to clone.

See ``_clone/zygote.py`` for why the zygote exists.  One zygote serves one thread
of one process: children made with ``CLONE_PARENT`` count the thread that
started the zygote as their parent, and ``PR_SET_PDEATHSIG`` fires when that
thread exits.  So the zygote is started with a plain ``subprocess.Popen`` on
the calling thread (the one running ``trio.run``), never from trio's worker
threads, which trio retires after 10 idle seconds.
"""

from __future__ import annotations

import array
import atexit
import marshal
import os
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

__all__ = ["OWNED", "get_zygote", "hold_zygotes", "zygote_pids"]

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
        self._proc = subprocess.Popen(argv, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        self.pid = self._proc.pid
        theirs.close()
        self._stdsock = ours
        self._sock = trio.socket.from_stdlib_socket(ours)
        self._lock = trio.Lock()
        self.broken = False

    async def clone(self, request: dict[str, Any], fds: list[int]) -> tuple[int, int, str, int]:
        """Send one clone request; return ``(pid, errno, message, pidfd)``.

        The exchange is shielded from cancellation: once the request is sent,
        the reply carries the pidfd of a live child that must not be lost.
        """
        payload = marshal.dumps(request)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        with trio.CancelScope(shield=True):
            async with self._lock:
                try:
                    await self._sock.sendmsg([payload], ancillary)
                    msg, anc, _flags, _addr = await self._sock.recvmsg(
                        4096,
                        socket.CMSG_SPACE(array.array("i").itemsize),
                        socket.MSG_CMSG_CLOEXEC,  # the pidfd must never leak into a child
                    )
                except OSError as exc:
                    self.broken = True
                    raise SpawnError(
                        exc.errno or 0, f"the nsup zygote is gone: {exc}", "zygote"
                    ) from None
                if not msg:
                    self.broken = True
                    raise SpawnError(0, "the nsup zygote exited; see its message above", "zygote")
                pid, errno, message = marshal.loads(msg)  # noqa: S302 - our own zygote
                if pid > 0:
                    OWNED.add(pid)
        pidfd = -1
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                pidfd = array.array("i", data)[0]
        return pid, errno, message, pidfd

    def close(self) -> None:
        """Close the socket (the zygote exits on EOF) and reap the zygote."""
        self._stdsock.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


_zygotes: dict[tuple[int, int], Zygote] = {}


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


def get_zygote() -> Zygote:
    """Return this thread's zygote, starting it if needed."""
    key = (os.getpid(), threading.get_ident())
    zygote = _zygotes.get(key)
    if zygote is None or zygote.broken:
        if zygote is not None:
            zygote.close()
        zygote = _zygotes[key] = Zygote()
    return zygote


@atexit.register
def _close_all() -> None:
    for key, zygote in list(_zygotes.items()):
        if key[0] == os.getpid():
            zygote.close()
    _zygotes.clear()
