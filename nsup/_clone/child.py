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
2. join the cgroup v1 hierarchies (write ``0`` to each ``cgroup.procs``
   descriptor the supervisor opened); cgroup v2 placement already happened
   at clone (``CLONE_INTO_CGROUP``);
3. with a user namespace, wait until the zygote has written the uid/gid maps
   (and, when root made it with the default map, become the namespace's root,
   an unprivileged id on the host);
4. a new session, if asked for;
5. with a mount namespace: propagation made private, then, with a rootfs,
   the rootfs bound onto itself and a minimal ``/dev`` in it; the requested
   mounts (read-only ones made so with ``mount_setattr(AT_RECURSIVE)``, or
   a remount where the kernel lacks it), a fresh ``/proc`` when there is
   also a new PID namespace, and ``pivot_root`` into the rootfs;
6. hostname, loopback up, working directory, umask;
7. rlimits, then the capabilities the hardening defaults remove
   (``drop_caps``: from the bounding set and every other set), then
   supplementary groups, gid and uid, then capabilities (bounding set
   dropped, the rest kept as permitted, effective, inheritable and ambient),
   then ``PR_SET_NO_NEW_PRIVS``;
8. descriptors moved to their target numbers;
9. exec the command (or become PID 1 and spawn it, see ``init.py``).
"""

from __future__ import annotations

import _socket  # the C module: `socket` builds its enums at import, nsup exec need not
import fcntl
import os
import resource
import select
import struct

from . import init as _init
from . import syscalls as _sys
from .namespaces import CLONE_FLAGS

# The zygote loads only what its children need: every page of its heap is
# copied (as page tables, then page by page as it is written) by every clone,
# by every fork of an init, and torn down at every exec and exit.  So typing
# (with re, functools, contextlib...) is never imported at run time (mypy
# reads any name TYPE_CHECKING), and signal's C module stands in for signal,
# whose enums alone add 0.7 MB; socket likewise (see zygote.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from typing import Any, NoReturn
else:
    import _signal as signal

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
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        request = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))
    finally:
        sock.close()


_DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
_DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)
_EXDEV = 18


HAVE_MOUNT_SETATTR: bool | None = None
"""Whether the kernel has ``mount_setattr(2)`` (Linux 5.12); None until probed.

The zygote probes once at boot (:func:`have_mount_setattr`), so every child
it clones inherits the answer; a test sets it to False to force the fallback.
"""


def have_mount_setattr() -> bool:
    """Probe ``mount_setattr(2)`` once (ENOSYS on kernels before 5.12) and remember the answer."""
    global HAVE_MOUNT_SETATTR  # noqa: PLW0603 - a probe-once module flag, as the docstring says
    if HAVE_MOUNT_SETATTR is None:
        HAVE_MOUNT_SETATTR = _sys.probe_mount_setattr()
    return HAVE_MOUNT_SETATTR


def _make_readonly(target: str) -> None:
    """Make the mount at *target*, and every mount beneath it, read-only.

    ``mount_setattr(AT_RECURSIVE)`` (Linux 5.12) changes only the read-only
    attribute.  Before 5.12 the fallback is a bind remount of the top mount
    that keeps the flags the kernel locks (nosuid, nodev, noexec); mounts
    beneath it stay as they were.
    """
    if have_mount_setattr():
        _sys.mount_setattr(target, _sys.MOUNT_ATTR_RDONLY, recursive=True)
    else:
        locked = os.statvfs(target).f_flag & _LOCKED_FLAGS
        flags = _sys.MS_REMOUNT | _sys.MS_BIND | _sys.MS_RDONLY | locked
        _sys.mount(None, target, None, flags)


def _mount_point(target: str, like: str | None, root: str) -> None:
    """Create *target* if it is missing (a file when binding a file); refuse escapes from *root*."""
    real = os.path.realpath(target)
    if root and real != root and not real.startswith(root + "/"):
        raise OSError(_EXDEV, target)
    if os.path.lexists(target):
        return
    if like is not None and not os.path.isdir(like):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    else:
        os.makedirs(target, exist_ok=True)


def _do_mount(  # noqa: PLR0913, PLR0917 - one row of the request's mount table, plus the root
    kind: str, target: str, source: str | None, readonly: bool, data: str, root: str = ""
) -> None:
    if kind == "bind":
        assert source is not None  # noqa: S101 - checked by Mount before the request
        if not os.path.exists(source):
            raise FileNotFoundError(2, source)
        if root:
            _mount_point(target, source, root)
        _sys.mount(source, target, None, _sys.MS_BIND | _sys.MS_REC)
        if readonly:
            _make_readonly(target)
        return
    if root:
        _mount_point(target, None, root)
    if kind == "tmpfs":
        flags = _sys.MS_NOSUID | _sys.MS_NODEV | (_sys.MS_RDONLY if readonly else 0)
        _sys.mount("tmpfs", target, "tmpfs", flags, data or None)
    else:  # proc
        flags = _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC
        _sys.mount("proc", target, "proc", flags)


def _minimal_dev(root: str) -> None:
    """Mount a tmpfs ``/dev`` in *root* holding the host's harmless devices, bound in."""
    dev = root + "/dev"
    _mount_point(dev, None, root)
    _sys.mount("tmpfs", dev, "tmpfs", _sys.MS_NOSUID | _sys.MS_NOEXEC, "mode=755,size=64k")
    for name in _DEV_NODES:
        path = f"{dev}/{name}"
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
        _sys.mount(f"/dev/{name}", path, None, _sys.MS_BIND)
    for name, link in _DEV_LINKS:
        os.symlink(link, f"{dev}/{name}")
    os.mkdir(f"{dev}/shm", 0o1777)
    os.mkdir(f"{dev}/pts", 0o755)


