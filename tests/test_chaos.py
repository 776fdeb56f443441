"""Chaos: drive each way nsup used to freeze (issue 10) and check it keeps supervising or ends cleanly.

Real processes, as root.  Each test bounds its wait with ``fail_after`` and the
suite's leak check proves nothing was left running.  A test either sees nsup
keep supervising (the other services run on, it answers SIGTERM) or end with
a clear message and exit code.
"""

from __future__ import annotations

import errno
import os
import random
import resource
import signal
import sys
from pathlib import Path

import pytest
import test_cmd_run as cmd_run
import trio
import trio.lowlevel
from helpers import NSUP, kill_and_wait, open_nsup_run, read_line
from test_rootless import SYSTEM_PYTHON, public_path, run_as_nobody  # noqa: F401 - a fixture
from test_supervisor import Recorder as Events

import nsup
from nsup import _cgroup, _zygote_client
from nsup._clone import syscalls as _sys
from nsup._engine import runner as runner_module
from nsup._engine.supervisor import Supervisor, open_supervisor
from nsup._errors import SpawnError
from nsup._policy import Policy

BARE = {"namespaces": [], "init": False}  # the cheapest spawn: many services, quickly
FAST = {"initial": "10ms", "max": "10ms", "factor": 1.0, "jitter": 0.0}


def policy(services: dict, **supervisor) -> Policy:
    return Policy.from_dict({"supervisor": supervisor, "services": services})


def sleepers(count: int, **extra) -> dict:
    service = {"command": ["sleep", "1000"], "stop": {"timeout": "5s"}, **BARE, **extra}
    return {f"s{i}": dict(service) for i in range(count)}


async def supervise(nursery: trio.Nursery, pol: Policy, output=None) -> tuple[Supervisor, Events]:
    sup = Supervisor._create(pol, nursery, output or (lambda _name, _line: None))
    events = Events()
    await nursery.start(events.run, sup)
    return sup, events


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"


# --- one service's failure stays that service's -----------------------------------


async def test_an_output_callback_that_raises_fails_only_that_service():
    def output(name: str, line: str) -> None:
        if name == "loud":
            raise ValueError(f"sink refused {line!r}")

    pol = policy(
        {
            "loud": {"command": ["sh", "-c", "echo hello; exec sleep 1000"], **BARE},
            "quiet": {"command": ["sleep", "1000"], **BARE},
        }
    )
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            sup, events = await supervise(nursery, pol, output)
            nursery.start_soon(sup._start_all)
            [failed] = await events.wait("failed", "loud")
            status = sup.status()
            assert status["loud"].state == "failed"
            assert "ValueError: sink refused 'hello'" in status["loud"].error
            assert "ValueError" in failed.message
            assert status["loud"].pid is None  # its process was stopped
            await sup._runners["quiet"].wait_ready()
            assert sup.status()["quiet"].state == "up"
            await sup.stop_all()
            nursery.cancel_scope.cancel()


async def test_a_bad_log_path_fails_only_that_service():
    pol = policy(
        {
            "bad": {"command": ["true"], "stdout": "/nonexistent-dir/x.log", **BARE},
            "good": {"command": ["sleep", "1000"], **BARE},
        }
    )
    with trio.fail_after(30):
        async with open_supervisor(pol) as sup:
            status = sup.status()
            assert status["bad"].state == "failed"
            assert "/nonexistent-dir/x.log" in status["bad"].error
            assert status["bad"].restarts == 0  # not retried: it would fail the same way
            assert status["good"].state == "up"


async def test_a_missing_command_fails_at_once_and_is_not_retried():
    pol = policy({"app": {"command": ["/nonexistent/bin/app"], "backoff": FAST, **BARE}})
    async with trio.open_nursery() as nursery:
        sup, events = await supervise(nursery, pol)
        with trio.fail_after(30):
            await sup._start_all()
        status = sup.status()["app"]
        assert status.state == "failed"
        assert "not found" in status.error
        assert len(events.of("spawn_failed")) == 1
        assert events.of("restarting") == []
        await sup.stop_all()
        nursery.cancel_scope.cancel()
    # Every service ended and one failed: the supervisor is done.
    assert sup.finished


