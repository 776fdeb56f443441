"""Mounts for real: read-only binds (recursive), sized private tmpfs, rootfs, and bad mounts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run

import nsup
from nsup._clone import syscalls as _sys


async def test_read_only_bind_refuses_writes(tmp_path):
    (tmp_path / "f").write_text("host")
    status, out = await run(
        [
            "sh",
            "-c",
            "echo $(cat /mnt/f); (echo x > /mnt/f; touch /mnt/new) 2>/dev/null; echo done",
        ],
        mounts=[nsup.Mount(type="bind", source=str(tmp_path), target="/mnt", readonly=True)],
    )
    assert status.success
    assert out == "host\ndone\n"
    assert (tmp_path / "f").read_text() == "host"
    assert not (tmp_path / "new").exists()


async def test_read_only_bind_is_read_only_in_mountinfo_and_writes_fail_with_erofs(tmp_path):
    script = (
        "import os\n"
        "try:\n    open('/mnt/x', 'w')\nexcept OSError as e:\n    print(e.errno)\n"
        "print(os.statvfs('/mnt').f_flag & 1)\n"
    )
    status, out = await run(
        ["python3", "-I", "-S", "-c", script],
        mounts=[nsup.Mount(type="bind", source=str(tmp_path), target="/mnt", readonly=True)],
    )
    assert (status.success, out.split()) == (True, ["30", "1"])  # EROFS, ST_RDONLY


async def test_read_only_bind_is_recursive_and_keeps_locked_flags():
    """/sys/fs/cgroup is itself a mount (nosuid,nodev,noexec) with cgroup mounts beneath it.

    Bound read-only, the submounts are read-only too (mount_setattr AT_RECURSIVE),
    and the top keeps its own flags.
    """
    inner = "/sys/fs/cgroup/unified" if os.path.ismount("/sys/fs/cgroup/unified") else None
    if not os.path.ismount("/sys/fs/cgroup") or inner is None:
        pytest.skip("needs /sys/fs/cgroup mounted with a submount")
    script = (
        "import os\n"
        "for d in ('/mnt/x', '/mnt/unified/nsup-ro-test'):\n"
        "    try:\n        os.mkdir(d)\n    except OSError as e:\n        print(e.errno)\n"
        "print(os.statvfs('/mnt/unified').f_flag & 1, os.statvfs('/mnt').f_flag)\n"
    )
    status, out = await run(
        ["python3", "-I", "-S", "-c", script],
        mounts=[nsup.Mount(type="bind", source="/sys/fs/cgroup", target="/mnt", readonly=True)],
    )
    assert status.success
    # EROFS on the top and on the submount, the submount is read-only, and the top
    # kept every flag the host mount has (only ST_RDONLY added).
    assert out.split() == ["30", "30", "1", str(os.statvfs("/sys/fs/cgroup").f_flag | 1)]
    assert not os.path.exists("/sys/fs/cgroup/unified/nsup-ro-test")


def _kernel_at_least(major: int, minor: int) -> bool:
    release = os.uname().release.split("-")[0].split(".")
    return (int(release[0]), int(release[1])) >= (major, minor)


def test_mount_setattr_is_available_here():
    """On 5.12 and later the recursive path is the one the tests above exercise, not the fallback."""
    if not _kernel_at_least(5, 12):
        pytest.skip("mount_setattr(2) needs Linux 5.12; the fallback test below covers this kernel")
    assert _sys.probe_mount_setattr()
    with pytest.raises(FileNotFoundError):  # ENOENT, not ENOSYS
        _sys.mount_setattr("/no/such/path", _sys.MOUNT_ATTR_RDONLY)


# Runs in its own process and mount namespace, with the probe's answer forced to
# "no mount_setattr", as on a kernel before 5.12: the fallback must still make the
# bind read-only and keep the flags the kernel locks on the source mount.
_FALLBACK = """
import os, sys
from nsup._clone import child, syscalls
from nsup._clone.namespaces import CLONE_FLAGS
syscalls.unshare(CLONE_FLAGS["mount"])
syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
child.HAVE_MOUNT_SETATTR = False
syscalls.mount_setattr = None  # the fallback must not call it
source, target = sys.argv[1], sys.argv[2]
syscalls.mount(source, target, None, syscalls.MS_BIND | syscalls.MS_REC)
child._make_readonly(target)
try:
    os.mkdir(os.path.join(target, "x"))
except OSError as e:
    print(e.errno)
