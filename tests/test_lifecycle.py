"""The lifecycle, for real: oneshots gating services, dependency conditions, sidecars.

Each test runs a policy in a real supervisor; the services are small shell or
Python programs whose output (or files they leave) proves the order of events.
"""

from __future__ import annotations

import http.client
import os
import textwrap
from pathlib import Path

import pytest
import trio
from helpers import PYTHON
from test_control_harness import NsupRun, write_policy
from test_sockets import free_port

import nsup


def lines_of(collected: list[tuple[str, str]], name: str) -> list[str]:
    return [line for service, line in collected if service == name]


async def test_migration_gates_the_server(tmp_path):
    """The server starts only once the migration has completed; it never sees the old schema."""
    schema = tmp_path / "schema"
    policy = nsup.Policy.from_dict(
        {
            "services": {
                # Listed first on purpose: dependency order, not file order, starts it last.
                "web": {
                    "command": ["sh", "-c", f"test -f {schema} || exit 1; exec sleep 1000"],
                    "depends_on": {"migrate": "completed"},
                    "restart": "never",
                },
                "migrate": {
                    "command": ["sh", "-c", f"sleep 0.2; echo v2 > {schema}"],
                    "type": "oneshot",
                },
            }
        }
    )
    async with nsup.open_supervisor(policy) as sup:
        status = sup.status()
        assert ("ended", True, 0) == (
            status["migrate"].state,
            status["migrate"].completed,
            status["migrate"].last_exit.code,
        )
        assert ("up", 0) == (status["web"].state, status["web"].restarts)
        assert status["web"].pid is not None


async def test_a_failing_oneshot_is_retried_with_backoff(tmp_path):
    """restart = "on-failure" runs a oneshot again until it succeeds; a success code counts."""
    tries = tmp_path / "tries"
    script = f"echo x >> {tries}; test $(wc -l < {tries}) -ge 3 && exit 3; exit 1"
    policy = nsup.Policy.from_dict(
        {
            "services": {
                "migrate": {
                    "command": ["sh", "-c", script],
                    "type": "oneshot",
                    "success_codes": [3],
                    "backoff": {"initial": "10ms", "jitter": 0},
                },
                "web": {"command": ["sleep", "1000"], "depends_on": ["migrate"]},
            }
        }
    )
    async with nsup.open_supervisor(policy) as sup:
        status = sup.status()
        assert 3 == len(tries.read_text().split())
        assert (2, True, 3) == (
            status["migrate"].restarts,
            status["migrate"].completed,
            status["migrate"].last_exit.code,
        )
        assert "up" == status["web"].state


async def test_a_failed_oneshot_leaves_its_dependent_unstarted():
    """A oneshot that fails for good: the dependent is blocked, says why, and nothing hangs."""
    policy = nsup.Policy.from_dict(
        {
            "services": {
                "migrate": {
                    "command": ["sh", "-c", "exit 4"],
                    "type": "oneshot",
                    "restart": "never",
                },
                "web": {"command": ["sleep", "1000"], "depends_on": {"migrate": "completed"}},
                "other": {"command": ["sleep", "1000"]},
            }
        }
    )
    with trio.fail_after(20):
        async with nsup.open_supervisor(policy) as sup:  # returns: a blocked service is settled
            status = sup.status()
    web = status["web"]
    assert ("blocked", None, 0) == (web.state, web.pid, web.restarts)
    assert (
        "waits for 'migrate' to complete, which ended (exited with code 4) and will not restart"
        == web.blocked
    )
    assert ("ended", False) == (status["migrate"].state, status["migrate"].completed)
    assert "up" == status["other"].state


def test_blocked_event_and_status_from_nsup_run(tmp_path):
    """`nsup run` logs the blocked event, and `nsup status` shows the state (another service runs on)."""
    text = textwrap.dedent(
        """
        [supervisor]
        control = "ctl.sock"
        [services.migrate]
        command = ["false"]
        type = "oneshot"
        restart = "never"
        [services.web]
        command = ["sleep", "1000"]
        depends_on = { migrate = "completed" }
        [services.other]
        command = ["sleep", "1000"]
        """
    )
    run = NsupRun(write_policy(str(tmp_path), text))  # other keeps it running
    try:
        line = run.wait_line("web: blocked")
        assert line.endswith(
            "waits for 'migrate' to complete, which ended (exited with code 1) and will not restart"
        )
        table = run.nsup("status", "--control", run.control).stdout
        assert any(row.split()[:2] == ["web", "blocked"] for row in table.splitlines())
    finally:
        run.stop()


