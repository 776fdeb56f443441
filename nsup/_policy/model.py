"""The policy's data: one frozen attrs class per TOML table.

These classes hold values that are already checked and typed: durations are
float seconds, sizes int bytes, signals :class:`signal.Signals`, regexes
compiled.  Build them with :func:`nsup.load_policy` or
:meth:`nsup.Policy.from_dict`, which validate every key and report every
problem at once; the defaults here are the defaults documented in
``docs/policy.md`` (a test keeps the two in step).
"""

from __future__ import annotations

import signal
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Literal

import attrs

from .._clone.namespaces import DEFAULT_NAMESPACES
from .._limits import RLIMITS, Limits, frozen_map

if TYPE_CHECKING:
    import re

    from .._mount import Mount

__all__ = [
    "CONDITIONS",
    "RLIMITS",
    "Backoff",
    "HealthProbe",
    "Limits",
    "OutputFile",
    "PolicyIssue",
    "Probe",
    "Service",
    "Socket",
    "Stop",
    "SupervisorConfig",
]

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
Restart = Literal["always", "on-failure", "never"]
OnGiveUp = Literal["exit", "fail-service"]
ServiceType = Literal["service", "oneshot"]
Condition = Literal["started", "ready", "healthy", "completed"]
#: What a dependent may wait for.
CONDITIONS: tuple[Condition, ...] = ("started", "ready", "healthy", "completed")


def conditions(value: Mapping[str, Condition] | Iterable[str]) -> Mapping[str, Condition]:
    """Return ``depends_on`` as a read-only name -> condition map; a list of names means ready."""
    if isinstance(value, Mapping):
        return frozen_map(value)
    return frozen_map(dict.fromkeys(value, "ready"))


@attrs.frozen
class PolicyIssue:
    """One problem found in a policy.

    Attributes:
        source: the file name, or ``"<dict>"`` for :meth:`Policy.from_dict`.
        key: the dotted key, e.g. ``"services.web.restart"`` or
            ``"services.web.mounts[1].target"``; ``""`` for the whole document.
        line: the 1-based line in *source*, when it could be found.
        message: one sentence saying what was expected and what was found.

    """

    source: str | None
    key: str
    line: int | None
    message: str

    def __str__(self) -> str:
        """Return ``source:line: message`` (without the line when unknown)."""
        where = self.source or "<policy>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.message}"

    def to_json(self) -> dict[str, object]:
        """Return the issue as a JSON-ready dict with every attribute."""
        return {"source": self.source, "line": self.line, "key": self.key, "message": self.message}


@attrs.frozen
class SupervisorConfig:
    """The ``[supervisor]`` table.

    Attributes:
        strategy: which services restart when one ends (Erlang/OTP names).
        max_restarts: restart intensity: more restarts than this ...
        within: ... within this many seconds make nsup give up (exit 1).
        on_give_up: ``exit`` (the whole supervisor stops, exit 1) or
            ``fail-service`` (intensity counts per service; the one that trips
            it is left ``failed`` and the rest run on).
        control: the control socket path, or ``None`` for the default.
        health: ``(host, port)`` for the HTTP health endpoint, or ``None``.
        timestamps: prefix each ``NAME | line`` with its RFC 3339 time.
        expand_env: ``${VAR}``, ``${VAR:-default}`` and ``$$`` in string values
            were expanded from nsup's environment.

    """

    strategy: Strategy = "one_for_one"
    max_restarts: int = 10
    within: float = 60.0
    control: str | None = None
    health: tuple[str, int] | None = None
    on_give_up: OnGiveUp = "exit"
    timestamps: bool = False
    expand_env: bool = False


