"""Restart, stop, idle CPU and scale of nsup, side by side with supervisord and circus.

Run as root from the repository (the venv's Python has nsup installed)::

    .venv/bin/python bench/restart.py [--quick] [--json]

supervisord and circus come from ``bench/.venv-compare`` (made with pip on the
first run), else from PATH; if neither works their rows say why and the rest
still runs.  Every supervisor gets the same services, restart "always" and no
restart delay:

- restart: a service that lives 30 ms and exits 0; the kernel's process
  events (the netlink proc connector) time each exit and the replacement's
  exec, so one clock measures every supervisor alike;
- stop: 10 services that exit at once on SIGTERM; the time the stop call takes,
  and how long after the last service's exit it returns;
- idle: 100 ``sleep infinity``; the supervisor's CPU time and wakeups over a
  quiet window;
- scale: 1,000 ``sleep infinity`` started by one supervisor, then SIGTERM to it.

The targets (bench/README.md, "The targets") are printed with PASS/MISS: a
benchmark verdict, not an assertion.  The exit code is 0 whatever the verdict.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import os
import platform
import resource
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from nsup._engine.supervisor import open_supervisor
from nsup._policy import Policy

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

BENCH = Path(__file__).resolve().parent
COMPARE_VENV = BENCH / ".venv-compare"
DEFAULT_NS = None  # nsup's default namespaces (pid, mount, uts, ipc with its init)
NO_NS: list[str] = []
RESTART_TARGET_MS = 5.0  # median, child exit to replacement exec'd
STOP_TARGET_MS = 10.0  # the stop call returns within this of the last exit
IDLE_CPU_TARGET_MS = 1.0  # "~0": at most this much CPU over the idle window ...
IDLE_WAKEUP_TARGET = 0  # ... and no wakeups
CIRCUS_CHECK_DELAY = 1.0  # circusd's file default is 5 s; 1 s is its Arbiter default
LIFETIME = 0.03  # seconds each restart-test child lives
STOP_SERVICES = 10
UP_TIMEOUT = 60.0  # seconds for a small set of services to come up
STOP_GRACE = 60.0  # seconds a supervisor gets to stop on SIGTERM before SIGKILL
WALL = 0x40000000  # __WALL: also wait for children made with a zero exit signal
PR_SET_CHILD_SUBREAPER = 36


# ---------------------------------------------------------------- processes


def children(pid: int) -> list[int]:
    """The pids of *pid*'s children, from every thread's ``children`` list in /proc."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += map(int, (task / "children").read_text().split())
    return found


def descendants(pid: int) -> list[int]:
    """Every process below *pid*, breadth first."""
    found, queue = [], [pid]
    while queue:
        kids = children(queue.pop(0))
        found += kids
        queue += kids
    return found


def cmdline(pid: int) -> list[bytes]:
    """``/proc/<pid>/cmdline`` split on NULs; empty if it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    except OSError:
        return []


@dataclass
class Child:
    """A process this bench started (in a new session), held by a pidfd until reaped."""

    popen: subprocess.Popen[bytes]
    pidfd: int
    stderr: Path
    status: int | None = None  # wait status once reaped
    rusage: Any = None

    @property
    def pid(self) -> int:
        """The child's pid (also its process group id)."""
        return self.popen.pid

    def alive(self) -> bool:
        """True until the process has exited (it may still await reaping)."""
        return self.status is None and not select.select([self.pidfd], [], [], 0)[0]

    def signal(self, signo: int) -> None:
        """Send *signo* through the pidfd (safe: only we reap this pid)."""
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signo)

    def wait_exit(self, timeout: float, sample: Callable[[], None] | None = None) -> bool:
        """Wait until it exits (not reaped yet); call *sample* every 20 ms meanwhile."""
        deadline = time.monotonic() + timeout
        while self.status is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if select.select([self.pidfd], [], [], min(left, 0.02))[0]:
                return True
            if sample is not None:
                sample()
        return True

    def reap(self) -> None:
        """Collect its status and resource usage; close the pidfd."""
        if self.status is None:
            _, self.status, self.rusage = os.wait4(self.pid, 0)
            self.popen.returncode = os.waitstatus_to_exitcode(self.status)
            os.close(self.pidfd)

    def end(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, then SIGKILL to its whole process group after *grace*; reap."""
        if self.status is not None:
            return
        self.signal(signal.SIGTERM)
        if not self.wait_exit(grace):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)  # pgid == pid: start_new_session, unreaped
            self.wait_exit(10.0)
        self.reap()

    def error_tail(self, lines: int = 3) -> str:
        """The last lines of its stderr, for an error message."""
        try:
            text = self.stderr.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])[:400]


class Processes:
    """Every process the bench starts; ``sweep`` stops and reaps them and any orphan.

    The bench is a child subreaper, so services that a dead supervisor leaves
    behind are reparented to it; ``sweep`` kills those through pidfds and reaps
    them.  Nothing is ever signalled by name.
    """

    def __init__(self) -> None:
        """Become a subreaper; track nothing yet."""
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
        self.started: list[Child] = []
        self.spare: set[int] = set()  # nsup's own helpers in this process (its zygote)

    def spare_new(self, before: set[int]) -> None:
        """Leave alone the children made since *before* that we did not start.

        The in-process nsup API starts a zygote (one per thread, ended by nsup
        at exit); it is ours but neither a service nor an orphan.
        """
        mine = {c.pid for c in self.started}
        self.spare |= set(children(os.getpid())) - before - mine

    def orphans(self) -> list[int]:
        """Our children that no Popen holds and nsup does not own: what supervisors left behind."""
        mine = {c.pid for c in self.started if c.status is None}
        return [pid for pid in children(os.getpid()) if pid not in self.spare and pid not in mine]

    def start(self, argv: list[str], stderr: Path, cwd: Path | None = None) -> Child:
        """Start *argv* in a new session, stdout to /dev/null, stderr to the file *stderr*."""
        with stderr.open("wb") as err:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=cwd,
                start_new_session=True,
            )
        try:
            child = Child(popen, os.pidfd_open(popen.pid), stderr)
        except BaseException:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
            raise
        self.started.append(child)
        return child

    def sweep(self) -> int:
        """End every started process, then kill and reap every orphan; return the orphans."""
        for child in self.started:
            with contextlib.suppress(OSError):
                child.end(grace=5.0)
        orphans: set[int] = set()
        unreaped: set[int] = set()
        quiet_since = time.monotonic()
        deadline = quiet_since + 15.0
        while time.monotonic() < deadline:
            kids = self.orphans()
            if kids:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 0.2:
                break
            orphans.update(kids)
            unreaped.update(kids)
            for pid in kids:
                kill_own_child(pid)
            reap_orphans(unreaped)
            time.sleep(0.01)
        return len(orphans)


def describe(pids: list[int]) -> str:
    """A short description of some processes: pid and command line."""
    return ", ".join(
        f"{pid} {b' '.join(cmdline(pid)).decode(errors='replace')[:60]!r}" for pid in pids[:3]
    )


def kill_own_child(pid: int) -> None:
    """SIGKILL *pid* through a pidfd, if it is (still) our child once the pidfd pins it."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if pid in children(os.getpid()):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


def reap_orphans(pids: set[int]) -> None:
    """Reap those of *pids* that have exited (orphans: no Popen holds them)."""
    for pid in list(pids):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG | WALL)
        except ChildProcessError:
            done = pid  # reaped already
        if done:
            pids.discard(pid)


