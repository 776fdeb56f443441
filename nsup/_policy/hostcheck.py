"""Checks of a valid policy against this host: users, groups, env files and log directories.

Validation (:mod:`nsup._policy.build`) looks only at the document; these
checks look at the machine ``nsup check`` runs on: that each ``user``,
``group`` and ``groups`` name resolves (on the host, or in the service's
``rootfs``), that each ``env_file`` can be read and parsed, and that the
directory of each log file exists.  The same checks happen again at every
start, where a failure fails that start.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .environ import env_file_keys, read_env_file
from .identity import Unresolved, identity_problems
from .lines import line_of
from .model import OutputFile, PolicyIssue
from .validate import key_join

if TYPE_CHECKING:
    from collections.abc import Mapping

    from . import Policy
    from .model import Service

__all__ = ["identity_and_env_issues", "log_dir_problems"]


def log_dir_problems(service: Service, key: str) -> list[Unresolved]:
    """Return a problem for each log file of *service* whose directory is missing."""
    problems = []
    for stream in ("stdout", "stderr"):
        target = getattr(service, stream)
        if isinstance(target, OutputFile):
            directory = os.path.dirname(target.file) or "/"
            if not os.path.isdir(directory):
                where = f"{key}.{stream}"
                problems.append(
                    Unresolved(
                        where,
                        f"{where!r} names {target.file!r}, but the directory {directory!r} "
                        "does not exist; create it or choose another path",
                    )
                )
    return problems


def identity_and_env_issues(
    policy: Policy, lines: Mapping[str, int] | None = None
) -> list[PolicyIssue]:
    """Return a :class:`PolicyIssue` for each unknown user or group and each unreadable env file.

    Args:
        policy: a valid policy.
        lines: dotted key -> line in the policy's file, when there is one.

    Returns:
        The issues, service by service, in the order the keys are checked.

    """
    found = dict(lines or {})
    issues = []
    for name, service in policy.services.items():
        key = key_join("services", name)
        problems = identity_problems(service, key) + log_dir_problems(service, key)
        for file_key, path in env_file_keys(service, key):
            try:
                read_env_file(path, file_key)
            except Unresolved as exc:
                problems.append(exc)
        issues += [
            PolicyIssue(policy.source, p.key, _line(found, key, p.key), p.message) for p in problems
        ]
    return issues


def _line(lines: dict[str, int], service_key: str, key: str) -> int | None:
    """Return the line of *key*, or of the ``[defaults]`` key it came from."""
    if key not in lines:
        from_defaults = "defaults" + key[len(service_key) :]
        if line_of(lines, from_defaults) is not None:
            return line_of(lines, from_defaults)
    return line_of(lines, key)
