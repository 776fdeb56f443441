"""Turn a parsed policy document into model objects, collecting every problem.

This is the document-level half of validation; the per-key half is the schema
in :mod:`nsup._policy_schema`.  Here live the rules that span tables:

* ``[defaults]`` is merged *under* each service, one key at a time: a service's
  own ``limits`` replaces the default ``limits`` table whole.  A problem in a
  value that came from ``[defaults]`` is reported once, at ``defaults.KEY``.
* ``hostname`` needs the ``uts`` namespace, ``mounts`` the ``mount`` one, and
  ``uid_map``/``gid_map`` the ``user`` one.
* ``depends_on`` must name services that exist, with a condition the
  dependency can meet (``completed`` needs a oneshot, ``healthy`` a service
  with a ``health`` probe); ``namespaces_from`` must name a long-running
  service with one instance.  Neither may form a cycle (a service starts after
  the owner of its namespaces); each cycle is reported once, spelled out
  (``a -> b -> a``).
* a oneshot has no ``ready`` or ``health`` probe and never ``restart = "always"``.
* no two sockets listen on the same address.
* a ``log`` probe needs ``stdout`` or ``stderr`` to go through nsup (anything
  but ``null``): nsup sees no other output.
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
from .bounds import MAX_SERVICES, check_data_depth
from .lines import line_of
from .model import PolicyIssue, Service, SupervisorConfig
from .schema import SERVICE_FIELDS, SUPERVISOR_FIELDS, TOP_LEVEL_KEYS
from .validate import Invalid, Problem, check_table, did_you_mean, key_join, parse_listen, show

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
        self.depends_on: dict[str, str] = {}
        self.namespaces_from: str | None = None
        self.instances = 1
        self.type = "service"
        self.has_health = False
        self.listens: list[tuple[str, str]] = []  # (dotted key, listen)
        self.service: Service | None = None

    @property
    def after(self) -> list[str]:
        """The services this one starts after (dependencies, then the namespace owner)."""
        owner = [] if self.namespaces_from in (None, self.name) else [self.namespaces_from]
        return list(dict.fromkeys([*self.depends_on, *owner]))

    def edge_key(self, name: str) -> str:
        """Return the dotted key that makes this service start after *name*."""
        if name in self.depends_on:
            return self.key_of("depends_on")
        return self.key_of("namespaces_from")

    def key_of(self, field: str) -> str:
        """Return the dotted key where *field*'s value was written."""
        if isinstance(self.raw, dict) and field in self.raw:
            return key_join("services", self.name, field)
        return key_join("defaults", field)


def _check_namespaces_needed(
    service: _Service, merged: Mapping[str, Any], typed: Mapping[str, Any]
) -> list[Problem]:
    if "namespaces_from" in typed:
        return _check_joiner(service, typed["namespaces_from"], merged)
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


def _check_joiner(service: _Service, owner: str, merged: Mapping[str, Any]) -> list[Problem]:
    """A service that enters *owner*'s namespaces makes none of its own, nor anything in them."""
    problems = []
    if isinstance(service.raw, dict) and "namespaces" in service.raw:
        key = service.key_of("namespaces")
        message = (
            f"{key!r} cannot be set with 'namespaces_from': the service enters "
            f"every namespace of {owner!r} and creates none"
        )
        problems.append((key, message))
    for field, _needed in _NEEDS_NAMESPACE:
        if merged.get(field):
            key = service.key_of(field)
            message = (
                f"{key!r} cannot be set with 'namespaces_from': the service runs in "
                f"the namespaces of {owner!r}; set it on {owner!r}"
            )
            problems.append((key, message))
    return problems


def _check_oneshot(service: _Service, typed: Mapping[str, Any]) -> list[Problem]:
    if typed.get("type") != "oneshot":
        return []
    problems = []
    if typed.get("restart") == "always":
        key = service.key_of("restart")
        message = (
            f"{key!r} cannot be 'always' for a oneshot, which would run again after "
            "every success; use 'on-failure' (retry until it succeeds) or 'never'"
        )
        problems.append((key, message))
    for field in ("ready", "health"):
        if field in typed:
            key = service.key_of(field)
            message = (
                f"{key!r} is not for a oneshot: a oneshot is ready once it has "
                "completed successfully"
            )
            problems.append((key, message))
    return problems


def _check_log_probes(service: _Service, typed: Mapping[str, Any]) -> list[Problem]:
    """A ``log`` probe reads the lines nsup relays: every target but ``null`` goes through nsup."""
    if (typed.get("stdout", "inherit"), typed.get("stderr", "inherit")) != ("null", "null"):
        return []
    problems = []
    for field in ("ready", "health"):
        probe = typed.get(field)
        if probe is not None and probe.kind == "log":
            key = f"{service.key_of(field)}.log"
            message = (
                f"{key!r} can never match: stdout and stderr both go to 'null', "
                "so nsup never sees the output; send one of them anywhere else "
                "(the terminal, a file, the journal or syslog: nsup reads every line on its "
                "way there), or use a 'tcp' or 'exec' probe"
            )
            problems.append((key, message))
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
    service.depends_on = typed.get("depends_on", {})
    service.namespaces_from = typed.get("namespaces_from")
    service.instances = typed.get("instances", 1)
    service.type = typed.get("type", "service")
    service.has_health = "health" in typed
    service.listens = [
        (f"{service.key_of('sockets')}[{i}].listen", s.listen)
        for i, s in enumerate(typed.get("sockets", ()))
    ]
    problems += _check_namespaces_needed(service, merged, typed)
    problems += _check_oneshot(service, typed)
    if service.namespaces_from is not None:
        typed["namespaces"] = frozenset()  # it enters the owner's namespaces, creating none
    problems += _check_log_probes(service, typed)
    if not problems:
        service.service = Service(**typed)
    return problems


