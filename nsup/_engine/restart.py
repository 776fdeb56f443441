"""Restart semantics as data: a state x event -> action table, backoff and intensity.

As in s6-supervise, one instance's life is an explicit table: the runner
(``runner.py``) turns what happens into an :class:`Input`, looks up
``TRANSITIONS[state, input]`` and performs the :class:`Action` it names.
Everything here is pure (no I/O, no trio), so each transition is tested on
its own.

Whether an exit is restarted is the service's ``restart`` rule (the input
the runner feeds is ``EXIT_RESTART`` or ``EXIT_FINAL``); whether the restart
happens alone, with every service, or with those after it is the
supervisor's ``strategy`` and is decided in ``supervisor.py``, which also
keeps the restart intensity (:class:`Intensity`).
"""

from __future__ import annotations

import enum
import random
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Collection

    from .._exitstatus import ExitStatus
    from .._policy.model import Backoff

__all__ = [
    "MAX_EXPONENT",
    "TRANSITIONS",
    "Action",
    "BackoffCounter",
    "Input",
    "Intensity",
    "State",
    "succeeded",
    "transition",
    "wants_restart",
]


class State(enum.Enum):
    """Where one instance stands."""

    DOWN = "down"  # not running and not scheduled: before start, after stop
    STARTING = "starting"  # running, waiting for its readiness probe
    UP = "up"  # running and ready
    STOPPING = "stopping"  # stop signal sent; it stays down once reaped
    RESTARTING = "restarting"  # being stopped so that it starts again
    BACKOFF = "backoff"  # waiting out the delay before the next start
    ENDED = "ended"  # exited and its restart rule says leave it
    FAILED = "failed"  # given up on: a permanent spawn error, its own give-up, or a bug


class Input(enum.Enum):
    """What can happen to an instance."""

    START = "start"  # asked to run (start-up, `nsup start`, group restart)
    STOP = "stop"  # asked to stop (shutdown, `nsup stop`, group restart)
    RESTART = "restart"  # asked to restart (`nsup restart`, reload)
    READY = "ready"  # the readiness probe passed
    PROBE_FAILED = "probe_failed"  # readiness timed out, or health failed `retries` times
    EXIT_RESTART = "exit_restart"  # it exited and its restart rule wants it back
    EXIT_FINAL = "exit_final"  # it exited and its restart rule says leave it
    DELAY_DONE = "delay_done"  # the backoff delay ran out
    FAIL = "fail"  # a start failed in a way no retry can cure


class Action(enum.Enum):
    """What the runner does on a transition."""

    NONE = "none"
    SPAWN = "spawn"  # start the process
    ANNOUNCE_READY = "announce_ready"  # publish "ready", release dependents
    KILL = "kill"  # stop signal, then SIGKILL after the stop timeout
    ON_EXIT = "on_exit"  # ask the supervisor: restart alone, as a group, or give up
    RESCHEDULE = "reschedule"  # start again after a delay (manual or probe restart)
    CANCEL_DELAY = "cancel_delay"  # drop a pending restart
    FAIL = "fail"  # enter the terminal failed state, saying why


S, I, A = State, Input, Action  # noqa: E741 - short names keep the table readable

