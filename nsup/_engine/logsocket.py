"""Service output to the systemd journal and to syslog, one datagram per line.

``stdout = "journal"`` sends each line to journald's native socket,
``/run/systemd/journal/socket``, in its native protocol (``KEY=value``
fields, one per line; a value holding a newline is sent as ``KEY``, a
newline, its length as 64-bit little-endian, the value and a newline):
``MESSAGE``, ``PRIORITY`` (6, info, for stdout; 3, err, for stderr),
``SYSLOG_IDENTIFIER`` (the service's name), and ``SYSLOG_PID`` (the
service's pid).  journald adds ``_PID`` itself from the kernel's
credentials: that is nsup's pid, the sender.

``stdout = "syslog"`` sends RFC 5424 messages to ``/dev/log``:
``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID - - MSG``, facility ``daemon``,
severity info for stdout and err for stderr, the time in RFC 3339 with
milliseconds, the app name the service's name (cut to 48 characters).

The socket is unconnected, non-blocking and close-on-exec; each line is a
``sendto``.  A receiver that is absent, restarting or too slow (its queue
full) costs that line, counted in ``dropped``: nsup never waits for it.

For tests, and for hosts that keep these sockets elsewhere, the paths are
read from the private environment variables ``NSUP_JOURNAL_SOCKET`` and
``NSUP_SYSLOG_SOCKET`` when a sender is made.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import struct
from typing import Literal

__all__ = [
    "JOURNAL_SOCKET",
    "SYSLOG_SOCKET",
    "DatagramLog",
    "journal_entry",
    "rfc3339",
    "syslog_message",
]

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_SOCKET = "/dev/log"

Stream = Literal["stdout", "stderr"]
_PRIORITY = {"stdout": 6, "stderr": 3}  # LOG_INFO, LOG_ERR
_DAEMON = 3  # LOG_DAEMON
_APP_NAME_MAX = 48


def rfc3339(when: float) -> str:
    """Return *when* (``time.time()``) as RFC 3339 UTC with milliseconds, ``2026-12-02T21:04:41.123Z``."""
    moment = dt.datetime.fromtimestamp(when, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _field(name: bytes, value: bytes) -> bytes:
    if b"\n" in value:
        return name + b"\n" + struct.pack("<Q", len(value)) + value + b"\n"
    return name + b"=" + value + b"\n"


def journal_entry(message: bytes, stream: Stream, identifier: str, pid: int | None) -> bytes:
    """Return one journal entry in journald's native protocol."""
    parts = [
        _field(b"MESSAGE", message),
        _field(b"PRIORITY", b"%d" % _PRIORITY[stream]),
        _field(b"SYSLOG_IDENTIFIER", identifier.encode()),
    ]
    if pid is not None:
        parts.append(_field(b"SYSLOG_PID", b"%d" % pid))
    return b"".join(parts)


def _app_name(name: str) -> str:
    printable = "".join(c if "!" <= c <= "~" else "_" for c in name)
    return printable[:_APP_NAME_MAX] or "-"


def syslog_message(  # noqa: PLR0913, PLR0917 - the fields of an RFC 5424 header
    message: bytes, stream: Stream, app: str, pid: int | None, when: float, hostname: str
) -> bytes:
    """Return one RFC 5424 message (facility daemon) for *message*."""
    pri = _DAEMON * 8 + _PRIORITY[stream]
    header = f"<{pri}>1 {rfc3339(when)} {hostname or '-'} {_app_name(app)} {pid or '-'} - - "
    return header.encode() + message


class DatagramLog:
    """Sends lines as datagrams to a Unix socket path, never waiting.

    Args:
        kind: ``"journal"`` or ``"syslog"``: which encoding, and which default path.
        path: the socket; default :data:`JOURNAL_SOCKET` or :data:`SYSLOG_SOCKET`
            (or the ``NSUP_JOURNAL_SOCKET``/``NSUP_SYSLOG_SOCKET`` variable).

    Attributes:
        dropped: lines the receiver did not take.
        error: why the last line was dropped, or ``None``.

    """

    def __init__(self, kind: Literal["journal", "syslog"], path: str | None = None) -> None:
        """Open the unconnected non-blocking socket."""
        self.kind = kind
        default = JOURNAL_SOCKET if kind == "journal" else SYSLOG_SOCKET
        variable = "NSUP_JOURNAL_SOCKET" if kind == "journal" else "NSUP_SYSLOG_SOCKET"
        self.path = path or os.environ.get(variable) or default
        self.hostname = socket.gethostname()
        self.dropped = 0
        self.error: str | None = None
        self._sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        )

    def send(self, message: bytes, stream: Stream, name: str, pid: int | None, when: float) -> bool:
        """Send one line; return False (and count it) if the receiver did not take it."""
        if self.kind == "journal":
            payload = journal_entry(message, stream, name, pid)
        else:
            payload = syslog_message(message, stream, name, pid, when, self.hostname)
        try:
            self._sock.sendto(payload, self.path)
        except OSError as exc:  # EAGAIN (full), ENOENT/ECONNREFUSED (absent), EMSGSIZE
            self.dropped += 1
            self.error = f"{self.path}: {exc.strerror or exc}"
            return False
        return True

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()
