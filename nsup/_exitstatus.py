"""How a child ended, kept structured until the command line needs a number."""

from __future__ import annotations

import os
import signal as _signal
from typing import final

import attrs

__all__ = ["ExitStatus"]

_CLD_EXITED = 1


@final
@attrs.frozen
class ExitStatus:
    """How a process ended: exactly one of *code* and *signal* is set.

    Attributes:
        code: the exit code, when it exited.
        signal: the signal number, when a signal killed it.
        core_dumped: it dumped core when killed.
        oom_killed: the kernel's OOM killer ended it (its cgroup's memory
            limit, or the machine's memory, ran out).

    """

    code: int | None = None
    signal: int | None = None
    core_dumped: bool = False
    oom_killed: bool = False

    def __attrs_post_init__(self) -> None:
        """Check that exactly one of code and signal is set."""
        if (self.code is None) == (self.signal is None):
            raise ValueError(
                f"ExitStatus needs exactly one of code and signal (got {self.code!r}, {self.signal!r})"
            )

    @classmethod
    def from_wait_status(cls, status: int) -> ExitStatus:
        """Decode a ``waitpid`` status word."""
        if os.WIFSIGNALED(status):
            return cls(signal=os.WTERMSIG(status), core_dumped=os.WCOREDUMP(status))
        return cls(code=os.WEXITSTATUS(status))

    @classmethod
    def from_siginfo(cls, si_code: int, si_status: int) -> ExitStatus:
        """Decode ``waitid``'s ``si_code``/``si_status`` (CLD_EXITED, CLD_KILLED, CLD_DUMPED)."""
        if si_code == _CLD_EXITED:
            return cls(code=si_status)
        return cls(signal=si_status, core_dumped=si_code == 3)  # CLD_DUMPED

    @property
    def exit_code(self) -> int:
        """The shell's number for it: the code, or 128+N for death by signal N."""
        return self.code if self.code is not None else 128 + (self.signal or 0)

    @property
    def success(self) -> bool:
        """True when it exited with code 0."""
        return self.code == 0

    def __str__(self) -> str:
        """Say it as a person would: ``exited with code 3``, ``killed by SIGKILL``."""
        if self.signal is None:
            return f"exited with code {self.code}"
        try:
            name = _signal.Signals(self.signal).name
        except ValueError:
            name = f"signal {self.signal}"
        note = " (core dumped)" if self.core_dumped else ""
        if self.oom_killed:
            note += " (out of memory)"
        return f"killed by {name}{note}"
