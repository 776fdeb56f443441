"""The syscalls nsup needs that Python's standard library lacks, through ctypes.

This is the only module that touches ctypes.  It imports nothing but the
standard library, because it is also loaded by the zygote (see ``zygote.py``),
which must stay small and free of threads.

Every wrapper raises ``OSError(errno, message)`` where the message names the
syscall and its arguments; callers that know more (which namespace flag was
refused, which mount) add the likely cause.

Syscall numbers: clone3 (435) and everything numbered from 424 up are the same
on every architecture since Linux 5.1 unified the table, except alpha (+110),
which we refuse.  pivot_root has no glibc wrapper and an old, per-architecture
number, so it comes from an explicit table; an architecture missing from it
gets a clear error rather than a guess.
"""

from __future__ import annotations

import ctypes
import errno
import os

TYPE_CHECKING = False  # not typing's: see child.py
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable
else:
    import _signal as signal  # see child.py

__all__ = [
    "AT_RECURSIVE",
    "CLONE_CLEAR_SIGHAND",
    "CLONE_INTO_CGROUP",
    "CLONE_PARENT",
    "CLONE_PIDFD",
    "MNT_DETACH",
    "MOUNT_ATTR_RDONLY",
    "MS_BIND",
    "MS_NODEV",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_PRIVATE",
    "MS_RDONLY",
    "MS_REC",
    "MS_REMOUNT",
    "PR_CAPBSET_DROP",
    "PR_CAP_AMBIENT",
    "PR_CAP_AMBIENT_RAISE",
    "PR_SET_CHILD_SUBREAPER",
    "PR_SET_KEEPCAPS",
    "PR_SET_NO_NEW_PRIVS",
    "PR_SET_PDEATHSIG",
    "WALL",
    "capget",
    "capset",
    "children",
    "clone3",
    "mount",
    "mount_setattr",
    "pivot_root",
    "prctl",
    "probe_mount_setattr",
    "sethostname",
    "setns",
    "signal_pid",
    "umount2",
    "unshare",
]

# <linux/sched.h>
CLONE_PIDFD = 0x00001000
CLONE_PARENT = 0x00008000
CLONE_CLEAR_SIGHAND = 0x100000000
CLONE_INTO_CGROUP = 0x200000000

# <sys/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

# <linux/mount.h>, <fcntl.h>: mount_setattr(2) (Linux 5.12)
MOUNT_ATTR_RDONLY = 0x00000001
AT_RECURSIVE = 0x8000
AT_FDCWD = -100

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

# <linux/wait.h>: wait for a child whatever its exit signal.  Children made with
# CLONE_PARENT get the zygote's exit signal (SIGCHLD), but __WALL keeps a wait
# correct should that ever differ.
WALL = 0x40000000

_NR_CLONE3 = 435
_NR_MOUNT_SETATTR = 442
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_NR_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}


class _CloneArgs(ctypes.Structure):
    """``struct clone_args`` from <linux/sched.h>, version 2 (88 bytes)."""

    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("pidfd", ctypes.c_uint64),
        ("child_tid", ctypes.c_uint64),
        ("parent_tid", ctypes.c_uint64),
        ("exit_signal", ctypes.c_uint64),
        ("stack", ctypes.c_uint64),
        ("stack_size", ctypes.c_uint64),
        ("tls", ctypes.c_uint64),
        ("set_tid", ctypes.c_uint64),
        ("set_tid_size", ctypes.c_uint64),
        ("cgroup", ctypes.c_uint64),
    )


class _MountAttr(ctypes.Structure):
    """``struct mount_attr`` from <linux/mount.h> (32 bytes)."""

    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_libc: ctypes.CDLL | None = None


def _get_libc() -> ctypes.CDLL:
    global _libc  # noqa: PLW0603 - one lazily created handle, as pyroute2 does
    if _libc is None:
        if os.uname().machine == "alpha":
            raise OSError(0, "nsup does not support alpha (its syscall numbers differ)")
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        for name, argtypes in (
            ("unshare", [ctypes.c_int]),
            ("setns", [ctypes.c_int, ctypes.c_int]),
            ("sethostname", [ctypes.c_char_p, ctypes.c_size_t]),
            ("umount2", [ctypes.c_char_p, ctypes.c_int]),
            (
                "mount",
                [
                    ctypes.c_char_p,
                    ctypes.c_char_p,
                    ctypes.c_char_p,
                    ctypes.c_ulong,
                    ctypes.c_char_p,
                ],
            ),
            (
                "prctl",
                [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong],
            ),
        ):
            func = getattr(libc, name)
            func.argtypes = argtypes
            func.restype = ctypes.c_int
        _libc = libc
    return _libc


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def clone3(flags: int, *, exit_signal: int = 0, cgroup_fd: int = -1) -> tuple[int, int]:
    """Create a process with ``clone3``, asking for a pidfd.

    Like fork, it returns twice: ``(0, -1)`` in the child and ``(pid, pidfd)``
    in the parent.  ``CLONE_PIDFD`` is always added.  With ``cgroup_fd`` >= 0,
    ``CLONE_INTO_CGROUP`` places the child in that cgroup2 directory.

    Only a single-threaded caller may run Python in the child: see zygote.py.

    Raises:
        OSError: the kernel refused; the message names the flags.

    """
    pidfd = ctypes.c_int(-1)
    args = _CloneArgs()
    args.flags = flags | CLONE_PIDFD
    args.pidfd = ctypes.addressof(pidfd)
    args.exit_signal = exit_signal
    if cgroup_fd >= 0:
        args.flags |= CLONE_INTO_CGROUP
        args.cgroup = cgroup_fd
    pid = _get_libc().syscall(
        ctypes.c_long(_NR_CLONE3), ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args))
    )
    _check(pid, f"clone3(flags={clone_flags_to_str(args.flags)})")
    if pid == 0:
        return 0, -1
    return pid, pidfd.value


