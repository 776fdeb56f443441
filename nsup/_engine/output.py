r"""Child output: pipes split into line records, and views that never block nsup.

Why it looks the way it does
----------------------------
nsup's own stdout and stderr belong to whoever started it: a terminal, a
pipe into ``less`` or ``head``, a log collector that stalls.  A blocking
``write`` there would stop the trio thread, and with it every restart,
probe and control request (``nsup run chatty.toml | sleep 8`` did exactly
that).  So nothing on the trio thread writes to them directly:

- :func:`pump_lines` reads a service's pipe and hands each line, as a
  :class:`Line` record (service, stream, time, raw bytes), to a *sink*.  A
  line is cut at :data:`MAX_LINE` bytes (the rest follows as further lines)
  and a partial last line is flushed at EOF.  Line hooks (the ``log``
  probes) see every complete line, decoded.
- :class:`FdWriter` owns one descriptor, opened anew non-blocking (its own
  open file description where the kernel allows, so the terminal or pipe
  nsup shares with its parent stays blocking for the others).  Each source
  (a service, or nsup itself) has a bounded queue, :data:`QUEUE_BYTES`; all
  together are bounded by :data:`TOTAL_BYTES`.  One writer task drains the
  queues round robin whenever the descriptor is writable.  A line that does
  not fit is dropped and counted: ``dropped[source]`` feeds ``/metrics``,
  and once the source's lines fit again ``on_drop(source, n)`` is called (nsup
  run prints ``nsup: dropped N lines of NAME``).  ``EPIPE`` or any other
  write error turns the writer off: output is lost, nsup goes on.
- :class:`PrefixView` formats a line as ``NAME | line`` (coloured on a
  terminal), with control characters other than tab escaped as ``\xNN``,
  so a service can neither forge a line with ``\r`` nor drive the terminal
  with escape sequences.  The raw bytes stay in the :class:`Line` for file
  sinks and for the Python API's ``output`` callback.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json as _json
import os
import re
import select
import stat
import time
import zlib
from typing import TYPE_CHECKING, Literal

import attrs
import trio

from .logsocket import rfc3339

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "MAX_LINE",
    "QUEUE_BYTES",
    "TOTAL_BYTES",
    "FdWriter",
    "Line",
    "PrefixView",
    "escape",
    "output_sink",
    "pump_lines",
]

MAX_LINE = 64 * 1024  # bytes in one line; longer ones are cut
QUEUE_BYTES = 256 * 1024  # bytes one source may have waiting for a slow reader
TOTAL_BYTES = 4 * 2**20  # bytes all sources of one descriptor may have waiting
_CHUNK = 64 * 1024  # bytes per write

_COLOURS = (31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


Stream = Literal["stdout", "stderr"]


@attrs.frozen
class Line:
    """One line a service wrote.

    Attributes:
        service: the instance name.
        stream: ``"stdout"`` or ``"stderr"`` (``"stdout"`` while both share a pipe).
        time: ``time.time()`` when nsup read it.
        data: the raw bytes, without the newline.

    """

    service: str
    stream: Stream
    time: float
    data: bytes

    @property
    def text(self) -> str:
        """The line decoded as UTF-8, with replacement characters for the rest."""
        return self.data.decode("utf-8", "replace")


def escape(text: str) -> str:
    r"""Return *text* with control characters other than tab written as ``\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


async def pump_lines(
    stream: trio.abc.ReceiveStream,
    name: str,
    sink: Callable[[Line], None],
    hooks: list[Callable[[str], None]],
    *,
    which: Stream = "stdout",
) -> None:
    """Read *stream* to EOF, calling ``sink(Line(...))`` and each hook per line.

    *which* is the child's stream the pipe carries; every record says so.
    """
    pending = bytearray()

    def emit(raw: bytes) -> None:
        line = Line(name, which, time.time(), raw)
        sink(line)
        if hooks:
            text = line.text
            for hook in list(hooks):
                hook(text)

    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        pending += chunk
        start = 0
        while True:
            newline = pending.find(b"\n", start, start + MAX_LINE)
            if newline >= 0:
                emit(bytes(pending[start:newline]))
                start = newline + 1
            elif len(pending) - start >= MAX_LINE:
                emit(bytes(pending[start : start + MAX_LINE]))
                start += MAX_LINE
            else:
                break
        del pending[:start]
    if pending:
        emit(bytes(pending))