async def test_transient_spawn_failures_back_off(monkeypatch):
    def no_descriptors(_spec, **_join):
        raise SpawnError(errno.EMFILE, "clone3: Too many open files", "clone3")

    monkeypatch.setattr(runner_module, "start_process", no_descriptors)
    backoff = {"initial": "10ms", "max": "1s", "factor": 2.0, "jitter": 0.0}
    pol = policy({"app": {"command": ["true"], "backoff": backoff, **BARE}}, max_restarts=100)
    async with trio.open_nursery() as nursery:
        sup, events = await supervise(nursery, pol)
        nursery.start_soon(sup._start_all)
        delays = [e.delay for e in await events.wait("restarting", "app", count=4)][:4]
        assert delays == pytest.approx([0.01, 0.02, 0.04, 0.08])
        await sup.stop_all()
        nursery.cancel_scope.cancel()


async def test_backoff_never_overflows_past_restart_1024():
    pol = policy(
        {"crash": {"command": ["false"], "backoff": {"initial": 0, "max": "1ms"}, **BARE}},
        max_restarts=100000,
    )
    async with trio.open_nursery() as nursery:
        sup, events = await supervise(nursery, pol)
        nursery.start_soon(sup._start_all)
        await events.wait("restarting", "crash")
        with trio.fail_after(120):
            while sup.status()["crash"].restarts <= 1100:
                await events.wait("restarting", "crash", count=len(events.of("restarting")) + 1)
        assert sup.status()["crash"].state != "failed"
        await sup.stop_all()
        nursery.cancel_scope.cancel()


async def test_fail_service_gives_up_on_one_service_and_the_rest_run_on():
    pol = policy(
        {
            "flappy": {"command": ["false"], "backoff": FAST, **BARE},
            "steady": {"command": ["sleep", "1000"], **BARE},
        },
        max_restarts=3,
        within="1m",
        on_give_up="fail-service",
    )
    async with trio.open_nursery() as nursery:
        sup, events = await supervise(nursery, pol)
        nursery.start_soon(sup._start_all)
        [failed] = await events.wait("failed", "flappy")
        assert "gave up" in failed.message
        assert sup.status()["flappy"].state == "failed"
        assert sup.status()["steady"].state == "up"
        assert sup.gave_up is None
        assert not sup.finished
        await sup.stop_all()
        nursery.cancel_scope.cancel()


# --- readiness, reloads, the wait/poll race ---------------------------------------------


async def test_a_dependency_that_fails_before_its_first_ready_releases_its_dependents(tmp_path):
    marker = tmp_path / "tried"
    db = f"if [ -e {marker} ]; then echo ready; exec sleep 1000; fi; touch {marker}; exit 1"
    pol = policy(
        {
            "db": {"command": ["sh", "-c", db], "ready": {"log": "ready"}, "backoff": FAST, **BARE},
            "web": {"command": ["sleep", "1000"], "depends_on": ["db"], **BARE},
        }
    )
    with trio.fail_after(30):
        async with open_supervisor(pol) as sup:
            status = sup.status()
            assert status["db"].restarts == 1
            assert status["web"].state == "up"
            assert status["web"].pid is not None


async def test_two_concurrent_reloads_both_apply():
    first = policy(sleepers(3))
    second = policy(sleepers(3, env={"V": "2"}))
    third = policy(sleepers(2, env={"V": "3"}))
    with trio.fail_after(30):
        async with open_supervisor(first) as sup:
            outcomes = []

            async def reload(pol: Policy) -> None:
                outcomes.append(await sup.reload(pol))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reload, second)
                nursery.start_soon(reload, third)
            assert len(outcomes) == 2
            status = sup.status()
            assert set(status) in ({"s0", "s1"}, {"s0", "s1", "s2"})
            assert all(s.state == "up" for s in status.values())


