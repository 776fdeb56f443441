"""Find the line of each dotted key in a TOML document, for error messages.

``tomllib`` returns plain dicts without positions, so after a document has
parsed, this module scans its text once more and records where each key is
defined: table headers (``[services.web]``), keys (``restart = ...``, also
dotted ones), arrays of tables (``[[services.web.mounts]]`` gives
``services.web.mounts[0]``) and the elements of arrays (``mounts = [ {...},
{...} ]`` gives ``services.web.mounts[1]`` on the line of the second table).
Keys inside an inline table share its line, which TOML requires to be one.

It is a scanner, not a parser: it knows strings, comments and brackets, and
nothing about values.  That is enough because it only ever sees text that
``tomllib`` has already accepted.  :func:`line_of` falls back to the closest
enclosing key it knows, so a problem is always reported near its cause.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import re

from .validate import key_join

__all__ = ["key_lines", "line_of"]

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_SPACE = " \t"


def _unescape(body: str) -> str:
    """Decode a basic string's escapes (JSON's are a near-enough subset of TOML's)."""
    try:
        result = json.loads(f'"{body}"')
    except ValueError:
        return body
    return result if isinstance(result, str) else body


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.newlines = [i for i, c in enumerate(text) if c == "\n"]
        self.lines: dict[str, int] = {}

    def line(self, pos: int) -> int:
        return bisect.bisect_left(self.newlines, pos) + 1

    def record(self, key: str, pos: int) -> None:
        self.lines.setdefault(key, self.line(pos))

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def skip_space(self, *, newlines: bool) -> None:
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c in _SPACE or (newlines and c in "\r\n"):
                self.pos += 1
            elif c == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def string(self) -> str:
        """Read a string of any of TOML's four kinds at ``pos``; return its raw body."""
        for quote in ('"""', "'''", '"', "'"):
            if self.text.startswith(quote, self.pos):
                break
        start = self.pos + len(quote)
        i = start
        while True:
            i = self.text.index(quote[0], i)
            if quote[0] == '"':
                backslashes = len(self.text[start:i]) - len(self.text[start:i].rstrip("\\"))
                if backslashes % 2:
                    i += 1
                    continue
            if self.text.startswith(quote, i):
                # A multi-line string may end with up to two extra quotes.
                end = i + len(quote)
                while len(quote) == 3 and self.text.startswith(quote[0], end):
                    end += 1
                self.pos = end
                return self.text[start : end - len(quote)]
            i += 1

    def key(self) -> list[str]:
        """Read a dotted key at ``pos``; stop before ``=`` or ``]``."""
        parts = []
        while True:
            self.skip_space(newlines=False)
            if self.peek() in ('"', "'"):
                quote = self.peek()
                body = self.string()
                parts.append(_unescape(body) if quote == '"' else body)
            else:
                match = _BARE.match(self.text, self.pos)
                if not match:
                    raise ValueError(self.pos)
                parts.append(match[0])
                self.pos = match.end()
            self.skip_space(newlines=False)
            if self.peek() != ".":
                return parts
            self.pos += 1

    def value(self, key: str) -> None:
        """Skip a value at ``pos``, recording the start of each element of a top array."""
        depth = 0
        expect_element = False
        index = 0
        while self.pos < len(self.text):
            self.skip_space(newlines=depth > 0)
            c = self.peek()
            if not c or (depth == 0 and c in "\r\n"):
                return
            if depth == 1 and expect_element and c not in ",]":
                self.record(f"{key}[{index}]", self.pos)
                index += 1
                expect_element = False
            if c in "\"'":
                self.string()
                continue
            if c in "[{":
                if depth == 0 and c == "[":
                    expect_element = True
                depth += 1
            elif c in "]}":
                depth -= 1
                if depth == 0:
                    self.pos += 1
                    return
            elif c == "," and depth == 1:
                expect_element = True
            self.pos += 1

    def document(self) -> None:
        prefix = ""
        array_counts: dict[str, int] = {}
        while True:
            self.skip_space(newlines=True)
            if self.pos >= len(self.text):
                return
            start = self.pos
            if self.peek(2) == "[[":
                self.pos += 2
                path = key_join(*self.key())
                index = array_counts.get(path, 0)
                array_counts[path] = index + 1
                prefix = f"{path}[{index}]"
                self.pos = self.text.index("]]", self.pos) + 2
                self.record(path, start)
                self.record(prefix, start)
            elif self.peek() == "[":
                self.pos += 1
                parts = self.key()
                prefix = key_join(*parts)
                self.pos = self.text.index("]", self.pos) + 1
                for n in range(1, len(parts) + 1):
                    self.record(key_join(*parts[:n]), start)
            else:
                parts = self.key()
                for n in range(1, len(parts) + 1):
                    sub = key_join(*parts[:n])
                    self.record(f"{prefix}.{sub}" if prefix else sub, start)
                key = f"{prefix}.{key_join(*parts)}" if prefix else key_join(*parts)
                self.pos = self.text.index("=", self.pos) + 1
                self.value(key)


def key_lines(text: str) -> dict[str, int]:
    """Return dotted key -> line (1-based) for every key defined in the TOML *text*.

    Args:
        text: a TOML document; best results when ``tomllib`` accepts it.

    Returns:
        What the scan found before the end of the text, or before the first
        construct it could not follow.

    """
    scanner = _Scanner(text)
    with contextlib.suppress(ValueError, IndexError):
        scanner.document()
    return scanner.lines


_LAST_PART = re.compile(r'(?:\.(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*")|\[\d+\])$')


def line_of(lines: dict[str, int], key: str) -> int | None:
    """Return the line of *key*, or of the closest enclosing key that has one.

    Args:
        lines: the mapping from :func:`key_lines`.
        key: a dotted key such as ``services.web.mounts[1].target``.

    Returns:
        The line, or ``None`` when neither the key nor any parent was found.

    """
    while key:
        if key in lines:
            return lines[key]
        shorter = _LAST_PART.sub("", key)
        if shorter == key:
            return None
        key = shorter
    return None
