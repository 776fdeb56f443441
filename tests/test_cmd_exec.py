"""``nsup exec`` as a user runs it: exit codes, signals, options and errors."""

from __future__ import annotations

import os
import select
import shlex
import signal
import subprocess
import sys

import pytest
from helpers import NSUP, nsup_exec

from nsup._cli import build_parser
from nsup._cli.exec import build_spec
from nsup._request import build_request


@pytest.fixture(autouse=True, params=["direct", "spawn"])
def way(request, monkeypatch):
    """Every test runs both ways: cloned from the CLI itself, and through nsup.spawn."""
    monkeypatch.setenv("NSUP_EXEC_VIA", request.param)
    return request.param


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


def test_no_init_makes_the_command_pid_1():
    result = nsup_exec("--no-init", "--ns", "pid", "--", "sh", "-c", "echo $$")
    assert (result.returncode, result.stdout) == (0, "1\n"), result.stderr


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGKILL])
def test_no_init_death_by_signal_gives_128_plus_n(signo):
    result = nsup_exec("--no-init", "--ns", "", "--", "sh", "-c", f"kill -{signo.name[3:]} $$")
    assert result.returncode == 128 + signo, result.stderr


def test_an_ignored_signal_is_not_passed_on_to_the_command():
    # nohup-style: SIGHUP ignored in nsup exec must not stay ignored in the command.
    command = f"trap '' HUP; exec {shlex.join(NSUP)} exec -- sh -c 'kill -HUP $$; echo survived'"
    result = subprocess.run(  # noqa: S602 - a shell that ignores SIGHUP, as nohup does
        command, shell=True, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 128 + signal.SIGHUP, result.stderr
    assert "survived" not in result.stdout


def test_the_direct_way_loads_neither_trio_nor_attrs(way):
    code = (
        "import sys; from nsup._cli import main; code = main(['exec', '--', 'true']); "
        "print(code, sorted(m for m in ('trio', 'attrs') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ("0 []" if way == "direct" else "0 ['attrs', 'trio']")


def test_rlimits_apply():
    result = nsup_exec("--rlimit", "nofile=64", "--", "sh", "-c", "ulimit -n")
    assert (result.returncode, result.stdout) == (0, "64\n"), result.stderr


def test_a_credential_failure_is_125_with_the_stage():
    # Only the caller's uid is mapped in a rootless user namespace; here (root) the default
    # map covers 0-65535, so 70000 is unmapped and setuid fails in the child.
    result = nsup_exec("--ns", "user", "--user", "70000", "--", "true")
    assert result.returncode == 125, result.stderr
    assert "that id is not mapped in the child's user namespace" in result.stderr


def test_identity_flags():
    result = nsup_exec("--user", "nobody", "--umask", "077", "--", "sh", "-c", "id -un; umask")
    assert (result.returncode, result.stdout) == (0, "nobody\n0077\n"), result.stderr


def test_hardening_defaults_apply(tmp_path):
    # A read-only mount hardens the spec: no_new_privs set and CAP_SYS_ADMIN (21) dropped.
    result = nsup_exec(
        "--ro-bind",
        f"{tmp_path}:{tmp_path}",
        "--",
        "grep",
        "-E",
        "^(NoNewPrivs|CapBnd)",
        "/proc/self/status",
    )
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(":\t") for line in result.stdout.splitlines())
    assert fields["NoNewPrivs"] == "1"
    assert not int(fields["CapBnd"], 16) & (1 << 21)


@pytest.mark.skipif(os.getuid() != 0, reason="the unprivileged root map is root's default")
def test_root_gets_the_unprivileged_id_map():
    result = nsup_exec("--ns", "user", "--", "cat", "/proc/self/uid_map")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", str(0x80000), "65536"]


def test_killing_nsup_exec_leaves_nothing_behind():
    # No pid namespace, so the command's and its init's pids are host pids we can hold by pidfds.
    with subprocess.Popen(
        [*NSUP, "exec", "--ns", "", "--", "sh", "-c", "echo $$ $PPID; exec sleep 600"],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            pidfds = [os.pidfd_open(int(pid)) for pid in proc.stdout.readline().split()]
        finally:
            proc.kill()
            proc.wait()
        try:
            # The init's parent-death signal ends the tree: both pidfds become readable.
            for pidfd in pidfds:
                assert select.select([pidfd], [], [], 30)[0] == [pidfd]
        finally:
            for pidfd in pidfds:
                os.close(pidfd)


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["--ns", "user,pid,net,uts", "--hostname", "h", "--no-init", "--env", "A=1"],
        ["--ro-bind", "/etc:/mnt", "--tmpfs", "/tmp", "--cwd", "/tmp", "--rlimit", "nofile=64"],
        ["--rootfs", "/", "--cap", "net_bind_service", "--user", "nobody", "--umask", "027"],
        ["--cap", "none", "--no-new-privs", "--clear-env", "--ns", ""],
    ],
)
def test_both_ways_build_the_same_request(flags):
    argv = ["exec", *flags, "--", "true"]
    spec = build_spec(build_parser().parse_args(argv))
    full = spec.process_spec()
    assert build_request(spec, [0, 1, 2], None, None) == build_request(full, [0, 1, 2], None, None)
