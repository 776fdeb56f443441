"""The embedding API of a running supervisor: wait_ready, add, remove, and calls after it finished."""

from __future__ import annotations

import os
import signal
from contextlib import asynccontextmanager

import pytest
import trio
from helpers import Recorder

import nsup

SLEEPER = {"command": ["sleep", "100"], "namespaces": []}
# Ready once it printed "up"; each run prints it at once.
READY_SLEEPER = {
    "command": ["sh", "-c", "echo up; exec sleep 100"],
    "namespaces": [],
    "ready": {"log": "up", "timeout": "1h"},
}
QUICK = {"initial": "10ms", "max": "10ms", "factor": 1.0, "jitter": 0.0}
MISSING = {"command": ["/nonexistent/nsup-test-binary"], "namespaces": []}


@asynccontextmanager
async def supervised(services: dict, **supervisor):
    """Run *services* beside a bystander "keep" (so the supervisor never ends on its own)."""
    pol = nsup.Policy.from_dict(
        {"supervisor": supervisor, "services": {**services, "keep": SLEEPER}}
    )
    async with (
        nsup.open_supervisor(pol, output=lambda n, l: None) as sup,
        trio.open_nursery() as nursery,
    ):
        rec = Recorder()
        await nursery.start(rec.run, sup)
        with trio.fail_after(30):
            yield sup, rec
        nursery.cancel_scope.cancel()


