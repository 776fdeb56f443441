r"""A service's environment: what it inherits, its ``env_file`` files and its ``env`` table.

The environment is built at every start, in this order, later layers winning:

1. nsup's own environment, whole (``env_inherit = true``, the default), or
   only ``PATH``, ``HOME``, ``USER``, ``LANG`` and ``TERM`` from it
   (``env_inherit = false``, as systemd starts services);
2. ``USER`` and ``HOME`` from the passwd entry, when ``user`` names one;
3. each ``env_file`` in order (read again at every start, as systemd does);
4. the ``env`` table (explicit keys win over files, as in docker-compose).

Env files hold ``KEY=VALUE`` lines, read the way systemd's
``EnvironmentFile=`` and docker-compose's ``env_file`` agree on:

* blank lines and lines starting with ``#`` (or ``;``) are skipped; an
  ``export`` before the name is allowed and ignored;
* spaces around the name and around ``=`` are dropped;
* an unquoted value runs to the end of the line, without trailing spaces;
  `` #`` after a space starts a comment;
* ``'single quotes'`` keep everything inside as written, newlines included;
* ``"double quotes"`` may span lines too; inside, ``\"``, ``\\``,
  ``\$`` and ``\` `` give the character, ``\n`` a newline, ``\t`` a tab,
  a backslash at the end of a line joins the next one, and any other
  backslash is kept;
* after a closing quote only spaces and a ``#`` comment may follow;
* no ``${VAR}`` expansion: a ``$`` is a ``$``.

A problem names the key, the file and the line.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .identity import Unresolved

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .identity import Identity
    from .model import Service

__all__ = [
    "KEPT_VARIABLES",
    "EnvFileError",
    "env_file_keys",
    "parse_env_file",
    "read_env_file",
    "service_environment",
]

KEPT_VARIABLES = ("PATH", "HOME", "USER", "LANG", "TERM")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# An env file larger than this is refused: it is almost surely the wrong file.
MAX_ENV_FILE = 1 << 20

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOUBLE_ESCAPES = {'"': '"', "\\": "\\", "$": "$", "`": "`", "n": "\n", "t": "\t"}


class EnvFileError(ValueError):
    """A line of an env file that cannot be read; ``str()`` is ``FILE:LINE: message``."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")


def _after_quote(rest: str, path: str, line: int) -> None:
    rest = rest.strip()
    if rest and not rest.startswith("#"):
        raise EnvFileError(path, line, f"unexpected text after the closing quote: {rest!r}")


def _quoted(lines: list[str], index: int, start: str, path: str) -> tuple[str, int]:
    """Read a quoted value that starts with *start* (after the quote) on line *index*.

    Returns:
        ``(value, next_index)``: the value, and the index of the line after it.

    """
    quote = start[0]
    text = start[1:]
    opened = index + 1
    out: list[str] = []
    while True:
        i = 0
        while i < len(text):
            char = text[i]
            if char == quote:
                _after_quote(text[i + 1 :], path, index + 1)
                return "".join(out), index + 1
            if char == "\\" and quote == '"':
                if i + 1 == len(text):  # a backslash at the end joins the next line
                    break
                nxt = text[i + 1]
                out.append(_DOUBLE_ESCAPES.get(nxt, "\\" + nxt))
                i += 2
                continue
            out.append(char)
            i += 1
        else:
            out.append("\n")
        index += 1
        if index >= len(lines):
            raise EnvFileError(path, opened, f"the {quote} quote opened here is never closed")
        text = lines[index]


def _unquoted(value: str) -> str:
    match = re.search(r"\s#", value)
    if match:
        value = value[: match.start()]
    return value.rstrip()


def parse_env_file(text: str, path: str) -> dict[str, str]:
    r"""Parse the text of an env file (see the module's docstring for the syntax).

    Args:
        text: the file's contents.
        path: the file's name, for messages.

    Returns:
        The variables, in the order written (a later line wins).

    Raises:
        EnvFileError: a line is invalid; the message names the file and line.

    Example:
        >>> parse_env_file("A=1\nexport B='two words'  # note\n", "x.env")
        {'A': '1', 'B': 'two words'}

    """
    lines = text.replace("\r\n", "\n").split("\n")
    result: dict[str, str] = {}
    index = 0
    while index < len(lines):
        raw = lines[index]
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            index += 1
            continue
        if line.startswith("export ") and "=" in line[7:]:
            line = line[7:].lstrip()
        name, sep, rest = line.partition("=")
        name = name.strip()
        if not sep:
            raise EnvFileError(path, index + 1, f"expected KEY=VALUE (got {raw!r})")
        if not _NAME.fullmatch(name):
            raise EnvFileError(
                path,
                index + 1,
                f"{name!r} is not a variable name: use letters, digits and '_', "
                "not starting with a digit",
            )
        rest = rest.lstrip()
        if rest[:1] in {"'", '"'}:
            value, index = _quoted(lines, index, rest, path)
        else:
            value, index = _unquoted(rest), index + 1
        if "\0" in value:
            raise EnvFileError(path, index, f"the value of {name!r} has a NUL character")
        result[name] = value
    return result


def read_env_file(path: str, key: str) -> dict[str, str]:
    """Read and parse the env file *path*, named by the policy key *key*.

    Raises:
        Unresolved: the file cannot be read or parsed; the message names the
            key, the file and, for a syntax error, the line.

    """
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_ENV_FILE + 1)
    except OSError as exc:
        raise Unresolved(
            key, f"{key!r} names {path!r}, which cannot be read: {exc.strerror}", exc.errno or 5
        ) from None
    if len(data) > MAX_ENV_FILE:
        raise Unresolved(
            key, f"{key!r} names {path!r}, which is larger than 1M; is it an env file?"
        )
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise Unresolved(key, f"{key!r}: {path}:{line}: not valid UTF-8 text", 22) from None
    try:
        return parse_env_file(text, path)
    except EnvFileError as exc:
        raise Unresolved(key, f"{key!r}: {exc}", 22) from None


def env_file_keys(service: Service, key: str) -> list[tuple[str, str]]:
    """Return ``(dotted key, path)`` for each of *service*'s env files."""
    if len(service.env_file) == 1:
        return [(f"{key}.env_file", service.env_file[0])]
    return [(f"{key}.env_file[{i}]", path) for i, path in enumerate(service.env_file)]


def service_environment(
    service: Service, identity: Identity, key: str, base: Mapping[str, str]
) -> dict[str, str]:
    """Return *service*'s environment, built from *base* (nsup's own) as the module says.

    Args:
        service: the service's settings.
        identity: its resolved user, for ``USER`` and ``HOME``.
        key: the service's dotted key, ``"services.web"``, for messages.
        base: nsup's environment.

    Raises:
        Unresolved: an env file cannot be read or parsed.

    """
    if service.env_inherit:
        env = dict(base)
    else:
        env = {name: base[name] for name in KEPT_VARIABLES if name in base}
        env.setdefault("PATH", DEFAULT_PATH)
    if identity.name is not None:
        env["USER"] = identity.name
    if identity.home:
        env["HOME"] = identity.home
    for file_key, path in env_file_keys(service, key):
        env.update(read_env_file(path, file_key))
    env.update(service.env)
    return env
