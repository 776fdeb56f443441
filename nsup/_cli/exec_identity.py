"""``nsup exec``'s identity and environment flags, checked and resolved as the policy's keys are.

``--user``, ``--group``, ``--umask``, ``--env-file`` and ``--clear-env`` are
the policy's ``user``, ``group``, ``umask``, ``env_file`` and
``env_inherit = false``: the same validators check them, the same lookup
resolves names (on the host, or in ``--rootfs``), and the same rules build the
environment.  Messages name the flag instead of the key.
"""

from __future__ import annotations

import os
import re

from .._errors import SpecError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from .._policy.identity import Identity

__all__ = ["add_flags", "resolve"]

_FLAGS = {"user": "--user", "group": "--group", "umask": "--umask", "env_file": "--env-file"}
_KEY = re.compile(r"'exec\.([a-z_]+)(?:\[\d+\])?'")


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add the identity and environment flags to ``nsup exec``'s *parser*."""
    parser.add_argument(
        "--user",
        metavar="NAME|UID",
        help="user to run as inside; a name is looked up on the host, or in --rootfs; "
        "sets the group and supplementary groups from the user database too",
    )
    parser.add_argument("--group", metavar="NAME|GID", help="group to run as inside")
    parser.add_argument("--umask", metavar="MODE", help="file mode creation mask, e.g. 027")
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        action="append",
        default=[],
        help="read KEY=VALUE lines from PATH (repeatable; --env wins)",
    )
    parser.add_argument(
        "--clear-env",
        action="store_true",
        help="pass only PATH, HOME, USER, LANG and TERM from nsup's environment",
    )


def _flag_message(message: str) -> str:
    return _KEY.sub(lambda m: _FLAGS.get(m[1], m[0]), message)


def resolve(
    args: argparse.Namespace, env: dict[str, str]
) -> tuple[Identity, int | None, dict[str, str]]:
    """Check and resolve the flags; return the identity, the umask and the environment.

    Args:
        args: the parsed ``nsup exec`` arguments.
        env: the ``--env`` variables, which win over ``--env-file``.

    Raises:
        nsup.SpecError: a flag is invalid, a name unknown or an env file
            unreadable; the message names the flag.

    """
    # The policy layer loads here, not with the flags: `nsup exec` without them never needs it.
    from .._policy.environ import service_environment  # noqa: PLC0415
    from .._policy.identity import Unresolved, resolve_identity  # noqa: PLC0415
    from .._policy.model import Service  # noqa: PLC0415
    from .._policy.schema import SERVICE_FIELDS  # noqa: PLC0415
    from .._policy.validate import check_table  # noqa: PLC0415

    raw: dict[str, Any] = {"env_file": list(args.env_file), "env_inherit": not args.clear_env}
    for name in ("user", "group", "umask"):
        if getattr(args, name) is not None:
            raw[name] = getattr(args, name)
    fields = {name: SERVICE_FIELDS[name] for name in raw}
    typed, problems = check_table("exec", raw, fields)
    if problems:
        raise SpecError(_flag_message(problems[0][1]))
    rootfs = None if args.rootfs is None else os.path.abspath(args.rootfs)
    service = Service(command=("-",), rootfs=rootfs, env=env, **typed)  # type: ignore[arg-type]  # mypy's attrs plugin cannot solve the generic converter
    try:
        identity = resolve_identity(service, "exec")
        environment = service_environment(service, identity, "exec", os.environ)
    except Unresolved as exc:
        raise SpecError(_flag_message(exc.message)) from None
    return identity, service.umask, environment
