"""The spawn core, for real: namespaces, exit statuses, init, cancellation, errors, fds."""

from __future__ import annotations

import errno
import os
import re
import signal
from pathlib import Path

import pytest
import trio
from helpers import PYTHON, read_line, run

import nsup

ALL_KINDS = ["pid", "mount", "uts", "ipc", "net", "user", "cgroup"]


def ns_link(kind: str) -> str:
    return "/proc/self/ns/" + {"mount": "mnt"}.get(kind, kind)


# --- namespaces, observed from inside and outside ---------------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_each_namespace_kind_is_new_inside(kind):
    outside = os.readlink(ns_link(kind))
    status, out = await run(["readlink", ns_link(kind)], namespaces=[kind])
    assert status == nsup.ExitStatus(code=0)
    assert out.strip().startswith(outside.partition(":")[0] + ":[")
    assert out.strip() != outside


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_namespace_kinds_not_asked_for_are_shared(kind):
    others = [k for k in ALL_KINDS if k != kind]
    status, out = await run(["readlink", ns_link(kind)], namespaces=others)
    assert status.success
    assert out.strip() == os.readlink(ns_link(kind))


async def test_no_namespaces_at_all():
    status, out = await run(
        ["sh", "-c", "readlink /proc/self/ns/pid; echo $PPID"], namespaces=[], init=False
    )
    assert status.success
    ns, ppid = out.split()
    assert ns == os.readlink("/proc/self/ns/pid")
    assert int(ppid) == os.getpid()  # CLONE_PARENT: the supervisor's own child


async def test_pid_and_mount_show_only_the_new_namespace_in_proc():
    status, out = await run(["sh", "-c", "ls /proc | grep -c '^[0-9]'"])
    assert status.success
    # init, sh and the grep/ls pipeline: nothing of the host's processes.
    assert int(out) <= 4


async def test_init_is_pid_1_and_the_command_pid_2():
    spec = nsup.ProcessSpec(
        argv=["sh", "-c", "echo $$; tr '\\0' ' ' < /proc/1/cmdline"], stdout="pipe"
    )
    async with nsup.spawn(spec) as proc:
        first = await read_line(proc.stdout)
        rest = await read_line(proc.stdout)
        await proc.wait()
    assert first == b"2"
    assert proc.command_pid == 2
    assert rest == b"nsup-init: sh "  # the init's title, set before the command started


async def test_without_init_the_command_is_pid_1():
    status, out = await run(["sh", "-c", "echo $$"], init=False)
    assert status.success
    assert out.strip() == "1"


async def test_hostname_in_uts_namespace():
    status, out = await run(["hostname"], namespaces=["uts"], hostname="nsup-test")
    assert (status.success, out.strip()) == (True, "nsup-test")
    assert os.uname().nodename != "nsup-test"


_LOOPBACK = """
import socket
server = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(server.getsockname(), timeout=5)
print("connected")
devices = [line.split(":")[0].strip() for line in open("/proc/net/dev").readlines()[2:]]
print(" ".join(devices))
"""


async def test_loopback_is_up_in_a_new_network_namespace():
    status, out = await run([PYTHON, "-I", "-S", "-c", _LOOPBACK], namespaces=["net"])
    assert status.success
    assert out.split("\n")[:2] == ["connected", "lo"]


async def test_user_namespace_maps_caller_to_root():
    """Rootless: the caller is root inside.  As root (issue 11): root inside is an unprivileged id."""
    status, out = await run(
        ["sh", "-c", "id -u; cat /proc/self/uid_map; cat /proc/self/status"], namespaces=["user"]
    )
    assert status.success
    uid, mapping, *status_lines = out.split("\n")
    assert uid == "0"
    if os.getuid() == 0:
        assert mapping.split() == ["0", "524288", "65536"]
        # The kernel shows our ids in our own namespace, where root is 524288.
        assert "Uid:\t0\t0\t0\t0" in status_lines
    else:
        assert mapping.split() == ["0", str(os.getuid()), "1"]