async def test_wait_after_poll_reaped_returns_the_same_status():
    spec = nsup.ProcessSpec(argv=["sh", "-c", "exit 3"], namespaces=set(), init=False)
    async with nsup.spawn(spec) as proc, trio.open_nursery() as nursery:
        waited = []

        async def waiter() -> None:
            waited.append(await proc.wait())

        nursery.start_soon(waiter)
        await trio.lowlevel.checkpoint()  # the waiter is now parked on the pidfd
        # Block (no checkpoint: the waiter must not run) until it has exited, unreaped.
        os.waitid(os.P_PIDFD, proc.pidfd, os.WEXITED | os.WNOWAIT)  # noqa: ASYNC222
        # poll() reaps under the parked waiter's feet.
        assert proc.poll() == nsup.ExitStatus(code=3)
    assert waited == [nsup.ExitStatus(code=3)]


# --- the tree kill without a PID namespace or a cgroup -------------------------------


@pytest.fixture
def no_cgroup(monkeypatch):
    """As rootless without a delegated cgroup: no child gets one."""
    monkeypatch.setattr(_cgroup, "create", lambda _limits: None)


async def _tree(proc: nsup.Process) -> tuple[int, int]:
    """The command's pid and its background child's, from the command's output."""
    line = (await read_line(proc.stdout)).decode()
    command, daemon = (int(p) for p in line.split())
    return command, daemon


TREE = ["sh", "-c", "sleep 1000 & echo $$ $!; exec sleep 1000"]


@pytest.mark.usefixtures("no_cgroup")
async def test_kill_without_pid_namespace_or_cgroup_kills_the_whole_tree():
    spec = nsup.ProcessSpec(argv=TREE, namespaces=set(), stdout="pipe")
    async with nsup.spawn(spec) as proc:
        command, daemon = await _tree(proc)
        fds = [os.pidfd_open(command), os.pidfd_open(daemon)]
        try:
            proc.kill()
            with trio.fail_after(10):
                for fd in fds:
                    await trio.lowlevel.wait_readable(fd)  # readable: it exited
                status = await proc.wait()
        finally:
            for fd in fds:
                os.close(fd)
    assert status.signal == signal.SIGKILL


@pytest.mark.usefixtures("no_cgroup")
async def test_sigkill_sent_to_the_init_from_outside_takes_the_command_with_it():
    spec = nsup.ProcessSpec(
        argv=["sh", "-c", "echo $$ 0; exec sleep 1000"], namespaces=set(), stdout="pipe"
    )
    async with nsup.spawn(spec) as proc:
        command, _ = await _tree(proc)
        fd = os.pidfd_open(command)
        try:
            os.kill(proc.pid, signal.SIGKILL)  # not through nsup: as the OOM killer would
            with trio.fail_after(10):
                await trio.lowlevel.wait_readable(fd)
        finally:
            os.close(fd)
        await proc.wait()


# --- the zygote -------------------------------------------------------------------


async def _run_true() -> nsup.ExitStatus:
    spec = nsup.ProcessSpec(argv=["true"], namespaces=set(), init=False)
    async with nsup.spawn(spec) as proc:
        return await proc.wait()


async def test_a_killed_zygote_is_replaced_without_failing_the_spawn():
    assert await _run_true() == nsup.ExitStatus(code=0)
    old = _zygote_client.get_zygote()
    await kill_and_wait(old.pid)
    with trio.fail_after(20):
        assert await _run_true() == nsup.ExitStatus(code=0)
    assert _zygote_client.get_zygote() is not old


async def test_a_stopped_zygote_is_replaced_without_failing_the_spawn():
    assert await _run_true() == nsup.ExitStatus(code=0)
    old = _zygote_client.get_zygote()
    os.kill(old.pid, signal.SIGSTOP)
    with trio.fail_after(20):
        assert await _run_true() == nsup.ExitStatus(code=0)
    assert _zygote_client.get_zygote() is not old
    assert old._proc.poll() is not None  # killed and reaped


