"""Socket activation for real: sockets bound by nsup, read from inside with sd_listen_fds rules."""

from __future__ import annotations

import json
import os
import socket
import stat
import textwrap
import threading

import pytest
import trio
from helpers import PYTHON, read_line

import nsup
from nsup._engine.sockets import ServiceSockets, bind_socket
from nsup._policy.model import Socket

# What sd_listen_fds_with_names(3) checks, written out in Python: LISTEN_PID must be
# our own pid, the descriptors start at 3, and the names come from LISTEN_FDNAMES.
# The service reports what it found, then answers one connection on each socket
# with that socket's name.
SD_LISTEN_FDS = textwrap.dedent(
    """
    import json, os, socket, sys
    n = int(os.environ.get("LISTEN_FDS", "0"))
    socks = [socket.socket(fileno=fd) for fd in range(3, 3 + n)]
    try:
        os.fstat(3 + n)
        next_open = True
    except OSError:
        next_open = False
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    print(json.dumps({
        "pid": os.getpid(),
        "listen_pid": os.environ.get("LISTEN_PID"),
        "names": names,
        "listening": [s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for s in socks],
        "families": [int(s.family) for s in socks],
        "blocking": [s.getblocking() for s in socks],
        "next_open": next_open,
    }), flush=True)
    for s, name in zip(socks, names):
        conn, _ = s.accept()
        conn.sendall(name.encode())
        conn.close()
    """
)


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _receive_all(address: object, family: int) -> bytes:
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(address)
        data = b""
        while chunk := client.recv(64):
            data += chunk
        return data


@pytest.fixture
def bound(tmp_path):
    """A TCP socket named http and an unnamed Unix socket, bound by nsup's socket module."""
    sockets = ServiceSockets(
        "web",
        [
            Socket(f"127.0.0.1:{free_port()}", name="http"),
            Socket(str(tmp_path / "run" / "app.sock"), mode=0o660),
        ],
    )
    sockets.open()
    yield sockets
    sockets.close()


@pytest.mark.parametrize(
    ("init", "namespaces"),
    [
        (True, ["pid", "mount", "net"]),
        (False, ["pid", "mount", "net"]),
        (True, []),
        (False, []),
    ],
    ids=["init-pidns", "noinit-pidns", "init-subreaper", "noinit-plain"],
)
async def test_sd_listen_fds_from_inside(bound, tmp_path, init, namespaces):
    """fds 3.., LISTEN_PID equal to the command's own pid, names; reachable from the host."""
    spec = nsup.ProcessSpec(
        argv=[PYTHON, "-c", SD_LISTEN_FDS],
        namespaces=namespaces,
        init=init,
        stdout="pipe",
        listen_fds=bound.listen_fds(),
    )
    async with nsup.spawn(spec) as proc:
        report = json.loads(await read_line(proc.stdout))
        tcp = bound._socks[0].getsockname()
        answers = [
            await trio.to_thread.run_sync(_receive_all, tcp, socket.AF_INET),
            await trio.to_thread.run_sync(
                _receive_all, str(tmp_path / "run" / "app.sock"), socket.AF_UNIX
            ),
        ]
        status = await proc.wait()
    assert status.success
    assert str(report["pid"]) == report["listen_pid"]
    if init:
        assert proc.command_pid == report["pid"]
    elif "pid" in namespaces:
        assert report["pid"] == 1
    else:
        assert proc.pid == report["pid"]
    assert ["http", "web"] == report["names"]
    assert [1, 1] == report["listening"]
    assert [socket.AF_INET, socket.AF_UNIX] == report["families"]
    assert [True, True] == report["blocking"]
    assert report["next_open"] is False
    assert [b"http", b"web"] == answers


async def test_no_listen_fds_means_no_variables():
    """Without sockets the command sees no LISTEN_* at all, even if nsup's environment has them."""
    env = {"PATH": os.environ["PATH"], "LISTEN_FDS": "1", "LISTEN_PID": "1"}
    spec = nsup.ProcessSpec(
        argv=[PYTHON, "-c", "import os; print(os.environ.get('LISTEN_PID'))"],
        env={**env, "NSUP_TEST_MARKER": os.environ["NSUP_TEST_MARKER"]},
        stdout="pipe",
    )
    async with nsup.spawn(spec) as proc:
        line = await read_line(proc.stdout)
        await proc.wait()
    assert b"1" == line  # passed through untouched: nsup only sets what it passes


async def test_exec_failure_with_listen_fds_is_reported(bound):
    """The fork-and-exec path of the init reports a missing command like posix_spawn does."""
    spec = nsup.ProcessSpec(argv=["/nonexistent/server"], listen_fds=bound.listen_fds())
    with pytest.raises(nsup.SpawnError) as info:
        async with nsup.spawn(spec):
            pass
    assert ("exec", 2, 127) == (info.value.stage, info.value.errno, info.value.exit_code)


