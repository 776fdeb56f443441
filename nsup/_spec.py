"""``ProcessSpec``: everything needed to start one child, checked up front.

A spec is frozen and validated when it is built, so a bad argument fails in
the caller's frame with a message that says what to change, before anything
is cloned.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable, Mapping
from typing import Literal

import attrs

from ._errors import SpecError
from ._mount import Mount
from ._namespaces import DEFAULT_NAMESPACES, check_namespaces

__all__ = ["IdMap", "ProcessSpec", "StdioMode"]

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


def _mounts(value: object) -> tuple[Mount, ...]:
    if not isinstance(value, Iterable) or isinstance(value, str):
        raise SpecError(f"'mounts' must be a list of nsup.Mount (got {value!r})")
    mounts = tuple(value)
    for mount in mounts:
        if not isinstance(mount, Mount):
            raise SpecError(f"'mounts' items must be nsup.Mount (got {mount!r})")
    return mounts


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
        init: with a ``pid`` namespace, run nsup's init as PID 1 and the
            command as its child (default).  Ignored without one.
        uid_map, gid_map: ``(inside, outside, count)`` rows for a ``user``
            namespace; default maps the caller's uid/gid to 0.
        stdin, stdout, stderr: ``"inherit"`` (default), ``"null"``, ``"pipe"``
            (then ``Process.stdin``/``stdout``/``stderr`` are trio streams), or
            a file descriptor to pass.
        pass_fds: more descriptors to pass, as a list (same numbers) or a
            ``{target: source}`` mapping.
        mounts: ``nsup.Mount`` entries applied in order; needs ``mount``.
        new_session: start the child in a new session (``setsid``), away from
            the terminal's signals.
        stop_signal, stop_timeout: how the child is stopped when its block
            ends or is cancelled: this signal, then SIGKILL after the timeout.

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
    mounts: tuple[Mount, ...] = attrs.field(default=(), converter=_mounts)
    new_session: bool = False
    stop_signal: signal.Signals = attrs.field(default=signal.SIGTERM, converter=_signal)
    stop_timeout: float = attrs.field(default=5.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        """Check the arguments that depend on each other."""
        needs = (
            ("hostname", self.hostname is not None, "uts"),
            ("uid_map", self.uid_map is not None, "user"),
            ("gid_map", self.gid_map is not None, "user"),
            ("mounts", bool(self.mounts), "mount"),
        )
        for name, given, namespace in needs:
            if given and namespace not in self.namespaces:
                raise SpecError(f"{name!r} needs the {namespace!r} namespace; add it to namespaces")
        if self.hostname is not None and not 0 < len(self.hostname.encode()) <= 64:
            raise SpecError(f"'hostname' must be 1 to 64 bytes (got {self.hostname!r})")

    @property
    def has_init(self) -> bool:
        """True when nsup's init will be PID 1 of the child's PID namespace."""
        return self.init and "pid" in self.namespaces
