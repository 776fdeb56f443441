"""One cgroup per child: limits, OOM evidence, and a handle on every descendant.

Some facts about cgroups that shape this module
-----------------------------------------------
* Two versions live side by side.  cgroup v2 is one hierarchy (usually at
  ``/sys/fs/cgroup``) whose controllers a cgroup offers in ``cgroup.controllers``
  and hands to its children through ``cgroup.subtree_control``.  cgroup v1 is
  one hierarchy per controller (or per group of controllers), each mounted on
  its own.  A controller lives in only one of them at a time: on a "hybrid"
  machine the cgroup2 hierarchy exists but has no memory, pids or cpu
  controller, because v1 holds them.  So the version is chosen per
  controller: v2 when nsup's own v2 cgroup offers it, else the v1 hierarchy
  that mounts it, else the limit cannot be applied and the spawn fails,
  naming the controller and why.
* v2 can place a child into a cgroup atomically at clone time
  (``CLONE_INTO_CGROUP`` with a directory fd); v1 cannot, so the child writes
  ``0`` (itself) into each v1 ``cgroup.procs`` as its first step, before it
  runs anything else.  The descriptors are opened here and passed in the
  request, so the child needs no path lookup (its mounts may hide
  ``/sys/fs/cgroup``).
* Every child gets a cgroup even without limits, where one can be made: in
  the v2 hierarchy if there is one (placement needs no controller), else in
  the v1 ``pids`` hierarchy.  That cgroup finds every descendant of a child
  that has no PID namespace, and gives the CPU time used (v2 ``cpu.stat``
  always has ``usage_usec``).  Without any writable hierarchy (rootless, no
  delegation) a child without limits simply has no cgroup.
* Cgroups are made beneath nsup's own cgroup in each hierarchy (from
  ``/proc/self/cgroup``), inside a per-supervisor directory ``nsup-<pid>``,
  never beside unrelated cgroups.  A cgroup can be removed only when no live
  task is in it, and a leftover child blocks its parent's removal, so each is
  removed once its process is reaped, after killing whatever escaped into it
  (``cgroup.kill`` on v2 where present, else SIGKILL through a pidfd to each
  pid in ``cgroup.procs``, checked to still be a member after the pidfd is
  opened).  ``nsup-<pid>`` directories of dead supervisors are removed when
  the next one makes its own (empty ones), and ``nsup run`` first kills what
  is still inside them (:func:`remove_stale_trees`).
* The kernel gives no event when a v1 cgroup empties, so emptying is the one
  place that polls, with a deadline.
* v2's "no internal processes" rule: a non-root cgroup with processes in it
  cannot enable controllers for its children.  Under systemd, run nsup in a
  unit with ``Delegate=yes``; the error says so.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import itertools
import os
import signal
import time
import warnings
from typing import TYPE_CHECKING, final

import attrs
import trio

from ._clone import syscalls as _sys
from ._errors import SpawnError
from ._rundir import sees_every_pid

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._limits import Limits

__all__ = [
    "CONTROLLERS",
    "Cgroup",
    "CgroupStatistics",
    "Layout",
    "create",
    "get_layout",
    "needed_controllers",
    "parse_layout",
    "remove_stale_trees",
]

CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000
_EMPTY_DEADLINE = 10.0
STALE_DEADLINE = 2.0  # seconds nsup run waits at start for a dead supervisor's processes to go


@attrs.frozen
class Hierarchy:
    """One mounted cgroup hierarchy and nsup's own cgroup in it.

    Attributes:
        version: 1 or 2.
        mount: where it is mounted.
        own: the directory of nsup's own cgroup in it.
        controllers: what it offers (v2: ``cgroup.controllers`` of ``own``).

    """

    version: int
    mount: str
    own: str
    controllers: frozenset[str]


@attrs.frozen
class Layout:
    """The cgroup hierarchies of this process: the v2 one and each v1 controller's."""

    v2: Hierarchy | None
    v1: dict[str, Hierarchy] = attrs.field(hash=False)

    def backing(self, controller: str) -> Hierarchy | str:
        """Return the hierarchy that holds *controller*, or a sentence saying why none does."""
        if self.v2 is not None and controller in self.v2.controllers:
            return self.v2
        if controller in self.v1:
            return self.v1[controller]
        if self.v2 is None:
            return (
                f"no cgroup hierarchy mounts the {controller} controller (see /proc/self/mountinfo)"
            )
        offered = " ".join(sorted(self.v2.controllers)) or "none"
        return (
            f"nsup's cgroup {self.v2.own} does not offer the {controller} controller "
            f"(cgroup.controllers: {offered}) and no cgroup v1 hierarchy mounts it; "
            "its parent must delegate it (systemd: Delegate=yes)"
        )

    @property
    def tracking(self) -> Hierarchy | None:
        """The hierarchy for a child's cgroup when no limit needs one: v2, else v1 pids."""
        return self.v2 or self.v1.get("pids")


