"""The supervision engine, for real: restart rules, backoff, intensity, strategies, probes, reload."""

from __future__ import annotations

import signal
import time

import pytest
import trio
from helpers import PYTHON, Recorder

import nsup
from nsup._engine.restart import State
from nsup._engine.supervisor import GaveUpError, Supervisor, open_supervisor
from nsup._policy import Policy

FAST = {"initial": "10ms", "max": "10ms", "factor": 1.0, "jitter": 0.0}


def policy(services: dict, **supervisor) -> Policy:
    return Policy.from_dict({"supervisor": supervisor, "services": services})


@pytest.fixture
async def recorded():
    """Start supervisors with an event recorder subscribed before the first event."""
    supervisors = []
    async with trio.open_nursery() as nursery:

        async def start(pol: Policy, *, lines=None):
            sink = (
                (lambda name, line: lines.append((name, line)))
                if lines is not None
                else (lambda name, line: None)
            )
            sup = Supervisor._create(pol, nursery, sink)
            supervisors.append(sup)
            rec = Recorder()
            await nursery.start(rec.run, sup)
            await sup._start_all()
            return sup, rec

        yield start
        for sup in supervisors:
            await sup.stop_all()
        nursery.cancel_scope.cancel()


# --- restart rules ------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "code", "restarts"),
    [("always", 0, True), ("on-failure", 0, False), ("on-failure", 3, True), ("never", 3, False)],
)
async def test_restart_rules(recorded, rule, code, restarts):
    pol = policy(
        {"job": {"command": ["sh", "-c", f"exit {code}"], "restart": rule, "backoff": FAST}},
        max_restarts=100,
    )
    sup, rec = await recorded(pol)
    await rec.wait("exited", "job")
    if restarts:
        await rec.wait("started", "job", count=2)
        assert rec.of("restarting", "job")[0].delay == pytest.approx(0.01)
    else:
        with trio.fail_after(10):
            await sup._runners["job"].wait_for(lambda r: r.state is State.ENDED)
        assert rec.of("restarting", "job") == []
    assert rec.of("exited", "job")[0].status == nsup.ExitStatus(code=code)


async def test_backoff_delays_follow_the_policy(recorded):
    backoff = {"initial": "100ms", "factor": 2.0, "max": "1s", "jitter": 0.0}
    pol = policy({"crash": {"command": ["false"], "backoff": backoff}}, max_restarts=100)
    sup, rec = await recorded(pol)
    started = await rec.wait("started", "crash", count=4)
    exited = rec.of("exited", "crash")
    gaps = [started[i + 1].time - exited[i].time for i in range(3)]
    for gap, expected in zip(gaps, [0.1, 0.2, 0.4], strict=True):
        # Never early; late only by a spawn (loose: a loaded machine delays spawns, and the
        # exact delays are asserted on the restarting events below).
        assert expected - 0.01 <= gap <= 2 * expected + 0.3, gaps
    assert [e.delay for e in rec.of("restarting", "crash")[:3]] == pytest.approx([0.1, 0.2, 0.4])


async def test_intensity_gives_up_naming_the_service():
    pol = policy(
        {"ok": {"command": ["sleep", "100"]}, "crash": {"command": ["false"], "backoff": FAST}},
        max_restarts=3,
        within="10s",
    )
    with pytest.raises(GaveUpError) as info:
        async with open_supervisor(pol, output=lambda n, l: None):
            await trio.sleep_forever()
    error = info.value
    assert error.service == "crash"
    assert str(error) == (
        "gave up: 'crash' made more than 3 restarts within 10s; fix the service or raise [supervisor] max_restarts / within"
    )


# --- strategies ---------------------------------------------------------------


def three(strategy: str) -> Policy:
    return policy(
        {name: {"command": ["sleep", "100"], "backoff": FAST} for name in ("a", "b", "c")},
        strategy=strategy,
        max_restarts=10,
    )


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [("one_for_one", {"b"}), ("one_for_all", {"a", "b", "c"}), ("rest_for_one", {"b", "c"})],
)
async def test_strategies(recorded, strategy, restarted):
    sup, rec = await recorded(three(strategy))
    before = {n: s.pid for n, s in sup.status().items()}
    sup.signal("b", signal.SIGKILL)
    for name in sorted(restarted):
        await rec.wait("ready", name, count=2)
    await sup.start("a", "b", "c")  # all up again
    after = {n: s.pid for n, s in sup.status().items()}
    assert {n for n in before if before[n] != after[n]} == restarted


# --- dependencies and readiness ---------------------------------------------------

