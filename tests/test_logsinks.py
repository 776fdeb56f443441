"""Log files (rotation, reopen) and the journal and syslog senders, against real files and sockets."""

from __future__ import annotations

import os
import re
import socket
import struct

import pytest

from nsup._engine.logfile import LogFile, LogFiles
from nsup._engine.logsocket import DatagramLog, journal_entry, rfc3339, syslog_message
from nsup._engine.output import Line
from nsup._engine.routes import OutputRoutes
from nsup._policy.model import OutputFile


def rotated(path) -> list:
    """The files of a rotated log, oldest first."""
    backups = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    return [*backups, path]


def test_rotation_keeps_every_line_once_in_order(tmp_path):
    path = tmp_path / "out.log"
    log = LogFile(str(path), max_size=10_000, backups=1000)
    lines = [b"line %06d %s\n" % (i, b"x" * (i % 50)) for i in range(20_000)]
    for line in lines:
        assert log.write(line)
    log.close()
    files = rotated(path)
    assert len(files) > 50
    assert all(f.stat().st_size <= 10_000 for f in files)
    assert b"".join(lines) == b"".join(f.read_bytes() for f in files)


def test_backups_are_limited(tmp_path):
    path = tmp_path / "out.log"
    log = LogFile(str(path), max_size=100, backups=2)
    for i in range(10):
        log.write(b"%d%s\n" % (i, b"-" * 60))
    log.close()
    assert ["out.log", "out.log.1", "out.log.2"] == sorted(p.name for p in tmp_path.iterdir())
    assert [b"7", b"8", b"9"] == [f.read_bytes()[:1] for f in rotated(path)]
    single = LogFile(str(tmp_path / "only.log"), max_size=100, backups=0)
    for i in range(3):
        single.write(b"%d%s\n" % (i, b"-" * 60))
    single.close()
    assert ["only.log"] == sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("only"))


def test_a_line_larger_than_max_size_is_written_whole(tmp_path):
    path = tmp_path / "out.log"
    log = LogFile(str(path), max_size=10, backups=3)
    log.write(b"a" * 50 + b"\n")
    log.write(b"b\n")
    log.close()
    assert [b"a" * 50 + b"\n", b"b\n"] == [f.read_bytes() for f in rotated(path)]


def test_reopen_after_an_external_move(tmp_path):
    """logrotate moves the file: lines go to the moved file until the reopen, then to a new one."""
    path = tmp_path / "out.log"
    files = LogFiles()
    log = files.get(str(path))
    assert log is files.get(str(path))
    log.write(b"one\n")
    path.rename(tmp_path / "out.log.old")
    log.write(b"two\n")
    assert [] == files.reopen_all()
    log.write(b"three\n")
    files.close_all()
    assert b"one\ntwo\n" == (tmp_path / "out.log.old").read_bytes()
    assert b"three\n" == path.read_bytes()


def test_a_failed_write_drops_the_line_and_recovers(tmp_path):
    directory = tmp_path / "logs"
    directory.mkdir()
    log = LogFile(str(directory / "out.log"))
    assert log.write(b"one\n")
    (directory / "out.log").unlink()
    directory.rmdir()
    log.reopen()
    assert f"{directory}/out.log: No such file or directory" == log.error
    assert not log.write(b"lost\n")
    assert 1 == log.dropped
    directory.mkdir()
    assert log.write(b"two\n")
    log.close()
    assert b"two\n" == (directory / "out.log").read_bytes()


# --- journal and syslog -----------------------------------------------------------


@pytest.fixture
def receiver(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "log.sock")
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def parse_journal(data: bytes) -> dict[str, bytes]:
    """Parse one datagram of journald's native protocol, as journald does."""
    fields = {}
    while data:
        line, _, rest = data.partition(b"\n")
        if b"=" in line:
            name, _, value = line.partition(b"=")
            data = rest
        else:
            name = line
            (size,) = struct.unpack("<Q", rest[:8])
            value = rest[8 : 8 + size]
            assert b"\n" == rest[8 + size : 9 + size]
            data = rest[9 + size :]
        fields[name.decode()] = value
    return fields


