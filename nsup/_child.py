"""What a freshly cloned child does before exec, in the order bubblewrap uses.

This code runs in a process cloned (``CLONE_PARENT``) from the zygote, which
is single-threaded, so no lock can be held by a thread that does not exist
here: running Python is safe, unlike in a child of the trio process.  Still,
it makes syscalls on data the zygote already decoded, imports nothing new and
never logs.  Any failure is written to the report pipe as
``E<stage>:<errno>`` and the child exits 127; the supervisor turns that into a
``SpawnError`` naming the stage.  No traceback ever leaves the child.

The steps:

1. ``PR_SET_PDEATHSIG(SIGKILL)``, then check the supervisor is still alive
   through a pidfd (``getppid()`` is 0 in a new PID namespace, so it cannot
   be used for the race check);
2. with a user namespace, wait until the zygote has written the uid/gid maps;
3. a new session, if asked for;
4. with a mount namespace: propagation made private, the requested mounts,
   and a fresh ``/proc`` when there is also a new PID namespace;
5. hostname, loopback up, working directory;
6. descriptors moved to their target numbers;
7. exec the command (or become PID 1 and spawn it, see ``_init.py``).
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import struct
from typing import Any, NoReturn

from . import _init, _sys
from ._namespaces import CLONE_FLAGS

__all__ = ["child_main"]

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

# statvfs flags that an unprivileged remount must keep (they are "locked").
_LOCKED_FLAGS = _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC


class _StageError(Exception):
    def __init__(self, stage: str, errno: int) -> None:
        super().__init__(stage, errno)
        self.stage = stage
        self.errno = errno


def _stage(stage: str, func: Any, *args: Any) -> Any:
    try:
        return func(*args)
    except OSError as exc:
        raise _StageError(stage, exc.errno or 0) from None


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))


def _do_mount(kind: str, target: str, source: str | None, readonly: bool, data: str) -> None:
    if kind == "bind":
        assert source is not None  # noqa: S101 - checked by Mount before the request
        if not os.path.exists(source):
            raise FileNotFoundError(2, source)
        _sys.mount(source, target, None, _sys.MS_BIND | _sys.MS_REC)
        if readonly:
            locked = os.statvfs(target).f_flag & _LOCKED_FLAGS
            flags = _sys.MS_REMOUNT | _sys.MS_BIND | _sys.MS_RDONLY | locked
            _sys.mount(None, target, None, flags)
    elif kind == "tmpfs":
        flags = _sys.MS_NOSUID | _sys.MS_NODEV | (_sys.MS_RDONLY if readonly else 0)
        _sys.mount("tmpfs", target, "tmpfs", flags, data or None)
    else:  # proc
        flags = _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC
        _sys.mount("proc", target, "proc", flags)


def _move_fds(targets: list[int], sources: list[int], report_fd: int) -> int:
    """Put ``sources[i]`` at descriptor ``targets[i]``; return the report fd's new number.

    Every source, and the report pipe, is first lifted above all targets, so
    no dup2 clobbers a descriptor a later step still needs (as
    _posixsubprocess does).  Descriptors that land on a target lose
    close-on-exec; everything else keeps it.
    """
    floor = max([*targets, 2]) + 1
    lifted = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in sources]
    report_fd = fcntl.fcntl(report_fd, fcntl.F_DUPFD_CLOEXEC, floor)
    for target, fd in zip(targets, lifted, strict=True):
        os.dup2(fd, target, inheritable=True)
    for fd in lifted:
        os.close(fd)
    return report_fd


def _resolve(name: str, env: dict[str, str]) -> str:
    """Find *name* on the child's ``PATH`` as execvpe would; raise OSError if absent."""
    if "/" in name:
        return name
    denied = False
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            denied = True
    raise OSError(13 if denied else 2, name)  # EACCES or ENOENT


def _setup(req: dict[str, Any], supervisor_pidfd: int, sync_fd: int) -> None:
    _sys.prctl(_sys.PR_SET_PDEATHSIG, signal.SIGKILL)
    if select.select([supervisor_pidfd], [], [], 0)[0]:
        os._exit(1)  # the supervisor died before PDEATHSIG was armed
    flags = req["flags"]
    if sync_fd >= 0:
        # The zygote writes our uid/gid maps, then closes its end of this pipe.
        if os.read(sync_fd, 1) != b"1":
            os._exit(1)  # the zygote could not write the maps; it reports why
        os.close(sync_fd)
    if req["setsid"]:
        os.setsid()
    if flags & CLONE_FLAGS["mount"]:
        _stage("make mounts private", _sys.mount, None, "/", None, _sys.MS_REC | _sys.MS_PRIVATE)
        for kind, target, source, readonly, data in req["mounts"]:
            _stage(f"mount {kind} on {target}", _do_mount, kind, target, source, readonly, data)
    if req["hostname"] is not None:
        _stage("sethostname", _sys.sethostname, req["hostname"])
    if flags & CLONE_FLAGS["net"]:
        _stage("loopback up", _loopback_up)
    if req["cwd"] is not None:
        _stage(f"chdir {req['cwd']}", os.chdir, req["cwd"])


def child_main(
    req: dict[str, Any], fds: list[int], supervisor_pidfd: int, sync_fd: int
) -> NoReturn:
    """Set up the cloned child as *req* says, then exec or become init.  Never returns.

    ``fds[0]`` is the report pipe; ``fds[i]`` for ``i`` in ``req["fd_plan"]``
    positions go to the target numbers listed there.  *sync_fd*, when not
    -1, is read once the zygote has written the uid/gid maps.
    """
    report_fd = fds[0]
    try:
        _setup(req, supervisor_pidfd, sync_fd)
        env: dict[str, str] = req["env"]
        argv: list[str] = req["argv"]
        path = _stage("exec", _resolve, argv[0], env)
        targets: list[int] = req["fd_targets"]
        sources = fds[1 : 1 + len(targets)]
        report_fd = _stage("pass descriptors", _move_fds, targets, sources, report_fd)
        if req["init"]:
            _init.run_init(path, argv, env, report_fd)  # signals stay blocked for init
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        _stage("exec", os.execve, path, argv, env)
    except _StageError as exc:
        os.write(report_fd, b"E%s:%d\n" % (exc.stage.encode(), exc.errno))
    except BaseException:  # noqa: BLE001 - nothing may escape the child; report and exit
        os.write(report_fd, b"Esetup:0\n")
    os._exit(127)