async def test_connections_queue_while_no_process_runs(bound):
    """A client connects while the service is down; the next run serves it: nothing is refused."""
    tcp = bound._socks[0].getsockname()
    with socket.create_connection(tcp, timeout=10) as client:
        client.sendall(b"early\n")
        echo = (
            "import socket; s = socket.socket(fileno=3); c, _ = s.accept(); c.sendall(c.recv(64))"
        )
        spec = nsup.ProcessSpec(
            argv=[PYTHON, "-c", echo], listen_fds=bound.listen_fds()[:1], namespaces=["net"]
        )
        async with nsup.spawn(spec) as proc:
            assert await proc.wait() == nsup.ExitStatus(code=0)
        assert b"early\n" == client.recv(64)


class TestBind:
    def test_unix_socket_mode_and_stale_file(self, tmp_path):
        """The parent directory is made, a stale socket file replaced, the mode set; close removes it."""
        path = tmp_path / "a" / "b.sock"
        path.parent.mkdir()
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(path))
        stale.close()
        sockets = ServiceSockets("web", [Socket(str(path), mode=0o640)])
        sockets.open()
        try:
            assert stat.S_ISSOCK(path.stat().st_mode)
            assert 0o640 == stat.S_IMODE(path.stat().st_mode)
            assert [("web", sockets._socks[0].fileno())] == sockets.listen_fds()
        finally:
            sockets.close()
        assert not path.exists()

    def test_refuses_to_replace_a_regular_file(self, tmp_path):
        path = tmp_path / "data"
        path.write_text("keep me")
        with pytest.raises(nsup.SpawnError) as info:
            bind_socket(Socket(str(path)), "services.web.sockets[0]")
        assert (
            f"cannot listen on {str(path)!r} (services.web.sockets[0]): {path} exists and is "
            "not a socket; remove it or choose another path"
        ) == str(info.value)
        assert "keep me" == path.read_text()

    def test_address_in_use_names_the_key(self):
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
            sockets = ServiceSockets(
                "web", [Socket(f"127.0.0.1:{free_port()}", name="ok"), Socket(f"127.0.0.1:{port}")]
            )
            with pytest.raises(nsup.SpawnError) as info:
                sockets.open()
        assert (
            f"cannot listen on '127.0.0.1:{port}' (services.web.sockets[1]): Address already in "
            "use; another process (or another service) already listens there; stop it or "
            "choose another address"
        ) == str(info.value)
        assert not sockets.is_open  # all or none: the first one was closed again

    def test_abstract_socket(self):
        name = f"@nsup-test-{os.getpid()}"
        sockets = ServiceSockets("web", [Socket(name)])
        sockets.open()
        try:
            with socket.socket(socket.AF_UNIX) as client:
                client.connect("\0" + name[1:])
        finally:
            sockets.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"listen_fds": [5], "pass_fds": {3: 0}},
            (
                "'pass_fds' targets [3] clash with 'listen_fds', which take descriptors 3 to 3; "
                "move them above"
            ),
        ),
        (
            {"listen_fds": [("a:b", 5)]},
            (
                "'listen_fds' names must be 1 to 255 printable ASCII characters without spaces "
                "or ':' (got 'a:b')"
            ),
        ),
        (
            {"listen_fds": ["x"]},
            "'listen_fds' items must be sockets, descriptors or (name, socket) pairs (got 'x')",
        ),
        (
            {"listen_fds": 3},
            "'listen_fds' must be a list of sockets or (name, socket) pairs (got 3)",
        ),
    ],
)
def test_spec_errors(kwargs, message):
    with pytest.raises(nsup.SpecError) as info:
        nsup.ProcessSpec(argv=["true"], **kwargs)
    assert message == str(info.value)


def test_spec_takes_sockets_and_pairs():
    with socket.socket() as a, socket.socket() as b:
        spec = nsup.ProcessSpec(argv=["true"], listen_fds=[a, ("http", b), 7])
        assert (("unknown", a.fileno()), ("http", b.fileno()), ("unknown", 7)) == spec.listen_fds


# A socket-activated echo server that stops cleanly: on SIGTERM it finishes the
# connection in hand and exits; connections still queued wait for the next run.
ECHO = textwrap.dedent(
    """
    import os, select, signal, socket
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)
    signal.signal(signal.SIGTERM, lambda *_: None)
    def notify_ready():  # sd_notify(READY=1): only now may nsup stop this run
        if os.environ.get("NOTIFY_SOCKET"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as n:
                n.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
    assert os.environ["LISTEN_PID"] == str(os.getpid())
    s = socket.socket(fileno=3)
    notify_ready()
    while True:
        ready, _, _ = select.select([s, r], [], [])
        if r in ready:
            break
        c, _ = s.accept()
        c.sendall(c.recv(64))
        c.close()
    """
)


