"""``[supervisor] health``: /healthz, /readyz and /metrics from a real ``nsup run``."""

from __future__ import annotations

import http.client
import json
import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_control_harness import Conn, NsupRun, write_policy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    """``served(services_text)`` -> (run, port): nsup run with a health endpoint, stopped at teardown."""
    runs: list[NsupRun] = []

    def _start(text: str) -> tuple[NsupRun, int]:
        port = free_port()
        head = f'[supervisor]\ncontrol = "ctl.sock"\nhealth = "127.0.0.1:{port}"\n'
        run = NsupRun(write_policy(str(tmp_path), head + text))
        runs.append(run)
        run.settle()
        assert run.wait_line("health endpoint") == (
            f"nsup: health endpoint http://127.0.0.1:{port}/ (/healthz, /readyz, /metrics)"
        )
        return run, port

    yield _start
    for run in runs:
        run.stop()


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


SERVICES = """
[services.a]
command = ["sleep", "1000"]

[services.w]
command = ["sleep", "1000"]
instances = 2

[services.b]
command = ["sh", "-c", "exit 3"]
restart = "never"
"""


def test_healthz_and_errors(served):
    run, port = served(SERVICES)
    assert get(port, "/healthz")[::2] == (200, "ok\n")
    status, headers, _ = get(port, "/healthz", "HEAD")
    assert (status, headers["Connection"]) == (200, "close")
    assert get(port, "/nope")[0] == 404
    assert get(port, "/healthz", "POST")[1]["Allow"] == "GET, HEAD"
    with socket.create_connection(("127.0.0.1", port)) as s:  # an oversized head
        s.sendall(b"GET /healthz HTTP/1.1\r\nX: " + b"x" * 20000 + b"\r\n\r\n")
        assert s.makefile("rb").readline() == b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"garbage\r\n\r\n")
        assert s.makefile("rb").readline() == b"HTTP/1.1 400 Bad Request\r\n"
    with socket.create_connection(("127.0.0.1", port)):
        pass  # connect and leave
    assert get(port, "/healthz")[0] == 200
    assert run.proc.poll() is None


def test_metrics_parse_and_match_status(served):
    run, port = served(SERVICES)
    run.settle(ended=("b",))  # b exits at once; compare once it has
    status, headers, body = get(port, "/metrics")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples: dict[tuple[str, str | None], float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[sample.name, sample.labels.get("service")] = sample.value
    services = {s["name"]: s for s in json.loads(run.ctl("status", "--json").stdout)["services"]}
    assert set(services) == {"a", "w.0", "w.1", "b"}
    for name, s in services.items():
        assert samples["nsup_service_up", name] == (s["pid"] is not None)
        assert samples["nsup_service_ready", name] == s["ready"]
        assert samples["nsup_service_restarts_total", name] == s["restarts"]
        assert samples["nsup_service_start_time_seconds", name] == s["started_at"]
        if s["last_exit"] is None:
            assert ("nsup_service_last_exit_code", name) not in samples
        else:
            assert samples["nsup_service_last_exit_code", name] == s["last_exit"]["exit_code"]
    assert samples["nsup_service_last_exit_code", "b"] == 3
    assert samples["nsup_supervisor_children", None] == 3
    assert samples["nsup_supervisor_services", None] == 4
    assert samples["nsup_supervisor_uptime_seconds", None] > 0
    states = {
        labels["state"]
        for family in text_string_to_metric_families(body)
        if family.name == "nsup_service_state"
        for _, labels, value in [(s.name, s.labels, s.value) for s in family.samples]
        if labels["service"] == "b" and value == 1
    }
    assert states == {"ended"}


def test_readyz_flips_while_a_service_restarts(served):
    run, port = served(
        """
[services.a]
command = ["sleep", "1000"]

[services.r]
command = ["sh", "-c", "echo up; exec sleep 1000"]
ready = { log = "^up$", timeout = "60s" }
backoff = { initial = "1s", max = "1s", jitter = 0.0 }

[services.done]
command = ["true"]
restart = "never"
"""
    )
    assert get(port, "/readyz")[::2] == (200, "ready\n")  # a one-shot that exited 0 counts as ready
    with Conn(run.control) as ctl:
        assert ctl.ask({"v": 1, "cmd": "stop", "names": ["r"]})["ok"]
    assert get(port, "/readyz")[::2] == (503, "not ready: r\n")
    assert 'nsup_service_ready{service="r"} 0.0' in get(port, "/metrics")[2]
    with Conn(run.control) as ctl:
        assert ctl.ask({"v": 1, "cmd": "start", "names": ["r"]})["ok"]
    assert get(port, "/readyz")[::2] == (200, "ready\n")
    # An automatic restart: kill it, and ask /readyz at each step until it is back.
    with Conn(run.control) as events:
        assert events.ask({"v": 1, "cmd": "events"})["subscribed"]
        with Conn(run.control) as ctl:
            assert ctl.ask({"v": 1, "cmd": "signal", "name": "r", "signal": "KILL"})["ok"]
        seen = []
        while not seen or seen[-1][0] != "ready":
            event = events.receive()
            assert event is not None
            if event["service"] == "r":
                code, _, body = get(port, "/readyz")
                seen.append((event["event"], code, body))
    assert ("restarting", 503, "not ready: r\n") in seen
    assert seen[-1] == ("ready", 200, "ready\n")
