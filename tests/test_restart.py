"""The restart table, backoff and intensity, transition by transition (no processes)."""

from __future__ import annotations

import random

import pytest

from nsup import ExitStatus
from nsup._engine.restart import (
    TRANSITIONS,
    Action,
    BackoffCounter,
    Input,
    Intensity,
    State,
    transition,
    wants_restart,
)
from nsup._policy.model import Backoff

S, I, A = State, Input, Action


@pytest.mark.parametrize(
    ("state", "event", "action", "new_state", "why"),
    [
        (S.DOWN, I.START, A.SPAWN, S.STARTING, "a start request spawns"),
        (S.STARTING, I.READY, A.ANNOUNCE_READY, S.UP, "readiness releases dependents"),
        (
            S.STARTING,
            I.PROBE_FAILED,
            A.KILL,
            S.RESTARTING,
            "not ready in time: stop it, then restart",
        ),
        (S.UP, I.PROBE_FAILED, A.KILL, S.RESTARTING, "health failed: stop it, then restart"),
        (
            S.UP,
            I.EXIT_RESTART,
            A.ON_EXIT,
            S.BACKOFF,
            "an exit the rule restarts goes to the supervisor",
        ),
        (S.UP, I.EXIT_FINAL, A.NONE, S.ENDED, "an exit the rule leaves ends it"),
        (S.STARTING, I.EXIT_RESTART, A.ON_EXIT, S.BACKOFF, "a crash while starting counts too"),
        (S.UP, I.STOP, A.KILL, S.STOPPING, "a stop request stops it"),
        (
            S.STOPPING,
            I.EXIT_RESTART,
            A.NONE,
            S.DOWN,
            "an exit while nsup stops it is not a failure",
        ),
        (S.STOPPING, I.EXIT_FINAL, A.NONE, S.DOWN, "and neither is a clean one"),
        (S.UP, I.RESTART, A.KILL, S.RESTARTING, "a manual restart stops it first"),
        (S.RESTARTING, I.EXIT_RESTART, A.RESCHEDULE, S.BACKOFF, "then starts it again"),
        (S.RESTARTING, I.EXIT_FINAL, A.RESCHEDULE, S.BACKOFF, "whatever its restart rule says"),
        (S.RESTARTING, I.STOP, A.NONE, S.STOPPING, "a stop during a restart wins"),
        (S.BACKOFF, I.DELAY_DONE, A.SPAWN, S.STARTING, "the delay ran out"),
        (S.BACKOFF, I.STOP, A.CANCEL_DELAY, S.DOWN, "a stop cancels a pending restart"),
        (S.BACKOFF, I.RESTART, A.CANCEL_DELAY, S.DOWN, "a manual restart skips the delay"),
        (S.ENDED, I.START, A.SPAWN, S.STARTING, "an ended service can be started again"),
        (S.DOWN, I.STOP, A.NONE, S.DOWN, "stopping what is down does nothing"),
        (
            S.STOPPING,
            I.START,
            A.NONE,
            S.RESTARTING,
            "a start during a stop restarts once it is down",
        ),
    ],
)
def test_transition(state, event, action, new_state, why):
    assert (action, new_state) == transition(state, event), why


UNLISTED = [(s, e) for s in State for e in Input if (s, e) not in TRANSITIONS]


@pytest.mark.parametrize(("state", "event"), UNLISTED)
def test_unlisted_pairs_change_nothing(state, event):
    assert (A.NONE, state) == transition(state, event)


@pytest.mark.parametrize("state", [S.DOWN, S.ENDED, S.BACKOFF, S.STOPPING])
@pytest.mark.parametrize("event", [I.READY, I.PROBE_FAILED])
def test_stale_probe_results_are_ignored(state, event):
    assert transition(state, event)[0] is A.NONE


@pytest.mark.parametrize(
    ("rule", "status", "expected"),
    [
        ("always", ExitStatus(code=0), True),
        ("always", ExitStatus(code=1), True),
        ("on-failure", ExitStatus(code=0), False),
        ("on-failure", ExitStatus(code=3), True),
        ("on-failure", ExitStatus(signal=9), True),
        ("never", ExitStatus(code=1), False),
        ("never", ExitStatus(signal=15), False),
    ],
)
def test_wants_restart(rule, status, expected):
    assert expected == wants_restart(rule, status)


def test_backoff_grows_caps_and_resets():
    counter = BackoffCounter(
        Backoff(initial=0.1, max=1.0, factor=2.0, jitter=0.0, reset_after=60.0)
    )
    delays = [counter.next_delay(uptime=1.0) for _ in range(6)]
    assert [0.1, 0.2, 0.4, 0.8, 1.0, 1.0] == pytest.approx(delays)
    assert pytest.approx(0.1) == counter.next_delay(uptime=60.0)


def test_backoff_jitter_stays_within_bounds():
    counter = BackoffCounter(
        Backoff(initial=1.0, max=1.0, factor=1.0, jitter=0.1), random.Random(7)
    )
    delays = [counter.next_delay(uptime=0.0) for _ in range(200)]
    assert min(delays) >= 0.9
    assert max(delays) <= 1.1
    assert max(delays) - min(delays) > 0.1  # it does spread


def test_intensity_trips_on_more_than_max_within_window():
    intensity = Intensity(max_restarts=3, within=10.0)
    assert [False, False, False, True] == [intensity.record(t) for t in (0.0, 1.0, 2.0, 3.0)]


def test_intensity_forgets_restarts_outside_the_window():
    intensity = Intensity(max_restarts=2, within=10.0)
    assert [False, False, False, False] == [intensity.record(t) for t in (0.0, 5.0, 10.5, 16.0)]
