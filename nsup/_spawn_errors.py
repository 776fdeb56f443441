"""Turn a failed stage of a spawn into a message that says what to change.

As bubblewrap does for clone, the explanation depends on the errno: the same
EPERM means "you need a user namespace" for clone3 and "the source is on a
locked mount" for a read-only remount.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from ._errors import SpawnError
from ._namespaces import CLONE_FLAGS

if TYPE_CHECKING:
    from ._spec import ProcessSpec

__all__ = ["spawn_error"]


def _ns_list(flags: int) -> str:
    return ", ".join(name for name, bit in sorted(CLONE_FLAGS.items()) if flags & bit) or "none"


def _clone_hint(err: int, flags: int) -> str:
    names = _ns_list(flags)
    if err == errno.EPERM and not flags & CLONE_FLAGS["user"]:
        return (
            f"creating namespaces ({names}) needs CAP_SYS_ADMIN; as an unprivileged user add "
            "'user' to the namespaces"
        )
    hints = {
        errno.EPERM: "the kernel refused an unprivileged user namespace: check the sysctls "
        "kernel.unprivileged_userns_clone and user.max_user_namespaces, and any "
        "AppArmor/SELinux policy that restricts user namespaces",
        errno.EINVAL: f"this kernel lacks one of the namespaces asked for ({names}) "
        "or clone3 itself (Linux >= 5.3)",
        errno.ENOSPC: f"a namespace limit was reached for one of ({names}): "
        "see /proc/sys/user/max_*_namespaces",
        errno.EUSERS: "user namespaces are nested too deep (the limit is 32)",
        errno.ENOSYS: "this kernel has no clone3 (Linux >= 5.3 is needed)",
        errno.ENOMEM: "out of memory, or the PID namespace's init has exited",
    }
    return hints.get(err, f"namespaces asked for: {names}")


def spawn_error(
    spec: ProcessSpec, stage: str, err: int, flags: int, detail: str = ""
) -> SpawnError:
    """Build the :class:`SpawnError` for *stage* failing with *err*."""
    reason = os.strerror(err) if err else (detail or "failed")
    what = f"{stage}: {reason}"
    if stage == "clone3":
        hint = _clone_hint(err, flags)
    elif stage == "exec":
        name = spec.argv[0]
        if err == errno.ENOENT:
            where = "" if "/" in name else " on the child's PATH"
            hint = f"command {name!r} not found{where}; check the name or give an absolute path"
        elif err == errno.EACCES:
            hint = (
                f"command {name!r} is not executable by the child's user (check its mode and mount)"
            )
        else:
            hint = f"could not execute {name!r}"
    elif stage.startswith("mount"):
        hint = {
            errno.ENOENT: "the source or target does not exist inside the child; create the target first",
            errno.EPERM: "mounting needs CAP_SYS_ADMIN in the mount namespace's owning user namespace",
            errno.EACCES: "permission denied on the source or target path",
        }.get(err, "check the source, target and options")
        if stage == "mount proc on /proc" and err == errno.EPERM:
            hint = "/proc cannot be mounted here: a container may mask parts of the host /proc"
    elif stage.startswith("chdir"):
        hint = "the working directory must exist inside the child (after mounts)"
    elif stage == "uid_map":
        hint = "an unprivileged caller may map only its own uid and gid, each to a single id"
    elif stage == "sethostname":
        hint = "the hostname must be 1 to 64 bytes"
    else:
        hint = detail
    return SpawnError(err, f"{what}; {hint}" if hint else what, stage)
