"""The control socket and ``nsup status|start|stop|restart|signal|reload|events``, against a real ``nsup run``."""

from __future__ import annotations

import concurrent.futures
import json
import os
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest
from test_control_harness import DEADLINE, Conn, NsupRun, write_policy

SIMPLE = """
[services.a]
command = ["sleep", "1000"]

[services.b]
command = ["sh", "-c", "exit 3"]
restart = "never"
"""


@pytest.fixture
def start(tmp_path):
    """``start(policy_text, **kw)`` runs ``nsup run`` on it; every one is stopped at teardown."""
    runs: list[NsupRun] = []

    def _start(
        text: str,
        *,
        control: str | None = "ctl.sock",
        name: str = "app.toml",
        settle: bool = True,
        **kwargs,
    ) -> NsupRun:
        head = f'[supervisor]\ncontrol = "{control}"\n' if control else ""
        run = NsupRun(write_policy(str(tmp_path), head + text, name), **kwargs)
        runs.append(run)
        if settle:
            run.settle()
        return run

    yield _start
    for run in runs:
        run.stop()


def wait_state(run: NsupRun, name: str, state: str) -> dict:
    """Follow the event stream until *name* is in *state* (no sleeping)."""
    with Conn(run.control) as conn:
        assert conn.ask({"v": 1, "cmd": "events"})["subscribed"]
        current = run.status()[name]
        while current["state"] != state:
            event = conn.receive()
            assert event is not None
            if event["service"] == name:
                current = run.status()[name]
        return current


# --- status ------------------------------------------------------------------------------


def test_status_table_and_json(start):
    run = start(SIMPLE)
    wait_state(run, "b", "ended")
    a = run.status()["a"]
    result = run.ctl("status")
    assert result.returncode == 0, result.stderr
    header, row_a, row_b = result.stdout.splitlines()
    assert header.split() == [
        "NAME", "STATE", "PID", "INIT", "UPTIME", "RESTARTS", "LAST", "EXIT",
    ]  # fmt: skip
    assert row_a.split()[:4] == ["a", "up", str(a["pid"]), str(a["init_pid"])]
    assert row_a.split()[5:] == ["0", "-"]
    assert row_b.split() == ["b", "ended", "-", "-", "-", "0", "exited", "with", "code", "3"]
    with open(f"/proc/{a['pid']}/comm") as f:
        assert "sleep" == f.read().strip()  # the command, not the init
    assert os.path.exists(f"/proc/{a['pid']}")

    data = json.loads(run.ctl("status", "--json").stdout)
    assert data["supervisor"]["pid"] == run.proc.pid
    assert data["supervisor"]["protocol"] == 1
    by_name = {s["name"]: s for s in data["services"]}
    assert (by_name["a"]["pid"], by_name["a"]["init_pid"]) == (a["pid"], a["init_pid"])
    assert by_name["a"]["ready"] is True
    assert by_name["b"]["last_exit"] == {
        "code": 3,
        "signal": None,
        "exit_code": 3,
        "core_dumped": False,
        "oom_killed": False,
        "text": "exited with code 3",
    }


def test_status_named_and_unknown(start):
    run = start(SIMPLE)
    result = run.ctl("status", "a")
    assert result.returncode == 0
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["NAME", "a"]
    unknown = run.ctl("status", "nope")
    assert unknown.returncode == 1
    assert unknown.stderr == "nsup: no service 'nope' in this supervisor (known: a, b)\n"


def test_status_shows_instances_and_reason(start):
    run = start(
        settle=False,
        text="""
[services.w]
command = ["sleep", "1000"]
instances = 2

[services.h]
command = ["sleep", "1000"]
health = { tcp = "127.0.0.1:1", interval = "50ms", retries = 1 }
backoff = { initial = "1h", max = "1h" }
""",
    )
    wait_state(run, "h", "backoff")  # a failed health check restarts it, after the backoff
    lines = run.ctl("status").stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["NAME", "w.0", "w.1", "h"]
    assert lines[3].endswith("killed by SIGTERM (health)")
    assert [line.split()[0] for line in run.ctl("status", "w").stdout.splitlines()] == [
        "NAME",
        "w.0",
        "w.1",
    ]


# --- start, stop, restart, signal ------------------------------------------------------------


def test_stop_start_restart(start):
    run = start(SIMPLE)
    old = run.status()["a"]["pid"]

    assert run.ctl("stop", "a").returncode == 0  # returns once the process is reaped
    after = run.status()["a"]
    assert (after["state"], after["pid"]) == ("down", None)
    assert not os.path.exists(f"/proc/{old}")

    assert run.ctl("start", "a").returncode == 0  # returns once it is ready
    started = run.status()["a"]
    assert (started["state"], started["ready"]) == ("up", True)

    assert run.ctl("restart", "a").returncode == 0
    restarted = run.status()["a"]
    assert restarted["state"] == "up"
    assert restarted["pid"] not in (None, started["pid"])

    bad = run.ctl("restart", "a", "zzz")
    assert bad.returncode == 1
    assert "no service 'zzz'" in bad.stderr
    assert run.status()["a"]["pid"] == restarted["pid"]  # nothing happened
    assert run.ctl("stop").returncode == 2  # a name is required: usage error


