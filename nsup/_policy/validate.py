"""Validators for policy values: check one raw TOML value, return it typed.

Each validator is a small private callable class made by a public factory
(``one_of("always", "never")``, ``duration(positive=True)``), as in
``attrs.validators``, frozen with a readable ``repr`` (``_Plain``); that makes the schema
tables in :mod:`nsup._policy_schema` plain data.  A validator is called as
``validator(key, value)`` with the dotted key of the value, and either returns
the typed value or raises :class:`Invalid`.

:class:`Invalid` carries ``(key, message)`` pairs rather than one message, so
a table validator can report every bad key inside it at once.  Messages follow
one template, ``'<key>' must be <expected> (got <value>)``, where the value is
shown as the user wrote it (``true``, not ``True``).
"""

from __future__ import annotations

import math
import re
import shlex
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .._clone.caps import check_capabilities
from .._clone.namespaces import NAMESPACES, check_namespaces
from .bounds import MAX_DURATION, MAX_SIZE
from .units import DURATION_FORMS, SIZE_FORMS, parse_duration, parse_size

if TYPE_CHECKING:
    import socket

__all__ = [
    "Invalid",
    "Validator",
    "absolute_path",
    "boolean",
    "capabilities",
    "check_table",
    "command",
    "dependencies",
    "did_you_mean",
    "duration",
    "each_item",
    "env_table",
    "file_mode",
    "host_port",
    "id_map",
    "id_or_name",
    "id_or_name_list",
    "integer",
    "integer_list",
    "key_join",
    "listen_address",
    "namespaces",
    "number",
    "one_of",
    "parse_listen",
    "path_list",
    "regex",
    "show",
    "signal_",
    "size",
    "socket_name",
    "string",
    "string_list",
    "unknown_key_hint",
]

T = TypeVar("T")
Validator = Callable[[str, object], Any]
Problem = tuple[str, str]


