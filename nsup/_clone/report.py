"""Reading the report pipe: what ``child.py`` and ``init.py`` write on it, line by line.

- ``E<stage>:<errno>``: the set-up (or init's start of the command) failed at *stage*;
- ``S<pid>``: init started the command, which is *pid*;
- ``X<status>``: the command ended with wait status *status* (init reports it
  before its namespace is torn down).

A child without init writes nothing when its exec succeeds: the pipe is
close-on-exec, so EOF without an ``E`` line means the command runs.
"""

from __future__ import annotations

__all__ = ["command_status", "start_verdict"]


def start_verdict(report: bytes) -> tuple[str, int] | int | None:
    """Return the first ``E`` or ``S`` line of *report*: ``(stage, errno)``, the command's pid, or None (neither yet)."""
    for line in report.split(b"\n"):
        if line.startswith(b"E"):
            stage, _, err = line[1:].decode().rpartition(":")
            return stage, int(err)
        if line.startswith(b"S"):
            return int(line[1:])
    return None


def command_status(report: bytes) -> int | None:
    """Return the command's wait status from init's ``X`` line, or None if it has not arrived."""
    for line in report.split(b"\n"):
        if line.startswith(b"X"):
            return int(line[1:])
    return None