def test_signal(start):
    run = start(SIMPLE)
    pid = run.status()["a"]["pid"]
    result = run.ctl("signal", "a", "usr1")
    assert (result.returncode, result.stdout) == (0, "sent SIGUSR1 to 1 instance of a\n"), (
        result.stderr
    )
    wait_state(run, "a", "up")
    status = run.status()["a"]
    assert status["last_exit"]["signal"] == signal.SIGUSR1
    assert status["pid"] != pid
    assert "killed by SIGUSR1" in run.ctl("status", "a").stdout

    assert run.ctl("signal", "a", "NOPE").returncode == 2
    not_running = run.ctl("signal", "b", "TERM")
    assert (not_running.returncode, not_running.stderr) == (
        1,
        "nsup: no instance of 'b' is running\n",
    )
    assert run.ctl("signal", "zzz", "TERM").returncode == 1


# --- reload ---------------------------------------------------------------------------------


def test_reload(start, tmp_path):
    run = start(SIMPLE)
    a_pid = run.status()["a"]["pid"]
    policy = tmp_path / "app.toml"
    policy.write_text(policy.read_text() + '\n[services.c]\ncommand = ["sleep", "1000"]\n')
    result = run.ctl("reload")
    assert (result.returncode, result.stdout) == (0, "reloaded (added: c)\n")
    status = run.status()
    assert status["c"]["state"] == "up"
    assert status["a"]["pid"] == a_pid  # unchanged: untouched

    policy.write_text(policy.read_text() + "\n[services.d]\ncommand = 5\n")
    bad = run.ctl("reload")
    assert bad.returncode == 1
    assert bad.stderr.startswith("nsup: the new policy is invalid; the old one keeps running:\n")
    assert "services.d.command" in run.request("reload")["error"]["issues"][0]["key"]
    assert set(run.status()) == {"a", "b", "c"}


# --- events ----------------------------------------------------------------------------------


def test_events_cli_follows_the_stream(start):
    run = start(SIMPLE)
    follower = subprocess.Popen(
        [sys.executable, "-m", "nsup", "events", "--json", "--control", run.control],
        stdout=subprocess.PIPE,
    )
    try:
        assert follower.stdout is not None
        os.set_blocking(follower.stdout.fileno(), False)
        selector = selectors.DefaultSelector()
        selector.register(follower.stdout, selectors.EVENT_READ)
        buffered = b""
        deadline = time.monotonic() + DEADLINE

        # The follower prints nothing until an event comes, so keep causing
        # events until a whole restart reaches it: it may not have subscribed yet.
        def kinds_of_a() -> set[str]:
            lines = buffered.decode().splitlines(keepends=True)
            events = [json.loads(line) for line in lines if line.endswith("\n")]
            return {e["event"] for e in events if e["service"] == "a"}

        while not {"stopping", "started"} <= kinds_of_a():
            assert time.monotonic() < deadline, buffered
            if b'"service": "a"' not in buffered:
                assert run.request("restart", names=["a"])["ok"]
            while selector.select(timeout=0.5):
                chunk = follower.stdout.read()
                assert chunk, "the follower exited"
                buffered += chunk
        events = [json.loads(line) for line in buffered.decode().splitlines() if line]
        assert all("v" not in e and "time" in e for e in events)
    finally:
        run.stop()  # a clean shutdown ends the stream: the follower exits 0
        assert follower.wait(timeout=DEADLINE) == 0
        follower.stdout.close()


def test_events_over_the_socket(start):
    run = start(SIMPLE)
    with Conn(run.control) as conn:
        assert conn.ask({"v": 1, "cmd": "events", "id": 7}) == {
            "v": 1,
            "ok": True,
            "subscribed": True,
            "id": 7,
        }
        assert run.request("restart", names=["a"])["ok"]
        seen = []
        while "ready" not in seen:
            event = conn.receive()
            assert event is not None
            assert event["v"] == 1
            if event["service"] == "a":  # b may still be ending from the start
                seen.append(event["event"])
        assert seen == ["stopping", "exited", "restarting", "starting", "started", "ready"]


# --- finding the socket, and nothing there -------------------------------------------------------


