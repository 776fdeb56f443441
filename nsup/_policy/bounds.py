"""Size bounds on a policy, so that no document can exhaust nsup before it runs.

A policy is read by a program that supervises others, so a hostile or
broken file must end in a clear error (exit 2), never in a RecursionError, a
MemoryError or a timer that overflows.  The limits are far beyond what a
real policy needs; ``docs/limits.md`` lists them.

Nesting is checked twice: on the text, before ``tomllib`` parses it (its
parser recurses once per level and a 3,000-deep array would end in
RecursionError), and on the parsed data, which dotted keys can nest without
any bracket (and which :meth:`nsup.Policy.from_dict` takes without text).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .validate import Problem

__all__ = [
    "MAX_DEPTH",
    "MAX_DURATION",
    "MAX_INSTANCES",
    "MAX_POLICY_BYTES",
    "MAX_SERVICES",
    "MAX_SIZE",
    "check_data_depth",
    "check_text_depth",
]

MAX_DEPTH = 32  # nested tables and arrays, counting the document itself
MAX_DURATION = 365 * 24 * 3600.0  # seconds
MAX_SIZE = 2**50  # bytes (1 PiB)
MAX_INSTANCES = 10_000  # per service
MAX_SERVICES = 10_000  # instances in the whole policy, after expansion
MAX_POLICY_BYTES = 16 * 2**20  # the policy file

# Strings and comments (whose brackets do not count), table headers, and brackets.
_TOKEN = re.compile(
    r'#[^\n]*|"""(?:[^\\]|\\.)*?"""|\'\'\'.*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\''
    r"|^[ \t]*\[\[?[^\]\n]*\]\]?|[\[\]{}]",
    re.DOTALL | re.MULTILINE,
)
_KEY = re.compile(r"^[ \t]*([^=\n]+?)[ \t]*=", re.MULTILINE)


def _too_deep(key: str) -> str:
    return f"{key!r} nests tables and arrays more than {MAX_DEPTH} levels deep"


def check_text_depth(text: str) -> tuple[int, str, str] | None:
    """Return ``(line, key, message)`` if brackets in *text* nest beyond :data:`MAX_DEPTH`."""
    depth = 0
    table = ""
    opened = 0  # where the current top-level value began
    for match in _TOKEN.finditer(text):
        found = match[0]
        if found in "[{":
            if depth == 0:
                opened = match.start()
            depth += 1
            if depth > MAX_DEPTH:
                start = text.rfind("\n", 0, opened) + 1
                key_match = _KEY.match(text, start)
                key = key_match[1].strip() if key_match else ""
                key = f"{table}.{key}" if table and key else key or table
                return text.count("\n", 0, opened) + 1, key, _too_deep(key)
        elif found in "]}":
            depth = max(0, depth - 1)
        elif depth == 0 and found.lstrip().startswith("["):
            table = found.strip().strip("[]").strip()
    return None


def check_data_depth(document: object) -> list[Problem]:
    """Return a problem for the first value of *document* nested beyond :data:`MAX_DEPTH`."""
    todo: list[tuple[object, str, int]] = [(document, "", 1)]
    while todo:
        value, key, depth = todo.pop()
        if depth > MAX_DEPTH:
            return [(key, _too_deep(key))]
        if isinstance(value, dict):
            todo.extend(
                (item, f"{key}.{name}" if key else str(name), depth + 1)
                for name, item in value.items()
            )
        elif isinstance(value, list | tuple):
            todo.extend((item, f"{key}[{i}]", depth + 1) for i, item in enumerate(value))
    return []
