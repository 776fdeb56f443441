"""How many descriptors a policy holds in nsup, and the ``RLIMIT_NOFILE`` to match.

A running instance holds, in nsup: its pidfd; the read end of its init's
report pipe (with ``init``); one pipe per output stream that goes through
nsup (anything but ``"null"``); its notify socket (``ready = notify``).  A
service holds its bound ``sockets`` and its log files once, however many
instances it has.  Spawns in flight hold a few more each, and at most
``SPAWN_CONCURRENCY`` are in flight, and at most ``PROBE_CONCURRENCY`` exec
probes.

``nsup run`` raises its soft limit to the hard one at start (its children
get back the limit it was started with, :func:`nsup._clone.rlimits.set_own`); when the
policy needs more than that, it tries to raise the hard limit too (root
may, up to ``fs.nr_open``), and otherwise says how many it needs: the
instances that find no descriptor fail to start with ``EMFILE`` and are
retried with backoff, while the rest run and nsup keeps answering.
"""

from __future__ import annotations

import resource
from typing import TYPE_CHECKING

from .._clone.rlimits import set_own
from .._policy.model import OutputFile
from .routes import through_nsup

if TYPE_CHECKING:
    from .._policy import Policy
    from .._policy.model import Service

__all__ = ["BASE", "IN_FLIGHT", "descriptors_needed", "raise_nofile"]

BASE = 64  # nsup's own: stdio, the control socket, epoll, the zygotes' sockets, imports
IN_FLIGHT = 8  # held by one spawn in flight: pipes, the cgroup, the request's copies
NR_OPEN = "/proc/sys/fs/nr_open"


def descriptors_needed(policy: Policy, concurrency: int, probes: int) -> int:
    """The descriptors nsup holds with every instance of *policy* running (an upper estimate).

    *concurrency* spawns of services may be in flight, and *probes* exec
    probes, if the policy has any.
    """
    total = BASE + concurrency * IN_FLIGHT
    if any(_has_exec_probe(service) for service in policy.services.values()):
        total += probes * IN_FLIGHT
    for service in policy.services.values():
        each = 1 + (1 if service.init else 0)
        each += sum(through_nsup(target) for target in (service.stdout, service.stderr))
        if service.ready is not None and service.ready.kind == "notify":
            each += 1
        total += each * service.instances
        total += len(service.sockets)
        total += sum(isinstance(t, OutputFile) for t in (service.stdout, service.stderr))
    return total


def _has_exec_probe(service: Service) -> bool:
    return any(
        probe is not None and probe.kind == "exec" for probe in (service.ready, service.health)
    )


def raise_nofile(need: int) -> str | None:
    """Raise ``RLIMIT_NOFILE``: the soft limit to the hard one, both to *need* if that is more.

    Returns None when the limit now covers *need*, else a message saying so
    and what to change.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and need > hard:
        try:
            with open(NR_OPEN, encoding="ascii") as f:
                ceiling = int(f.read())
            top = min(need, ceiling)
            set_own(resource.RLIMIT_NOFILE, top, top)
        except (OSError, ValueError):
            pass  # not privileged (or no /proc): the soft limit still goes up to the hard one
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        set_own(resource.RLIMIT_NOFILE, hard, hard)
        soft = hard
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    return (
        f"this policy needs about {need} descriptors with every service running, but "
        f"RLIMIT_NOFILE is {soft}: the starts that find none fail with 'Too many open files' "
        "and are retried with backoff; raise the hard limit (ulimit -Hn, or LimitNOFILE= "
        "in a systemd unit)"
    )
