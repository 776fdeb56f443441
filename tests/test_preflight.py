"""``nsup check`` predicts what would fail at run time on this host (nsup._policy.preflight).

Each case runs the real ``nsup check`` in a subprocess on a real policy file
and real files, and asserts the exit code (2 for an error, 0 for a warning)
and the exact line naming the dotted key.  The predictions for an
unprivileged user are in test_rootless.py, which runs nsup as uid 65534.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import marker_env

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the cases here assume root's view")


@pytest.fixture
def nsup_check(tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir()

    def check(text: str, *args: str) -> tuple[int, str, str, str]:
        path = tmp_path / "policy.toml"
        path.write_text(text)
        result = subprocess.run(
            [sys.executable, "-m", "nsup", "check", *args, str(path)],
            env=marker_env(PATH="/usr/bin:/bin", XDG_RUNTIME_DIR=str(runtime)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return result.returncode, result.stdout, result.stderr, str(path)

    return check


@pytest.fixture
def rootfs(tmp_path):
    """A directory with an executable /bin/app and a /usr/bin/tool reached by an absolute symlink."""
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    app = root / "bin" / "app"
    app.write_text("#!/bin/sh\n")
    app.chmod(0o755)
    tool = root / "usr" / "bin" / "tool-real"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (root / "bin" / "tool").symlink_to("/usr/bin/tool-real")
    return root


def test_notify_with_rootfs_is_an_error(nsup_check, rootfs, tmp_path):
    code, out, err, path = nsup_check(
        f'[services.web]\ncommand = ["/bin/app"]\nrootfs = "{rootfs}"\n'
        "ready = { notify = true }\n"
    )
    runtime = str(tmp_path / "runtime")
    assert (code, out) == (2, "")
    assert err == (
        f"nsup: {path}:4: 'services.web.ready.notify' cannot work: nsup puts the notify socket "
        f"under {runtime!r} and 'rootfs' {str(rootfs)!r} hides it; bind it in (a mount with "
        f"type = \"bind\", source = {runtime!r} and target = {runtime!r}) or use a 'tcp', "
        "'exec' or 'log' probe\n"
    )


def test_notify_with_rootfs_and_the_runtime_dir_bound_in_is_fine(nsup_check, rootfs, tmp_path):
    runtime = tmp_path / "runtime"
    code, out, err, _ = nsup_check(
        f'[services.web]\ncommand = ["/bin/app"]\nrootfs = "{rootfs}"\n'
        "ready = { notify = true }\n"
        f'mounts = [{{ type = "bind", source = "{runtime}", target = "{runtime}" }}]\n'
    )
    assert (code, err) == (0, "")
    assert out.startswith("web: /bin/app [")


def test_notify_under_a_tmpfs_is_an_error(nsup_check, tmp_path):
    code, _, err, path = nsup_check(
        '[services.web]\ncommand = ["true"]\nready = { notify = true }\n'
        f'mounts = [{{ type = "tmpfs", target = "{tmp_path}" }}]\n'
    )
    assert code == 2
    assert err.startswith(f"nsup: {path}:3: 'services.web.ready.notify' cannot work: ")
    assert f"the mount on {str(tmp_path)!r} hides it" in err


@pytest.mark.parametrize("probe", ["ready", "health"])
def test_log_probe_without_output_through_nsup_is_an_error(nsup_check, probe):
    code, _, err, path = nsup_check(
        '[services.web]\ncommand = ["true"]\nstdout = "null"\nstderr = "null"\n'
        f'{probe} = {{ log = "listening" }}\n'
    )
    assert code == 2
    assert err == (
        f"nsup: {path}:5: 'services.web.{probe}.log' can never match: stdout and stderr both "
        "go to 'null', so nsup never sees the output; send one of them anywhere else (the "
        "terminal, a file, the journal or syslog: nsup reads every line on its way there), "
        "or use a 'tcp' or 'exec' probe\n"
    )


def test_log_probe_reads_lines_on_their_way_to_a_file(nsup_check, tmp_path):
    code, _, err, _ = nsup_check(
        f'[services.web]\ncommand = ["true"]\nstdout = "{tmp_path}/out.log"\nstderr = "null"\n'
        'ready = { log = "listening" }\n'
    )
    assert (code, err) == (0, "")


def test_log_probe_with_one_stream_through_nsup_is_fine(nsup_check):
    code, _, err, _ = nsup_check(
        '[services.web]\ncommand = ["true"]\nstdout = "null"\nready = { log = "up" }\n'
    )
    assert (code, err) == (0, "")


def test_command_not_on_path(nsup_check):
    code, _, err, path = nsup_check('[services.web]\ncommand = ["no-such-program-here"]\n')
    assert code == 2
    assert err == (
        f"nsup: {path}:2: 'services.web.command' cannot run: 'no-such-program-here' is not on "
        "the PATH (/usr/bin:/bin)\n"
    )


def test_command_on_the_services_own_path(nsup_check, tmp_path):
    tool = tmp_path / "bin" / "my-tool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    code, _, err, _ = nsup_check(
        f'[services.web]\ncommand = ["my-tool"]\nenv = {{ PATH = "{tool.parent}" }}\n'
    )
    assert (code, err) == (0, "")


def test_exec_probe_not_on_path(nsup_check):
    code, _, err, path = nsup_check(
        '[services.web]\ncommand = ["true"]\nhealth = { exec = ["no-such-probe", "-q"] }\n'
    )
    assert code == 2
    assert err == (
        f"nsup: {path}:3: 'services.web.health.exec' cannot run: 'no-such-probe' is not on "
        "the PATH (/usr/bin:/bin)\n"
    )


def test_command_not_executable(nsup_check, tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    code, _, err, path = nsup_check(f'[services.web]\ncommand = ["{script}"]\n')
    assert code == 2
    assert err == (
        f"nsup: {path}:2: 'services.web.command' cannot run: {str(script)!r} is not executable\n"
    )


def test_command_is_looked_up_inside_the_rootfs(nsup_check, rootfs):
    code, _, err, path = nsup_check(f'[services.web]\ncommand = ["sh"]\nrootfs = "{rootfs}"\n')
    assert code == 2
    assert err == (
        f"nsup: {path}:2: 'services.web.command' cannot run: 'sh' is not on the PATH "
        f"(/usr/bin:/bin) inside the rootfs {str(rootfs)!r}\n"
    )
    # An absolute symlink inside the rootfs resolves against the rootfs, not the host.
    code, _, err, _ = nsup_check(f'[services.web]\ncommand = ["tool"]\nrootfs = "{rootfs}"\n')
    assert (code, err) == (0, "")


def test_missing_cwd(nsup_check, tmp_path):
    code, _, err, path = nsup_check(
        f'[services.web]\ncommand = ["true"]\ncwd = "{tmp_path}/nowhere"\n'
    )
    assert code == 2
    assert err == (
        f"nsup: {path}:3: 'services.web.cwd' is '{tmp_path}/nowhere', which is not a directory\n"
    )


def test_missing_bind_source_and_target(nsup_check, tmp_path):
    code, _, err, path = nsup_check(
        '[services.web]\ncommand = ["true"]\n'
        f'mounts = [{{ type = "bind", source = "{tmp_path}/src", target = "{tmp_path}/dst" }}]\n'
    )
    assert code == 2
    assert err.splitlines() == [
        (
            f"nsup: {path}:3: 'services.web.mounts[0].source' is '{tmp_path}/src', which does "
            "not exist"
        ),
        (
            f"nsup: {path}:3: 'services.web.mounts[0].target' is '{tmp_path}/dst', which does "
            "not exist; nsup makes mount points only inside a 'rootfs' or on a tmpfs mounted "
            "earlier in 'mounts': create it first, or use a rootfs"
        ),
    ]


def test_mount_points_inside_a_rootfs_are_made(nsup_check, rootfs, tmp_path):
    code, _, err, _ = nsup_check(
        f'[services.web]\ncommand = ["/bin/app"]\nrootfs = "{rootfs}"\n'
        f'mounts = [{{ type = "bind", source = "{tmp_path}", target = "/data" }}]\n'
    )
    assert (code, err) == (0, "")


def test_cwd_through_a_bind_mount(nsup_check, rootfs, tmp_path):
    (tmp_path / "work").mkdir()
    code, _, err, _ = nsup_check(
        f'[services.web]\ncommand = ["/bin/app"]\nrootfs = "{rootfs}"\ncwd = "/data/work"\n'
        f'mounts = [{{ type = "bind", source = "{tmp_path}", target = "/data" }}]\n'
    )
    assert (code, err) == (0, "")


def test_hostname_without_uts(nsup_check):
    code, _, err, path = nsup_check(
        '[services.web]\ncommand = ["true"]\nnamespaces = ["pid", "mount"]\nhostname = "web"\n'
    )
    assert code == 2
    assert err == (
        f"nsup: {path}:4: 'services.web.hostname' needs the 'uts' namespace, which "
        "'services.web.namespaces' does not include\n"
    )


def test_pid_without_mount_is_a_warning(nsup_check):
    code, out, err, path = nsup_check(
        '[defaults]\nnamespaces = ["pid"]\n[services.web]\ncommand = ["true"]\n'
    )
    assert code == 0
    assert out == "web: true [restart=on-failure namespaces=pid depends_on=none]\n"
    assert err == (
        f"nsup: warning: {path}:2: 'defaults.namespaces' has 'pid' without 'mount', so the "
        "service's /proc still shows the host's processes; add 'mount' and nsup mounts a "
        "/proc of its own\n"
    )


def test_json_carries_warnings_and_host_errors(nsup_check):
    code, out, err, path = nsup_check(
        '[services.a]\ncommand = ["true"]\nnamespaces = ["pid"]\n', "--json"
    )
    assert (code, err) == (0, "")
    record = json.loads(out)
    assert record["valid"] is True
    assert record["warnings"] == [
        {
            "source": path,
            "line": 3,
            "key": "services.a.namespaces",
            "message": "'services.a.namespaces' has 'pid' without 'mount', so the service's "
            "/proc still shows the host's processes; add 'mount' and nsup mounts a /proc of "
            "its own",
        }
    ]
    code, out, err, path = nsup_check(
        '[services.a]\ncommand = ["no-such-program-here"]\n', "--json"
    )
    assert (code, err) == (2, "")
    record = json.loads(out)
    assert record["valid"] is False
    assert [e["key"] for e in record["errors"]] == ["services.a.command"]
    assert record["warnings"] == []
