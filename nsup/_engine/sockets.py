"""Socket activation: listening sockets that nsup binds and holds for a service.

Why nsup binds them
-------------------
A service that binds its own port refuses connections from the moment it
exits until its next run has bound again, and a service in its own ``net``
namespace cannot be reached from the host at all.  systemd's answer, which
s6 and inetd share, is for the supervisor to bind: the socket lives in the
supervisor's namespaces and for as long as the supervisor wants, and each run
of the service inherits it as a descriptor.  While the service restarts, the
kernel keeps completing TCP handshakes into the socket's accept queue (up to
``backlog``), so clients wait instead of being refused; the next run accepts
them.

The convention is ``sd_listen_fds(3)``: descriptors 3, 4, ... in order,
``LISTEN_FDS`` (how many), ``LISTEN_FDNAMES`` (names joined by ``:``) and
``LISTEN_PID`` (the command's own pid, so a child that inherits the
environment by accident ignores them).  The process layer passes them
(``ProcessSpec(listen_fds=...)``); this module binds them.

Two facts shape the code:

* a descriptor passed to a child shares its *open file description* with
  ours, and ``O_NONBLOCK`` lives there: nsup never makes these sockets
  non-blocking and never accepts on them, or the service would see
  ``EAGAIN`` from a blocking ``accept()``;
* binding happens once, at the service's first start, on the trio thread: an
  IP literal or a path never waits on anything (the policy refuses host
  names, so no DNS), and the few syscalls cannot block.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from typing import TYPE_CHECKING

from .._errors import SpawnError
from .._policy.validate import key_join, parse_listen

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._policy.model import Socket

__all__ = ["ServiceSockets", "bind_socket"]

_HINTS = {
    errno.EADDRINUSE: "another process (or another service) already listens there; stop it or "
    "choose another address",
    errno.EACCES: "ports below 1024 and some paths need root (or CAP_NET_BIND_SERVICE)",
    errno.EADDRNOTAVAIL: "no interface of this host has that address",
}


def _where(spec: Socket, key: str) -> str:
    return f"cannot listen on {spec.listen!r} ({key})"


def _prepare_path(path: str, spec: Socket, key: str) -> None:
    """Make the parent directories of a Unix socket path, and remove a stale socket there."""
    os.makedirs(os.path.dirname(path) or "/", mode=0o755, exist_ok=True)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SpawnError(
            errno.EEXIST,
            f"{_where(spec, key)}: {path} exists and is not a socket; remove it or choose "
            "another path",
            "sockets",
        )
    os.unlink(path)  # a socket file left by an earlier run: nothing listens on a file alone


def bind_socket(spec: Socket, key: str) -> socket.socket:
    """Bind and listen on *spec*; return the blocking, close-on-exec socket.

    Args:
        spec: the policy's socket.
        key: its dotted key (``services.web.sockets[0]``), for messages.

    Raises:
        nsup.SpawnError: the address cannot be used; the message names the key
            and what to change.

    """
    family, address = parse_listen(spec.listen)
    sock = socket.socket(family, socket.SOCK_STREAM)
    path = address if isinstance(address, str) and address.startswith("/") else None
    try:
        if path is not None:
            _prepare_path(path, spec, key)
        elif family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        if path is not None and spec.mode is not None:
            os.chmod(path, spec.mode)
        sock.listen(spec.backlog)
    except SpawnError:
        sock.close()
        raise
    except OSError as exc:
        sock.close()
        hint = _HINTS.get(exc.errno or 0, "")
        raise SpawnError(
            exc.errno or 0,
            f"{_where(spec, key)}: {exc.strerror}" + (f"; {hint}" if hint else ""),
            "sockets",
        ) from None
    return sock


class ServiceSockets:
    """The listening sockets of one service, bound once and shared by its instances and runs.

    Args:
        service: the service's name (the default name in ``LISTEN_FDNAMES``).
        specs: its ``sockets`` entries.

    """

    def __init__(self, service: str, specs: Sequence[Socket]) -> None:
        """Prepare the sockets; nothing is bound until :meth:`open`."""
        self.service = service
        self.specs = tuple(specs)
        self._socks: list[socket.socket] = []
        self._paths: list[tuple[str, int, int]] = []  # (path, st_dev, st_ino) of files we made

    def __repr__(self) -> str:
        """Show the service and its addresses."""
        state = "open" if self._socks else "closed"
        return f"<ServiceSockets {self.service} {[s.listen for s in self.specs]} {state}>"

    @property
    def is_open(self) -> bool:
        """True once bound, until closed."""
        return bool(self._socks)

    def open(self) -> None:
        """Bind every socket, if not already bound; all or none.

        Raises:
            nsup.SpawnError: one could not be bound (the others are closed again).

        """
        if self._socks or not self.specs:
            return
        try:
            for i, spec in enumerate(self.specs):
                sock = bind_socket(spec, f"{key_join('services', self.service, 'sockets')}[{i}]")
                self._socks.append(sock)
                family, address = parse_listen(spec.listen)
                if family == socket.AF_UNIX and isinstance(address, str) and address[0] == "/":
                    st = os.stat(address)
                    self._paths.append((address, st.st_dev, st.st_ino))
        except BaseException:
            self.close()
            raise

    def listen_fds(self) -> list[tuple[str, int]]:
        """Return ``(name, fd)`` for each socket, for ``ProcessSpec(listen_fds=...)``."""
        return [
            (spec.name or self.service, sock.fileno())
            for spec, sock in zip(self.specs, self._socks, strict=True)
        ]

    def close(self) -> None:
        """Close every socket and remove the socket files nsup made (if still the same files)."""
        for sock in self._socks:
            sock.close()
        self._socks = []
        for path, dev, ino in self._paths:
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if (st.st_dev, st.st_ino) == (dev, ino):
                    os.unlink(path)
        self._paths = []
