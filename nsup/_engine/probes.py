"""Readiness and health probes: tcp, exec and log (notify lives in ``notify.py``).

``tcp`` connects inside the service's network namespace.  A socket belongs to
the network namespace it was created in, so a short-lived thread enters the
service's namespace (``setns`` on the child's pidfd), creates the socket and
exits; trio then connects it as usual.  The thread is a fresh one, never one
of trio's cached workers, because a rootless supervisor cannot ``setns`` back
into the host's namespace, and a cached thread would stay in the wrong one.

The kernel gives no event for "a port is now listening", so readiness by tcp
retries the connect at a short interval until its timeout; that is the one
place nsup polls, and only while a service is starting.

``log`` probes match a regular expression against every line a service
writes, on the trio thread.  Python's ``re`` backtracks, so a pattern such
as ``^(a+)+$`` can take seconds on a 29-character line, and a service
chooses the lines.  :class:`LogMatcher` bounds each match by CPU time: a
``SIGVTALRM`` timer (``ITIMER_VIRTUAL``, which counts only the CPU nsup
uses) interrupts the match after :data:`MATCH_BUDGET` seconds, because the
regex engine checks for signals as it runs.  A pattern that runs over once
is switched off for the rest of that run of the service (the probe fails, so
the service is restarted or never becomes ready, with an ``unhealthy`` event
saying why), so one stall costs at most one budget per start.  A thread
cannot be interrupted this way: where trio runs off the main thread (an
application's choice, through the Python API) the match is unbounded.
"""

from __future__ import annotations

import signal
import socket
import threading
from typing import TYPE_CHECKING

import trio

from .._clone import syscalls as _sys
from .._clone.namespaces import CLONE_FLAGS

if TYPE_CHECKING:
    import re

    from .._process import Process

__all__ = ["MATCH_BUDGET", "LogMatcher", "exec_probe", "tcp_once", "tcp_until"]

RETRY_INTERVAL = 0.05
MATCH_BUDGET = 0.05  # seconds of CPU one line's match may take


class _OverBudget(Exception):  # noqa: N818 - internal signal, never seen by users
    pass


_armed = False


def _on_alarm(_signo: int, _frame: object) -> None:
    if _armed:
        raise _OverBudget


def _bounded_search(pattern: re.Pattern[str], line: str, budget: float) -> bool | None:
    """Return whether *pattern* is found in *line*; None if that took over *budget* of CPU."""
    global _armed  # noqa: PLW0603 - the one flag the signal handler reads
    if threading.current_thread() is not threading.main_thread():
        return pattern.search(line) is not None
    if signal.getsignal(signal.SIGVTALRM) is not _on_alarm:
        signal.signal(signal.SIGVTALRM, _on_alarm)
    try:
        try:
            _armed = True
            signal.setitimer(signal.ITIMER_VIRTUAL, budget)
            found = pattern.search(line) is not None
        finally:
            _armed = False
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)
    except _OverBudget:
        return None
    return found


class LogMatcher:
    """One run's ``log`` probe pattern, switched off once a match runs over its budget.

    Attributes:
        over_budget: True once a line took more than :data:`MATCH_BUDGET`
            seconds of CPU; the matcher then never matches again.

    """

    def __init__(self, pattern: re.Pattern[str], budget: float = MATCH_BUDGET) -> None:
        """Match *pattern*, each line within *budget* seconds of CPU."""
        self.pattern = pattern
        self.budget = budget
        self.over_budget = False

    def search(self, line: str) -> bool:
        """Return True if the pattern is found in *line* (always False once over budget)."""
        if self.over_budget:
            return False
        found = _bounded_search(self.pattern, line, self.budget)
        if found is None:
            self.over_budget = True
            return False
        return found

    def explain(self) -> str:
        """Say why the probe stopped matching."""
        return (
            f"log pattern {self.pattern.pattern!r} took more than {self.budget * 1000:g} ms "
            "of CPU on one line and was switched off for this run; "
            "simplify it (avoid nested repeats such as '(a+)+')"
        )


def _socket_in_netns(pidfd: int, family: int) -> socket.socket:
    result: list[socket.socket | BaseException] = []

    def enter_and_create() -> None:
        try:
            _sys.setns(pidfd, CLONE_FLAGS["net"])
            result.append(socket.socket(family, socket.SOCK_STREAM))
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
            result.append(exc)

    thread = threading.Thread(target=enter_and_create, name="nsup-netns", daemon=True)
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


async def tcp_once(host: str, port: int, proc: Process | None, limit: float) -> bool:
    """Try one connect to *host*:*port*, in *proc*'s network namespace when it has one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with trio.move_on_after(limit):
        if proc is not None and "net" in proc.spec.namespaces:
            raw = await trio.to_thread.run_sync(_socket_in_netns, proc.pidfd, family)
            sock = trio.socket.from_stdlib_socket(raw)
        else:
            sock = trio.socket.socket(family, socket.SOCK_STREAM)
        with sock:
            try:
                await sock.connect((host, port))
            except OSError:
                return False
            return True
    return False


async def tcp_until(host: str, port: int, proc: Process | None, limit: float) -> bool:
    """Retry :func:`tcp_once` until it succeeds or *limit* passes."""
    with trio.move_on_after(limit):
        while not await tcp_once(host, port, proc, limit):  # noqa: ASYNC110 - no event exists for "port listening"
            await trio.sleep(RETRY_INTERVAL)
        return True
    return False


async def exec_probe(
    argv: tuple[str, ...], proc: Process, limit: float, limiter: trio.CapacityLimiter
) -> bool:
    """Run *argv* inside *proc*'s namespaces; True if it exits 0 within *limit*.

    It runs under *limiter* (a turn waited for counts toward *limit*): the
    probes of thousands of services never hold more descriptors at once than
    the limiter's size allows.
    """
    from .._process import spawn  # noqa: PLC0415 - _process imports nothing of ours back
    from .._spec import ProcessSpec  # noqa: PLC0415

    spec = ProcessSpec(
        argv=argv,
        namespaces=(),
        stdout="null",
        stderr="null",
        stdin="null",
        init=False,  # a probe needs no reaper; it only has to exit
        stop_timeout=1.0,
    )
    with trio.move_on_after(limit):
        async with limiter, spawn(spec, join=proc) as probe:
            return (await probe.wait()).success
    return False
