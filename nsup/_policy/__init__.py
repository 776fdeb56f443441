"""The declarative policy: :class:`Policy`, :func:`load_policy` and instance expansion.

A policy is read from TOML by :func:`load_policy` or taken from Python data
of the same shape by :meth:`Policy.from_dict`.  Both validate the whole
document and raise one :class:`~nsup.PolicyError` listing every problem,
each a :class:`PolicyIssue` that names the file, the dotted key and (from a
file) the line.  The reference for every key is ``docs/policy.md``.

The model classes are frozen: a policy is a value.  To change one, build a new
one (``attrs.evolve``) or edit the document and load it again.
"""

from __future__ import annotations

import re
import resource
import tomllib
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, final

import attrs

from .._errors import PolicyError
from . import expand
from .bounds import MAX_POLICY_BYTES, check_text_depth
from .build import build, instance_names
from .lines import key_lines
from .model import (
    CONDITIONS,
    Backoff,
    HealthProbe,
    Limits,
    OutputFile,
    PolicyIssue,
    Probe,
    Service,
    Socket,
    Stop,
    SupervisorConfig,
    conditions,
)

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping

    from .model import Condition

__all__ = [
    "CONDITIONS",
    "Backoff",
    "HealthProbe",
    "Limits",
    "OutputFile",
    "Policy",
    "PolicyIssue",
    "Probe",
    "Service",
    "ServiceInstance",
    "Socket",
    "Stop",
    "SupervisorConfig",
    "load_policy",
]


@final
@attrs.frozen
class ServiceInstance:
    """One process the supervisor runs: a service, or one of its instances.

    Attributes:
        name: ``"web"`` for a single instance, else ``"web.0"``, ``"web.1"``, ...
        service: the service's name, ``"web"``.
        index: the instance number, 0 for a single instance.
        spec: the service's settings (shared by its instances).
        depends_on: instance name -> the condition this one waits for
            (``"started"``, ``"ready"``, ``"healthy"`` or ``"completed"``):
            every instance of every service named in ``spec.depends_on``, and
            the owner of its namespaces (``"started"``, unless it is also
            listed in ``depends_on``).

    """

    name: str
    service: str
    index: int
    spec: Service
    depends_on: Mapping[str, Condition] = attrs.field(converter=conditions, hash=False)


def _services_map(value: Mapping[str, Service]) -> Mapping[str, Service]:
    return MappingProxyType(dict(value))


@attrs.frozen
class Policy:
    """A validated policy: supervisor settings and services, in the order written.

    Attributes:
        supervisor: the ``[supervisor]`` table.
        services: service name -> :class:`Service`, with ``[defaults]`` merged in.
        source: the file it came from, ``"<dict>"`` for :meth:`from_dict`.

    """

    supervisor: SupervisorConfig
    services: Mapping[str, Service] = attrs.field(converter=_services_map, hash=False)
    source: str | None = None

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], source: str = "<dict>") -> Policy:
        """Validate *document*, shaped like the TOML file, and return the policy.

        Args:
            document: ``{"supervisor": {...}, "defaults": {...}, "services":
                {"web": {...}}}``: the TOML file's shape, with the same value
                forms (``"5s"`` or ``5`` for a duration, ``"256M"`` for a size).
            source: the name issues give as their source.

        Returns:
            The policy.

        Raises:
            PolicyError: listing every problem found.

        Example:
            >>> Policy.from_dict({"services": {"web": {"command": "sleep 1"}}}).services[
            ...     "web"
            ... ].command
            ('sleep', '1')

        """
        supervisor, services = build(document, source)
        return cls(supervisor, services, source)

    def to_dict(self) -> dict[str, Any]:
        """Return the policy as TOML-shaped data that :meth:`from_dict` accepts.

        Durations come out as float seconds, sizes as int bytes and signals
        by name; every key is written out, and ``[defaults]`` is not used.
        ``Policy.from_dict(p.to_dict(), p.source) == p`` for any policy ``p``.

        Returns:
            A new dict of plain data.

        """
        supervisor = _strip_none(attrs.asdict(self.supervisor))
        if self.supervisor.health is not None:
            supervisor["health"] = _host_port(self.supervisor.health)
        result = {
            "supervisor": supervisor,
            "services": {name: _service_dict(s) for name, s in self.services.items()},
        }
        # Written so that from_dict() expands it back to the same values.
        return expand.escape(result) if self.supervisor.expand_env else result

    def dependency_order(self) -> tuple[str, ...]:
        """Return the service names so that each comes after all it depends on.

        Among services that could go in either order, the one written first
        goes first.  Stop in the reverse of this order.

        Returns:
            Every service name once.

        Raises:
            ValueError: the dependencies have a cycle or name an unknown
                service (only possible for a policy not built by
                :meth:`from_dict` or :func:`load_policy`).

        """
        order: list[str] = []
        placed: set[str] = set()
        pending = list(self.services)
        while pending:
            # from_dict() rejects cycles and unknown names, so only a hand-built
            # Policy can get stuck here.
            name = next((n for n in pending if placed.issuperset(self.services[n].after)), None)
            if name is None:
                stuck = ", ".join(map(repr, pending))
                raise ValueError(f"services {stuck} depend on a cycle or on unknown services")
            order.append(name)
            placed.add(name)
            pending.remove(name)
        return tuple(order)

    def expanded(self) -> tuple[ServiceInstance, ...]:
        """Return every instance to run, in dependency order.

        A service with ``instances = N > 1`` becomes ``NAME.0`` ... ``NAME.N-1``;
        with one instance it keeps its name.  ``depends_on = ["web"]`` means
        "after every instance of web is ready"; ``namespaces_from = "web"``
        adds "after web has started".

        Returns:
            The instances, those of each service together and in index order.

        """
        names = {
            name: tuple(instance_names(name, service.instances))
            for name, service in self.services.items()
        }

        def waits(service: Service) -> dict[str, Condition]:
            wanted = dict(service.depends_on)
            if service.namespaces_from is not None:
                wanted.setdefault(service.namespaces_from, "started")
            return {i: condition for dep, condition in wanted.items() for i in names[dep]}

        return tuple(
            ServiceInstance(
                name=instance,
                service=name,
                index=index,
                spec=self.services[name],
                depends_on=waits(self.services[name]),
            )
            for name in self.dependency_order()
            for index, instance in enumerate(names[name])
        )


