"""The description of one mount made in a child's mount namespace."""

from __future__ import annotations

from typing import Literal

import attrs

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
    target: str = attrs.field()
    source: str | None = None
    readonly: bool = False
    size: int | None = None
    mode: int | None = None

    @target.validator
    def _check_target(self, _attribute: object, value: str) -> None:
        if not value.startswith("/"):
            raise ValueError(f"mount target must be an absolute path (got {value!r})")

    def __attrs_post_init__(self) -> None:
        """Check the fields that depend on each other."""
        if self.type == "bind" and not self.source:
            raise ValueError(f"a bind mount on {self.target!r} needs a 'source'")
        if self.type != "bind" and self.source is not None:
            raise ValueError(f"a {self.type} mount on {self.target!r} takes no 'source'")
        if self.size is not None and self.size <= 0:
            raise ValueError(f"tmpfs size on {self.target!r} must be positive (got {self.size})")