async def test_healthy_waits_for_a_passing_health_probe(tmp_path):
    """``healthy`` waits for the dependency's first passing health probe, not just its start."""
    probed = tmp_path / "probed"
    policy = nsup.Policy.from_dict(
        {
            "services": {
                "cache": {
                    "command": ["sleep", "1000"],
                    "health": {"exec": ["touch", str(probed)], "interval": "50ms"},
                },
                "web": {
                    "command": ["sh", "-c", f"test -f {probed} || exit 1; exec sleep 1000"],
                    "depends_on": {"cache": "healthy"},
                    "restart": "never",
                },
            }
        }
    )
    async with nsup.open_supervisor(policy) as sup:
        assert ("up", 0) == (sup.status()["web"].state, sup.status()["web"].restarts)


async def test_started_does_not_wait_for_ready(tmp_path):
    """``started`` lets the dependent go as soon as the dependency runs, before it is ready."""
    gate = tmp_path / "gate"
    policy = nsup.Policy.from_dict(
        {
            "services": {
                # db is ready only once web has run: only "started" can untangle this.
                "db": {
                    "command": ["sleep", "1000"],
                    "ready": {"exec": ["test", "-f", str(gate)], "timeout": "20s"},
                },
                "web": {
                    "command": ["sh", "-c", f"touch {gate}; exec sleep 1000"],
                    "depends_on": {"db": "started"},
                },
            }
        }
    )
    with trio.fail_after(20):
        async with nsup.open_supervisor(policy) as sup:
            assert ("up", "up") == (sup.status()["db"].state, sup.status()["web"].state)


SERVER = textwrap.dedent(
    """
    import socket
    s = socket.create_server(("127.0.0.1", 8080))
    while True:
        c, _ = s.accept()
        c.sendall(b"web:" + open("/proc/sys/kernel/hostname", "rb").read().strip())
        c.close()
    """
)
CLIENT = textwrap.dedent(
    """
    import socket, time
    for _ in range(500):
        try:
            c = socket.create_connection(("127.0.0.1", 8080), timeout=5)
        except ConnectionRefusedError:
            time.sleep(0.01)  # the server is still binding
            continue
        print(c.recv(64).decode(), flush=True)
        break
    import signal
    signal.pause()
    """
)


async def test_sidecar_sees_the_web_servers_loopback_port_and_restarts_with_it():
    """A sidecar in web's namespaces reaches web's 127.0.0.1:8080, and follows web's restarts."""
    seen: list[tuple[str, str]] = []
    got = trio.Event()

    def output(name: str, line: str) -> None:
        seen.append((name, line))
        if name == "side":
            got.set()

    policy = nsup.Policy.from_dict(
        {
            "services": {
                "web": {
                    "command": [PYTHON, "-c", SERVER],
                    "namespaces": ["pid", "mount", "uts", "ipc", "net"],
                    "hostname": "webhost",
                    "ready": {"tcp": "127.0.0.1:8080"},
                },
                "side": {"command": [PYTHON, "-c", CLIENT], "namespaces_from": "web"},
            }
        }
    )
    async with nsup.open_supervisor(policy, output=output) as sup:
        with trio.fail_after(20):
            await got.wait()
        assert ["web:webhost"] == lines_of(seen, "side")
        first_side = sup.status()["side"].pid
        got = trio.Event()
        await sup.restart("web")
        with trio.fail_after(20):
            await got.wait()
        assert ["web:webhost", "web:webhost"] == lines_of(seen, "side")
        side = sup.status()["side"]
        assert 1 == side.restarts
        assert side.pid not in (None, first_side)
        assert "" == side.error


