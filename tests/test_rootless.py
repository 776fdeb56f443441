"""nsup run by an unprivileged user (uid 65534), for real, through a user namespace.

Root's Python lives in a private home, so the test copies nsup and its
dependencies into a world-readable directory and runs Debian's system Python
as ``nobody``.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = 65534
PACKAGES = ["nsup", "trio", "attr", "attrs", "outcome", "sniffio", "sortedcontainers", "idna"]

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="switching to uid 65534 needs root"),
    pytest.mark.skipif(
        not os.access(SYSTEM_PYTHON, os.X_OK), reason=f"{SYSTEM_PYTHON} is needed for uid 65534"
    ),
]


@pytest.fixture(scope="module")
def public_path():
    root = Path(tempfile.mkdtemp(prefix="nsup-rootless-"))
    try:
        root.chmod(0o755)
        for name in PACKAGES:
            module = importlib.import_module(name)
            source = Path(module.__file__).parent
            shutil.copytree(
                source, root / name, ignore=shutil.ignore_patterns("__pycache__", "_tests")
            )
        for path in root.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield str(root)
    finally:
        shutil.rmtree(root)


def as_nobody(public_path: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_as_nobody(public_path, "-m", "nsup", *args)


def run_as_nobody(public_path: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the system Python as ``nobody`` with *args*, nsup importable from *public_path*."""
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": public_path,
        "NSUP_TEST_MARKER": os.environ["NSUP_TEST_MARKER"],
        "HOME": "/",
    }
    return subprocess.run(
        [SYSTEM_PYTHON, *args],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_rootless_exec_in_a_user_namespace(public_path):
    result = as_nobody(
        public_path,
        "exec",
        "--ns",
        "user,pid,mount,uts,net,ipc",
        "--hostname",
        "rootless",
        "--",
        "sh",
        "-c",
        "id -u; hostname; echo $$; cat /proc/self/uid_map; ls /proc | grep -c '^[0-9]'",
    )
    assert result.returncode == 0, result.stderr
    uid, hostname, pid, uid_map, processes = result.stdout.splitlines()
    assert (uid, hostname, pid) == ("0", "rootless", "2")
    assert uid_map.split() == ["0", str(NOBODY), "1"]
    assert int(processes) <= 4  # only this namespace's processes


def test_rootless_exit_status_and_signal(public_path):
    assert (
        as_nobody(
            public_path, "exec", "--ns", "user,pid,mount", "--", "sh", "-c", "exit 7"
        ).returncode
        == 7
    )
    result = as_nobody(
        public_path, "exec", "--ns", "user,pid,mount", "--", "sh", "-c", "kill -TERM $$"
    )
    assert result.returncode == 128 + 15


def test_rootless_without_user_namespace_says_what_to_change(public_path):
    result = as_nobody(public_path, "exec", "--ns", "pid,mount", "--", "true")
    assert result.returncode == 125
    assert "clone3: Operation not permitted" in result.stderr
    assert "as an unprivileged user add 'user' to the namespaces" in result.stderr


def test_rootless_supervisor_runs_and_stops(public_path):
    policy = Path(tempfile.mkdtemp(prefix="nsup-rootless-policy-"))
    try:
        os.chown(policy, NOBODY, NOBODY)  # nobody's own directory, for its control socket
        path = policy / "policy.toml"
        path.write_text(
            "[defaults]\n"
            'namespaces = ["user", "pid", "mount"]\n'
            "[services.once]\n"
            'command = ["sh", "-c", "echo inside as $(id -u)"]\n'
            'restart = "never"\n'
            "[supervisor]\n"
            f'control = "{policy}/control.sock"\n'
        )
        path.chmod(0o644)
        result = as_nobody(public_path, "run", str(path))
    finally:
        shutil.rmtree(policy)
    assert result.returncode == 0, result.stderr
    assert "once | inside as 0" in result.stdout


@pytest.fixture
def nobody_policy():
    """Write a policy file that uid 65534 can read; yield the writer."""
    directory = Path(tempfile.mkdtemp(prefix="nsup-rootless-check-"))
    directory.chmod(0o755)

    def write(text: str) -> str:
        path = directory / "policy.toml"
        path.write_text(text)
        path.chmod(0o644)
        return str(path)

    try:
        yield write
    finally:
        shutil.rmtree(directory)


def test_rootless_check_predicts_eperm_without_a_user_namespace(public_path, nobody_policy):
    path = nobody_policy('[services.web]\ncommand = ["true"]\nnamespaces = ["pid", "mount"]\n')
    result = as_nobody(public_path, "check", path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"nsup: {path}:3: 'services.web.namespaces' makes new namespaces (mount, pid), which "
        f"needs root or CAP_SYS_ADMIN, and nsup runs as uid {NOBODY} here (clone3 would fail "
        "with EPERM); add 'user' to the namespaces, or run nsup as root\n"
    )


def test_rootless_check_accepts_a_user_namespace(public_path, nobody_policy):
    path = nobody_policy(
        '[services.web]\ncommand = ["true"]\nnamespaces = ["user", "pid", "mount"]\n'
    )
    result = as_nobody(public_path, "check", path)
    assert (result.returncode, result.stderr) == (0, "")
    assert (
        result.stdout
        == "web: true [restart=on-failure namespaces=mount,pid,user depends_on=none]\n"
    )
