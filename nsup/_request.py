"""The clone request for a spec, and the checks made before anything starts.

Shared by :func:`nsup.spawn` (which sends the request to the zygote) and
``nsup exec``'s direct way (which clones the child itself), so that both build
the same request from the same fields.  Standard library only at run time:
``nsup exec`` passes its light ``ExecSpec`` (no attrs), typed like a
``ProcessSpec`` by :class:`~nsup._spec_rules.SpecLike`.
"""

from __future__ import annotations

import errno
import os

from ._clone.caps import cap_last_cap, mask_of
from ._clone.namespaces import CLONE_FLAGS
from ._clone.rlimits import RLIMITS, found
from ._spawn_errors import spawn_error
from ._spec_rules import (
    ROOT_ID_MAP,
    dropped_capabilities,
    effective_no_new_privs,
    maps_root_unprivileged,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any, Protocol

    from ._spec_rules import SpecLike

    class JoinLike(Protocol):
        """What the request reads of the :class:`nsup.Process` a child joins."""

        @property
        def spec(self) -> SpecLike: ...


__all__ = ["build_request", "has_init", "preflight"]


def _id_map_text(rows: tuple[tuple[int, int, int], ...] | None, default: int, *, root: bool) -> str:
    rows = rows or (ROOT_ID_MAP if root else ((0, default, 1),))
    return "".join(f"{inside} {outside} {count}\n" for inside, outside, count in rows)


def build_request(
    spec: SpecLike, targets: list[int], rootfs: str | None, join: JoinLike | None
) -> dict[str, Any]:
    flags = 0
    for name in spec.namespaces:
        flags |= CLONE_FLAGS[name]
    mounts = [
        (m.type, m.target, m.source, m.readonly, _mount_data(m.size, m.mode)) for m in spec.mounts
    ]
    if "pid" in spec.namespaces and "mount" in spec.namespaces:
        mounts.append(("proc", "/proc", None, False, ""))
    env = dict(os.environ if spec.env is None else spec.env)
    if spec.listen_fds:
        env["LISTEN_FDS"] = str(len(spec.listen_fds))
        env["LISTEN_FDNAMES"] = ":".join(name for name, _fd in spec.listen_fds)
        env.pop("LISTEN_PID", None)  # set in the child, to the command's own pid
    return {
        "argv": list(spec.argv),
        "env": env,
        "listen_pid": bool(spec.listen_fds),
        "flags": flags,
        "init": has_init(spec, join),
        "hostname": spec.hostname,
        "cwd": spec.cwd,
        "setsid": spec.new_session,
        "mounts": mounts,
        "fd_targets": targets,
        "uid_map": _id_map_text(spec.uid_map, os.getuid(), root=maps_root_unprivileged(spec)),
        "gid_map": _id_map_text(spec.gid_map, os.getgid(), root=maps_root_unprivileged(spec)),
        "ns_root": maps_root_unprivileged(spec),
        "setgroups_deny": os.geteuid() != 0,
        "cgroup": -1,
        "cgroup_join": [],
        "rootfs": rootfs,
        "rlimits": _rlimits(spec),
        "uid": -1 if spec.user is None else spec.user,
        "gid": -1 if spec.group is None else spec.group,
        "groups": None if spec.groups is None else list(spec.groups),
        "umask": -1 if spec.umask is None else spec.umask,
        "caps": None if spec.capabilities is None else mask_of(spec.capabilities),
        "cap_last": cap_last_cap() if spec.capabilities is not None else 0,
        "nnp": effective_no_new_privs(spec),
        "drop_caps": mask_of(dropped_capabilities(spec)),
        "join": -1,
        "join_flags": _join_flags(join),
    }


def _rlimits(spec: SpecLike) -> list[tuple[str, int, int, int]]:
    """(name, number, soft, hard) to set in the child: the spec's, then what nsup changed in itself.

    An rlimit nsup raised in its own process (``nsup run``'s descriptors) goes
    back to what nsup was started with, unless the spec sets it.
    """
    own = [(name, RLIMITS[name], value, value) for name, value in spec.limits.rlimits.items()]
    return own + [limit for limit in found() if limit[0] not in spec.limits.rlimits]


def has_init(spec: SpecLike, join: JoinLike | None) -> bool:
    """Whether nsup's init runs the command: as the spec says, joining or not.

    A joined run keeps the init (a subreaper outside the joined PID namespace
    that starts the command inside it, as ``nsenter --fork`` does); exec probes
    ask for ``init=False``.
    """
    del join  # the same rule either way; kept so every caller states what it joins
    return spec.init


def _join_flags(join: JoinLike | None) -> int:
    flags = 0
    if join is not None:
        for name in join.spec.namespaces:
            flags |= CLONE_FLAGS[name]
    return flags


def preflight(spec: SpecLike) -> str | None:
    """Check what can be checked before anything starts; return the resolved rootfs.

    A missing bind source, a rootfs that is not a directory, a mount target
    that resolves outside the rootfs, or (without a rootfs) a mount target
    missing on the host and not below an earlier mount, fails here, with
    nothing started.  (The child checks again, as the file system may change
    in between; below an earlier mount the host's tree is not what it sees.)
    """
    rootfs = None
    if spec.rootfs is not None:
        rootfs = os.path.realpath(spec.rootfs)
        if not os.path.isdir(rootfs):
            raise spawn_error(spec, f"rootfs {spec.rootfs}", errno.ENOTDIR, 0)
    earlier: list[str] = []  # below these, the host's tree is not what the child will see
    for mount in spec.mounts:
        stage = f"mount {mount.type} on {mount.target}"
        if mount.type == "bind" and not os.path.exists(mount.source or ""):
            raise spawn_error(spec, stage, errno.ENOENT, 0, "source")
        if rootfs is None:
            below = any(mount.target.startswith(t + "/") for t in earlier)
            if not below and not os.path.lexists(mount.target):
                raise spawn_error(spec, stage, errno.ENOENT, 0, "target")
            earlier.append(mount.target.rstrip("/"))
        if rootfs is not None:
            real = os.path.realpath(rootfs + mount.target)
            if real != rootfs and not real.startswith(rootfs + "/"):
                raise spawn_error(spec, stage, errno.EXDEV, 0, real)
    return rootfs


def _mount_data(size: int | None, mode: int | None) -> str:
    parts = [f"size={size}"] if size is not None else []
    if mode is not None:
        parts.append(f"mode={mode:o}")
    return ",".join(parts)
