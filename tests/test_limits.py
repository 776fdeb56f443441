"""Resource limits for real: per-child cgroups (v1 and v2), OOM reports, rlimits.

This machine mounts cgroup v1 memory, pids and cpu, and a cgroup2 hierarchy
with no controllers (placement and CPU accounting only).  Each test uses
whatever hierarchy backs the controller here and says which; tests that need
a v2 controller skip, with the reason, where the machine lacks it.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import sys
from pathlib import Path

import pytest
import trio
from helpers import PYTHON, nsup_exec, read_line, run

import nsup
from nsup import _cgroup
from nsup._limits import Limits

LAYOUT = _cgroup.get_layout()


def backing_version(controller: str) -> int | None:
    hierarchy = LAYOUT.backing(controller)
    return None if isinstance(hierarchy, str) else hierarchy.version


def needs(*controllers: str):
    missing = [c for c in controllers if backing_version(c) is None]
    reason = "; ".join(str(LAYOUT.backing(c)) for c in missing)
    return pytest.mark.skipif(bool(missing), reason=f"this machine lacks a controller: {reason}")


def nsup_dirs() -> list[str]:
    """Every cgroup directory under this process's nsup-<pid> bases, in every hierarchy."""
    found = []
    hierarchies = [LAYOUT.v2, *LAYOUT.v1.values()]
    for hierarchy in {h.own for h in hierarchies if h is not None}:
        base = Path(hierarchy) / f"nsup-{os.getpid()}"
        if base.is_dir():
            found += [str(p) for p in base.iterdir() if p.is_dir()]
    return found


# --- pids ---------------------------------------------------------------------

_FORK_LOOP = """
import os
r, w = os.pipe()
children = []
try:
    for _ in range(100):
        pid = os.fork()
        if pid == 0:
            os.close(w)
            os.read(r, 1)    # wait until the parent is done counting
            os._exit(0)
        children.append(pid)
except BlockingIOError as exc:   # EAGAIN: the cgroup's pids.max
    print(len(children), exc.errno)
os.close(w)
for pid in children:
    os.waitpid(pid, 0)
"""


@needs("pids")
@pytest.mark.parametrize("init", [True, False])
async def test_fork_loop_stops_at_pids(init):
    """pids=10 allows exactly 10 tasks: init (if any), the loop, and the forks it got."""
    status, out = await run(
        [PYTHON, "-I", "-S", "-c", _FORK_LOOP], limits=Limits(pids=10), init=init
    )
    assert status == nsup.ExitStatus(code=0)
    forks, err = out.split()
    assert (int(forks), int(err)) == (10 - (2 if init else 1), 11)  # EAGAIN


# --- memory and OOM -------------------------------------------------------------

_ALLOCATE = "chunks = []\nwhile True:\n    chunks.append(bytearray(8 << 20))\n"


@needs("memory")
@pytest.mark.parametrize("init", [True, False])
async def test_allocation_beyond_memory_is_reported_as_oom(init):
    spec = nsup.ProcessSpec(
        argv=[PYTHON, "-I", "-S", "-c", _ALLOCATE], limits=Limits(memory=48 << 20), init=init
    )
    async with nsup.spawn(spec) as proc:
        status = await proc.wait()
        assert proc.statistics().oom_kills >= 1
    assert status == nsup.ExitStatus(signal=signal.SIGKILL, oom_killed=True)
    assert str(status) == "killed by SIGKILL (out of memory)"
    assert status.exit_code == 137


@needs("memory")
async def test_sigkill_without_oom_is_not_reported_as_oom():
    spec = nsup.ProcessSpec(argv=["sleep", "100"], limits=Limits(memory=48 << 20))
    async with nsup.spawn(spec) as proc:
        proc.kill()
        status = await proc.wait()
    assert status == nsup.ExitStatus(signal=signal.SIGKILL)
    assert str(status) == "killed by SIGKILL"


@needs("memory")
async def test_memory_within_the_limit_runs():
    status, out = await run(
        [PYTHON, "-I", "-S", "-c", "x = bytearray(8 << 20); print(len(x))"],
        limits=Limits(memory=64 << 20),
    )
    assert (status, out) == (nsup.ExitStatus(code=0), f"{8 << 20}\n")


@pytest.mark.skipif(
    LAYOUT.v2 is None or "memory" not in LAYOUT.v2.controllers,
    reason="cgroup v2 here offers no memory controller (cgroup.controllers of "
    f"{LAYOUT.v2.own if LAYOUT.v2 else 'no cgroup2 mount'}); v1 backs memory instead",
)
async def test_v2_memory_max_is_written():
    spec = nsup.ProcessSpec(argv=["sleep", "100"], limits=Limits(memory=32 << 20))
    async with nsup.spawn(spec) as proc:
        path = proc._cgroup.paths["v2"]
        assert Path(path, "memory.max").read_text() == f"{32 << 20}\n"
        proc.kill()


