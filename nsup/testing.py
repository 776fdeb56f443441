r"""Helpers for tests that run workers: :class:`Worker` and :class:`NsupLeakWarning`.

The ``nsup_spawn`` fixture (see :mod:`nsup.pytest_plugin`) returns a
:class:`Worker`: the started :class:`nsup.Process` plus what a test needs
to talk to it.  Its output is read in the background from the moment it
starts, so a worker never blocks on a full pipe, and everything it printed
is at hand for assertions and failure messages::

    async def test_echo(nsup_spawn):
        worker = await nsup_spawn(["python3", "-u", "echo.py"], namespaces=["pid", "net"])
        port = int((await worker.expect_line(r"listening on (\d+)")).group(1))
        await worker.send("quit\n")
        await worker.expect_exit(code=0)

Every failed expectation raises :class:`AssertionError` naming the command,
its pid, how it stands (running, or how it ended) and its last lines of
output, so the failure report says what happened without a rerun.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeAlias, final

import trio

from ._engine.supervisor import Supervisor
from ._exitstatus import ExitStatus
from ._util import NoPublicConstructor

if TYPE_CHECKING:
    from ._cgroup import CgroupStatistics
    from ._process import Process
    from ._spec import ProcessSpec

__all__ = ["NsupLeakWarning", "SpawnFixture", "SupervisorFixture", "Worker"]

TAIL = 20  # lines of output quoted in a failure message
DRAIN = 1.0  # seconds to wait for output to reach EOF once a worker has exited


SpawnFixture: TypeAlias = Callable[..., Awaitable["Worker"]]
"""The type of the ``nsup_spawn`` fixture, for annotating tests."""

SupervisorFixture: TypeAlias = Callable[..., Awaitable[Supervisor]]
"""The type of the ``nsup_supervisor`` fixture, for annotating tests."""


class NsupLeakWarning(UserWarning):
    """A test left a process behind; given instead of an error with ``--nsup-leaks=warn``.

    The process has already been stopped (and killed if it had to be) when
    this is reported.
    """


@final
class Worker(metaclass=NoPublicConstructor):
    """A worker started by the ``nsup_spawn`` fixture: a :class:`nsup.Process` with test helpers.

    The process's own API is forwarded (``pid``, ``pidfd``, ``command_pid``,
    ``spec``, ``status``, ``send_signal()``, ``terminate()``, ``kill()``,
    ``poll()``, ``wait()``, ``stop()``, ``statistics()``); the handle itself
    is ``worker.process``.
    Captured streams are read by the harness: use :attr:`output`,
    :attr:`lines` and :meth:`expect_line` rather than
    ``worker.process.stdout``.

    Attributes:
        process: the :class:`nsup.Process`.

    """

    _made_by = "the nsup_spawn fixture"

    def __init__(self, process: Process, streams: list[trio.abc.ReceiveStream]) -> None:
        """Wrap *process*; the harness reads *streams* into the output buffers."""
        self.process = process
        self._streams = streams
        self._captured = bool(streams)
        self._open = len(streams)
        self._text: list[str] = []
        self._lines: list[str] = []
        self._partial: dict[int, bytes] = {}
        self._cursor = 0
        self._changed = trio.Event()

    def __repr__(self) -> str:
        """Show the process."""
        return f"<nsup.testing.Worker {self.process!r}>"

    # --- the process's API ----------------------------------------------------

    @property
    def pid(self) -> int:
        """The worker's pid (with nsup's init, the init's)."""
        return self.process.pid

    @property
    def pidfd(self) -> int:
        """The worker's pidfd."""
        return self.process.pidfd

    @property
    def command_pid(self) -> int | None:
        """With nsup's init, the command's pid inside its PID namespace; else None."""
        return self.process.command_pid

    @property
    def spec(self) -> ProcessSpec:
        """The spec it was started from (with the harness's marker in ``env``)."""
        return self.process.spec

    @property
    def status(self) -> ExitStatus | None:
        """How it ended, once reaped; else None."""
        return self.process.status

    def send_signal(self, sig: int) -> None:
        """Send *sig* through the pidfd (see :meth:`nsup.Process.send_signal`)."""
        self.process.send_signal(sig)

    def terminate(self) -> None:
        """Send SIGTERM, and return at once (see :meth:`nsup.Process.terminate`)."""
        self.process.terminate()

    def kill(self) -> None:
        """Send SIGKILL (see :meth:`nsup.Process.kill`)."""
        self.process.kill()

    async def stop(self, grace: float | None = None) -> ExitStatus:
        """Stop the worker and wait until it is reaped (see :meth:`nsup.Process.stop`)."""
        return await self.process.stop(grace)

    def poll(self) -> ExitStatus | None:
        """Reap the worker if it has exited, without blocking."""
        return self.process.poll()

    async def wait(self) -> ExitStatus:
        """Wait until the worker exits and return how it ended."""
        return await self.process.wait()

    def statistics(self) -> CgroupStatistics:
        """What the worker's cgroup has counted (see :meth:`nsup.Process.statistics`)."""
        return self.process.statistics()

    # --- output -----------------------------------------------------------------

    @property
    def output(self) -> str:
        """Everything captured so far, stdout and stderr as they arrived."""
        return "".join(self._text)

    @property
    def lines(self) -> list[str]:
        """The complete lines captured so far (a partial last line counts once output ends)."""
        return list(self._lines)

    async def _capture(self, stream: trio.abc.ReceiveStream) -> None:
        """Read *stream* to EOF into the buffers (run by the harness)."""
        key = id(stream)
        self._partial[key] = b""
        try:
            while chunk := await stream.receive_some(65536):
                self._take(key, bytes(chunk))
        except trio.ClosedResourceError:
            pass
        finally:
            rest = self._partial.pop(key)
            if rest:
                self._text.append(rest.decode("utf-8", "replace"))
                self._lines.append(rest.decode("utf-8", "replace"))
            self._open -= 1
            self._notify()

    def _take(self, key: int, chunk: bytes) -> None:
        self._text.append(chunk.decode("utf-8", "replace"))
        pending = self._partial[key] + chunk
        *complete, self._partial[key] = pending.split(b"\n")
        self._lines.extend(line.decode("utf-8", "replace") for line in complete)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_output_closed(self, limit: float = DRAIN) -> bool:
        """Wait up to *limit* seconds until every captured stream reached EOF; return whether it did.

        A descendant that outlives the worker may keep the output open.
        """
        with trio.move_on_after(limit):
            while self._open:
                await self._changed.wait()
        await trio.lowlevel.checkpoint()
        return not self._open

    def _need_capture(self, what: str) -> None:
        if not self._captured:
            raise ValueError(
                f"{what} needs captured output, but this worker's stdout and stderr go "
                "elsewhere; leave stdout/stderr unset (or 'pipe') when you start it"
            )

    async def expect_line(
        self,
        pattern: str | re.Pattern[str],
        timeout: float = 5.0,  # noqa: ASYNC109 - a test's deadline reads best as an argument, and the message quotes it
    ) -> re.Match[str]:
        r"""Wait for a line of output matching *pattern* (``re.search``) and return the match.

        Lines are consumed: each call looks only at lines after the one the
        previous ``expect_line`` matched, so a sequence of calls follows the
        output in order.

        Args:
            pattern: a regular expression, as a string or compiled.
            timeout: seconds to wait.

        Returns:
            The match, e.g. ``m.group(1)`` for a captured port.

        Raises:
            AssertionError: no such line came within *timeout*, or the output
                ended without one; the message gives the command, its state
                and its last lines of output.
            ValueError: the worker's output is not captured.

        Example::

            port = int((await worker.expect_line(r"listening on (\d+)")).group(1))

        """
        self._need_capture("expect_line()")
        regex = re.compile(pattern)
        with trio.move_on_after(timeout):
            while True:
                while self._cursor < len(self._lines):
                    line = self._lines[self._cursor]
                    self._cursor += 1
                    if match := regex.search(line):
                        await trio.lowlevel.checkpoint()
                        return match
                if not self._open:
                    raise AssertionError(
                        self._describe(
                            f"ended its output without a line matching {regex.pattern!r}"
                        )
                    )
                await self._changed.wait()
        raise AssertionError(
            self._describe(f"printed no line matching {regex.pattern!r} within {timeout:g}s")
        )

    # --- input ------------------------------------------------------------------

    async def send(self, data: bytes | str) -> None:
        """Write *data* (str is UTF-8 encoded) to the worker's stdin.

        Raises:
            ValueError: stdin is not a pipe.
            trio.BrokenResourceError: the worker closed its stdin (it exited).

        """
        stdin = self._stdin("send()")
        await stdin.send_all(data.encode() if isinstance(data, str) else data)

    async def close_stdin(self) -> None:
        """Close the worker's stdin, so that it reads end of file."""
        await self._stdin("close_stdin()").aclose()

    def _stdin(self, what: str) -> trio.lowlevel.FdStream:
        if self.process.stdin is None:
            raise ValueError(
                f"{what} needs stdin='pipe' (the default of nsup_spawn); this worker was "
                f"started with stdin={self.process.spec.stdin!r}"
            )
        return self.process.stdin

    # --- exit -------------------------------------------------------------------

    async def expect_exit(
        self,
        code: int | None = None,
        *,
        signal: int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - as for expect_line
    ) -> ExitStatus:
        r"""Wait for the worker to exit and check how: exit *code* (default 0) or death by *signal*.

        Args:
            code: the expected exit code; 0 when neither it nor *signal* is given.
            signal: the expected signal, instead of a code.
            timeout: seconds to wait for the exit.

        Returns:
            The :class:`nsup.ExitStatus`.

        Raises:
            AssertionError: it did not exit within *timeout*, or ended
                otherwise; the message gives the command, how it ended and
                its last lines of output.
            ValueError: both *code* and *signal* were given.

        Example::

            await worker.send("quit\n")
            await worker.expect_exit(code=0)

        """
        if code is not None and signal is not None:
            raise ValueError("give expect_exit() either code or signal, not both")
        expected = ExitStatus(signal=signal) if signal is not None else ExitStatus(code=code or 0)
        status = None
        with trio.move_on_after(timeout):
            status = await self.process.wait()
        if status is None:
            raise AssertionError(
                self._describe(f"did not exit within {timeout:g}s; expected it to {_say(expected)}")
            )
        if self._captured:
            await self.wait_output_closed()
        if (status.code, status.signal) != (expected.code, expected.signal):
            raise AssertionError(self._describe(f"was expected to {_say(expected)}"))
        return status

    # --- messages ---------------------------------------------------------------

    def _describe(self, what: str) -> str:
        argv = shlex.join(self.process.spec.argv)
        status = self.process.poll()
        state = "it is still running" if status is None else f"it {status}"
        message = f"worker `{argv}` (pid {self.process.pid}) {what}; {state}"
        if not self._captured:
            return message + " (output not captured)"
        tail = list(self._lines)
        if self._partial:
            tail += [p.decode("utf-8", "replace") for p in self._partial.values() if p]
        if not tail:
            return message + "; it printed nothing"
        shown = tail[-TAIL:]
        skipped = f" (last {len(shown)} of {len(tail)})" if len(tail) > len(shown) else ""
        return message + f"; its output{skipped}:\n" + "\n".join(f"    | {line}" for line in shown)


def _say(status: ExitStatus) -> str:
    if status.signal is not None:
        return f"be {ExitStatus(signal=status.signal)}"
    return f"exit with code {status.code}"