@attrs.frozen
class Backoff:
    """Delay before restart *n*: ``initial * factor**(n-1)``, capped at ``max``.

    Attributes:
        initial: the first delay, in seconds.
        max: the cap, in seconds.
        factor: the growth per restart.
        jitter: spread the delay by up to this fraction either way.
        reset_after: seconds of uptime after which the count starts over.

    """

    initial: float = 0.1
    max: float = 30.0
    factor: float = 2.0
    jitter: float = 0.1
    reset_after: float = 60.0


@attrs.frozen
class Stop:
    """How a service is stopped.

    Attributes:
        signal: sent first.
        timeout: seconds to wait before SIGKILL to the whole PID namespace.

    """

    signal: signal.Signals = signal.SIGTERM
    timeout: float = 10.0


@attrs.frozen
class Probe:
    """A readiness probe: exactly one of ``notify``, ``tcp``, ``exec``, ``log``.

    Attributes:
        kind: which probe: ``"notify"``, ``"tcp"``, ``"exec"`` or ``"log"``.
        notify: the service writes ``READY=1`` to ``$NOTIFY_SOCKET``.
        tcp: ``(host, port)`` to connect to, in the service's network namespace.
        exec: a command that exits 0 when the service is ready.
        log: a pattern that a line of the service's output matches.
        timeout: seconds before the probe counts as failed.

    """

    kind: Literal["notify", "tcp", "exec", "log"]
    notify: bool = False
    tcp: tuple[str, int] | None = None
    exec: tuple[str, ...] | None = None
    log: re.Pattern[str] | None = None
    timeout: float = 60.0


@attrs.frozen
class HealthProbe:
    """A health probe: one of ``tcp``, ``exec``, ``log``, run every ``interval``.

    Attributes:
        kind: which probe: ``"tcp"``, ``"exec"`` or ``"log"``.
        tcp: ``(host, port)`` to connect to.
        exec: a command that exits 0 while the service is healthy.
        log: a pattern that a line of output must match at least once per
            ``interval``.
        interval: seconds between probes.
        timeout: seconds before one probe counts as failed.
        retries: this many consecutive failures restart the service.

    """

    kind: Literal["tcp", "exec", "log"]
    tcp: tuple[str, int] | None = None
    exec: tuple[str, ...] | None = None
    log: re.Pattern[str] | None = None
    interval: float = 10.0
    timeout: float = 5.0
    retries: int = 3


@attrs.frozen
class OutputFile:
    """A log file that nsup writes a service's output to: ``stdout = { file = "..." }``.

    Attributes:
        file: the absolute path; lines are appended.
        max_size: rotate before a line would take the file past this many
            bytes; ``None`` never rotates.
        backups: how many rotated files to keep (``FILE.1`` the newest).

    """

    file: str
    max_size: int | None = None
    backups: int = 5


@attrs.frozen
class Socket:
    """One listening socket that nsup binds and passes to the service (socket activation).

    Attributes:
        listen: ``"host:port"`` or ``"[v6]:port"`` (TCP), an absolute path
            (a Unix stream socket) or ``"@name"`` (an abstract Unix socket).
        name: the name in ``LISTEN_FDNAMES``; ``None`` means the service's name.
        mode: the file mode of a Unix socket path, or ``None`` (the umask's).
        backlog: the listen queue length: connections beyond it that arrive
            while the service is not accepting are refused (or, for TCP,
            retried by the client's kernel).

    """

    listen: str
    name: str | None = None
    mode: int | None = None
    backlog: int = 4096


IdMap = tuple[tuple[int, int, int], ...]