async def test_a_zygote_that_stops_mid_request_is_bounded_and_replaced(monkeypatch):
    assert await _run_true() == nsup.ExitStatus(code=0)
    old = _zygote_client.get_zygote()
    # Stopped after the check before use: only the round trip's bound catches it.
    monkeypatch.setattr(_zygote_client.Zygote, "usable", lambda self: not self.broken)
    monkeypatch.setattr(_zygote_client, "ROUND_TRIP_TIMEOUT", 0.5)
    os.kill(old.pid, signal.SIGSTOP)
    try:
        with trio.fail_after(20):
            assert await _run_true() == nsup.ExitStatus(code=0)
    finally:
        if old._proc.poll() is None:
            os.kill(old.pid, signal.SIGKILL)
            old._proc.wait()
    assert _zygote_client.get_zygote() is not old


# --- cancellation at any instant ------------------------------------------------------


async def test_open_supervisor_in_an_already_cancelled_scope_returns_and_leaves_nothing():
    with trio.fail_after(30):
        with trio.CancelScope() as scope:
            scope.cancel()
            async with open_supervisor(policy(sleepers(200))):
                pytest.fail("the block must not run")  # pragma: no cover


@pytest.mark.parametrize("seconds", [0.005, 0.05, 0.3])
async def test_open_supervisor_cancelled_early_returns_and_leaves_nothing(seconds):
    with trio.fail_after(60), trio.move_on_after(seconds):
        async with open_supervisor(policy(sleepers(200))):
            await trio.sleep_forever()


async def test_cancelled_during_a_reload_returns_and_leaves_nothing():
    with trio.fail_after(60):
        async with open_supervisor(policy(sleepers(20))) as sup:
            with trio.move_on_after(0.05):
                await sup.reload(policy(sleepers(60, env={"V": "2"})))


async def test_an_error_in_the_supervisor_itself_stops_everything_and_is_raised(monkeypatch):
    async def broken(*_args):
        raise RuntimeError("a bug in a strategy")

    monkeypatch.setattr(Supervisor, "_restart_group", broken)
    pol = policy(
        {
            "crash": {"command": ["sh", "-c", "sleep 0.2; exit 1"], "backoff": FAST, **BARE},
            "other": {"command": ["sleep", "1000"], **BARE},
        },
        strategy="one_for_all",
    )
    with (
        trio.fail_after(30),
        pytest.RaisesGroup(
            pytest.RaisesExc(RuntimeError, match="strategy"), flatten_subgroups=True
        ),
    ):
        async with open_supervisor(pol):
            await trio.sleep_forever()


# --- nsup run ---------------------------------------------------------------------

PR_CAPBSET_DROP = 24
CAP_SYS_RESOURCE = 24


class Run(cmd_run.Run):
    """A real ``nsup run --log-format json``, and a bounded wait for its end."""

    async def wait_until(self, predicate) -> dict:
        with trio.fail_after(60):
            while True:
                record = await self.next_record()
                if predicate(record):
                    return record

    async def finish(self, bound: float = 30) -> int:
        with trio.fail_after(bound):
            await self.drain()
            return await self.proc.wait()


@pytest.fixture
async def nsup_run(tmp_path):
    runs: list[Run] = []

    async def start(
        text: str,
        *,
        argv: list[str] | None = None,
        nofile: int | tuple[int, int] | None = None,
        fixed: bool = True,
    ) -> Run:
        path = tmp_path / "policy.toml"
        path.write_text(text)
        control = tmp_path / f"control-{len(runs)}.sock"

        def limit() -> None:
            if nofile is not None:
                soft_hard = nofile if isinstance(nofile, tuple) else (nofile, nofile)
                resource.setrlimit(resource.RLIMIT_NOFILE, soft_hard)
                if fixed:  # without CAP_SYS_RESOURCE, nsup cannot raise the hard limit
                    _sys.prctl(PR_CAPBSET_DROP, CAP_SYS_RESOURCE)

        proc = await open_nsup_run(path, control, argv=argv or NSUP, preexec_fn=limit)
        run = Run(proc)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.proc.returncode is None:
            run.proc.kill()
        await run.proc.wait()


def toml_sleepers(count: int, version: int = 1) -> str:
    lines = ['[defaults]\nnamespaces = []\ninit = false\nstop = { timeout = "5s" }\n']
    lines += [
        f'[services.s{i}]\ncommand = ["sleep", "1000"]\nenv = {{ V = "{version}" }}\n'
        for i in range(count)
    ]
    return "\n".join(lines)