# ---------------------------------------------------------------- /proc readings


def cpu_ns(pid: int) -> tuple[int, int]:
    """(utime+stime in ns from /proc/<pid>/stat, on-CPU ns summed over threads' schedstat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    sched = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            sched += int((task / "schedstat").read_text().split()[0])
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK"), sched


def switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches summed over every thread of *pid*."""
    vol = invol = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    invol += int(line.split()[1])
    return vol, invol


def vm_hwm_kb(pid: int) -> int | None:
    """Peak resident set (VmHWM) of *pid* in kB, or None if it is gone or a zombie."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


# ---------------------------------------------------------------- kernel process events


class ProcEvents:
    """Exit and exec times of marked processes, from the kernel (netlink proc connector).

    Each event carries the kernel's own CLOCK_MONOTONIC timestamp, taken in
    ``do_exit`` and in ``exec``: nothing on the supervisor's side of the clock.
    A process is *marked* when its exec'd command line contains one of the
    marker strings; its exit is recorded too.
    """

    NETLINK_CONNECTOR = 11
    CN_IDX_PROC = 1
    LISTEN = 1
    IGNORE = 2
    EXEC = 0x2
    EXIT = 0x80000000

    def __init__(self) -> None:
        """Subscribe to process events (needs root)."""
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, self.NETLINK_CONNECTOR)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, self.CN_IDX_PROC))
        self.sock.settimeout(0.1)
        self.markers: dict[bytes, list[tuple[str, int, int]]] = {}  # marker -> (kind, ns, pid)
        self.marked: dict[int, bytes] = {}
        self.lost = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._control(self.LISTEN)
        self._thread = threading.Thread(target=self._loop, name="proc-events", daemon=True)
        self._thread.start()

    def _control(self, op: int) -> None:
        cn = struct.pack("=IIIIHH", self.CN_IDX_PROC, 1, 0, 0, 4, 0) + struct.pack("=I", op)
        header = struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0)  # NLMSG_DONE
        self.sock.send(header + cn)

    def watch(self, marker: str) -> None:
        """Record the processes whose command line contains *marker* from now on."""
        with self._lock:
            self.markers[marker.encode()] = []

    def events(self, marker: str) -> list[tuple[str, int, int]]:
        """A copy of ``(kind, monotonic ns, pid)`` recorded for *marker* so far."""
        with self._lock:
            return list(self.markers.get(marker.encode(), []))

    def execs(self, marker: str) -> int:
        """How many marked execs so far."""
        return sum(kind == "exec" for kind, _, _ in self.events(marker))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # ENOBUFS: the kernel dropped events
                self.lost += 1
                continue
            offset = 0
            while offset + 16 <= len(data):
                length = struct.unpack_from("=I", data, offset)[0]
                self._event(data, offset + 16 + 20)  # nlmsghdr, then cn_msg
                offset += max((length + 3) & ~3, 16)

    def _event(self, data: bytes, at: int) -> None:
        if at + 24 > len(data):
            return
        what, _cpu, stamp, pid, tgid = struct.unpack_from("=IIQII", data, at)
        if what == self.EXEC and pid == tgid:
            line = b" ".join(cmdline(pid))
            for marker in self.markers:
                if marker in line:
                    with self._lock:
                        self.marked[pid] = marker
                        self.markers[marker].append(("exec", stamp, pid))
        elif what == self.EXIT and pid == tgid and pid in self.marked:
            with self._lock:
                marker = self.marked.pop(pid)
                self.markers[marker].append(("exit", stamp, pid))

    def close(self) -> None:
        """Stop listening."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._control(self.IGNORE)
        self._thread.join(timeout=2.0)
        self.sock.close()


def exit_to_exec_ms(events: list[tuple[str, int, int]]) -> list[float]:
    """The gap from each marked exit to the next marked exec, in ms."""
    gaps, last_exit = [], None
    for kind, stamp, _ in sorted(events, key=lambda e: e[1]):
        if kind == "exit":
            last_exit = stamp
        elif last_exit is not None:
            gaps.append((stamp - last_exit) / 1e6)
            last_exit = None
    return gaps


# ---------------------------------------------------------------- the supervisors


@dataclass
class Tools:
    """Where supervisord and circus live, or why they are unavailable."""

    supervisord: str | None = None
    supervisorctl: str | None = None
    circusd: str | None = None
    circusctl: str | None = None
    circus_python: str | None = None  # an interpreter that imports circus
    notes: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)


def _shebang(script: str) -> str | None:
    with contextlib.suppress(OSError), Path(script).open("rb") as f:
        first = f.readline()
        if first.startswith(b"#!"):
            return first[2:].decode().split()[0]
    return None


def _version(python: str, module: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({module!r}))"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.stdout.decode().strip()


def find_tools(*, install: bool) -> Tools:
    """supervisord and circus: the bench venv, else PATH, else install into the bench venv."""
    tools = Tools()
    vbin = COMPARE_VENV / "bin"
    if not (vbin / "supervisord").exists() or not (vbin / "circusd").exists():
        on_path = all(
            shutil.which(t) for t in ("supervisord", "supervisorctl", "circusd", "circusctl")
        )
        if not on_path and install:
            why = install_compare_venv()
            if why is not None:
                tools.notes.append(f"supervisord/circus: {why}; their rows are skipped")
    for name in ("supervisord", "supervisorctl", "circusd", "circusctl"):
        path = vbin / name
        setattr(tools, name, str(path) if path.exists() else shutil.which(name))
    find_versions(tools)
    if not (tools.supervisord and tools.supervisorctl):
        tools.notes.append("supervisord: not available; its rows are skipped")
    if not (tools.circusd and tools.circus_python):
        tools.notes.append("circus: not available; its rows are skipped")
    return tools


