"""Service log files that nsup writes itself: rotated by size, reopened on request.

A service whose ``stdout`` (or ``stderr``) is a file writes into a pipe that
nsup reads, like ``inherit``; nsup appends each whole line to the file.  So
nsup always knows where one line ends, and can rotate between two lines:
when the next line would take the file past ``max_size``, the file is renamed
to ``PATH.1`` (``PATH.1`` to ``PATH.2``, and so on up to ``backups``; the
oldest is removed) and a new ``PATH`` is opened.  No line is cut, lost or
written twice, and the files read in order ``PATH.N`` ... ``PATH.1``, ``PATH``.

:meth:`LogFiles.reopen_all` (``nsup reopen-logs``, SIGUSR1) closes every file
and opens its path again, for an external ``logrotate`` that has moved the
file away: lines go to the moved file until the reopen, then to the new one.

Writes go straight to the file from the trio thread: a regular file's write
does not wait for a reader, only for the disk.  A write that fails (a full
disk, a removed directory) drops that line, counts it in ``dropped``, and the
file is opened again for the next line.

All the services (and instances) that name one path share one
:class:`LogFile`, so their lines interleave whole and one rotation serves
them all.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["LogFile", "LogFiles"]


class LogFile:
    """One log file: appended line by line, rotated past *max_size*, keeping *backups* old files.

    Args:
        path: the file.
        max_size: rotate before a line would take the file past this many
            bytes; ``None`` never rotates.
        backups: how many rotated files to keep (``PATH.1`` is the newest);
            0 removes the old file at rotation.

    Attributes:
        dropped: lines that could not be written.
        error: the last write or open error, as text, or ``None``.

    """

    def __init__(self, path: str, max_size: int | None = None, backups: int = 5) -> None:
        """Prepare the file; it is opened at the first write (or by :meth:`open`)."""
        self.path = path
        self.max_size = max_size
        self.backups = backups
        self.dropped = 0
        self.error: str | None = None
        self._fd = -1
        self._size = 0

    def open(self) -> None:
        """Open (or create) the file for appending.

        Raises:
            OSError: it cannot be opened (a missing directory, no permission).

        """
        if self._fd < 0:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._size = os.fstat(fd).st_size
            self._fd = fd

    def write(self, data: bytes) -> bool:
        """Append *data* (one or more whole lines), rotating first if it would not fit.

        Returns:
            True if written; False if it was dropped (see ``error``).

        """
        try:
            self.open()
            if self.max_size is not None and self._size and self._size + len(data) > self.max_size:
                self.rotate()
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                self._size += written
                view = view[written:]
        except OSError as exc:
            self.dropped += 1
            self.error = f"{self.path}: {exc.strerror or exc}"
            self.close()  # open again for the next line
            return False
        return True

    def rotate(self) -> None:
        """Shift ``PATH.N-1`` ... ``PATH`` to ``PATH.N`` ... ``PATH.1`` and open a new ``PATH``.

        Raises:
            OSError: a rename or the new file failed.

        """
        self.close()
        if self.backups == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        else:
            for n in range(self.backups - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(f"{self.path}.{n}", f"{self.path}.{n + 1}")
            os.rename(self.path, f"{self.path}.1")
        self.open()

    def reopen(self) -> None:
        """Close the file and open its path again (after an external rotation)."""
        self.close()
        try:
            self.open()
        except OSError as exc:
            self.error = f"{self.path}: {exc.strerror or exc}"

    def close(self) -> None:
        """Close the file; the next write opens it again."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LogFiles:
    """Every log file of one supervisor, one :class:`LogFile` per path."""

    def __init__(self) -> None:
        """Start with no files."""
        self.files: dict[str, LogFile] = {}

    def get(self, path: str, max_size: int | None = None, backups: int = 5) -> LogFile:
        """Return the file for *path*, made on first use; later settings for a path update it."""
        log = self.files.get(path)
        if log is None:
            log = self.files[path] = LogFile(path, max_size, backups)
        else:
            log.max_size, log.backups = max_size, backups
        return log

    def reopen_all(self) -> list[str]:
        """Reopen every file; return the errors (``"PATH: reason"``) of those that failed."""
        errors = []
        for log in self.files.values():
            log.reopen()
            if log._fd < 0 and log.error:  # noqa: SLF001 - the registry and its files are one unit
                errors.append(log.error)
        return errors

    def close_all(self) -> None:
        """Close every file."""
        for log in self.files.values():
            log.close()