def _dependency_key(service: _Service, name: str) -> str:
    """The dotted key of one entry of *service*'s ``depends_on`` (its table entry, when a table)."""
    key = service.key_of("depends_on")
    raw = service.raw.get("depends_on") if isinstance(service.raw, dict) else None
    return f"{key}.{key_join(name)}" if isinstance(raw, dict) else key


def _check_condition(service: _Service, name: str, dep: _Service) -> Problem | None:
    """Check that *dep* can meet the condition *service* waits for."""
    condition = service.depends_on[name]
    key = _dependency_key(service, name)
    waits = f"{key!r} waits for {name!r} to be {condition!r}, but"
    if condition == "completed" and dep.type != "oneshot":
        fix = f'give {name!r} type = "oneshot", or wait for "ready"'
        return key, f"{waits} only a oneshot completes; {fix}"
    if condition == "healthy" and dep.type == "oneshot":
        return key, f"{waits} {name!r} is a oneshot, which has no health; wait for 'completed'"
    if condition == "healthy" and not dep.has_health:
        return key, f"{waits} {name!r} has no 'health' probe; add one, or wait for 'ready'"
    return None


def _check_owner(service: _Service, services: Mapping[str, _Service]) -> Problem | None:
    """Check the service named by ``namespaces_from``."""
    owner = service.namespaces_from
    if owner is None:
        return None
    key = service.key_of("namespaces_from")
    names = f"{key!r} names {owner!r}"
    if owner not in services:
        return key, f"{names}, which is not a service{did_you_mean(owner, list(services))}"
    if owner == service.name:
        return key, f"{names}, the service itself; name the service whose namespaces to enter"
    if services[owner].type == "oneshot":
        why = "whose namespaces end when it completes; name a long-running service"
        return key, f"{names}, a oneshot, {why}"
    if services[owner].instances > 1:
        count = services[owner].instances
        return key, f"{names}, which has {count} instances; name a service with one instance"
    return None


def _check_dependencies(services: Mapping[str, _Service]) -> list[Problem]:
    problems = []
    for service in services.values():
        for name in service.depends_on:
            if name not in services:
                key = _dependency_key(service, name)
                hint = did_you_mean(name, list(services))
                problems.append((key, f"{key!r} names {name!r}, which is not a service{hint}"))
            elif problem := _check_condition(service, name, services[name]):
                problems.append(problem)
        if problem := _check_owner(service, services):
            problems.append(problem)
    return problems + _check_cycles(services)


def _check_cycles(services: Mapping[str, _Service]) -> list[Problem]:
    """Depth-first search over "starts after"; a service still on the path closes a cycle."""
    problems = []
    done: set[str] = set()
    for root in services:
        if root in done:
            continue
        path = [root]
        todo = [iter(services[root].after)]
        while todo:
            dep: str | None = next(todo[-1], None)
            if dep is None:
                done.add(path.pop())
                todo.pop()
            elif dep in path:
                cycle = [*path[path.index(dep) :], dep]
                key = services[cycle[0]].edge_key(cycle[1])
                problems.append((key, f"{key!r} makes a dependency cycle: {' -> '.join(cycle)}"))
            elif dep in services and dep not in done:
                path.append(dep)
                todo.append(iter(services[dep].after))
    return problems


def _check_sockets(services: Mapping[str, _Service]) -> list[Problem]:
    """No two sockets, in one service or in two, may listen on the same address."""
    problems = []
    first: dict[str, str] = {}
    for service in services.values():
        for key, listen in service.listens:
            seen = first.setdefault(repr(parse_listen(listen)), key)
            if seen != key:
                problems.append((key, f"{key!r} listens on {listen!r}, as {seen!r} already does"))
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


def _check_total(services: Mapping[str, _Service]) -> list[Problem]:
    total = sum(s.instances for s in services.values())
    if total <= MAX_SERVICES:
        return []
    return [
        (
            "services",
            f"'services' makes {total} service instances; at most {MAX_SERVICES} are allowed",
        )
    ]


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
    elif len(raw_services) > MAX_SERVICES:
        message = f"'services' has {len(raw_services)} services; at most {MAX_SERVICES} are allowed"
        problems.append(("services", message))
    else:
        for name, raw in raw_services.items():
            services[str(name)] = service = _Service(str(name), raw)
            problems += _check_service(service, defaults)
        problems += _check_dependencies(services)
        problems += _check_instance_names(services)
        problems += _check_total(services)
        problems += _check_sockets(services)
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
    problems: list[Problem] = check_data_depth(document)
    supervisor, services = None, dict[str, _Service]()
    if problems:
        pass  # checking deeper would recurse through the very nesting refused here
    elif not isinstance(document, dict):
        problems = [("", f"a policy must be a table (got {show(document)})")]
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