def _strip_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _host_port(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _probe_dict(probe: Probe | HealthProbe) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if probe.kind == "notify":
        result["notify"] = True
    elif probe.kind == "tcp" and probe.tcp is not None:
        result["tcp"] = _host_port(probe.tcp)
    elif probe.kind == "exec" and probe.exec is not None:
        result["exec"] = list(probe.exec)
    elif probe.kind == "log" and probe.log is not None:
        result["log"] = probe.log.pattern
    result["timeout"] = probe.timeout
    if isinstance(probe, HealthProbe):
        result.update(interval=probe.interval, retries=probe.retries)
    return result


def _limits_dict(limits: Limits) -> dict[str, Any]:
    result = _strip_none({"memory": limits.memory, "pids": limits.pids, "cpu": limits.cpu})
    for name, value in limits.rlimits.items():
        if value == resource.RLIM_INFINITY:
            result[name] = "unlimited"
        elif name == "rttime":
            result[name] = value / 1e6
        else:
            result[name] = value
    return result


def _output_dict(output: str | OutputFile) -> str | dict[str, Any]:
    if isinstance(output, str):
        return output
    return _strip_none(attrs.asdict(output))


def _service_dict(service: Service) -> dict[str, Any]:
    result = {
        "command": list(service.command),
        "type": service.type,
        "depends_on": dict(service.depends_on),
        "restart": service.restart,
        "success_codes": list(service.success_codes),
        "backoff": attrs.asdict(service.backoff),
        "namespaces": sorted(service.namespaces),
        "namespaces_from": service.namespaces_from,
        "init": service.init,
        "hostname": service.hostname,
        "env": dict(service.env),
        "env_file": list(service.env_file),
        "env_inherit": service.env_inherit,
        "sockets": [_strip_none(attrs.asdict(s)) for s in service.sockets],
        "cwd": service.cwd,
        "stop": {"signal": service.stop.signal.name, "timeout": service.stop.timeout},
        "limits": _limits_dict(service.limits),
        "ready": _probe_dict(service.ready) if service.ready else None,
        "health": _probe_dict(service.health) if service.health else None,
        "instances": service.instances,
        "stdout": _output_dict(service.stdout),
        "stderr": _output_dict(service.stderr),
        "mounts": [
            _strip_none({**attrs.asdict(m), "readonly": m.readonly or None}) for m in service.mounts
        ],
        "uid_map": [list(line) for line in service.uid_map],
        "gid_map": [list(line) for line in service.gid_map],
        "rootfs": service.rootfs,
        "user": service.user,
        "group": service.group,
        "groups": None if service.groups is None else list(service.groups),
        "umask": service.umask,
        "capabilities": None if service.capabilities is None else sorted(service.capabilities),
        "no_new_privs": service.no_new_privs,
    }
    if service.namespaces_from is not None:
        del result["namespaces"]  # it creates none: it enters the owner's
    return _strip_none(result)


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_END = re.compile(r"\s*\(at end of document\)$")


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read the TOML policy at *path*, validate it and return it.

    Args:
        path: the policy file.

    Returns:
        The policy, with ``source`` set to *path* as given.

    Raises:
        PolicyError: the file is not UTF-8 or not TOML, or the policy is
            invalid; every problem is listed, each with its line where found.
        OSError: the file could not be read.

    Example:
        >>> policy = load_policy("examples/web.toml")  # doctest: +SKIP
        >>> [s.name for s in policy.expanded()]  # doctest: +SKIP
        ['db', 'web.0', 'web.1']

    """
    source = str(path)
    with open(path, "rb") as file:
        data = file.read(MAX_POLICY_BYTES + 1)
    if len(data) > MAX_POLICY_BYTES:
        message = f"the policy file is larger than {MAX_POLICY_BYTES // 2**20} MiB"
        raise PolicyError([PolicyIssue(source, "", None, message)])
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        bad_line = data[: exc.start].count(b"\n") + 1
        raise PolicyError(
            [PolicyIssue(source, "", bad_line, f"the policy is not valid UTF-8 text: {exc.reason}")]
        ) from None
    deep = check_text_depth(text)
    if deep is not None:
        deep_line, deep_key, deep_message = deep
        raise PolicyError([PolicyIssue(source, deep_key, deep_line, deep_message)])
    try:
        document = tomllib.loads(text)
    except RecursionError:  # pragma: no cover - check_text_depth refuses it first
        raise PolicyError([PolicyIssue(source, "", None, "the policy nests too deeply")]) from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line: int | None = None
        if match := _TOML_POSITION.search(message):
            line = int(match[1])
            message = f"{message[: match.start()]} (column {match[2]})"
        elif match := _TOML_END.search(message):
            line = text.count("\n") + 1
            message = f"{message[: match.start()]} (at the end of the file)"
        raise PolicyError([PolicyIssue(source, "", line, f"invalid TOML: {message}")]) from None
    supervisor, services = build(document, source, key_lines(text))
    return Policy(supervisor, services, source)