def _pivot(root: str) -> None:
    """Make *root* the child's ``/`` and detach the old root (the ``pivot_root(".", ".")`` idiom)."""
    os.chdir(root)
    _sys.pivot_root(".", ".")
    _sys.umount2(".", _sys.MNT_DETACH)
    os.chdir("/")


def _mounts(req: dict[str, Any], root: str) -> None:
    _stage("make mounts private", _sys.mount, None, "/", None, _sys.MS_REC | _sys.MS_PRIVATE)
    if root:
        _stage(f"bind rootfs {root}", _sys.mount, root, root, None, _sys.MS_BIND | _sys.MS_REC)
        _stage(f"minimal /dev in rootfs {root}", _minimal_dev, root)
    tmpfs: list[str] = []  # our own tmpfs mounts: mount points may be created on them
    for kind, target, source, readonly, data in req["mounts"]:
        stage = f"mount {kind} on {target}"
        on = root or next((t for t in tmpfs if target.startswith(t + "/")), "")
        _stage(stage, _do_mount, kind, root + target, source, readonly, data, on)
        if kind == "tmpfs" and not root:
            tmpfs.extend({target.rstrip("/"), os.path.realpath(target)})
    if root:
        _stage(f"pivot_root into {root}", _pivot, root)


def _credentials(req: dict[str, Any]) -> None:
    """rlimits, then groups, gid, uid, capabilities and no_new_privs, in that order.

    rlimits come first because raising a hard limit needs CAP_SYS_RESOURCE.
    With a capability set and a new uid, ``PR_SET_KEEPCAPS`` keeps the
    permitted set across ``setuid``; the ambient set then carries the kept
    capabilities across exec for a non-root user.
    """
    for name, number, soft, hard in req["rlimits"]:
        _stage(f"setrlimit {name}", resource.setrlimit, number, (soft, hard))
    uid, gid, caps = req["uid"], req["gid"], req["caps"]
    if req["drop_caps"]:
        _drop_caps(req["drop_caps"])
    if caps is not None:
        for cap in range(req["cap_last"] + 1):
            if not caps >> cap & 1:
                _stage("drop capabilities", _sys.prctl, _sys.PR_CAPBSET_DROP, cap)
        if uid >= 0:
            _stage("drop capabilities", _sys.prctl, _sys.PR_SET_KEEPCAPS, 1)
    _switch_ids(uid, gid, req["groups"])
    if caps is not None:
        _keep_caps(caps, req["cap_last"])
    if req["nnp"]:
        _stage("no_new_privs", _sys.prctl, _sys.PR_SET_NO_NEW_PRIVS, 1)


def _drop_caps(drop: int) -> None:
    """Remove the capabilities in the mask *drop* from the bounding set and from every other set.

    From every set, so that neither this process (nor the init it becomes)
    nor anything it execs holds them.
    """
    for cap in range(64):
        if drop >> cap & 1:
            _stage("drop capabilities", _sys.prctl, _sys.PR_CAPBSET_DROP, cap)
    effective, permitted, inheritable = _stage("drop capabilities", _sys.capget)
    keep = ~drop
    _stage("drop capabilities", _sys.capset, effective & keep, permitted & keep, inheritable & keep)


def _switch_ids(uid: int, gid: int, groups: list[int] | None) -> None:
    if groups is not None:
        _stage("setgroups", os.setgroups, groups)
    elif uid >= 0 or gid >= 0:
        _stage("setgroups", os.setgroups, [gid] if gid >= 0 else [])
    if gid >= 0:
        _stage(f"setgid {gid}", os.setresgid, gid, gid, gid)
    if uid >= 0:
        _stage(f"setuid {uid}", os.setresuid, uid, uid, uid)


