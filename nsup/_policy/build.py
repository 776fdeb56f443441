"""Turn a parsed policy document into model objects, collecting every problem.

This is the document-level half of validation; the per-key half is the schema
in :mod:`nsup._policy_schema`.  Here live the rules that span tables:

* ``[defaults]`` is merged *under* each service, one key at a time: a service's
  own ``limits`` replaces the default ``limits`` table whole.  A problem in a
  value that came from ``[defaults]`` is reported once, at ``defaults.KEY``.
* ``hostname`` needs the ``uts`` namespace, ``mounts`` the ``mount`` one, and
  ``uid_map``/``gid_map`` the ``user`` one.
* ``depends_on`` must name services that exist and must not form a cycle;
  each cycle is reported once, spelled out (``a -> b -> a``).
* instance names (``web.0``, ``web.1``) must not clash with other services.

Nothing stops at the first problem: every one found becomes a
:class:`~nsup._policy_model.PolicyIssue`, and :func:`build` raises them all in
one :class:`~nsup.PolicyError`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .._clone.namespaces import DEFAULT_NAMESPACES
from .._errors import PolicyError
from . import expand
from .lines import line_of
from .model import PolicyIssue, Service, SupervisorConfig
from .schema import SERVICE_FIELDS, SUPERVISOR_FIELDS, TOP_LEVEL_KEYS
from .validate import Invalid, Problem, check_table, did_you_mean, key_join, show

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["build", "instance_names"]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")
_INDEX = re.compile(r"0|[1-9][0-9]*")
_NEEDS_NAMESPACE = (
    ("hostname", "uts"),
    ("mounts", "mount"),
    ("rootfs", "mount"),
    ("uid_map", "user"),
    ("gid_map", "user"),
)


def instance_names(name: str, instances: int) -> list[str]:
    """Return the names of a service's instances: ``[name]``, or ``name.0`` ... ``name.N-1``."""
    return [name] if instances == 1 else [f"{name}.{i}" for i in range(instances)]


class _Service:
    """What one service's checks learned, even when some of its keys are invalid."""

    def __init__(self, name: str, raw: Mapping[str, Any]) -> None:
        self.name = name
        self.raw = raw
        self.depends_on: tuple[str, ...] = ()
        self.instances = 1
        self.service: Service | None = None

    def key_of(self, field: str) -> str:
        """Return the dotted key where *field*'s value was written."""
        if isinstance(self.raw, dict) and field in self.raw:
            return key_join("services", self.name, field)
        return key_join("defaults", field)


def _check_namespaces_needed(
    service: _Service, merged: Mapping[str, Any], typed: Mapping[str, Any]
) -> list[Problem]:
    if "namespaces" in merged and "namespaces" not in typed:
        return []  # already reported as invalid
    namespaces = typed.get("namespaces", DEFAULT_NAMESPACES)
    where = (
        f"{service.key_of('namespaces')!r}" if "namespaces" in merged else "the default namespaces"
    )
    problems = []
    for field, needed in _NEEDS_NAMESPACE:
        if merged.get(field) and needed not in namespaces:
            key = service.key_of(field)
            problems.append(
                (key, f"{key!r} needs the {needed!r} namespace, which {where} does not include")
            )
    return problems


def _check_service(service: _Service, defaults: Mapping[str, Any]) -> list[Problem]:
    key = key_join("services", service.name)
    if not _NAME.fullmatch(service.name):
        message = (
            f"{key!r} is not a valid service name: use up to 64 letters, digits, '_', '-', "
            f"'.' and '@', starting with a letter, digit or '_' (got {service.name!r})"
        )
        return [(key, message)]
    if not isinstance(service.raw, dict):
        return [(key, f"{key!r} must be a table (got {show(service.raw)})")]
    merged = {**defaults, **service.raw}
    typed, problems = check_table(
        key, merged, SERVICE_FIELDS, required=("command",), key_of=service.key_of
    )
    service.depends_on = typed.get("depends_on", ())
    service.instances = typed.get("instances", 1)
    problems += _check_namespaces_needed(service, merged, typed)
    if not problems:
        service.service = Service(**typed)
    return problems


