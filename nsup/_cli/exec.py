"""``nsup exec [OPTIONS] -- CMD [ARG...]``: one command in fresh namespaces.

Like ``unshare --fork`` or ``bwrap``: the command runs with nsup's init as
PID 1 (unless ``--no-init``), and ``nsup exec`` exits with the command's code,
or 128+N if it died of signal N.  Its own failures use the codes docker and
tini use: 127 when the command is not found, 126 when it cannot be executed,
125 when a namespace, mount or limit could not be set up, 2 for bad usage.

Two ways to run it, with the same flags, codes and messages.  The direct way
(every run without ``--memory``, ``--pids`` or ``--cpu``) clones the child from
this very process, which has a single thread, and waits on its pidfd
(``_clone/oneshot.py``): no trio, no attrs, no zygote, so the whole command
costs little more than the interpreter's start-up.  The child runs the same
``_clone/child.py`` set-up and ``_clone/init.py`` init as the zygote's
children, from a request built by the same ``_request.build_request``.  With a
cgroup limit it goes through :func:`nsup.spawn` (trio, the zygote and
``_cgroup``), which also tells an OOM kill apart.  ``NSUP_EXEC_VIA=spawn``
forces that way (the tests run every case both ways).
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys

from .._clone.caps import check_capabilities
from .._clone.namespaces import DEFAULT_NAMESPACES, check_namespaces
from .._clone.rlimits import RLIMITS
from .._errors import SpawnError, SpecError
from .._spec_rules import check_fields, check_mount

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    from .._limits import Limits
    from .._spec import ProcessSpec

__all__ = ["ExecMount", "ExecSpec", "build_spec", "register", "run"]

EXAMPLES = """\
examples:
  nsup exec --ns pid,net,uts --hostname demo -- sh -c 'hostname; ps -e'   # demo, init, sh, ps
  nsup exec --ns user,pid,mount,net -- id          # rootless: uid 0 inside
  nsup exec --ro-bind /srv/data:/mnt --tmpfs /tmp -- ls /mnt
  nsup exec --tmpfs /mnt --ro-bind /etc:/mnt/etc -- ls /mnt/etc   # DST made on the tmpfs
  nsup exec --no-init --ns pid -- sh -c 'echo $$'  # the command itself is PID 1

  nsup exec --memory 256M --pids 64 --cpu 0.5 --rlimit nofile=1024 -- ./worker
  nsup exec --rootfs /srv/alpine --user 1000 --group 1000 --no-new-privs -- /bin/sh
  nsup exec --user www-data --umask 027 --clear-env --env-file /etc/web.env -- ./server
  nsup exec --cap net_bind_service --user 1000 -- ./server   # only that capability

--ns with pid implies mount, so /proc shows only the namespace's processes.
mounts are made in the order given; a missing DST is created inside --rootfs
or on an earlier --tmpfs, never on the host.

