"""Tests for nsup._policy.units: durations in seconds and sizes in bytes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nsup._policy.units import DURATION_FORMS, SIZE_FORMS, parse_duration, parse_size


class TestParseDuration:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("250ms", 0.25),
            ("5s", 5.0),
            ("2m", 120.0),
            ("1h", 3600.0),
            ("1m30s", 90.0),
            ("1h2m3s4ms", 3723.004),
            ("1.5s", 1.5),
            (".5s", 0.5),
            ("5S", 5.0),
            (" 5s ", 5.0),
            ("5", 5.0),
            ("0.25", 0.25),
            (5, 5.0),
            (0, 0.0),
            (0.25, 0.25),
        ],
    )
    def test_accepted(self, value, expected):
        """Every documented form parses to seconds as a float."""
        result = parse_duration(value)
        assert expected == pytest.approx(result)
        assert type(result) is float

    @pytest.mark.parametrize(
        "value", ["5 sec", "5x", "s", "", "ms5", "-5s", "5s 3", "1e3s", "5min", None, [5], True]
    )
    def test_rejected_form(self, value):
        """Anything else names the accepted forms and the value."""
        with pytest.raises(ValueError, match=r"^expected a duration") as info:
            parse_duration(value)
        assert (f"expected {DURATION_FORMS} (got {value!r})",) == info.value.args

    @pytest.mark.parametrize("value", [-1, -0.5, math.inf, math.nan, 10**400])
    def test_rejected_number(self, value):
        """Negative, infinite and NaN numbers are refused."""
        with pytest.raises(ValueError, match="not negative") as info:
            parse_duration(value)
        assert (
            f"expected a finite duration that is not negative (got {value!r})",
        ) == info.value.args


class TestParseSize:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("64K", 64 * 1024),
            ("256M", 256 * 1024**2),
            ("1G", 1024**3),
            ("2T", 2 * 1024**4),
            ("1.5G", 3 * 1024**3 // 2),
            ("64k", 64 * 1024),
            ("256MiB", 256 * 1024**2),
            ("256mib", 256 * 1024**2),
            ("512B", 512),
            ("4096", 4096),
            (" 1 G ", 1024**3),
            (4096, 4096),
            (0, 0),
            (4096.0, 4096),
            ("123456789012345678901", 123456789012345678901),
        ],
    )
    def test_accepted(self, value, expected):
        """Every documented form parses to an exact int of bytes."""
        result = parse_size(value)
        assert expected == result
        assert type(result) is int

    @pytest.mark.parametrize(
        "value", ["256MB", "1GB", "64Kb", "1P", "G", "", "-1K", "1e3", "64 K B", None, True, [1]]
    )
    def test_rejected_form(self, value):
        """Ambiguous or unknown units are refused with the accepted forms."""
        with pytest.raises(ValueError, match=r"^expected a size such as") as info:
            parse_size(value)
        assert (f"expected {SIZE_FORMS} (got {value!r})",) == info.value.args

    def test_negative(self):
        with pytest.raises(ValueError, match="not negative") as info:
            parse_size(-1)
        assert info.value.args == ("expected a size that is not negative (got -1)",)

    @pytest.mark.parametrize("value", [1.5, math.nan, math.inf])
    def test_fractional_number(self, value):
        with pytest.raises(ValueError, match="whole number") as info:
            parse_size(value)
        assert (f"expected a whole number of bytes (got {value!r})",) == info.value.args


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()))
def test_parsers_only_raise_value_error(value):
    """Any input gives a result or ValueError, never another exception."""
    for parse in (parse_duration, parse_size):
        try:
            result = parse(value)
        except ValueError:
            continue
        assert result >= 0