print(os.statvfs(target).f_flag)
"""


def test_read_only_fallback_before_mount_setattr(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to make a mount namespace")
    source = tmp_path / "src"
    target = tmp_path / "dst"
    source.mkdir()
    target.mkdir()
    # A nosuid,nodev source: a remount that dropped those flags would fail with EPERM
    # in a user namespace (the kernel locks them), so the fallback must keep them.
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "nosuid,nodev,size=1m", "nsup-src", str(source)], check=True
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", _FALLBACK, str(source), str(target)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    finally:
        subprocess.run(["umount", str(source)], check=True)
    flags = int(out[1])
    assert "30" == out[0]  # EROFS
    assert (1, 2, 4) == (flags & 1, flags & 2, flags & 4), out  # ST_RDONLY, ST_NOSUID, ST_NODEV
    assert not (target / "x").exists()


async def test_tmpfs_is_private_sized_and_has_its_mode(tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    script = (
        "import os, stat\n"
        f"s = os.statvfs({str(target)!r})\n"
        "print(s.f_blocks * s.f_frsize)\n"
        f"print(oct(stat.S_IMODE(os.stat({str(target)!r}).st_mode)))\n"
        f"open({str(target)!r} + '/inside', 'w').write('x')\n"
        "try:\n"
        f"    open({str(target)!r} + '/big', 'wb').write(b'0' * (2 << 20))\n"
        "except OSError as e:\n    print(e.errno)\n"
    )
    status, out = await run(
        ["python3", "-I", "-S", "-c", script],
        mounts=[nsup.Mount(type="tmpfs", target=str(target), size=1 << 20, mode=0o1777)],
    )
    assert status.success
    assert out.split() == [str(1 << 20), "0o1777", "28"]  # ENOSPC
    assert list(target.iterdir()) == []  # the host never saw it
    assert str(target) not in Path("/proc/self/mounts").read_text()


async def test_proc_mount_type():
    status, out = await run(
        ["sh", "-c", "ls /mnt | grep -c '^[0-9]'"],
        mounts=[nsup.Mount(type="proc", target="/mnt")],
    )
    assert status.success
    assert int(out) <= 4  # init, sh, ls, grep: only the new PID namespace's processes


# --- rootfs ---------------------------------------------------------------------


@pytest.fixture
def rootfs(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    for name in ("bin", "lib", "lib64", "sbin"):
        link = os.readlink(f"/{name}") if os.path.islink(f"/{name}") else None
        if link is not None:
            (root / name).symlink_to(link)
    (root / "marker").write_text("inside")
    return root


def _usr():
    return nsup.Mount(type="bind", source="/usr", target="/usr", readonly=True)


async def test_rootfs_child_sees_only_its_root(rootfs):
    if not os.path.islink("/bin"):
        pytest.skip("this test binds /usr alone, which needs a merged-/usr host")
    status, out = await run(
        [
            "sh",
            "-c",
            "ls -A /; echo --; ls /dev; echo --; cat /marker; echo; ls /proc | grep -c '^[0-9]'",
        ],
        rootfs=str(rootfs),
        mounts=[_usr()],
    )
    assert status.success, out
    top, dev, rest = out.split("--\n")
    assert sorted(top.split()) == ["bin", "dev", "lib", "lib64", "marker", "proc", "sbin", "usr"]
    assert sorted(dev.split()) == sorted(
        [
            "fd",
            "full",
            "null",
            "pts",
            "random",
            "shm",
            "stderr",
            "stdin",
            "stdout",
            "tty",
            "urandom",
            "zero",
        ]
    )
    marker, procs = rest.split()
    assert marker == "inside"
    assert int(procs) <= 4
    # nsup created the mount points it needed, and nothing is left mounted on the host.
    assert sorted(p.name for p in rootfs.iterdir()) == [
        "bin",
        "dev",
        "lib",
        "lib64",
        "marker",
        "proc",
        "sbin",
        "usr",
    ]
    assert str(rootfs) not in Path("/proc/self/mounts").read_text()


async def test_rootfs_holds_the_init_too(rootfs):
    """The init's root and working directory are the rootfs's: /proc/1/cwd is no way out."""
    if not os.path.islink("/bin"):
        pytest.skip("needs a merged-/usr host")
    status, out = await run(
        ["sh", "-c", "readlink /proc/1/root /proc/1/cwd; cat /proc/1/cwd/marker"],
        rootfs=str(rootfs),
        mounts=[_usr()],
    )
    assert (status.success, out.split()) == (True, ["/", "/", "inside"])


async def test_rootfs_devices_work(rootfs):
    if not os.path.islink("/bin"):
        pytest.skip("needs a merged-/usr host")
    status, out = await run(
        [
            "sh",
            "-c",
            "echo gone > /dev/null && head -c 4 /dev/zero | wc -c && head -c 8 /dev/urandom | wc -c",
        ],
        rootfs=str(rootfs),
        mounts=[_usr()],
    )
    assert (status.success, out.split()) == (True, ["4", "8"])


async def test_target_outside_the_rootfs_is_refused_before_start(rootfs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (rootfs / "escape").symlink_to(str(outside))
    with pytest.raises(nsup.SpawnError) as info:
        async with nsup.spawn(
            nsup.ProcessSpec(
                argv=["true"],
                rootfs=str(rootfs),
                mounts=[nsup.Mount(type="tmpfs", target="/escape")],
            )
        ):
            pass
    assert info.value.stage == "mount tmpfs on /escape"
    assert str(info.value) == (
        f"mount tmpfs on /escape: Invalid cross-device link; the target '/escape' leads outside "
        f"the rootfs {str(rootfs)!r} (it resolves to {str(outside)!r}), through a symlink or "
        "'..'; give a path that stays inside"
    )


def test_dotdot_target_is_a_spec_error(rootfs):
    with pytest.raises(nsup.SpecError) as info:
        nsup.ProcessSpec(
            argv=["true"], rootfs=str(rootfs), mounts=[nsup.Mount(type="tmpfs", target="/../etc")]
        )
    assert str(info.value) == (
        "mount target '/../etc' has a '..' component, which could lead outside the rootfs; "
        "write the path without '..'"
    )


async def test_missing_bind_source_names_source_and_target():
    mount = nsup.Mount(type="bind", source="/no/such/source", target="/mnt")
    with pytest.raises(nsup.SpawnError) as info:
        async with nsup.spawn(nsup.ProcessSpec(argv=["true"], mounts=[mount])):
            pass
    assert (info.value.stage, info.value.errno) == ("mount bind on /mnt", 2)
    assert str(info.value) == (
        "mount bind /no/such/source on /mnt: No such file or directory; the bind source "
        "'/no/such/source' does not exist on the host; create it or fix the path"
    )


async def test_a_missing_mount_point_on_the_host_is_refused_before_start(tmp_path):
    target = tmp_path / "data"
    mount = nsup.Mount(type="tmpfs", target=str(target))
    with pytest.raises(nsup.SpawnError) as info:
        async with nsup.spawn(nsup.ProcessSpec(argv=["true"], mounts=[mount])):
            pass
    assert (info.value.stage, info.value.errno) == (f"mount tmpfs on {target}", 2)
    assert f"the mount point '{target}' does not exist on the host" in str(info.value)
    assert not target.exists()


async def test_mount_points_are_made_on_an_earlier_tmpfs(tmp_path):
    mounts = [
        nsup.Mount(type="tmpfs", target=str(tmp_path)),
        nsup.Mount(type="tmpfs", target=f"{tmp_path}/a/b"),
    ]
    status, out = await run(["sh", "-c", f"cd {tmp_path}/a/b && echo here"], mounts=mounts)
    assert (status.success, out) == (True, "here\n")
    assert not (tmp_path / "a").exists()


async def test_missing_rootfs():
    with pytest.raises(nsup.SpawnError) as info:
        async with nsup.spawn(nsup.ProcessSpec(argv=["true"], rootfs="/no/such/root")):
            pass
    assert str(info.value) == (
        "rootfs /no/such/root: Not a directory; 'rootfs' must be an existing directory "
        "(got '/no/such/root')"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"type": "tmpfs", "target": "/t", "size": -1},
            "tmpfs size on '/t' must be positive (got -1)",
        ),
        ({"type": "tmpfs", "target": "t"}, "mount target must be an absolute path (got 't')"),
    ],
)
def test_bad_mounts(kwargs, message):
    with pytest.raises(
        ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"
    ):
        nsup.Mount(**kwargs)


def test_rootfs_needs_mount_namespace():
    with pytest.raises(nsup.SpecError, match="'rootfs' needs the 'mount' namespace"):
        nsup.ProcessSpec(argv=["true"], rootfs="/", namespaces=["pid"])


def test_exec_rootfs(rootfs):
    if not os.path.islink("/bin") or shutil.which("cat") is None:
        pytest.skip("needs a merged-/usr host")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nsup",
            "exec",
            "--rootfs",
            str(rootfs),
            "--ro-bind",
            "/usr:/usr",
            "--",
            "cat",
            "/marker",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "inside")
