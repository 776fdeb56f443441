"""Child output: split a pipe into lines and hand each to a sink as ``NAME | line``.

A line is cut at ``MAX_LINE`` bytes (the rest follows as further lines), a
partial last line is flushed at EOF, and bytes that are not UTF-8 are shown
with replacement characters.  Line hooks (the ``log`` readiness probe, health
probes) see every complete line.
"""

from __future__ import annotations

import sys
import zlib
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from collections.abc import Callable

    import trio

__all__ = ["MAX_LINE", "prefix_writer", "pump_lines"]

MAX_LINE = 64 * 1024

_COLOURS = (31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96)


async def pump_lines(
    stream: trio.abc.ReceiveStream,
    name: str,
    sink: Callable[[str, str], None],
    hooks: list[Callable[[str], None]],
) -> None:
    """Read *stream* to EOF, calling ``sink(name, line)`` and each hook per line."""
    pending = b""

    def emit(raw: bytes) -> None:
        line = raw.decode("utf-8", "replace")
        sink(name, line)
        for hook in list(hooks):
            hook(line)

    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        pending += chunk
        while True:
            newline = pending.find(b"\n", 0, MAX_LINE)
            if newline >= 0:
                emit(pending[:newline])
                pending = pending[newline + 1 :]
            elif len(pending) >= MAX_LINE:
                emit(pending[:MAX_LINE])
                pending = pending[MAX_LINE:]
            else:
                break
    if pending:
        emit(pending)


def prefix_writer(
    out: BinaryIO | None = None, *, colour: bool | None = None
) -> Callable[[str, str], None]:
    """Return a sink writing ``NAME | line`` to *out* (default stdout), coloured on a terminal."""
    target = out if out is not None else sys.stdout.buffer
    if colour is None:
        colour = target.isatty()

    def write(name: str, line: str) -> None:
        if colour:
            code = _COLOURS[zlib.crc32(name.split(".", maxsplit=1)[0].encode()) % len(_COLOURS)]
            text = f"\x1b[{code}m{name}\x1b[0m | {line}\n"
        else:
            text = f"{name} | {line}\n"
        target.write(text.encode("utf-8", "replace"))
        target.flush()

    return write
