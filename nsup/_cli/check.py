"""``nsup check POLICY``: validate a policy and summarise its services.

A valid policy prints one line per service, in the order written::

    web x2: python3 -m http.server [restart=always namespaces=mount,pid depends_on=db]

and exits 0.  An invalid one prints every problem on stderr, each line
prefixed ``nsup:``, and exits 2.  A valid policy is then checked against this
host (:mod:`nsup._policy.preflight`): what cannot work here (a command not on
the ``PATH``, a missing bind source, namespaces that need root, ...) is an
error too, and what can run but not as meant is a ``nsup: warning:`` line on
stderr that leaves the exit code 0.  ``--json`` prints one JSON object on
stdout instead, in every case: ``{"valid": true, "source": ...,
"services": [...], "warnings": [...]}`` or ``{"valid": false, "source": ...,
"errors": [{"source", "line", "key", "message"}, ...], "warnings": [...]}``;
the exit code is the same.
"""

from __future__ import annotations

import json
import shlex
import sys
from typing import TYPE_CHECKING, Any

from .._errors import PolicyError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from .._policy import Policy
    from .._policy.model import Service

__all__ = ["register", "run", "show_argv", "summary_line"]


def register(subparsers: Any) -> None:
    """Add the ``check`` sub-command to *subparsers*."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check",
        help="validate a policy file",
        description="Validate a policy and check it against this host, as the user who "
        "runs nsup: a summary line per service and exit 0 (warnings on stderr), or every "
        "error found and exit 2.",
    )
    parser.add_argument("policy", metavar="POLICY.toml")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout, for editors and CI"
    )
    parser.set_defaults(func=run)


_SHELL_SPECIAL = frozenset('"$`\\!')


def show_argv(argv: Sequence[str]) -> str:
    """Return *argv* as a reader would type it in a shell.

    Words that need no quoting stay bare; others get single quotes, or
    double quotes when they hold a single quote.  A word that would need
    both (or shell escapes inside double quotes) makes the whole command a
    JSON list instead of ``'"'"'`` noise.

    Example:
        ``["sh", "-c", "echo 'hi'"]`` reads ``sh -c "echo 'hi'"``.

    """
    words = []
    for word in argv:
        if "'" not in word:
            words.append(shlex.quote(word))
        elif _SHELL_SPECIAL.isdisjoint(word):
            words.append(f'"{word}"')
        else:
            return json.dumps(list(argv))
    return " ".join(words)


def summary_line(name: str, service: Service) -> str:
    """Return the one-line summary of a service that ``nsup check`` prints.

    Args:
        name: the service's name.
        service: its settings.

    Returns:
        ``NAME[ xN]: COMMAND [restart=R namespaces=A,B depends_on=X,Y]``, with
        ``none`` for an empty list.

    """
    count = f" x{service.instances}" if service.instances > 1 else ""
    namespaces = ",".join(sorted(service.namespaces)) or "none"
    depends_on = ",".join(service.depends_on) or "none"
    return (
        f"{name}{count}: {show_argv(service.command)} "
        f"[restart={service.restart} namespaces={namespaces} depends_on={depends_on}]"
    )


def _service_json(name: str, service: Service) -> dict[str, Any]:
    return {
        "name": name,
        "command": list(service.command),
        "restart": service.restart,
        "namespaces": sorted(service.namespaces),
        "depends_on": list(service.depends_on),
        "instances": service.instances,
    }


def run(args: argparse.Namespace) -> int:
    """Validate ``args.policy`` and print the result.

    Args:
        args: the parsed ``check`` arguments (``policy``, ``json``).

    Returns:
        0 for a valid policy, 2 for an invalid or unreadable one.

    """
    from .._policy import load_policy  # noqa: PLC0415 - when the command runs, not for `nsup --help`
    from .._policy.hostcheck import identity_and_env_issues  # noqa: PLC0415

    try:
        policy = load_policy(args.policy)
    except OSError as exc:
        message = f"cannot read {args.policy!r}: {exc.strerror or exc}"
        error = {"source": args.policy, "line": None, "key": "", "message": message}
        return _fail(args, [error], [message])
    except PolicyError as exc:
        errors: list[Any] = list(exc.errors)
        return _fail(args, [e.to_json() for e in errors], [str(e) for e in errors])
    from .._policy.preflight import preflight  # noqa: PLC0415 - only once the policy is valid

    found = preflight(policy)
    warnings = [w.to_json() for w in found.warnings]
    if not args.json:
        for warning in found.warnings:
            print(f"nsup: warning: {warning}", file=sys.stderr)  # noqa: T201 - the command's output
    issues = [*found.errors, *identity_and_env_issues(policy, _lines(args.policy))]
    if issues:
        return _fail(args, [e.to_json() for e in issues], [str(e) for e in issues], warnings)
    _print_valid(args, policy, warnings)
    return 0


def _lines(path: str) -> dict[str, int]:
    """Return the policy file's key lines (it was just read, so it reads again)."""
    from .._policy.lines import key_lines  # noqa: PLC0415 - as in run()

    try:
        with open(path, encoding="utf-8") as file:
            return key_lines(file.read())
    except (OSError, ValueError):
        return {}


def _print_valid(args: argparse.Namespace, policy: Policy, warnings: list[Any]) -> None:
    if args.json:
        services = [_service_json(name, s) for name, s in policy.services.items()]
        record = {"valid": True, "source": policy.source, "services": services}
        print(json.dumps({**record, "warnings": warnings}))  # noqa: T201 - the command's output
        return
    for name, service in policy.services.items():
        print(summary_line(name, service))  # noqa: T201 - the command's output


def _fail(
    args: argparse.Namespace,
    errors: list[dict[str, Any]],
    lines: list[str],
    warnings: list[Any] | None = None,
) -> int:
    if args.json:
        record = {"valid": False, "source": args.policy, "errors": errors}
        print(json.dumps({**record, "warnings": warnings or []}))  # noqa: T201 - the command's output
    else:
        for line in lines:
            print(f"nsup: {line}", file=sys.stderr)  # noqa: T201 - the command's output
    return 2