class Hammer:
    """Connects and echoes on a thread until stopped; counts what happened, and says when."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.counts = {"served": 0, "refused": 0, "failed": 0, "wrong": 0}
        self.changed = threading.Condition()
        self.stop = False

    def run(self) -> None:
        n = 0
        while not self.stop:
            n += 1
            message = b"%d\n" % n
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=30) as client:
                    client.sendall(message)
                    answer = client.recv(64)
                outcome = "served" if answer == message else "wrong"
            except ConnectionRefusedError:
                outcome = "refused"
            except OSError:
                outcome = "failed"
            with self.changed:
                self.counts[outcome] += 1
                self.changed.notify_all()

    def wait_served(self, count: int) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.counts["served"] >= count or self.stop, timeout=60)


async def test_no_connection_refused_across_restarts():
    """50 restarts of a socket-activated echo server while a client makes 2,000 connections: none refused.

    The restarts are spread over the connections: after each one the test
    waits for 40 more to be served, so connections arrive while runs stop,
    start, and serve.
    """
    port = free_port()
    policy = nsup.Policy.from_dict(
        {
            "services": {
                "echo": {
                    "command": [PYTHON, "-c", ECHO],
                    "sockets": [{"listen": f"127.0.0.1:{port}"}],
                    "namespaces": ["pid", "mount", "net"],
                    "ready": {"notify": True},
                    "restart": "always",
                }
            }
        }
    )
    hammer = Hammer(port)
    async with nsup.open_supervisor(policy) as sup, trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, hammer.run)
        try:
            for i in range(1, 51):
                await sup.restart("echo")
                await trio.to_thread.run_sync(hammer.wait_served, 40 * i)
        finally:
            with hammer.changed:
                hammer.stop = True
                hammer.changed.notify_all()
        assert 50 == sup.status()["echo"].restarts
    assert hammer.counts["served"] >= 2000
    assert {"refused": 0, "failed": 0, "wrong": 0} == {
        k: hammer.counts[k] for k in ("refused", "failed", "wrong")
    }


async def test_a_service_without_sockets_sees_no_listen_variables(monkeypatch):
    """nsup's own LISTEN_* (were it socket-activated itself) never reach a service."""
    for name, value in (("LISTEN_FDS", "1"), ("LISTEN_PID", "1"), ("LISTEN_FDNAMES", "x")):
        monkeypatch.setenv(name, value)
    got: list[str] = []
    policy = nsup.Policy.from_dict(
        {
            "services": {
                "job": {"command": ["sh", "-c", "echo ${LISTEN_FDS-unset}"], "restart": "never"}
            }
        }
    )
    async with nsup.open_supervisor(policy, output=lambda _n, line: got.append(line)) as sup:
        with trio.fail_after(10):
            await sup.wait_finished()
    assert ["unset"] == got


def _echo_policy(
    port: int, *, marker: str = "a", instances: int = 1, extra_port: int | None = None
) -> nsup.Policy:
    sockets = [{"listen": f"127.0.0.1:{port}"}]
    if extra_port is not None:
        sockets.append({"listen": f"127.0.0.1:{extra_port}", "name": "extra"})
    return nsup.Policy.from_dict(
        {
            "services": {
                "echo": {
                    "command": [PYTHON, "-c", ECHO, marker],
                    "sockets": sockets,
                    "namespaces": ["pid", "mount", "net"],
                    "ready": {"notify": True},
                    "instances": instances,
                }
            }
        }
    )


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


async def test_sockets_across_reloads_and_instances():
    """A reload that changes the command keeps the socket (a connection made meanwhile is served);
    one that changes the sockets rebinds; removing the service closes them; instances share them."""
    port, extra = free_port(), free_port()
    async with nsup.open_supervisor(_echo_policy(port, instances=2)) as sup:
        assert 2 == sum(s.state == "up" for s in sup.status().values())
        fd_before = sup._sockets["echo"]._socks[0].fileno()
        hammer = Hammer(port)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, hammer.run)
            await trio.to_thread.run_sync(hammer.wait_served, 20)
            await sup.reload(_echo_policy(port, marker="b"))  # both instances stop, two new start
            served = hammer.counts["served"]
            await trio.to_thread.run_sync(hammer.wait_served, served + 20)
            with hammer.changed:
                hammer.stop = True
                hammer.changed.notify_all()
        assert {"refused": 0, "failed": 0, "wrong": 0} == {
            k: hammer.counts[k] for k in ("refused", "failed", "wrong")
        }
        assert fd_before == sup._sockets["echo"]._socks[0].fileno()
        await sup.reload(_echo_policy(port, marker="b", extra_port=extra))
        assert _listening(extra)
        await sup.reload(
            nsup.Policy.from_dict({"services": {"other": {"command": ["sleep", "100"]}}})
        )
        assert not _listening(port)
        assert not _listening(extra)
