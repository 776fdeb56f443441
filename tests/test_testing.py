"""nsup.testing.Worker, through this suite's own nsup_spawn fixture: output, input, exits, messages."""

from __future__ import annotations

import os
import re
import signal

import pytest
from helpers import PYTHON

import nsup
from nsup.pytest_plugin import MARKER
from nsup.testing import Worker


async def test_expect_line_returns_the_match_and_follows_the_output_in_order(nsup_spawn):
    worker = await nsup_spawn(["sh", "-c", "echo port 1; echo port 2; echo port 3"])
    assert "1" == (await worker.expect_line(r"port (\d)")).group(1)
    assert "3" == (await worker.expect_line(re.compile(r"port ([3-9])"))).group(1)
    await worker.expect_exit()
    assert ["port 1", "port 2", "port 3"] == worker.lines
    assert "port 1\nport 2\nport 3\n" == worker.output


async def test_stdout_and_stderr_are_captured_together_in_order(nsup_spawn):
    worker = await nsup_spawn(["sh", "-c", "echo out; echo err >&2; echo out again"])
    await worker.expect_exit(code=0)
    assert "out\nerr\nout again\n" == worker.output


async def test_a_partial_last_line_counts_once_the_output_ends(nsup_spawn):
    worker = await nsup_spawn(["printf", "no newline"])
    assert "no newline" == (await worker.expect_line(".*newline")).group(0)
    assert ["no newline"] == worker.lines


async def test_expect_line_timeout_says_what_the_worker_printed(nsup_spawn):
    worker = await nsup_spawn(["sh", "-c", "echo hello; exec sleep 1000"], namespaces=[])
    await worker.expect_line("hello")
    with pytest.raises(AssertionError) as info:
        await worker.expect_line("nope", timeout=0.1)
    assert (
        f"worker `sh -c 'echo hello; exec sleep 1000'` (pid {worker.pid}) printed no line "
        "matching 'nope' within 0.1s; it is still running; its output:\n    | hello"
    ) == str(info.value)


async def test_expect_line_fails_at_once_when_the_output_ends(nsup_spawn):
    worker = await nsup_spawn(["sh", "-c", "echo bye"], namespaces=[])
    with pytest.raises(AssertionError) as info:
        await worker.expect_line("nope", timeout=60)
    await worker.wait()
    assert str(info.value).startswith(
        f"worker `sh -c 'echo bye'` (pid {worker.pid}) ended its output without a line "
        "matching 'nope'; it "
    )
    assert str(info.value).endswith("; its output:\n    | bye")


async def test_send_and_close_stdin(nsup_spawn):
    worker = await nsup_spawn(["cat"])
    await worker.send(b"one\n")
    await worker.expect_line("^one$")
    await worker.send("two\n")
    await worker.close_stdin()
    await worker.expect_exit(code=0)
    assert ["one", "two"] == worker.lines


async def test_expect_exit_with_the_wrong_code_quotes_the_last_lines(nsup_spawn):
    worker = await nsup_spawn(["sh", "-c", "for i in $(seq 30); do echo line $i; done; exit 3"])
    with pytest.raises(AssertionError) as info:
        await worker.expect_exit(code=0)
    expected = (
        f"worker `sh -c 'for i in $(seq 30); do echo line $i; done; exit 3'` (pid {worker.pid}) "
        "was expected to exit with code 0; it exited with code 3; "
        "its output (last 20 of 30):\n" + "\n".join(f"    | line {i}" for i in range(11, 31))
    )
    assert expected == str(info.value)
    assert nsup.ExitStatus(code=3) == worker.status


async def test_expect_exit_by_signal(nsup_spawn):
    worker = await nsup_spawn(["sleep", "1000"], namespaces=[])
    worker.send_signal(signal.SIGTERM)
    assert nsup.ExitStatus(signal=signal.SIGTERM) == await worker.expect_exit(signal=signal.SIGTERM)


async def test_expect_exit_timeout(nsup_spawn):
    worker = await nsup_spawn(["sleep", "1000"], namespaces=[])
    with pytest.raises(AssertionError) as info:
        await worker.expect_exit(timeout=0.1)
    assert (
        f"worker `sleep 1000` (pid {worker.pid}) did not exit within 0.1s; expected it to "
        "exit with code 0; it is still running; it printed nothing"
    ) == str(info.value)


async def test_expect_exit_refuses_code_and_signal_together(nsup_spawn):
    worker = await nsup_spawn(["true"])
    with pytest.raises(ValueError, match="either code or signal, not both"):
        await worker.expect_exit(code=1, signal=9)


async def test_helpers_that_need_a_pipe_say_so(nsup_spawn):
    worker = await nsup_spawn(["true"], stdin="null", stdout="null", stderr="null")
    with pytest.raises(ValueError, match="needs stdin") as info:
        await worker.send(b"x")
    assert (
        (
            "send() needs stdin='pipe' (the default of nsup_spawn); this worker was started "
            "with stdin='null'"
        ),
    ) == info.value.args
    with pytest.raises(ValueError, match="needs captured output") as info:
        await worker.expect_line("x")
    assert (
        (
            "expect_line() needs captured output, but this worker's stdout and stderr go "
            "elsewhere; leave stdout/stderr unset (or 'pipe') when you start it"
        ),
    ) == info.value.args
    await worker.expect_exit(code=0)


async def test_a_spec_is_tagged_and_its_pipes_captured(nsup_spawn):
    spec = nsup.ProcessSpec(argv=["sh", "-c", "echo $" + MARKER], stdout="pipe")
    worker = await nsup_spawn(spec)
    marker = (await worker.expect_line(r"^(\w+)$")).group(1)
    assert 32 == len(marker)
    assert os.environ.get(MARKER) is None  # the test process itself is never tagged
    assert dict(os.environ, **{MARKER: marker}) == dict(worker.spec.env)


async def test_an_explicit_env_gets_the_tag_too(nsup_spawn):
    worker = await nsup_spawn(["/bin/sh", "-c", "env | sort"], env={"A": "1"}, namespaces=[])
    await worker.expect_exit()
    names = {line.partition("=")[0] for line in worker.lines}
    assert {"A", MARKER} <= names
    assert "HOME" not in names  # not inherited: the given env replaces os.environ


async def test_the_process_api_is_forwarded(nsup_spawn):
    worker = await nsup_spawn([PYTHON, "-c", "print('hi')"])
    assert worker.process.pid == worker.pid
    assert worker.process.pidfd == worker.pidfd
    assert 2 == worker.command_pid
    assert (await worker.wait()) == worker.status == worker.poll() == nsup.ExitStatus(code=0)
    assert repr(worker) == f"<nsup.testing.Worker {worker.process!r}>"


async def test_terminate_only_signals_and_stop_waits(nsup_spawn):
    first = await nsup_spawn(["sleep", "1000"])
    assert first.terminate() is None
    assert first.status is None  # signalled, not yet reaped
    await first.expect_exit(signal=signal.SIGTERM)
    second = await nsup_spawn(["sleep", "1000"])
    assert nsup.ExitStatus(signal=signal.SIGTERM) == await second.stop()
    assert nsup.ExitStatus(signal=signal.SIGTERM) == second.status


def test_worker_has_no_public_constructor():
    with pytest.raises(TypeError, match="has no public constructor"):
        Worker(None, [])
