"""docs/api.md has a section for every public name, and no section for a name that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

import nsup
import nsup.lowlevel
import nsup.testing

API_MD = Path(__file__).parent.parent / "docs" / "api.md"


def _public() -> set[str]:
    names = {f"nsup.{n}" for n in nsup.__all__}  # loaded on first use: not all in vars() yet
    names -= {"nsup.annotations", "nsup.lowlevel", "nsup.testing", "nsup.pytest_plugin"}
    names |= {
        f"nsup.lowlevel.{n}"
        for n in vars(nsup.lowlevel)
        if n.isidentifier() and not n.startswith("_")
    }
    names |= {f"nsup.testing.{n}" for n in nsup.testing.__all__}
    return names - {"nsup.lowlevel.annotations"}


def test_every_public_name_has_a_section_and_every_section_a_name():
    sections = set(re.findall(r"^### `([\w.]+)`$", API_MD.read_text(), flags=re.MULTILINE))
    assert _public() == sections
