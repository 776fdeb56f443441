"""Rlimits: the names users write, and what nsup changed in its own process.

:data:`RLIMITS` maps each name to its ``resource.RLIMIT_*`` number;
:func:`set_own` and :func:`found` keep the limits nsup was started with,
which its children get back.

Standard library only: ``nsup exec``'s direct way reads the table without
loading attrs; ``nsup._limits`` re-exports it.
"""

from __future__ import annotations

import resource
from types import MappingProxyType

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["RLIMITS", "found", "set_own"]

#: Policy name of each rlimit -> the ``resource.RLIMIT_*`` constant.  ``cpu`` in
#: ``limits`` means cgroup cores, so the CPU-time rlimit is called ``cputime``.
RLIMITS: Mapping[str, int] = MappingProxyType(
    {
        "as": resource.RLIMIT_AS,
        "core": resource.RLIMIT_CORE,
        "cputime": resource.RLIMIT_CPU,
        "data": resource.RLIMIT_DATA,
        "fsize": resource.RLIMIT_FSIZE,
        "memlock": resource.RLIMIT_MEMLOCK,
        "msgqueue": resource.RLIMIT_MSGQUEUE,
        "nice": resource.RLIMIT_NICE,
        "nofile": resource.RLIMIT_NOFILE,
        "nproc": resource.RLIMIT_NPROC,
        "rss": resource.RLIMIT_RSS,
        "rtprio": resource.RLIMIT_RTPRIO,
        "rttime": resource.RLIMIT_RTTIME,
        "sigpending": resource.RLIMIT_SIGPENDING,
        "stack": resource.RLIMIT_STACK,
    }
)

# (name, number, soft, hard) as nsup found it, by number, for each rlimit it changed in itself.
_FOUND: dict[int, tuple[str, int, int, int]] = {}
_NAMES = {number: name for name, number in RLIMITS.items()}


def set_own(number: int, soft: int, hard: int) -> None:
    """Set rlimit *number* of nsup's own process, remembering what it was the first time.

    ``nsup run`` raises its ``RLIMIT_NOFILE`` to hold every service's pipes;
    its children must not inherit that (a soft limit over 1024 breaks
    ``select()``): each gets back the limit nsup was started with, unless its
    spec sets that rlimit (:func:`found`).

    Raises:
        OSError: as ``setrlimit`` does (EPERM: a hard limit raised without
            CAP_SYS_RESOURCE; EINVAL).
    """
    before = resource.getrlimit(number)
    resource.setrlimit(number, (soft, hard))
    _FOUND.setdefault(number, (_NAMES[number], number, *before))


def found() -> list[tuple[str, int, int, int]]:
    """``(name, number, soft, hard)`` as nsup found it, for each rlimit it changed in itself."""
    return list(_FOUND.values())
