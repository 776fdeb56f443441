"""The Process handle as trio users expect it, ``run_process`` under ``nursery.start``, and ``join``."""

from __future__ import annotations

import inspect
import os
import signal

import pytest
import trio
from helpers import read_all, read_line

import nsup

SLEEPER = ["sleep", "100"]
IGNORES_TERM = ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"]


def spec(argv, **kwargs) -> nsup.ProcessSpec:
    return nsup.ProcessSpec(argv=argv, **kwargs)


# --- terminate() and kill() only signal; stop() signals, waits and reaps ----------------------


@pytest.mark.parametrize(
    ("method", "signo"), [("terminate", signal.SIGTERM), ("kill", signal.SIGKILL)]
)
async def test_terminate_and_kill_only_signal(method, signo):
    async with nsup.spawn(spec(SLEEPER)) as proc:
        assert not inspect.iscoroutinefunction(getattr(nsup.Process, method))
        assert getattr(proc, method)() is None
        assert proc.status is None  # signalled, not reaped: that is wait()'s job
        assert nsup.ExitStatus(signal=signo) == await proc.wait()


async def test_stop_signals_waits_and_reaps():
    async with nsup.spawn(spec(SLEEPER)) as proc:
        status = await proc.stop()
        assert nsup.ExitStatus(signal=signal.SIGTERM) == status
        assert status == proc.status
        assert not proc.escalated
        with pytest.raises(ProcessLookupError):
            os.kill(proc.pid, 0)  # reaped, not a zombie


async def test_stop_uses_the_specs_stop_signal():
    async with nsup.spawn(spec(SLEEPER, stop_signal="SIGINT")) as proc:
        assert nsup.ExitStatus(signal=signal.SIGINT) == await proc.stop()


async def test_stop_escalates_after_grace_and_says_so():
    async with nsup.spawn(spec(IGNORES_TERM, stdout="pipe", init=False)) as proc:
        assert b"ready" == await read_line(proc.stdout)
        with pytest.warns(RuntimeWarning, match="ignored SIGTERM for 0.2 seconds; sending SIGKILL"):
            status = await proc.stop(grace=0.2)
        assert nsup.ExitStatus(signal=signal.SIGKILL) == status
        assert proc.escalated


async def test_stop_after_the_exit_only_returns_the_status():
    async with nsup.spawn(spec(["sh", "-c", "exit 4"], namespaces=[])) as proc:
        assert nsup.ExitStatus(code=4) == await proc.wait()
        assert nsup.ExitStatus(code=4) == await proc.stop()
        assert not proc.escalated


async def test_stop_finishes_even_when_cancelled():
    async with nsup.spawn(spec(SLEEPER)) as proc:
        with trio.CancelScope() as scope:
            scope.cancel()
            await proc.stop()
        assert nsup.ExitStatus(signal=signal.SIGTERM) == proc.status


# --- run_process -------------------------------------------------------------------------------


async def test_run_process_returns_how_it_ended():
    status = await nsup.run_process(spec(["sh", "-c", "exit 3"], namespaces=[]))
    assert nsup.ExitStatus(code=3) == status  # a failure is a status, not an exception


async def test_nursery_start_hands_back_the_running_process():
    argv = ["sh", "-c", "echo hello; exec sleep 100"]
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(nsup.run_process, spec(argv, stdout="pipe"))
        assert isinstance(proc, nsup.Process)
        assert proc.status is None
        assert b"hello" == await read_line(proc.stdout)
        proc.terminate()  # the task supervising it returns once it exits
    assert nsup.ExitStatus(signal=signal.SIGTERM) == proc.status
    assert -1 == proc.pidfd  # closed by run_process on the way out


async def test_the_task_returns_the_status():
    results = []

    async def run(task_status=trio.TASK_STATUS_IGNORED):
        results.append(
            await nsup.run_process(spec(["sh", "-c", "exit 5"]), task_status=task_status)
        )

    async with trio.open_nursery() as nursery:
        await nursery.start(run)
    assert [nsup.ExitStatus(code=5)] == results


