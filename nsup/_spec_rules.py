"""What a spec's fields imply, and the checks across them: shared by ``ProcessSpec`` and ``nsup exec``.

Standard library only.  :class:`nsup.ProcessSpec` (attrs) and ``nsup
exec``'s light ``ExecSpec`` (no attrs, for the direct way) both run these
checks and both build their clone request (``_request.py``) through these
rules, so the two ways can never drift apart.  :class:`SpecLike` lists the
fields they read.
"""

from __future__ import annotations

import os

from ._errors import SpecError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Protocol

    class MountLike(Protocol):
        """What the rules and the request read of :class:`nsup.Mount`."""

        @property
        def type(self) -> str: ...
        @property
        def target(self) -> str: ...
        @property
        def source(self) -> str | None: ...
        @property
        def readonly(self) -> bool: ...
        @property
        def size(self) -> int | None: ...
        @property
        def mode(self) -> int | None: ...

    class LimitsLike(Protocol):
        """What the request reads of :class:`nsup.Limits`."""

        @property
        def rlimits(self) -> Mapping[str, int]: ...

    class SpecLike(Protocol):
        """The fields of :class:`nsup.ProcessSpec` the rules, the request and its errors read."""

        @property
        def argv(self) -> Sequence[str]: ...
        @property
        def env(self) -> Mapping[str, str] | None: ...
        @property
        def cwd(self) -> str | None: ...
        @property
        def namespaces(self) -> frozenset[str]: ...
        @property
        def hostname(self) -> str | None: ...
        @property
        def init(self) -> bool: ...
        @property
        def uid_map(self) -> tuple[tuple[int, int, int], ...] | None: ...
        @property
        def gid_map(self) -> tuple[tuple[int, int, int], ...] | None: ...
        @property
        def listen_fds(self) -> tuple[tuple[str, int], ...]: ...
        @property
        def mounts(self) -> Sequence[MountLike]: ...
        @property
        def new_session(self) -> bool: ...
        @property
        def limits(self) -> LimitsLike: ...
        @property
        def rootfs(self) -> str | None: ...
        @property
        def no_new_privs(self) -> bool | None: ...
        @property
        def capabilities(self) -> frozenset[str] | None: ...
        @property
        def user(self) -> int | None: ...
        @property
        def group(self) -> int | None: ...
        @property
        def groups(self) -> tuple[int, ...] | None: ...
        @property
        def umask(self) -> int | None: ...


__all__ = [
    "HARDENING_DROPS",
    "ROOT_ID_MAP",
    "check_fields",
    "check_mount",
    "dropped_capabilities",
    "effective_no_new_privs",
    "hardened",
    "maps_root_unprivileged",
]

#: The default uid and gid map of a ``user`` namespace made by root: 0-65535 inside are
#: 524288-589823 outside, ids no host user has (systemd-nspawn's private-users range starts
#: there), so root inside is nobody special on the host.
ROOT_ID_MAP = ((0, 0x80000, 65536),)

#: What a hardened spec (rootfs or read-only mounts) loses unless it lists ``capabilities``.
HARDENING_DROPS = frozenset({"CAP_SYS_ADMIN"})


def check_mount(kind: str, target: str, source: str | None, size: int | None) -> None:
    """Check one mount's fields against each other; raise ValueError saying what to change."""
    if not target.startswith("/"):
        raise ValueError(f"mount target must be an absolute path (got {target!r})")
    if kind == "bind" and not source:
        raise ValueError(f"a bind mount on {target!r} needs a 'source'")
    if kind != "bind" and source is not None:
        raise ValueError(f"a {kind} mount on {target!r} takes no 'source'")
    if size is not None and size <= 0:
        raise ValueError(f"tmpfs size on {target!r} must be positive (got {size})")


def check_fields(spec: SpecLike) -> None:
    """Check the fields of *spec* that depend on each other; raise SpecError saying what to change."""
    needs = (
        ("hostname", spec.hostname is not None, "uts"),
        ("uid_map", spec.uid_map is not None, "user"),
        ("gid_map", spec.gid_map is not None, "user"),
        ("mounts", bool(spec.mounts), "mount"),
        ("rootfs", spec.rootfs is not None, "mount"),
    )
    for name, given, namespace in needs:
        if given and namespace not in spec.namespaces:
            raise SpecError(f"{name!r} needs the {namespace!r} namespace; add it to namespaces")
    if spec.hostname is not None and not 0 < len(spec.hostname.encode()) <= 64:
        raise SpecError(f"'hostname' must be 1 to 64 bytes (got {spec.hostname!r})")
    for mount in spec.mounts:
        if ".." in mount.target.split("/"):
            where = "the rootfs" if spec.rootfs else "its place"
            raise SpecError(
                f"mount target {mount.target!r} has a '..' component, which could lead "
                f"outside {where}; write the path without '..'"
            )


def hardened(spec: SpecLike) -> bool:
    """True when *spec* asks for read-only mounts or a rootfs, which it must not undo."""
    return spec.rootfs is not None or any(m.readonly for m in spec.mounts)


def maps_root_unprivileged(spec: SpecLike) -> bool:
    """True when root makes the ``user`` namespace with the default, unprivileged map."""
    return (
        "user" in spec.namespaces
        and spec.uid_map is None
        and spec.gid_map is None
        and os.getuid() == 0
    )


def effective_no_new_privs(spec: SpecLike) -> bool:
    """Whether ``PR_SET_NO_NEW_PRIVS`` is set: as asked, else when :func:`hardened`."""
    return hardened(spec) if spec.no_new_privs is None else spec.no_new_privs


def dropped_capabilities(spec: SpecLike) -> frozenset[str]:
    """Capabilities removed by the hardening default: ``CAP_SYS_ADMIN`` unless ``capabilities`` is given."""
    if hardened(spec) and spec.capabilities is None:
        return HARDENING_DROPS
    return frozenset()
