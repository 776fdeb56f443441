"""Hardening basics for real: user/group, capabilities, no_new_privs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from helpers import PYTHON, run

import nsup

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")

NET_BIND_SERVICE = 1 << 10


def status_fields(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


@pytest.mark.parametrize("init", [True, False])
async def test_user_and_group(init):
    status, out = await run(["id"], user=1000, group=1001, init=init)
    assert status.success
    uid, gid, groups = out.split()[:3]
    assert (uid.partition("(")[0], gid.partition("(")[0]) == ("uid=1000", "gid=1001")
    assert groups.startswith("groups=1001")


async def test_capabilities_kept_across_a_user_switch():
    status, out = await run(
        ["cat", "/proc/self/status"], user=1000, group=1000, capabilities={"net_bind_service"}
    )
    assert status.success
    fields = status_fields(out)
    for name in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert int(fields[name], 16) == NET_BIND_SERVICE, name


_BIND_80 = """
import socket
s = socket.socket()
try:
    s.bind(("127.0.0.1", 80))
    print("bound")
except OSError as e:
    print(e.errno)
"""


@pytest.mark.parametrize(("caps", "expected"), [({"CAP_NET_BIND_SERVICE"}, "bound"), (None, "13")])
async def test_net_bind_service_works_as_a_user(caps, expected):
    """The kept capability really works: uid 1000 binds port 80 with it, EACCES without."""
    status, out = await run(
        [PYTHON, "-I", "-S", "-c", _BIND_80],
        user=1000,
        group=1000,
        capabilities=caps,
        namespaces=["pid", "mount", "net"],
    )
    assert (status.success, out.strip()) == (True, expected)


async def test_root_with_no_capabilities():
    status, out = await run(["cat", "/proc/self/status"], capabilities=[])
    assert status.success
    fields = status_fields(out)
    assert [int(fields[n], 16) for n in ("CapEff", "CapPrm", "CapBnd", "CapInh")] == [0, 0, 0, 0]


async def test_the_init_holds_no_more_than_its_command():
    """The init runs with the command's ids, capabilities and no_new_privs, never more."""
    script = "grep -E '^(Uid|Gid|Cap[A-Z][a-z][a-z]|NoNewPrivs):' /proc/1/status /proc/self/status"
    status, out = await run(
        ["sh", "-c", script], user=1000, group=1000, capabilities=["CAP_NET_BIND_SERVICE"]
    )
    assert status.success, out
    init = sorted(line.split(":", 1)[1] for line in out.splitlines() if line.startswith("/proc/1/"))
    command = sorted(line.split(":", 1)[1] for line in out.splitlines() if "self" in line)
    assert len(init) == 8  # Uid, Gid, five capability sets, NoNewPrivs
    assert init == command


async def test_root_keeps_everything_by_default():
    status, out = await run(["cat", "/proc/self/status"])
    assert status.success
    assert int(status_fields(out)["CapEff"], 16) != 0


def test_unknown_capability_is_a_spec_error():
    with pytest.raises(nsup.SpecError) as info:
        nsup.ProcessSpec(argv=["true"], capabilities=["net_bind_service", "fly"])
    assert str(info.value) == (
        "'capabilities' has unknown capability 'fly'; use names such as "
        "'CAP_NET_BIND_SERVICE' or 'net_bind_service' (see capabilities(7))"
    )


@pytest.mark.parametrize("bad", [-1, "nobody", 2**32 - 1, True])
def test_bad_user(bad):
    with pytest.raises(nsup.SpecError, match="'user' and 'group' must be numeric ids"):
        nsup.ProcessSpec(argv=["true"], user=bad)


@pytest.fixture
def setuid_id():
    """A setuid-root copy of id(1), in a directory uid 1000 can reach (pytest's are 0700)."""
    directory = tempfile.mkdtemp(prefix="nsup-setuid-", dir="/tmp")
    os.chmod(directory, 0o755)  # noqa: S103 - uid 1000 must reach it
    path = os.path.join(directory, "id")
    shutil.copy("/usr/bin/id", path)
    os.chown(path, 0, 0)
    os.chmod(path, 0o4755)  # noqa: S103 - the setuid program under test
    yield path
    shutil.rmtree(directory)


@pytest.mark.parametrize(("nnp", "elevated"), [(False, True), (True, False)])
async def test_no_new_privs_stops_setuid(setuid_id, nnp, elevated):
    """Without no_new_privs a setuid-root program runs with euid 0; with it, it does not."""
    status, out = await run(
        ["sh", "-c", f"grep NoNewPrivs /proc/self/status; {setuid_id}"],
        user=1000,
        group=1000,
        no_new_privs=nnp,
        namespaces=[],
    )
    assert status.success
    assert out.splitlines()[0].split() == ["NoNewPrivs:", "1" if nnp else "0"]
    assert ("euid=0" in out) is elevated


def test_exec_hardening_flags():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nsup",
            "exec",
            "--user",
            "1000",
            "--group",
            "1000",
            "--cap",
            "net_bind_service",
            "--no-new-privs",
            "--",
            "sh",
            "-c",
            "id -u; id -g; grep -E 'CapEff|NoNewPrivs' /proc/self/status",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "1000",
        "1000",
        "CapEff:",
        f"{NET_BIND_SERVICE:016x}",
        "NoNewPrivs:",
        "1",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--user", "no-such-user"],
            "nsup exec: --user names 'no-such-user', which is not a user in the host's user database",
        ),
        (
            ["--cap", "fly"],
            "nsup exec: 'capabilities' has unknown capability 'fly'; use names such as 'CAP_NET_BIND_SERVICE' or 'net_bind_service' (see capabilities(7))",
        ),
    ],
)
def test_exec_bad_hardening_flags(args, message):
    result = subprocess.run(
        [sys.executable, "-m", "nsup", "exec", *args, "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr.splitlines()[-1]) == (2, message)
