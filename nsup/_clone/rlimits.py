"""The rlimits by the names users write, and the ``resource.RLIMIT_*`` number of each.

Standard library only: ``nsup exec``'s direct way reads the table without
loading attrs; ``nsup._limits`` re-exports it.
"""

from __future__ import annotations

import resource
from types import MappingProxyType

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["RLIMITS"]

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
