"""What a dependent waits for: ``started``, ``ready``, ``healthy`` or ``completed``.

``depends_on = { migrate = "completed", db = "ready", cache = "healthy" }``
(docker-compose's ``service_completed_successfully``, ``service_started``,
``service_healthy``).  Each condition is a predicate on the dependency's
runner, checked at every change of that runner, so it survives restarts: a
dependency that fails before its first ready and then comes up still
releases its dependents.

- ``started``: its process runs (or, for a oneshot, it has completed);
- ``ready``: it is up and its ``ready`` probe passed; a oneshot is ready once
  it has completed, as systemd counts a ``Type=oneshot`` unit active only
  after it exited;
- ``healthy``: ready, and its ``health`` probe has passed since it started;
- ``completed``: a oneshot exited 0 (or with one of its ``success_codes``).

A condition is *lost* while the dependency sits in a terminal state that
does not meet it (a oneshot that failed for good, a service left ``failed``
or ended): the dependent is then ``blocked`` on it, says so, and starts as
soon as the dependency is started again and meets it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .restart import State, succeeded

if TYPE_CHECKING:
    from collections.abc import Callable

    from .runner import Runner

__all__ = ["completed", "decided", "lost", "met", "open_again"]

_WORDS = {
    "started": "to have started",
    "ready": "to be ready",
    "healthy": "to be healthy",
    "completed": "to complete",
}


def completed(runner: Runner) -> bool:
    """True when *runner*'s last run ended successfully and it is left ended."""
    last = runner.last_exit
    return (
        runner.state is State.ENDED
        and last is not None
        and succeeded(last, runner.instance.spec.success_codes)
    )


def met(dep: Runner, condition: str) -> bool:
    """True when *dep* meets *condition* now."""
    oneshot = dep.instance.spec.type == "oneshot"
    if condition == "completed" or (oneshot and condition in ("ready", "started")):
        return completed(dep) or (condition == "started" and dep.running)
    if condition == "started":
        return dep.running or dep.state is State.UP
    if condition == "healthy":
        return dep.state is State.UP and dep.healthy
    return dep.state is State.UP


def lost(dep: Runner, condition: str) -> str | None:
    """Say why *dep* cannot meet *condition* as things stand, or None while it still may."""
    want = f"waits for {dep.name!r} {_WORDS.get(condition, condition)}"
    if dep.finished:
        return f"{want}, whose runner ended: {dep.error or 'removed'}"
    if dep.state is State.FAILED:
        return f"{want}, which failed: {dep.error}"
    if dep.state is State.ENDED and not met(dep, condition):
        how = dep.last_exit if dep.last_exit is not None else "was stopped"
        return f"{want}, which ended ({how}) and will not restart"
    return None


def decided(condition: str) -> Callable[[Runner], bool]:
    """A predicate: the dependency now meets *condition*, or has lost it."""
    return lambda dep: met(dep, condition) or lost(dep, condition) is not None


def open_again(condition: str) -> Callable[[Runner], bool]:
    """A predicate: the dependency may meet *condition* again (it was started anew)."""
    return lambda dep: lost(dep, condition) is None
