"""Per-service output for the Python API: ``sup.lines(name)``, a bounded subscription of lines.

Every line nsup reads from a service's pipe (see :func:`.output.pump_lines`)
is handed, before its route (the view, a log file, the journal), to
:meth:`LineTaps.publish`.  Each :class:`LineSubscription` has a queue of its
own, bounded by :data:`LINE_BACKLOG_BYTES`: each line counts its length
plus :data:`LINE_OVERHEAD` (so at most :data:`LINE_BACKLOG` lines wait).  The
bound holds one whole read of a pipe (64 KiB, even of empty lines).  A
reader takes one line per trio checkpoint while the pump hands over a whole
read at once, so a flood of more short lines than the bound holds (about
60,000 of a few bytes) outruns even a reader that does nothing else; it
loses the lines that do not fit.  Publishing is synchronous and never blocks or raises: a line that
does not fit is dropped and counted for that subscriber alone
(:attr:`LineSubscription.dropped`, and :attr:`OutputLine.dropped_before` on
the next line it does get), so a slow or stalled reader costs a bounded
amount of memory and slows nothing else: not the pump, not the ``output``
callback, not other services.

A subscription is registered when it is made and lives across restarts and
reloads of its service; it ends (the iteration finishes) when the service
is removed or the supervisor has finished and the service's pipes are read
to the end.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, final

import attrs
import trio

from .events import Feed

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .output import Line, Stream

__all__ = [
    "LINE_BACKLOG",
    "LINE_BACKLOG_BYTES",
    "LINE_OVERHEAD",
    "LineSubscription",
    "LineTaps",
    "OutputLine",
]

LINE_BACKLOG_BYTES = 4 * 2**20  # what one subscriber may have waiting, overhead included
LINE_OVERHEAD = 64  # bytes each waiting line counts beyond its length (the record itself)
LINE_BACKLOG = LINE_BACKLOG_BYTES // LINE_OVERHEAD  # so at most this many lines wait


@final
@attrs.frozen
class OutputLine:
    """One line a service wrote, as :meth:`nsup.Supervisor.lines` yields it.

    Attributes:
        service: the service's name (``"web"``).
        instance: the instance that wrote it (``"web"``, or ``"web.1"`` with ``instances``).
        stream: ``"stdout"`` or ``"stderr"``.
        time: ``time.time()`` when nsup read it.
        data: the raw bytes, without the newline; a line longer than 64 KiB
            comes as several.
        dropped_before: lines of this subscription dropped just before this
            one, because its reader fell behind (0 almost always).

    """

    service: str
    instance: str
    stream: Stream
    time: float
    data: bytes
    dropped_before: int = 0

    @property
    def text(self) -> str:
        """The line decoded as UTF-8; bytes that are not UTF-8 become U+FFFD."""
        return self.data.decode("utf-8", "replace")


class LineSubscription(Feed[OutputLine]):
    """One reader's bounded queue of a service's lines; made by ``sup.lines(name)``.

    Use it as an async iterator, and as an async context manager (or call
    :meth:`close`) to unsubscribe.
    """

    def __init__(self, taps: LineTaps, name: str) -> None:
        """Register with *taps* for *name* (or end at once if they are closed)."""
        self._taps = taps
        self.name = name
        self._send, self._receive = trio.open_memory_channel[OutputLine](LINE_BACKLOG)
        self._bytes = 0  # bytes queued
        self._pending = 0  # dropped since the last line queued
        self.dropped = 0
        if taps.closed:
            self._send.close()
        else:
            taps._subscribers.setdefault(name, []).append(self)  # noqa: SLF001 - the taps and their subscriptions are one unit

    def _deliver(self, line: OutputLine) -> None:
        """Queue *line*, or drop and count it if the queue is full; never blocks or raises."""
        if self._bytes + len(line.data) + LINE_OVERHEAD > LINE_BACKLOG_BYTES:
            self._drop()
            return
        if self._pending:
            line = attrs.evolve(line, dropped_before=self._pending)
        try:
            self._send.send_nowait(line)
        except trio.WouldBlock:
            self._drop()
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        self._pending = 0
        self._bytes += len(line.data) + LINE_OVERHEAD

    def _drop(self) -> None:
        self._pending += 1
        self.dropped += 1

    def _unregister(self) -> None:
        self._taps._forget(self)  # noqa: SLF001 - the taps and their subscriptions are one unit

    def receive_nowait(self) -> OutputLine:
        """Return the next line if one is waiting.

        Raises:
            trio.WouldBlock: none is waiting.
            trio.EndOfChannel: the service was removed or the supervisor finished.

        """
        return self._took(self._receive.receive_nowait())

    async def receive(self) -> OutputLine:
        """Return the next line.

        Raises:
            trio.EndOfChannel: the service was removed or the supervisor finished.

        """
        return self._took(await self._receive.receive())

    def _took(self, line: OutputLine) -> OutputLine:
        self._bytes -= len(line.data) + LINE_OVERHEAD
        return line


class LineTaps:
    """The line subscriptions of one supervisor, by the service or instance name they follow."""

    def __init__(self) -> None:
        """Start with no subscribers."""
        self._subscribers: dict[str, list[LineSubscription]] = {}
        self.closed = False

    @property
    def wanted(self) -> bool:
        """True while anyone follows any service's lines."""
        return bool(self._subscribers)

    def subscribe(self, name: str) -> LineSubscription:
        """Return a :class:`LineSubscription` to *name* (a service or an instance), registered now."""
        return LineSubscription(self, name)

    def publish(self, line: Line, service: str) -> None:
        """Hand *line*, written by an instance of *service*, to its subscribers."""
        names = (line.service,) if line.service == service else (line.service, service)
        out = None
        for name in names:
            for sub in self._subscribers.get(name, ()):
                if out is None:
                    out = OutputLine(service, line.service, line.stream, line.time, line.data)
                sub._deliver(out)  # noqa: SLF001

    def end(self, keep: Iterable[str] = ()) -> None:
        """End every subscription to a name not in *keep* (a removed service or instance)."""
        kept = set(keep)
        for name in [n for n in self._subscribers if n not in kept]:
            for sub in self._subscribers.pop(name):
                sub.end()

    def close(self) -> None:
        """End every subscription, and any made from now on."""
        self.closed = True
        self.end()

    def _forget(self, sub: LineSubscription) -> None:
        subs = self._subscribers.get(sub.name)
        if subs is not None:
            with contextlib.suppress(ValueError):
                subs.remove(sub)
            if not subs:
                del self._subscribers[sub.name]