async def test_user_namespace_with_explicit_maps():
    status, out = await run(
        ["sh", "-c", "id -u; id -g"],
        namespaces=["user"],
        uid_map=[(1000, os.getuid(), 1)],
        gid_map=[(1000, os.getgid(), 1)],
    )
    assert status.success
    assert out.split() == ["1000", "1000"]


async def test_mount_namespace_is_private():
    target = Path("/tmp")
    status, out = await run(
        ["sh", "-c", f"grep ' {target} ' /proc/self/mounts"],
        mounts=[nsup.Mount(type="tmpfs", target=str(target))],
    )
    assert status.success
    assert "tmpfs" in out
    host_mounts = Path("/proc/self/mounts").read_text()
    assert out.strip() not in host_mounts


async def test_read_only_bind_refuses_writes(tmp_path):
    (tmp_path / "file").write_text("hello")
    status, out = await run(
        [
            "sh",
            "-c",
            "cat /mnt/file; echo; (echo x > /mnt/file) 2>/dev/null && echo wrote || echo refused",
        ],
        mounts=[nsup.Mount(type="bind", source=str(tmp_path), target="/mnt", readonly=True)],
    )
    assert status.success
    assert out.split() == ["hello", "refused"]
    assert (tmp_path / "file").read_text() == "hello"


# --- exit statuses -----------------------------------------------------------


@pytest.mark.parametrize("init", [True, False])
@pytest.mark.parametrize("code", [0, 1, 7, 255])
async def test_exit_codes(code, init):
    status, _ = await run(["sh", "-c", f"exit {code}"], init=init)
    assert status == nsup.ExitStatus(code=code)
    assert status.exit_code == code


@pytest.mark.parametrize("namespaces", [["pid", "mount"], []], ids=["pid", "subreaper"])
@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGKILL, signal.SIGSEGV])
async def test_death_by_signal_is_reported_as_such(signo, namespaces):
    """Under nsup's init the command kills itself; the init reports the signal.

    As PID 1, and as a subreaper with no PID namespace, which reports as soon
    as it has reaped the command and finds no child left.
    """
    status, _ = await run(["sh", "-c", f"kill -{signo.name[3:]} $$"], namespaces=namespaces)
    assert status.signal == signo
    assert status.exit_code == 128 + signo


# Without the init the command itself is PID 1 of its namespace.  The kernel shields
# PID 1 from signals it has no handler for, except SIGKILL from an ancestor
# namespace and a fault the kernel forces (a real SIGSEGV); those are the deaths
# by signal a PID-1 command can die, and they must be reported as such.
_SEGFAULT = "import ctypes, os; print(os.getpid(), flush=True); ctypes.string_at(0)"
_WAITS = "import os, signal; print(os.getpid(), flush=True); signal.pause()"


@pytest.mark.parametrize(
    ("signo", "script"), [(signal.SIGKILL, _WAITS), (signal.SIGSEGV, _SEGFAULT)], ids=str
)
async def test_death_by_signal_of_a_pid_1_command_without_init(signo, script):
    spec = nsup.ProcessSpec(
        argv=[PYTHON, "-I", "-S", "-c", script],
        init=False,
        namespaces=["pid", "mount"],
        stdout="pipe",
    )
    async with nsup.spawn(spec) as proc:
        assert b"1" == await read_line(proc.stdout)  # the command is PID 1
        assert proc.command_pid is None  # no init between us and it
        if signo == signal.SIGKILL:
            proc.kill()
        status = await proc.wait()
    assert nsup.ExitStatus(signal=signo) == status
    assert 128 + signo == status.exit_code


