"""Service logs end to end: streams kept apart, timestamps, JSON, rotated files, reopen, journal, syslog."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from helpers import PYTHON, run_once
from test_logsinks import _RFC5424, parse_journal

from nsup import Policy
from nsup._engine.output import FdWriter, PrefixView

TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
BOTH = ["sh", "-c", "echo to-out; echo to-err >&2"]


@pytest.fixture
def view_file(tmp_path):
    """A view that writes to a file, and a function that reads what it wrote."""
    path = tmp_path / "view.out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def make(**options):
        return PrefixView(FdWriter(fd), colour=False, **options)

    yield make, path.read_text
    os.close(fd)


# --- streams, timestamps, JSON -----------------------------------------------------------


async def test_stderr_lines_are_marked(view_file):
    make, read = view_file
    await run_once({"services": {"web": {"command": BOTH, "restart": "never"}}}, make())
    assert ["web ! to-err", "web | to-out"] == sorted(read().splitlines())


async def test_timestamps(view_file):
    make, read = view_file
    policy = {
        "supervisor": {"timestamps": True},
        "services": {"web": {"command": BOTH, "restart": "never"}},
    }
    assert Policy.from_dict(policy).supervisor.timestamps
    await run_once(policy, make(timestamps=True))
    lines = sorted(read().splitlines(), key=lambda line: line.split(" ", 1)[1])
    assert re.fullmatch(rf"{TIME} web ! to-err", lines[0]), lines
    assert re.fullmatch(rf"{TIME} web \| to-out", lines[1]), lines


async def test_json_lines_carry_the_stream_and_time(view_file):
    make, read = view_file
    await run_once({"services": {"web": {"command": BOTH, "restart": "never"}}}, make(json=True))
    records = sorted((json.loads(line) for line in read().splitlines()), key=lambda r: r["stream"])
    assert [("web", "stderr", "to-err"), ("web", "stdout", "to-out")] == [
        (r["service"], r["stream"], r["line"]) for r in records
    ]
    assert all(re.fullmatch(TIME, r["time"]) for r in records)


async def test_streams_to_different_files(tmp_path):
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    await run_once(
        {
            "services": {
                "web": {
                    "command": BOTH,
                    "restart": "never",
                    "stdout": str(out),
                    "stderr": {"file": str(err)},
                }
            }
        }
    )
    assert ("to-out\n", "to-err\n") == (out.read_text(), err.read_text())


# --- rotation --------------------------------------------------------------------------------

WRITE_50M = """
import sys
out = sys.stdout.buffer
pad = b"x" * 181
for i in range(262144):                      # 262144 lines of 200 bytes: 50 MiB
    out.write(b"%08d %s %08d\\n" % (i, pad, i))
out.flush()
"""


async def test_rotation_under_50_megabytes_keeps_every_line_once_in_order(tmp_path):
    """A service writes 50 MB as fast as it can; the rotated files hold each line exactly once."""
    path = tmp_path / "out.log"
    await run_once(
        {
            "services": {
                "web": {
                    "command": [PYTHON, "-I", "-S", "-c", WRITE_50M],
                    "restart": "never",
                    "namespaces": [],
                    "stdout": {"file": str(path), "max_size": "1M", "backups": 100},
                }
            }
        }
    )
    backups = sorted(tmp_path.glob("out.log.*"), key=lambda p: -int(p.suffix[1:]))
    assert len(backups) == 50  # 5242 lines of 200 bytes fit in 1M: 51 files
    assert all(p.stat().st_size <= 2**20 for p in [*backups, path])
    numbers = []
    for part in [*backups, path]:
        with part.open("rb") as file:
            for line in file:
                assert len(line) == 200
                assert line[:8] == line[-9:-1]
                numbers.append(int(line[:8]))
    assert list(range(262144)) == numbers


# --- reopen --------------------------------------------------------------------------------

TICKER = "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.02; done"


def wait_until(predicate, what: str, timeout: float = 20) -> None:
    """Poll *predicate* (a file to appear or grow: the kernel gives no event to wait on)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def ticks(*paths) -> list[int]:
    return [int(line.split()[1]) for p in paths for line in p.read_text().splitlines()]