def find_versions(tools: Tools) -> None:
    """Fill in circus's interpreter and the compared versions."""
    if tools.circusd:
        python = _shebang(tools.circusd)
        tools.circus_python = python if python and Path(python).exists() else None
        if tools.circus_python:
            tools.versions["circus"] = _version(tools.circus_python, "circus")
            tools.versions["tornado"] = _version(tools.circus_python, "tornado")
    if tools.supervisord:
        python = _shebang(tools.supervisord)
        if python and Path(python).exists():
            tools.versions["supervisor"] = _version(python, "supervisor")


def install_compare_venv() -> str | None:
    """``python3 -m venv bench/.venv-compare`` + ``pip install supervisor circus``; None or why not."""
    print(
        f"bench/restart.py: installing supervisor and circus into {COMPARE_VENV} ...",
        file=sys.stderr,
    )
    python = shutil.which("python3") or sys.executable
    steps = [
        [python, "-m", "venv", str(COMPARE_VENV)],
        [str(COMPARE_VENV / "bin" / "pip"), "install", "-q", "supervisor", "circus"],
    ]
    for argv in steps:
        try:
            result = subprocess.run(argv, capture_output=True, check=False, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{' '.join(argv[:3])} failed: {type(exc).__name__}: {exc}"
        if result.returncode != 0:
            lines = result.stderr.decode(errors="replace").strip().splitlines()
            return f"{' '.join(argv[:3])} exited {result.returncode}: {(lines or [''])[-1][:200]}"
    return None


def toml_value(value: Any) -> str:
    """A TOML literal for the few types our policies use."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def nsup_policy(
    argv: list[str], count: int, namespaces: list[str] | None, *, init: bool = True
) -> dict[str, Any]:
    """The policy every nsup row runs: restart always, no backoff, output dropped."""
    service: dict[str, Any] = {
        "command": argv,
        "restart": "always",
        "backoff": {"initial": 0, "jitter": 0},
        "instances": count,
        "stdout": "null",
        "stderr": "null",
        "stop": {"timeout": "10s"},
    }
    if namespaces is not None:
        service["namespaces"] = namespaces
    if not init:
        service["init"] = False
    return {
        "supervisor": {"max_restarts": 1_000_000, "within": "1s"},
        "services": {"svc": service},
    }


def nsup_toml(policy: dict[str, Any]) -> str:
    """*policy* as the TOML ``nsup run`` reads."""
    lines = []
    for section, table in (("supervisor", policy["supervisor"]), *policy["services"].items()):
        name = section if section == "supervisor" else f"services.{section}"
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def supervisord_conf(work: Path, argv: list[str], count: int) -> str:
    """supervisord configured like nsup: autorestart, startsecs=0, output dropped."""
    command = " ".join(argv)
    return f"""[unix_http_server]
file={work}/supervisor.sock

[supervisord]
nodaemon=true
logfile={work}/supervisord.log
pidfile={work}/supervisord.pid
childlogdir={work}
minfds={4 * count + 256}
user=root

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{work}/supervisor.sock

[program:svc]
command={command}
process_name=%(program_name)s_%(process_num)d
numprocs={count}
autorestart=true
startsecs=0
startretries=1000000
stopwaitsecs=10
stdout_logfile=NONE
stderr_logfile=NONE
"""


def circus_ini(work: Path, argv: list[str], count: int) -> str:
    """circusd configured like nsup: respawn, no warm-up delay, check every second."""
    return f"""[circus]
endpoint = ipc://{work}/circus.sock
pubsub_endpoint = ipc://{work}/circus-pub.sock
check_delay = {CIRCUS_CHECK_DELAY}
statsd = false

[watcher:svc]
cmd = {" ".join(argv)}
numprocesses = {count}
respawn = true
warmup_delay = 0
max_retry = -1
graceful_timeout = 10
"""


CIRCUS_DRIVER = """\
import json, sys, time
from circus.client import CircusClient
client = CircusClient(endpoint=sys.argv[1], timeout=120)
props = {"waiting": True}
t0 = time.time()
reply = client.call({"command": sys.argv[2], "properties": props})
t1 = time.time()
print(json.dumps({"t0": t0, "t1": t1, "status": reply.get("status"), "reason": reply.get("reason")}))
"""


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket, for supervisord's XML-RPC."""

    def __init__(self, path: str) -> None:
        """Remember *path*; connect lazily."""
        super().__init__("localhost", timeout=120)
        self.path = path

    def connect(self) -> None:
        """Connect to the socket file."""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(120)
        self.sock.connect(self.path)


class UnixTransport(xmlrpc.client.Transport):
    """An XML-RPC transport to a Unix socket."""

    def __init__(self, path: str) -> None:
        """Remember *path*."""
        super().__init__()
        self.path = path

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        """A fresh connection to the socket."""
        del host
        return UnixHTTPConnection(self.path)


@dataclass
class Kind:
    """One supervisor configuration: a row label and how to launch and query it."""

    label: str
    kind: str  # "nsup", "supervisord", "circus" or "floor"
    namespaces: list[str] | None = None  # nsup only; None = nsup's default
    init: bool = True  # nsup only; False: the command itself, no init (one descriptor less)

    @property
    def ns_label(self) -> str:
        """How the row's isolation is shown."""
        if self.kind != "nsup":
            return "none"
        label = "default" if self.namespaces is None else ",".join(self.namespaces) or "[]"
        return label if self.init else f"{label}, init = false"


NSUP_DEFAULT = Kind("nsup run", "nsup", DEFAULT_NS)
NSUP_NONE = Kind("nsup run", "nsup", NO_NS)
# The 10,000-service row: without an init each service holds one descriptor (its pidfd), not
# two (and the init's report pipe); 10,000 with the init need a hard RLIMIT_NOFILE above 20,000.
NSUP_BIG = Kind("nsup run", "nsup", NO_NS, init=False)
SUPERVISORD = Kind("supervisord", "supervisord")
CIRCUS = Kind("circusd", "circus")
FLOOR = Kind("sh while loop (floor)", "floor")


@dataclass
class Running:
    """A launched supervisor and what is needed to talk to it."""

    kind: Kind
    child: Child
    work: Path
    count: int
    argv: list[str]
    conf: Path
    launched_at: float  # time.time() just before it was started
    _events: list[dict[str, Any]] = field(default_factory=list)  # parsed so far
    _read: int = 0  # bytes of the log parsed into _events

    def rpc(self) -> Any:
        """supervisord's XML-RPC ``supervisor`` namespace."""
        transport = UnixTransport(str(self.work / "supervisor.sock"))
        return xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=transport).supervisor

    def nsup_events(self) -> list[dict[str, Any]]:
        """The JSON events ``nsup run`` printed so far.

        Read on from where the last call stopped: re-reading the whole log at
        every poll cost the bench a CPU of its own with 10,000 services.
        """
        with contextlib.suppress(OSError), self.child.stderr.open("rb") as f:
            f.seek(self._read)
            chunk = f.read()
            whole = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits
            self._read += len(whole)
            for line in whole.decode(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    self._events.append(json.loads(line))
        return list(self._events)

    def up_at(self) -> float | None:
        """``time.time()`` when every service was up, or None while some are not.

        nsup: the last of ``count`` "ready" events (it emits "started" once the
        command is exec'd, and "ready" right after without a probe).
        supervisord: its own XML-RPC says every process is RUNNING (startsecs=0).
        circus and the floor: ``count`` children of the supervisor have exec'd
        the service command (read from /proc).
        """
        if self.kind.kind == "nsup":
            ready = [e["time"] for e in self.nsup_events() if e.get("event") == "ready"]
            return max(ready) if len(ready) >= self.count else None
        if self.kind.kind == "supervisord":
            try:
                infos = self.rpc().getAllProcessInfo()
            except (OSError, xmlrpc.client.Error, http.client.HTTPException):
                return None
            ok = len(infos) == self.count and all(i["statename"] == "RUNNING" for i in infos)
            return time.time() if ok else None
        want = [a.encode() for a in self.argv]
        kids = children(self.child.pid)
        if len(kids) < self.count:
            return None
        execd = sum(cmdline(pid) == want for pid in kids)
        return time.time() if execd >= self.count else None

    def wait_up(self, timeout: float, poll: float = 0.02) -> float:
        """Wait until every service is up; return that ``time.time()``; raise on failure."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.child.alive():
                raise RuntimeError(f"{self.kind.kind} exited early: {self.child.error_tail()}")
            at = self.up_at()
            if at is not None:
                return at
            time.sleep(poll)
        raise RuntimeError(f"not all {self.count} services up within {timeout:g}s")


def launch(
    procs: Processes, tools: Tools, kind: Kind, *, root: Path, argv: list[str], count: int
) -> Running:
    """Write *kind*'s configuration for *count* copies of *argv* and start it."""
    work = Path(tempfile.mkdtemp(prefix=f"{kind.kind}-", dir=root))
    if kind.kind == "nsup":
        conf = work / "policy.toml"
        conf.write_text(nsup_toml(nsup_policy(argv, count, kind.namespaces, init=kind.init)))
        nsup = str(Path(sys.executable).parent / "nsup")
        # Its own control socket: the default path is shared with any other nsup run here.
        cmd = [nsup, "run", "--control", str(work / "ctl.sock"), "--log-format", "json", str(conf)]
    elif kind.kind == "supervisord":
        conf = work / "supervisord.conf"
        conf.write_text(supervisord_conf(work, argv, count))
        cmd = [str(tools.supervisord), "-c", str(conf)]
    elif kind.kind == "circus":
        conf = work / "circus.ini"
        conf.write_text(circus_ini(work, argv, count))
        cmd = [str(tools.circusd), str(conf)]
    else:  # the floor: a shell loop restarting the command, one copy
        conf = work / "loop.sh"
        conf.write_text(f"while :; do {' '.join(argv)}; done\n")
        cmd = ["/bin/sh", str(conf)]
    launched_at = time.time()
    child = procs.start(cmd, work / "stderr.log", cwd=work)
    return Running(kind, child, work, count, argv, conf, launched_at)


def available(kind: Kind, tools: Tools) -> str | None:
    """None if *kind* can run here, else why not."""
    if kind.kind == "supervisord" and not (tools.supervisord and tools.supervisorctl):
        return "supervisord not available"
    if kind.kind == "circus" and not (tools.circusd and tools.circus_python):
        return "circus not available"
    return None


def kinds_for(*, floor: bool = False) -> list[Kind]:
    """The rows of a table, in print order."""
    return ([FLOOR] if floor else []) + [NSUP_NONE, NSUP_DEFAULT, SUPERVISORD, CIRCUS]


# ---------------------------------------------------------------- statistics


def median_p90(values: list[float]) -> tuple[float, float]:
    """Median and 90th percentile."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0], ordered[0]
    return statistics.median(ordered), statistics.quantiles(ordered, n=10, method="inclusive")[8]


def ratio(value: float | None, base: float | None) -> float | None:
    """value / base, or None when either is missing or the base is zero."""
    if value is None or not base:
        return None
    return round(value / base, 1)


def verdict(ok: bool | None) -> str:
    """PASS, MISS, or n/a when it could not be measured."""
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def error_row(kind: Kind, exc: BaseException | str) -> dict[str, Any]:
    """A row that says why it has no numbers."""
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return {"supervisor": kind.label, "namespaces": kind.ns_label, "error": text}


FAILURES = (OSError, RuntimeError, ValueError, subprocess.SubprocessError, xmlrpc.client.Error)


# ---------------------------------------------------------------- 1. restart latency


RESTART_CHILD = """\
# Lives LIFETIME seconds (a read that times out: no fork) and exits 0.
read -t {lifetime} -r _ <> "$1"
exit 0
"""


def restart_row(
    procs: Processes,
    tools: Tools,
    events: ProcEvents,
    kind: Kind,
    *,
    root: Path,
    script: Path,
    fifo: Path,
) -> tuple[Running, str]:
    """Launch *kind* with one restart-test service, a copy of *script* named for the row.

    The copy's path is the marker that picks this row's processes out of the
    kernel's events.
    """
    marker = str(root / f"restart-{kind.kind}-{kind.ns_label}.sh")
    Path(marker).write_text(script.read_text())
    events.watch(marker)
    return launch(
        procs, tools, kind, root=root, argv=["/bin/bash", marker, str(fifo)], count=1
    ), marker


def nsup_own_gaps(run: Running) -> list[float]:
    """nsup's own view: its "exited" event to the next "started" event, in ms."""
    gaps, last = [], None
    for event in run.nsup_events():
        if event.get("event") == "exited":
            last = event["time"]
        elif event.get("event") == "started" and last is not None:
            gaps.append((event["time"] - last) * 1000)
            last = None
    return gaps


def measure_restart(procs: Processes, tools: Tools, root: Path, n: int) -> list[dict[str, Any]]:
    """Exit-to-exec gaps per supervisor; supervisord and circus are sampled together."""
    script = root / "restart-child.sh"
    script.write_text(RESTART_CHILD.format(lifetime=LIFETIME))
    fifo = root / "never-written.fifo"
    os.mkfifo(fifo, 0o600)
    events = ProcEvents()
    rows: dict[str, dict[str, Any]] = {}
    try:
        batches = [[FLOOR], [NSUP_NONE], [NSUP_DEFAULT], [SUPERVISORD, CIRCUS]]
        for batch in batches:
            live: list[tuple[Kind, Running, str]] = []
            for kind in batch:
                why = available(kind, tools)
                if why is not None:
                    rows[kind.label + kind.ns_label] = error_row(kind, why)
                    continue
                run, marker = restart_row(
                    procs, tools, events, kind, root=root, script=script, fifo=fifo
                )
                live.append((kind, run, marker))
            # n gaps need n + 1 execs; a slow supervisor gets 2 s per sample at most.
            deadline = time.monotonic() + 10 + 2.0 * n
            while live and time.monotonic() < deadline:
                if all(events.execs(m) > n or not r.child.alive() for _, r, m in live):
                    break
                time.sleep(0.05)
            for kind, run, marker in live:
                alive = run.child.alive()
                run.child.end()
                rows[kind.label + kind.ns_label] = restart_summary(
                    kind, run, events.events(marker), n, alive
                )
    finally:
        events.close()
    if events.lost:
        for row in rows.values():
            row.setdefault("note", f"kernel dropped proc events {events.lost} times")
    ordered = [
        rows[k.label + k.ns_label] for k in kinds_for(floor=True) if k.label + k.ns_label in rows
    ]
    base = next(
        (
            r.get("median_ms")
            for r in ordered
            if r["supervisor"] == "nsup run" and r["namespaces"] == "[]"
        ),
        None,
    )
    for row in ordered:
        row["ratio"] = ratio(row.get("median_ms"), base)
    return ordered


def restart_summary(
    kind: Kind, run: Running, events: list[tuple[str, int, int]], n: int, alive: bool
) -> dict[str, Any]:
    """Median and p90 of the first *n* exit-to-exec gaps, and nsup's own view."""
    gaps = exit_to_exec_ms(events)[:n]
    if not gaps:
        why = "no restart observed" + ("" if alive else f"; it exited: {run.child.error_tail()}")
        return error_row(kind, why)
    med, p90 = median_p90(gaps)
    row: dict[str, Any] = {
        "supervisor": kind.label,
        "namespaces": kind.ns_label,
        "samples": len(gaps),
        "median_ms": round(med, 3),
        "p90_ms": round(p90, 3),
        "max_ms": round(max(gaps), 3),
    }
    if kind.kind == "nsup":
        own = nsup_own_gaps(run)[:n]
        if own:
            row["own_median_ms"], row["own_p90_ms"] = (round(v, 3) for v in median_p90(own))
    if not alive:
        row["note"] = f"supervisor exited during the run: {run.child.error_tail()}"
    return row


# ---------------------------------------------------------------- 2. stop latency


STOP_CHILD = """\
# Records when it starts and when SIGTERM ends it (bash's EPOCHREALTIME: no fork).
trap 'echo "E $EPOCHREALTIME" >> "$1"; exit 0' TERM
echo "S $EPOCHREALTIME" >> "$1"
while :; do read -r _ <> "$2"; done
"""


def stamps(log: Path, mark: str) -> list[float]:
    """The times of *mark* ("S" or "E") lines in a stop-test log."""
    try:
        lines = log.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [
        float(parts[1]) for line in lines if len(parts := line.split()) == 2 and parts[0] == mark
    ]


def wait_lines(log: Path, mark: str, count: int, timeout: float) -> list[float]:
    """Wait until *log* holds *count* lines of *mark*; return their times."""
    deadline = time.monotonic() + timeout
    while len(found := stamps(log, mark)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{len(found)} of {count} services wrote {mark!r} within {timeout:g}s"
            )
        time.sleep(0.005)
    return found


@dataclass
class StopRounds:
    """Per round: the stop call's duration and its return minus the last exit."""

    call_ms: list[float] = field(default_factory=list)
    after_exit_ms: list[float] = field(default_factory=list)
    left: str = ""  # the processes the supervisor left behind, if any

    def add(self, t0: float, t1: float, log: Path, round_no: int) -> None:
        """Record one round that called stop at *t0* and returned at *t1* (time.time())."""
        ends = wait_lines(log, "E", STOP_SERVICES * (round_no + 1), 5.0)
        last_exit = max(ends[-STOP_SERVICES:])
        self.call_ms.append((t1 - t0) * 1000)
        self.after_exit_ms.append((t1 - last_exit) * 1000)


def stop_row(label: str, kind: Kind, how: str, rounds: StopRounds) -> dict[str, Any]:
    """The medians of one stop row."""
    call, _ = median_p90(rounds.call_ms)
    after, after_max = median_p90(rounds.after_exit_ms)
    return {
        "supervisor": label,
        "namespaces": kind.ns_label,
        "how": how,
        "rounds": len(rounds.call_ms),
        "call_ms": round(call, 2),
        "after_last_exit_ms": round(after, 2),
        "after_last_exit_p90_ms": round(after_max, 2),
    } | ({"note": f"left behind: {rounds.left}"} if rounds.left else {})


async def stop_nsup_api(kind: Kind, argv: list[str], log: Path, rounds: int) -> StopRounds:
    """``await sup.stop("svc")`` on 10 instances, *rounds* times, through the API in this process."""
    policy = Policy.from_dict(nsup_policy(argv, STOP_SERVICES, kind.namespaces))
    result = StopRounds()
    async with open_supervisor(policy) as sup:
        for r in range(rounds):
            if r:
                await sup.start("svc")
            await trio.to_thread.run_sync(wait_lines, log, "S", STOP_SERVICES * (r + 1), UP_TIMEOUT)
            await trio.sleep(0.05)
            t0 = time.time()
            await sup.stop("svc")
            t1 = time.time()
            result.add(t0, t1, log, r)
    return result


def stop_external(
    procs: Processes,
    tools: Tools,
    kind: Kind,
    *,
    root: Path,
    argv: list[str],
    log: Path,
    rounds: int,
    cli: bool,
) -> StopRounds:
    """Stop 10 services of supervisord or circus, by API call or by its CLI, *rounds* times."""
    run = launch(procs, tools, kind, root=root, argv=argv, count=STOP_SERVICES)
    driver = root / "circus_driver.py"
    driver.write_text(CIRCUS_DRIVER)
    endpoint = f"ipc://{run.work}/circus.sock"
    result = StopRounds()

    def circus_call(command: str) -> tuple[float, float]:
        out = subprocess.run(
            [str(tools.circus_python), str(driver), endpoint, command],
            capture_output=True,
            check=True,
            timeout=180,
        )
        reply = json.loads(out.stdout)
        if reply["status"] != "ok":
            raise RuntimeError(f"circus {command}: {reply['reason']}")
        return reply["t0"], reply["t1"]

    def timed(argv_: list[str]) -> tuple[float, float]:
        t0 = time.time()
        subprocess.run(argv_, capture_output=True, check=True, timeout=180)
        return t0, time.time()

    try:
        run.wait_up(UP_TIMEOUT)
        for r in range(rounds):
            if r and kind.kind == "supervisord":
                run.rpc().startAllProcesses()
            elif r:
                circus_call("start")
            wait_lines(log, "S", STOP_SERVICES * (r + 1), UP_TIMEOUT)
            time.sleep(0.05)
            if kind.kind == "supervisord" and cli:
                t0, t1 = timed([str(tools.supervisorctl), "-c", str(run.conf), "stop", "all"])
            elif kind.kind == "supervisord":
                t0 = time.time()
                run.rpc().stopAllProcesses()
                t1 = time.time()
            elif cli:
                t0, t1 = timed([str(tools.circusctl), "--endpoint", endpoint, "stop", "--waiting"])
            else:
                t0, t1 = circus_call("stop")
            result.add(t0, t1, log, r)
    finally:
        run.child.end()
        time.sleep(0.2)
        result.left = describe(procs.orphans())
        procs.sweep()
    return result


def measure_stop(procs: Processes, tools: Tools, root: Path, rounds: int) -> list[dict[str, Any]]:
    """Stop latency rows: nsup's API, supervisord's XML-RPC and CLI, circus's client and CLI."""
    script = root / "stop-child.sh"
    script.write_text(STOP_CHILD)
    fifo = root / "stop.fifo"
    if not fifo.exists():
        os.mkfifo(fifo, 0o600)
    plans: list[tuple[str, Kind, str, bool]] = [
        ("nsup API", NSUP_NONE, 'await sup.stop("svc")', False),
        ("nsup API", NSUP_DEFAULT, 'await sup.stop("svc")', False),
        ("supervisord", SUPERVISORD, "XML-RPC stopAllProcesses()", False),
        ("supervisord", SUPERVISORD, "supervisorctl stop all", True),
        ("circusd", CIRCUS, 'client.call("stop", waiting)', False),
        ("circusd", CIRCUS, "circusctl stop --waiting", True),
    ]
    rows = []
    for i, (label, kind, how, cli) in enumerate(plans):
        log = root / f"stop-{i}.log"
        argv = ["/bin/bash", str(script), str(log), str(fifo)]
        why = available(kind, tools)
        if why is not None:
            rows.append(error_row(kind, why) | {"supervisor": label, "how": how})
            continue
        try:
            if kind.kind == "nsup":
                before = set(children(os.getpid()))
                try:
                    result = trio.run(stop_nsup_api, kind, argv, log, rounds)
                finally:
                    procs.spare_new(before)
            else:
                result = stop_external(
                    procs, tools, kind, root=root, argv=argv, log=log, rounds=rounds, cli=cli
                )
        except FAILURES as exc:
            rows.append(error_row(kind, exc) | {"supervisor": label, "how": how})
            continue
        rows.append(stop_row(label, kind, how, result))
    base = next(
        (
            r.get("call_ms")
            for r in rows
            if r["supervisor"] == "nsup API" and r["namespaces"] == "[]"
        ),
        None,
    )
    for row in rows:
        row["ratio"] = ratio(row.get("call_ms"), base)
    return rows


# ---------------------------------------------------------------- 3. idle CPU


def tree_cpu(pid: int) -> dict[int, int]:
    """On-CPU ns (schedstat) of *pid* and every descendant."""
    out = {}
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError, ValueError):
            out[p] = cpu_ns(p)[1]
    return out