async def test_cancelling_the_nursery_stops_and_reaps_it():
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(nsup.run_process, spec(SLEEPER))
        pid = proc.pid
        nursery.cancel_scope.cancel()
    assert nursery.cancel_scope.cancelled_caught
    assert nsup.ExitStatus(signal=signal.SIGTERM) == proc.status
    assert -1 == proc.pidfd
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_cancelling_escalates_to_sigkill_for_a_child_ignoring_its_stop_signal():
    ignoring = spec(IGNORES_TERM, stdout="pipe", init=False, stop_timeout=0.2)
    with pytest.warns(RuntimeWarning, match="ignored SIGTERM for 0.2 seconds"):  # noqa: PT031 - the warning comes from the nursery's exit
        async with trio.open_nursery() as nursery:
            proc = await nursery.start(nsup.run_process, ignoring)
            assert b"ready" == await read_line(proc.stdout)
            nursery.cancel_scope.cancel()
    assert nsup.ExitStatus(signal=signal.SIGKILL) == proc.status


async def test_an_error_beside_it_stops_it_and_propagates():
    procs = []
    with pytest.RaisesGroup(pytest.RaisesExc(KeyError, match="boom")):
        async with trio.open_nursery() as nursery:
            procs.append(await nursery.start(nsup.run_process, spec(SLEEPER)))
            raise KeyError("boom")
    assert nsup.ExitStatus(signal=signal.SIGTERM) == procs[0].status


async def test_cancelled_before_it_starts_it_starts_nothing():
    with trio.CancelScope() as scope:
        scope.cancel()
        async with trio.open_nursery() as nursery:
            await nursery.start(nsup.run_process, spec(SLEEPER))
            pytest.fail("nursery.start must not return")
    assert scope.cancelled_caught


async def test_a_spawn_error_comes_out_of_nursery_start():
    async with trio.open_nursery() as nursery:
        with pytest.raises(nsup.SpawnError, match="not found"):
            await nursery.start(nsup.run_process, spec(["no-such-command-xyz"]))


@pytest.mark.parametrize("stream", ["stdin", "stdout", "stderr"])
async def test_a_pipe_without_nursery_start_is_refused(stream):
    with pytest.raises(
        ValueError, match=rf"{stream}='pipe' in run_process\(\) needs nursery.start"
    ):
        await nsup.run_process(spec(SLEEPER, **{stream: "pipe"}))


# --- join: enter a running child's namespaces --------------------------------------------------


async def test_join_enters_the_namespaces_of_a_running_child():
    target = spec(SLEEPER, namespaces={"pid", "mount", "uts", "net"}, hostname="inside")
    argv = ["sh", "-c", "hostname; readlink /proc/self/ns/net /proc/self/ns/uts"]
    async with nsup.spawn(target) as proc:
        async with nsup.spawn(spec(argv, namespaces=(), stdout="pipe"), join=proc) as joined:
            out = (await read_all(joined.stdout)).decode().split()
            assert nsup.ExitStatus(code=0) == await joined.wait()
        theirs = [os.readlink(f"/proc/{proc.pid}/ns/{kind}") for kind in ("net", "uts")]
    assert ["inside", *theirs] == out
    assert os.readlink("/proc/self/ns/net") not in out


async def test_join_needs_a_spec_without_namespaces():
    async with nsup.spawn(spec(SLEEPER)) as proc:
        with pytest.raises(nsup.SpecError, match=r"give the spec namespaces=\(\) with it"):
            await nsup.lowlevel.start_process(spec(["true"]), join=proc)


async def test_join_must_be_a_process():
    with pytest.raises(TypeError, match=r"'join' must be an nsup\.Process"):
        await nsup.run_process(spec(["true"], namespaces=()), join=1234)


async def test_join_of_an_exited_process_is_a_spawn_error():
    async with nsup.spawn(spec(["true"])) as proc:
        await proc.wait()
        with pytest.raises(nsup.SpawnError, match="which has exited"):
            async with nsup.spawn(spec(["true"], namespaces=()), join=proc):
                pass


def test_a_spec_holds_no_process():
    """The spec is a plain frozen value: the process to join is an argument of the spawn."""
    with pytest.raises(TypeError, match="join"):
        nsup.ProcessSpec(argv=["true"], join=None)
