"""``nsup exec [OPTIONS] -- CMD [ARG...]``: one command in fresh namespaces.

Like ``unshare --fork`` or ``bwrap``: the command runs with nsup's init as
PID 1 (unless ``--no-init``), and ``nsup exec`` exits with the command's code,
or 128+N if it died of signal N.  Its own failures use the codes docker and
tini use: 127 when the command is not found, 126 when it cannot be executed,
125 when a namespace, mount or limit could not be set up, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
from typing import Any

import trio

from .._clone.namespaces import DEFAULT_NAMESPACES, check_namespaces
from .._errors import SpawnError, SpecError
from .._limits import RLIMITS, Limits
from .._mount import Mount
from .._policy.schema import LIMITS_FIELDS, make_limits
from .._policy.validate import check_table, did_you_mean
from .._process import spawn
from .._spec import ProcessSpec
from . import exec_identity

__all__ = ["register", "run"]

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
    exec_identity.add_flags(parser)
    parser.add_argument(
        "--env", metavar="K=V", action="append", default=[], help="set a variable (repeatable)"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")
    parser.set_defaults(func=run, parser=parser)


def _tagged(flag: str, value: str) -> tuple[str, str]:
    return flag, value


def _mount(flag: str, value: str) -> Mount:
    if flag == "--tmpfs":
        return Mount(type="tmpfs", target=value)
    return _bind(value, readonly=flag == "--ro-bind")


def _bind(value: str, readonly: bool) -> Mount:
    source, sep, target = value.partition(":")
    if not sep or not source or not target:
        flag = "--ro-bind" if readonly else "--bind"
        raise SpecError(f"{flag} takes SRC:DST, two paths joined by ':' (got {value!r})")
    return Mount(type="bind", source=source, target=target, readonly=readonly)


def build_spec(args: argparse.Namespace) -> ProcessSpec:
    """Turn parsed ``nsup exec`` arguments into a :class:`ProcessSpec`.

    Raises:
        nsup.SpecError: an option is invalid; the message names it.

    """
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise SpecError("nsup exec needs a command: nsup exec [OPTIONS] -- CMD [ARG...]")
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--env takes K=V (got {item!r})")
        env[key] = value
    identity, umask, env = exec_identity.resolve(args, env)
    try:
        mounts = [_mount(flag, value) for flag, value in args.mounts]
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    try:
        namespaces = set(
            check_namespaces([n.strip() for n in args.ns.split(",") if n.strip()], "--ns")
        )
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    if mounts and "mount" not in namespaces:
        namespaces.add("mount")  # as bwrap does: mounts imply a mount namespace
    if args.rootfs is not None or "pid" in namespaces:
        namespaces.add("mount")  # with pid: a private /proc, as unshare --mount-proc gives
    capabilities = None
    if args.cap is not None:
        capabilities = [c for c in args.cap if c.lower() != "none"]
    return ProcessSpec(
        argv=command,
        env=env,
        cwd=args.cwd,
        namespaces=namespaces,
        hostname=args.hostname,
        init=not args.no_init,
        mounts=mounts,
        limits=_limits(args),
        rootfs=None if args.rootfs is None else os.path.abspath(args.rootfs),
        no_new_privs=args.no_new_privs or None,  # unset: the hardening default decides
        capabilities=capabilities,
        user=identity.uid,
        group=identity.gid,
        groups=identity.groups,
        umask=umask,
    )


def _limits(args: argparse.Namespace) -> Limits:
    """Check ``--memory``, ``--pids``, ``--cpu`` and ``--rlimit`` with the policy's validators."""
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


async def _forward_signals(proc: Any, receiver: Any, from_terminal: bool) -> None:
    async for signo in receiver:
        if not (from_terminal and signo in FROM_TERMINAL):
            proc.send_signal(signo)


async def _main(spec: ProcessSpec) -> int:
    with trio.open_signal_receiver(*FORWARDED) as receiver:
        async with spawn(spec) as proc, trio.open_nursery() as nursery:
            nursery.start_soon(_forward_signals, proc, receiver, sys.stdin.isatty())
            status = await proc.wait()
            nursery.cancel_scope.cancel()
    if status.oom_killed:
        print(f"nsup exec: the command was {status}", file=sys.stderr)  # noqa: T201 - the CLI's report
    return status.exit_code


def run(args: argparse.Namespace) -> int:
    """Run ``nsup exec``; return the exit code."""
    try:
        spec = build_spec(args)
    except SpecError as exc:
        args.parser.print_usage(sys.stderr)
        print(f"nsup exec: {exc}", file=sys.stderr)  # noqa: T201 - the CLI's error line
        return 2
    try:
        return trio.run(_main, spec)
    except SpawnError as exc:
        print(f"nsup exec: {exc}", file=sys.stderr)  # noqa: T201 - the CLI's error line
        return exc.exit_code
