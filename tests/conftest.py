"""Shared test fixtures: a leak check that finds every process the suite started.

Every process a test starts inherits ``NSUP_TEST_MARKER`` from this process's
environment (unless a test gives it another environment on purpose, which
then passes ``marker_env()``).  After each test, and at the end of the
session, any live process other than this one and its zygotes that carries
the marker is a leak: the test fails and the leaked processes are killed by
pid, so one leak does not cascade into later tests.  The processes that run
the suite (``.ci/run`` sets the marker before it starts pytest, and a
``timeout`` wrapper inherits it) are this process's ancestors and never count.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest

from nsup import _zygote_client

# .ci/run sets the marker itself, so that it can look for leaks once pytest is gone.
MARKER = f"NSUP_TEST_MARKER={os.environ.get('NSUP_TEST_MARKER') or uuid.uuid4().hex}"
os.environ["NSUP_TEST_MARKER"] = MARKER.partition("=")[2]


def marker_env(**extra: str) -> dict[str, str]:
    """A minimal environment for a child that still carries the leak marker."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "NSUP_TEST_MARKER": os.environ["NSUP_TEST_MARKER"],
    }
    env.update(extra)
    return env


def ancestors(pid: int | str = "self") -> set[int]:
    """The pids of *pid*'s parent, its parent, and so on up to PID 1."""
    found: set[int] = set()
    while True:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return found
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid <= 0 or ppid in found:
            return found
        found.add(ppid)
        pid = ppid


def _ours() -> set[int]:
    """This process, its zygotes, and whatever runs the suite (a ``timeout`` wrapper carries the marker too)."""
    exempt = {os.getpid(), *ancestors()}
    exempt.update(z._proc.pid for z in _zygote_client._zygotes.values())
    return exempt


def marked_processes() -> dict[int, str]:
    """Live processes carrying this session's marker, except us and our zygotes."""
    found: dict[int, str] = {}
    needle = MARKER.encode() + b"\0"
    exempt = _ours()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exempt:
            continue
        try:
            environ = (entry / "environ").read_bytes()
            if needle not in environ:
                continue
            stat = (entry / "stat").read_text()
            if stat.rpartition(")")[2].split()[0] == "Z":
                continue  # a zombie holds no resources; its parent's test reaps it
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        found[int(entry.name)] = cmdline.strip()
    return found


def _kill_all(pids: dict[int, str]) -> None:
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        finally:
            os.close(fd)


@pytest.fixture(autouse=True)
def _no_leaks():
    yield
    leaked = marked_processes()
    if leaked:
        _kill_all(leaked)
        pytest.fail(f"the test left processes running: {leaked}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run if anything the suite started is still alive at the very end."""
    _zygote_client._close_all()
    leaked = marked_processes()
    if leaked:
        _kill_all(leaked)
        session.exitstatus = 1
        print(f"\nnsup tests: processes left running at the end: {leaked}")  # noqa: T201