# --- cpu ------------------------------------------------------------------------

_BUSY = """
import sys, time
start = time.monotonic()
while time.monotonic() - start < 1.0:
    pass
print(time.monotonic() - start, flush=True)
sys.stdin.read()
"""


@needs("cpu")
async def test_cpu_quota_throttles_a_busy_loop():
    """cpu=0.2: over a second of wall time the cgroup is charged about 0.2 s of CPU."""
    spec = nsup.ProcessSpec(
        argv=[PYTHON, "-I", "-S", "-c", _BUSY],
        limits=Limits(cpu=0.2),
        stdin="pipe",
        stdout="pipe",
    )
    async with nsup.spawn(spec) as proc:
        wall = float(await read_line(proc.stdout))
        stats = proc.statistics()
        await proc.stdin.aclose()
        await proc.wait()
    print(  # noqa: T201 - the measurement, shown with -s
        f"cpu=0.2 over {wall:.3f}s wall: cgroup charged {stats.cpu_seconds:.3f}s CPU, "
        f"throttled {stats.cpu_periods_throttled} periods ({stats.cpu_throttled_seconds:.3f}s)",
        file=sys.stderr,
    )
    assert stats.cpu_seconds is not None, "no hierarchy gives this child's CPU usage"
    assert 0.1 <= stats.cpu_seconds / wall <= 0.3
    assert stats.cpu_periods_throttled >= 5
    assert stats.cpu_throttled_seconds > 0.3


async def test_unlimited_busy_loop_is_not_throttled():
    """The control for the test above: no quota, the same loop is never throttled.

    Asserted on the cgroup's throttling counters, not on the share of a core the loop
    got: on a loaded machine that share says more about the neighbours than about nsup.
    """
    spec = nsup.ProcessSpec(argv=[PYTHON, "-I", "-S", "-c", _BUSY], stdin="pipe", stdout="pipe")
    async with nsup.spawn(spec) as proc:
        await read_line(proc.stdout)  # the loop has run its second
        stats = proc.statistics()
        await proc.stdin.aclose()
        await proc.wait()
    if stats.cpu_seconds is None:
        pytest.skip("no cgroup hierarchy here counts a child's CPU time")
    assert stats.cpu_seconds > 0
    assert stats.cpu_periods_throttled in {0, None}
    assert stats.cpu_throttled_seconds in {0, None}


# --- rlimits --------------------------------------------------------------------

# /proc/self/limits row name and unit, per policy name.
_ROWS = {
    "nofile": "Max open files",
    "core": "Max core file size",
    "nproc": "Max processes",
    "as": "Max address space",
    "cputime": "Max cpu time",
    "fsize": "Max file size",
    "stack": "Max stack size",
    "memlock": "Max locked memory",
}


def _limits_table(text: str) -> dict[str, tuple[str, str]]:
    table = {}
    for line in text.strip().splitlines()[1:]:
        name = line[:26].strip()
        soft, hard = line[26:].split()[:2]
        table[name] = (soft, hard)
    return table


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("nofile", 77),
        ("core", 0),
        ("nproc", 321),
        ("as", 3 << 30),
        ("cputime", 42),
        ("fsize", 5 << 20),
        ("stack", 4 << 20),
        ("memlock", 128 << 10),
    ],
)
@pytest.mark.parametrize("init", [True, False])
async def test_each_rlimit_is_seen_inside(name, value, init):
    status, out = await run(
        ["cat", "/proc/self/limits"], limits=Limits(rlimits={name: value}), init=init
    )
    assert status.success
    assert _limits_table(out)[_ROWS[name]] == (str(value), str(value))


async def test_unlimited_rlimit():
    status, out = await run(
        ["cat", "/proc/self/limits"], limits=Limits(rlimits={"core": resource.RLIM_INFINITY})
    )
    assert status.success
    assert _limits_table(out)["Max core file size"] == ("unlimited", "unlimited")


async def test_nofile_is_enforced():
    status, out = await run(
        [
            PYTHON,
            "-I",
            "-S",
            "-c",
            "import os\ntry:\n    [os.open('/dev/null', 0) for _ in range(50)]\nexcept OSError as e:\n    print(e.errno)",
        ],
        limits=Limits(rlimits={"nofile": 20}),
    )
    assert (status.success, out) == (True, "24\n")  # EMFILE


