"""``nsup exec`` as a user runs it: exit codes, signals, options and errors."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

NSUP = [sys.executable, "-m", "nsup"]


def nsup_exec(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NSUP, "exec", *args], capture_output=True, text=True, timeout=60, check=False, **kwargs
    )


def test_readme_example_shows_an_isolated_process_table():
    result = nsup_exec(
        "--ns",
        "pid,mount,net,uts",
        "--hostname",
        "demo",
        "--",
        "sh",
        "-c",
        "hostname; ps -e -o pid=,comm=; cat /proc/net/dev",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "demo"
    table = [line.split() for line in lines[1:4]]
    assert table[0] == ["1", "nsup-init"]
    assert table[1] == ["2", "sh"]
    assert [line.split(":")[0].strip() for line in lines[6:]] == ["lo"]


@pytest.mark.parametrize("code", [0, 3, 255])
def test_exit_code_is_the_commands(code):
    assert nsup_exec("--", "sh", "-c", f"exit {code}").returncode == code


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGKILL])
def test_death_by_signal_gives_128_plus_n(signo):
    assert nsup_exec("--", "sh", "-c", f"kill -{signo.name[3:]} $$").returncode == 128 + signo


def test_command_not_found_is_127_with_a_hint():
    result = nsup_exec("--", "no-such-command-xyz")
    assert result.returncode == 127
    assert "command 'no-such-command-xyz' not found on the child's PATH" in result.stderr


def test_setup_failure_is_125():
    result = nsup_exec("--cwd", "/no/such/dir", "--", "true")
    assert result.returncode == 125
    assert "chdir /no/such/dir" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ns", "pid,bogus", "--", "true"], "'--ns' has unknown namespace 'bogus'"),
        (["--ns", "pid", "--hostname", "h", "--", "true"], "'hostname' needs the 'uts' namespace"),
        (["--bind", "nocolon", "--", "true"], "--bind takes SRC:DST"),
        (["--env", "NOEQUALS", "--", "true"], "--env takes K=V (got 'NOEQUALS')"),
        ([], "nsup exec needs a command"),
    ],
)
def test_bad_usage_is_2_and_says_what_to_change(args, message):
    result = nsup_exec(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_env_cwd_and_binds(tmp_path):
    (tmp_path / "hello").write_text("from the host\n")
    result = nsup_exec(
        "--env",
        "GREETING=hi",
        "--ro-bind",
        f"{tmp_path}:/mnt",
        "--cwd",
        "/mnt",
        "--",
        "sh",
        "-c",
        "echo $GREETING; cat hello; touch x 2>/dev/null || echo read-only",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["hi", "from the host", "read-only"]


def test_sigterm_to_nsup_exec_reaches_the_command():
    with subprocess.Popen(
        [
            *NSUP,
            "exec",
            "--",
            "sh",
            "-c",
            "trap 'exit 42' TERM; echo ready; while :; do sleep 0.1; done",
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout.readline() == "ready\n"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 42
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_help_has_examples():
    result = subprocess.run([*NSUP, "exec", "--help"], capture_output=True, text=True, check=True)
    assert "examples:" in result.stdout
    assert "nsup exec --ns pid,net,uts --hostname demo" in result.stdout
