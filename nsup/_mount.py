"""The description of one mount made in a child's mount namespace."""

from __future__ import annotations

from typing import Literal

import attrs

from ._spec_rules import check_mount

__all__ = ["MOUNT_TYPES", "Mount"]

MOUNT_TYPES = ("bind", "tmpfs", "proc")


@attrs.frozen
class Mount:
    """One mount, applied in order inside the child's new mount namespace.

    Attributes:
        type: ``"bind"`` (``source`` onto ``target``), ``"tmpfs"`` or ``"proc"``.
        target: absolute path inside the child.
        source: the host path for a bind mount; unused otherwise.
        readonly: remount read-only (recursively for binds).
        size: tmpfs size in bytes (``None``: the kernel default, half of RAM).
        mode: tmpfs root mode (``None``: 0o755).

    """

    type: Literal["bind", "tmpfs", "proc"] = attrs.field(
        validator=attrs.validators.in_(MOUNT_TYPES)
    )
    target: str
    source: str | None = None
    readonly: bool = False
    size: int | None = None
    mode: int | None = None

    def __attrs_post_init__(self) -> None:
        """Check the fields that depend on each other."""
        check_mount(self.type, self.target, self.source, self.size)
