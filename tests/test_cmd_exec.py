"""``nsup exec`` as a user runs it: exit codes, signals, options and errors."""

from __future__ import annotations

import os
import shlex
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


def _help_example(start: str) -> tuple[str, str]:
    """The example line of ``nsup exec --help`` that starts with *start*: (command, comment)."""
    result = subprocess.run([*NSUP, "exec", "--help"], capture_output=True, text=True, check=True)
    assert "examples:" in result.stdout
    line = next(ln.strip() for ln in result.stdout.splitlines() if ln.strip().startswith(start))
    command, _, comment = line.partition("   # ")
    return command, comment.strip()


def test_the_help_example_shows_only_the_namespaces_processes():
    command, comment = _help_example("nsup exec --ns pid,net,uts")
    assert comment == "demo, init, sh, ps"
    # Run the line exactly as shown, through a shell, with `nsup` being this checkout's.
    python = shlex.quote(sys.executable)
    result = subprocess.run(  # noqa: S602 - the help's own line, as a user pastes it
        f'nsup() {{ {python} -m nsup "$@"; }}; {command}',
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "demo"
    assert lines[1].split() == ["PID", "TTY", "TIME", "CMD"]
    assert [line.split()[-1] for line in lines[2:]] == ["nsup-init", "sh", "ps"]


def test_pid_without_mount_still_gets_a_private_proc():
    result = nsup_exec("--ns", "pid", "--", "sh", "-c", "ls /proc | grep -c '^[0-9]'")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) <= 4  # init, sh, ls, grep: never the host's table


def test_a_missing_mount_point_on_the_host_is_refused_with_the_way_out(tmp_path):
    target = tmp_path / "data"
    result = nsup_exec("--ro-bind", f"{tmp_path}:{target}", "--", "true")
    assert result.returncode == 125
    assert result.stderr == (
        f"nsup exec: mount bind {tmp_path} on {target}: No such file or directory; the mount "
        f"point '{target}' does not exist on the host, and nsup creates mount points only "
        "inside a rootfs or on a tmpfs it mounted earlier (it never changes the host); create "
        "it on the host, use a rootfs, or mount a tmpfs on a parent first\n"
    )
    assert not target.exists()  # the host was left alone


def test_mount_points_are_made_on_an_earlier_tmpfs(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "hello").write_text("hi\n")
    (tmp_path / "mnt").mkdir()
    mnt = tmp_path / "mnt"
    result = nsup_exec(
        "--tmpfs",
        str(mnt),
        "--ro-bind",
        f"{tmp_path / 'src'}:{mnt}/a/b",
        "--bind",
        f"{tmp_path / 'src' / 'hello'}:{mnt}/file",
        "--",
        "sh",
        "-c",
        f"cat {mnt}/a/b/hello {mnt}/file; test -f {mnt}/file && echo file",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["hi", "hi", "file"]
    assert os.listdir(mnt) == []  # made on the tmpfs, not on the host


def test_a_mount_point_is_not_made_on_a_later_tmpfs(tmp_path):
    (tmp_path / "mnt").mkdir()
    target = tmp_path / "mnt" / "a"
    result = nsup_exec(
        "--ro-bind", f"{tmp_path}:{target}", "--tmpfs", str(tmp_path / "mnt"), "--", "true"
    )
    assert result.returncode == 125
    assert f"the mount point '{target}' does not exist on the host" in result.stderr


def test_mount_points_are_made_inside_a_rootfs(tmp_path):
    if not os.path.islink("/bin"):
        pytest.skip("this test binds /usr alone, which needs a merged-/usr host")
    root = tmp_path / "root"
    root.mkdir()
    for name in ("bin", "lib", "lib64", "sbin"):
        if os.path.islink(f"/{name}"):
            (root / name).symlink_to(os.readlink(f"/{name}"))
    (tmp_path / "hello").write_text("hi\n")
    result = nsup_exec(
        "--rootfs",
        str(root),
        "--ro-bind",
        "/usr:/usr",
        "--ro-bind",
        f"{tmp_path / 'hello'}:/data/hello",
        "--",
        "cat",
        "/data/hello",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\n"
    assert (root / "data" / "hello").is_file()  # made inside the rootfs
    assert not os.path.exists("/data/hello")
