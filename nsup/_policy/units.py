"""Durations and sizes as users write them, parsed into seconds and bytes.

A *duration* is a number of seconds (``5``, ``0.25``) or a string of one or
more ``<number><unit>`` parts with the units ``ms``, ``s``, ``m`` and ``h``:
``"250ms"``, ``"5s"``, ``"2m"``, ``"1h"``, ``"1m30s"``.  A bare numeric string
(``"5"``) is seconds too.

A *size* is a number of bytes (``4096``) or a string ``<number><unit>`` where
the unit is ``K``, ``M``, ``G`` or ``T`` (binary multiples: ``1K`` is 1024
bytes), optionally spelled ``KiB``, ``MiB``, ``GiB``, ``TiB``, or ``B`` for
plain bytes.  Units are case-insensitive.  ``"256MB"`` is refused on purpose:
it reads as a decimal megabyte to some and a binary one to others.

Both parsers refuse negative, infinite and NaN values and raise
:class:`ValueError` with a message that lists the accepted forms.
"""

from __future__ import annotations

import math
import re

__all__ = ["DURATION_FORMS", "SIZE_FORMS", "parse_duration", "parse_size"]

#: What a duration may look like, for error messages ("must be <this>").
DURATION_FORMS = "a duration such as '250ms', '5s', '2m', '1h' or '1m30s', or a number of seconds"
#: What a size may look like, for error messages ("must be <this>").
SIZE_FORMS = "a size such as '64K', '256M' or '1G' (binary multiples), or a number of bytes"

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION_PART = re.compile(rf"({_NUMBER})(ms|s|m|h)", re.IGNORECASE)
_DURATION = re.compile(rf"(?:{_NUMBER}(?:ms|s|m|h))+", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(rf"({_NUMBER})\s*(?:([KMGT])(?:iB)?|B)?", re.IGNORECASE)
_SIZE_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_duration(value: object) -> float:
    """Return *value*, a duration, in seconds.

    Args:
        value: a number of seconds (int or float, not bool) or a string such
            as ``"250ms"``, ``"5s"``, ``"2m"``, ``"1h"``, ``"1m30s"`` or ``"5"``.

    Returns:
        The duration in seconds, finite and not negative.

    Raises:
        ValueError: *value* is not one of the accepted forms, or is negative,
            infinite or NaN.

    Example:
        >>> parse_duration("1m30s")
        90.0

    """
    seconds: float
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(_NUMBER, text):
            seconds = float(text)
        elif _DURATION.fullmatch(text):
            seconds = sum(
                float(number) * _DURATION_UNITS[unit.lower()]
                for number, unit in _DURATION_PART.findall(text)
            )
        else:
            raise ValueError(f"expected {DURATION_FORMS} (got {value!r})")
    else:
        # A wrong type is just another wrong value here: callers catch ValueError.
        raise ValueError(f"expected {DURATION_FORMS} (got {value!r})")  # noqa: TRY004
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a finite duration that is not negative (got {value!r})")
    return seconds


def parse_size(value: object) -> int:
    """Return *value*, a size, in bytes.

    Args:
        value: a number of bytes (an int, or a float with no fraction) or a
            string such as ``"64K"``, ``"256M"``, ``"1G"``, ``"2T"``,
            ``"256MiB"``, ``"512B"`` or ``"4096"``.  Multiples are binary.

    Returns:
        The size in bytes, not negative (a fractional result is rounded down).

    Raises:
        ValueError: *value* is not one of the accepted forms, or is negative,
            infinite or NaN.

    Example:
        >>> parse_size("256M")
        268435456

    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"expected a whole number of bytes (got {value!r})")
        if value < 0:
            raise ValueError(f"expected a size that is not negative (got {value!r})")
        return int(value)
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match:
            number_text, unit = match.groups()
            multiple = _SIZE_UNITS[unit.lower()] if unit else 1
            from fractions import Fraction  # noqa: PLC0415 - exact sizes; most policies have none

            return int(Fraction(number_text) * multiple)
    raise ValueError(f"expected {SIZE_FORMS} (got {value!r})")