async def test_a_pid_1_command_without_init_ignores_sigterm_it_does_not_handle():
    """Why the init exists: PID 1 without a handler ignores SIGTERM, so stop() must escalate."""
    spec = nsup.ProcessSpec(
        argv=[PYTHON, "-I", "-S", "-c", _WAITS],
        init=False,
        stdout="pipe",
        stop_timeout=0.2,
    )
    async with nsup.spawn(spec) as proc:
        assert b"1" == await read_line(proc.stdout)
        with pytest.warns(RuntimeWarning, match="ignored SIGTERM for 0.2 seconds"):
            status = await proc.stop()
    assert nsup.ExitStatus(signal=signal.SIGKILL) == status


async def test_send_signal_reaches_the_command_through_init():
    spec = nsup.ProcessSpec(argv=["sleep", "100"])
    async with nsup.spawn(spec) as proc:
        proc.send_signal(signal.SIGTERM)
        status = await proc.wait()
    assert status == nsup.ExitStatus(signal=signal.SIGTERM)
    assert str(status) == "killed by SIGTERM"


FORWARDED = ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGCONT"]

_CATCHER = """
import os, signal, sys
got = signal.Signals[sys.argv[1]]
signal.signal(got, lambda n, f: os._exit(40 + n))
print("ready", flush=True)
while True:
    signal.pause()
"""


@pytest.mark.parametrize("name", FORWARDED)
async def test_init_forwards_signal(name):
    signo = signal.Signals[name]
    spec = nsup.ProcessSpec(argv=[PYTHON, "-I", "-S", "-c", _CATCHER, name], stdout="pipe")
    async with nsup.spawn(spec) as proc:
        assert await read_line(proc.stdout) == b"ready"
        proc.send_signal(signo)
        with trio.fail_after(30):  # a lost signal fails the test instead of hanging the suite
            status = await proc.wait()
    assert status == nsup.ExitStatus(code=40 + signo)


_ORPHANS = """
import os, time
for _ in range({n}):
    if os.fork() == 0:
        if os.fork() == 0:
            os._exit(0)   # the grandchild: an orphan zombie once its parent is gone
        os._exit(0)
    os.wait()
deadline = time.monotonic() + 20
while True:
    zombies = []
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and open(f"/proc/{{p}}/stat").read().rpartition(")")[2].split()[0] == "Z":
                zombies.append(p)
        except FileNotFoundError:
            pass  # reaped between the listing and the open
    if not zombies or time.monotonic() > deadline:
        break
    time.sleep(0.01)  # the kernel gives no event for "a zombie was reaped"
print(len(zombies))
"""


async def test_init_reaps_500_orphans():
    status, out = await run([PYTHON, "-I", "-S", "-c", _ORPHANS.format(n=500)])
    assert status.success
    assert out.strip() == "0"


# --- stop, cancellation, escalation ------------------------------------------


async def test_leaving_the_block_stops_and_reaps():
    async with nsup.spawn(nsup.ProcessSpec(argv=["sleep", "100"])) as proc:
        pass
    assert proc.status == nsup.ExitStatus(signal=signal.SIGTERM)
    assert proc.pidfd == -1
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)


async def test_cancellation_kills_and_reaps():
    with trio.move_on_after(0.2):
        async with nsup.spawn(nsup.ProcessSpec(argv=["sleep", "100"])) as proc:
            await trio.sleep_forever()
    assert proc.status == nsup.ExitStatus(signal=signal.SIGTERM)


async def test_cancelled_while_starting_leaves_nothing():
    with trio.CancelScope() as scope:
        scope.cancel()
        async with nsup.spawn(nsup.ProcessSpec(argv=["sleep", "100"])):
            pytest.fail("the block must not be entered")
    assert scope.cancelled_caught


async def test_repeated_cancelled_waits_are_harmless():
    async with nsup.spawn(nsup.ProcessSpec(argv=["sleep", "100"])) as proc:
        for _ in range(20):
            with trio.move_on_after(0.001):
                await proc.wait()
        assert proc.status is None
        proc.send_signal(signal.SIGKILL)
        assert await proc.wait() == nsup.ExitStatus(signal=signal.SIGKILL)


