"""``nsup run`` as operators use it: signals, reload, exit codes, and dying without leaks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import trio
from helpers import NSUP, open_nsup_run


class Run:
    """A real ``nsup run --log-format json`` with its event stream parsed."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.records: list[dict] = []
        self._buffer = b""

    async def next_record(self) -> dict:
        while b"\n" not in self._buffer:
            chunk = await self.proc.stderr.receive_some()
            if not chunk:
                raise EOFError(f"nsup run ended; records so far: {self.records}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            record = json.loads(line)
        except ValueError:  # a traceback after an internal error is plain text
            record = {"event": "text", "message": line.decode(errors="replace")}
        self.records.append(record)
        return record

    async def wait_for(self, event: str, service: str | None = None, **fields) -> dict:
        with trio.fail_after(20):
            while True:
                record = await self.next_record()
                wanted = record["event"] == event and (
                    service is None or record.get("service") == service
                )
                if wanted and all(record.get(k) == v for k, v in fields.items()):
                    return record

    async def drain(self) -> None:
        try:
            while True:
                await self.next_record()
        except EOFError:
            pass

    def of(self, event: str, service: str | None = None) -> list[dict]:
        return [
            r
            for r in self.records
            if r["event"] == event and (service is None or r.get("service") == service)
        ]


@pytest.fixture
async def nsup_run(tmp_path):
    runs: list[Run] = []

    async def start(policy_text: str) -> tuple[Run, Path]:
        path = tmp_path / "policy.toml"
        path.write_text(policy_text)
        proc = await open_nsup_run(path, tmp_path / "control.sock")
        run = Run(proc)
        runs.append(run)
        return run, path

    yield start
    for run in runs:
        if run.proc.returncode is None:
            run.proc.kill()
        await run.proc.wait()


TWO = """
[services.db]
command = ["sh", "-c", "echo ready; exec sleep 100"]
ready = { log = "ready" }

[services.web]
command = ["sleep", "100"]
depends_on = ["db"]
"""


async def test_sigterm_stops_dependents_first_and_exits_0(nsup_run):
    run, _ = await nsup_run(TWO)
    await run.wait_for("ready", "web")
    run.proc.send_signal(signal.SIGTERM)
    await run.drain()
    assert await run.proc.wait() == 0
    order = [
        (r["event"], r.get("service")) for r in run.records if r["event"] in ("stopping", "exited")
    ]
    assert order == [("stopping", "web"), ("exited", "web"), ("stopping", "db"), ("exited", "db")]


def reloaded(run: Run) -> list[dict]:
    return [r for r in run.of("log") if r["message"].startswith("reloaded")]


async def test_sighup_reload_touches_only_what_changed(nsup_run):
    run, path = await nsup_run(TWO)
    await run.wait_for("ready", "web")
    path.write_text(
        TWO.replace('["sleep", "100"]', '["sleep", "101"]')
        + '\n[services.extra]\ncommand = ["sleep", "100"]\n'
    )
    run.proc.send_signal(signal.SIGHUP)
    # The event lines and nsup's own log lines come from different tasks: take either order.
    with trio.fail_after(20):
        while not (run.of("ready", "extra") and reloaded(run)):
            await run.next_record()
    record = reloaded(run)[0]
    assert "changed: web" in record["message"]
    assert "added: extra" in record["message"]
    assert len(run.of("started", "db")) == 1  # untouched
    assert len(run.of("started", "web")) == 2
    run.proc.send_signal(signal.SIGTERM)
    await run.drain()
    assert await run.proc.wait() == 0


async def test_reload_says_which_supervisor_keys_it_cannot_apply(nsup_run, tmp_path):
    run, path = await nsup_run(TWO)
    await run.wait_for("ready", "web")
    path.write_text(TWO + f'[supervisor]\ncontrol = "{tmp_path}/other.sock"\n')
    run.proc.send_signal(signal.SIGHUP)
    with trio.fail_after(20):
        while not reloaded(run):
            await run.next_record()
    assert reloaded(run)[0]["message"] == (
        f"reloaded {path} (nothing changed; [supervisor] control changed, which takes effect "
        "only when nsup starts)"
    )
    run.proc.send_signal(signal.SIGTERM)
    await run.drain()
    assert await run.proc.wait() == 0


async def test_run_warns_as_check_does(nsup_run):
    run, path = await nsup_run(
        '[services.once]\ncommand = ["true"]\nnamespaces = ["pid"]\nrestart = "never"\n'
    )
    await run.drain()
    assert await run.proc.wait() == 0
    assert run.of("log")[0]["message"] == (
        f"warning: {path}:3: 'services.once.namespaces' has 'pid' without 'mount', so the "
        "service's /proc still shows the host's processes; add 'mount' and nsup mounts a /proc "
        "of its own"
    )
    assert run.of("log")[1]["message"].startswith(f"running {path}: 1 service, pid ")


async def test_invalid_reload_keeps_the_running_policy(nsup_run):
    run, path = await nsup_run(TWO)
    await run.wait_for("ready", "web")
    path.write_text("[services.web]\ncommand = 42\n")
    run.proc.send_signal(signal.SIGHUP)
    record = await run.wait_for("log")
    while "refused" not in record["message"]:
        record = await run.wait_for("log")
    assert "reload of" in record["message"]
    assert "the running policy stays" in record["message"]
    assert "services.web.command" in record["message"]
    run.proc.send_signal(signal.SIGTERM)
    await run.drain()
    assert await run.proc.wait() == 0
    assert run.of("stopping", "db")
    assert len(run.of("started", "db")) == 1


async def test_gives_up_with_exit_1_naming_the_service(nsup_run):
    run, _ = await nsup_run(
        '[supervisor]\nmax_restarts = 2\nwithin = "10s"\n[services.crash]\ncommand = ["false"]\n'
        'backoff = { initial = "10ms", jitter = 0 }\n[services.fine]\ncommand = ["sleep", "100"]\n'
    )
    await run.drain()
    assert await run.proc.wait() == 1
    assert run.of("gave_up", "crash")
    assert run.records[-1]["service"] == "crash"
    assert run.records[-1]["message"].startswith(
        "gave up: 'crash' made more than 2 restarts within 10s"
    )
    assert run.of("exited", "fine")


async def test_exits_0_when_every_service_ended(nsup_run):
    run, _ = await nsup_run(
        '[services.once]\ncommand = ["true"]\n[services.twice]\ncommand = ["sh", "-c", "exit 0"]\n'
    )
    await run.drain()
    assert await run.proc.wait() == 0
    assert run.records[-1]["message"] == "every service is down; exiting"


def test_invalid_policy_exits_2_listing_every_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[services.web]\ncommand = 42\nrestart = "sometimes"\n')
    result = subprocess.run([*NSUP, "run", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert "services.web.command" in lines[0]
    assert "services.web.restart" in lines[1]


def _descendants(pid: int) -> list[int]:
    found = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            for child in (task / "children").read_text().split():
                found.append(int(child))
                todo.append(int(child))
    return found


@pytest.mark.parametrize(
    "namespaces", ['["pid", "mount"]', "[]"], ids=["pid-namespace", "no-namespace"]
)
async def test_sigkill_of_nsup_leaves_no_descendant(nsup_run, namespaces):
    run, _ = await nsup_run(
        f"[defaults]\nnamespaces = {namespaces}\n"
        '[services.tree]\ncommand = ["sh", "-c", "sleep 100 & sleep 100 & echo up; wait"]\nready = { log = "up" }\n'
        '[services.daemon]\ncommand = ["sh", "-c", "(setsid sleep 100 &); echo up; exec sleep 100"]\nready = { log = "up" }\n'
    )
    with trio.fail_after(20):
        while not (run.of("ready", "tree") and run.of("ready", "daemon")):
            await run.next_record()
    pids = _descendants(run.proc.pid)
    assert len(pids) >= 6
    pidfds = [os.pidfd_open(pid) for pid in pids]
    try:
        run.proc.send_signal(signal.SIGKILL)
        with trio.fail_after(10):
            for fd in pidfds:
                await trio.lowlevel.wait_readable(fd)
    finally:
        for fd in pidfds:
            os.close(fd)
    await run.proc.wait()