def gone(pid: int) -> bool:
    """True once *pid* is no longer a process of ours (reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def not_ready(sup, name: str, caught: list) -> None:
    """``sup.wait_ready(name)`` in a task: keep the NotReadyError it must raise."""
    with pytest.raises(nsup.NotReadyError) as raised:
        await sup.wait_ready(name)
    caught.append(raised.value)


# --- wait_ready ---------------------------------------------------------------


async def test_wait_ready_returns_at_once_for_a_ready_service():
    async with supervised({"a": READY_SLEEPER}) as (sup, _):
        await sup.wait_ready("a")
        assert sup.status()["a"].ready


async def test_wait_ready_waits_through_a_backoff_until_ready_again():
    hour = {"initial": "1h", "max": "1h", "factor": 1.0, "jitter": 0.0}
    async with supervised({"a": {**READY_SLEEPER, "backoff": hour}}, max_restarts=5) as (
        sup,
        rec,
    ):
        before = sup.status()["a"].pid
        sup.signal("a", signal.SIGKILL)
        await rec.wait("restarting", "a")
        returned = []

        async def waiter():
            await sup.wait_ready("a")
            returned.append(sup.status()["a"])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert ([], "backoff") == (returned, sup.status()["a"].state)
            await sup.restart("a")  # ends the backoff at once
        assert (True, 1) == (returned[0].ready, len(await rec.wait("started", "a")))
        assert before != returned[0].pid


async def test_wait_ready_covers_every_instance():
    async with supervised({"a": {**READY_SLEEPER, "instances": 2}}) as (sup, rec):
        sup.signal("a.1", signal.SIGKILL)
        await rec.wait("exited", "a.1")
        await sup.wait_ready("a")
        assert [True, True] == [sup.status()[n].ready for n in ("a.0", "a.1")]


async def test_wait_ready_on_a_failed_service_raises_with_the_reason():
    async with supervised({"a": MISSING}) as (sup, _):
        with pytest.raises(nsup.NotReadyError) as caught:
            await sup.wait_ready("a")
        error = caught.value
        assert ("a", "a", "failed") == (error.service, error.instance, error.state)
        assert "No such file or directory" in error.reason
        assert "'a' will not be ready: it is failed: " in str(error)
        assert isinstance(error, nsup.NsupError)


async def test_wait_ready_on_an_ended_service_raises(tmp_path):
    gate = tmp_path / "gate"
    ends = {
        "command": ["sh", "-c", f"while ! test -e {gate}; do sleep 0.01; done; exit 3"],
        "namespaces": [],
        "restart": "never",
    }
    async with supervised({"a": ends}) as (sup, rec):
        gate.touch()  # it exits once the recorder listens
        await rec.wait("exited", "a")
        await trio.testing.wait_all_tasks_blocked(0.05)  # the runner handled the exit
        assert "ended" == sup.status()["a"].state
        with pytest.raises(nsup.NotReadyError) as caught:
            await sup.wait_ready("a")
        assert ("ended", "its last run ended: exited with code 3") == (
            caught.value.state,
            caught.value.reason,
        )


async def test_wait_ready_raises_when_the_service_ends_while_waited_for(tmp_path):
    gate = tmp_path / "gate"
    # Running, not ready (never prints "up"), exits 4 once the gate file exists.
    waits = {
        "command": ["sh", "-c", f"while ! test -e {gate}; do sleep 0.01; done; exit 4"],
        "namespaces": [],
        "restart": "never",
        "ready": {"log": "up", "timeout": "1h"},
    }
    async with supervised({}) as (sup, rec), trio.open_nursery() as nursery:
        nursery.start_soon(sup.add, "a", waits)
        await rec.wait("started", "a")
        caught: list = []
        async with trio.open_nursery() as waiters:
            waiters.start_soon(not_ready, sup, "a", caught)
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert ("starting", []) == (sup.status()["a"].state, caught)
            gate.touch()
        assert ("ended", nsup.ExitStatus(code=4)) == (
            caught[0].state,
            sup.status()["a"].last_exit,
        )


async def test_wait_ready_on_a_blocked_service_raises():
    services = {"a": MISSING, "b": {**SLEEPER, "depends_on": {"a": "ready"}}}
    async with supervised(services) as (sup, _):
        with pytest.raises(nsup.NotReadyError) as caught:
            await sup.wait_ready("b")
        assert ("blocked", "b") == (caught.value.state, caught.value.instance)
        assert "a" in caught.value.reason


async def test_wait_ready_on_a_completed_oneshot_returns():
    once = {"command": ["true"], "namespaces": [], "type": "oneshot"}
    async with supervised({"a": once}) as (sup, _):
        await sup.wait_ready("a")
        assert sup.status()["a"].completed


async def test_wait_ready_on_an_unknown_name_raises_key_error():
    async with supervised({}) as (sup, _):
        with pytest.raises(KeyError, match="no service 'nope'"):
            await sup.wait_ready("nope")


async def test_wait_ready_raises_once_the_service_is_removed():
    slow = {
        "command": ["sh", "-c", "exec sleep 100"],
        "namespaces": [],
        "ready": {"log": "never printed", "timeout": "1h"},
    }
    async with supervised({}) as (sup, rec), trio.open_nursery() as nursery:
        nursery.start_soon(sup.add, "a", slow)
        await rec.wait("started", "a")
        caught: list = []
        async with trio.open_nursery() as waiters:
            waiters.start_soon(not_ready, sup, "a", caught)
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert [] == caught
            await sup.remove("a")
        assert "removed" == caught[0].state
        nursery.cancel_scope.cancel()


# --- after the supervisor finished ----------------------------------------------


async def test_calls_after_the_supervisor_finished_raise():
    pol = nsup.Policy.from_dict({"services": {"a": SLEEPER}})
    async with nsup.open_supervisor(pol, output=lambda n, l: None) as sup:
        pass
    for call in (sup.start("a"), sup.restart("a"), sup.add("b", SLEEPER), sup.remove("a")):
        with pytest.raises(nsup.SupervisorFinishedError, match="open a new one"):
            await call
    with pytest.raises(nsup.NotReadyError) as caught:
        await sup.wait_ready("a")
    assert "finished" == caught.value.state


async def test_wait_ready_raises_when_the_supervisor_finishes_meanwhile():
    slow = {**SLEEPER, "ready": {"log": "never printed", "timeout": "1h"}}
    pol = nsup.Policy.from_dict({"services": {"keep": SLEEPER}})
    caught: list = []
    async with (
        nsup.open_supervisor(pol, output=lambda n, l: None) as sup,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(sup.add, "a", slow)
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert "starting" == sup.status()["a"].state
        nursery.start_soon(not_ready, sup, "a", caught)
        await trio.testing.wait_all_tasks_blocked(0.05)
        assert [] == caught
        await sup.stop_all()
    assert "finished" == caught[0].state


# --- add and remove -------------------------------------------------------------


async def test_add_starts_a_service_from_a_table():
    async with supervised({}) as (sup, rec):
        await sup.add("job", {"command": ["sleep", "100"], "namespaces": [], "instances": 2})
        assert ["keep", "job.0", "job.1"] == list(sup.status())
        assert ["up", "up"] == [sup.status()[n].state for n in ("job.0", "job.1")]
        assert 2 == len(rec.of("started", "job.0") + rec.of("started", "job.1"))
        await sup.wait_ready("job")


async def test_add_takes_a_service_object_and_keeps_the_others_running():
    service = nsup.Policy.from_dict({"services": {"x": READY_SLEEPER}}).services["x"]
    async with supervised({"a": SLEEPER}) as (sup, rec):
        before = sup.status()["a"].pid
        await sup.add("worker", service)
        assert sup.status()["worker"].ready
        assert before == sup.status()["a"].pid
        assert [] == rec.of("stopping", "a")


async def test_add_refuses_a_taken_name():
    async with supervised({"a": SLEEPER}) as (sup, _):
        with pytest.raises(nsup.PolicyError, match=r"services\.a: a service named 'a' is already"):
            await sup.add("a", SLEEPER)


async def test_add_refuses_an_invalid_service_and_names_the_key():
    async with supervised({}) as (sup, _):
        with pytest.raises(nsup.PolicyError, match=r"services\.w\.restart"):
            await sup.add("w", {**SLEEPER, "restart": "sometimes"})
        with pytest.raises(nsup.PolicyError, match=r"services\.w"):
            await sup.add("w", {**SLEEPER, "depends_on": ["nowhere"]})
        assert ["keep"] == list(sup.status())


async def test_remove_stops_and_forgets_a_service():
    async with supervised({}) as (sup, rec):
        await sup.add("job", SLEEPER)
        pid = sup.status()["job"].pid
        await sup.remove("job")
        assert (["keep"], True) == (list(sup.status()), gone(pid))
        assert 1 == len(rec.of("exited", "job"))
        await sup.add("job", SLEEPER)  # the name is free again
        assert "up" == sup.status()["job"].state


async def test_remove_refuses_an_unknown_name_and_a_dependency():
    services = {"a": SLEEPER, "b": {**SLEEPER, "depends_on": ["a"]}}
    async with supervised(services) as (sup, _):
        with pytest.raises(KeyError, match="no service 'nope'"):
            await sup.remove("nope")
        with pytest.raises(nsup.PolicyError, match=r"services\.a: 'b' depend on it"):
            await sup.remove("a")
        assert "up" == sup.status()["a"].state


async def test_concurrent_adds_and_removes_are_serialised():
    async with supervised({}) as (sup, _):
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(sup.add, f"w{i}", SLEEPER)
        assert {f"w{i}" for i in range(6)} | {"keep"} == set(sup.status())
        async with trio.open_nursery() as nursery:
            for i in range(0, 6, 2):
                nursery.start_soon(sup.remove, f"w{i}")
            nursery.start_soon(sup.add, "w6", SLEEPER)
        assert {"keep", "w1", "w3", "w5", "w6"} == set(sup.status())
        assert all(s.state == "up" for s in sup.status().values())


async def test_a_reload_without_an_added_service_removes_it():
    pol = nsup.Policy.from_dict({"services": {"keep": SLEEPER}})
    async with nsup.open_supervisor(pol, output=lambda n, l: None) as sup:
        await sup.add("job", SLEEPER)
        pid = sup.status()["job"].pid
        result = await sup.reload(pol)
        assert ({"changed": [], "removed": ["job"], "added": []}, True) == (result, gone(pid))


# --- ServiceStatus: pid, init_pid, restarts --------------------------------------


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[1])


def comm_of(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


@pytest.mark.parametrize(
    "namespaces", [["pid"], []], ids=["in a pid namespace", "without a pid namespace"]
)
async def test_pid_is_the_command_and_init_pid_the_init(namespaces):
    service = {"command": ["sleep", "100"], "namespaces": namespaces, "init": True}
    async with supervised({"a": service}) as (sup, rec):
        status = sup.status()["a"]
        assert status.init_pid is not None
        assert (parent_of(status.pid), comm_of(status.pid)) == (status.init_pid, "sleep")
        sup.signal("a", signal.SIGKILL)
        await rec.wait("exited", "a")
        await trio.testing.wait_all_tasks_blocked(0.05)
        await sup.wait_ready("a")
        again = sup.status()["a"]
        assert (parent_of(again.pid), comm_of(again.pid)) == (again.init_pid, "sleep")
        assert status.pid != again.pid


async def test_without_an_init_pid_is_the_command_and_init_pid_none():
    service = {"command": ["sleep", "100"], "namespaces": ["pid"], "init": False}
    async with supervised({"a": service}) as (sup, _):
        status = sup.status()["a"]
        assert (None, "sleep") == (status.init_pid, comm_of(status.pid))
        assert os.getpid() == parent_of(status.pid)


async def test_a_stopped_service_has_no_pids():
    async with supervised({"a": SLEEPER}) as (sup, _):
        await sup.stop("a")
        status = sup.status()["a"]
        assert (None, None) == (status.pid, status.init_pid)


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
async def test_restarts_count_group_restarts_for_every_member(strategy):
    services = {"a": {**SLEEPER, "backoff": QUICK}, "b": {**SLEEPER, "backoff": QUICK}}
    async with supervised(services, strategy=strategy, max_restarts=5) as (sup, rec):
        sup.signal("a", signal.SIGKILL)
        await rec.wait("restarting", "a")
        await sup.wait_ready("a")
        await sup.wait_ready("b")
        await sup.wait_ready("keep")
        counts = {n: s.restarts for n, s in sup.status().items()}
        # "keep" comes last in dependency order: rest_for_one from "a" restarts all three too.
        assert {"a": 1, "b": 1, "keep": 1} == counts


async def test_restarts_count_manual_restarts_not_starts():
    async with supervised({"a": SLEEPER}) as (sup, _):
        await sup.restart("a")
        assert 1 == sup.status()["a"].restarts
        await sup.stop("a")
        await sup.start("a")
        assert 1 == sup.status()["a"].restarts
