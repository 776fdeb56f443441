"""systemd's notify protocol: a datagram socket named by ``$NOTIFY_SOCKET``.

Each instance with ``ready = { notify = true }`` gets its own socket, in a
private run-time directory, so a datagram's sender needs no credentials
check to be attributed.  Messages are newline-separated ``KEY=VALUE``
assignments, as ``sd_notify(3)`` sends them; nsup acts on ``READY=1``,
``STATUS=...`` and ``STOPPING=1`` and ignores the rest.  Existing clients
(``systemd-notify``, ``sd_notify`` in C, the Python ``sdnotify`` package) work
unchanged, as long as the socket's directory is visible inside the child's
mount namespace (do not mount a tmpfs over it).
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["NotifySocket", "parse_notify"]

_MAX_DATAGRAM = 4096


def parse_notify(datagram: bytes) -> dict[str, str]:
    """Parse one notify datagram into its assignments; malformed lines are skipped."""
    fields: dict[str, str] = {}
    for line in datagram.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key] = value
    return fields


class NotifySocket:
    """A bound notify socket for one instance; ``path`` goes into ``NOTIFY_SOCKET``."""

    def __init__(self, directory: str, name: str) -> None:
        """Bind a datagram socket at ``directory/name.notify``."""
        self.path = os.path.join(directory, f"{name}.notify")
        if os.path.exists(self.path):
            os.unlink(self.path)
        self._sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        self._bound = False

    async def bind(self) -> None:
        """Bind the socket; children of any uid may send to it."""
        await self._sock.bind(self.path)
        os.chmod(self.path, 0o666)  # noqa: S103 - the directory is private; children may run as other uids
        self._bound = True

    async def serve(self, on_message: Callable[[dict[str, str]], None]) -> None:
        """Call *on_message* for every datagram, until cancelled."""
        while True:
            data = await self._sock.recv(_MAX_DATAGRAM)
            on_message(parse_notify(data))

    def close(self) -> None:
        """Close and unlink the socket."""
        self._sock.close()
        if self._bound:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