@pytest.mark.parametrize("own_pid_namespace", [True, False])
async def test_sidecar_runs_in_the_owners_pid_namespace(own_pid_namespace):
    """With nsup's init, the sidecar's command lives in web's PID namespace (it sees web's processes)."""
    lines: list[tuple[str, str]] = []
    got = trio.Event()

    def output(name: str, line: str) -> None:
        lines.append((name, line))
        got.set()

    web_ns = ["pid", "mount", "net"] if own_pid_namespace else ["net"]
    policy = nsup.Policy.from_dict(
        {
            "services": {
                "web": {"command": ["sleep", "1000"], "namespaces": web_ns},
                "side": {
                    "command": [
                        "sh",
                        "-c",
                        "readlink /proc/self/ns/net /proc/self/ns/pid; exec sleep 1000",
                    ],
                    "namespaces_from": "web",
                },
            }
        }
    )
    async with nsup.open_supervisor(policy, output=output) as sup:
        with trio.fail_after(20):
            while len(lines) < 2:
                await got.wait()
                got = trio.Event()
        web_pid = sup.status()["web"].pid
        expected = [os.readlink(f"/proc/{web_pid}/ns/net"), os.readlink(f"/proc/{web_pid}/ns/pid")]
        assert expected == lines_of(lines, "side")


def test_web_and_db_example_answers_the_host(tmp_path):
    """examples/web-and-db.toml: web, in its own network namespace, answers the host after migrate."""
    root = Path(__file__).parent.parent
    port = free_port()
    text = (
        (root / "examples" / "web-and-db.toml")
        .read_text()
        .replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        .replace("examples/hello_server.py", str(root / "examples" / "hello_server.py"))
        .replace("/tmp/nsup-example-schema", str(tmp_path / "schema"))
    )
    run = NsupRun(
        write_policy(
            str(tmp_path),
            '[supervisor]\ncontrol = "ctl.sock"\n' + text.replace("[supervisor]\n", "", 1),
        )
    )
    try:
        run.wait_line("web: ready")
        migrated = run.wait_line("migrate: exited")
        assert "nsup: migrate: exited with code 0" == migrated
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read().decode()
        conn.close()
        assert 200 == response.status
        assert body.startswith("hello from web, pid ")
        assert body.endswith("; schema v2\n")
    finally:
        run.stop()


async def test_sidecar_example(tmp_path):
    """examples/sidecar.toml: the probe, in web's namespaces, gets answers from web's loopback port."""
    root = Path(__file__).parent.parent
    path = tmp_path / "sidecar.toml"
    path.write_text(
        (root / "examples" / "sidecar.toml").read_text().replace("8080", str(free_port()))
    )
    answered = trio.Event()
    lines: list[tuple[str, str]] = []

    def output(name: str, line: str) -> None:
        lines.append((name, line))
        if name == "probe":
            answered.set()

    async with nsup.open_supervisor(nsup.load_policy(path), output=output):
        with trio.fail_after(20):
            await answered.wait()
    assert "web answered 200 OK on its own loopback" == lines_of(lines, "probe")[0]


async def test_sidecar_of_an_owner_that_ended_is_blocked():
    """The owner ended for good: the sidecar has no namespaces to enter and says so."""
    policy = nsup.Policy.from_dict(
        {
            "services": {
                "web": {"command": ["sh", "-c", "exit 1"], "restart": "never"},
                "side": {"command": ["sleep", "1000"], "namespaces_from": "web"},
            }
        }
    )
    with trio.fail_after(20):
        async with nsup.open_supervisor(policy) as sup:
            # The sidecar may have joined web's short life first: wait until it is blocked.
            await sup._runners["side"].wait_for(lambda r: r.blocked_on is not None)
            side = sup.status()["side"]
    assert ("blocked", None) == (side.state, side.pid)
    assert (
        "waits for 'web' to have started, which ended (exited with code 1) and will not restart"
        == side.blocked
    )


def test_nsup_run_exits_1_when_a_failed_oneshot_leaves_nothing_to_run(tmp_path):
    """Nothing runs and nothing will: nsup run ends, exit 1, naming the oneshot and the blocked."""
    text = textwrap.dedent(
        """
        [supervisor]
        control = "ctl.sock"
        [services.migrate]
        command = ["sh", "-c", "exit 2"]
        type = "oneshot"
        restart = "never"
        [services.web]
        command = ["sleep", "1000"]
        depends_on = { migrate = "completed" }
        """
    )
    run = NsupRun(write_policy(str(tmp_path), text))
    try:
        assert 1 == run.proc.wait(timeout=30)
        assert "nsup: every service has ended; failed: migrate, web" == run.wait_line("failed: ")
    finally:
        run.stop()
