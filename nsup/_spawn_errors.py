"""Turn a failed stage of a spawn into a message that says what to change.

As bubblewrap does for clone, the explanation depends on the errno: the same
EPERM means "you need a user namespace" for clone3 and "the source is on a
locked mount" for a read-only remount.
"""

from __future__ import annotations

import errno
import os

from ._clone.namespaces import CLONE_FLAGS
from ._errors import SpawnError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from ._spec_rules import SpecLike

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


def _exec_hint(spec: SpecLike, err: int) -> str:
    name = spec.argv[0]
    if err == errno.ENOENT:
        where = "" if "/" in name else " on the child's PATH"
        return f"command {name!r} not found{where}; check the name or give an absolute path"
    if err == errno.EACCES:
        return f"command {name!r} is not executable by the child's user (check its mode and mount)"
    return f"could not execute {name!r}"


_CREDENTIAL_STAGES = (
    "setrlimit",
    "setgroups",
    "setgid",
    "setuid",
    "drop capabilities",
    "set capabilities",
    "no_new_privs",
)
_FIXED_HINTS = {
    "chdir": "the working directory must exist inside the child (after mounts)",
    "uid_map": "an unprivileged caller may map only its own uid and gid, each to a single id",
    "sethostname": "the hostname must be 1 to 64 bytes",
    "setns": "the process whose namespaces were to be joined has exited, "
    "or setns on a pidfd needs Linux >= 5.8",
}


def _hint(spec: SpecLike, stage: str, err: int, detail: str) -> str:
    if stage == "exec":
        return _exec_hint(spec, err)
    if stage.startswith(("rootfs", "bind rootfs", "minimal /dev", "pivot_root")):
        return _rootfs_hint(spec, stage, err)
    if stage.startswith(_CREDENTIAL_STAGES):
        return _credentials_hint(spec, stage, err)
    if stage.startswith("join cgroup"):
        return (
            f"the child could not move itself into its cgroup v1 {stage.rpartition(' ')[2]} "
            "hierarchy; nsup needs write access to that hierarchy's cgroup.procs "
            "(as root, or a delegated hierarchy)"
        )
    return _FIXED_HINTS.get(stage.partition(" ")[0], detail)


def spawn_error(spec: SpecLike, stage: str, err: int, flags: int, detail: str = "") -> SpawnError:
    """Build the :class:`SpawnError` for *stage* failing with *err*."""
    reason = os.strerror(err) if err else (detail or "failed")
    what = f"{stage}: {reason}"
    if stage == "clone3":
        hint = _clone_hint(err, flags)
    elif stage.startswith("mount"):
        what, hint = _mount_hint(spec, stage, err, detail)
    else:
        hint = _hint(spec, stage, err, detail)
    return SpawnError(err, f"{what}; {hint}" if hint else what, stage)


def _mount_hint(spec: SpecLike, stage: str, err: int, detail: str) -> tuple[str, str]:
    """Return the "what failed" and the hint for a mount stage, naming source and target."""
    target = stage.partition(" on ")[2]
    mount = next((m for m in spec.mounts if m.target == target), None)
    source = mount.source if mount is not None and mount.source else None
    kind = stage.split()[1]
    inside = f" in rootfs {spec.rootfs}" if spec.rootfs else ""
    what = f"{stage}: {os.strerror(err) if err else 'failed'}"
    if source is not None:
        what = f"mount {kind} {source} on {target}{inside}: {os.strerror(err) if err else 'failed'}"
    if err == errno.ENOENT and detail == "source":
        return (
            what,
            f"the bind source {source!r} does not exist on the host; create it or fix the path",
        )
    if err == errno.ENOENT and detail == "target":
        return what, (
            f"the mount point {target!r} does not exist on the host, and nsup creates mount "
            "points only inside a rootfs or on a tmpfs it mounted earlier (it never changes the "
            "host); create it on the host, use a rootfs, or mount a tmpfs on a parent first"
        )
    if err == errno.EXDEV:
        resolved = f" (it resolves to {detail!r})" if detail else ""
        return what, (
            f"the target {target!r} leads outside the rootfs {spec.rootfs!r}{resolved}, "
            "through a symlink or '..'; give a path that stays inside"
        )
    hint = {
        errno.ENOENT: "the source or target does not exist inside the child; create the target first",
        errno.EPERM: "mounting needs CAP_SYS_ADMIN in the mount namespace's owning user namespace",
        errno.EACCES: "permission denied on the source or target path",
        errno.ENOTDIR: "a directory cannot be bound onto a file, nor a file onto a directory",
        errno.EINVAL: "the kernel refused these options (a tmpfs 'size' or 'mode' it cannot use?)",
    }.get(err, "check the source, target and options")
    if stage == "mount proc on /proc" and err == errno.EPERM:
        hint = "/proc cannot be mounted here: a container may mask parts of the host /proc"
    return what, hint


def _rootfs_hint(spec: SpecLike, stage: str, err: int) -> str:
    if stage.startswith("rootfs") or err in (errno.ENOENT, errno.ENOTDIR):
        return f"'rootfs' must be an existing directory (got {spec.rootfs!r})"
    if stage.startswith("pivot_root"):
        return (
            "pivot_root refused the rootfs: it must be a directory on a file system that "
            "allows mounts (not the initramfs root), and the caller needs CAP_SYS_ADMIN"
        )
    if stage.startswith("minimal /dev"):
        return "the rootfs needs a 'dev' directory nsup can mount a tmpfs on, or one it can create"
    return "binding the rootfs onto itself needs CAP_SYS_ADMIN in the mount namespace"


def _credentials_hint(spec: SpecLike, stage: str, err: int) -> str:
    if stage.startswith("setrlimit"):
        name = stage.partition(" ")[2]
        value = spec.limits.rlimits.get(name)
        if err == errno.EPERM:
            return (
                f"raising the {name} hard limit (to {value}) above nsup's own needs "
                "CAP_SYS_RESOURCE; lower the value or run nsup as root"
            )
        return f"the kernel refused {value} for {name} (nofile cannot exceed fs.nr_open)"
    if stage.startswith(("setgroups", "setgid", "setuid")):
        if err == errno.EINVAL:
            return "that id is not mapped in the child's user namespace; add it to uid_map/gid_map"
        return (
            "changing user or group needs CAP_SETUID/CAP_SETGID; in a rootless user namespace "
            "setgroups is denied, so 'user' and 'group' must be ids mapped there"
        )
    if stage == "no_new_privs":
        return "prctl(PR_SET_NO_NEW_PRIVS) failed; this kernel may be older than 3.5"
    return (
        "dropping capabilities needs CAP_SETPCAP, and only capabilities the child holds "
        f"can be kept (asked for {sorted(spec.capabilities or ())})"
    )