@attrs.frozen
class Service:
    """One ``[services.NAME]`` table, with ``[defaults]`` merged under it.

    Attributes:
        command: argv; ``command[0]`` is looked up on ``PATH``.
        type: ``"service"`` (runs until stopped) or ``"oneshot"`` (runs to
            completion; its dependents wait for a successful exit).
        depends_on: service name -> the condition to wait for before this
            starts: ``"started"``, ``"ready"``, ``"healthy"`` or ``"completed"``.
        restart: ``"always"``, ``"on-failure"`` or ``"never"``.
        success_codes: exit codes that count as success besides 0.
        backoff: restart delays.
        namespaces: new namespaces to create (see :data:`nsup._namespaces.NAMESPACES`).
        namespaces_from: the service whose running process's namespaces this
            one enters instead of creating its own, or ``None``.
        init: run nsup's init as PID 1 (only with a ``pid`` namespace).
        hostname: the hostname in the new ``uts`` namespace, or ``None``.
        env: variables added to nsup's own environment.
        sockets: listening sockets nsup binds and passes as fds 3, 4, ...
        cwd: working directory, or ``None`` for nsup's.
        stop: how to stop it.
        limits: resource limits.
        ready: readiness probe, or ``None`` (ready once started).
        health: health probe, or ``None``.
        instances: how many copies to run.
        stdout: ``"inherit"``, ``"null"``, ``"journal"``, ``"syslog"``, or an
            :class:`OutputFile` (a plain path is one without rotation).
        stderr: same as ``stdout``.
        mounts: mounts made in the new mount namespace, in order.
        uid_map: ``(inside, outside, count)`` lines for ``/proc/PID/uid_map``;
            empty means "the caller's uid is 0 inside" (with ``user``).
        gid_map: same for gids.
        rootfs: a directory that becomes the service's ``/``, or ``None``.
        user: the user to run as inside, a name or a uid, or ``None`` (unchanged).
            Names are resolved at each start (see :mod:`nsup._policy.identity`).
        group: the group to run as, a name or a gid, or ``None`` (the user's
            primary group, or unchanged without ``user``).
        groups: the supplementary groups, names or gids, or ``None`` for the
            user's groups from the group database (as ``initgroups`` does).
        umask: the file mode creation mask, or ``None`` (nsup's own).
        env_file: env files (``KEY=VALUE`` lines) read at each start.
        env_inherit: start from nsup's whole environment, or (``False``) only
            from its ``PATH``, ``HOME``, ``USER``, ``LANG`` and ``TERM``.
        capabilities: the ``CAP_*`` names to keep, or ``None`` (unchanged).
        no_new_privs: set ``PR_SET_NO_NEW_PRIVS`` before exec; ``None``: set
            it when the service has a ``rootfs`` or a read-only mount.

    """

    command: tuple[str, ...]
    type: ServiceType = "service"
    depends_on: Mapping[str, Condition] = attrs.field(
        factory=dict, converter=conditions, hash=False
    )
    restart: Restart = "on-failure"
    success_codes: tuple[int, ...] = ()
    backoff: Backoff = Backoff()
    namespaces: frozenset[str] = DEFAULT_NAMESPACES
    namespaces_from: str | None = None
    init: bool = True
    hostname: str | None = None
    env: Mapping[str, str] = attrs.field(factory=dict, converter=frozen_map, hash=False)
    sockets: tuple[Socket, ...] = ()
    cwd: str | None = None
    stop: Stop = Stop()
    limits: Limits = attrs.field(factory=Limits)
    ready: Probe | None = None
    health: HealthProbe | None = None
    instances: int = 1
    stdout: str | OutputFile = "inherit"
    stderr: str | OutputFile = "inherit"
    mounts: tuple[Mount, ...] = ()
    uid_map: IdMap = ()
    gid_map: IdMap = ()
    rootfs: str | None = None
    user: int | str | None = None
    group: int | str | None = None
    groups: tuple[int | str, ...] | None = None
    umask: int | None = None
    env_file: tuple[str, ...] = ()
    env_inherit: bool = True
    capabilities: frozenset[str] | None = None
    no_new_privs: bool | None = None

    @property
    def after(self) -> tuple[str, ...]:
        """The services this one starts after: its dependencies, and the owner of its namespaces."""
        owner = () if self.namespaces_from is None else (self.namespaces_from,)
        return tuple(dict.fromkeys((*self.depends_on, *owner)))