def _nonblocking_copy(fd: int) -> tuple[int, bool]:
    """Return ``(copy, pollable)``: *fd* opened anew, non-blocking where that means anything.

    A regular file never blocks (and cannot be polled): a plain duplicate.
    A pipe, FIFO or terminal is reopened through ``/proc/self/fd`` to get an
    open file description of our own; a socket (which cannot be reopened)
    gets a duplicate made non-blocking, shared with whoever else holds it.

    Raises:
        OSError: *fd* is not open.

    """
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode) or stat.S_ISBLK(mode):
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3), False
    try:
        flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
        return os.open(f"/proc/self/fd/{fd}", flags), True
    except OSError:
        copy = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
        os.set_blocking(copy, False)
        return copy, True


@attrs.define
class _Queue:
    lines: collections.deque[bytes] = attrs.Factory(collections.deque)
    size: int = 0
    dropped: int = 0  # since the last notice


class FdWriter:
    """Writes lines to one descriptor from a task of its own, bounded, never blocking.

    Args:
        fd: the descriptor to write to (it is duplicated; the caller keeps *fd*).
        queue_bytes: what one source may have waiting.
        total_bytes: what all sources together may have waiting.

    Attributes:
        dropped: lines dropped so far, per source.
        closed: True once output is off (the reader went away, or a write failed).
        on_drop: called as ``on_drop(source, n)`` when a source's lines fit
            again after *n* were dropped.

    """

    def __init__(
        self, fd: int, *, queue_bytes: int = QUEUE_BYTES, total_bytes: int = TOTAL_BYTES
    ) -> None:
        """Open the non-blocking copy of *fd*; a closed *fd* makes a writer that is off."""
        self.queue_bytes = queue_bytes
        self.total_bytes = total_bytes
        self.dropped: dict[str, int] = {}
        self.on_drop: Callable[[str, int], None] | None = None
        self._queues: dict[str, _Queue] = {}
        self._ready: collections.deque[str] = collections.deque()
        self._size = 0
        self._wake = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        try:
            self.isatty = os.isatty(fd)
            self._fd, self._pollable = _nonblocking_copy(fd)
        except OSError:
            self.isatty = False
            self._fd, self._pollable = -1, False
        self.closed = self._fd < 0

    def put(self, source: str, data: bytes) -> bool:
        """Queue *data* (one or more whole lines) for *source*; False if it was dropped."""
        if self.closed:
            return False
        queue = self._queues.get(source)
        if queue is None:
            queue = self._queues[source] = _Queue()
        if queue.size + len(data) > self.queue_bytes or self._size + len(data) > self.total_bytes:
            queue.dropped += 1
            self.dropped[source] = self.dropped.get(source, 0) + 1
            return False
        if queue.dropped:
            dropped, queue.dropped = queue.dropped, 0
            if self.on_drop is not None:
                self.on_drop(source, dropped)
                if self.closed:
                    return False
                # The notice may have put (and written) lines of this source itself,
                # replacing or removing its queue: go on with the current one.
                queue = self._queues.setdefault(source, _Queue())
        if not queue.lines:
            self._ready.append(source)
        queue.lines.append(data)
        queue.size += len(data)
        self._size += len(data)
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._wake.set()
        return True

    def _take(self) -> tuple[str, bytes]:
        """Take up to :data:`_CHUNK` bytes of the next source's lines, round robin."""
        source = self._ready.popleft()
        queue = self._queues[source]
        parts = [queue.lines.popleft()]
        taken = len(parts[0])
        while queue.lines and taken + len(queue.lines[0]) <= _CHUNK:
            parts.append(queue.lines.popleft())
            taken += len(parts[-1])
        queue.size -= taken
        self._size -= taken
        if queue.lines:
            self._ready.append(source)
        else:
            del self._queues[source]
            if queue.dropped:  # keep the count for the next notice
                self._queues[source] = _Queue(dropped=queue.dropped)
        return source, b"".join(parts)

    def unreported(self) -> dict[str, int]:
        """Return (and forget) the drops no ``on_drop`` call has announced yet, per source."""
        found = {s: q.dropped for s, q in self._queues.items() if q.dropped}
        for source in found:
            self._queues[source].dropped = 0
        return found

    def _off(self) -> None:
        self.closed = True
        # Keep only the drop counts, for unreported().
        self._queues = {s: _Queue(dropped=q.dropped) for s, q in self._queues.items() if q.dropped}
        self._ready.clear()
        self._size = 0
        self._idle.set()

    async def run(self) -> None:
        """Drain the queues until cancelled; a write error turns output off, quietly."""
        try:
            while not self.closed:
                if not self._ready:
                    self._idle.set()
                    await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                _source, data = self._take()
                while data and not self.closed:
                    try:
                        written = os.write(self._fd, data)
                    except BlockingIOError:
                        try:
                            await trio.lowlevel.wait_writable(self._fd)
                        except trio.ClosedResourceError:
                            return  # close() while a reader stalls: output is over
                        continue
                    except OSError:
                        self._off()  # EPIPE, EBADF, EIO...: nobody is reading any more
                        break
                    data = data[written:]
                await trio.lowlevel.checkpoint()
        finally:
            self._idle.set()

    def write_now(self, timeout: float = 0.0) -> None:
        """Write what is queued from outside trio, waiting at most *timeout* seconds; drop the rest."""
        deadline = time.monotonic() + timeout
        while self._ready and not self.closed:
            _source, data = self._take()
            while data:
                try:
                    data = data[os.write(self._fd, data) :]
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0 or not select.select([], [self._fd], [], left)[1]:
                        self._off()  # the reader is stalled: give up on output
                        return
                except OSError:
                    self._off()
                    return

    async def flush(self) -> None:
        """Wait until every queued line is written (or output is off); bound it with a timeout."""
        await self._idle.wait()

    def close(self) -> None:
        """Close the descriptor copy; nothing more is written."""
        if self._fd >= 0:
            if self._pollable:
                with contextlib.suppress(RuntimeError):  # outside trio: nobody waits on it
                    trio.lowlevel.notify_closing(self._fd)
            os.close(self._fd)
            self._fd = -1
        self._off()