TRANSITIONS: dict[tuple[State, Input], tuple[Action, State]] = {
    (S.DOWN, I.START): (A.SPAWN, S.STARTING),
    (S.DOWN, I.STOP): (A.NONE, S.DOWN),
    (S.DOWN, I.RESTART): (A.SPAWN, S.STARTING),
    (S.STARTING, I.READY): (A.ANNOUNCE_READY, S.UP),
    (S.STARTING, I.STOP): (A.KILL, S.STOPPING),
    (S.STARTING, I.RESTART): (A.KILL, S.RESTARTING),
    (S.STARTING, I.PROBE_FAILED): (A.KILL, S.RESTARTING),
    (S.STARTING, I.EXIT_RESTART): (A.ON_EXIT, S.BACKOFF),
    (S.STARTING, I.EXIT_FINAL): (A.NONE, S.ENDED),
    (S.STARTING, I.FAIL): (A.FAIL, S.FAILED),
    (S.RESTARTING, I.FAIL): (A.FAIL, S.FAILED),
    (S.STOPPING, I.FAIL): (A.NONE, S.DOWN),
    (S.UP, I.STOP): (A.KILL, S.STOPPING),
    (S.UP, I.RESTART): (A.KILL, S.RESTARTING),
    (S.UP, I.PROBE_FAILED): (A.KILL, S.RESTARTING),
    (S.UP, I.EXIT_RESTART): (A.ON_EXIT, S.BACKOFF),
    (S.UP, I.EXIT_FINAL): (A.NONE, S.ENDED),
    # An exit while nsup is stopping it is not a failure, whatever the status.
    (S.STOPPING, I.EXIT_RESTART): (A.NONE, S.DOWN),
    (S.STOPPING, I.EXIT_FINAL): (A.NONE, S.DOWN),
    (S.STOPPING, I.STOP): (A.NONE, S.STOPPING),
    (S.STOPPING, I.RESTART): (A.NONE, S.RESTARTING),
    (S.RESTARTING, I.EXIT_RESTART): (A.RESCHEDULE, S.BACKOFF),
    (S.RESTARTING, I.EXIT_FINAL): (A.RESCHEDULE, S.BACKOFF),
    (S.RESTARTING, I.STOP): (A.NONE, S.STOPPING),
    (S.RESTARTING, I.RESTART): (A.NONE, S.RESTARTING),
    (S.BACKOFF, I.DELAY_DONE): (A.SPAWN, S.STARTING),
    (S.BACKOFF, I.STOP): (A.CANCEL_DELAY, S.DOWN),
    (S.BACKOFF, I.RESTART): (A.CANCEL_DELAY, S.DOWN),  # then START follows at once
    (S.BACKOFF, I.START): (A.NONE, S.BACKOFF),
    (S.ENDED, I.START): (A.SPAWN, S.STARTING),
    (S.ENDED, I.RESTART): (A.SPAWN, S.STARTING),
    (S.ENDED, I.STOP): (A.NONE, S.ENDED),
    # Failed is terminal until someone asks again (`nsup start`, a reload).
    (S.FAILED, I.START): (A.SPAWN, S.STARTING),
    (S.FAILED, I.RESTART): (A.SPAWN, S.STARTING),
    (S.FAILED, I.STOP): (A.NONE, S.FAILED),
    (S.UP, I.START): (A.NONE, S.UP),
    (S.STARTING, I.START): (A.NONE, S.STARTING),
    (S.STOPPING, I.START): (A.NONE, S.RESTARTING),
    (S.RESTARTING, I.START): (A.NONE, S.RESTARTING),
}
"""Every (state, input) pair the runner can meet; a missing pair is ignored."""


def transition(state: State, event: Input) -> tuple[Action, State]:
    """Look up *state* x *event*; pairs not in the table change nothing.

    Unlisted pairs are stale inputs, such as READY arriving after the process
    already exited, or DELAY_DONE after the delay was cancelled.
    """
    return TRANSITIONS.get((state, event), (Action.NONE, state))


def succeeded(status: ExitStatus, success_codes: Collection[int] = ()) -> bool:
    """True when *status* is an exit with code 0 or one of *success_codes* (not a signal)."""
    return status.success or (status.signal is None and status.code in success_codes)


def wants_restart(rule: str, status: ExitStatus, success_codes: Collection[int] = ()) -> bool:
    """Apply a service's ``restart`` rule to how it ended."""
    if rule == "always":
        return True
    if rule == "never":
        return False
    return not succeeded(status, success_codes)  # on-failure: another exit, or death by signal


MAX_EXPONENT = 1024
"""``factor ** n`` is computed with n at most this: past it the delay is long capped."""


class BackoffCounter:
    """Delays before successive restarts: ``initial * factor**(n-1)``, capped, jittered.

    The count starts over once the service has stayed up for ``reset_after``.
    A start that failed before the command ran has an uptime of 0, so spawn
    failures back off like crashes.  The exponent is capped and an overflow
    means "the cap": the delay never raises, at restart 1025 or 10**9.
    """

    def __init__(self, backoff: Backoff, rng: random.Random | None = None) -> None:
        """Count restarts for one instance under *backoff*."""
        self.backoff = backoff
        self.count = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def next_delay(self, uptime: float) -> float:
        """Return the delay before the next restart, given how long the last run lasted."""
        b = self.backoff
        if uptime >= b.reset_after:
            self.count = 0
        self.count = min(self.count + 1, MAX_EXPONENT + 1)
        if b.initial <= 0:
            delay = 0.0
        else:
            try:
                delay = min(b.initial * b.factor ** (self.count - 1), b.max)
            except OverflowError:
                delay = b.max
        if b.jitter:
            delay *= 1 + self._rng.uniform(-b.jitter, b.jitter)
        return max(0.0, delay)


class Intensity:
    """Erlang's restart intensity: more than *max_restarts* within *within* seconds trips it."""

    def __init__(self, max_restarts: int, within: float) -> None:
        """Allow *max_restarts* restarts in any window of *within* seconds."""
        self.max_restarts = max_restarts
        self.within = within
        self._times: deque[float] = deque()

    def record(self, now: float) -> bool:
        """Record a restart at *now*; return True if that exceeds the intensity."""
        self._times.append(now)
        while self._times and self._times[0] <= now - self.within:
            self._times.popleft()
        return len(self._times) > self.max_restarts

    def clear(self) -> None:
        """Forget every recorded restart."""
        self._times.clear()
