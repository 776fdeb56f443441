"""nsup under an orchestrator: container PID 1, its parent's notify socket, env in policies.

- ``nsup run`` as PID 1 of fresh PID, mount, UTS, IPC and network namespaces:
  ``/readyz``, orphan reaping, SIGTERM, and ``/readyz`` 503 while it stops;
- ``nsup run`` under a fake ``NOTIFY_SOCKET``: READY, STATUS, RELOADING,
  STOPPING and WATCHDOG datagrams, and services that never see it;
- ``[supervisor] expand_env``;
- the example Kubernetes manifest and container image.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import trio
import yaml
from helpers import NSUP, PYTHON, open_nsup_run

from nsup import Policy, PolicyError
from nsup._control.sd_notify import ParentNotifier
from nsup._policy import expand, load_policy

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "container"


class Lines:
    """nsup's JSON event lines on stderr, read by a task into a list."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.records: list[dict] = []
        self.changed = trio.Event()

    async def pump(self) -> None:
        buffer = b""
        while chunk := await self.proc.stderr.receive_some():
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            self.records.extend(json.loads(line) for line in lines if line)
            self.changed.set()
            self.changed = trio.Event()

    def of_message(self, text: str) -> list[dict]:
        return [r for r in self.records if r["event"] == "log" and r.get("message") == text]

    async def wait_for(self, event: str, service: str | None = None) -> dict:
        with trio.fail_after(30):
            while True:
                for record in self.records:
                    if record["event"] == event and service in (None, record.get("service")):
                        return record
                await self.changed.wait()


# --- PID 1 of fresh namespaces -------------------------------------------------------

PORT = 9107
SLOW_STOP = 3  # seconds the slow service takes to stop: the window where /readyz is 503
STOP_TIMEOUT = 10

ORPHANS = """\
import os, sys, time
for _ in range(1000):
    pid = os.fork()
    if pid == 0:
        if os.fork():
            os._exit(0)  # the middle child: its child is now an orphan of PID 1
        os._exit(0)      # the orphan: dies at once, a zombie until PID 1 reaps it
    os.waitpid(pid, 0)
print("made 1000 orphans", flush=True)
time.sleep(1000)
"""

DAEMON = """\
import os, time
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "1000"])  # the daemon, re-parented to PID 1
    os._exit(0)
os.waitpid(pid, 0)
print("daemon started", flush=True)
time.sleep(1000)
"""

E2E_POLICY = f"""
[supervisor]
health = "127.0.0.1:{PORT}"

[services.web]
command = ["sh", "-c", "echo ready; exec sleep 1000"]
ready = {{ log = "ready" }}

[services.slow]
command = ["sh", "-c", "trap 'sleep {SLOW_STOP}; exit 0' TERM; echo ready; while :; do sleep 0.1; done"]
ready = {{ log = "ready" }}
stop = {{ timeout = "{STOP_TIMEOUT}s" }}
depends_on = ["web"]

[services.orphans]
command = ["{PYTHON}", "-c", {json.dumps(ORPHANS)}]
namespaces = []
init = false  # no init of its own between it and PID 1: its orphans go to nsup
ready = {{ log = "made 1000 orphans" }}

[services.daemon]
command = ["{PYTHON}", "-c", {json.dumps(DAEMON)}]
namespaces = []
init = false
ready = {{ log = "daemon started" }}
"""

HTTP_GET = """\
import http.client, sys
try:
    c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
    c.request("GET", sys.argv[2])
    print(c.getresponse().status)
except OSError:
    print(0)
"""


async def http_status(pid: int, path: str) -> int:
    """GET *path* from the health endpoint inside *pid*'s network namespace (0: no answer)."""
    result = await trio.run_process(
        ["nsenter", "--target", str(pid), "--net", PYTHON, "-c", HTTP_GET, str(PORT), path],
        capture_stdout=True,
    )
    return int(result.stdout)


