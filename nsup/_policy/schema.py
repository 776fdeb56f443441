"""The policy schema: which keys each table holds, and how each is checked.

Every table of the policy file has a ``*_FIELDS`` mapping here from key name to
validator (see :mod:`nsup._policy_validate`), in the order the reference in
``docs/policy.md`` lists them.  Defaults are not repeated here: a key that is
absent takes the default of the model class in :mod:`nsup._policy_model`.
Nested tables (``backoff``, ``stop``, ``limits``, ``ready``, ``health`` and
each entry of ``mounts``) are validators too, which check their own keys and
build their model object; the document-level rules (``[defaults]``,
dependencies, instance names) are in :mod:`nsup._policy_build`.
"""

from __future__ import annotations

import math
import resource
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .._mount import MOUNT_TYPES, Mount
from .bounds import MAX_INSTANCES
from .model import (
    CONDITIONS,
    RLIMITS,
    Backoff,
    HealthProbe,
    Limits,
    OutputFile,
    Probe,
    Socket,
    Stop,
)
from .validate import (
    Invalid,
    Problem,
    Validator,
    absolute_path,
    boolean,
    capabilities,
    check_table,
    command,
    dependencies,
    duration,
    env_table,
    file_mode,
    host_port,
    id_map,
    id_or_name,
    id_or_name_list,
    integer,
    integer_list,
    listen_address,
    namespaces,
    number,
    one_of,
    path_list,
    regex,
    show,
    signal_,
    size,
    socket_name,
    string,
)

__all__ = [
    "BACKOFF_FIELDS",
    "HEALTH_FIELDS",
    "LIMITS_FIELDS",
    "MOUNT_FIELDS",
    "OUTPUT_FIELDS",
    "READY_FIELDS",
    "SERVICE_FIELDS",
    "SOCKET_FIELDS",
    "STOP_FIELDS",
    "SUPERVISOR_FIELDS",
    "TOP_LEVEL_KEYS",
    "make_limits",
]

TOP_LEVEL_KEYS = ("supervisor", "defaults", "services")

# Linux's sun_path holds 108 bytes, one of which is the terminating NUL.
_SOCKET_PATH_MAX = 107
# HOST_NAME_MAX.
_HOSTNAME_MAX = 64
# (uid_t)-1 means "unchanged" to the kernel, so the largest id is one less.
_ID_MAX = 2**32 - 2
# Cores for the cpu limit: more than any machine has, and the quota stays an int.
_CPU_MAX = 65536.0
# rlim_t is unsigned 64-bit, and all ones means "unlimited".
_RLIM_MAX = 2**64 - 2

Check = Callable[[str, dict[str, Any], dict[str, Any]], list[Problem]]


def _no_check(_key: str, _raw: dict[str, Any], _typed: dict[str, Any]) -> list[Problem]:
    return []


@attrs.frozen
class _TableValidator:
    """Check a nested table's keys, run *check* across them, then build the model."""

    fields: Mapping[str, Validator] = attrs.field(hash=False)
    make: Callable[[dict[str, Any]], Any]
    check: Check = _no_check
    required: tuple[str, ...] = ()
    forbidden: Mapping[str, str] | None = attrs.field(default=None, hash=False)

    def __call__(self, key: str, value: object) -> Any:
        typed, problems = check_table(
            key, value, self.fields, required=self.required, forbidden=self.forbidden
        )
        assert isinstance(value, dict)  # noqa: S101 - check_table raised Invalid otherwise
        problems += self.check(key, value, typed)
        if problems:
            raise Invalid(problems)
        return self.make(typed)


@attrs.frozen
class _ListOfTablesValidator:
    item: Validator

    def __call__(self, key: str, value: object) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise Invalid.at(key, f"{key!r} must be a list of tables (got {show(value)})")
        result = []
        problems: list[Problem] = []
        for i, item in enumerate(value):
            try:
                result.append(self.item(f"{key}[{i}]", item))
            except Invalid as exc:
                problems += exc.problems
        if problems:
            raise Invalid(problems)
        return tuple(result)


@attrs.frozen
class _RlimitValidator:
    """An rlimit value, or ``"unlimited"``; *scale* converts seconds to the kernel's unit."""

    inner: Validator
    scale: float | None = None

    def __call__(self, key: str, value: object) -> int:
        if value == "unlimited":
            return resource.RLIM_INFINITY
        result = self.inner(key, value)
        if self.scale is not None:
            result = math.ceil(result * self.scale)
        if result > _RLIM_MAX:
            raise Invalid.at(key, f"{key!r} is too large for an rlimit (got {show(value)})")
        return int(result)