@pytest.mark.parametrize("how", ["SIGUSR1", "nsup reopen-logs"])
def test_reopen_after_an_external_move(tmp_path, how):
    """logrotate's way: mv the file, ask nsup to reopen; no line lost or repeated across the two."""
    log, moved = tmp_path / "out.log", tmp_path / "out.log.1"
    control = tmp_path / "ctl.sock"
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[supervisor]\ncontrol = "{control}"\n[services.tick]\ncommand = ["sh", "-c", "{TICKER}"]\n'
        f'namespaces = []\nstdout = "{log}"\n'
    )
    nsup = subprocess.Popen(
        [sys.executable, "-m", "nsup", "run", str(policy)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: log.exists() and log.stat().st_size > 0, "the first lines")
        log.rename(moved)
        before = len(ticks(moved))
        wait_until(lambda: len(ticks(moved)) > before, "lines into the moved file")
        if how == "SIGUSR1":
            nsup.send_signal(signal.SIGUSR1)
        else:
            result = subprocess.run(
                [sys.executable, "-m", "nsup", "reopen-logs", "--control", str(control)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert (0, "reopened 1 log files\n") == (result.returncode, result.stdout), (
                result.stderr
            )
        wait_until(lambda: log.exists() and len(ticks(log)) >= 3, "lines into the new file")
    finally:
        nsup.send_signal(signal.SIGTERM)
        _, stderr = nsup.communicate(timeout=30)
    assert 0 == nsup.returncode, stderr
    old, new = ticks(moved), ticks(log)
    assert old
    assert new
    assert list(range(old[0], new[-1] + 1)) == old + new
    assert old[0] == 0


# --- journal and syslog --------------------------------------------------------------------


@pytest.fixture
def receivers(tmp_path, monkeypatch):
    """Bound datagram sockets standing in for journald and syslog (their paths set for nsup)."""
    socks = {}
    for kind, variable in (("journal", "NSUP_JOURNAL_SOCKET"), ("syslog", "NSUP_SYSLOG_SOCKET")):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(tmp_path / f"{kind}.sock"))
        sock.settimeout(10)
        monkeypatch.setenv(variable, str(tmp_path / f"{kind}.sock"))
        socks[kind] = sock
    yield socks
    for sock in socks.values():
        sock.close()


async def test_journal_and_syslog(receivers):
    events = await run_once(
        {
            "services": {
                "web": {
                    "command": BOTH,
                    "restart": "never",
                    "stdout": "journal",
                    "stderr": "journal",
                },
                "db": {"command": BOTH, "restart": "never", "stdout": "syslog", "stderr": "syslog"},
            }
        }
    )
    pids = {e.service: e.pid for e in events if e.kind == "started"}
    entries = sorted(
        (parse_journal(receivers["journal"].recv(65536)) for _ in range(2)),
        key=lambda f: f["PRIORITY"],
    )
    assert [
        {
            "MESSAGE": b"to-err",
            "PRIORITY": b"3",
            "SYSLOG_IDENTIFIER": b"web",
            "SYSLOG_PID": b"%d" % pids["web"],
        },
        {
            "MESSAGE": b"to-out",
            "PRIORITY": b"6",
            "SYSLOG_IDENTIFIER": b"web",
            "SYSLOG_PID": b"%d" % pids["web"],
        },
    ] == entries
    messages = sorted(
        (_RFC5424.fullmatch(receivers["syslog"].recv(65536)) for _ in range(2)),
        key=lambda m: m["pri"],
    )
    assert [
        (b"27", b"db", b"%d" % pids["db"], b"to-err"),
        (b"30", b"db", b"%d" % pids["db"], b"to-out"),
    ] == [(m["pri"], m["app"], m["pid"], m["msg"]) for m in messages]


# --- missing log directories -------------------------------------------------------------


async def test_a_missing_log_directory_fails_the_start_naming_the_key(tmp_path):
    events = await run_once(
        {
            "services": {
                "web": {
                    "command": "true",
                    "restart": "never",
                    "stderr": {"file": f"{tmp_path}/no/err.log"},
                }
            }
        }
    )
    (failed,) = [e.message for e in events if e.kind == "spawn_failed"]
    assert (
        f"'services.web.stderr' names '{tmp_path}/no/err.log', but the directory "
        f"'{tmp_path}/no' does not exist; create it or choose another path"
    ) == failed


def test_check_reports_a_missing_log_directory(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[services.web]\ncommand = "true"\nstdout = "{tmp_path}/no/out.log"\n')
    result = subprocess.run(
        [sys.executable, "-m", "nsup", "check", str(policy)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert 2 == result.returncode
    assert (
        f"nsup: {policy}:3: 'services.web.stdout' names '{tmp_path}/no/out.log', but the directory "
        f"'{tmp_path}/no' does not exist; create it or choose another path\n"
    ) == result.stderr


# --- a real syslog daemon ----------------------------------------------------------------

RSYSLOG_CONF = """\
global(workDirectory="{dir}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{sock}" UseSpecialParser="off" ParseHostname="on" UseSysTimeStamp="off")
template(name="fields" type="string" string="%app-name%|%procid%|%syslogseverity%|%msg%\\n")
*.* action(type="omfile" file="{out}" template="fields")
"""


@pytest.fixture
def rsyslogd(tmp_path, monkeypatch):
    """A real rsyslogd listening on a socket of the test's own, writing what it parsed to a file."""
    binary = next((p for p in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if os.path.exists(p)), None)
    if binary is None:
        pytest.skip("rsyslogd is not installed (Debian's package 'rsyslog' provides it)")
    sock, out = tmp_path / "rsyslog.sock", tmp_path / "rsyslog.out"
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(dir=tmp_path, sock=sock, out=out))
    daemon = subprocess.Popen(
        [binary, "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslog.pid")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            if daemon.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"rsyslogd could not start: {daemon.communicate(timeout=5)[0]!r}")
            time.sleep(0.02)
        monkeypatch.setenv("NSUP_SYSLOG_SOCKET", str(sock))
        yield out
    finally:
        if daemon.poll() is None:
            daemon.terminate()
        daemon.communicate(timeout=20)


async def test_a_real_rsyslogd_parses_our_messages(rsyslogd):
    events = await run_once(
        {
            "services": {
                "web": {"command": BOTH, "restart": "never", "stdout": "syslog", "stderr": "syslog"}
            }
        }
    )
    pid = next(e.pid for e in events if e.kind == "started")
    # rsyslogd writes once it has parsed the datagrams: no event to wait on.
    wait_until(
        lambda: rsyslogd.exists() and rsyslogd.read_text().count("\n") >= 2, "rsyslogd's file"
    )
    assert sorted([f"web|{pid}|3|to-err", f"web|{pid}|6|to-out"]) == sorted(
        rsyslogd.read_text().splitlines()
    )