def _check_dependencies(services: Mapping[str, _Service]) -> list[Problem]:
    problems = []
    names = list(services)
    for service in services.values():
        key = service.key_of("depends_on")
        for name in service.depends_on:
            if name not in services:
                hint = did_you_mean(name, names)
                problems.append((key, f"{key!r} names {name!r}, which is not a service{hint}"))
    # Depth-first search; a dependency still on the path closes a cycle.
    done: set[str] = set()
    for root in names:
        if root in done:
            continue
        path = [root]
        todo = [iter(services[root].depends_on)]
        while todo:
            dep: str | None = next(todo[-1], None)
            if dep is None:
                done.add(path.pop())
                todo.pop()
            elif dep in path:
                cycle = [*path[path.index(dep) :], dep]
                key = services[cycle[0]].key_of("depends_on")
                problems.append((key, f"{key!r} makes a dependency cycle: {' -> '.join(cycle)}"))
            elif dep in services and dep not in done:
                path.append(dep)
                todo.append(iter(services[dep].depends_on))
    return problems


def _check_instance_names(services: Mapping[str, _Service]) -> list[Problem]:
    problems = []
    for name in services:
        base, dot, index = name.rpartition(".")
        owner = services.get(base) if dot else None
        if (
            owner
            and owner.instances > 1
            and _INDEX.fullmatch(index)
            and int(index) < owner.instances
        ):
            key = owner.key_of("instances")
            message = f"{key!r} makes an instance named {name!r}, which clashes with a service"
            problems.append((key, message))
    return problems


def _check_document(
    document: Mapping[str, Any],
) -> tuple[SupervisorConfig | None, dict[str, _Service], list[Problem]]:
    problems: list[Problem] = []
    for name in document:
        if name not in TOP_LEVEL_KEYS:
            hint = (
                did_you_mean(str(name), TOP_LEVEL_KEYS)
                or "; known keys are 'supervisor', 'defaults' and 'services'"
            )
            problems.append((str(name), f"{str(name)!r} is not a known key{hint}"))
    supervisor = None
    try:
        typed, found = check_table("supervisor", document.get("supervisor", {}), SUPERVISOR_FIELDS)
    except Invalid as exc:
        problems += exc.problems
    else:
        problems += found
        supervisor = SupervisorConfig(**typed) if not found else None
    defaults = document.get("defaults", {})
    try:
        problems += check_table("defaults", defaults, SERVICE_FIELDS)[1]
    except Invalid as exc:
        problems += exc.problems
        defaults = {}
    raw_services = document.get("services")
    services: dict[str, _Service] = {}
    if not isinstance(raw_services, dict) or not raw_services:
        got = "none" if raw_services is None else show(raw_services)
        problems.append(
            (
                "services",
                f"'services' must be a table with at least one [services.NAME] table (got {got})",
            )
        )
    else:
        for name, raw in raw_services.items():
            services[str(name)] = service = _Service(str(name), raw)
            problems += _check_service(service, defaults)
        problems += _check_dependencies(services)
        problems += _check_instance_names(services)
    return supervisor, services, problems


def build(
    document: object, source: str, lines: Mapping[str, int] | None = None
) -> tuple[SupervisorConfig, dict[str, Service]]:
    """Check *document* and return the supervisor settings and the services.

    Args:
        document: the policy as TOML-shaped data (what ``tomllib`` returns).
        source: the file name (or ``"<dict>"``) to name in each issue.
        lines: dotted key -> line in *source*, from
            :func:`nsup._policy_lines.key_lines`, when there is a text.

    Returns:
        ``(supervisor, services)``, services in the order they were written.

    Raises:
        PolicyError: with every problem found, in document order.

    """
    if not isinstance(document, dict):
        problems: list[Problem] = [("", f"a policy must be a table (got {show(document)})")]
        supervisor, services = None, dict[str, _Service]()
    else:
        expanded: list[Problem] = []
        if expand.enabled(document):
            document, expanded = expand.expand_document(document)
        supervisor, services, problems = _check_document(document)
        # A value that could not be expanded is reported once, not again by its validator.
        unexpanded = {key for key, _ in expanded}
        problems = expanded + [p for p in problems if p[0] not in unexpanded]
    if problems or supervisor is None:
        found = dict(lines or {})
        issues: dict[PolicyIssue, None] = dict.fromkeys(
            PolicyIssue(source, key, line_of(found, key), message) for key, message in problems
        )
        # Document order: by line where known (a stable sort keeps the rest in check order).
        ordered = sorted(issues, key=lambda issue: issue.line or 0)
        raise PolicyError(ordered)
    return supervisor, {name: s.service for name, s in services.items() if s.service is not None}