SUPERVISOR_FIELDS: Mapping[str, Validator] = {
    "strategy": one_of("one_for_one", "one_for_all", "rest_for_one"),
    "max_restarts": integer(minimum=0),
    "within": duration(),
    "on_give_up": one_of("exit", "fail-service"),
    "control": string(max_length=_SOCKET_PATH_MAX),
    "health": host_port(),
    "timestamps": boolean(),
    "expand_env": boolean(),
}


def _check_backoff(key: str, _raw: dict[str, Any], typed: dict[str, Any]) -> list[Problem]:
    defaults = Backoff()
    initial = typed.get("initial", defaults.initial)
    maximum = typed.get("max", defaults.max)
    if initial > maximum:
        where = f"{key}.max" if "max" in typed else f"{key}.initial"
        return [(where, f"{where!r} makes 'initial' ({initial:g}s) more than 'max' ({maximum:g}s)")]
    return []


BACKOFF_FIELDS: Mapping[str, Validator] = {
    "initial": duration(positive=False),
    "max": duration(),
    "factor": number(minimum=1.0),
    "jitter": number(minimum=0.0, maximum=1.0),
    "reset_after": duration(),
}

STOP_FIELDS: Mapping[str, Validator] = {
    "signal": signal_(),
    "timeout": duration(positive=False),
}

LIMITS_FIELDS: Mapping[str, Validator] = {
    "memory": size(),
    "pids": integer(minimum=1),
    "cpu": number(minimum=0.0, maximum=_CPU_MAX, exclusive_minimum=True),
    **{
        name: _RlimitValidator(
            size(positive=False)
            if name in {"as", "core", "data", "fsize", "memlock", "msgqueue", "rss", "stack"}
            else duration(positive=False)
            if name in {"cputime", "rttime"}
            else integer(0, 40)
            if name == "nice"
            else integer(0, 99)
            if name == "rtprio"
            else integer(minimum=0),
            scale={"cputime": 1.0, "rttime": 1e6}.get(name),
        )
        for name in sorted(RLIMITS)
    },
}


def make_limits(typed: dict[str, Any]) -> Limits:
    """Build :class:`Limits` from checked ``limits`` keys (rlimits by name)."""
    rlimits = {name: typed.pop(name) for name in list(typed) if name in RLIMITS}
    return Limits(**typed, rlimits=rlimits)


PROBE_KINDS = ("notify", "tcp", "exec", "log")
HEALTH_KINDS = ("tcp", "exec", "log")


def _check_probe_kind(kinds: tuple[str, ...]) -> Check:
    def check(key: str, raw: dict[str, Any], typed: dict[str, Any]) -> list[Problem]:
        present = [kind for kind in kinds if kind in raw]
        if len(present) == 1:
            if typed.get("notify") is False:
                return [(f"{key}.notify", f"'{key}.notify' must be true (got false)")]
            return []
        expected = ", ".join(map(repr, kinds[:-1])) + f" or {kinds[-1]!r}"
        got = " and ".join(map(repr, present)) if present else "none"
        return [(key, f"{key!r} must have exactly one of {expected} (got {got})")]

    return check


def _make_probe(cls: type[Any]) -> Callable[[dict[str, Any]], Any]:
    kinds = PROBE_KINDS if cls is Probe else HEALTH_KINDS

    def make(typed: dict[str, Any]) -> Any:
        (kind,) = (k for k in kinds if k in typed)
        return cls(kind=kind, **typed)

    return make


READY_FIELDS: Mapping[str, Validator] = {
    "notify": boolean(),
    "tcp": host_port(),
    "exec": command(),
    "log": regex(),
    "timeout": duration(),
}

HEALTH_FIELDS: Mapping[str, Validator] = {
    "tcp": host_port(),
    "exec": command(),
    "log": regex(),
    "interval": duration(),
    "timeout": duration(),
    "retries": integer(minimum=1),
}


def _check_mount(key: str, raw: dict[str, Any], typed: dict[str, Any]) -> list[Problem]:
    kind = typed.get("type")
    if kind is None:
        return []
    problems = []
    if kind == "bind" and "source" not in raw:
        problems.append((key, f"{key!r} is a bind mount and needs a 'source'"))
    target = raw.get("target")
    if isinstance(target, str) and ".." in target.split("/"):
        where = f"{key}.target"
        problems.append(
            (
                where,
                f"{where!r} must not have a '..' component, which could lead outside (got {target!r})",
            )
        )
    for name, only in (("source", "bind"), ("size", "tmpfs"), ("mode", "tmpfs")):
        if name in raw and kind != only:
            where = f"{key}.{name}"
            problems.append((where, f"{where!r} is only for {only} mounts (this is {kind})"))
    return problems