async def test_sigterm_at_random_moments_of_startup_and_reload_exits_0(nsup_run, tmp_path):
    rng = random.Random(10)  # seeded: a failure can be replayed
    for attempt in range(20):
        run = await nsup_run(toml_sleepers(200))
        await run.wait_until(lambda r: r.get("message", "").startswith("control socket"))
        if attempt % 2:  # during a reload that changes every service
            await run.wait_until(lambda r: r["event"] == "ready")
            (tmp_path / "policy.toml").write_text(toml_sleepers(200, version=2))
            run.proc.send_signal(signal.SIGHUP)
            await run.wait_until(lambda r: r["event"] == "stopping")
        # The first one as soon as the control socket is there (it used to hang for ever).
        await trio.sleep(rng.uniform(0, 0.4) if attempt else 0)
        run.proc.send_signal(signal.SIGTERM)
        assert await run.finish(bound=20) == 0, run.records[-5:]


async def test_a_deeply_nested_policy_on_sighup_is_refused_and_nsup_runs_on(nsup_run, tmp_path):
    run = await nsup_run(toml_sleepers(1))
    await run.wait_until(lambda r: r["event"] == "ready")
    (tmp_path / "policy.toml").write_text("x = " + "[" * 3000 + "]" * 3000 + "\n")
    run.proc.send_signal(signal.SIGHUP)
    refused = await run.wait_until(lambda r: "refused" in r.get("message", ""))
    assert "running policy stays" in refused["message"]
    run.proc.send_signal(signal.SIGTERM)
    assert await run.finish() == 0


async def test_running_out_of_descriptors_is_contained_and_sigterm_still_stops(nsup_run):
    # 300 services, each holding two descriptors once up, under a hard limit of 256.
    text = toml_sleepers(300).replace(
        "init = false\n", 'init = false\nbackoff = { initial = "50ms", max = "200ms" }\n'
    )
    run = await nsup_run("[supervisor]\nmax_restarts = 100000\n" + text, nofile=256)
    short = await run.wait_until(lambda r: "descriptors" in r.get("message", ""))
    assert "RLIMIT_NOFILE is 256" in short["message"], short
    await run.wait_until(lambda r: r["event"] == "spawn_failed")
    await run.wait_until(lambda r: r["event"] == "restarting")
    await run.wait_until(lambda r: r["event"] == "started")  # some start, others wait for fds
    failed = [r for r in run.records if r["event"] == "spawn_failed"]
    assert any("Too many open files" in r["message"] for r in failed), failed[:3]
    run.proc.send_signal(signal.SIGTERM)
    assert await run.finish() == 0
    assert not [r for r in run.records if r["event"] == "failed"]


async def test_a_reload_that_needs_more_descriptors_than_the_limit_says_so(nsup_run, tmp_path):
    # 10 services fit in 400 descriptors (nsup's own and the spawns in flight take about 320).
    run = await nsup_run(toml_sleepers(10), nofile=400)
    await run.wait_until(lambda r: r["event"] == "ready")
    (tmp_path / "policy.toml").write_text(
        "[supervisor]\nmax_restarts = 100000\n" + toml_sleepers(300)
    )
    run.proc.send_signal(signal.SIGHUP)
    short = await run.wait_until(lambda r: "descriptors" in r.get("message", ""))
    assert "this policy needs about" in short["message"], short
    assert "RLIMIT_NOFILE is 400" in short["message"], short
    run.proc.send_signal(signal.SIGTERM)
    assert await run.finish() == 0
    said = [r["message"] for r in run.records if "descriptors" in r.get("message", "")]
    assert 1 == len(said), said  # not at start: 10 services fit


