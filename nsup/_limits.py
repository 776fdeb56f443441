"""Resource limits: the value type that the process layer and the policy share.

``ProcessSpec`` (the process layer) and ``Service`` (the policy) both carry a
:class:`Limits`; it lives here, below both, so that neither imports the other.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, TypeVar

import attrs

from ._clone.rlimits import RLIMITS

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["RLIMITS", "Limits", "frozen_map"]

_V = TypeVar("_V")


def frozen_map(value: Mapping[str, _V]) -> Mapping[str, _V]:
    """Return a read-only copy of *value*, so a frozen model stays frozen."""
    return MappingProxyType(dict(value))


@attrs.frozen
class Limits:
    """Resource limits; ``None`` means "not limited by nsup".

    Attributes:
        memory: cgroup memory limit, in bytes.
        pids: cgroup limit on the number of tasks.
        cpu: cgroup CPU quota, in cores (``0.5`` is half a core).
        rlimits: rlimit name (a key of :data:`RLIMITS`) -> value, applied as
            both the soft and the hard limit; ``resource.RLIM_INFINITY`` for
            ``"unlimited"``.  Sizes are bytes, ``cputime`` seconds, ``rttime``
            microseconds, the rest counts.

    """

    memory: int | None = None
    pids: int | None = None
    cpu: float | None = None
    rlimits: Mapping[str, int] = attrs.field(factory=dict, converter=frozen_map, hash=False)

    def rlimit_items(self) -> tuple[tuple[int, int], ...]:
        """Return ``(resource.RLIMIT_*, value)`` pairs, ready for ``setrlimit``."""
        return tuple((RLIMITS[name], value) for name, value in self.rlimits.items())