exit status: the command's, or 128+N if signal N killed it (an OOM kill is
SIGKILL: 137, and nsup exec says so on stderr); 127 command not found, 126 not
executable, 125 namespace/mount/limit set-up failed, 2 bad usage.
"""

# Signals nsup exec passes on to the child.  With a terminal on stdin, the
# terminal already sends INT, QUIT and WINCH to the whole foreground process
# group, the command included, so passing them on would deliver them twice.
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCONT,
)
FROM_TERMINAL = frozenset({signal.SIGINT, signal.SIGQUIT, signal.SIGWINCH})


def register(subparsers: Any) -> None:
    """Add the ``exec`` sub-command to *subparsers*."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "exec",
        help="run one command in fresh namespaces, with nsup's init as PID 1",
        description="Run one command in fresh namespaces, with nsup's init as PID 1.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="nsup exec [OPTIONS] -- CMD [ARG...]",
    )
    default_ns = ",".join(sorted(DEFAULT_NAMESPACES))
    parser.add_argument(
        "--ns",
        metavar="LIST",
        default=default_ns,
        help=f"comma list of pid,mount,uts,ipc,net,user,cgroup, or '' for none (default {default_ns})",
    )
    parser.add_argument("--hostname", metavar="NAME", help="hostname inside (needs uts)")
    parser.add_argument("--no-init", action="store_true", help="make the command itself PID 1")
    parser.add_argument("--memory", metavar="SIZE", help="memory limit through a cgroup, e.g. 256M")
    parser.add_argument("--pids", metavar="N", help="most tasks at once, through a cgroup")
    parser.add_argument(
        "--cpu", metavar="CORES", help="CPU quota in cores through a cgroup, e.g. 0.5"
    )
    parser.add_argument(
        "--rlimit",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="an rlimit, soft and hard: nofile=1024, core=0, as=1G, cputime=10s, "
        "or NAME=unlimited (repeatable)",
    )
    # One list in command-line order, as bwrap applies them: a --tmpfs can hold a later bind.
    for flag, metavar, what in (
        ("--bind", "SRC:DST", "bind-mount host SRC at DST"),
        ("--ro-bind", "SRC:DST", "bind-mount host SRC at DST, read-only"),
        ("--tmpfs", "DST", "a fresh tmpfs at DST"),
    ):
        parser.add_argument(
            flag,
            metavar=metavar,
            dest="mounts",
            action="append",
            default=[],
            type=functools.partial(_tagged, flag),
            help=f"{what} (repeatable)",
        )
    parser.add_argument("--cwd", metavar="DIR", help="working directory inside")
    parser.add_argument(
        "--rootfs", metavar="DIR", help="make DIR the root, with a minimal /dev and /proc"
    )
    parser.add_argument(
        "--no-new-privs", action="store_true", help="exec never grants privileges (setuid, fcaps)"
    )
    parser.add_argument(
        "--cap",
        metavar="NAME",
        action="append",
        default=None,
        help="keep only this capability, e.g. net_bind_service (repeatable; --cap none drops all)",
    )
    _identity_flags(parser)
    parser.add_argument(
        "--env", metavar="K=V", action="append", default=[], help="set a variable (repeatable)"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")
    parser.set_defaults(func=run, parser=parser)


def _identity_flags(parser: argparse.ArgumentParser) -> None:
    from . import exec_identity  # noqa: PLC0415 - its flags now; the policy layer only when one is given

    exec_identity.add_flags(parser)


class ExecMount:
    """One ``--bind``, ``--ro-bind`` or ``--tmpfs``: the fields of :class:`nsup.Mount`, checked alike."""

    __slots__ = ("readonly", "source", "target", "type")
    size = None
    mode = None

    def __init__(
        self, kind: str, target: str, source: str | None = None, *, readonly: bool = False
    ) -> None:
        """Check the fields as :class:`nsup.Mount` does (``check_mount``); raise SpecError."""
        try:
            check_mount(kind, target, source, None)
        except ValueError as exc:
            raise SpecError(str(exc)) from None
        self.type = kind
        self.target = target
        self.source = source
        self.readonly = readonly


class _NoLimits:
    """The limits of a run without ``--rlimit`` and cgroup flags: none (attrs stays unloaded)."""

    rlimits: Mapping[str, int] = {}
    memory = pids = cpu = None


class ExecSpec:
    """What ``nsup exec`` runs: the fields of :class:`nsup.ProcessSpec` it sets, checked alike.

    A plain class, so that the direct way never loads attrs; the cross-field
    checks are ProcessSpec's own (``_spec_rules.check_fields``), and
    :meth:`process_spec` turns it into a real ``ProcessSpec`` for :func:`nsup.spawn`.
    """

    uid_map = gid_map = None
    listen_fds: tuple[tuple[str, int], ...] = ()
    new_session = False

    def __init__(  # noqa: PLR0913 - ProcessSpec's keywords, as nsup exec sets them
        self,
        *,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str | None,
        namespaces: frozenset[str],
        hostname: str | None,
        init: bool,
        mounts: Sequence[ExecMount],
        limits: Limits | _NoLimits,
        rootfs: str | None,
        no_new_privs: bool | None,
        capabilities: frozenset[str] | None,
        user: int | None,
        group: int | None,
        groups: tuple[int, ...] | None,
        umask: int | None,
    ) -> None:
        """Keep the fields and check them against each other, as ProcessSpec does."""
        self.argv = tuple(argv)
        self.env = env
        self.cwd = cwd
        self.namespaces = namespaces
        self.hostname = hostname
        self.init = init
        self.mounts = tuple(mounts)
        self.limits = limits
        self.rootfs = rootfs
        self.no_new_privs = no_new_privs
        self.capabilities = capabilities
        self.user = user
        self.group = group
        self.groups = groups
        self.umask = umask
        check_fields(self)

    @property
    def needs_cgroup(self) -> bool:
        """True when a cgroup limit was asked for (only :func:`nsup.spawn` makes cgroups)."""
        limits = self.limits
        return limits.memory is not None or limits.pids is not None or limits.cpu is not None

    def process_spec(self) -> ProcessSpec:
        """Return the same settings as a :class:`nsup.ProcessSpec`."""
        from .._mount import Mount  # noqa: PLC0415 - attrs, for the spawn way only
        from .._spec import ProcessSpec  # noqa: PLC0415

        return ProcessSpec(
            argv=self.argv,
            env=self.env,
            cwd=self.cwd,
            namespaces=self.namespaces,
            hostname=self.hostname,
            init=self.init,
            mounts=[
                Mount(type=m.type, target=m.target, source=m.source, readonly=m.readonly)  # type: ignore[arg-type]  # checked by check_mount
                for m in self.mounts
            ],
            limits=None if isinstance(self.limits, _NoLimits) else self.limits,
            rootfs=self.rootfs,
            no_new_privs=self.no_new_privs,
            capabilities=self.capabilities,
            user=self.user,
            group=self.group,
            groups=self.groups,
            umask=self.umask,
        )


def _tagged(flag: str, value: str) -> tuple[str, str]:
    return flag, value


def _mount(flag: str, value: str) -> ExecMount:
    if flag == "--tmpfs":
        return ExecMount("tmpfs", value)
    return _bind(value, readonly=flag == "--ro-bind")


def _bind(value: str, *, readonly: bool) -> ExecMount:
    source, sep, target = value.partition(":")
    if not sep or not source or not target:
        flag = "--ro-bind" if readonly else "--bind"
        raise SpecError(f"{flag} takes SRC:DST, two paths joined by ':' (got {value!r})")
    return ExecMount("bind", target, source, readonly=readonly)


_IDENTITY_FLAGS = ("user", "group", "umask", "env_file", "clear_env")


def _environment(
    args: argparse.Namespace,
) -> tuple[dict[str, str], tuple[int | None, int | None, tuple[int, ...] | None, int | None]]:
    """Return the command's environment and its (uid, gid, groups, umask) from the flags."""
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--env takes K=V (got {item!r})")
        env[key] = value
    if all(getattr(args, name) in (None, False, []) for name in _IDENTITY_FLAGS):
        return {**os.environ, **env}, (None, None, None, None)  # what the rules give without them
    from . import exec_identity  # noqa: PLC0415 - the policy layer's lookups, when asked for

    identity, umask, env = exec_identity.resolve(args, env)
    return env, (identity.uid, identity.gid, identity.groups, umask)


def _namespaces(args: argparse.Namespace, *, implied: bool) -> frozenset[str]:
    """The ``--ns`` list; mounts or a rootfs (*implied*) and ``pid`` add ``mount``."""
    try:
        names = set(check_namespaces([n.strip() for n in args.ns.split(",") if n.strip()], "--ns"))
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    if implied or "pid" in names:
        names.add("mount")  # as bwrap does; with pid a private /proc, as unshare --mount-proc gives
    return frozenset(names)


def build_spec(args: argparse.Namespace) -> ExecSpec:
    """Turn parsed ``nsup exec`` arguments into an :class:`ExecSpec`.

    Raises:
        nsup.SpecError: an option is invalid; the message names it.

    """
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise SpecError("nsup exec needs a command: nsup exec [OPTIONS] -- CMD [ARG...]")
    env, (uid, gid, groups, umask) = _environment(args)
    mounts = [_mount(flag, value) for flag, value in args.mounts]
    namespaces = _namespaces(args, implied=bool(mounts) or args.rootfs is not None)
    given = args.memory or args.pids or args.cpu or args.rlimit
    capabilities = None
    if args.cap is not None:
        try:
            capabilities = check_capabilities([c for c in args.cap if c.lower() != "none"])
        except ValueError as exc:
            raise SpecError(str(exc)) from None
    return ExecSpec(
        argv=command,
        env=env,
        cwd=args.cwd,
        namespaces=namespaces,
        hostname=args.hostname,
        init=not args.no_init,
        mounts=mounts,
        limits=_limits(args) if given else _NoLimits(),
        rootfs=None if args.rootfs is None else os.path.abspath(args.rootfs),
        no_new_privs=args.no_new_privs or None,  # unset: the hardening default decides
        capabilities=capabilities,
        user=uid,
        group=gid,
        groups=groups,
        umask=umask,
    )


def _limits(args: argparse.Namespace) -> Limits:
    """Check ``--memory``, ``--pids``, ``--cpu`` and ``--rlimit`` with the policy's validators."""
    # The policy's validators (and attrs) load only when a limit is given.
    from .._policy.schema import LIMITS_FIELDS, make_limits  # noqa: PLC0415
    from .._policy.validate import check_table, did_you_mean  # noqa: PLC0415

    raw: dict[str, object] = {}
    for flag, value in (("memory", args.memory), ("pids", args.pids), ("cpu", args.cpu)):
        if value is not None:
            raw[flag] = _flag_value(value)
    for item in args.rlimit:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SpecError(f"--rlimit takes NAME=VALUE (got {item!r})")
        if name not in RLIMITS:
            raise SpecError(
                f"--rlimit: unknown rlimit {name!r}; choose from {', '.join(sorted(RLIMITS))}"
                f"{did_you_mean(name, sorted(RLIMITS))}"
            )
        raw[name] = _flag_value(value)
    typed, problems = check_table("limits", raw, LIMITS_FIELDS)
    if problems:
        key, message = problems[0]
        flag = key.partition(".")[2]
        flag = f"--{flag}" if flag in ("memory", "pids", "cpu") else f"--rlimit {flag}"
        raise SpecError(f"{flag}: {message.partition(' ')[2]}")
    return make_limits(typed)


def _flag_value(text: str) -> object:
    """Return a flag's text as the policy would hold it: a number where it is one, else the string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _forwarded(from_terminal: bool) -> Callable[[int], bool]:
    """Return the test for a signal to pass on (not the terminal's own, which the command got too)."""
    return lambda signo: not (from_terminal and signo in FROM_TERMINAL)


def _run_direct(spec: ExecSpec) -> int:
    """Clone the child from this process and wait on its pidfd (see the module docstring)."""
    from .._clone.oneshot import run_once  # noqa: PLC0415 - loaded when a command runs
    from .._request import build_request, preflight  # noqa: PLC0415
    from .._spawn_errors import spawn_error  # noqa: PLC0415

    request = build_request(spec, [0, 1, 2], preflight(spec), None)
    outcome = run_once(request, [0, 1, 2], FORWARDED, _forwarded(sys.stdin.isatty()))
    failure = outcome.failure()
    if failure is not None:
        stage, err = failure
        raise spawn_error(spec, stage, err, request["flags"], outcome.message)
    return outcome.exit_code()


async def _forward_signals(proc: Any, receiver: Any, from_terminal: bool) -> None:
    keep = _forwarded(from_terminal)
    async for signo in receiver:
        if keep(signo):
            proc.send_signal(signo)


async def _spawn_main(spec: ProcessSpec) -> int:
    import trio  # noqa: PLC0415 - the spawn way only

    from .._process import spawn  # noqa: PLC0415

    with trio.open_signal_receiver(*FORWARDED) as receiver:
        async with spawn(spec) as proc, trio.open_nursery() as nursery:
            nursery.start_soon(_forward_signals, proc, receiver, sys.stdin.isatty())
            status = await proc.wait()
            nursery.cancel_scope.cancel()
    if status.oom_killed:
        print(f"nsup exec: the command was {status}", file=sys.stderr)  # noqa: T201 - the CLI's report
    return status.exit_code


def _run_spawn(spec: ExecSpec) -> int:
    import trio  # noqa: PLC0415 - the spawn way only

    return trio.run(_spawn_main, spec.process_spec())


def run(args: argparse.Namespace) -> int:
    """Run ``nsup exec``; return the exit code."""
    try:
        spec = build_spec(args)
    except SpecError as exc:
        args.parser.print_usage(sys.stderr)
        print(f"nsup exec: {exc}", file=sys.stderr)  # noqa: T201 - the CLI's error line
        return 2
    try:
        if spec.needs_cgroup or os.environ.get("NSUP_EXEC_VIA") == "spawn":
            return _run_spawn(spec)
        return _run_direct(spec)
    except SpawnError as exc:
        print(f"nsup exec: {exc}", file=sys.stderr)  # noqa: T201 - the CLI's error line
        return exc.exit_code