async def test_services_get_the_descriptor_limit_nsup_was_started_with(nsup_run, tmp_path):
    # nsup raises its own soft limit to the hard one to hold every service's pipes; its
    # children get back what it was started with (over 1024, select() breaks), or their own.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    script = f"echo $(ulimit -Sn) $(ulimit -Hn) > {tmp_path}/$0; echo written; exec sleep 1000"
    services = {"plain": "", "init": "init = true", "own": "limits = { nofile = 300 }"}
    text = "".join(
        f'[services.{name}]\ncommand = ["sh", "-c", "{script}", "{name}"]\n'
        f'ready = {{ log = "written" }}\n{extra}\n'
        for name, extra in services.items()
    )
    run = await nsup_run(text, nofile=(512, hard))
    for _ in services:
        await run.wait_until(lambda r: r["event"] == "ready")
    limits = await trio.Path(f"/proc/{run.proc.pid}/limits").read_text()
    own = next(line.split()[3:5] for line in limits.splitlines() if "open files" in line)
    assert [str(hard), str(hard)] == own  # nsup's own, raised
    written = {name: (tmp_path / name).read_text().split() for name in services}
    assert {
        "plain": ["512", str(hard)],
        "init": ["512", str(hard)],
        "own": ["300", "300"],
    } == written
    run.proc.send_signal(signal.SIGTERM)
    assert await run.finish() == 0


def _may_raise_hard_limits() -> bool:
    """CAP_SYS_RESOURCE is effective (a container may withhold it from root)."""
    with open("/proc/self/status", encoding="ascii") as f:
        effective = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    return bool(effective & (1 << CAP_SYS_RESOURCE))


@pytest.mark.skipif(
    not _may_raise_hard_limits(), reason="no CAP_SYS_RESOURCE here: a hard limit cannot be raised"
)
async def test_nsup_run_raises_a_hard_descriptor_limit_too_low_for_its_policy(nsup_run):
    """With CAP_SYS_RESOURCE, a hard limit below what the policy needs is raised: all start."""
    run = await nsup_run(toml_sleepers(300), nofile=256, fixed=False)
    ready = set()
    while len(ready) < 300:
        record = await run.wait_until(lambda r: r["event"] in ("ready", "spawn_failed"))
        assert record["event"] == "ready", record
        ready.add(record["service"])
    assert not [r for r in run.records if "descriptors" in r.get("message", "")]
    run.proc.send_signal(signal.SIGTERM)
    assert await run.finish() == 0


async def test_an_internal_error_in_nsup_run_stops_everything_and_exits_70(nsup_run):
    boom = (
        "import sys; from nsup._engine.supervisor import Supervisor\n"
        "async def broken(self, failed, group): raise RuntimeError('a bug in a strategy')\n"
        "Supervisor._restart_group = broken\n"
        "from nsup._cli import main; sys.exit(main())\n"
    )
    text = (
        '[supervisor]\nstrategy = "one_for_all"\n'
        '[services.crash]\ncommand = ["sh", "-c", "sleep 0.3; exit 1"]\nnamespaces = []\n'
        '[services.other]\ncommand = ["sleep", "1000"]\nnamespaces = []\n'
    )
    run = await nsup_run(text, argv=[sys.executable, "-c", boom])
    assert await run.finish() == 70
    text_lines = " ".join(r.get("message", "") for r in run.records)
    assert "RuntimeError: a bug in a strategy" in text_lines
    assert any("internal error" in r.get("message", "") for r in run.records)


ROOTLESS_TREE_KILL = """
import os, trio, nsup

async def main():
    spec = nsup.ProcessSpec(argv={argv!r}, namespaces=set(), stdout="pipe")
    async with nsup.spawn(spec) as proc:
        assert proc.statistics().pids is None, "this test needs a child without a cgroup"
        line = b""
        while not line.endswith(b"\\n"):
            line += await proc.stdout.receive_some(1)
        fds = [os.pidfd_open(int(pid)) for pid in line.split()]
        proc.kill()
        with trio.fail_after(10):
            for fd in fds:
                await trio.lowlevel.wait_readable(fd)
        print("tree gone:", await proc.wait())

trio.run(main)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to uid 65534 needs root")
@pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason=f"{SYSTEM_PYTHON} is needed")
def test_rootless_kill_without_a_cgroup_kills_the_whole_tree(public_path):  # noqa: F811 - the fixture
    result = run_as_nobody(public_path, "-c", ROOTLESS_TREE_KILL.format(argv=TREE))
    assert result.returncode == 0, result.stderr
    assert "tree gone: killed by SIGKILL" in result.stdout