NOTIFY = (
    "import os, socket, time\n"
    "time.sleep(0.2)\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
    "s.sendto(b'STATUS=warm\\nREADY=1', os.environ['NOTIFY_SOCKET'])\n"
    "time.sleep(100)\n"
)
LISTEN = (
    "import socket, time\n"
    "time.sleep(0.2)\n"
    "s = socket.create_server(('127.0.0.1', 7777))\n"
    "time.sleep(100)\n"
)


async def test_exec_probes_run_at_most_probe_concurrency_at_once(monkeypatch, tmp_path):
    # Each probe marks itself running for 0.2 s and writes how many it saw running.
    monkeypatch.setattr(nsup._engine.supervisor, "PROBE_CONCURRENCY", 2)
    running, counts = tmp_path / "running", tmp_path / "counts"
    running.mkdir()
    probe = f"touch {running}/$$; ls {running} | wc -l >> {counts}; sleep 0.2; rm {running}/$$"
    service = {
        "command": ["sleep", "100"],
        "namespaces": [],
        "instances": 6,
        "ready": {"exec": ["sh", "-c", probe], "timeout": "30s"},
    }
    async with open_supervisor(policy({"w": service}), output=lambda n, l: None) as sup:
        with trio.fail_after(30):
            await sup.wait_ready("w")  # all six probes passed
    seen = [int(n) for n in counts.read_text().split()]
    assert 6 <= len(seen)
    assert 2 == max(seen), seen  # two at once (six started together), never more


@pytest.mark.parametrize(
    ("db", "ready"),
    [
        ({"command": [PYTHON, "-I", "-S", "-c", NOTIFY]}, {"notify": True, "timeout": "10s"}),
        (
            {"command": [PYTHON, "-I", "-S", "-c", LISTEN], "namespaces": ["pid", "mount", "net"]},
            {"tcp": "127.0.0.1:7777", "timeout": "10s"},
        ),
        (
            {"command": ["sh", "-c", "sleep 0.2; echo accepting connections; exec sleep 100"]},
            {"log": "accepting", "timeout": "10s"},
        ),
        (
            {"command": [PYTHON, "-I", "-S", "-c", LISTEN], "namespaces": ["pid", "mount", "net"]},
            {
                "exec": [
                    PYTHON,
                    "-I",
                    "-S",
                    "-c",
                    "import socket; socket.create_connection(('127.0.0.1', 7777))",
                ],
                "timeout": "10s",
            },
        ),
    ],
    ids=["notify", "tcp", "log", "exec-in-netns"],
)
async def test_dependents_start_after_readiness(recorded, db, ready):
    pol = policy(
        {"db": {**db, "ready": ready}, "web": {"command": ["sleep", "100"], "depends_on": ["db"]}}
    )
    sup, rec = await recorded(pol)
    db_ready = (await rec.wait("ready", "db"))[0]
    web_starting = (await rec.wait("starting", "web"))[0]
    assert web_starting.time >= db_ready.time
    assert db_ready.time - rec.of("started", "db")[0].time >= 0.15  # it really waited for the probe
    assert sup.status()["web"].ready
    if "notify" in ready:
        assert sup.status()["db"].status_text == "warm"


async def test_readiness_timeout_restarts_then_gives_up(recorded):
    pol = policy(
        {
            "db": {
                "command": ["sleep", "100"],
                "ready": {"log": "never printed", "timeout": "200ms"},
                "backoff": FAST,
            }
        },
        max_restarts=2,
    )
    sup, rec = await recorded(pol)  # returns once nsup gave up
    assert sup.gave_up is not None
    assert sup.gave_up.service == "db"
    messages = {e.message for e in rec.of("unhealthy", "db")}
    assert messages == {"not ready within 0.2s (log probe)"}
    assert len(rec.of("started", "db")) == 3
    assert sup.status()["db"].last_reason == "ready timeout"


async def test_health_probe_failure_restarts(recorded):
    pol = policy(
        {
            "web": {
                "command": ["sleep", "100"],
                "health": {
                    "tcp": "127.0.0.1:1",
                    "interval": "50ms",
                    "timeout": "50ms",
                    "retries": 2,
                },
                "backoff": FAST,
            }
        },
        max_restarts=100,
    )
    sup, rec = await recorded(pol)
    unhealthy = await rec.wait("unhealthy", "web")
    assert unhealthy[0].message == "tcp health probe failed 2 times"
    await rec.wait("started", "web", count=2)
    assert sup.status()["web"].last_reason == "health"


# --- stopping --------------------------------------------------------------------