def _keep_caps(caps: int, last: int) -> None:
    """Make *caps* the permitted, effective, inheritable and ambient sets."""
    _stage("set capabilities", _sys.capset, caps, caps, caps)
    for cap in range(last + 1):
        if caps >> cap & 1:
            _stage(
                "set capabilities", _sys.prctl, _sys.PR_CAP_AMBIENT, _sys.PR_CAP_AMBIENT_RAISE, cap
            )


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
    """Find *name* on the child's ``PATH`` as execvpe would; raise OSError if absent.

    Built from ``os.access`` and string formatting alone: the ``os.path``
    helpers would pull their functions' pages (and a ``stat_result`` per
    ``PATH`` entry) out of the zygote's shared memory into an init for good.
    """
    if "/" in name:
        return name
    denied = False
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = f"{directory or '.'}/{name}"
        if os.access(candidate, os.X_OK):
            if os.path.isfile(candidate):  # not a directory of that name
                return candidate
        elif os.access(candidate, os.F_OK) and os.path.isfile(candidate):
            denied = True
    raise OSError(13 if denied else 2, name)  # EACCES or ENOENT


def _setup(req: dict[str, Any], fds: list[int], supervisor_pidfd: int, sync_fd: int) -> None:  # noqa: C901 - the stages in bubblewrap's order, one branch each
    _sys.prctl(_sys.PR_SET_PDEATHSIG, signal.SIGKILL)
    if select.select([supervisor_pidfd], [], [], 0)[0]:
        os._exit(1)  # the supervisor died before PDEATHSIG was armed
    for name, index in req["cgroup_join"]:
        _stage(f"join cgroup {name}", os.write, fds[index], b"0")
    if req["join"] >= 0 and req["join_flags"]:
        # Enter the other child's namespaces at once: setns on a pidfd (Linux 5.8).
        _stage("setns", _sys.setns, fds[req["join"]], req["join_flags"])
    flags = req["flags"]
    if sync_fd >= 0:
        # The zygote writes our uid/gid maps, then closes its end of this pipe.
        if os.read(sync_fd, 1) != b"1":
            os._exit(1)  # the zygote could not write the maps; it reports why
        os.close(sync_fd)
        if req["ns_root"]:
            # Root mapped 0 inside to an unprivileged id outside: become that 0 now, before
            # any mount, so that what the child does is done as that id, not as the host's root.
            _switch_ids(0, 0, None)
    if req["setsid"]:
        os.setsid()
    if flags & CLONE_FLAGS["mount"]:
        _mounts(req, req["rootfs"] or "")
    if req["hostname"] is not None:
        _stage("sethostname", _sys.sethostname, req["hostname"])
    if flags & CLONE_FLAGS["net"]:
        _stage("loopback up", _loopback_up)
    if req["cwd"] is not None:
        _stage(f"chdir {req['cwd']}", os.chdir, req["cwd"])
    if req["umask"] >= 0:
        os.umask(req["umask"])
    _credentials(req)


# More than CPython 3.11's quickening threshold (8 calls or loop turns).
_WARM_UP_ROUNDS = 16
_NOTHING_TO_DO = {
    "rlimits": [],
    "uid": -1,
    "gid": -1,
    "groups": None,
    "caps": None,
    "cap_last": 0,
    "drop_caps": 0,
    "nnp": False,
}


def warm_up() -> None:
    """Run the side-effect-free parts of a child's path in the zygote, before its heap is frozen.

    CPython 3.11 rewrites a function's code object while it warms up
    (quickening, then specialising each instruction), and each rewritten page
    of a code object the zygote never ran would be copied into every child
    that runs it.  Run here, the rewrites happen once, in pages the children
    then share.
    """
    env = {"PATH": os.defpath}
    for _ in range(_WARM_UP_ROUNDS):
        try:
            _stage("warm-up", _resolve, "sh", env)
        except _StageError:
            pass  # a host without sh: the miss is warmed instead
        _credentials(_NOTHING_TO_DO)


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
        _setup(req, fds, supervisor_pidfd, sync_fd)
        env: dict[str, str] = req["env"]
        argv: list[str] = req["argv"]
        path = _stage("exec", _resolve, argv[0], env)
        targets: list[int] = req["fd_targets"]
        sources = fds[1 : 1 + len(targets)]
        report_fd = _stage("pass descriptors", _move_fds, targets, sources, report_fd)
        if req["init"]:
            # Signals stay blocked for init.  Without a PID namespace it is a subreaper.
            subreaper = not req["flags"] & CLONE_FLAGS["pid"]
            _init.run_init(
                path, argv, env, report_fd, subreaper=subreaper, listen_pid=req["listen_pid"]
            )
        if req["listen_pid"]:
            env["LISTEN_PID"] = str(os.getpid())  # the command is this very process
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        _stage("exec", os.execve, path, argv, env)
    except _StageError as exc:
        os.write(report_fd, b"E%s:%d\n" % (exc.stage.encode(), exc.errno))
    except BaseException:  # noqa: BLE001 - nothing may escape the child; report and exit
        os.write(report_fd, b"Esetup:0\n")
    os._exit(127)
