"""``nsup exec [OPTIONS] -- CMD [ARG...]``: one command in fresh namespaces.

Like ``unshare --fork`` or ``bwrap``: the command runs with nsup's init as
PID 1 (unless ``--no-init``), and ``nsup exec`` exits with the command's code,
or 128+N if it died of signal N.  Its own failures use the codes docker and
tini use: 127 when the command is not found, 126 when it cannot be executed,
125 when a namespace, mount or limit could not be set up, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from typing import Any

import trio

from ._errors import SpawnError, SpecError
from ._mount import Mount
from ._namespaces import DEFAULT_NAMESPACES, check_namespaces
from ._process import spawn
from ._spec import ProcessSpec

__all__ = ["register", "run"]

EXAMPLES = """\
examples:
  nsup exec --ns pid,net,uts --hostname demo -- sh -c 'hostname; ps -e'
  nsup exec --ns user,pid,mount,net -- id          # rootless: uid 0 inside
  nsup exec --ro-bind /srv/data:/data --tmpfs /tmp -- ls /data
  nsup exec --no-init --ns pid -- sh -c 'echo $$'  # the command itself is PID 1

exit status: the command's, or 128+N if signal N killed it; 127 command not
found, 126 not executable, 125 namespace/mount set-up failed, 2 bad usage.
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
    parser.add_argument("--pids", metavar="N", type=int, help="limit on processes through a cgroup")
    for flag, what in (("--bind", "bind-mount"), ("--ro-bind", "bind-mount read-only")):
        parser.add_argument(
            flag, metavar="SRC:DST", action="append", default=[], help=f"{what} host SRC at DST"
        )
    parser.add_argument(
        "--tmpfs", metavar="DST", action="append", default=[], help="a fresh tmpfs at DST"
    )
    parser.add_argument("--cwd", metavar="DIR", help="working directory inside")
    parser.add_argument(
        "--env", metavar="K=V", action="append", default=[], help="set a variable (repeatable)"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")
    parser.set_defaults(func=run, parser=parser)


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
    env = dict(os.environ)
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--env takes K=V (got {item!r})")
        env[key] = value
    try:
        mounts = [_bind(v, readonly=False) for v in args.bind]
        mounts += [_bind(v, readonly=True) for v in args.ro_bind]
        mounts += [Mount(type="tmpfs", target=t) for t in args.tmpfs]
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
    if args.memory is not None or args.pids is not None:
        raise SpecError("--memory and --pids need cgroup support, which this build of nsup lacks")
    return ProcessSpec(
        argv=command,
        env=env,
        cwd=args.cwd,
        namespaces=namespaces,
        hostname=args.hostname,
        init=not args.no_init,
        mounts=mounts,
    )


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
        if exc.stage == "exec":
            return 127 if exc.errno == errno.ENOENT else 126
        return 125