def measure_idle(
    procs: Processes, tools: Tools, root: Path, services: int, seconds: float
) -> list[dict[str, Any]]:
    """CPU and wakeups of each supervisor with *services* sleeping services, over *seconds*."""
    rows = []
    argv = ["sleep", "infinity"]
    for kind in kinds_for():
        why = available(kind, tools)
        if why is not None:
            rows.append(error_row(kind, why))
            continue
        run = launch(procs, tools, kind, root=root, argv=argv, count=services)
        try:
            run.wait_up(UP_TIMEOUT + services * 0.1)
            time.sleep(1.0)  # let start-up work (and circus's first check) finish
            pid = run.child.pid
            stat0, sched0 = cpu_ns(pid)
            vol0, invol0 = switches(pid)
            tree0 = tree_cpu(pid)
            time.sleep(seconds)
            stat1, sched1 = cpu_ns(pid)
            vol1, invol1 = switches(pid)
            tree1 = tree_cpu(pid)
            if not run.child.alive():
                raise RuntimeError(f"exited during the window: {run.child.error_tail()}")
        except FAILURES as exc:
            rows.append(error_row(kind, exc))
            continue
        finally:
            run.child.end()
            time.sleep(0.2)
            left = procs.orphans()
            left_what = describe(left)
            procs.sweep()
        tree = sum(tree1[p] - tree0[p] for p in tree1 if p in tree0)
        rows.append(
            {
                "supervisor": kind.label,
                "namespaces": kind.ns_label,
                "seconds": seconds,
                "services": services,
                "cpu_ms_stat": round((stat1 - stat0) / 1e6, 1),
                "cpu_ms": round((sched1 - sched0) / 1e6, 3),
                "wakeups": vol1 - vol0,
                "involuntary": invol1 - invol0,
                "tree_cpu_ms": round(tree / 1e6, 3),
                "tree_processes": len(tree1),
                "left_behind": len(left),
            }
            | ({"note": f"left behind: {left_what}"} if left else {})
        )
    base = next(
        (
            r.get("cpu_ms")
            for r in rows
            if r["supervisor"] == "nsup run" and r["namespaces"] == "[]"
        ),
        None,
    )
    for row in rows:
        row["ratio"] = ratio(row.get("cpu_ms"), base)
    return rows


