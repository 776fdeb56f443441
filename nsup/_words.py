"""How nsup writes numbers and events for people, in one style everywhere.

Counts carry their noun in the right number (``1 service``, ``3 services``);
durations use the forms a policy accepts (``100ms``, ``1.5s``, ``1m30s``), so
a value nsup prints can be pasted back into a policy; an event reads as a
sentence (``web: exited with code 3``, ``web: restarting in 200ms``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["count", "duration", "event_line"]

_MINUTE = 60
_HOUR = 3600

# How each event kind reads in a line, where its name is not already English.
_EVENT_WORDS = {"gave_up": "gave up", "spawn_failed": "could not start"}


def count(n: int, noun: str, plural: str | None = None) -> str:
    """Return ``"1 service"`` or ``"2 services"`` (*plural* when ``noun + "s"`` is wrong)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def duration(seconds: float) -> str:
    """Return *seconds* as a policy would write it: ``100ms``, ``1.5s``, ``30s``, ``1m30s``, ``1h``.

    Under a minute keeps three significant digits; from a minute on, whole
    seconds.
    """
    if seconds < 1:
        return f"{float(f'{seconds * 1000:.3g}'):g}ms" if seconds else "0s"
    if seconds < _MINUTE:
        return f"{float(f'{seconds:.3g}'):g}s"
    hours, rest = divmod(round(seconds), _HOUR)
    minutes, secs = divmod(rest, _MINUTE)
    return "".join(f"{v}{unit}" for v, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if v)


def event_line(event: Mapping[str, Any]) -> str:
    """Return one line for an event record (``Event.to_dict()``): ``web: killed by SIGTERM``.

    An ``exited`` event says how (``exited with code 3``); a message follows
    after a colon, unless it already starts with what happened.
    """
    kind = str(event.get("event"))
    what = _EVENT_WORDS.get(kind, kind)
    if kind == "exited" and event.get("exit_status"):
        what = str(event["exit_status"])
    if kind == "started" and event.get("pid") is not None:
        what += f" (pid {event['pid']})"
    if event.get("delay") is not None:
        what += f" in {duration(event['delay'])}"
    message = event.get("message")
    if message:
        what = message if message.startswith(f"{what}:") else f"{what}: {message}"
    return f"{event.get('service') or 'nsup'}: {what}"
