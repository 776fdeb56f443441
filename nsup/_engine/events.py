"""Supervisor events, and the broadcast that hands each subscriber its own copy."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Literal

import attrs
import trio

from .._words import event_line

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .._exitstatus import ExitStatus

__all__ = ["Event", "EventBus", "EventKind"]

EventKind = Literal[
    "starting",  # a spawn is under way
    "started",  # the command runs (pid known)
    "ready",  # its readiness probe passed (or it has none)
    "exited",  # it ended; status says how
    "restarting",  # it will be started again after delay seconds
    "stopping",  # nsup is stopping it (request, reload or shutdown)
    "killed",  # it ignored its stop signal until the stop timeout: SIGKILL sent
    "unhealthy",  # a health or readiness probe failed
    "gave_up",  # restart intensity exceeded: nsup stops everything
    "spawn_failed",  # the command could not be started; message says why
    "status",  # the service sent STATUS= over its notify socket
]


@attrs.frozen
class Event:
    """One thing that happened to a service.

    Attributes:
        kind: what happened (see :data:`EventKind`).
        service: the instance name (``"web"``, ``"web.0"``); ``""`` for the
            supervisor itself.
        time: ``time.time()`` when it happened.
        pid: the child's pid, where there is one.
        status: how it ended, for ``exited``.
        delay: seconds until the restart, for ``restarting``.
        message: a human-readable detail.
    """

    kind: EventKind
    service: str
    time: float = attrs.field(factory=time.time)
    pid: int | None = None
    status: ExitStatus | None = None
    delay: float | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (used by ``--log-format json`` and the control socket)."""
        out: dict[str, Any] = {"event": self.kind, "service": self.service, "time": self.time}
        if self.pid is not None:
            out["pid"] = self.pid
        if self.status is not None:
            out["code"] = self.status.code
            out["signal"] = self.status.signal
            out["exit_status"] = str(self.status)
        if self.delay is not None:
            out["delay"] = self.delay
        if self.message:
            out["message"] = self.message
        return out

    def __str__(self) -> str:
        """One line for a log: ``web: exited with code 3``, ``web: killed by SIGTERM``."""
        return event_line(self.to_dict())


class EventBus:
    """Fan events out to every subscriber; a slow subscriber never blocks nsup.

    Each subscriber gets an unbounded memory channel, so publishing is
    synchronous and cannot fail; a subscriber that stops reading only grows
    its own queue, and closing its iterator frees it.
    """

    def __init__(self) -> None:
        """Start with no subscribers."""
        self._subscribers: list[trio.MemorySendChannel[Event]] = []
        self.closed = False

    def publish(self, event: Event) -> None:
        """Hand *event* to every current subscriber."""
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(channel)

    def close(self) -> None:
        """End every subscription (their iterators finish)."""
        self.closed = True
        for channel in self._subscribers:
            channel.close()
        self._subscribers.clear()

    async def subscribe(self) -> AsyncIterator[Event]:
        """Yield events from now on, until the bus closes."""
        send, receive = trio.open_memory_channel[Event](math.inf)
        if self.closed:
            send.close()
        else:
            self._subscribers.append(send)
        async with receive:
            async for event in receive:
                yield event
