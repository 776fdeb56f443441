"""Issue 11, reproductions 7 and 8: hardening defaults that make the policy's words true,
and cleanup after ``kill -9`` of ``nsup run``."""

from __future__ import annotations

import glob
import os
import signal
import sys
import time

import pytest
import trio
from helpers import PYTHON, run
from test_control_harness import DEADLINE, NsupRun, write_policy

import nsup
from nsup._cgroup import get_layout
from nsup._policy import Policy
from nsup._rundir import OWNER_FILE

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts and cgroups here need root")

CAP_SYS_ADMIN = 1 << 21

# Try to undo the read-only bind, then to write through it.
REMOUNT = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
MS_REMOUNT, MS_BIND = 32, 4096
result = libc.mount(None, b"/mnt", None, MS_REMOUNT | MS_BIND, None)
print("remount", ctypes.get_errno() if result else 0)
for line in open("/proc/self/status"):
    if line.startswith(("CapEff:", "CapPrm:", "CapBnd:", "NoNewPrivs:")):
        print(line.split()[0], line.split()[1])
try:
    open("/mnt/f", "w").write("changed")
    print("write 0")
except OSError as e:
    print("write", e.errno)
"""


def parse(out: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in out.splitlines())


def read_only(tmp_path) -> list[nsup.Mount]:
    (tmp_path / "f").write_text("host")
    return [nsup.Mount(type="bind", source=str(tmp_path), target="/mnt", readonly=True)]


@pytest.mark.parametrize("init", [True, False])
async def test_a_read_only_service_cannot_remount(tmp_path, init):
    status, out = await run(
        [PYTHON, "-I", "-S", "-c", REMOUNT], mounts=read_only(tmp_path), init=init
    )
    assert status.success
    found = parse(out)
    assert found["remount"] == "1"  # EPERM
    assert found["write"] == "30"  # EROFS
    assert found["NoNewPrivs:"] == "1"
    for name in ("CapEff:", "CapPrm:", "CapBnd:"):
        caps = int(found[name], 16)
        assert not caps & CAP_SYS_ADMIN, name
        assert caps != 0, name  # only CAP_SYS_ADMIN goes: root keeps the rest
    assert (tmp_path / "f").read_text() == "host"


async def test_the_old_behaviour_only_when_asked_for(tmp_path):
    """Listing CAP_SYS_ADMIN and no_new_privs=False keep them: the default changed, nothing else."""
    status, out = await run(
        [PYTHON, "-I", "-S", "-c", REMOUNT],
        mounts=read_only(tmp_path),
        capabilities={"sys_admin", "dac_override"},
        no_new_privs=False,
    )
    assert status.success
    found = parse(out)
    assert (found["remount"], found["write"], found["NoNewPrivs:"]) == ("0", "0", "0")


async def test_without_read_only_mounts_nothing_changes():
    status, out = await run(
        [PYTHON, "-I", "-S", "-c", REMOUNT.split("try:", maxsplit=1)[0].replace('b"/mnt"', 'b"/"')]
    )
    assert status.success
    found = parse(out)
    assert found["NoNewPrivs:"] == "0"
    assert int(found["CapEff:"], 16) & CAP_SYS_ADMIN


async def test_a_policy_service_with_readonly_true_cannot_write_to_the_host(tmp_path):
    """Reproduction 7 as written: `mount -o remount,bind,rw /srv && echo x > /srv/f`."""
    (tmp_path / "f").write_text("host")
    service = {
        "command": ["sh", "-c", "mount -o remount,bind,rw /srv 2>&1; echo x > /srv/f; echo rc=$?"],
        "mounts": [{"type": "bind", "source": str(tmp_path), "target": "/srv", "readonly": True}],
        "restart": "never",
    }
    lines: list[str] = []
    policy = Policy.from_dict({"services": {"svc": service}})
    async with nsup.open_supervisor(policy, output=lambda _n, line: lines.append(line)) as sup:
        async with sup.events() as events:
            if sup.status()["svc"].state != "ended":
                async for event in events:
                    if event.kind == "exited":
                        break
        await sup.stop_all()
    assert "sh: 1: cannot create /srv/f: Read-only file system" in lines, lines
    assert lines[-1] != "rc=0"
    assert (tmp_path / "f").read_text() == "host"


# --- crash cleanup ----------------------------------------------------------------------

DAEMON = """
[supervisor]
control = "ctl.sock"