_FLAG_NAMES = {
    0x00000100: "CLONE_VM",
    0x00001000: "CLONE_PIDFD",
    0x00008000: "CLONE_PARENT",
    0x00020000: "CLONE_NEWNS",
    0x02000000: "CLONE_NEWCGROUP",
    0x04000000: "CLONE_NEWUTS",
    0x08000000: "CLONE_NEWIPC",
    0x10000000: "CLONE_NEWUSER",
    0x20000000: "CLONE_NEWPID",
    0x40000000: "CLONE_NEWNET",
    CLONE_CLEAR_SIGHAND: "CLONE_CLEAR_SIGHAND",
    CLONE_INTO_CGROUP: "CLONE_INTO_CGROUP",
}


def clone_flags_to_str(flags: int) -> str:
    """Spell *flags* as ``CLONE_A|CLONE_B``, with any unknown bits in hex."""
    names = [name for bit, name in _FLAG_NAMES.items() if flags & bit]
    rest = flags & ~sum(_FLAG_NAMES)
    if rest:
        names.append(hex(rest))
    return "|".join(names) or "0"


def unshare(flags: int) -> None:
    """``unshare(2)``; note it affects only the calling thread's namespaces."""
    _check(_get_libc().unshare(flags), f"unshare({clone_flags_to_str(flags)})")


def setns(fd: int, nstype: int = 0) -> None:
    """``setns(2)`` into the namespace that *fd* refers to."""
    _check(_get_libc().setns(fd, nstype), f"setns(fd={fd})")


def sethostname(name: str) -> None:
    """``sethostname(2)`` in the caller's UTS namespace."""
    raw = name.encode()
    _check(_get_libc().sethostname(raw, len(raw)), f"sethostname({name!r})")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    """``mount(2)``; the message names source, target and type."""
    result = _get_libc().mount(_b(source), _b(target), _b(fstype), flags, _b(data))
    _check(result, f"mount({source!r} on {target!r}, type {fstype!r}, flags {flags:#x})")


def umount2(target: str, flags: int = MNT_DETACH) -> None:
    """``umount2(2)``, lazily (``MNT_DETACH``) by default."""
    _check(_get_libc().umount2(_b(target), flags), f"umount2({target!r})")


def pivot_root(new_root: str, put_old: str) -> None:
    """``pivot_root(2)``, which glibc does not wrap.

    Raises:
        OSError: on failure, or when this architecture's number is unknown.

    """
    machine = os.uname().machine
    number = _NR_PIVOT_ROOT.get(machine)
    if number is None:
        raise OSError(0, f"pivot_root: syscall number unknown for {machine!r}; please report")
    libc = _get_libc()
    result = libc.syscall(ctypes.c_long(number), _b(new_root), _b(put_old))
    _check(result, f"pivot_root({new_root!r}, {put_old!r})")


def children(pid: int | str = "self") -> list[int]:
    """The children of every thread of *pid*, from /proc (an ended thread or process has none)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            continue  # the thread just ended
    return found


def signal_pid(pid: int, signo: int, still_meant: Callable[[], bool] | None = None) -> bool:
    """Signal *pid* through a pidfd; return False if it is gone.

    A pid read from /proc may be recycled before it is signalled.  With
    *still_meant*, the check that it is the process meant (a cgroup member,
    a descendant) runs after the pidfd is open, when the pid can no longer
    change hands, and the signal is sent only if it holds.
    """
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if still_meant is not None and not still_meant():
            return False
        signal.pidfd_send_signal(fd, signo)
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)
    return True


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """``prctl(2)``."""
    return _check(_get_libc().prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def mount_setattr(path: str, attr_set: int, *, recursive: bool = True) -> None:
    """``mount_setattr(2)`` (Linux 5.12): set *attr_set* on the mount at *path*.

    With *recursive*, ``AT_RECURSIVE`` applies it to every mount beneath too.

    Raises:
        OSError: ENOSYS on kernels before 5.12; otherwise the kernel's reason.

    """
    attr = _MountAttr()
    attr.attr_set = attr_set
    flags = AT_RECURSIVE if recursive else 0
    result = _get_libc().syscall(
        ctypes.c_long(_NR_MOUNT_SETATTR),
        ctypes.c_int(AT_FDCWD),
        _b(path),
        ctypes.c_uint(flags),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(result, f"mount_setattr({path!r}, attr_set={attr_set:#x}, flags={flags:#x})")


def capget() -> tuple[int, int, int]:
    """``capget(2)`` for the calling thread: ``(effective, permitted, inheritable)`` 64-bit masks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_get_libc().capget(ctypes.byref(header), data), "capget")
    return (
        data[0].effective | data[1].effective << 32,
        data[0].permitted | data[1].permitted << 32,
        data[0].inheritable | data[1].inheritable << 32,
    )


def probe_mount_setattr() -> bool:
    """Whether the kernel has ``mount_setattr(2)``: any answer but ENOSYS says it has."""
    try:
        mount_setattr("/nonexistent/nsup-probe", MOUNT_ATTR_RDONLY, recursive=False)
    except OSError as exc:
        return exc.errno != errno.ENOSYS
    return True  # cannot happen (the path does not exist), but it would mean yes


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """``capset(2)`` for the calling thread, with 64-bit capability masks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    result = _get_libc().capset(ctypes.byref(header), data)
    _check(result, "capset")
