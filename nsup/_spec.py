"""``ProcessSpec``: everything needed to start one child, checked up front.

A spec is frozen and validated when it is built, so a bad argument fails in
the caller's frame with a message that says what to change, before anything
is cloned.
"""

from __future__ import annotations

import math
import resource
import signal
from collections.abc import Iterable, Mapping
from typing import Literal

import attrs

from ._clone.caps import check_capabilities
from ._clone.namespaces import DEFAULT_NAMESPACES, check_namespaces
from ._errors import SpecError
from ._limits import RLIMITS, Limits
from ._mount import Mount
from ._spec_rules import HARDENING_DROPS, ROOT_ID_MAP, check_fields
from ._spec_rules import dropped_capabilities as _dropped_capabilities
from ._spec_rules import effective_no_new_privs as _effective_no_new_privs
from ._spec_rules import hardened as _hardened
from ._spec_rules import maps_root_unprivileged as _maps_root_unprivileged

__all__ = ["HARDENING_DROPS", "ROOT_ID_MAP", "IdMap", "ProcessSpec", "StdioMode"]

StdioMode = Literal["inherit", "null", "pipe"] | int
IdMap = tuple[tuple[int, int, int], ...]


def _argv(value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise SpecError(
            f"'argv' must be a list of strings (got {value!r}); split a command line with shlex.split()"
        )
    argv = tuple(value)
    if not argv:
        raise SpecError("'argv' is empty; give at least the command to run")
    for arg in argv:
        if not isinstance(arg, str):
            raise SpecError(f"'argv' items must be strings (got {arg!r} in {list(argv)!r})")
        if "\0" in arg:
            raise SpecError(f"'argv' items cannot contain NUL bytes (got {arg!r})")
    return argv


def _namespaces(value: object) -> frozenset[str]:
    try:
        return check_namespaces(value)
    except (TypeError, ValueError) as exc:
        raise SpecError(str(exc)) from None


def _env(value: object) -> Mapping[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise SpecError(
            f"'env' must be a mapping of strings to strings, or None to inherit (got {value!r})"
        )
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise SpecError(f"'env' keys and values must be strings (got {key!r}: {val!r})")
        if not key or "=" in key or "\0" in key + val:
            raise SpecError(f"'env' has an invalid variable {key!r}: no '=' or NUL, and not empty")
    return dict(value)


def _id_map(value: object) -> IdMap | None:
    if value is None:
        return None
    try:
        rows = tuple((int(a), int(b), int(c)) for a, b, c in value)  # type: ignore[attr-defined]  # any iterable of triples
    except (TypeError, ValueError):
        raise SpecError(
            f"an id map must be a list of (inside, outside, count) triples (got {value!r})"
        ) from None
    if not rows or any(n < 0 for row in rows for n in row) or any(row[2] == 0 for row in rows):
        raise SpecError(
            f"an id map needs at least one row of non-negative ids and a count > 0 (got {value!r})"
        )
    return rows


def _stdio(value: object) -> StdioMode:
    if value in ("inherit", "null", "pipe"):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise SpecError(f"stdio must be 'inherit', 'null', 'pipe' or a file descriptor (got {value!r})")


def _pass_fds(value: object) -> Mapping[int, int]:
    if isinstance(value, Mapping):
        result = {int(k): int(v) for k, v in value.items()}
    elif isinstance(value, Iterable):
        result = {int(fd): int(fd) for fd in value}
    else:
        raise SpecError(
            f"'pass_fds' must be a list of fds or a {{target: source}} mapping (got {value!r})"
        )
    bad = sorted(t for t in result if t <= 2)
    if bad:
        raise SpecError(f"'pass_fds' targets must be 3 or more: use stdin/stdout/stderr for {bad}")
    return result


# systemd's rule for a descriptor name: printable ASCII but ':', at most 255 characters.
_FD_NAME_CHARS = frozenset(map(chr, range(0x21, 0x7F))) - {":"}


def _listen_fd(item: object) -> tuple[str, int]:
    name, fd = item if isinstance(item, tuple) and len(item) == 2 else ("unknown", item)
    if hasattr(fd, "fileno"):
        fd = fd.fileno()
    if not isinstance(fd, int) or isinstance(fd, bool) or fd < 0:
        raise SpecError(
            f"'listen_fds' items must be sockets, descriptors or (name, socket) pairs (got {item!r})"
        )
    if not isinstance(name, str) or not 0 < len(name) <= 255 or not _FD_NAME_CHARS.issuperset(name):
        raise SpecError(
            f"'listen_fds' names must be 1 to 255 printable ASCII characters without "
            f"spaces or ':' (got {name!r})"
        )
    return name, fd


def _listen_fds(value: object) -> tuple[tuple[str, int], ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise SpecError(
            f"'listen_fds' must be a list of sockets or (name, socket) pairs (got {value!r})"
        )
    return tuple(_listen_fd(item) for item in value)


def _mounts(value: object) -> tuple[Mount, ...]:
    if not isinstance(value, Iterable) or isinstance(value, str):
        raise SpecError(f"'mounts' must be a list of nsup.Mount (got {value!r})")
    mounts = tuple(value)
    for mount in mounts:
        if not isinstance(mount, Mount):
            raise SpecError(f"'mounts' items must be nsup.Mount (got {mount!r})")
    return mounts


_RLIM_INFINITY = 2**64 - 1


def _limits(value: object) -> Limits:
    if value is None:
        return Limits()
    if not isinstance(value, Limits):
        raise SpecError(f"'limits' must be an nsup.Limits (got {value!r})")
    for name, given, ok in (
        ("memory", value.memory, _is_int(value.memory) and value.memory > 0),  # type: ignore[operator]
        ("pids", value.pids, _is_int(value.pids) and value.pids > 0),  # type: ignore[operator]
        (
            "cpu",
            value.cpu,
            isinstance(value.cpu, int | float)
            and not isinstance(value.cpu, bool)
            and math.isfinite(value.cpu)
            and value.cpu > 0,
        ),
    ):
        if given is not None and not ok:
            raise SpecError(f"'limits.{name}' must be a positive number (got {given!r})")
    for name, limit in value.rlimits.items():
        if name not in RLIMITS:
            raise SpecError(
                f"'limits.rlimits' has unknown rlimit {name!r}; choose from "
                f"{', '.join(sorted(RLIMITS))} (the CPU-time rlimit is 'cputime')"
            )
        if not _is_int(limit) or not (
            limit == resource.RLIM_INFINITY or 0 <= limit <= _RLIM_INFINITY
        ):
            raise SpecError(
                f"'limits.rlimits[{name!r}]' must be an integer, 0 or more, or "
                f"resource.RLIM_INFINITY for unlimited (got {limit!r})"
            )
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _id(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**32 - 1:
        raise SpecError(
            f"'user' and 'group' must be numeric ids from 0 to 4294967294 (got {value!r})"
        )
    assert isinstance(value, int)  # noqa: S101 - checked just above
    return value


def _groups(value: object) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise SpecError(f"'groups' must be a list of numeric gids, or None (got {value!r})")
    groups = tuple(value)
    for gid in groups:
        if not _is_int(gid) or not 0 <= gid < 2**32 - 1:
            raise SpecError(
                f"'groups' items must be numeric gids from 0 to 4294967294 (got {gid!r})"
            )
    return tuple(dict.fromkeys(groups))


def _umask(value: object) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or not 0 <= value <= 0o777:  # type: ignore[operator]  # checked to be an int
        raise SpecError(
            f"'umask' must be an integer from 0 to 0o777, such as 0o027 (got {value!r})"
        )
    assert isinstance(value, int)  # noqa: S101 - checked just above
    return value


def _capabilities(value: object) -> frozenset[str] | None:
    if value is None:
        return None
    try:
        return check_capabilities(value)
    except (TypeError, ValueError) as exc:
        raise SpecError(str(exc)) from None


def _rootfs(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise SpecError(f"'rootfs' must be an absolute path (got {value!r})")
    return value


def _signal(value: object) -> signal.Signals:
    try:
        if isinstance(value, str):
            name = value.upper()
            return signal.Signals[name if name.startswith("SIG") else "SIG" + name]
        if isinstance(value, int):
            return signal.Signals(value)
    except (KeyError, ValueError):
        pass
    raise SpecError(f"'stop_signal' must be a signal name or number (got {value!r})")


def _positive(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise SpecError(f"{attribute.name!r} must be positive (got {value!r})")


@attrs.frozen(kw_only=True)
class ProcessSpec:
    """What to run and how to isolate it.

    Args:
        argv: the command and its arguments; ``argv[0]`` is looked up on the
            child's ``PATH`` unless it contains a ``/``.
        env: the child's whole environment; ``None`` (default) inherits the
            supervisor's at spawn time.
        cwd: working directory inside the child (after mounts).
        namespaces: names from pid, mount, uts, ipc, net, user, cgroup;
            default ``{"pid", "mount", "uts", "ipc"}``; ``()`` for none.
        hostname: needs ``uts``.
        init: run the command under nsup's init (default; never when the
            child joins another's namespaces, see ``join`` of :func:`nsup.spawn`).  With a ``pid``
            namespace the init is PID 1; without one it is a child subreaper
            that kills every descendant when the command exits or the
            supervisor dies, so nothing escapes either way.  ``False`` execs
            the command directly (it is PID 1 of a new ``pid`` namespace).
        uid_map, gid_map: ``(inside, outside, count)`` rows for a ``user``
            namespace.  Default: for root, :data:`ROOT_ID_MAP` (0-65535 inside
            are the unprivileged 524288-589823 outside, and the child becomes
            that root before its mounts); for anyone else, the caller's uid/gid
            is 0 inside.
        stdin, stdout, stderr: ``"inherit"`` (default), ``"null"``, ``"pipe"``
            (then ``Process.stdin``/``stdout``/``stderr`` are trio streams), or
            a file descriptor to pass.
        pass_fds: more descriptors to pass, as a list (same numbers) or a
            ``{target: source}`` mapping.
        listen_fds: listening sockets for socket activation, as
            ``sd_listen_fds(3)`` reads them: each a socket (or descriptor) or a
            ``(name, socket)`` pair.  They become descriptors 3, 4, ... in
            order, and the command's environment gets ``LISTEN_FDS``,
            ``LISTEN_FDNAMES`` (``unknown`` for a socket without a name) and
            ``LISTEN_PID``, set to the command's own pid (with nsup's init, the
            init sets it once the command's pid is known).  The caller keeps
            the sockets open, across as many spawns as it likes.
        mounts: ``nsup.Mount`` entries applied in order; needs ``mount``.
        new_session: start the child in a new session (``setsid``), away from
            the terminal's signals.
        stop_signal, stop_timeout: how the child is stopped when its block
            ends or is cancelled: this signal, then SIGKILL after the timeout.
        limits: an ``nsup.Limits``: ``memory``, ``pids`` and ``cpu`` (cores)
            through the child's own cgroup (v2, else v1 where mounted), and
            rlimits by name, set in the child before exec.  A limit that
            cannot be applied fails the spawn.
        rootfs: a directory that becomes the child's ``/`` (``pivot_root``),
            with a minimal ``/dev`` and, with a ``pid`` namespace, ``/proc``;
            needs ``mount``.  Mount targets are then paths inside it.
        no_new_privs: set ``PR_SET_NO_NEW_PRIVS``: exec never grants
            privileges (setuid bits and file capabilities are ignored).
            ``None`` (default): set it when the spec is *hardened* (a
            ``rootfs`` or a read-only mount), else not.
        capabilities: keep only these capabilities (``"CAP_NET_BIND_SERVICE"``
            or ``"net_bind_service"``), in the bounding, permitted, effective,
            inheritable and ambient sets; ``None`` (default) leaves them
            alone, except that a hardened spec loses ``CAP_SYS_ADMIN`` (so it
            cannot remount what was made read-only); list it to keep it.
        user, group: numeric uid and gid to run as inside, set after mounts
            and before exec.  Names are the policy's business
            (``nsup.Policy`` resolves them); here they are numbers.
        groups: the supplementary gids, set with ``setgroups`` before the
            gid and uid; ``None`` (default) means ``[group]`` (or none) when
            ``user`` or ``group`` is given, and unchanged otherwise.
        umask: the file mode creation mask (``0o027``) set before exec;
            ``None`` (default) keeps the supervisor's.

    Raises:
        nsup.SpecError: an argument is invalid; the message says what to change.

    """

    argv: tuple[str, ...] = attrs.field(converter=_argv)
    env: Mapping[str, str] | None = attrs.field(default=None, converter=_env)
    cwd: str | None = None
    namespaces: frozenset[str] = attrs.field(default=DEFAULT_NAMESPACES, converter=_namespaces)
    hostname: str | None = None
    init: bool = True
    uid_map: IdMap | None = attrs.field(default=None, converter=_id_map)
    gid_map: IdMap | None = attrs.field(default=None, converter=_id_map)
    stdin: StdioMode = attrs.field(default="inherit", converter=_stdio)
    stdout: StdioMode = attrs.field(default="inherit", converter=_stdio)
    stderr: StdioMode = attrs.field(default="inherit", converter=_stdio)
    pass_fds: Mapping[int, int] = attrs.field(factory=dict, converter=_pass_fds)
    listen_fds: tuple[tuple[str, int], ...] = attrs.field(default=(), converter=_listen_fds)
    mounts: tuple[Mount, ...] = attrs.field(default=(), converter=_mounts)
    new_session: bool = False
    stop_signal: signal.Signals = attrs.field(default=signal.SIGTERM, converter=_signal)
    stop_timeout: float = attrs.field(default=5.0, validator=_positive)
    limits: Limits = attrs.field(factory=Limits, converter=_limits)
    rootfs: str | None = attrs.field(default=None, converter=_rootfs)
    no_new_privs: bool | None = None
    capabilities: frozenset[str] | None = attrs.field(default=None, converter=_capabilities)
    user: int | None = attrs.field(default=None, converter=_id)
    group: int | None = attrs.field(default=None, converter=_id)
    groups: tuple[int, ...] | None = attrs.field(default=None, converter=_groups)
    umask: int | None = attrs.field(default=None, converter=_umask)

    def __attrs_post_init__(self) -> None:
        """Check the arguments that depend on each other."""
        check_fields(self)
        taken = sorted(set(self.pass_fds) & set(range(3, 3 + len(self.listen_fds))))
        if taken:
            raise SpecError(
                f"'pass_fds' targets {taken} clash with 'listen_fds', which take descriptors "
                f"3 to {2 + len(self.listen_fds)}; move them above"
            )

    @property
    def hardened(self) -> bool:
        """True when the spec asks for read-only mounts or a rootfs, which it must not undo."""
        return _hardened(self)

    @property
    def maps_root_unprivileged(self) -> bool:
        """True when root makes the ``user`` namespace with the default, unprivileged map."""
        return _maps_root_unprivileged(self)

    @property
    def effective_no_new_privs(self) -> bool:
        """Whether ``PR_SET_NO_NEW_PRIVS`` is set: as asked, else when :attr:`hardened`."""
        return _effective_no_new_privs(self)

    @property
    def dropped_capabilities(self) -> frozenset[str]:
        """Capabilities removed by the hardening default: ``CAP_SYS_ADMIN`` unless ``capabilities`` is given."""
        return _dropped_capabilities(self)