# --- cgroup placement, cleanup, kill ---------------------------------------------


async def test_each_child_gets_its_own_cgroup_in_every_hierarchy_it_uses():
    status, out = await run(
        ["cat", "/proc/self/cgroup"], limits=Limits(memory=64 << 20, pids=50, cpu=1)
    )
    assert status.success
    lines = dict(line.split(":", 2)[1:] for line in out.splitlines())
    ours = f"/nsup-{os.getpid()}/"
    used = {c for c in ("memory", "pids", "cpu") if backing_version(c) == 1}
    for controller in used:
        assert ours in lines[controller], (controller, lines)
    if LAYOUT.v2 is not None:
        assert ours in lines[""]  # CLONE_INTO_CGROUP placed it atomically
        assert re.fullmatch(rf".*/nsup-{os.getpid()}/\d+", lines[""])


async def test_no_cgroup_or_mount_left_after_200_children():
    mounts_before = Path("/proc/self/mountinfo").read_text()
    for i in range(200):
        spec = nsup.ProcessSpec(
            argv=["true"],
            limits=Limits(memory=64 << 20, pids=20, cpu=0.5) if i % 2 else Limits(),
            mounts=[nsup.Mount(type="tmpfs", target="/tmp")],
        )
        async with nsup.spawn(spec) as proc:
            assert proc._cgroup is not None
            assert await proc.wait() == nsup.ExitStatus(code=0)
        assert nsup_dirs() == []
    # A failed start leaves nothing either.
    with pytest.raises(nsup.SpawnError):
        async with nsup.spawn(
            nsup.ProcessSpec(argv=["no-such-command-xyz"], limits=Limits(pids=5))
        ):
            pass
    assert nsup_dirs() == []
    assert Path("/proc/self/mountinfo").read_text() == mounts_before


async def _escaped_sleeper_is_killed():
    """Without a PID namespace or init, closing the handle kills what escaped into the cgroup."""
    spec = nsup.ProcessSpec(
        argv=["sh", "-c", "sleep 1000 & echo $!"], namespaces=[], init=False, stdout="pipe"
    )
    async with nsup.spawn(spec) as proc:
        sleeper = int(await read_line(proc.stdout))
        pidfd = os.pidfd_open(sleeper)
        assert await proc.wait() == nsup.ExitStatus(code=0)
        assert sleeper in proc._cgroup.members()
    try:
        with trio.fail_after(5):
            await trio.lowlevel.wait_readable(pidfd)  # readable once it has exited
    finally:
        os.close(pidfd)
    assert nsup_dirs() == []


@pytest.mark.skipif(LAYOUT.v2 is None, reason="no cgroup2 hierarchy is mounted here")
async def test_escaped_descendant_is_killed_through_v2():
    await _escaped_sleeper_is_killed()


@pytest.mark.skipif("pids" not in LAYOUT.v1, reason="no cgroup v1 pids hierarchy here")
async def test_escaped_descendant_is_killed_through_v1(monkeypatch):
    """With no v2 hierarchy (a v1-only machine), the v1 pids cgroup tracks the child."""
    monkeypatch.setattr(_cgroup, "_layout", _cgroup.Layout(None, dict(LAYOUT.v1)))
    await _escaped_sleeper_is_killed()


async def test_kill_without_pid_namespace_reaches_descendants():
    spec = nsup.ProcessSpec(
        argv=["sh", "-c", "sleep 1000 & echo $!; wait"], namespaces=[], stdout="pipe"
    )
    async with nsup.spawn(spec) as proc:
        sleeper = int(await read_line(proc.stdout))
        pidfd = os.pidfd_open(sleeper)
        try:
            proc.kill()
            with trio.fail_after(5):
                await trio.lowlevel.wait_readable(pidfd)
        finally:
            os.close(pidfd)
        assert await proc.wait() == nsup.ExitStatus(signal=signal.SIGKILL)


# --- what cannot be applied, and bad values ----------------------------------------