def parse_layout(
    mountinfo: str,
    proc_cgroup: str,
    controllers_of: Callable[[str], frozenset[str]] | None = None,
) -> Layout:
    """Build a :class:`Layout` from ``/proc/self/mountinfo`` and ``/proc/self/cgroup`` text.

    *controllers_of* reads what a v2 cgroup directory offers (default: its
    ``cgroup.controllers``).
    """
    controllers_of = controllers_of or _read_controllers
    paths: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        number, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if number == "0" and not names:
            paths[""] = path
        for name in names.split(","):
            if name:
                paths[name] = path
    v2 = None
    v1: dict[str, Hierarchy] = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        sep = fields.index("-")
        root, mount, fstype, options = fields[3], fields[4], fields[sep + 1], fields[sep + 3]
        mount = mount.replace("\\040", " ")
        if fstype == "cgroup2" and v2 is None and "" in paths:
            own = _own_dir(mount, root, paths[""])
            v2 = Hierarchy(2, mount, own, controllers_of(own))
        elif fstype == "cgroup":
            mounted = [o for o in options.split(",") if o in CONTROLLERS]
            for name in mounted:
                if name not in v1 and name in paths:
                    own = _own_dir(mount, root, paths[name])
                    v1[name] = Hierarchy(1, mount, own, frozenset(mounted))
    return Layout(v2, v1)


def _own_dir(mount: str, root: str, path: str) -> str:
    if root != "/" and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    return os.path.join(mount, path.lstrip("/")).rstrip("/") or "/"


def _read_controllers(own: str) -> frozenset[str]:
    try:
        with open(os.path.join(own, "cgroup.controllers")) as f:
            return frozenset(f.read().split())
    except OSError:
        return frozenset()


_layout: Layout | None = None
_bases: dict[str, str] = {}
_counter = itertools.count()


def get_layout() -> Layout:
    """Return this process's cgroup layout, read once."""
    global _layout  # noqa: PLW0603 - probed once per process, as the zygote is started once
    if _layout is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
        with open("/proc/self/cgroup") as f:
            proc_cgroup = f.read()
        _layout = parse_layout(mountinfo, proc_cgroup)
    return _layout


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _keyed(path: str) -> dict[str, int]:
    """Read a flat keyed file (``memory.events``, ``cpu.stat``) into a dict."""
    result = {}
    try:
        for line in _read(path).splitlines():
            key, _, value = line.partition(" ")
            if value.strip().lstrip("-").isdigit():
                result[key] = int(value)
    except OSError:
        pass
    return result


def _remove_stale(own: str) -> None:
    """Remove ``nsup-<pid>`` trees left by supervisors that died (empty ones only).

    Not inside a nested PID namespace: a live supervisor outside has no
    ``/proc`` entry there, and its empty cgroups (one made for a spawn in
    flight, say) would go, failing that clone3 with ENOENT.
    """
    if not sees_every_pid():
        return
    for base in _dead_bases(own):
        for child in _subdirs(base):
            _rmdir_quiet(child)
        _rmdir_quiet(base)


def _dead_bases(own: str) -> list[str]:
    """Return the ``nsup-<pid>`` directories in *own* whose supervisor is gone."""
    try:
        names = os.listdir(own)
    except OSError:
        return []
    return [
        os.path.join(own, name)
        for name in names
        if name.startswith("nsup-")
        and name[5:].isdigit()
        and not os.path.exists(f"/proc/{name[5:]}")
    ]


def _kill_members(path: str) -> int:
    """SIGKILL every process in the cgroup at *path*; return how many there were."""
    try:
        pids = [int(p) for p in _read(os.path.join(path, "cgroup.procs")).split()]
    except OSError:
        return 0
    with contextlib.suppress(OSError):
        _write(os.path.join(path, "cgroup.kill"), "1")  # v2, Linux 5.14+

    def still_member(pid: int) -> bool:
        try:
            return str(pid) in _read(os.path.join(path, "cgroup.procs")).split()
        except OSError:
            return False

    for pid in pids:
        _sys.signal_pid(pid, signal.SIGKILL, functools.partial(still_member, pid))
    return len(pids)