# ---------------------------------------------------------------- 4. scale


def cpu_split(pid: int) -> dict[str, float]:
    """On-CPU seconds so far (schedstat) of supervisor *pid*, its zygotes, inits and commands.

    Where the start of many services goes: each share is summed over the
    processes of that kind still alive (``nsup-zygote``, ``nsup-init``, and
    the commands below an init or, without one, beside it).
    """

    def on_cpu(of: int) -> float:
        return cpu_ns(of)[1] / 1e9

    split = {"supervisor": on_cpu(pid), "zygotes": 0.0, "inits": 0.0, "commands": 0.0}
    for child in children(pid):
        with contextlib.suppress(OSError, ValueError):
            name = (cmdline(child) or [b""])[0]
            if name.startswith(b"nsup-zygote"):
                split["zygotes"] += on_cpu(child)
            elif name.startswith(b"nsup-init"):
                split["inits"] += on_cpu(child)
                split["commands"] += sum(on_cpu(c) for c in children(child))
            else:
                split["commands"] += on_cpu(child)
    return {k: round(v, 3) for k, v in split.items()}


def measure_scale(
    procs: Processes,
    tools: Tools,
    root: Path,
    count: int,
    *,
    kinds: list[Kind] | None = None,
    up_timeout: float | None = None,
) -> list[dict[str, Any]]:
    """Start *count* ``sleep infinity`` under one supervisor; time all-up and SIGTERM-to-exit."""
    rows = []
    argv = ["sleep", "infinity"]
    up_timeout = up_timeout or 30.0 + count * 0.15
    for kind in kinds or kinds_for():
        why = available(kind, tools)
        if why is not None:
            rows.append(error_row(kind, why))
            continue
        procs.sweep()  # nothing from an earlier test may count as this row's
        run = launch(procs, tools, kind, root=root, argv=argv, count=count)
        row: dict[str, Any] = {
            "supervisor": kind.label,
            "namespaces": kind.ns_label,
            "services": count,
        }
        try:
            up = run.wait_up(up_timeout, poll=0.05)
            row["up_s"] = round(up - run.launched_at, 3)
            row["cpu_s"] = cpu_split(run.child.pid) if kind.kind == "nsup" else None
            peak = [vm_hwm_kb(run.child.pid) or 0]

            def sample(pid: int = run.child.pid, peak: list[int] = peak) -> None:
                peak[0] = max(peak[0], vm_hwm_kb(pid) or 0)

            t0 = time.monotonic()
            run.child.signal(signal.SIGTERM)
            if not run.child.wait_exit(STOP_GRACE, sample):
                raise RuntimeError(f"did not exit within {STOP_GRACE:g}s of SIGTERM")
            row["stop_s"] = round(time.monotonic() - t0, 3)
            run.child.reap()
            row["peak_rss_mb"] = round(peak[0] / 1024, 1)
            row["maxrss_reaped_mb"] = round(run.child.rusage.ru_maxrss / 1024, 1)
            row["exit_code"] = run.child.popen.returncode
            time.sleep(0.2)
            left = procs.orphans()  # services reparented to us
            row["left_behind"] = len(left)
            if left:
                row["note"] = f"left behind: {describe(left)}"
            if kind.kind == "nsup":
                failed = [e for e in run.nsup_events() if e.get("event") == "spawn_failed"]
                if failed:
                    row["note"] = f"{len(failed)} spawn_failed, first: {failed[0].get('message')}"
        except FAILURES as exc:
            rows.append(
                row
                | error_row(kind, f"{type(exc).__name__}: {exc}; stderr: {run.child.error_tail()}")
            )
            continue
        finally:
            run.child.end()
            procs.sweep()  # services a supervisor left behind, before the next row
        rows.append(row)
    base = next((r for r in rows if r["supervisor"] == "nsup run" and r["namespaces"] == "[]"), {})
    for row in rows:
        row["up_ratio"] = ratio(row.get("up_s"), base.get("up_s"))
        row["stop_ratio"] = ratio(row.get("stop_s"), base.get("stop_s"))
    return rows


