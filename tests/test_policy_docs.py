"""docs/policy.md must list every key the model has, with the model's default.

Each reference table in the document sits under a heading naming a table of
the policy (``## `services.NAME.backoff` ``).  This test parses every row,
reads the default and example columns as TOML, runs them through the key's
validator, and compares the default with the model class's default.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import attrs
import pytest

from nsup._mount import Mount
from nsup._policy.model import (
    RLIMITS,
    Backoff,
    HealthProbe,
    Limits,
    OutputFile,
    Probe,
    Service,
    Socket,
    Stop,
    SupervisorConfig,
)
from nsup._policy.schema import (
    BACKOFF_FIELDS,
    HEALTH_FIELDS,
    LIMITS_FIELDS,
    MOUNT_FIELDS,
    OUTPUT_FIELDS,
    READY_FIELDS,
    SERVICE_FIELDS,
    SOCKET_FIELDS,
    STOP_FIELDS,
    SUPERVISOR_FIELDS,
)

DOC = Path(__file__).parent.parent / "docs" / "policy.md"

TABLES = {
    "supervisor": (SUPERVISOR_FIELDS, SupervisorConfig),
    "services.NAME": (SERVICE_FIELDS, Service),
    "services.NAME.backoff": (BACKOFF_FIELDS, Backoff),
    "services.NAME.stop": (STOP_FIELDS, Stop),
    "services.NAME.limits": (LIMITS_FIELDS, Limits),
    "services.NAME.ready": (READY_FIELDS, Probe),
    "services.NAME.health": (HEALTH_FIELDS, HealthProbe),
    "services.NAME.stdout": (OUTPUT_FIELDS, OutputFile),
    "services.NAME.mounts[]": (MOUNT_FIELDS, Mount),
    "services.NAME.sockets[]": (SOCKET_FIELDS, Socket),
}
# Model attributes that are not keys: the probe kind is which key was given,
# and the rlimits mapping holds one key per rlimit.
NOT_KEYS = {"kind", "rlimits"}

_HEADING = re.compile(r"^#+ `([^`]+)`\s*$")
_ROW = re.compile(r"^\| `([a-z_]+)` \| (.+?) \| (.+?) \| (.+) \|$")


def parse_doc():
    tables: dict[str, list[tuple[str, str, str, str]]] = {}
    current = None
    for line in DOC.read_text().splitlines():
        if heading := _HEADING.match(line):
            current = tables.setdefault(heading[1], [])
        elif (row := _ROW.match(line)) and current is not None:
            current.append(row.groups())
    return tables


DOC_TABLES = parse_doc()


def toml_value(cell):
    assert cell.startswith("`")
    assert cell.endswith("`")
    return tomllib.loads(f"v = {cell[1:-1]}")["v"]


def model_default(cls, name):
    default = attrs.fields_dict(cls)[name].default
    if isinstance(default, attrs.Factory):
        return default.factory()
    return default


def test_every_table_is_documented():
    assert list(TABLES) == [name for name in DOC_TABLES if name != "defaults"]


@pytest.mark.parametrize("table", TABLES)
def test_keys_match_the_model(table):
    """The doc lists exactly the schema's keys, in order, and the schema matches the model."""
    fields, cls = TABLES[table]
    assert list(fields) == [row[0] for row in DOC_TABLES[table]]
    attributes = set(attrs.fields_dict(cls)) - NOT_KEYS
    keys = set(fields) - set(RLIMITS) if cls is Limits else set(fields)
    assert attributes == keys


@pytest.mark.parametrize(
    ("table", "key", "default", "example"),
    [(table, *row[:3]) for table in TABLES for row in DOC_TABLES[table]],
)
def test_default_and_example(table, key, default, example):
    """The documented default is the model's, and the example is valid."""
    fields, cls = TABLES[table]
    check = fields[key]
    check(key, toml_value(example))
    if cls is Limits and key in RLIMITS:
        assert default == "*unset*"
        return
    expected = model_default(cls, key)
    if default == "*required*":
        assert expected is attrs.NOTHING
    elif default == "*unset*":
        assert expected is None
    else:
        assert check(key, toml_value(default)) == expected