def remove_stale_trees(deadline: float = STALE_DEADLINE) -> tuple[list[str], int]:
    """Kill what dead supervisors left in their cgroups and remove those cgroups.

    Called by ``nsup run`` before it starts anything (not on the event loop:
    it polls, with *deadline* seconds at most, until the killed processes have
    left).  Only ``nsup-<pid>`` trees whose pid no longer exists are touched,
    so supervisors running beside this one keep theirs.

    Inside a nested PID namespace nothing is touched (see
    :func:`nsup._rundir.sees_every_pid`).

    Returns:
        The base directories removed, and how many processes were killed.

    """
    if not sees_every_pid():
        return [], 0  # the pid in a base's name may be one this namespace cannot see
    try:
        layout = get_layout()
    except OSError:
        return [], 0
    owns = {h.own for h in [layout.v2, *layout.v1.values()] if h is not None}
    bases = [base for own in sorted(owns) for base in _dead_bases(own)]
    killed = 0
    for base in bases:
        for child in _subdirs(base):
            killed += _kill_members(child)
    end = time.monotonic() + deadline
    removed = []
    for base in bases:
        while True:
            for child in _subdirs(base):
                _rmdir_quiet(child)
            _rmdir_quiet(base)
            if not os.path.exists(base) or time.monotonic() > end:
                break
            time.sleep(0.01)  # no event for "this cgroup is empty" on v1; bounded by the deadline
        if not os.path.exists(base):
            removed.append(base)
    return removed, killed