async def test_stop_escalates_to_sigkill_for_a_child_ignoring_sigterm():
    spec = nsup.ProcessSpec(
        argv=["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"],
        stdout="pipe",
        stop_timeout=0.3,
        init=False,
    )
    with pytest.warns(RuntimeWarning, match="ignored SIGTERM for 0.3 seconds; sending SIGKILL"):
        async with nsup.spawn(spec) as proc:
            assert await read_line(proc.stdout) == b"ready"
    assert proc.status == nsup.ExitStatus(signal=signal.SIGKILL)


async def test_sigkill_ends_the_whole_pid_namespace():
    spec = nsup.ProcessSpec(
        argv=["sh", "-c", "sleep 100 & sleep 100 & echo ready; wait"], stdout="pipe"
    )
    async with nsup.spawn(spec) as proc:
        assert await read_line(proc.stdout) == b"ready"
        inside = [
            int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        ]
        grandchildren = [
            int(p) for c in inside for p in Path(f"/proc/{c}/task/{c}/children").read_text().split()
        ]
        assert len(grandchildren) == 2
        proc.kill()
        await proc.wait()
    for pid in inside + grandchildren:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# --- bad input ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"argv": []}, "'argv' is empty; give at least the command to run"),
        (
            {"argv": "sleep 1"},
            "'argv' must be a list of strings (got 'sleep 1'); split a command line with shlex.split()",
        ),
        (
            {"argv": ["x"], "namespaces": ["pid", "bogus"]},
            "'namespaces' has unknown namespace 'bogus'; choose from cgroup, ipc, mount, net, pid, user, uts",
        ),
        (
            {"argv": ["x"], "namespaces": ["pid"], "hostname": "h"},
            "'hostname' needs the 'uts' namespace; add it to namespaces",
        ),
        (
            {"argv": ["x"], "namespaces": ["pid"], "uid_map": [(0, 0, 1)]},
            "'uid_map' needs the 'user' namespace; add it to namespaces",
        ),
        (
            {"argv": ["x"], "stdout": "file"},
            "stdio must be 'inherit', 'null', 'pipe' or a file descriptor (got 'file')",
        ),
        (
            {"argv": ["x"], "env": {"A=B": "c"}},
            "'env' has an invalid variable 'A=B': no '=' or NUL, and not empty",
        ),
        (
            {"argv": ["x"], "stop_signal": "SIGNOPE"},
            "'stop_signal' must be a signal name or number (got 'SIGNOPE')",
        ),
        (
            {"argv": ["x"], "pass_fds": [1]},
            "'pass_fds' targets must be 3 or more: use stdin/stdout/stderr for [1]",
        ),
    ],
)
def test_bad_spec_arguments(kwargs, message):
    with pytest.raises(nsup.SpecError) as info:
        nsup.ProcessSpec(**kwargs)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("init", [True, False])
async def test_missing_executable(init):
    with pytest.raises(nsup.SpawnError) as info:
        async with nsup.spawn(nsup.ProcessSpec(argv=["no-such-command-xyz"], init=init)):
            pytest.fail("must not start")
    assert (info.value.stage, info.value.errno) == ("exec", 2)
    assert str(info.value) == (
        "exec: No such file or directory; command 'no-such-command-xyz' not found on the child's PATH; "
        "check the name or give an absolute path"
    )


