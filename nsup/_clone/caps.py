"""Capability names as users write them, and the bit number of each.

``CAP_NET_BIND_SERVICE``, ``cap_net_bind_service`` and ``net_bind_service``
all name bit 10.  The table is <linux/capability.h> up to Linux 6.x; the
kernel's own highest number is read from ``/proc/sys/kernel/cap_last_cap``
when capabilities are dropped, so a newer kernel's extra capabilities are
dropped too.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["CAPABILITIES", "cap_last_cap", "check_capabilities", "mask_of"]

CAPABILITIES: dict[str, int] = {
    name: number
    for number, name in enumerate(
        (
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_DAC_READ_SEARCH",
            "CAP_FOWNER",
            "CAP_FSETID",
            "CAP_KILL",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETPCAP",
            "CAP_LINUX_IMMUTABLE",
            "CAP_NET_BIND_SERVICE",
            "CAP_NET_BROADCAST",
            "CAP_NET_ADMIN",
            "CAP_NET_RAW",
            "CAP_IPC_LOCK",
            "CAP_IPC_OWNER",
            "CAP_SYS_MODULE",
            "CAP_SYS_RAWIO",
            "CAP_SYS_CHROOT",
            "CAP_SYS_PTRACE",
            "CAP_SYS_PACCT",
            "CAP_SYS_ADMIN",
            "CAP_SYS_BOOT",
            "CAP_SYS_NICE",
            "CAP_SYS_RESOURCE",
            "CAP_SYS_TIME",
            "CAP_SYS_TTY_CONFIG",
            "CAP_MKNOD",
            "CAP_LEASE",
            "CAP_AUDIT_WRITE",
            "CAP_AUDIT_CONTROL",
            "CAP_SETFCAP",
            "CAP_MAC_OVERRIDE",
            "CAP_MAC_ADMIN",
            "CAP_SYSLOG",
            "CAP_WAKE_ALARM",
            "CAP_BLOCK_SUSPEND",
            "CAP_AUDIT_READ",
            "CAP_PERFMON",
            "CAP_BPF",
            "CAP_CHECKPOINT_RESTORE",
        )
    )
}


def _normal(name: str) -> str:
    upper = name.strip().upper()
    return upper if upper.startswith("CAP_") else "CAP_" + upper


def check_capabilities(names: object, what: str = "capabilities") -> frozenset[str]:
    """Return *names* as canonical ``CAP_*`` names, or raise ValueError naming the unknown ones."""
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise TypeError(f"{what!r} must be a list of capability names (got {names!r})")
    result = set()
    unknown = []
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{what!r} items must be strings (got {name!r})")
        normal = _normal(name)
        if normal in CAPABILITIES:
            result.add(normal)
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(
            f"{what!r} has unknown capability {', '.join(map(repr, unknown))}; "
            "use names such as 'CAP_NET_BIND_SERVICE' or 'net_bind_service' (see capabilities(7))"
        )
    return frozenset(result)


def mask_of(names: Iterable[str]) -> int:
    """Return the 64-bit mask of the canonical *names*."""
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITIES[name]
    return mask


def cap_last_cap() -> int:
    """Return the kernel's highest capability number."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return max(CAPABILITIES.values())
