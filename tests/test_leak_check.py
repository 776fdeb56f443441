"""The suite's own leak check: it finds marked strays, and never the processes running the suite."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ancestors, marked_processes


def test_ancestors_lead_to_pid_1():
    mine = ancestors()
    assert os.getppid() in mine
    assert 1 in mine or os.getppid() == 0


def test_a_marked_ancestor_is_not_a_leak():
    """Run a child pytest-like process under a marked parent: the child must not count its parent."""
    program = (
        "import os, sys; sys.path.insert(0, sys.argv[1]);"
        "from conftest import marked_processes;"
        "print(os.getppid() in marked_processes())"
    )
    tests = os.path.dirname(__file__)
    # The shell is the marked ancestor (the environment carries the marker), as a
    # `timeout` wrapper around pytest would be.
    out = subprocess.run(
        ["sh", "-c", f'"{sys.executable}" -c "$0" "$1"; :', program, tests],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert ["False"] == out


def test_a_marked_stray_is_found():
    with subprocess.Popen(["sleep", "100"]) as stray:
        try:
            assert stray.pid in marked_processes()
        finally:
            stray.kill()