class PrefixView:
    """The ``NAME | line`` view of service output, written through an :class:`FdWriter`.

    Stderr lines read ``NAME ! line``.  With *timestamps*, each line starts
    with the time nsup read it, RFC 3339 with milliseconds.  With *json*,
    each line is instead one JSON object: ``{"time": ..., "service": ...,
    "stream": "stdout" | "stderr", "line": ...}`` (``--log-format json``).

    Args:
        writer: where the lines go.
        colour: colour the names (default: when the descriptor is a terminal).
        timestamps: start each line with its time.
        json: write JSON objects instead.

    """

    def __init__(
        self,
        writer: FdWriter,
        *,
        colour: bool | None = None,
        timestamps: bool = False,
        json: bool = False,
    ) -> None:
        """Prepare the view."""
        self.writer = writer
        self.colour = writer.isatty if colour is None and not json else bool(colour)
        self.timestamps = timestamps
        self.json = json

    def __call__(self, line: Line) -> None:
        """Queue *line*, escaped and prefixed."""
        name = line.service
        if self.json:
            record = {"time": rfc3339(line.time), "service": name, "stream": line.stream}
            text = _json.dumps({**record, "line": line.text}) + "\n"
            self.writer.put(name, text.encode("utf-8", "replace"))
            return
        mark = "!" if line.stream == "stderr" else "|"
        when = f"{rfc3339(line.time)} " if self.timestamps else ""
        if self.colour:
            code = _COLOURS[zlib.crc32(name.split(".", maxsplit=1)[0].encode()) % len(_COLOURS)]
            text = f"{when}\x1b[{code}m{name}\x1b[0m {mark} {escape(line.text)}\n"
        else:
            text = f"{when}{name} {mark} {escape(line.text)}\n"
        self.writer.put(name, text.encode("utf-8", "replace"))


def output_sink(
    output: Callable[[str, str], None] | PrefixView | None,
    nursery: trio.Nursery,
    timestamps: bool = False,
) -> tuple[Callable[[Line], None], FdWriter | None]:
    """Return the line sink for a supervisor's *output* argument, and its writer if nsup owns one.

    ``None`` means ``NAME | line`` on nsup's stdout, through a writer task
    started in *nursery*, with drop notices in the same stream; a
    :class:`PrefixView` is used as it is (its writer's task is the caller's);
    any other callable gets ``output(name, text)`` for each line.
    """
    if isinstance(output, PrefixView):
        return output, output.writer
    if output is not None:
        callback = output
        return (lambda line: callback(line.service, line.text)), None
    writer = FdWriter(1)

    def notice(source: str, n: int) -> None:
        writer.put("nsup", f"nsup: dropped {n} lines of {source}\n".encode())

    writer.on_drop = notice
    nursery.start_soon(writer.run)
    return PrefixView(writer, timestamps=timestamps), writer