MOUNT_FIELDS: Mapping[str, Validator] = {
    "type": one_of(*MOUNT_TYPES),
    "target": absolute_path(),
    "source": absolute_path(),
    "readonly": boolean(),
    "size": size(),
    "mode": file_mode(),
}

OUTPUT_WORDS = ("inherit", "null", "journal", "syslog")

OUTPUT_FIELDS: Mapping[str, Validator] = {
    "file": absolute_path(),
    "max_size": size(),
    "backups": integer(0, 1000),
}


@attrs.frozen
class _OutputValidator:
    """``stdout``/``stderr``: a word, a path, or ``{ file = ..., max_size = ..., backups = ... }``."""

    table: Validator = _TableValidator(OUTPUT_FIELDS, lambda t: OutputFile(**t), required=("file",))

    def __call__(self, key: str, value: object) -> str | OutputFile:
        if isinstance(value, dict):
            return self.table(key, value)  # type: ignore[no-any-return]  # the table's make returns an OutputFile
        if isinstance(value, str) and value in OUTPUT_WORDS:
            return value
        if not isinstance(value, str) or not value.startswith("/"):
            words = ", ".join(map(repr, OUTPUT_WORDS))
            raise Invalid.at(
                key,
                f"{key!r} must be {words}, an absolute file path or "
                f"{{ file = PATH, max_size = SIZE, backups = N }} (got {show(value)})",
            )
        return OutputFile(file=absolute_path()(key, value))


def _check_socket(key: str, raw: dict[str, Any], _typed: dict[str, Any]) -> list[Problem]:
    listen = raw.get("listen")
    if "mode" in raw and isinstance(listen, str) and not listen.startswith("/"):
        where = f"{key}.mode"
        return [(where, f"{where!r} is only for a Unix socket path (this listens on {listen!r})")]
    return []


SOCKET_FIELDS: Mapping[str, Validator] = {
    "listen": listen_address(),
    "name": socket_name(),
    "mode": file_mode(),
    "backlog": integer(1, 65535),
}

SERVICE_FIELDS: Mapping[str, Validator] = {
    "command": command(),
    "type": one_of("service", "oneshot"),
    "depends_on": dependencies(*CONDITIONS),
    "restart": one_of("always", "on-failure", "never"),
    "success_codes": integer_list(0, 255),
    "backoff": _TableValidator(BACKOFF_FIELDS, lambda t: Backoff(**t), _check_backoff),
    "namespaces": namespaces(),
    "namespaces_from": string(),
    "init": boolean(),
    "hostname": string(max_length=_HOSTNAME_MAX),
    "env": env_table(),
    "env_file": path_list(),
    "env_inherit": boolean(),
    "sockets": _ListOfTablesValidator(
        _TableValidator(SOCKET_FIELDS, lambda t: Socket(**t), _check_socket, ("listen",))
    ),
    "cwd": absolute_path(),
    "stop": _TableValidator(STOP_FIELDS, lambda t: Stop(**t)),
    "limits": _TableValidator(LIMITS_FIELDS, make_limits),
    "ready": _TableValidator(READY_FIELDS, _make_probe(Probe), _check_probe_kind(PROBE_KINDS)),
    "health": _TableValidator(
        HEALTH_FIELDS,
        _make_probe(HealthProbe),
        _check_probe_kind(HEALTH_KINDS),
        forbidden={
            "notify": "notify is only a readiness probe; use 'tcp', 'exec' or 'log' for health"
        },
    ),
    "instances": integer(minimum=1, maximum=MAX_INSTANCES),
    "stdout": _OutputValidator(),
    "stderr": _OutputValidator(),
    "mounts": _ListOfTablesValidator(
        _TableValidator(MOUNT_FIELDS, lambda t: Mount(**t), _check_mount, ("type", "target"))
    ),
    "rootfs": absolute_path(),
    "uid_map": id_map(),
    "gid_map": id_map(),
    "user": id_or_name(_ID_MAX),
    "group": id_or_name(_ID_MAX),
    "groups": id_or_name_list(_ID_MAX),
    "umask": file_mode(0o777),
    "capabilities": capabilities(),
    "no_new_privs": boolean(),
}
