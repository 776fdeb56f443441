"""How nsup words counts, durations and event lines (nsup._words), one style everywhere."""

from __future__ import annotations

import pytest

from nsup._engine.events import Event
from nsup._exitstatus import ExitStatus
from nsup._words import count, duration, event_line


@pytest.mark.parametrize(
    ("n", "expected"), [(0, "0 services"), (1, "1 service"), (2, "2 services")]
)
def test_count(n, expected):
    assert expected == count(n, "service")


def test_count_with_an_irregular_plural():
    assert ("1 child", "2 children") == (
        count(1, "child", "children"),
        count(2, "child", "children"),
    )


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (0.1, "100ms"),
        (0.0125, "12.5ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (2.345, "2.35s"),
        (30, "30s"),
        (60, "1m"),
        (90, "1m30s"),
        (3600, "1h"),
        (3661, "1h1m1s"),
    ],
)
def test_duration_uses_the_policys_forms(seconds, expected):
    assert expected == duration(seconds)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (Event("started", "web", pid=42), "web: started (pid 42)"),
        (Event("exited", "web", status=ExitStatus(code=3)), "web: exited with code 3"),
        (Event("exited", "web", status=ExitStatus(signal=15)), "web: killed by SIGTERM"),
        (Event("restarting", "web", delay=0.2), "web: restarting in 200ms"),
        (
            Event("restarting", "web", delay=1.0, message="3 services restart together"),
            "web: restarting in 1s: 3 services restart together",
        ),
        (
            Event("gave_up", "web", message="gave up: 'web' made more than 3 restarts within 1m"),
            "web: gave up: 'web' made more than 3 restarts within 1m",
        ),
        (
            Event("spawn_failed", "web", message="'nope' was not found on PATH"),
            "web: could not start: 'nope' was not found on PATH",
        ),
        (Event("ready", ""), "nsup: ready"),
    ],
)
def test_event_lines_read_as_sentences(event, expected):
    assert expected == str(event)
    assert expected == event_line(event.to_dict())