def test_nothing_listening(start, tmp_path):
    run = start(SIMPLE)
    missing = str(tmp_path / "none.sock")
    result = run.nsup("status", "--control", missing)
    assert result.returncode == 3
    assert result.stderr == (
        f"nsup: cannot reach a supervisor at {missing}: no such socket; is `nsup run` running? "
        "point at another socket with --control PATH or --policy FILE\n"
    )
    stale = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()  # the file stays; nothing listens
    result = run.nsup("stop", "a", "--control", stale)
    assert result.returncode == 3
    assert "nothing listening (a stale socket" in result.stderr
    unreadable = run.nsup("status", "--policy", str(tmp_path / "missing.toml"))
    assert unreadable.returncode == 2


def test_policy_option_finds_the_socket(start):
    run = start(SIMPLE)
    result = run.nsup("status", "--policy", run.policy, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].startswith("a ")
    assert run.control == os.path.join(os.path.dirname(run.policy), "ctl.sock")


def test_default_path_under_xdg_runtime_dir(start, tmp_path):
    runtime = tmp_path / "xdg"
    runtime.mkdir()
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    run = start(SIMPLE, control=None, name="myapp.toml", env=env)
    assert run.control == f"{runtime}/nsup/myapp.sock"
    assert stat.S_IMODE(os.stat(runtime / "nsup").st_mode) == 0o700
    by_policy = run.nsup("status", "--policy", run.policy, env=env)
    assert by_policy.returncode == 0, by_policy.stderr
    alone = run.nsup("status", env=env)  # the only socket in the default directory
    assert alone.returncode == 0, alone.stderr
    assert [line.split()[0] for line in alone.stdout.splitlines()] == ["NAME", "a", "b"]


# --- the socket file: mode, owner, stale, live ---------------------------------------------------


def test_socket_mode_and_owner(start):
    run = start(SIMPLE)
    st = os.lstat(run.control)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    run.stop()
    assert not os.path.exists(run.control)  # removed on exit


def test_stale_socket_is_replaced(start, tmp_path):
    stale = tmp_path / "ctl.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    assert stat.S_IMODE(os.lstat(stale).st_mode) != 0o600
    run = start(SIMPLE)
    assert run.status()["a"]["state"] == "up"
    assert stat.S_IMODE(os.lstat(stale).st_mode) == 0o600  # ours now
    assert run.wait_line("control socket") == f"nsup: control socket {stale}"