def test_journal_protocol(receiver):
    path, sock = receiver
    log = DatagramLog("journal", path)
    assert log.send(b"hello = world", "stdout", "web.0", 1234, 0.0)
    assert log.send(b"bad\x00news", "stderr", "web.0", None, 0.0)
    log.close()
    assert {
        "MESSAGE": b"hello = world",
        "PRIORITY": b"6",
        "SYSLOG_IDENTIFIER": b"web.0",
        "SYSLOG_PID": b"1234",
    } == parse_journal(sock.recv(65536))
    assert {
        "MESSAGE": b"bad\x00news",
        "PRIORITY": b"3",
        "SYSLOG_IDENTIFIER": b"web.0",
    } == parse_journal(sock.recv(65536))
    assert {"MESSAGE": b"two\nlines", "PRIORITY": b"6", "SYSLOG_IDENTIFIER": b"x"} == parse_journal(
        journal_entry(b"two\nlines", "stdout", "x", None)
    )


_RFC5424 = re.compile(
    rb"<(?P<pri>\d+)>1 (?P<time>\S+) (?P<host>\S+) (?P<app>\S+) (?P<pid>\S+) - - (?P<msg>.*)",
    re.DOTALL,
)


def test_syslog_protocol(receiver):
    path, sock = receiver
    log = DatagramLog("syslog", path)
    assert log.send(b"hello", "stdout", "web", 1234, 1_700_000_000.5)
    assert log.send(b"oops", "stderr", "a name with spaces", None, 1_700_000_000.0)
    log.close()
    first = _RFC5424.fullmatch(sock.recv(65536))
    assert (
        b"30",
        b"2023-11-14T22:13:20.500Z",
        socket.gethostname().encode(),
        b"web",
        b"1234",
        b"hello",
    ) == (
        first["pri"],
        first["time"],
        first["host"],
        first["app"],
        first["pid"],
        first["msg"],
    )
    second = _RFC5424.fullmatch(sock.recv(65536))
    assert (b"27", b"a_name_with_spaces", b"-", b"oops") == (
        second["pri"],
        second["app"],
        second["pid"],
        second["msg"],
    )
    assert syslog_message(b"m", "stdout", "x" * 60, 1, 0.0, "h").startswith(
        b"<30>1 1970-01-01T00:00:00.000Z h " + b"x" * 48 + b" 1 - - m"
    )


def test_rfc3339_milliseconds():
    assert "2023-11-14T22:13:20.999Z" == rfc3339(1_700_000_000.9999)


def test_an_absent_or_full_receiver_costs_lines_never_a_wait(receiver, tmp_path, monkeypatch):
    absent = DatagramLog("journal", str(tmp_path / "nobody-home.sock"))
    assert not absent.send(b"x", "stdout", "web", None, 0.0)
    assert (1, f"{tmp_path}/nobody-home.sock: No such file or directory") == (
        absent.dropped,
        absent.error,
    )
    absent.close()
    path, _sock = receiver  # bound, never read: its queue fills
    monkeypatch.setenv("NSUP_SYSLOG_SOCKET", path)
    full = DatagramLog("syslog")
    assert path == full.path
    sent = sum(full.send(b"x" * 1000, "stdout", "web", None, 0.0) for _ in range(5000))
    full.close()
    assert 0 < sent < 5000
    assert 5000 - sent == full.dropped
    assert os.strerror(11) in full.error


def test_routes_count_what_their_targets_dropped(tmp_path, monkeypatch):
    monkeypatch.setenv("NSUP_JOURNAL_SOCKET", str(tmp_path / "absent.sock"))
    routes = OutputRoutes(lambda line: None)
    journal = routes.sink("journal", 7)
    for _ in range(3):
        journal(Line("web", "stdout", 0.0, b"x"))
    to_file = routes.sink(OutputFile(str(tmp_path / "no" / "out.log")), 7)
    to_file(Line("web", "stderr", 0.0, b"x"))
    assert {
        str(tmp_path / "absent.sock"): 3,
        str(tmp_path / "no" / "out.log"): 1,
    } == routes.dropped()
    routes.close()
