"""The restart table's promises, seen through a real supervisor; backoff and intensity."""

from __future__ import annotations

import os
import random
import signal
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from helpers import Recorder

import nsup
from nsup import ExitStatus
from nsup._clone import syscalls as _sys
from nsup._engine.restart import BackoffCounter, Intensity, wants_restart
from nsup._policy.model import Backoff
from nsup._process import wait_command

# --- what the runner does with each transition, seen through a real supervisor ---------
#
# The table itself is data; these tests check the behaviour each row promises,
# through the public API only (status, events, start/stop/restart/signal), so
# they hold whatever the runner's insides look like.

SLEEPER = {"command": ["sleep", "100"], "namespaces": []}
FOREVER = {"initial": "1h", "max": "1h", "factor": 1.0, "jitter": 0.0}  # a backoff that never ends
QUICK = {"initial": "10ms", "max": "10ms", "factor": 1.0, "jitter": 0.0}


@asynccontextmanager
async def supervised(service: dict, **supervisor):
    """Run one service "a" beside a bystander "b" (so the supervisor never ends on its own)."""
    pol = nsup.Policy.from_dict(
        {"supervisor": supervisor, "services": {"a": service, "b": SLEEPER}}
    )
    async with (
        nsup.open_supervisor(pol, output=lambda n, l: None) as sup,
        trio.open_nursery() as nursery,
    ):
        rec = Recorder()
        await nursery.start(rec.run, sup)
        yield sup, rec
        nursery.cancel_scope.cancel()


def a(sup) -> nsup.ServiceStatus:
    return sup.status()["a"]


async def settled() -> None:
    """Let every task run until all wait (the runner has handled what it was sent)."""
    await trio.testing.wait_all_tasks_blocked(0.05)


async def test_an_exit_the_rule_restarts_backs_off_then_starts_again():
    async with supervised({**SLEEPER, "backoff": QUICK}, max_restarts=5) as (sup, rec):
        first = a(sup).pid
        sup.signal("a", signal.SIGKILL)
        restarting = await rec.wait("restarting")
        started = await rec.wait("started")
        assert (0.01, "a") == (pytest.approx(restarting[0].delay), started[0].service)
        await sup.start("a")  # returns once it is up
        assert ("up", nsup.ExitStatus(signal=signal.SIGKILL)) == (a(sup).state, a(sup).last_exit)
        assert first != a(sup).pid


async def test_an_exit_the_rule_leaves_ends_it():
    async with supervised({**SLEEPER, "restart": "never"}) as (sup, rec):
        sup.signal("a", signal.SIGKILL)
        await rec.wait("exited")
        await settled()
        assert ("ended", None, []) == (a(sup).state, a(sup).pid, rec.of("restarting"))


async def test_a_stop_is_not_a_failure():
    """An exit while nsup stops it goes DOWN, whatever the status: no restart, no give-up."""
    async with supervised({**SLEEPER, "restart": "always"}, max_restarts=0) as (sup, rec):
        await sup.stop("a")
        await settled()
        status = a(sup)
        assert ("down", None) == (status.state, status.pid)
        assert nsup.ExitStatus(signal=signal.SIGTERM) == status.last_exit
        assert ([], []) == (rec.of("restarting"), rec.of("gave_up"))


async def test_stopping_what_is_down_does_nothing():
    async with supervised(SLEEPER) as (sup, rec):
        await sup.stop("a")
        await settled()
        seen = len(rec.events)
        await sup.stop("a")
        await settled()
        assert ("down", seen) == (a(sup).state, len(rec.events))


async def test_a_manual_restart_stops_first_then_starts_at_once():
    """Not counted toward intensity: with max_restarts = 0 it does not give up."""
    async with supervised(SLEEPER, max_restarts=0) as (sup, rec):
        before = a(sup).pid
        await sup.restart("a")
        await rec.wait("ready")  # published as restart() returns; the recorder may lag
        assert ["stopping", "exited", "restarting", "starting", "started", "ready"] == [
            e.kind for e in rec.events if e.service == "a"
        ]
        assert 0 == rec.of("restarting")[0].delay
        assert ("up", []) == (a(sup).state, rec.of("gave_up"))
        assert before != a(sup).pid


async def test_restart_during_backoff_starts_at_once():
    async with supervised({**SLEEPER, "backoff": FOREVER}, max_restarts=5) as (sup, rec):
        sup.signal("a", signal.SIGKILL)
        assert 3600 == (await rec.wait("restarting"))[0].delay
        assert "backoff" == a(sup).state
        with trio.fail_after(20):  # not an hour
            await sup.restart("a")
        assert ("up", 1) == (a(sup).state, len(rec.of("started")))


