"""nsup's exception hierarchy.

Every error nsup raises on purpose is an :class:`NsupError`, and each subclass
also inherits the builtin it refines, so ``except ValueError`` keeps working for
code that does not know about nsup.  Messages are lower-case, quote values with
``!r`` and say what to change.
"""

from __future__ import annotations

from errno import ENOENT

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["NsupError", "PolicyError", "SpawnError", "SpecError"]


class NsupError(Exception):
    """The root of every error nsup raises on purpose."""


class SpawnError(NsupError, OSError):
    """A child could not be started; ``errno``, ``stage`` and the message say why.

    ``stage`` names the step that failed (``"clone3"``, ``"uid_map"``,
    ``"mount /proc"``, ``"exec"``, ...), so callers can tell a missing
    executable from a namespace the kernel refused.
    """

    def __init__(self, errno: int, message: str, stage: str) -> None:
        super().__init__(errno, message)
        self.stage = stage

    def __str__(self) -> str:
        return str(self.strerror)

    @property
    def exit_code(self) -> int:
        """The code a failed spawn reports, as tini and docker do.

        127 when the command was not found, 126 when it could not be executed,
        125 when a namespace, mount or limit could not be set up.
        """
        if self.stage == "exec":
            return 127 if self.errno == ENOENT else 126
        return 125


class PolicyError(NsupError, ValueError):
    """A policy (or an argument in the policy's shape) is invalid.

    ``errors`` holds every problem found, each a :class:`PolicyIssue`-like
    object with ``source``, ``key``, ``line`` and ``message``; ``str()`` of the
    exception lists them all, one per line.
    """

    def __init__(self, errors: Sequence[object]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


class SpecError(NsupError, ValueError):
    """A :class:`nsup.ProcessSpec` argument is invalid; the message says which and why."""
