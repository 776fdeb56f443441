"""Clone one child that runs ``child.py``: shared by the zygote and ``nsup exec``'s direct way.

The caller must be single-threaded (see ``zygote.py``): the child runs Python.
"""

from __future__ import annotations

import gc
import os

from . import child as _child
from . import syscalls as _sys
from .namespaces import CLONE_FLAGS

TYPE_CHECKING = False  # not typing's: see child.py
if TYPE_CHECKING:
    import signal
    from typing import Any
else:
    import _signal as signal  # see child.py

__all__ = ["spawn_child"]

_EINVAL = 22


def _write_maps(pid: int, req: dict[str, Any]) -> None:
    if req["setgroups_deny"]:
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(req[name])


class _Kernel:
    """What this kernel turned out to lack, learned once per process."""

    clear_sighand = _sys.CLONE_CLEAR_SIGHAND  # 0 once clone3 refused it (Linux < 5.5)


def spawn_child(
    req: dict[str, Any], fds: list[int], supervisor_pidfd: int, extra: int
) -> tuple[Any, int]:
    """Clone one child for *req* with the *extra* clone flags; return ``((pid, errno, message), pidfd)``.

    ``CLONE_CLEAR_SIGHAND`` is added (the child starts with default handlers)
    where the kernel has it: on EINVAL the clone is tried again without it,
    and when that one works the flag is left out from then on (an EINVAL for
    another reason keeps it).
    """
    reply, pidfd = _spawn(req, fds, supervisor_pidfd, extra | _Kernel.clear_sighand)
    if reply[0] == 0 and reply[1] == _EINVAL and _Kernel.clear_sighand:
        reply, pidfd = _spawn(req, fds, supervisor_pidfd, extra)
        if reply[0] != 0:  # cloned without the flag: the EINVAL was the flag's (Linux < 5.5)
            _Kernel.clear_sighand = 0
    return reply, pidfd


def _spawn(
    req: dict[str, Any], fds: list[int], supervisor_pidfd: int, extra: int
) -> tuple[Any, int]:
    """Clone once, with the *extra* flags.

    The child runs :func:`child.child_main` and never returns here.  With a
    user namespace, the uid/gid maps are written before the child goes on.
    The caller must be single-threaded: the child runs Python.
    """
    flags: int = req["flags"]
    cgroup_fd = fds[req["cgroup"]] if req["cgroup"] >= 0 else -1
    sync_r = sync_w = -1
    if flags & CLONE_FLAGS["user"]:
        sync_r, sync_w = os.pipe()
    try:
        pid, pidfd = _sys.clone3(flags | extra, cgroup_fd=cgroup_fd)
    except OSError as exc:
        for fd in (sync_r, sync_w):
            if fd >= 0:
                os.close(fd)
        return (0, exc.errno or 0, str(exc.strerror)), -1
    if pid == 0:
        gc.disable()  # keep init's pages shared with the zygote's
        if sync_w >= 0:
            os.close(sync_w)
        _child.child_main(req, fds, supervisor_pidfd, sync_r)
    if sync_r < 0:
        return (pid, 0, ""), pidfd
    os.close(sync_r)
    try:
        _write_maps(pid, req)
        os.write(sync_w, b"1")
    except OSError as exc:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        return (pid, exc.errno or 0, f"writing uid/gid maps of pid {pid}: {exc.strerror}"), pidfd
    finally:
        os.close(sync_w)
    return (pid, 0, ""), pidfd
