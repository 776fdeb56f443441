"""``[supervisor] expand_env``: take string values from nsup's environment.

With ``expand_env = true`` every string value of the policy (not the keys)
is expanded as docker-compose does, before validation:

- ``${VAR}``: the value of ``VAR`` (an empty value stays empty); unset is an
  error that names the key and the variable;
- ``${VAR:-default}``: ``default`` when ``VAR`` is unset or empty (the default
  is taken as written, up to the first ``}``);
- ``$$``: a literal ``$``.

Any other ``$`` is an error, so a ``$HOME`` meant for a shell is never taken
silently: write ``$$HOME`` for the shell, or ``${HOME}`` for nsup.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .validate import Problem

__all__ = ["enabled", "escape", "expand_document"]

_TOKEN = re.compile(r"\$\$|\$\{(?P<body>[^}]*)\}|\$")
_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)


def enabled(document: Mapping[str, Any]) -> bool:
    """Return True when *document*'s ``[supervisor]`` table sets ``expand_env = true``."""
    supervisor = document.get("supervisor")
    return isinstance(supervisor, dict) and supervisor.get("expand_env") is True


def _expand_string(key: str, text: str, environ: Mapping[str, str], problems: list[Problem]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        body = match["body"]
        parsed = None if body is None else _BODY.fullmatch(body)
        if body is None:
            message = (
                f"{key!r} has a '$' that starts no ${{VAR}} (at character {match.start() + 1}); "
                "write '$$' for a literal '$'"
            )
        elif parsed is None:
            message = (
                f"{key!r} has {match[0]!r}, which is neither ${{NAME}} nor ${{NAME:-default}} "
                "(a name is letters, digits and '_', not starting with a digit)"
            )
        elif parsed["default"] is not None:
            return environ.get(parsed["name"]) or parsed["default"]
        elif parsed["name"] in environ:
            return environ[parsed["name"]]
        else:
            name = parsed["name"]
            message = (
                f"{key!r} uses ${{{name}}}, which is not set in nsup's environment; "
                f"set {name} or give a default: ${{{name}:-value}}"
            )
        problems.append((key, message))
        return match[0]

    return _TOKEN.sub(replace, text)


def _walk(key: str, value: Any, environ: Mapping[str, str], problems: list[Problem]) -> Any:
    if isinstance(value, str):
        return _expand_string(key, value, environ, problems)
    if isinstance(value, dict):
        prefix = f"{key}." if key else ""
        return {k: _walk(f"{prefix}{k}", v, environ, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(f"{key}[{i}]", item, environ, problems) for i, item in enumerate(value)]
    return value


def expand_document(
    document: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], list[Problem]]:
    """Expand every string value of *document* from *environ* (default: ``os.environ``).

    Returns:
        The expanded document (a new one; *document* is not changed) and a
        ``(dotted key, message)`` problem for each unset variable or stray ``$``.

    """
    problems: list[Problem] = []
    expanded = _walk("", dict(document), os.environ if environ is None else environ, problems)
    return expanded, problems


def escape(value: Any) -> Any:
    """Return *value* with ``$`` written ``$$`` in every string: what expands back to it."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {k: escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [escape(item) for item in value]
    return value
