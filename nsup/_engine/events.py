"""Supervisor events, and the broadcast that hands each subscriber its own copy."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, Generic, Literal, Self, TypeVar, final

import attrs
import trio

from .._words import event_line

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._exitstatus import ExitStatus

__all__ = ["BACKLOG", "Event", "EventBus", "EventKind", "Feed", "Subscription"]

BACKLOG = 1024  # events a subscriber may fall behind before it is dropped

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
    "failed",  # the service is left failed (permanent spawn error, its give-up, an internal error)
    "spawn_failed",  # the command could not be started; message says why
    "blocked",  # it waits for a dependency that failed or ended for good; message says which
    "status",  # the service sent STATUS= over its notify socket
    "lagged",  # the last event of a subscriber that fell too far behind: it was dropped
]


@final
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


T = TypeVar("T")


class Feed(Generic[T]):
    """A subscription as its reader sees it: a bounded queue to iterate, and to close.

    The base of :class:`Subscription` (events) and of
    :class:`~nsup._engine.lines.LineSubscription` (a service's output).
    """

    _send: trio.MemorySendChannel[T]
    _receive: trio.MemoryReceiveChannel[T]

    def _unregister(self) -> None:
        """Stop being published to."""
        raise NotImplementedError

    def end(self) -> None:
        """End it from the publishing side: the reader gets what is queued, then the end."""
        self._send.close()

    def close(self) -> None:
        """Unsubscribe; the iterator ends and the queue is freed."""
        self._unregister()
        self._send.close()
        self._receive.close()

    def statistics(self) -> trio.MemoryChannelStatistics:
        """The queue's statistics (``current_buffer_used`` is what waits now)."""
        return self._receive.statistics()

    async def receive(self) -> T:
        """Return the next item.

        Raises:
            trio.EndOfChannel: the subscription ended (see the class).

        """
        return await self._receive.receive()

    def __aiter__(self) -> Self:
        """Iterate over the items."""
        return self

    async def __anext__(self) -> T:
        """Return the next item, or stop at the end of the subscription."""
        try:
            return await self.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        """Return the subscription (already registered)."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Unsubscribe."""
        self.close()


class Subscription(Feed[Event]):
    """One subscriber's bounded queue of events; made by :meth:`EventBus.subscribe`.

    It is registered when it is made, so no event published after that is
    missed, however late iteration begins.  Use it as an async iterator, and
    as an async context manager (or call :meth:`close`) to unsubscribe.  If
    it falls :data:`BACKLOG` events behind, its queue is emptied and it ends
    with one ``lagged`` event, so a stalled subscriber costs a bounded amount
    of memory; a subscriber that sees ``lagged`` has missed events and should
    read the state afresh (``status``) before subscribing again.
    """

    def __init__(self, bus: EventBus, backlog: int) -> None:
        """Register with *bus* (or end at once if it is closed)."""
        self._bus = bus
        self._send, self._receive = trio.open_memory_channel[Event](backlog)
        self.lagged = False
        if bus.closed:
            self._send.close()
        else:
            bus._subscribers.append(self)  # noqa: SLF001 - the bus and its subscriptions are one unit

    def _deliver(self, event: Event) -> bool:
        """Queue *event*; return False once this subscription is over."""
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self._lag(event)
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def _lag(self, event: Event) -> None:
        while True:  # free the backlog now: the subscriber will not read it
            try:
                self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        self.lagged = True
        message = f"this subscriber fell {self._send.statistics().max_buffer_size} events behind and was dropped"
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            self._send.send_nowait(
                Event(kind="lagged", service="", time=event.time, message=message)
            )
        self._send.close()

    def _unregister(self) -> None:
        self._bus._forget(self)  # noqa: SLF001 - the bus and its subscriptions are one unit


class EventBus:
    """Fan events out to every subscriber; a slow subscriber never blocks nsup.

    Each subscriber gets a bounded queue (:class:`Subscription`), so
    publishing is synchronous and cannot fail; one that falls too far behind
    is dropped with a final ``lagged`` event.
    """

    def __init__(self, backlog: int = BACKLOG) -> None:
        """Start with no subscribers."""
        self._subscribers: list[Subscription] = []
        self._listeners: list[Callable[[Event], None]] = []
        self.backlog = backlog
        self.closed = False
        self.lagged = 0  # subscribers dropped for falling behind

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener(event)`` for every event, synchronously; it must not block."""
        self._listeners.append(listener)

    def publish(self, event: Event) -> None:
        """Hand *event* to every listener and every current subscriber."""
        for listener in self._listeners:
            listener(event)
        for sub in list(self._subscribers):
            if not sub._deliver(event):  # noqa: SLF001
                self._forget(sub)
                self.lagged += sub.lagged

    def _forget(self, sub: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(sub)

    def close(self) -> None:
        """End every subscription (their iterators finish)."""
        self.closed = True
        for sub in self._subscribers:
            sub.end()
        self._subscribers.clear()

    def subscribe(self) -> Subscription:
        """Return a :class:`Subscription`, registered now: every event from now on."""
        return Subscription(self, self.backlog)
