"""The child's lean path: the zygote's warm-up leaves it unchanged, and the PATH lookup."""

from __future__ import annotations

import subprocess
import sys

import pytest

import nsup
from nsup import _zygote_client

PACKAGE = _zygote_client.__file__.rsplit("/", 1)[0]

_STATE = (
    "import os;"
    "s=lambda:[l for l in open('/proc/self/status') if l.split(':')[0] in"
    " ('Uid','Gid','Groups','CapInh','CapPrm','CapEff','CapBnd','CapAmb','NoNewPrivs')]"
    "+[os.getcwd(),sorted(sys.modules)];"
)


def test_warm_up_changes_nothing_in_the_zygote():
    """Boot as the zygote does, warm up: same credentials, directory and modules as before."""
    program = (
        _zygote_client.BOOT_IMPORTS
        + _STATE
        + "from nsup._clone import child;before=s();child.warm_up();print(before==s(),len(before))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", program, PACKAGE],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert out == ["True", "11"]  # nine status lines, the directory, the modules


@pytest.fixture
def path_dirs(tmp_path):
    """A PATH of three directories: 'tool' is a directory, then not executable, then a script."""
    dirs = [tmp_path / name for name in ("a", "b", "c")]
    for d in dirs:
        d.mkdir()
    (dirs[0] / "tool").mkdir()
    (dirs[1] / "tool").write_text("#!/bin/sh\necho from-b\n")
    (dirs[2] / "tool").write_text("#!/bin/sh\necho from-c\n")
    (dirs[2] / "tool").chmod(0o755)
    return [str(d) for d in dirs]


@pytest.mark.parametrize("init", [True, False])
async def test_path_lookup_skips_directories_and_unexecutable_files(path_dirs, init):
    env = {"PATH": ":".join(path_dirs)}
    spec = nsup.ProcessSpec(argv=["tool"], env=env, stdout="pipe", init=init)
    async with nsup.spawn(spec) as proc:
        out = await proc.stdout.receive_some(100)
        status = await proc.wait()
    assert (status.success, out) == (True, b"from-c\n")


@pytest.mark.parametrize(("keep", "errno"), [(2, 13), (1, 2)])
async def test_path_lookup_errors(path_dirs, keep, errno):
    """A file found but not executable is EACCES; a directory alone is not found (ENOENT)."""
    spec = nsup.ProcessSpec(argv=["tool"], env={"PATH": ":".join(path_dirs[:keep])})
    with pytest.raises(nsup.SpawnError) as info:
        async with nsup.spawn(spec):
            pytest.fail("must not start")
    assert (info.value.stage, info.value.errno) == ("exec", errno)