def _subdirs(path: str) -> list[str]:
    try:
        return [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _rmdir_quiet(path: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(path)


def _base(hierarchy: Hierarchy, controllers: set[str]) -> str:
    """Return (making it once) this supervisor's ``nsup-<pid>`` directory in *hierarchy*.

    On v2, *controllers* are enabled for children in nsup's own cgroup and in
    the base directory first.
    """
    base = _bases.get(hierarchy.mount)
    if base is None:
        _remove_stale(hierarchy.own)
        base = os.path.join(hierarchy.own, f"nsup-{os.getpid()}")
        try:
            os.mkdir(base, 0o755)
        except FileExistsError:
            pass
        _bases[hierarchy.mount] = base
    if hierarchy.version == 2 and controllers:
        for where in (hierarchy.own, base):
            enabled = set(_read(os.path.join(where, "cgroup.subtree_control")).split())
            missing = controllers - enabled
            if missing:
                wanted = " ".join(f"+{c}" for c in sorted(missing))
                try:
                    _write(os.path.join(where, "cgroup.subtree_control"), wanted)
                except OSError as exc:
                    why = exc.strerror
                    if exc.errno == errno.EBUSY:
                        why = (
                            "it has processes of its own, and cgroup v2 lets only a cgroup "
                            "without processes hand controllers to its children; run nsup in "
                            "a cgroup of its own (systemd: Delegate=yes)"
                        )
                    raise OSError(
                        exc.errno, f"enabling {wanted} in {where}/cgroup.subtree_control: {why}"
                    ) from None
    return base


def _remove_bases() -> None:
    for base in _bases.values():
        _rmdir_quiet(base)
    _bases.clear()


atexit.register(_remove_bases)


@final
@attrs.frozen
class CgroupStatistics:
    """What a child's cgroup has counted; ``None`` where no hierarchy counts it.

    Attributes:
        cpu_seconds: CPU time used by every process in it.
        cpu_throttled_seconds: time its processes were held back by ``cpu``.
        cpu_periods_throttled: how many scheduling periods were throttled.
        memory_bytes: memory charged to it now.
        memory_peak_bytes: the most memory charged to it at once (v2
            ``memory.peak``, Linux 5.19; v1 ``memory.max_usage_in_bytes``).
        pids: tasks in it now.
        oom_kills: processes the OOM killer ended in it.

    """

    cpu_seconds: float | None = None
    cpu_throttled_seconds: float | None = None
    cpu_periods_throttled: int | None = None
    memory_bytes: int | None = None
    pids: int | None = None
    oom_kills: int = 0
    memory_peak_bytes: int | None = None


class Cgroup:
    """The cgroup directories of one child, in each hierarchy it needs.

    Attributes:
        paths: ``"v2"`` or a v1 controller name -> directory.
        dir_fd: an open v2 directory for ``CLONE_INTO_CGROUP``, or -1.
        join_fds: ``(hierarchy, fd)`` for each v1 ``cgroup.procs`` the child
            must write itself into.

    """

    def __init__(self) -> None:
        self.paths: dict[str, str] = {}
        self.dir_fd = -1
        self.join_fds: list[tuple[str, int]] = []
        self._closed = False

    def __repr__(self) -> str:
        """Show the directories."""
        return f"<nsup cgroup {sorted(self.paths.values())}>"

    def _file(self, controller: str, v2_name: str, v1_name: str) -> str | None:
        v2 = self.paths.get("v2")
        if v2 is not None and v2_name and get_layout().backing(controller) is get_layout().v2:
            return os.path.join(v2, v2_name)
        v1 = self.paths.get(controller)
        return os.path.join(v1, v1_name) if v1 is not None and v1_name else None

    def oom_kills(self) -> int:
        """Return how many processes the kernel's OOM killer ended in this cgroup."""
        path = self._file("memory", "memory.events", "memory.oom_control")
        if path is None:
            return 0
        counts = _keyed(path)
        if "oom_kill" in counts:
            return counts["oom_kill"]
        # Linux < 4.13 has no oom_kill count in v1: hitting the limit is the best evidence.
        failcnt = _keyed(os.path.join(os.path.dirname(path), "memory.failcnt"))
        return 1 if failcnt else 0

    def statistics(self) -> CgroupStatistics:
        """Read what the cgroup has counted so far."""
        cpu_seconds = throttled = periods = memory = pids = None
        v2 = self.paths.get("v2")
        if v2 is not None:
            stat = _keyed(os.path.join(v2, "cpu.stat"))
            if "usage_usec" in stat:
                cpu_seconds = stat["usage_usec"] / 1e6
            if "throttled_usec" in stat:
                throttled = stat["throttled_usec"] / 1e6
                periods = stat.get("nr_throttled")
        cpu_v1 = self.paths.get("cpu")
        if cpu_v1 is not None:
            stat = _keyed(os.path.join(cpu_v1, "cpu.stat"))
            if "throttled_time" in stat:
                throttled = stat["throttled_time"] / 1e9
                periods = stat.get("nr_throttled")
            if cpu_seconds is None:
                usage = _number(os.path.join(cpu_v1, "cpuacct.usage"))
                cpu_seconds = None if usage is None else usage / 1e9
        path = self._file("memory", "memory.current", "memory.usage_in_bytes")
        if path is not None:
            memory = _number(path)
        path = self._file("memory", "memory.peak", "memory.max_usage_in_bytes")
        peak = None if path is None else _number(path)
        path = self._file("pids", "pids.current", "pids.current")
        if path is not None:
            pids = _number(path)
        elif self.paths:
            pids = len(self.members())
        return CgroupStatistics(
            cpu_seconds, throttled, periods, memory, pids, self.oom_kills(), memory_peak_bytes=peak
        )

    def members(self) -> set[int]:
        """Return the pids in any of this child's cgroups."""
        found: set[int] = set()
        for path in self.paths.values():
            try:
                found.update(int(p) for p in _read(os.path.join(path, "cgroup.procs")).split())
            except OSError:
                pass
        return found

    def is_member(self, pid: int) -> bool:
        """True while *pid* is in this cgroup."""
        return pid in self.members()

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup: ``cgroup.kill`` where present, else each pid."""
        v2 = self.paths.get("v2")
        if v2 is not None:
            try:
                _write(os.path.join(v2, "cgroup.kill"), "1")
            except OSError:
                pass  # Linux < 5.14: by pid below
        for pid in self.members():
            # The pid might have been recycled between reading cgroup.procs and
            # pidfd_open: signal it only if that process is still a member.
            _sys.signal_pid(pid, signal.SIGKILL, functools.partial(self.is_member, pid))

    def close_fds(self) -> None:
        """Close the descriptors handed to the zygote (the child has its own copies)."""
        for fd in [self.dir_fd, *(fd for _, fd in self.join_fds)]:
            if fd >= 0:
                os.close(fd)
        self.dir_fd = -1
        self.join_fds = []

    def remove_now(self) -> bool:
        """Kill what is inside and try to remove every directory once; True when all are gone."""
        self.close_fds()
        if self.members():
            self.kill_all()
        remaining = {}
        for key, path in self.paths.items():
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError:
                remaining[key] = path
        self.paths = remaining
        return not remaining

    async def aclose(self) -> None:
        """Kill what escaped into the cgroup, wait until it is empty, and remove it.

        The kernel gives no event when a v1 cgroup empties, so this polls, with
        a deadline; a cgroup that will not empty is left with a warning.
        """
        if self._closed:
            return
        with trio.CancelScope(shield=True):
            delay = 0.001
            with trio.move_on_after(_EMPTY_DEADLINE):
                while not self.remove_now():
                    await trio.sleep(delay)
                    delay = min(delay * 2, 0.05)
        self._closed = True
        if self.paths:
            warnings.warn(
                f"nsup: could not remove cgroups {sorted(self.paths.values())}: "
                f"processes {sorted(self.members())} would not exit",
                RuntimeWarning,
                stacklevel=2,
            )


def _number(path: str) -> int | None:
    try:
        return int(_read(path).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _limit_files(controller: str, version: int, limits: Limits) -> list[tuple[str, str]]:
    """Return the files to write in a child's cgroup for *controller*, in order."""
    if controller == "memory":
        assert limits.memory is not None  # noqa: S101 - only asked for when set
        name = "memory.max" if version == 2 else "memory.limit_in_bytes"
        return [(name, str(limits.memory))]
    if controller == "pids":
        return [("pids.max", str(limits.pids))]
    assert limits.cpu is not None  # noqa: S101 - only asked for when set
    quota = max(1000, round(limits.cpu * CPU_PERIOD_US))
    if version == 2:
        return [("cpu.max", f"{quota} {CPU_PERIOD_US}")]
    return [("cpu.cfs_period_us", str(CPU_PERIOD_US)), ("cpu.cfs_quota_us", str(quota))]


def needed_controllers(limits: Limits) -> list[str]:
    """Return the controllers *limits* needs, in :data:`CONTROLLERS` order."""
    given = {"memory": limits.memory, "pids": limits.pids, "cpu": limits.cpu}
    return [c for c in CONTROLLERS if given[c] is not None]


def _fail(controller: str, err: int, why: str) -> SpawnError:
    return SpawnError(
        err,
        f"cgroup {controller}: cannot apply the {controller} limit: {why}",
        f"cgroup {controller}",
    )


def create(limits: Limits) -> Cgroup | None:
    """Make the cgroups one child needs, with *limits* written; None if no hierarchy is usable.

    A limit that cannot be applied raises; a child without limits whose
    cgroup cannot be made (no writable hierarchy) gets None.

    Raises:
        nsup.SpawnError: a limit's controller is missing, or a cgroup could not
            be made or written; the message names the controller and why.

    """
    plan = _plan(get_layout(), needed_controllers(limits))
    cgroup = Cgroup()
    name = f"{next(_counter)}"
    try:
        for key, (hierarchy, controllers) in plan.items():
            _make_one(cgroup, key, hierarchy, controllers, name=name, limits=limits)
    except BaseException:
        cgroup.remove_now()
        raise
    if not cgroup.paths:
        return None
    return cgroup


def _plan(layout: Layout, needed: list[str]) -> dict[str, tuple[Hierarchy, list[str]]]:
    """Return, per hierarchy key (``"v2"`` or a v1 controller), where to make the cgroup and why.

    Raises:
        nsup.SpawnError: no hierarchy holds a needed controller.

    """
    plan: dict[str, tuple[Hierarchy, list[str]]] = {}
    for controller in needed:
        backing = layout.backing(controller)
        if isinstance(backing, str):
            raise _fail(controller, errno.ENOENT, backing)
        key = "v2" if backing.version == 2 else controller
        plan.setdefault(key, (backing, []))[1].append(controller)
    tracking = layout.tracking
    if tracking is not None:
        plan.setdefault("v2" if tracking.version == 2 else "pids", (tracking, []))
    return plan


def _make_one(  # noqa: PLR0913 - the one place a plan row, its name and the limits meet
    cgroup: Cgroup,
    key: str,
    hierarchy: Hierarchy,
    controllers: list[str],
    *,
    name: str,
    limits: Limits,
) -> None:
    what = controllers[0] if controllers else "placement"
    try:
        base = _base(hierarchy, set(controllers))
        path = os.path.join(base, name)
        os.mkdir(path, 0o755)
    except OSError as exc:
        if not controllers:
            return  # no limit asked for here: the child just has no cgroup in this hierarchy
        raise _fail(what, exc.errno or 0, f"cannot create its cgroup: {exc.strerror}") from None
    cgroup.paths[key] = path
    for controller in controllers:
        for filename, value in _limit_files(controller, hierarchy.version, limits):
            try:
                _write(os.path.join(path, filename), value)
            except OSError as exc:
                raise _fail(
                    controller,
                    exc.errno or 0,
                    f"writing {value} to {path}/{filename}: {exc.strerror}",
                ) from None
    if hierarchy.version == 2:
        cgroup.dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    else:
        fd = os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        cgroup.join_fds.append((key, fd))
