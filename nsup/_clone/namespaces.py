"""Namespace names as users write them, and the clone3 flag for each."""

from __future__ import annotations

__all__ = ["CLONE_FLAGS", "DEFAULT_NAMESPACES", "NAMESPACES", "check_namespaces"]

# Values from <linux/sched.h>; the same on every architecture.
CLONE_FLAGS: dict[str, int] = {
    "mount": 0x00020000,  # CLONE_NEWNS
    "cgroup": 0x02000000,  # CLONE_NEWCGROUP
    "uts": 0x04000000,  # CLONE_NEWUTS
    "ipc": 0x08000000,  # CLONE_NEWIPC
    "user": 0x10000000,  # CLONE_NEWUSER
    "pid": 0x20000000,  # CLONE_NEWPID
    "net": 0x40000000,  # CLONE_NEWNET
}

NAMESPACES: frozenset[str] = frozenset(CLONE_FLAGS)
DEFAULT_NAMESPACES: frozenset[str] = frozenset({"pid", "mount", "uts", "ipc"})


def check_namespaces(names: object, what: str = "namespaces") -> frozenset[str]:
    """Return *names* as a frozenset, or raise ValueError naming what is wrong.

    *names* is any iterable of strings (a comma string is not accepted: split
    it first).  *what* names the argument in the message.
    """
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise TypeError(f"{what!r} must be a list of namespace names (got {names!r})")
    result = frozenset(names)
    unknown = sorted(str(n) for n in result - NAMESPACES)
    if unknown:
        raise ValueError(
            f"{what!r} has unknown namespace {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(sorted(NAMESPACES))}"
        )
    return result