def pid_ns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def processes_in(ns: str) -> dict[int, str]:
    """Every process in the PID namespace *ns*, pid (as seen here) -> state letter."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and pid_ns(entry.name) == ns:
            try:
                found[int(entry.name)] = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                continue
    return found


async def child_of(pid: int) -> int:
    """The first child of *pid* (unshare --fork's child), waiting for it to appear."""
    with trio.fail_after(10):
        while True:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            if children:
                return int(children[0])
            await trio.sleep(0.01)


@pytest.mark.skipif(
    not shutil.which("unshare") or not shutil.which("nsenter"),
    reason="needs util-linux unshare and nsenter",
)
async def test_pid_1_of_fresh_namespaces(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(E2E_POLICY)
    argv = ["unshare", "--fork", "--pid", "--mount-proc", "--net", "--uts", "--ipc", "sh", "-c",
            'ip link set lo up && exec "$@"', "sh", *NSUP, "run", str(policy),
            "--log-format", "json", "--control", str(tmp_path / "control.sock")]  # fmt: skip
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    nsup_pid = ns = None
    try:
        async with trio.open_nursery() as nursery:
            lines = Lines(proc)
            nursery.start_soon(lines.pump)
            nsup_pid = await child_of(proc.pid)
            # "running POLICY: N services, pid P" (after any start-up notices)
            with trio.fail_after(30):
                while not (running := [r for r in lines.records if "pid" in r]):
                    await lines.changed.wait()
            assert running[0]["pid"] == 1  # nsup is PID 1 of its namespace
            ns = pid_ns(nsup_pid)
            assert ns is not None
            assert ns != pid_ns(os.getpid())
            for name in ("web", "slow", "orphans", "daemon"):
                await lines.wait_for("ready", name)
            assert await http_status(nsup_pid, "/readyz") == 200  # every service is ready
            # 1,000 orphans re-parented to PID 1 and reaped: no zombie left in the namespace.
            with trio.move_on_after(20):
                while any(state == "Z" for state in processes_in(ns).values()):  # noqa: ASYNC110 - no event tells that a zombie is gone: poll with a deadline
                    await trio.sleep(0.1)
            zombies = [p for p, state in processes_in(ns).items() if state == "Z"]
            assert zombies == []
            # The double-forked daemon is a child of PID 1 now, alive.
            daemons = [
                p
                for p in processes_in(ns)
                if Path(f"/proc/{p}/cmdline").read_bytes() == b"sleep\x001000\x00"
                and Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()[1]
                == str(nsup_pid)
            ]
            assert daemons, "the daemon was not re-parented to nsup"

            os.kill(nsup_pid, signal.SIGTERM)
            # While `slow` takes SLOW_STOP seconds to stop, /readyz is 503 and /healthz still 200.
            await lines.wait_for("stopping", "slow")
            assert await http_status(nsup_pid, "/readyz") == 503
            assert await http_status(nsup_pid, "/healthz") == 200
            assert proc.returncode is None  # still stopping: the 503 came during the stop
            with trio.fail_after(STOP_TIMEOUT + 5):
                code = await proc.wait()
            assert code == 0
            nursery.cancel_scope.cancel()
    finally:
        if proc.returncode is None:
            if nsup_pid is not None:
                os.kill(nsup_pid, signal.SIGKILL)  # PID 1 gone: the kernel kills its namespace
            proc.kill()
            await proc.wait()
    assert processes_in(ns) == {}  # PID 1 gone: nothing left in its namespace
    assert lines.of_message("every service is down; exiting")


# --- nsup's own NOTIFY_SOCKET ------------------------------------------------------------

WATCHDOG_USEC = 200_000  # pings every 0.1 s

NOTIFY_SERVICE = """\
import os, socket, sys, time
open(sys.argv[1], "w").write(os.environ.get("NOTIFY_SOCKET", ""))
while not os.path.exists(sys.argv[2]):
    time.sleep(0.02)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
time.sleep(1000)
"""


class Parent:
    """The test's end of ``NOTIFY_SOCKET``: every datagram with the time it came."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.messages: list[tuple[float, list[str]]] = []
        self.changed = trio.Event()

    async def pump(self) -> None:
        while True:
            try:
                data = await self.sock.recv(4096)
            except trio.ClosedResourceError:
                return  # the fixture closed the socket at the end of the test
            self.messages.append((time.monotonic(), data.decode().split("\n")))
            self.changed.set()
            self.changed = trio.Event()

    def fields(self) -> list[str]:
        return [f for _, fields in self.messages for f in fields]

    def non_watchdog(self) -> list[str]:
        return [f for f in self.fields() if f != "WATCHDOG=1"]

    async def wait_for(self, predicate) -> None:
        with trio.fail_after(30):
            while not predicate(self):
                await self.changed.wait()


@pytest.fixture
async def parent(tmp_path, nursery):
    """A fake ``NOTIFY_SOCKET`` of the test, read by a task."""
    result = Parent(tmp_path / "notify")
    await result.sock.bind(str(result.path))
    nursery.start_soon(result.pump)
    yield result
    result.sock.close()


@pytest.fixture
async def nsup_run(tmp_path, nursery):
    """Start ``nsup run --log-format json`` on a policy text; its event lines are read by a task."""
    started: list[Lines] = []

    async def start(policy_text: str, **env: str) -> Lines:
        policy = tmp_path / "policy.toml"
        policy.write_text(policy_text)
        proc = await open_nsup_run(policy, tmp_path / "c.sock", env={**os.environ, **env})
        lines = Lines(proc)
        started.append(lines)
        nursery.start_soon(lines.pump)
        return lines

    yield start
    for lines in started:
        if lines.proc.returncode is None:
            lines.proc.kill()
        await lines.proc.wait()


async def test_notify_socket_of_the_parent(tmp_path, parent, nsup_run):
    seen_a, seen_b, go = tmp_path / "a.env", tmp_path / "b.env", tmp_path / "go"
    lines = await nsup_run(
        f"""
[services.a]
command = ["sh", "-c", "printf '%s|%s' \\"$NOTIFY_SOCKET\\" \\"$WATCHDOG_USEC\\" > {seen_a}; echo up; exec sleep 1000"]
ready = {{ log = "up" }}

[services.b]
command = ["{PYTHON}", "-c", {json.dumps(NOTIFY_SERVICE)}, "{seen_b}", "{go}"]
ready = {{ notify = true, timeout = "60s" }}
""",
        NOTIFY_SOCKET=str(parent.path),
        WATCHDOG_USEC=str(WATCHDOG_USEC),
    )
    proc = lines.proc
    await lines.wait_for("ready", "a")
    # a is ready, b waits for `go`: nsup keeps pinging, and is not READY yet.
    await parent.wait_for(lambda p: p.fields().count("WATCHDOG=1") >= 3)
    await parent.wait_for(lambda p: seen_b.exists() and seen_b.read_text())
    assert "READY=1" not in parent.fields()
    go.touch()
    await parent.wait_for(lambda p: "READY=1" in p.fields())
    await lines.wait_for("ready", "b")
    status = [f for f in parent.non_watchdog() if f.startswith("STATUS=")]
    assert "STATUS=2 services: 2 ready" in status

    # No service sees nsup's NOTIFY_SOCKET or WATCHDOG_USEC; b has its own socket.
    assert seen_a.read_text() == "|"
    assert seen_b.read_text() not in ("", str(parent.path))

    proc.send_signal(signal.SIGHUP)
    await parent.wait_for(lambda p: p.non_watchdog().count("READY=1") == 2)
    fields = parent.non_watchdog()
    first_ready, reloading = fields.index("READY=1"), fields.index("RELOADING=1")
    assert first_ready < reloading
    assert fields[reloading + 1].startswith("MONOTONIC_USEC=")
    assert "READY=1" in fields[reloading + 2 :]

    proc.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        assert await proc.wait() == 0
    await parent.wait_for(lambda p: "STOPPING=1" in p.fields())
    fields = parent.non_watchdog()
    assert fields.index("STOPPING=1") > fields.index("READY=1")
    # Watchdog pings every WATCHDOG_USEC/2 (0.1 s): count them against the time they span.
    pings = [t for t, fs in parent.messages if "WATCHDOG=1" in fs]
    span = pings[-1] - pings[0]
    period = WATCHDOG_USEC / 2e6
    assert span / period * 0.25 <= len(pings) - 1 <= span / period * 1.5 + 2


@pytest.mark.parametrize("signo", [signal.SIGINT, signal.SIGQUIT])
async def test_sigint_and_sigquit_stop_gracefully(nsup_run, signo):
    lines = await nsup_run(
        '[services.a]\ncommand = ["sh", "-c", "echo up; exec sleep 1000"]\nready = { log = "up" }\n'
    )
    await lines.wait_for("ready", "a")
    lines.proc.send_signal(signo)
    with trio.fail_after(30):
        assert await lines.proc.wait() == 0
    await lines.wait_for("exited", "a")
    assert lines.of_message(f"{signal.Signals(signo).name}: stopping every service")


async def test_give_up_says_stopping_and_exits_1(parent, nsup_run):
    lines = await nsup_run(
        '[supervisor]\nmax_restarts = 1\n\n[services.crash]\ncommand = ["false"]\n'
        'backoff = { initial = 0 }\nready = { log = "never printed" }\n',
        NOTIFY_SOCKET=str(parent.path),
    )
    with trio.fail_after(30):
        assert await lines.proc.wait() == 1
    await parent.wait_for(lambda p: "STOPPING=1" in p.fields())
    fields = parent.fields()
    assert "READY=1" not in fields  # it never got to ready
    status = fields[fields.index("STOPPING=1") + 1]
    assert status.startswith("STATUS=")
    assert "crash" in status


def test_notify_variables_are_taken_out_of_the_environment():
    environ = {
        "NOTIFY_SOCKET": "@abstract",
        "WATCHDOG_USEC": "3000000",
        "WATCHDOG_PID": "1",
        "X": "1",
    }
    notifier = ParentNotifier.from_environ(environ)
    assert environ == {"X": "1"}
    assert notifier.enabled
    assert notifier.address == b"\0abstract"
    assert notifier.watchdog_period is None  # WATCHDOG_PID names another process
    notifier.close()
    environ = {
        "NOTIFY_SOCKET": "/run/x",
        "WATCHDOG_USEC": "3000000",
        "WATCHDOG_PID": str(os.getpid()),
    }
    notifier = ParentNotifier.from_environ(environ)
    assert notifier.watchdog_period == 1.5
    notifier.close()


def test_a_bad_notify_socket_is_reported_and_ignored():
    said: list[str] = []
    notifier = ParentNotifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"}, log=said.append)
    assert not notifier.enabled
    assert "not a path or @name" in said[0]


def test_a_parent_that_is_gone_is_reported_once(tmp_path):
    said: list[str] = []
    notifier = ParentNotifier(str(tmp_path / "nobody"), log=said.append)
    notifier.send("WATCHDOG=1")
    notifier.send("WATCHDOG=1")
    notifier.close()
    assert len(said) == 1
    assert "cannot notify the parent" in said[0]


def test_a_full_parent_queue_drops_and_never_blocks(tmp_path):
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(tmp_path / "full"))
    said: list[str] = []
    notifier = ParentNotifier(str(tmp_path / "full"), log=said.append)
    try:
        for _ in range(10_000):  # far more than the queue holds; nobody reads
            notifier.send("STATUS=" + "x" * 1000)
    finally:
        notifier.close()
        receiver.close()
    assert said == []


# --- [supervisor] expand_env ------------------------------------------------------------------


def doc(command, **supervisor):
    return {
        "supervisor": {"expand_env": True, **supervisor},
        "services": {"web": {"command": command}},
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A}", "alpha"),
        ("x${A}y", "xalphay"),
        ("${EMPTY}", ""),
        ("${UNSET:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${A:-fallback}", "alpha"),
        ("${UNSET:-}", ""),
        ("${UNSET:-a b:c}", "a b:c"),
        ("$$", "$"),
        ("$${A}", "${A}"),
        ("$$$${A}", "$${A}"),
        ("$$${A}", "$alpha"),
        ("no dollar", "no dollar"),
        ("${A}${A}", "alphaalpha"),
    ],
)
def test_expand_syntax(text, expected):
    environ = {"A": "alpha", "EMPTY": ""}
    expanded, problems = expand.expand_document(doc(["run", text]), environ)
    assert problems == []
    assert expanded["services"]["web"]["command"] == ["run", expected]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${UNSET}", "'services.web.command[1]' uses ${UNSET}, which is not set in nsup's environment; set UNSET or give a default: ${UNSET:-value}"),
        ("$HOME", "'services.web.command[1]' has a '$' that starts no ${VAR} (at character 1); write '$$' for a literal '$'"),
        ("cost 5$", "'services.web.command[1]' has a '$' that starts no ${VAR} (at character 7); write '$$' for a literal '$'"),
        ("${A", "'services.web.command[1]' has a '$' that starts no ${VAR} (at character 1); write '$$' for a literal '$'"),
        ("${}", "'services.web.command[1]' has '${}', which is neither ${NAME} nor ${NAME:-default} (a name is letters, digits and '_', not starting with a digit)"),
        ("${1A}", "'services.web.command[1]' has '${1A}', which is neither ${NAME} nor ${NAME:-default} (a name is letters, digits and '_', not starting with a digit)"),
        ("${A-x}", "'services.web.command[1]' has '${A-x}', which is neither ${NAME} nor ${NAME:-default} (a name is letters, digits and '_', not starting with a digit)"),
    ],
)  # fmt: skip
def test_expand_errors(text, message):
    _, problems = expand.expand_document(doc(["run", text]), {"A": "alpha"})
    assert problems == [("services.web.command[1]", message)]


def test_expand_is_off_by_default_and_keys_are_never_expanded():
    policy = Policy.from_dict({"services": {"web": {"command": ["echo", "${X}", "$HOME"]}}})
    assert policy.services["web"].command == ("echo", "${X}", "$HOME")
    expanded, _ = expand.expand_document(
        {"services": {"${A}": {"env": {"${A}": "${A}"}}}}, {"A": "a"}
    )
    assert expanded == {"services": {"${A}": {"env": {"${A}": "a"}}}}


def test_expand_reaches_every_table(monkeypatch):
    monkeypatch.setenv("NSUP_T_PORT", "9123")
    monkeypatch.setenv("NSUP_T_STOP", "7s")
    monkeypatch.delenv("NSUP_T_UNSET", raising=False)
    policy = Policy.from_dict(
        {
            "supervisor": {"expand_env": True, "health": "127.0.0.1:${NSUP_T_PORT}"},
            "defaults": {"stop": {"timeout": "${NSUP_T_STOP}"}},
            "services": {
                "web": {
                    "command": ["sh", "-c", "echo $$HOME ${NSUP_T_UNSET:-none}"],
                    "env": {"PORT": "${NSUP_T_PORT}"},
                }
            },
        }
    )
    assert policy.supervisor.health == ("127.0.0.1", 9123)
    web = policy.services["web"]
    assert web.stop.timeout == 7.0
    assert web.command == ("sh", "-c", "echo $HOME none")
    assert web.env["PORT"] == "9123"
    # to_dict() writes what expands back to the same policy.
    assert Policy.from_dict(policy.to_dict()) == policy


async def test_nsup_check_names_the_key_and_the_variable(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(
        '[supervisor]\nexpand_env = true\n\n[services.web]\ncommand = ["true"]\n'
        'stop = { timeout = "${NSUP_T_NOT_SET}" }\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "NSUP_T_NOT_SET"}
    result = await trio.run_process(
        [*NSUP, "check", str(path)], env=env, capture_stdout=True, capture_stderr=True, check=False
    )
    assert result.returncode == 2
    out = (result.stdout + result.stderr).decode()
    assert (
        f"{path}:6: 'services.web.stop.timeout' uses ${{NSUP_T_NOT_SET}}, which is not set "
        "in nsup's environment; set NSUP_T_NOT_SET or give a default: ${NSUP_T_NOT_SET:-value}"
    ) in out
    assert "duration" not in out  # reported once, not again by the validator
    with pytest.raises(PolicyError):
        load_policy(path)
    env["NSUP_T_NOT_SET"] = "3s"
    result = await trio.run_process(
        [*NSUP, "check", str(path)], env=env, capture_stdout=True, check=False
    )
    assert result.returncode == 0


# --- the examples ---------------------------------------------------------------------------


def test_kubernetes_manifest_shape():
    manifest = yaml.safe_load((EXAMPLE / "pod.yaml").read_text())
    assert manifest["apiVersion"] == "v1"
    assert manifest["kind"] == "Pod"
    assert manifest["metadata"]["name"]
    spec = manifest["spec"]
    containers = spec["containers"]
    assert containers
    policy = load_policy(EXAMPLE / "policy.toml")
    port = policy.supervisor.health[1]
    for container in containers:
        assert container["name"]
        assert container["image"]
        probes = {
            "livenessProbe": "/healthz",
            "readinessProbe": "/readyz",
        }
        for probe, path in probes.items():
            get = container[probe]["httpGet"]
            assert get["path"] == path
            assert get["port"] == port
    # The kubelet sends SIGTERM, then SIGKILL after the grace period: nsup needs every
    # service's stop timeout (they stop one after another, dependents first) plus a margin.
    stops = sum(service.stop.timeout for service in policy.services.values())
    assert (
        spec["terminationGracePeriodSeconds"]
        >= max(s.stop.timeout for s in policy.services.values()) + 5
    )
    assert spec["terminationGracePeriodSeconds"] >= stops + 5


def test_example_policy_and_unit_are_valid():
    policy = load_policy(EXAMPLE / "policy.toml")
    assert policy.supervisor.health is not None
    # The kubelet probes the pod's IP: the example listens on every address.
    assert policy.supervisor.health[0] in ("0.0.0.0", "::")  # noqa: S104
    unit = (ROOT / "examples" / "systemd" / "nsup@.service").read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["Type"] == "notify"
    assert settings["KillMode"] == "mixed"
    assert settings["WatchdogSec"]
    assert settings["ExecStart"].split()[1:3] == ["run", "/etc/nsup/%i.toml"]
    dockerfile = (EXAMPLE / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["nsup", "run", "/etc/nsup/policy.toml"]' in dockerfile


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}"


def _engine_call(engine: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [engine, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _container_engine() -> tuple[str | None, str]:
    """A container engine that can build and run the example here, or why there is none."""
    for engine in ("podman", "docker"):
        if shutil.which(engine) is None:
            continue

        call = functools.partial(_engine_call, engine)
        if (info := call("info")).returncode != 0:
            return None, f"{engine} has no engine to talk to: {_last_line(info)}"
        # Can it run a container at all?  The host's own / as a read-only rootfs needs no image.
        probe = call(
            "run", "--rm", "--read-only", "--network", "none", "--ulimit", "nofile=1024:1024",
            "--ulimit", "nproc=1024:1024", "--rootfs", "/", "true",
        )  # fmt: skip
        if probe.returncode != 0:
            return None, f"{engine} cannot run a container here: {_last_line(probe)}"
        if call("image", "inspect", "debian:bookworm-slim").returncode != 0:
            pull = call("pull", "docker.io/library/debian:bookworm-slim", timeout=300)
            if pull.returncode != 0:
                return (
                    None,
                    f"{engine} cannot get the base image debian:bookworm-slim: {_last_line(pull)}",
                )
        return engine, ""
    return None, "neither podman nor docker is installed"


def test_container_image_builds_and_runs():
    engine, why = _container_engine()
    if engine is None:
        pytest.skip(why)
    tag = "nsup-example:test"
    subprocess.run(
        [engine, "build", "-t", tag, "-f", str(EXAMPLE / "Dockerfile"), str(ROOT)],
        check=True,
        timeout=900,
    )
    try:
        result = subprocess.run(
            [engine, "run", "--rm", "--entrypoint", "nsup", tag, "check", "/etc/nsup/policy.toml"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    finally:
        subprocess.run([engine, "rmi", "-f", tag], capture_output=True, timeout=120, check=False)