# ---------------------------------------------------------------- report


def targets(result: dict[str, Any]) -> list[dict[str, str]]:
    """PASS/MISS of every target (bench/README.md) this script measures."""
    out = []

    def nsup_rows(section: str) -> Iterator[dict[str, Any]]:
        return (
            r for r in result[section] if r["supervisor"].startswith("nsup") and "error" not in r
        )

    for row in nsup_rows("restart"):
        ok = row["median_ms"] < RESTART_TARGET_MS
        out.append(
            {
                "target": f"restart median under {RESTART_TARGET_MS:g} ms (namespaces {row['namespaces']})",
                "value": f"{row['median_ms']:.2f} ms",
                "verdict": verdict(ok),
            }
        )
    for row in nsup_rows("stop"):
        ok = row["after_last_exit_p90_ms"] <= STOP_TARGET_MS
        out.append(
            {
                "target": f"stop returns within {STOP_TARGET_MS:g} ms of the last exit (namespaces {row['namespaces']}, p90)",
                "value": f"{row['after_last_exit_p90_ms']:.2f} ms",
                "verdict": verdict(ok),
            }
        )
    for row in nsup_rows("idle"):
        ok = row["cpu_ms"] <= IDLE_CPU_TARGET_MS and row["wakeups"] <= IDLE_WAKEUP_TARGET
        out.append(
            {
                "target": f"idle: <= {IDLE_CPU_TARGET_MS:g} ms CPU and {IDLE_WAKEUP_TARGET} wakeups in "
                f"{row['seconds']:g}s, {row['services']} services (namespaces {row['namespaces']})",
                "value": f"{row['cpu_ms']:.3f} ms, {row['wakeups']} wakeups",
                "verdict": verdict(ok),
            }
        )
    for row in (r for r in result["scale"] if r["supervisor"].startswith("nsup")):
        ok = "error" not in row and row.get("exit_code") == 0 and row.get("left_behind") == 0
        value = row.get("error") or f"up {row['up_s']:.2f}s, stop {row['stop_s']:.2f}s"
        out.append(
            {
                "target": f"{row['services']} services started and stopped (namespaces {row['namespaces']})",
                "value": value,
                "verdict": verdict(ok),
            }
        )
    return out