async def test_stop_escalates_to_sigkill(recorded):
    pol = policy(
        {
            "stubborn": {
                "command": ["sh", "-c", "trap '' TERM; echo up; while :; do sleep 1; done"],
                "stop": {"timeout": "300ms"},
                "ready": {"log": "up"},
            }
        }
    )
    sup, rec = await recorded(pol)
    started = time.monotonic()
    await sup.stop("stubborn")
    assert 0.3 <= time.monotonic() - started < 3
    assert sup.status()["stubborn"].last_exit == nsup.ExitStatus(signal=signal.SIGKILL)
    assert [e.message for e in rec.of("killed", "stubborn")] == [
        "ignored SIGTERM for 0.3s; sent SIGKILL"
    ]


async def test_stop_returns_as_soon_as_services_exit(recorded):
    pol = policy({f"s{i}": {"command": ["sleep", "100"]} for i in range(10)})
    sup, rec = await recorded(pol)
    started = time.monotonic()
    await sup.stop(*[f"s{i}" for i in range(10)])
    assert time.monotonic() - started < 1.0  # no tick: it returns when the last is reaped
    assert {s.state for s in sup.status().values()} == {"down"}


async def test_cancelled_mid_start_leaves_nothing():
    pol = policy(
        {
            "db": {"command": ["sleep", "100"], "ready": {"log": "never", "timeout": "60s"}},
            "web": {"command": ["sleep", "100"], "depends_on": ["db"]},
        }
    )
    with trio.move_on_after(0.3) as scope:
        async with open_supervisor(pol, output=lambda n, l: None):
            pytest.fail("must not be ready")
    assert scope.cancelled_caught


# --- instances, status, output, reload ------------------------------------------------


class _Lines(list):
    """Output lines, with an event set once *want* have arrived."""

    def __init__(self, want: int) -> None:
        super().__init__()
        self.want = want
        self.arrived = trio.Event()

    def append(self, item) -> None:
        super().append(item)
        if len(self) >= self.want:
            self.arrived.set()


async def test_instances_and_output(recorded):
    lines = _Lines(6)
    pol = policy(
        {
            "w": {
                "command": [
                    "sh",
                    "-c",
                    "echo hello from $NSUP_SERVICE; echo partial-line-without-newline >&2; exec sleep 100",
                ],
                "instances": 3,
            }
        }
    )
    sup, rec = await recorded(pol, lines=lines)
    assert list(sup.status()) == ["w.0", "w.1", "w.2"]
    assert len({s.pid for s in sup.status().values()}) == 3
    # "ready once started" comes before the shell has echoed: wait for the six
    # lines (stopping first would race the echo), then stop and check nothing more came.
    with trio.fail_after(10):
        await lines.arrived.wait()
    await sup.stop_all()
    assert sorted(lines) == sorted(
        [(f"w.{i}", f"hello from w.{i}") for i in range(3)]
        + [(f"w.{i}", "partial-line-without-newline") for i in range(3)]
    )


async def test_manual_restart_replaces_the_process(recorded):
    sup, rec = await recorded(policy({"a": {"command": ["sleep", "100"]}}))
    before = sup.status()["a"].pid
    await sup.restart("a")
    status = sup.status()["a"]
    assert status.pid != before
    assert status.state == "up"
    assert status.last_exit == nsup.ExitStatus(signal=signal.SIGTERM)


async def test_unknown_service_name_is_a_clear_error(recorded):
    sup, rec = await recorded(policy({"a": {"command": ["sleep", "100"]}}))
    with pytest.raises(KeyError, match="no service 'nope' in this supervisor \\(known: a\\)"):
        await sup.restart("nope")


async def test_reload_touches_only_what_changed(recorded):
    sup, rec = await recorded(
        policy(
            {
                "same": {"command": ["sleep", "100"]},
                "edit": {"command": ["sleep", "100"]},
                "gone": {"command": ["sleep", "100"]},
            }
        )
    )
    before = {n: s.pid for n, s in sup.status().items()}
    outcome = await sup.reload(
        policy(
            {
                "same": {"command": ["sleep", "100"]},
                "edit": {"command": ["sleep", "101"]},
                "new": {"command": ["sleep", "100"]},
            }
        )
    )
    assert outcome == {"changed": ["edit"], "removed": ["gone"], "added": ["new"]}
    after = {n: s.pid for n, s in sup.status().items()}
    assert set(after) == {"same", "edit", "new"}
    assert after["same"] == before["same"]
    assert after["edit"] != before["edit"]
    assert all(pid is not None for pid in after.values())


async def test_supervisor_ends_when_every_service_ended():
    pol = policy(
        {
            "a": {"command": ["true"], "restart": "on-failure"},
            "b": {"command": ["true"], "restart": "never"},
        }
    )
    async with open_supervisor(pol, output=lambda n, l: None) as sup:
        with trio.fail_after(10):
            await sup.wait_finished()
        assert {s.state for s in sup.status().values()} == {"ended"}
