"""The package's layers: the spawn zone loads nothing but the standard library."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import nsup
from nsup import _zygote_client

PACKAGE = Path(nsup.__file__).parent


def test_the_zygote_boots_without_trio_threads_or_attrs():
    """Boot the zygote's imports exactly as nsup does, then list the modules."""
    program = _zygote_client.BOOT_IMPORTS + "print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", program, str(PACKAGE)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert "nsup._clone.zygote" in out
    assert "nsup._clone.child" in out
    loaded = {m for m in out if m.split(".")[0] in {"trio", "threading", "attrs", "attr"}}
    assert set() == loaded
    ours = {m for m in out if m.startswith("nsup.")}
    assert {m for m in ours if not m.startswith("nsup._clone")} == set()


def _nsup_imports(path: Path) -> set[str]:
    """The nsup modules that *path* imports, as dotted names."""
    tree = ast.parse(path.read_text())
    package = ".".join(("nsup", *path.relative_to(PACKAGE).with_suffix("").parts))
    if path.name == "__init__.py":
        package = package.removesuffix(".__init__")
    else:
        package = package.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.startswith("nsup"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("nsup"))
    return found


def test_the_spawn_zone_imports_only_itself():
    """No module in ``_clone/`` imports another part of nsup (the zygote could not load it)."""
    for path in sorted((PACKAGE / "_clone").glob("*.py")):
        outside = {m for m in _nsup_imports(path) if not m.startswith("nsup._clone")}
        assert (path.name, set()) == (path.name, outside)


LAYERS = ["_clone", "_process_layer", "_policy", "_engine", "_control", "_cli"]
PROCESS_LAYER = {"_spec", "_process", "_request", "_zygote_client", "_cgroup", "_spawn_errors"}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "nsup":
        return None
    top = parts[1]
    if top in PROCESS_LAYER:
        return LAYERS.index("_process_layer")
    if top in LAYERS:
        return LAYERS.index(top)
    return None  # shared value types and the public add-ons sit outside the ladder


def test_no_module_imports_a_higher_layer():
    """Arrows point down: the spawn zone < process layer < policy < engine < control < cli."""
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("").parts
        mine = _layer(".".join(("nsup", *rel)))
        if mine is None:
            continue
        for target in _nsup_imports(path):
            theirs = _layer(target)
            if theirs is not None and theirs > mine:
                upward.append(f"{os.sep.join(rel)} -> {target}")
    assert [] == sorted(set(upward))