[services.daemon]
command = ["sh", "-c", "setsid sleep 1000 & exec sleep 1000"]
namespaces = []
init = false
"""

SLEEPER = '[supervisor]\ncontrol = "ctl.sock"\n[services.a]\ncommand = ["sleep", "1000"]\n'


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def cgroup_trees(pid: int) -> list[str]:
    layout = get_layout()
    owns = {h.own for h in [layout.v2, *layout.v1.values()] if h is not None}
    return [path for own in owns if os.path.isdir(path := os.path.join(own, f"nsup-{pid}"))]


def members(trees: list[str]) -> set[int]:
    found: set[int] = set()
    for tree in trees:
        for procs in glob.glob(os.path.join(tree, "*", "cgroup.procs")):
            with open(procs) as f:
                found.update(int(p) for p in f.read().split())
    return found


def runtime_dirs(pid: int) -> list[str]:
    found = []
    for owner in glob.glob("/run/nsup-*/" + OWNER_FILE) + glob.glob("/tmp/nsup-*/" + OWNER_FILE):
        with open(owner) as f:
            if f.read().split()[0] == str(pid):
                found.append(os.path.dirname(owner))
    return found


def test_after_kill_9_the_next_run_leaves_nothing_behind(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = NsupRun(write_policy(str(tmp_path / "one"), DAEMON))
    leftovers: set[int] = set()
    try:
        first.settle()
        pid = first.proc.pid
        trees = cgroup_trees(pid)
        dirs = runtime_dirs(pid)
        assert trees, "nsup made no cgroup: nothing to test here"
        assert dirs
        os.kill(pid, signal.SIGKILL)
        first.proc.wait(timeout=DEADLINE)
        leftovers = members(trees)
        deadline = time.monotonic() + DEADLINE
        while not any(alive(p) for p in leftovers):  # the setsid'd sleep outlives nsup...
            assert time.monotonic() < deadline
            leftovers = members(trees)
            time.sleep(0.05)
        second = NsupRun(write_policy(str(tmp_path / "two"), SLEEPER))
        try:
            line = second.wait_line("removed what a dead nsup left behind")
            second.settle()  # a SIGTERM during start-up can hang nsup run (on main too; issue 10)
        finally:
            second.stop()
        assert "(1 processes killed)" in line
        for tree in trees:
            assert tree in line
            assert not os.path.exists(tree)
        for path in dirs:
            assert path in line
            assert not os.path.exists(path)
        assert not [p for p in leftovers if alive(p)]  # ...until the next run kills it
    finally:
        first.stop()
        for pid in leftovers:
            if alive(pid):
                fd = os.pidfd_open(pid)
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                os.close(fd)


def test_a_live_supervisor_beside_is_never_touched(tmp_path):
    first = NsupRun(write_policy(str(tmp_path), DAEMON.replace("ctl.sock", "one.sock"), "one.toml"))
    try:
        first.settle()
        trees = cgroup_trees(first.proc.pid)
        dirs = runtime_dirs(first.proc.pid)
        second = NsupRun(
            write_policy(str(tmp_path), SLEEPER.replace("ctl.sock", "two.sock"), "two.toml")
        )
        second.settle()
        assert not [line for line in second.lines if str(first.proc.pid) in line]
        second.stop()
        assert all(os.path.exists(p) for p in trees + dirs)
        assert first.status()["daemon"]["state"] == "up"
    finally:
        first.stop()


# --- user namespaces made by root --------------------------------------------------------


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.split(":", 1) for line in f)


@pytest.mark.parametrize("init", [True, False])
async def test_root_in_a_user_namespace_is_unprivileged_on_the_host(init):
    spec = nsup.ProcessSpec(argv=["sleep", "1000"], namespaces={"user", "pid", "mount"}, init=init)
    async with nsup.spawn(spec) as proc:
        fields = proc_status(proc.pid)
        proc.kill()
        await proc.wait()
    assert fields["Uid"].split() == ["524288"] * 4
    assert fields["Gid"].split() == ["524288"] * 4


async def test_root_keeps_its_own_map_when_told():
    spec = nsup.ProcessSpec(
        argv=["sleep", "1000"], namespaces={"user"}, uid_map=[(0, 0, 1)], gid_map=[(0, 0, 1)]
    )
    async with nsup.spawn(spec) as proc:
        fields = proc_status(proc.pid)
        proc.kill()
        await proc.wait()
    assert fields["Uid"].split() == ["0"] * 4


_CLEANUP_INSIDE = (
    "import sys\n"
    "from nsup._cgroup import _remove_stale, remove_stale_trees\n"
    "from nsup._rundir import remove_stale_runtime_dirs, sees_every_pid\n"
    "for own in sys.argv[1:]: _remove_stale(own)\n"
    "print(sees_every_pid(), remove_stale_trees(), remove_stale_runtime_dirs())\n"
)


async def test_cleanup_in_a_nested_pid_namespace_touches_nothing():
    """Regression: inside ``unshare --pid`` a live supervisor outside looked dead and was wiped."""
    spec = nsup.ProcessSpec(argv=["sleep", "100"], namespaces=[], limits=nsup.Limits(pids=16))
    async with nsup.spawn(spec) as proc:
        paths = dict(proc._cgroup.paths) if proc._cgroup is not None else {}
        if not paths:
            pytest.skip("no cgroup could be made for the child here")
        # An empty cgroup of ours (as one made for a spawn in flight is) must stay too.
        empty = [os.path.join(os.path.dirname(path), "empty") for path in paths.values()]
        for path in empty:
            os.mkdir(path)
        try:
            owns = [os.path.dirname(os.path.dirname(path)) for path in paths.values()]
            argv = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c"]
            result = await trio.run_process([*argv, _CLEANUP_INSIDE, *owns], capture_stdout=True)
            assert all(os.path.isdir(path) for path in empty)
        finally:
            for path in empty:
                if os.path.isdir(path):
                    os.rmdir(path)
        assert "False ([], 0) []" == result.stdout.decode().strip()
        assert all(os.path.isdir(path) for path in paths.values())
        assert proc.pid in proc._cgroup.members()
        proc.kill()