async def test_missing_controller_is_an_error_at_start(monkeypatch):
    """A limit whose controller no hierarchy offers fails the spawn, naming it and why.

    The layout is this machine's real cgroup2 hierarchy alone, as on a v2-only
    machine whose parent did not delegate memory: it really has no memory controller.
    """
    if LAYOUT.v2 is None or "memory" in LAYOUT.v2.controllers:
        pytest.skip("needs a cgroup2 hierarchy without the memory controller")
    monkeypatch.setattr(_cgroup, "_layout", _cgroup.Layout(LAYOUT.v2, {}))
    with pytest.raises(nsup.SpawnError) as info:
        async with nsup.spawn(nsup.ProcessSpec(argv=["true"], limits=Limits(memory=1 << 20))):
            pass
    assert info.value.stage == "cgroup memory"
    assert str(info.value).startswith(
        f"cgroup memory: cannot apply the memory limit: nsup's cgroup {LAYOUT.v2.own} does not "
        "offer the memory controller"
    )
    assert "delegate" in str(info.value)
    assert nsup_dirs() == []


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (Limits(memory=-1), "'limits.memory' must be a positive number (got -1)"),
        (Limits(pids=0), "'limits.pids' must be a positive number (got 0)"),
        (Limits(cpu=float("nan")), "'limits.cpu' must be a positive number (got nan)"),
        (
            Limits(rlimits={"cpu": 10}),
            (
                "'limits.rlimits' has unknown rlimit 'cpu'; choose from as, core, cputime, data, "
                "fsize, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, "
                "stack (the CPU-time rlimit is 'cputime')"
            ),
        ),
        (
            Limits(rlimits={"nofile": -5}),
            (
                "'limits.rlimits['nofile']' must be an integer, 0 or more, or "
                "resource.RLIM_INFINITY for unlimited (got -5)"
            ),
        ),
    ],
)
def test_bad_limits_are_spec_errors(limits, message):
    with pytest.raises(nsup.SpecError) as info:
        nsup.ProcessSpec(argv=["true"], limits=limits)
    assert str(info.value) == message


def test_layout_of_a_v2_only_machine():
    mountinfo = (
        "24 1 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
        "25 1 0:23 / /proc rw - proc proc rw\n"
    )
    layout = _cgroup.parse_layout(
        mountinfo, "0::/user.slice/app.scope\n", lambda _own: frozenset({"memory", "pids"})
    )
    assert layout.v2 == _cgroup.Hierarchy(
        2, "/sys/fs/cgroup", "/sys/fs/cgroup/user.slice/app.scope", frozenset({"memory", "pids"})
    )
    assert layout.backing("memory") is layout.v2
    assert layout.backing("cpu") == (
        "nsup's cgroup /sys/fs/cgroup/user.slice/app.scope does not offer the cpu controller "
        "(cgroup.controllers: memory pids) and no cgroup v1 hierarchy mounts it; its parent "
        "must delegate it (systemd: Delegate=yes)"
    )


def test_layout_of_this_machine_matches_proc():
    text = Path("/proc/self/cgroup").read_text()
    for controller, hierarchy in LAYOUT.v1.items():
        line = next(x for x in text.splitlines() if controller in x.split(":")[1].split(","))
        assert hierarchy.own == os.path.join(
            hierarchy.mount, line.split(":", 2)[2].lstrip("/")
        ).rstrip("/")


# --- nsup exec ---------------------------------------------------------------------


@needs("memory")
def test_exec_memory_reports_oom():
    result = nsup_exec("--memory", "48M", "--", PYTHON, "-I", "-S", "-c", _ALLOCATE)
    assert (result.returncode, result.stderr) == (
        137,
        "nsup exec: the command was killed by SIGKILL (out of memory)\n",
    )


@needs("pids")
def test_exec_pids_and_rlimits():
    result = nsup_exec(
        "--pids",
        "10",
        "--cpu",
        "0.5",
        "--rlimit",
        "nofile=64",
        "--rlimit",
        "cputime=1m",
        "--",
        PYTHON,
        "-I",
        "-S",
        "-c",
        _FORK_LOOP + "print(open('/proc/self/limits').read())",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("8 11\n")
    table = _limits_table(result.stdout.split("\n", 1)[1])
    assert (table["Max open files"], table["Max cpu time"]) == (("64", "64"), ("60", "60"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--memory=-5M"],
            "nsup exec: --memory: must be a size such as '64K', '256M' or '1G' (binary multiples), or a number of bytes (got '-5M')",
        ),
        (["--pids", "0"], "nsup exec: --pids: must be positive (got 0)"),
        (["--cpu", "lots"], "nsup exec: --cpu: must be a number (got 'lots')"),
        (
            ["--rlimit", "nofiles=3"],
            "nsup exec: --rlimit: unknown rlimit 'nofiles'; choose from as, core, cputime, data, fsize, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack; did you mean 'nofile'?",
        ),
        (["--rlimit", "nofile"], "nsup exec: --rlimit takes NAME=VALUE (got 'nofile')"),
        (["--rlimit", "core=-1"], "nsup exec: --rlimit core: must not be negative (got -1)"),
    ],
)
def test_exec_bad_limit_flags(args, message):
    result = nsup_exec(*args, "--", "true")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == message
