"""The command line's own surface: ``--version``, what each command imports, and a closed stdout.

Start-up time is part of the interface (``nsup status`` in a shell loop): no
command but ``nsup run`` may load trio, and ``--help`` and the control commands
not attrs either.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

import pytest
from helpers import NSUP

import nsup
from nsup._cli import RUN_HELP
from nsup._cli.control import COMMANDS

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

COUNT = 5000


def _reply(cmd: str) -> bytes:
    """The fake supervisor's answer to *cmd*: a status of 5,000 services, or 5,000 events."""
    if cmd == "events":
        events = [
            {"v": 1, "time": 0.0, "service": f"s{i:05d}", "event": "started", "pid": 100 + i}
            for i in range(COUNT)
        ]
        return b"".join(json.dumps(e).encode() + b"\n" for e in [{"ok": True}, *events])
    services = [
        {"name": f"s{i:05d}", "state": "up", "pid": 100 + i, "uptime": 3.0, "restarts": 0}
        for i in range(COUNT)
    ]
    return json.dumps({"ok": True, "supervisor": {}, "services": services}).encode() + b"\n"


@pytest.fixture
def fake_supervisor(tmp_path: Path) -> Iterator[str]:
    """A control socket that answers ``status`` and ``events`` with far more than a pipe holds."""
    path = str(tmp_path / "fake.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    listener.settimeout(30)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                request = json.loads(conn.makefile("rb").readline() or b"{}")
                try:
                    conn.sendall(_reply(request.get("cmd", "")))
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(timeout=30)


def _imported(args: list[str], **kwargs: object) -> set[str]:
    """Run ``nsup ARGS`` with ``-X importtime``; return the top-level packages it imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "nsup", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )
    assert result.returncode == 0, result.stderr
    return {
        line.rpartition("|")[2].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }


def test_help_lists_run_without_loading_it():
    result = subprocess.run([*NSUP, "--help"], capture_output=True, text=True, check=True)
    assert RUN_HELP in result.stdout
    for command in ("check", "exec", "status", "events"):
        assert f"    {command}" in result.stdout


def test_run_help_is_the_same_line_run_registers():
    from nsup._cli import build_parser  # noqa: PLC0415 - the full parser imports run

    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    helps = {c.dest: c.help for c in action._choices_actions}  # type: ignore[attr-defined]
    assert helps["run"] == RUN_HELP


@pytest.mark.parametrize(
    "args",
    [["--help"], ["exec", "--help"], ["check", "--help"], *([c, "--help"] for c in COMMANDS)],
)
def test_help_imports_neither_trio_nor_attrs(args):
    imported = _imported(args)
    assert "nsup" in imported
    assert {"trio", "attrs"} & imported == set()


def test_check_imports_no_trio(tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text('[services.web]\ncommand = ["sleep", "1"]\n')
    imported = _imported(["check", str(policy)])
    assert "nsup" in imported
    assert "trio" not in imported


def test_exec_imports_neither_trio_nor_attrs_nor_typing():
    imported = _imported(["exec", "--", "true"])  # the direct way: a clone from this process
    assert "nsup" in imported
    assert {"trio", "attrs", "typing", "shutil"} & imported == set()


def test_status_imports_neither_trio_nor_attrs(fake_supervisor):
    imported = _imported(["status", "--control", fake_supervisor])
    assert {"trio", "attrs", "shutil"} & imported == set()  # shutil: argparse's default width


def test_version():
    result = subprocess.run([*NSUP, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout == f"nsup {nsup.__version__}\n"


def test_the_installed_version_is_nsups_own():
    from importlib.metadata import version  # noqa: PLC0415 - only this test needs it

    assert version("nsup") == nsup.__version__


def _first_line_then_close(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``nsup ARGS``, read one line of its output, close the pipe (``| head -1``), let it end."""
    with subprocess.Popen(
        [*NSUP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        stderr = proc.stderr.read()
        code = proc.wait(timeout=60)
    return subprocess.CompletedProcess(args, code, first, stderr)


def test_status_exits_quietly_when_its_output_is_closed(fake_supervisor):
    result = _first_line_then_close(["status", "--control", fake_supervisor])
    assert result.stdout.split()[0] == "NAME"
    assert (result.returncode, result.stderr) == (0, "")


def test_events_exits_quietly_when_its_output_is_closed(fake_supervisor):
    result = _first_line_then_close(["events", "--control", fake_supervisor])
    assert "s00000: started (pid 100)" in result.stdout
    assert (result.returncode, result.stderr) == (0, "")


def test_check_exits_quietly_when_its_output_is_closed(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text("".join(f'[services.s{i:05d}]\ncommand = ["true"]\n' for i in range(COUNT)))
    result = _first_line_then_close(["check", str(policy)])
    assert "s00000" in result.stdout
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize(
    "args", [["--help"], ["exec", "--help"], ["check", "--help"], ["--version"]]
)
def test_help_exits_quietly_when_its_output_is_closed(args):
    # The read end is closed before nsup writes: its first write fails.
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as out:
        result = subprocess.run(
            [*NSUP, *args], stdout=out, stderr=subprocess.PIPE, text=True, timeout=60, check=False
        )
    assert (result.returncode, result.stderr) == (0, "")


def test_control_commands_lists_what_control_registers():
    import argparse  # noqa: PLC0415

    from nsup._cli import control  # noqa: PLC0415

    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    control.register(subparsers)
    assert tuple(subparsers.choices) == control.COMMANDS


@pytest.mark.parametrize(
    ("args", "loaded"),
    [
        (["exec", "--", "true"], {"exec", "exec_identity"}),
        (["check", "/no/such/policy.toml"], {"check"}),
        (["status", "--control", "/no/such.sock"], {"control"}),
        (["--version"], set()),
    ],
)
def test_a_command_loads_only_its_own_module(args, loaded):
    code = (
        "import sys; from nsup._cli import main\n"
        "try:\n    main(sys.argv[1:])\nfinally:\n"
        "    print('MODULES', *sorted(m[10:] for m in sys.modules if m.startswith('nsup._cli.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False, timeout=60
    )
    last = result.stdout.splitlines()[-1].split()
    assert (last[0], set(last[1:])) == ("MODULES", loaded)