def fmt(value: Any, spec: str = ".2f", width: int = 8) -> str:
    """*value* formatted, or "-" when missing."""
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def fmt_ratio(value: float | None) -> str:
    """A ratio column."""
    return f"{'-':>7}" if value is None else f"{value:>6.1f}x"


def print_restart(result: dict[str, Any]) -> None:
    """Table 1."""
    print(
        f"\n1. restart: child exit -> replacement exec'd (kernel proc events), backoff 0, "
        f"{result['n']} restarts per row; ratio: this row over nsup run with namespaces [] "
        "(no isolation, like the others)"
    )
    head = f"{'supervisor':<22} {'ns':<8} {'n':>4} {'median ms':>9} {'p90 ms':>8} {'max ms':>8} {'ratio':>7}  own view median/p90 ms"
    print(head + "\n" + "-" * len(head))
    for row in result["restart"]:
        if "error" in row:
            print(f"{row['supervisor']:<22} {row['namespaces']:<8} {row['error']}")
            continue
        own = (
            f"{row['own_median_ms']:.2f} / {row['own_p90_ms']:.2f}"
            if "own_median_ms" in row
            else ""
        )
        print(
            f"{row['supervisor']:<22} {row['namespaces']:<8} {row['samples']:>4} {fmt(row['median_ms'], '.2f', 9)} "
            f"{fmt(row['p90_ms'])} {fmt(row['max_ms'])} {fmt_ratio(row['ratio'])}  {own}"
        )
        if "note" in row:
            print(f"  note: {row['note']}")