class Invalid(Exception):  # noqa: N818 - internal signal, not an error users see
    """One or more problems, as ``(dotted key, message)`` pairs."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__(problems)
        self.problems = list(problems)

    @classmethod
    def at(cls, key: str, message: str) -> Invalid:
        """Return an :class:`Invalid` holding one problem."""
        return cls([(key, message)])


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


class _Plain:
    """What ``attrs.frozen`` gave the validator classes, without building ~25 classes at import.

    A subclass annotates its fields, in constructor order (after its bases'
    fields; ``ClassVar`` ones are not fields), and lists them in
    ``__slots__``; an instance is built positionally, cannot be changed,
    compares and hashes by its fields and shows them in ``repr``, as an attrs
    class does.  (attrs generates each class's methods when the module loads,
    which made every ``nsup check`` pay a few milliseconds.)
    """

    __slots__ = ()

    def __init__(self, *values: object) -> None:
        names = self._names()
        if len(values) != len(names):
            raise TypeError(f"{type(self).__name__} takes {len(names)} values (got {len(values)})")
        for name, value in zip(names, values, strict=True):
            object.__setattr__(self, name, value)

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = tuple(
                name
                for c in reversed(cls.__mro__)
                for name, kind in c.__dict__.get("__annotations__", {}).items()  # noqa: RUF063 - importing inspect would cost what this saves
                if not str(kind).startswith("ClassVar")
            )
        return names

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._names())

    def __setattr__(self, name: str, value: object) -> None:
        """Refuse: a validator is frozen."""
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __repr__(self) -> str:
        """Show the class and its fields, as attrs does."""
        fields = ", ".join(f"{n}={v!r}" for n, v in zip(self._names(), self._values(), strict=True))
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        """Equal to an instance of the same class with equal fields."""
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Plain)  # noqa: S101 - checked just above
        return self._values() == other._values()

    def __hash__(self) -> int:
        """Hash the fields, as a frozen attrs class does."""
        return hash((type(self), self._values()))


def show(value: object) -> str:
    """Return *value* as a user wrote it in TOML where that differs from ``repr``."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return repr(value)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def key_join(*parts: str) -> str:
    """Join key parts into a dotted key, quoting parts that TOML would quote."""
    out = []
    for part in parts:
        if _BARE_KEY.fullmatch(part):
            out.append(part)
        else:
            escaped = part.replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'"{escaped}"')
    return ".".join(out)


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or ``""``."""
    import difflib  # noqa: PLC0415 - only for a typo; `nsup check` of a good policy never needs it

    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_key_hint(word: str, choices: Sequence[str]) -> str:
    """Return a did-you-mean for *word*, or else the list of known keys."""
    return did_you_mean(word, choices) or f"; known keys are {_quote_list(choices, 'and')}"


def _quote_list(choices: Sequence[str], last: str = "or") -> str:
    quoted = [repr(c) for c in choices]
    if len(quoted) == 1:
        return quoted[0]
    return f"{', '.join(quoted[:-1])} {last} {quoted[-1]}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_minimum(
    key: str, value: float, minimum: float | None, *, exclusive: bool, raw: object
) -> None:
    """Raise :class:`Invalid` when *value* (written as *raw*) is below *minimum*."""
    if minimum is None:
        return
    got = f"(got {show(raw)})"
    if exclusive and value <= minimum:
        if minimum == 0:
            raise Invalid.at(key, f"{key!r} must be positive {got}")
        raise Invalid.at(key, f"{key!r} must be more than {minimum:g} {got}")
    if not exclusive and value < minimum:
        if minimum == 0:
            raise Invalid.at(key, f"{key!r} must not be negative {got}")
        if minimum == 1 and _is_int(raw):
            raise Invalid.at(key, f"{key!r} must be positive {got}")
        raise Invalid.at(key, f"{key!r} must be at least {minimum:g} {got}")


def _no_nul(key: str, value: str) -> str:
    if "\0" in value:
        raise Invalid.at(key, f"{key!r} must not contain a NUL character (got {value!r})")
    return value


class _BooleanValidator(_Plain):
    __slots__ = ()

    def __call__(self, key: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise Invalid.at(key, f"{key!r} must be true or false (got {show(value)})")
        return value


def boolean() -> Validator:
    """Return a validator for ``true``/``false``."""
    return _BooleanValidator()


class _IntegerValidator(_Plain):
    __slots__ = ("maximum", "minimum")

    minimum: int | None
    maximum: int | None

    def __call__(self, key: str, value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise Invalid.at(key, f"{key!r} must be an integer (got {show(value)})")
        _check_minimum(key, value, self.minimum, exclusive=False, raw=value)
        if self.maximum is not None and value > self.maximum:
            raise Invalid.at(key, f"{key!r} must be at most {self.maximum} (got {value})")
        return value


def integer(minimum: int | None = None, maximum: int | None = None) -> Validator:
    """Return a validator for an integer (not a bool) within the bounds."""
    return _IntegerValidator(minimum, maximum)


class _NumberValidator(_Plain):
    __slots__ = ("exclusive_minimum", "maximum", "minimum")

    minimum: float | None
    maximum: float | None
    exclusive_minimum: bool

    def __call__(self, key: str, value: object) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise Invalid.at(key, f"{key!r} must be a number (got {show(value)})")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise Invalid.at(key, f"{key!r} must be a finite number (got {show(value)})")
        _check_minimum(key, number, self.minimum, exclusive=self.exclusive_minimum, raw=value)
        if self.maximum is not None and number > self.maximum:
            raise Invalid.at(key, f"{key!r} must be at most {self.maximum:g} (got {show(value)})")
        return number


def number(
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    exclusive_minimum: bool = False,
) -> Validator:
    """Return a validator for a finite int or float, returned as a float."""
    return _NumberValidator(minimum, maximum, exclusive_minimum)


class _UnitValidator(_Plain):
    """A number or a string with a unit, parsed by ``parse``; the forms go in the message."""

    __slots__ = ("positive",)

    positive: bool
    forms: ClassVar[str]
    maximum: ClassVar[float]
    too_large: ClassVar[str]

    @staticmethod
    def parse(value: object) -> float:
        raise NotImplementedError

    def __call__(self, key: str, value: object) -> float:
        if _is_number(value):
            _NumberValidator(0.0, None, self.positive)(key, value)
        try:
            result = self.parse(value)
        except ValueError:
            raise Invalid.at(key, f"{key!r} must be {self.forms} (got {show(value)})") from None
        if self.positive and result == 0:
            raise Invalid.at(key, f"{key!r} must be positive (got {show(value)})")
        if result > self.maximum:
            raise Invalid.at(key, f"{key!r} must be at most {self.too_large} (got {show(value)})")
        return result


class _DurationValidator(_UnitValidator):
    __slots__ = ()

    forms = DURATION_FORMS
    maximum = MAX_DURATION
    too_large = "365 days ('8760h')"
    parse = staticmethod(parse_duration)


def duration(*, positive: bool = True) -> Validator:
    """Return a validator for a duration, returned in float seconds.

    Args:
        positive: refuse zero as well as negative durations.

    Returns:
        The validator.

    """
    return _DurationValidator(positive)


class _SizeValidator(_UnitValidator):
    __slots__ = ()

    forms = SIZE_FORMS
    maximum = MAX_SIZE
    too_large = "1 PiB ('1048576G')"
    parse = staticmethod(parse_size)


def size(*, positive: bool = True) -> Validator:
    """Return a validator for a size, returned in int bytes."""
    return _SizeValidator(positive)


class _StringValidator(_Plain):
    __slots__ = ("max_length",)

    max_length: int | None

    def __call__(self, key: str, value: object) -> str:
        if not isinstance(value, str):
            raise Invalid.at(key, f"{key!r} must be a string (got {show(value)})")
        if not value:
            raise Invalid.at(key, f"{key!r} must not be empty")
        if self.max_length is not None and len(value.encode(errors="surrogatepass")) > (
            self.max_length
        ):
            raise Invalid.at(
                key, f"{key!r} must be at most {self.max_length} bytes long (got {value!r})"
            )
        return _no_nul(key, value)


def string(max_length: int | None = None) -> Validator:
    """Return a validator for a non-empty string without NUL characters."""
    return _StringValidator(max_length)


class _AbsolutePathValidator(_Plain):
    __slots__ = ("choices",)

    choices: tuple[str, ...]

    def __call__(self, key: str, value: object) -> str:
        if isinstance(value, str) and value in self.choices:
            return value
        if not isinstance(value, str) or not value.startswith("/"):
            expected = "an absolute path"
            if self.choices:
                expected = f"{', '.join(map(repr, self.choices))} or an absolute file path"
            raise Invalid.at(key, f"{key!r} must be {expected} (got {show(value)})")
        return _no_nul(key, value)


def absolute_path(*choices: str) -> Validator:
    """Return a validator for an absolute path, or one of the words *choices*."""
    return _AbsolutePathValidator(choices)


class _OneOfValidator(_Plain):
    __slots__ = ("choices",)

    choices: tuple[str, ...]

    def __call__(self, key: str, value: object) -> str:
        if not isinstance(value, str) or value not in self.choices:
            choices = ", ".join(map(repr, self.choices))
            hint = did_you_mean(value, self.choices) if isinstance(value, str) else ""
            raise Invalid.at(key, f"{key!r} must be one of {choices} (got {show(value)}){hint}")
        return value


def one_of(*choices: str) -> Validator:
    """Return a validator for one of the strings *choices*."""
    return _OneOfValidator(choices)


def _list_of_strings(key: str, value: object, what: str) -> list[str]:
    if not isinstance(value, list):
        raise Invalid.at(key, f"{key!r} must be {what} (got {show(value)})")
    problems = []
    for i, item in enumerate(value):
        try:
            _StringValidator(None)(f"{key}[{i}]", item)
        except Invalid as exc:
            problems.extend(exc.problems)
    if problems:
        raise Invalid(problems)
    return value


class _StringListValidator(_Plain):
    __slots__ = ()

    def __call__(self, key: str, value: object) -> tuple[str, ...]:
        return tuple(dict.fromkeys(_list_of_strings(key, value, "a list of strings")))


def string_list() -> Validator:
    """Return a validator for a list of strings, returned as a tuple without repeats."""
    return _StringListValidator()


class _CommandValidator(_Plain):
    __slots__ = ()

    def __call__(self, key: str, value: object) -> tuple[str, ...]:
        if isinstance(value, str):
            try:
                argv = shlex.split(value)
            except ValueError as exc:
                raise Invalid.at(
                    key, f"{key!r} could not be split like a shell would: {exc} (got {value!r})"
                ) from None
            argv = [_no_nul(key, arg) for arg in argv]
        else:
            argv = _list_of_strings(key, value, "a list of strings or a command line string")
        if not argv:
            raise Invalid.at(key, f"{key!r} must not be empty")
        return tuple(argv)


def command() -> Validator:
    """Return a validator for argv: a list of strings, or a string split with shlex."""
    return _CommandValidator()


_SIGNAL_NAMES = tuple(sorted(s.name for s in signal.Signals))


class _SignalValidator(_Plain):
    __slots__ = ()

    def __call__(self, key: str, value: object) -> signal.Signals:
        expected = "a signal name such as 'SIGTERM' or 'TERM', or a signal number"
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return signal.Signals(value)
            except ValueError:
                raise Invalid.at(key, f"{key!r} must be {expected} (got {value})") from None
        if not isinstance(value, str):
            raise Invalid.at(key, f"{key!r} must be {expected} (got {show(value)})")
        name = value.strip().upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        if name in _SIGNAL_NAMES:
            return signal.Signals[name]
        hint = did_you_mean(name, _SIGNAL_NAMES)
        raise Invalid.at(key, f"{key!r} must be {expected} (got {value!r}){hint}")


def signal_() -> Validator:
    """Return a validator for a signal: ``"SIGTERM"``, ``"TERM"`` or a number."""
    return _SignalValidator()


class _RegexValidator(_Plain):
    __slots__ = ()

    def __call__(self, key: str, value: object) -> re.Pattern[str]:
        text = _StringValidator(None)(key, value)
        try:
            return re.compile(text)
        except (re.error, OverflowError, RecursionError) as exc:
            raise Invalid.at(
                key, f"{key!r} must be a valid regular expression: {exc} (got {text!r})"
            ) from None


def regex() -> Validator:
    """Return a validator for a regular expression, returned compiled."""
    return _RegexValidator()


_HOST_PORT = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]/]+)):(?P<port>[0-9]{1,5})"
)


class _HostPortValidator(_Plain):
    __slots__ = ()

    def __call__(self, key: str, value: object) -> tuple[str, int]:
        match = _HOST_PORT.fullmatch(value) if isinstance(value, str) else None
        port = int(match["port"]) if match else 0
        if not match or not 1 <= port <= 65535:
            raise Invalid.at(
                key,
                f"{key!r} must be 'host:port' with a port from 1 to 65535 (got {show(value)})",
            )
        return (match["v6"] or match["host"], port)


def host_port() -> Validator:
    """Return a validator for ``"host:port"`` (``"[::1]:80"`` for IPv6), as a pair."""
    return _HostPortValidator()


class _NamespacesValidator(_Plain):
    __slots__ = ()

    def __call__(self, key: str, value: object) -> frozenset[str]:
        names = _list_of_strings(key, value, "a list of namespace names")
        try:
            return check_namespaces(names, key)
        except ValueError as exc:
            unknown = [n for n in names if n not in NAMESPACES]
            raise Invalid.at(key, f"{exc}{did_you_mean(unknown[0], sorted(NAMESPACES))}") from None


def namespaces() -> Validator:
    """Return a validator for a list of namespace names, returned as a frozenset."""
    return _NamespacesValidator()


_ID_MAX = 2**32 - 1


class _IdMapValidator(_Plain):
    __slots__ = ()

    def __call__(self, key: str, value: object) -> tuple[tuple[int, int, int], ...]:
        if not isinstance(value, list):
            raise Invalid.at(
                key, f"{key!r} must be a list of [inside, outside, count] (got {show(value)})"
            )
        result = []
        problems = []
        for i, entry in enumerate(value):
            ok = (
                isinstance(entry, list)
                and len(entry) == 3
                and all(_is_int(n) and 0 <= n <= _ID_MAX for n in entry)
                and entry[2] > 0
            )
            if ok:
                result.append((entry[0], entry[1], entry[2]))
            else:
                message = (
                    f"'{key}[{i}]' must be [inside, outside, count]: three ids from 0 "
                    f"to {_ID_MAX}, count at least 1 (got {show(entry)})"
                )
                problems.append((f"{key}[{i}]", message))
        if problems:
            raise Invalid(problems)
        return tuple(result)


def id_map() -> Validator:
    """Return a validator for uid/gid map lines, ``[[inside, outside, count], ...]``."""
    return _IdMapValidator()


class _EnvValidator(_Plain):
    __slots__ = ()

    def __call__(self, key: str, value: object) -> dict[str, str]:
        if not isinstance(value, dict):
            raise Invalid.at(key, f"{key!r} must be a table of strings (got {show(value)})")
        problems = []
        for name, item in value.items():
            item_key = f"{key}.{key_join(str(name))}"
            if not isinstance(name, str) or not name or "=" in name or "\0" in name:
                problems.append(
                    (item_key, f"{item_key!r} is not a valid variable name (got {name!r})")
                )
            elif not isinstance(item, str):
                problems.append(
                    (item_key, f"{item_key!r} must be a string (got {show(item)}); quote it")
                )
            elif "\0" in item:
                problems.append((item_key, f"{item_key!r} must not contain a NUL character"))
        if problems:
            raise Invalid(problems)
        return value


def env_table() -> Validator:
    """Return a validator for a table of environment variables (strings to strings)."""
    return _EnvValidator()


_MODE = re.compile(r"0?[oO]?([0-7]{1,4})")


class _FileModeValidator(_Plain):
    __slots__ = ("maximum",)

    maximum: int

    def __call__(self, key: str, value: object) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= self.maximum:
            return value
        match = _MODE.fullmatch(value) if isinstance(value, str) else None
        if match is None or int(match[1], 8) > self.maximum:
            what = "a file mode" if self.maximum > 0o777 else "a umask"
            example = "'0755'" if self.maximum > 0o777 else "'027'"
            raise Invalid.at(
                key,
                f"{key!r} must be {what}: an octal string such as {example} "
                f"or an integer from 0 to {self.maximum} (got {show(value)})",
            )
        return int(match[1], 8)


def file_mode(maximum: int = 0o7777) -> Validator:
    """Return a validator for a file mode (or a umask, with ``maximum=0o777``), ``"0755"`` or ``493``, as an int."""
    return _FileModeValidator(maximum)


# What useradd and groupadd accept, and more: no ':', no newline, not starting with '-' or '+'.
_ID_NAME = re.compile(r"[^\s:,+\-][^\s:,]{0,255}")


class _IdOrNameValidator(_Plain):
    __slots__ = ("maximum",)

    maximum: int

    def __call__(self, key: str, value: object) -> int | str:
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if _is_int(value) and 0 <= value <= self.maximum:  # type: ignore[operator]  # checked to be an int
            return value  # type: ignore[return-value]  # checked to be an int
        if isinstance(value, str) and _ID_NAME.fullmatch(value):
            return value
        raise Invalid.at(
            key,
            f"{key!r} must be a name such as 'www-data' or a number from 0 to "
            f"{self.maximum} (got {show(value)})",
        )


def id_or_name(maximum: int) -> Validator:
    """Return a validator for a user or group: a name, or a number up to *maximum*."""
    return _IdOrNameValidator(maximum)


def each_item(key: str, items: list[object], check: Validator) -> list[Any]:
    """Check each of *items* as ``KEY[i]``; return the typed items, or raise every problem at once."""
    result = []
    problems: list[Problem] = []
    for i, item in enumerate(items):
        try:
            result.append(check(f"{key}[{i}]", item))
        except Invalid as exc:
            problems += exc.problems
    if problems:
        raise Invalid(problems)
    return result


class _IdOrNameListValidator(_Plain):
    __slots__ = ("item",)

    item: _IdOrNameValidator

    def __call__(self, key: str, value: object) -> tuple[int | str, ...]:
        if not isinstance(value, list):
            raise Invalid.at(
                key, f"{key!r} must be a list of group names or numbers (got {show(value)})"
            )
        return tuple(dict.fromkeys(each_item(key, value, self.item)))


def id_or_name_list(maximum: int) -> Validator:
    """Return a validator for a list of groups (names or numbers), as a tuple without repeats."""
    return _IdOrNameListValidator(_IdOrNameValidator(maximum))


class _PathListValidator(_Plain):
    __slots__ = ()

    def __call__(self, key: str, value: object) -> tuple[str, ...]:
        if isinstance(value, str):
            return (_AbsolutePathValidator(())(key, value),)
        if not isinstance(value, list):
            raise Invalid.at(
                key, f"{key!r} must be an absolute path or a list of them (got {show(value)})"
            )
        return tuple(each_item(key, value, _AbsolutePathValidator(())))


def path_list() -> Validator:
    """Return a validator for one absolute path or a list of them, returned as a tuple."""
    return _PathListValidator()


class _CapabilitiesValidator(_Plain):
    __slots__ = ()

    def __call__(self, key: str, value: object) -> frozenset[str]:
        names = _list_of_strings(key, value, "a list of capability names")
        try:
            return check_capabilities(names, key)
        except ValueError as exc:
            raise Invalid.at(key, str(exc)) from None


def capabilities() -> Validator:
    """Return a validator for capability names, returned as canonical ``CAP_*`` names."""
    return _CapabilitiesValidator()


def _unknown_keys(
    key: str,
    value: dict[object, object],
    fields: Mapping[str, Validator],
    key_of: Callable[[str], str],
    forbidden: Mapping[str, str] | None,
) -> list[Problem]:
    problems: list[Problem] = []
    for name in value:
        if not isinstance(name, str):
            problems.append((key, f"{key!r} has a key that is not a string ({name!r})"))
        elif forbidden and name in forbidden:
            problems.append((key_of(name), f"{key_of(name)!r} is not allowed: {forbidden[name]}"))
        elif name not in fields:
            hint = unknown_key_hint(name, list(fields))
            problems.append((key_of(name), f"{key_of(name)!r} is not a known key{hint}"))
    return problems


def check_table(  # noqa: PLR0913 - each argument is one independent rule
    key: str,
    value: object,
    fields: Mapping[str, Validator],
    *,
    required: Sequence[str] = (),
    key_of: Callable[[str], str] | None = None,
    forbidden: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], list[Problem]]:
    """Check every key of the table *value* and return what is valid plus the problems.

    Args:
        key: the dotted key of the table itself.
        value: the raw table.
        fields: name -> validator for each key the table may hold.
        required: names that must be present.
        key_of: maps a name in the table to its dotted key (default
            ``key + "." + name``); ``[defaults]`` merging needs another rule.
        forbidden: name -> reason, for keys that are known but not allowed here.

    Returns:
        ``(typed, problems)``: the validated values by name, for the keys that
        were present and valid, and the problems found.

    Raises:
        Invalid: *value* is not a table at all.

    """

    def default_key_of(name: str) -> str:
        return f"{key}.{key_join(name)}" if key else key_join(name)

    key_of = key_of or default_key_of
    if not isinstance(value, dict):
        raise Invalid.at(key, f"{key!r} must be a table (got {show(value)})")
    typed: dict[str, Any] = {}
    problems = _unknown_keys(key, value, fields, key_of, forbidden)
    for name in required:
        if name not in value:
            problems.append((key, f"{key!r} is missing the required key {name!r}"))
    for name, check in fields.items():
        if name in value:
            try:
                typed[name] = check(key_of(name), value[name])
            except Invalid as exc:
                problems.extend(exc.problems)
    return typed, problems


class _IntegerListValidator(_Plain):
    __slots__ = ("item",)

    item: _IntegerValidator

    def __call__(self, key: str, value: object) -> tuple[int, ...]:
        if not isinstance(value, list):
            raise Invalid.at(key, f"{key!r} must be a list of integers (got {show(value)})")
        problems: list[Problem] = []
        result = []
        for i, item in enumerate(value):
            try:
                result.append(self.item(f"{key}[{i}]", item))
            except Invalid as exc:
                problems.extend(exc.problems)
        if problems:
            raise Invalid(problems)
        return tuple(dict.fromkeys(result))


def integer_list(minimum: int | None = None, maximum: int | None = None) -> Validator:
    """Return a validator for a list of integers within the bounds, returned as a tuple without repeats."""
    return _IntegerListValidator(_IntegerValidator(minimum, maximum))


class _DependenciesValidator(_Plain):
    __slots__ = ("conditions",)

    conditions: tuple[str, ...]

    def __call__(self, key: str, value: object) -> dict[str, str]:
        if isinstance(value, list):
            names = _list_of_strings(
                key, value, "a list of service names or a table of service = condition"
            )
            return dict.fromkeys(names, "ready")
        if not isinstance(value, dict):
            raise Invalid.at(
                key,
                f"{key!r} must be a list of service names or a table of service = condition, "
                f'such as {{ db = "ready" }} (got {show(value)})',
            )
        problems: list[Problem] = []
        check = _OneOfValidator(self.conditions)
        for name, condition in value.items():
            try:
                check(f"{key}.{key_join(str(name))}", condition)
            except Invalid as exc:
                problems.extend(exc.problems)
        if problems:
            raise Invalid(problems)
        return dict(value)


def dependencies(*conditions: str) -> Validator:
    """Return a validator for ``depends_on``: a list of names (each "ready"), or name -> condition."""
    return _DependenciesValidator(conditions)


_LISTEN_FORMS = (
    "'IP:PORT' ('127.0.0.1:8080', '0.0.0.0:80', '[::1]:8080'), an absolute path "
    "for a Unix socket, or '@NAME' for an abstract Unix socket"
)


def parse_listen(text: str) -> tuple[socket.AddressFamily, str | tuple[str, int]]:
    """Parse a ``sockets[].listen`` value into a socket family and a ``bind()`` address.

    ``localhost`` stands for ``127.0.0.1``; other host names are refused, as
    systemd's ``ListenStream=`` refuses them, so binding never waits on DNS.

    Raises:
        ValueError: *text* has none of the accepted forms.

    """
    import ipaddress  # noqa: PLC0415 - only for a policy with sockets
    import socket  # noqa: PLC0415

    if text.startswith("/"):
        if len(text.encode()) > _SUN_PATH_MAX or "\0" in text:
            raise ValueError(text)
        return socket.AF_UNIX, text
    if text.startswith("@") and len(text) > 1:
        if len(text.encode()) > _SUN_PATH_MAX:
            raise ValueError(text)
        return socket.AF_UNIX, "\0" + text[1:]
    match = _HOST_PORT.fullmatch(text)
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise ValueError(text)
    host = "127.0.0.1" if match["host"] == "localhost" else match["v6"] or match["host"]
    address = ipaddress.ip_address(host)  # ValueError for a name
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return family, (str(address), int(match["port"]))


# sun_path holds 108 bytes including the terminating NUL (an abstract name has none, but keep it simple).
_SUN_PATH_MAX = 107


class _ListenValidator(_Plain):
    __slots__ = ()

    def __call__(self, key: str, value: object) -> str:
        if not isinstance(value, str):
            raise Invalid.at(key, f"{key!r} must be {_LISTEN_FORMS} (got {show(value)})")
        try:
            parse_listen(value)
        except ValueError:
            hint = ""
            match = _HOST_PORT.fullmatch(value)
            if value.startswith(("/", "@")):
                hint = f"; a socket path is at most {_SUN_PATH_MAX} bytes"
            elif match and not 1 <= int(match["port"]) <= 65535:
                hint = "; the port must be from 1 to 65535"
            elif match:
                hint = "; write an IP address, not a host name"
            raise Invalid.at(
                key, f"{key!r} must be {_LISTEN_FORMS} (got {value!r}){hint}"
            ) from None
        return value


def listen_address() -> Validator:
    """Return a validator for a socket to listen on: ``IP:PORT``, a path, or ``@abstract``."""
    return _ListenValidator()


# systemd's rule for FileDescriptorName=: printable ASCII but ':', at most 255 characters.
_FD_NAME = re.compile(r"[!-9;-~]{1,255}")


class _SocketNameValidator(_Plain):
    __slots__ = ()

    def __call__(self, key: str, value: object) -> str:
        if not isinstance(value, str) or not _FD_NAME.fullmatch(value):
            raise Invalid.at(
                key,
                f"{key!r} must be 1 to 255 printable ASCII characters without spaces or ':' "
                f"(it goes in LISTEN_FDNAMES, which ':' separates) (got {show(value)})",
            )
        return value


def socket_name() -> Validator:
    """Return a validator for a name in ``LISTEN_FDNAMES``."""
    return _SocketNameValidator()