async def test_not_executable(tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    with pytest.raises(nsup.SpawnError) as info:
        async with nsup.spawn(nsup.ProcessSpec(argv=[str(script)])):
            pass
    assert (info.value.stage, info.value.errno) == ("exec", 13)


async def test_missing_cwd():
    with pytest.raises(nsup.SpawnError) as info:
        async with nsup.spawn(nsup.ProcessSpec(argv=["true"], cwd="/no/such/dir")):
            pass
    assert info.value.stage == "chdir /no/such/dir"
    assert "the working directory must exist inside the child" in str(info.value)


async def test_missing_bind_source():
    mount = nsup.Mount(type="bind", source="/no/such/source", target="/mnt")
    with pytest.raises(nsup.SpawnError) as info:
        async with nsup.spawn(nsup.ProcessSpec(argv=["true"], mounts=[mount])):
            pass
    assert info.value.stage == "mount bind on /mnt"
    assert info.value.errno == 2


# --- handles, descriptors ----------------------------------------------------


def test_process_has_no_public_constructor():
    with pytest.raises(
        TypeError,
        match=re.escape("nsup.Process has no public constructor; use nsup.spawn()"),
    ):
        nsup.Process()


async def test_repr_and_status():
    async with nsup.spawn(nsup.ProcessSpec(argv=["true"], namespaces=[])) as proc:
        assert repr(proc) == f"<nsup.Process {proc.pid} ['true']: running>"
        await proc.wait()
        assert repr(proc) == f"<nsup.Process {proc.pid} ['true']: exited with code 0>"


async def test_pass_fds_and_stdin_pipe():
    r, w = os.pipe()
    try:
        spec = nsup.ProcessSpec(argv=["sh", "-c", "cat >&5"], stdin="pipe", pass_fds={5: w})
        async with nsup.spawn(spec) as proc:
            await proc.stdin.send_all(b"through fd 5")
            await proc.stdin.aclose()
            assert await proc.wait() == nsup.ExitStatus(code=0)
        os.close(w)
        w = -1
        assert os.read(r, 100) == b"through fd 5"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(("namespaces", "count"), [([], 1000), (["pid", "mount"], 200)])
async def test_no_descriptor_leaks_across_many_spawns(namespaces, count):
    async with nsup.spawn(nsup.ProcessSpec(argv=["true"], namespaces=namespaces)) as proc:
        await proc.wait()  # the zygote is up before we count
    before = _fds()
    for _ in range(count):
        async with nsup.spawn(
            nsup.ProcessSpec(argv=["true"], namespaces=namespaces, stdout="pipe")
        ) as proc:
            await proc.wait()
    with pytest.raises(nsup.SpawnError):
        async with nsup.spawn(
            nsup.ProcessSpec(argv=["no-such-command-xyz"], namespaces=namespaces)
        ):
            pass
    assert _fds() == before


async def test_children_do_not_inherit_supervisor_descriptors():
    r, w = os.pipe()
    try:
        status, out = await run(["ls", "/proc/self/fd"], namespaces=[])
    finally:
        os.close(r)
        os.close(w)
    assert status.success
    assert sorted(out.split()) == ["0", "1", "2", "3"]  # 3 is ls's own directory handle


async def test_ignored_signals_are_not_inherited():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        status, out = await run(["sh", "-c", "grep SigIgn /proc/self/status"], namespaces=[])
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert status.success
    assert int(out.split()[1], 16) & (1 << (signal.SIGHUP - 1)) == 0


def test_an_einval_of_another_cause_keeps_clone_clear_sighand(monkeypatch):
    # CLONE_NEWUSER with CLONE_FS is EINVAL on every kernel, with CLONE_CLEAR_SIGHAND or
    # without: the fallback for Linux < 5.5 must not take it for a kernel lacking the flag.
    from nsup._clone import clone, syscalls  # noqa: PLC0415 - the spawn zone, in this process
    from nsup._clone.namespaces import CLONE_FLAGS  # noqa: PLC0415

    monkeypatch.setattr(clone._Kernel, "clear_sighand", syscalls.CLONE_CLEAR_SIGHAND)
    clone_fs = 0x200
    request = {"flags": CLONE_FLAGS["user"] | clone_fs, "cgroup": -1}
    (pid, error, _message), pidfd = clone.spawn_child(request, [], -1, 0)
    assert (0, errno.EINVAL, -1) == (pid, error, pidfd)
    assert syscalls.CLONE_CLEAR_SIGHAND == clone._Kernel.clear_sighand