def test_live_socket_is_never_stolen(start, tmp_path):
    run = start(SIMPLE)
    inode = os.lstat(run.control).st_ino
    second = subprocess.run(
        [sys.executable, "-m", "nsup", "run", run.policy],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert second.returncode == 2
    assert second.stderr == (
        f"nsup: another nsup is already running with control socket {run.control}; "
        "stop it first, or give this policy another [supervisor] control path\n"
    )
    assert os.lstat(run.control).st_ino == inode
    assert run.status()["a"]["state"] == "up"

    (tmp_path / "file.sock").write_text("")
    other = write_policy(
        str(tmp_path), '[supervisor]\ncontrol = "file.sock"\n' + SIMPLE, "other.toml"
    )
    refused = subprocess.run(
        [sys.executable, "-m", "nsup", "run", other],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert refused.returncode == 2
    assert "file.sock exists and is not a socket" in refused.stderr


# --- who may connect -------------------------------------------------------------------------

CLIENT_AS_NOBODY = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print("connect:", exc.strerror)
    raise SystemExit(0)
# The refusal comes at once, before any request.
print("reply:", s.makefile().readline().strip())
"""


def _as_nobody(path: str) -> str:
    result = subprocess.run(
        ["/usr/bin/python3", "-c", CLIENT_AS_NOBODY, path],
        user=65534,
        group=65534,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=True,
    )
    return result.stdout.strip()


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"), reason="needs root"
)
def test_other_uid_is_refused(start):
    # A directory that uid 65534 may traverse, so the socket itself is what refuses.
    shared = tempfile.mkdtemp(prefix="nsup-ctl-", dir="/tmp")
    try:
        os.chmod(shared, 0o711)  # noqa: S103 - uid 65534 must reach the socket
        run = start(SIMPLE, control=f"{shared}/ctl.sock")
        # The 0600 mode: the kernel refuses the connect.
        assert _as_nobody(run.control) == "connect: Permission denied"
        # Loosen the mode by hand: SO_PEERCRED still refuses, with a reason.
        os.chmod(run.control, 0o666)  # noqa: S103 - on purpose: SO_PEERCRED must still refuse
        reply = json.loads(_as_nobody(run.control).removeprefix("reply: "))
        assert reply == {
            "v": 1,
            "ok": False,
            "error": {
                "code": "permission_denied",
                "message": f"uid 65534 may not control this supervisor (only uid {os.geteuid()}, which runs it, and root)",
            },
        }
        assert run.status()["a"]["state"] == "up"
        run.stop()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# --- bad clients never disturb the supervisor -------------------------------------------------


def test_malformed_requests_are_answered(start):
    run = start(SIMPLE)
    with Conn(run.control) as conn:
        conn.send_raw(b"this is not json\n")
        assert conn.receive()["error"]["code"] == "bad_json"
        assert conn.ask([1, 2])["error"]["code"] == "bad_request"
        assert conn.ask({"v": 2, "cmd": "status"})["error"] == {
            "code": "unsupported_version",
            "message": "this nsup speaks protocol version 1 (got 'v': 2)",
            "supported": [1],
        }
        assert conn.ask({"cmd": "status"})["error"]["code"] == "unsupported_version"
        unknown = conn.ask({"v": 1, "cmd": "explode", "id": "x1"})
        assert unknown == {
            "v": 1,
            "ok": False,
            "error": {
                "code": "unknown_command",
                "message": "unknown command 'explode'; known: ping, status, start, stop, restart, signal, reload, reopen-logs, events",
            },
            "id": "x1",
        }
        assert conn.ask({"v": 1, "cmd": "stop", "names": "a"})["error"]["code"] == "bad_request"
        assert conn.ask({"v": 1, "cmd": "stop", "names": []})["error"]["code"] == "bad_request"
        assert (
            conn.ask({"v": 1, "cmd": "signal", "name": "a", "signal": "SIGNOPE"})["error"]["code"]
            == "bad_request"
        )
        conn.send_raw(b"[" * 100_000 + b"\n")  # too deep, and too long
        assert conn.receive()["error"]["code"] == "too_long"
        conn.send_raw(b"[" * 60_000 + b"\n")  # too deep for json, short enough
        assert conn.receive()["error"]["code"] == "bad_json"
        # The same connection still works.
        assert conn.ask({"v": 1, "cmd": "status"})["ok"]
    assert run.status()["a"]["state"] == "up"


def test_ten_megabyte_line(start):
    run = start(SIMPLE)
    with Conn(run.control) as conn:
        conn.send_raw(b'{"v": 1, "cmd": "status", "pad": "' + b"x" * (10 * 1024 * 1024) + b'"}\n')
        reply = conn.receive()
        assert reply == {
            "v": 1,
            "ok": False,
            "error": {"code": "too_long", "message": "a request line may be at most 65536 bytes"},
        }
        assert conn.ask({"v": 1, "cmd": "ping"})["ok"]  # the rest of the long line was skipped
    assert run.status()["a"]["state"] == "up"


def test_clients_that_disconnect(start):
    run = start(SIMPLE)
    # Half a request, then gone.
    conn = Conn(run.control)
    conn.send_raw(b'{"v": 1, "cmd": "sta')
    conn.close()
    # Connect and leave without a word.
    Conn(run.control).close()
    # Ask for a restart and leave before the answer: the restart still happens.
    pid = run.status()["a"]["pid"]
    conn = Conn(run.control)
    conn.send_raw(b'{"v": 1, "cmd": "restart", "names": ["a"]}\n')
    conn.close()
    # A subscriber that goes away.
    conn = Conn(run.control)
    assert conn.ask({"v": 1, "cmd": "events"})["ok"]
    conn.close()
    now = wait_state(run, "a", "up")
    while now["pid"] == pid:  # the restart may still be under way
        now = run.status()["a"]
    assert run.ctl("status").returncode == 0
    assert run.proc.poll() is None


# --- load ---------------------------------------------------------------------------------------


def test_100_concurrent_status_calls_while_100_services_restart(start):
    services = "".join(
        f"""
[services.s{i:03d}]
command = ["sh", "-c", "sleep 0.05; exit 1"]
restart = "always"
backoff = {{ initial = "10ms", max = "50ms", jitter = 0.0 }}
"""
        for i in range(100)
    )
    run = start('max_restarts = 1000000\nwithin = "1s"\n' + services, settle=False)
    try:
        before = sum(s["restarts"] for s in run.status().values())

        def one(_: int) -> subprocess.CompletedProcess[str]:
            return run.ctl("status", timeout=120)

        began = time.monotonic()
        results: list[subprocess.CompletedProcess[str]] = []
        # `nsup status` is quick now: repeat the 100 calls until 100 restarts happened meanwhile.
        for _round in range(30):
            with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
                results += pool.map(one, range(100))
            after = sum(s["restarts"] for s in run.status().values())
            if after > before + 100:
                break
        elapsed = time.monotonic() - began
        failed = [r for r in results if r.returncode != 0]
        assert failed == [], failed[0].stderr
        assert all(len(r.stdout.splitlines()) == 101 for r in results)
        assert after > before + 100, (before, after)  # they really were restarting meanwhile
        print(f"\n100 concurrent `nsup status` calls while 100 services restart: {elapsed:.2f}s")  # noqa: T201
        assert run.proc.poll() is None
    finally:
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
            try:
                run.proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                run.proc.kill()  # by pid: a hung nsup must not outlive the test
                run.proc.wait()
