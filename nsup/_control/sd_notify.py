"""nsup's own readiness to its parent: systemd's notify protocol, sender side.

When ``nsup run`` is started with ``NOTIFY_SOCKET`` in its environment (by
systemd for ``Type=notify``, or by any orchestrator that speaks the
protocol), :class:`ParentNotifier` sends datagrams to it:

- ``READY=1`` once every service is ready (as ``start_all`` returns), with
  a ``STATUS=`` summary; ``STATUS=`` again whenever the summary changes;
- ``RELOADING=1`` (with ``MONOTONIC_USEC``) when a reload begins, and
  ``READY=1`` when it ends, applied or refused;
- ``STOPPING=1`` when nsup begins to stop;
- ``WATCHDOG=1`` every half of ``WATCHDOG_USEC`` when that is set (and
  ``WATCHDOG_PID``, if set, is nsup's pid), from nsup's event loop: a loop
  that stops answering stops the pings.

:meth:`ParentNotifier.from_environ` removes ``NOTIFY_SOCKET``,
``WATCHDOG_USEC`` and ``WATCHDOG_PID`` from nsup's environment, so no
service inherits them (a service with ``ready = { notify = true }`` gets
its own socket).  Sends never block: the socket is non-blocking and a
datagram the parent cannot take now is dropped.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Callable, MutableMapping

    from .._engine.supervisor import Supervisor

__all__ = ["STATUS_PERIOD", "ParentNotifier", "summary"]

STATUS_PERIOD = 1.0
"""Seconds between looks at the services for a changed ``STATUS=``."""

_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def summary(sup: Supervisor) -> str:
    """Return a one-line summary of *sup*'s services, as ``STATUS=`` carries it."""
    statuses = sup.status()
    counts = Counter("ready" if s.ready else s.state for s in statuses.values())
    parts = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    noun = "service" if len(statuses) == 1 else "services"
    return f"{len(statuses)} {noun}: {parts}" if parts else f"0 {noun}"


class ParentNotifier:
    """Sends notify datagrams to *address*; every method does nothing when it is None.

    Args:
        address: ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace).
        watchdog_usec: ``WATCHDOG_USEC`` when the watchdog is meant for nsup.
        log: called with a line for nsup's stderr when a send fails.

    """

    def __init__(
        self,
        address: str | None,
        watchdog_usec: int | None = None,
        log: Callable[[str], None] = lambda _line: None,
    ) -> None:
        """Open the sending socket (nothing is sent yet)."""
        self.address: str | bytes | None = address
        if address is not None and address.startswith("@"):
            self.address = b"\0" + address[1:].encode()
        self.watchdog_period = None if not watchdog_usec else watchdog_usec / 2e6
        self._log = log
        self._sock: socket.socket | None = None
        self._ready = False
        self._stopping = False
        self._status = ""
        self._failed = False
        if self.address is not None:
            self._sock = socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            )

    @classmethod
    def from_environ(
        cls,
        environ: MutableMapping[str, str] | None = None,
        log: Callable[[str], None] = lambda _line: None,
    ) -> ParentNotifier:
        """Take the notify variables out of *environ* (``os.environ``) and return a notifier.

        ``NOTIFY_SOCKET`` must be an absolute path or ``@name``; anything else
        (``vsock:...``, a relative path) is reported and ignored.
        """
        env = os.environ if environ is None else environ
        address, usec, pid = (env.pop(name, None) for name in _VARIABLES)
        if address is not None and not address.startswith(("/", "@")):
            log(f"NOTIFY_SOCKET={address!r} is not a path or @name; not notifying the parent")
            address = None
        watchdog = None
        if usec and (pid is None or pid == str(os.getpid())):
            try:
                watchdog = int(usec)
            except ValueError:
                log(f"WATCHDOG_USEC={usec!r} is not a number of microseconds; no watchdog pings")
        return cls(address, watchdog, log)

    @property
    def enabled(self) -> bool:
        """True when there is a parent to notify."""
        return self._sock is not None

    def send(self, *fields: str) -> None:
        """Send one datagram of ``KEY=value`` lines; drop it when the parent cannot take it."""
        if self._sock is None or self.address is None:
            return
        try:
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except BlockingIOError:
            pass  # the parent's queue is full: never wait for it
        except OSError as exc:
            if not self._failed:  # say it once, not on every ping
                self._failed = True
                self._log(f"cannot notify the parent at NOTIFY_SOCKET: {exc.strerror or exc}")
        else:
            self._failed = False

    def ready(self, status: str) -> None:
        """Send ``READY=1`` with *status*, once startup is over."""
        if not self._stopping:
            self._ready = True
            self._status = status
            self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        """Send ``RELOADING=1``: a reload begins."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the policy")

    def reloaded(self) -> None:
        """Send ``READY=1`` again after a reload (only if startup had ended)."""
        if self._ready and not self._stopping:
            self.send("READY=1")

    def stopping(self, status: str = "stopping every service") -> None:
        """Send ``STOPPING=1``, once."""
        if not self._stopping:
            self._stopping = True
            self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        """Send ``STATUS=`` when *status* differs from the last one sent."""
        if status != self._status:
            self._status = status
            self.send(f"STATUS={status}")

    async def serve(self, sup: Supervisor, stopping: Callable[[], bool]) -> None:
        """Start *sup*'s services, say ``READY=1``, then keep the watchdog and status going.

        Runs until cancelled.  Without a parent it only starts the services.
        """
        async with trio.open_nursery() as nursery:
            if self.watchdog_period is not None and self.enabled:
                nursery.start_soon(self._watchdog, self.watchdog_period)
            await sup._start_all()  # noqa: SLF001 - nsup run starts its own supervisor
            if not self.enabled:
                return
            if not stopping() and sup.gave_up is None and not sup.finished:
                self.ready(summary(sup))
            while True:
                await trio.sleep(STATUS_PERIOD)
                self.status(("stopping; " if self._stopping else "") + summary(sup))

    async def _watchdog(self, period: float) -> None:
        while True:
            self.send("WATCHDOG=1")
            await trio.sleep(period)

    def close(self) -> None:
        """Close the sending socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
