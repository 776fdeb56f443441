"""The zygote: a small single-threaded process that clones every child.

Why a zygote
------------
A trio program has threads, and after a fork or clone of a multithreaded
process only async-signal-safe work is safe in the child: a lock another
thread held at clone time (malloc's, the GIL's, the import lock) stays held
for ever.  Namespace set-up (mounts, hostname, uid maps, loopback) is real
work, and exec'ing a helper per child costs 10 ms of interpreter start-up.

So each supervising thread starts one zygote, once, with a plain
``subprocess.Popen`` (CPython's safe fork-exec) from that very thread.  It runs
``python -I -S`` with only this module, ``_child``, ``_init``, ``_sys`` and
``_namespaces`` loaded (never trio, never a thread), blocks every signal, and
waits on a ``SOCK_SEQPACKET`` socket.  For each request it calls ``clone3``
with ``CLONE_PARENT | CLONE_PIDFD`` and the namespace flags: the new process is
the *supervisor's* child, not the zygote's, so the supervisor waits for it
through the pidfd it gets back over ``SCM_RIGHTS``.  The child runs plain
Python safely (no other thread exists in the zygote), sets itself up, and
execs the command or becomes its PID-1 init.

``PR_SET_PDEATHSIG`` fires when the parent *thread* exits.  Children made
with ``CLONE_PARENT`` count the thread that started the zygote as their
parent, which is why the zygote is started from the thread that runs
``trio.run``, not from a worker thread that trio may retire.

Wire format: a request is one ``marshal``-encoded dict plus descriptors
(``[report pipe, stdio and passed sources..., cgroup dir?]``); the reply is a
``marshal``-encoded ``(pid, errno, message)`` plus the pidfd when ``pid > 0``.
"""

from __future__ import annotations

import _socket  # not socket: its enums and selectors would add to every clone's copy
import gc
import marshal
import os
import struct

from . import child as _child
from . import syscalls as _sys
from .clone import spawn_child
from .title import set_title

TYPE_CHECKING = False  # not typing's: see child.py
if TYPE_CHECKING:
    import signal
else:
    import _signal as signal  # see child.py

__all__ = ["main"]

_MAX_REQUEST = 1 << 20
_MAX_FDS = 250  # SCM_RIGHTS carries at most 253 per message
_INT = struct.calcsize("i")  # one descriptor in SCM_RIGHTS


def _prepare_signals() -> None:
    """Default every disposition the supervisor may have left us, then block all.

    Ignored signals survive both clone and execve, so a supervisor started
    under ``nohup`` (SIGHUP ignored) or by Python (SIGPIPE ignored) would
    otherwise pass that on to every command.
    """
    for signo in signal.valid_signals():
        if signo in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(signo, signal.SIG_DFL)
        except (OSError, ValueError):  # signals the kernel reserves (32, 33)
            pass
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())


def _receive(sock: _socket.socket) -> tuple[bytes, list[int]]:
    """One request and its descriptors, received close-on-exec.

    (``socket.recv_fds`` would do, but it drops its *flags* argument on
    Python 3.11, and without ``MSG_CMSG_CLOEXEC`` every command would inherit
    the descriptors of the requests before it.)
    """
    fds: list[int] = []
    msg, ancillary, _flags, _addr = sock.recvmsg(
        _MAX_REQUEST, _socket.CMSG_LEN(_MAX_FDS * _INT), _socket.MSG_CMSG_CLOEXEC
    )
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds.extend(struct.unpack(f"{len(data) // _INT}i", data[: len(data) - len(data) % _INT]))
    return msg, fds


def main(parent_pid: int, sock_fd: int) -> None:
    """Serve clone requests from *parent_pid* on *sock_fd* until it closes."""
    _sys.prctl(_sys.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        return  # the supervisor died before PDEATHSIG was armed
    supervisor_pidfd = os.pidfd_open(parent_pid)
    set_title("nsup-zygote", "nsup-zygote")
    _prepare_signals()
    _child.have_mount_setattr()  # probed once here; every child inherits the answer
    # pass_fds made it inheritable; no command may hold it
    os.set_inheritable(sock_fd, False)  # noqa: FBT003 - positional-only
    sock = _socket.socket(fileno=sock_fd)
    _child.warm_up()  # the children's code specialised here, once, not in each of them
    gc.collect()
    gc.freeze()  # children share these pages; a gc pass in them must not touch them
    while True:
        msg, fds = _receive(sock)
        if not msg:
            return
        req = marshal.loads(msg)  # noqa: S302 - our own supervisor, over a private socketpair
        reply, pidfd = spawn_child(req, fds, supervisor_pidfd, _sys.CLONE_PARENT)
        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("i", pidfd))]
        sock.sendmsg([marshal.dumps(reply)], rights if pidfd >= 0 else [])
        for fd in fds:
            os.close(fd)
        if pidfd >= 0:
            os.close(pidfd)
