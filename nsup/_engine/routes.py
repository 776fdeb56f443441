"""Where each line of a service's output goes, by its ``stdout``/``stderr`` setting.

Every target other than ``null`` is read by nsup from a pipe of its own per
stream (so a stderr line stays a stderr line), split into :class:`Line`
records by :func:`~nsup._engine.output.pump_lines`, and handed to the sink
that :meth:`OutputRoutes.sink` returns:

* ``inherit``: the supervisor's view (``NAME | line``, ``NAME ! line`` for
  stderr, or JSON with ``--log-format json``);
* a file (``"/path"`` or ``{ file = ..., max_size = ..., backups = ... }``):
  the line appended by nsup, rotated by size, reopened by
  :meth:`OutputRoutes.reopen` (see :mod:`.logfile`);
* ``journal`` and ``syslog``: one datagram per line (see :mod:`.logsocket`).

One :class:`OutputRoutes` per supervisor holds the open files and sockets,
shared by every service that names them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from .._policy.model import OutputFile
from .logfile import LogFiles
from .logsocket import DatagramLog

if TYPE_CHECKING:
    from collections.abc import Callable

    from .output import Line

__all__ = ["OutputRoutes", "through_nsup"]


def through_nsup(target: str | OutputFile) -> bool:
    """Return True when output to *target* goes through a pipe that nsup reads."""
    return target != "null"


class OutputRoutes:
    """The sinks of one supervisor's service output: its view, log files, journal and syslog.

    Args:
        view: the sink for ``inherit`` output.

    """

    def __init__(self, view: Callable[[Line], None]) -> None:
        """Start with no file or socket open."""
        self.view = view
        self.files = LogFiles()
        self._sockets: dict[str, DatagramLog] = {}

    def sink(self, target: str | OutputFile, pid: int | None) -> Callable[[Line], None]:
        """Return the sink for lines of a service with this *target*, whose process is *pid*."""
        if isinstance(target, OutputFile):
            log = self.files.get(target.file, target.max_size, target.backups)

            def to_file(line: Line) -> None:
                log.write(line.data + b"\n")

            return to_file
        if target in {"journal", "syslog"}:
            kind: Literal["journal", "syslog"] = "journal" if target == "journal" else "syslog"
            sock = self._sockets.get(kind)
            if sock is None:
                sock = self._sockets[kind] = DatagramLog(kind)

            def to_socket(line: Line) -> None:
                sock.send(line.data, line.stream, line.service, pid, line.time)

            return to_socket
        return self.view

    def reopen(self) -> list[str]:
        """Reopen every log file; return an error line for each that failed."""
        return self.files.reopen_all()

    def dropped(self) -> dict[str, int]:
        """Return the lines each file and socket could not take, by path."""
        counts = {path: log.dropped for path, log in self.files.files.items() if log.dropped}
        counts.update({s.path: s.dropped for s in self._sockets.values() if s.dropped})
        return counts

    def close(self) -> None:
        """Close every file and socket."""
        self.files.close_all()
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