def print_stop(result: dict[str, Any]) -> None:
    """Table 2."""
    print(
        f"\n2. stop: {STOP_SERVICES} services that exit at once on SIGTERM, {result['rounds']} rounds, medians"
    )
    head = f"{'supervisor':<12} {'ns':<8} {'how':<30} {'call ms':>9} {'after last exit ms':>18} {'ratio':>7}"
    print(head + "\n" + "-" * len(head))
    for row in result["stop"]:
        if "error" in row:
            print(f"{row['supervisor']:<12} {row['namespaces']:<8} {row['how']:<30} {row['error']}")
            continue
        print(
            f"{row['supervisor']:<12} {row['namespaces']:<8} {row['how']:<30} {fmt(row['call_ms'], '.1f', 9)} "
            f"{fmt(row['after_last_exit_ms'], '.1f', 18)} {fmt_ratio(row['ratio'])}"
        )
        if "note" in row:
            print(f"  note: {row['note']}")


def print_idle(result: dict[str, Any]) -> None:
    """Table 3."""
    print(
        f"\n3. idle: {result['idle_services']} x 'sleep infinity', {result['idle_seconds']:g} s window; "
        "CPU of the supervisor process (schedstat, and utime+stime), wakeups = voluntary switches"
    )
    head = f"{'supervisor':<22} {'ns':<8} {'CPU ms':>9} {'stat ms':>8} {'wakeups':>8} {'tree CPU ms':>11} {'ratio':>7}"
    print(head + "\n" + "-" * len(head))
    for row in result["idle"]:
        if "error" in row:
            print(f"{row['supervisor']:<22} {row['namespaces']:<8} {row['error']}")
            continue
        print(
            f"{row['supervisor']:<22} {row['namespaces']:<8} {fmt(row['cpu_ms'], '.3f', 9)} "
            f"{fmt(row['cpu_ms_stat'], '.0f')} {row['wakeups']:>8} {fmt(row['tree_cpu_ms'], '.3f', 11)} "
            f"{fmt_ratio(row['ratio'])}"
        )
        if "note" in row:
            print(f"  note: {row['note']}")


def print_scale(result: dict[str, Any]) -> None:
    """Table 4."""
    print(
        f"\n4. scale: {result['scale_services']} x 'sleep infinity' under one supervisor, then SIGTERM to it"
    )
    head = f"{'supervisor':<22} {'ns':<8} {'up s':>7} {'stop s':>7} {'peak RSS MB':>11} {'exit':>5} {'left':>5} {'up ratio':>8} {'stop ratio':>10}"
    print(head + "\n" + "-" * len(head))
    for row in result["scale"]:
        if "error" in row:
            print(f"{row['supervisor']:<22} {row['namespaces']:<8} {row['error']}")
            continue
        print(
            f"{row['supervisor']:<22} {row['namespaces']:<8} {fmt(row['up_s'], '.2f', 7)} {fmt(row['stop_s'], '.2f', 7)} "
            f"{fmt(row['peak_rss_mb'], '.1f', 11)} {row['exit_code']:>5} {row['left_behind']:>5} "
            f"{fmt_ratio(row['up_ratio']):>8} {fmt_ratio(row['stop_ratio']):>10}"
        )
        if row.get("cpu_s"):
            split = ", ".join(f"{k} {v:.2f}" for k, v in row["cpu_s"].items())
            print(f"  CPU seconds at all-up: {split}")
        if "note" in row:
            print(f"  note: {row['note']}")


def print_report(result: dict[str, Any]) -> None:
    """Print the tables for a human."""
    print(f"nsup restart/stop/idle/scale vs supervisord and circus ({result['machine']})")
    if result["versions"]:
        print("compared: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()))
    print_restart(result)
    print_stop(result)
    print_idle(result)
    print_scale(result)
    for note in result["notes"]:
        print(f"note: {note}")
    print("\ntargets (bench/README.md):")
    for t in result["targets"]:
        print(f"  {t['verdict']:<5} {t['target']}: {t['value']}")


def section(
    name: str, fn: Callable[[], list[dict[str, Any]]], notes: list[str]
) -> list[dict[str, Any]]:
    """Run one benchmark; a failure of the whole section becomes a note, not a crash."""
    print(f"bench/restart.py: {name} ...", file=sys.stderr)
    try:
        return fn()
    except FAILURES as exc:
        notes.append(f"{name}: failed: {type(exc).__name__}: {exc}")
        return []


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every benchmark; return the results as one dict."""
    tools = find_tools(install=not args.no_compare)
    if args.no_compare:
        tools = Tools(notes=["--no-compare: supervisord and circus skipped"])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by every supervisor alike
    notes = list(tools.notes)
    procs = Processes()
    root = Path(tempfile.mkdtemp(prefix="nsup-bench-restart-"))
    try:
        result: dict[str, Any] = {
            "machine": f"{platform.node()}, Linux {platform.release()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}",
            "versions": tools.versions,
            "n": args.n,
            "rounds": args.rounds,
            "idle_services": args.services,
            "idle_seconds": args.idle_seconds,
            "scale_services": args.scale,
        }
        result["restart"] = section(
            "restart", lambda: measure_restart(procs, tools, root, args.n), notes
        )
        result["stop"] = section(
            "stop", lambda: measure_stop(procs, tools, root, args.rounds), notes
        )
        result["idle"] = section(
            "idle",
            lambda: measure_idle(procs, tools, root, args.services, args.idle_seconds),
            notes,
        )
        result["scale"] = section(
            "scale", lambda: measure_scale(procs, tools, root, args.scale), notes
        )
    finally:
        orphans = procs.sweep()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        shutil.rmtree(root, ignore_errors=True)
    if orphans:
        notes.append(f"{orphans} processes were left behind by supervisors and killed at the end")
    result["notes"] = notes
    result["targets"] = targets(result)
    return result


def main() -> int:
    """Parse the arguments, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--n", type=int, default=None, help="restarts per row (default 60, --quick 20)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="stop rounds per row (default 5, --quick 2)"
    )
    parser.add_argument(
        "--services", type=int, default=100, help="sleeping services for idle (default 100)"
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=None, help="idle window (default 10, --quick 3)"
    )
    parser.add_argument(
        "--scale", type=int, default=None, help="services for scale (default 1000, --quick 100)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short run: fewer samples, 100 services for scale"
    )
    parser.add_argument(
        "--no-compare", action="store_true", help="nsup only: skip supervisord and circus"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print(
            "bench/restart.py: run as root (namespaces and the kernel's process events need it)",
            file=sys.stderr,
        )
        return 2
    quick = args.quick
    args.n = args.n or (20 if quick else 60)
    args.rounds = args.rounds or (2 if quick else 5)
    args.idle_seconds = args.idle_seconds or (3.0 if quick else 10.0)
    args.scale = args.scale or (100 if quick else 1000)
    if min(args.n, args.rounds, args.services, args.scale) < 1 or args.idle_seconds <= 0:
        parser.error("counts must be at least 1 and --idle-seconds positive")
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
