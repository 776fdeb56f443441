"""Small helpers shared by the tests: run a child and collect what it printed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import trio
import trio.testing

import nsup
from nsup._engine.supervisor import Supervisor

# A Python every user can run (root's pyenv lives in a private home), started
# bare: used for children that need a little logic, such as signal handlers.
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

# The command line, as the tests' venv runs it.
NSUP = [sys.executable, "-m", "nsup"]


def nsup_exec(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``nsup exec ARGS`` (bounded: 60 s); return what it printed and its exit code."""
    return subprocess.run(
        [*NSUP, "exec", *args], capture_output=True, text=True, timeout=60, check=False, **kwargs
    )


async def open_nsup_run(
    policy: os.PathLike[str], control: os.PathLike[str], *, argv: list[str] = NSUP, **kwargs: Any
) -> trio.Process:
    """Start ``nsup run POLICY --log-format json --control CONTROL``: its events on stderr (a pipe)."""
    return await trio.lowlevel.open_process(
        [*argv, "run", str(policy), "--log-format", "json", "--control", str(control)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        **kwargs,
    )


async def kill_and_wait(pid: int) -> None:
    """SIGKILL *pid* (a zygote, say) and return once it has died (its pidfd is readable)."""
    fd = os.pidfd_open(pid)
    try:
        os.kill(pid, signal.SIGKILL)
        with trio.fail_after(10):
            await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


async def read_all(stream: trio.abc.ReceiveStream | None) -> bytes:
    """Read *stream* to EOF."""
    assert stream is not None
    chunks = []
    while chunk := await stream.receive_some():
        chunks.append(chunk)
    return b"".join(chunks)


async def read_line(stream: trio.abc.ReceiveStream | None) -> bytes:
    """Read one line (up to and without the newline), byte by byte, so nothing after it is taken."""
    assert stream is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            break
        line += chunk
    return line.rstrip(b"\n")


async def run(argv: list[str], **kwargs: Any) -> tuple[nsup.ExitStatus, str]:
    """Spawn *argv* with ``stdout="pipe"``; return its status and its stdout text."""
    spec = nsup.ProcessSpec(argv=argv, stdout="pipe", **kwargs)
    async with nsup.spawn(spec) as proc:
        out = await read_all(proc.stdout)
        status = await proc.wait()
    return status, out.decode()


async def run_once(policy_dict: dict, view: Any = None) -> list:
    """Run each service of the policy once (restart never) until all ended; return the events.

    With a *view* (an ``output.PrefixView``), its writer runs too and is flushed
    before returning; the output pipes are read to EOF either way.
    """
    pol = nsup.Policy.from_dict(policy_dict)
    names = set(pol.services)
    events = []
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        sup = Supervisor._create(pol, nursery, view)
        if view is not None:
            nursery.start_soon(view.writer.run)

        async def collect() -> None:
            async with sup.events() as subscription:
                async for event in subscription:
                    events.append(event)
                    if event.kind in {"exited", "spawn_failed"}:
                        names.discard(event.service)
                        if not names:
                            done.set()
                            return

        nursery.start_soon(collect)
        await trio.testing.wait_all_tasks_blocked()  # subscribed before the first event
        await sup._start_all()
        with trio.fail_after(120):
            await done.wait()
        await sup.stop_all()  # waits for the output pipes to reach EOF
        if view is not None:
            with trio.fail_after(10):
                await view.writer.flush()
        await sup._close_output()
        nursery.cancel_scope.cancel()
    return events


class Recorder:
    """Collects a supervisor's events; lets a test wait for one without sleeping."""

    def __init__(self) -> None:
        self.events: list = []
        self._changed = trio.Event()

    async def run(self, sup, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        events = sup.events()
        task_status.started()
        async for event in events:
            self.events.append(event)
            self._changed.set()
            self._changed = trio.Event()

    def of(self, kind: str, service: str | None = None) -> list:
        return [
            e for e in self.events if e.kind == kind and (service is None or e.service == service)
        ]

    async def wait(self, kind: str, service: str | None = None, count: int = 1) -> list:
        with trio.fail_after(20):
            while len(self.of(kind, service)) < count:
                await self._changed.wait()
        return self.of(kind, service)