async def test_stop_during_backoff_cancels_the_pending_restart():
    async with supervised({**SLEEPER, "backoff": FOREVER}, max_restarts=5) as (sup, rec):
        sup.signal("a", signal.SIGKILL)
        await rec.wait("restarting")
        await sup.stop("a")
        await settled()
        assert ("down", []) == (a(sup).state, rec.of("started"))
        await sup.start("a")  # and it starts again on request, without waiting the delay
        assert "up" == a(sup).state


async def test_a_restart_without_delay_counts_each_run_and_stops_on_request():
    """Backoff 0 queues the next start at once; each counts, and a stop still ends the loop."""
    crash = {"command": ["sh", "-c", "exit 1"], "namespaces": [], "backoff": {"initial": 0}}
    async with supervised(crash, max_restarts=1000, within="1h") as (sup, rec):
        await rec.wait("started", "a", count=5)
        assert [0.0] * 4 == [e.delay for e in rec.of("restarting")][:4]
        await sup.stop("a")
        await settled()
        status = a(sup)
        assert ("down", None, True) == (status.state, status.pid, status.restarts >= 4)


@pytest.mark.parametrize("how", ["start", "restart"])
async def test_an_ended_service_can_be_started_again(how):
    async with supervised({**SLEEPER, "restart": "never"}) as (sup, rec):
        sup.signal("a", signal.SIGKILL)
        await rec.wait("exited")
        await settled()
        assert "ended" == a(sup).state
        await getattr(sup, how)("a")
        assert ("up", 1) == (a(sup).state, len(rec.of("started")))


async def test_a_crash_while_starting_counts_too(tmp_path):
    """An exit before readiness is an exit: the restart rule and the backoff apply."""
    ran = tmp_path / "ran"
    service = {
        # The first run gets ready; every later one exits 3 before it is ready.
        "command": ["sh", "-c", f"test -e {ran} && exit 3; touch {ran}; echo up; exec sleep 100"],
        "namespaces": [],
        "ready": {"log": "up", "timeout": "1h"},
        "backoff": {"initial": "10ms", "max": "1h", "factor": 360000.0, "jitter": 0.0},
    }
    async with supervised(service, max_restarts=5) as (sup, rec):
        sup.signal("a", signal.SIGKILL)
        restarting = await rec.wait("restarting", count=2)
        assert [0.01, 3600] == pytest.approx([e.delay for e in restarting])
        status = a(sup)
        assert ("backoff", nsup.ExitStatus(code=3)) == (status.state, status.last_exit)
        assert [] == [e for e in rec.of("ready") if e.service == "a"]


# --- the init's X<status> report: the next run may start while the old init exits ---------


def _alive_with_argv(argv: list[str]) -> list[int]:
    """Pids of live (not zombie) processes running exactly *argv*."""
    want = "\0".join(argv).encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rpartition(b")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if cmdline == want and state != b"Z":
            found.append(int(entry))
    return found


@pytest.mark.parametrize("namespaces", [{"pid", "mount"}, set()])
async def test_a_run_counts_as_ended_early_only_when_nothing_of_it_is_left(namespaces):
    """A command that exits leaving a process behind: its status, and nothing of it alive.

    ``wait_command`` may return before the init is reaped (the next run then
    starts at once), but only once nothing else of the run is alive; a
    leftover in the PID namespace makes it wait for the namespace to go.
    """
    leftover = ["sleep", "31337"]
    spec = nsup.ProcessSpec(
        argv=["sh", "-c", f"{' '.join(leftover)} & exit 3"], namespaces=namespaces
    )
    for _ in range(5):
        async with nsup.spawn(spec) as proc:
            status, reaped = await wait_command(proc)
            assert (nsup.ExitStatus(code=3), []) == (status, _alive_with_argv(leftover))
            assert reaped == (proc.status is not None)


async def test_stop_returns_once_every_earlier_run_is_reaped():
    """Runs that ended while their init still exited are reaped before stop() returns."""
    quick = {"command": ["sh", "-c", "exit 1"], "backoff": {"initial": 0, "jitter": 0}}
    async with supervised(quick, max_restarts=1000, within="1h") as (sup, rec):
        started = await rec.wait("started", "a", count=10)
        await sup.stop("a")
        inits = {e.pid for e in started}
        assert set() == inits & set(_sys.children(os.getpid()))
        assert (True, "down") == (sup.status()["a"].pid is None, a(sup).state)


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
