"""Predict, on this host, what a valid policy will trip on when ``nsup run`` starts it.

:func:`nsup.load_policy` checks a policy as a document: types, ranges and the
rules between keys, the same on every machine.  Some failures depend on the
host instead, and would otherwise show up only as a spawn error or a probe
that times out with no hint.  :func:`preflight` looks for them, as the user
who will run nsup (``nsup check`` runs as that user):

* errors (the service cannot work): a ``command`` (or an ``exec`` probe)
  that is not on the service's ``PATH`` or not executable, a missing ``cwd``, a missing bind
  ``source``, a bind or tmpfs ``target`` that is missing where nsup does not
  create mount points (outside a ``rootfs``), a ``notify`` readiness probe
  whose socket the service cannot see (a ``rootfs``, or a mount over the
  directory nsup puts it in), and new namespaces without a ``user`` one
  when nsup lacks the privilege to make them (clone3 fails with EPERM);
* warnings (it runs, but not as meant): ``pid`` without ``mount``, where the
  service's ``/proc`` still shows the host's processes.

Paths are looked up as the child will see them: inside its ``rootfs``
(following symlinks as if it were ``/``) and through its bind mounts.  A path
under a tmpfs or proc mount is unknown before the child runs, so it is not
checked.  Each finding is a :class:`~nsup._policy.model.PolicyIssue` with the
dotted key and line of the value, read again from the policy file.
"""

from __future__ import annotations

import os
import tomllib
from typing import TYPE_CHECKING, Any

import attrs

from .._rundir import runtime_base
from .lines import key_lines, line_of
from .model import PolicyIssue
from .validate import key_join

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .._mount import Mount
    from . import Policy
    from .model import Service

__all__ = ["Preflight", "preflight"]

_CAP_SYS_ADMIN = 21
_MAX_SYMLINKS = 40  # as the kernel's path walk


@attrs.frozen
class Preflight:
    """What :func:`preflight` found.

    Attributes:
        errors: problems that stop a service from working here.
        warnings: problems it can run with, though not as the policy means.

    """

    errors: tuple[PolicyIssue, ...] = ()
    warnings: tuple[PolicyIssue, ...] = ()


def _can_make_namespaces() -> bool:
    """True when clone3 may create namespaces other than ``user``: root, or CAP_SYS_ADMIN."""
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    except OSError:
        pass
    return False


def _under(path: str, top: str) -> bool:
    return top in {"/", path} or path.startswith(top + "/")


def _in_root(root: str, path: str) -> str:
    """Return where *path* inside *root* is on the host, following symlinks as if *root* were ``/``."""
    todo = [p for p in path.split("/") if p]
    resolved = ""
    hops = 0
    while todo:
        part = todo.pop(0)
        if part == ".":
            continue
        if part == "..":
            resolved = resolved.rpartition("/")[0]
            continue
        full = f"{root}{resolved}/{part}"
        if os.path.islink(full) and hops < _MAX_SYMLINKS:
            hops += 1
            link = os.readlink(full)
            if link.startswith("/"):
                resolved = ""
            todo[:0] = [p for p in link.split("/") if p]
        else:
            resolved = f"{resolved}/{part}"
    return f"{root}{resolved}" if resolved else root


def host_path(service: Service, path: str, mounts: Sequence[Mount] | None = None) -> str | None:
    """Return where the child's *path* is on the host, or ``None`` when it is on a fresh mount.

    Args:
        service: the service (its ``rootfs`` and ``mounts``).
        path: an absolute path as the child sees it.
        mounts: the mounts made so far (default: all of the service's).

    """
    path = os.path.normpath(path)
    for mount in reversed(service.mounts if mounts is None else mounts):
        target = os.path.normpath(mount.target)
        if _under(path, target):
            if mount.type != "bind" or mount.source is None:
                return None
            rest = path[len(target) :].lstrip("/")
            return os.path.join(mount.source, rest) if rest else mount.source
    if service.rootfs:
        return _in_root(os.path.normpath(service.rootfs), path)
    return path


class _Finder:
    """Collects findings for one policy, naming each value's key and line."""

    def __init__(self, source: str | None) -> None:
        self.source = source
        self.document: Mapping[str, Any] = {}
        self.lines: dict[str, int] = {}
        if source is not None:
            try:
                with open(source, encoding="utf-8") as file:
                    text = file.read()
                self.document = tomllib.loads(text)
                self.lines = key_lines(text)
            except (OSError, ValueError):
                pass  # the policy came from a dict, or the file changed since: keys stay right
        self.errors: dict[PolicyIssue, None] = {}
        self.warnings: dict[PolicyIssue, None] = {}

    def key_of(self, name: str, field: str) -> str:
        """Return the dotted key where service *name*'s *field* was written (or would be)."""
        raw = self.document.get("services", {}).get(name)
        defaults = self.document.get("defaults", {})
        if not (isinstance(raw, dict) and field in raw) and field in defaults:
            return key_join("defaults", field)
        return key_join("services", name, field)

    def _issue(self, key: str, message: str) -> PolicyIssue:
        return PolicyIssue(self.source, key, line_of(self.lines, key), message)

    def error(self, key: str, message: str) -> None:
        self.errors[self._issue(key, message)] = None

    def warning(self, key: str, message: str) -> None:
        self.warnings[self._issue(key, message)] = None


def _where(service: Service) -> str:
    return f" inside the rootfs {service.rootfs!r}" if service.rootfs else ""


def _check_namespaces(find: _Finder, name: str, service: Service, *, privileged: bool) -> None:
    key = find.key_of(name, "namespaces")
    spaces = ", ".join(sorted(service.namespaces))
    if service.namespaces - {"user"} and "user" not in service.namespaces and not privileged:
        find.error(
            key,
            f"{key!r} makes new namespaces ({spaces}), which needs root or CAP_SYS_ADMIN, and "
            f"nsup runs as uid {os.geteuid()} here (clone3 would fail with EPERM); "
            "add 'user' to the namespaces, or run nsup as root",
        )
    if "pid" in service.namespaces and "mount" not in service.namespaces:
        find.warning(
            key,
            f"{key!r} has 'pid' without 'mount', so the service's /proc still shows the "
            "host's processes; add 'mount' and nsup mounts a /proc of its own",
        )


def _command_problem(
    service: Service, argv: Sequence[str], env: Mapping[str, str], cwd: str | None
) -> str | None:
    """Return why ``argv[0]`` cannot run in *service*'s view, or ``None`` if it can (or nobody can tell)."""
    name = argv[0]
    if "/" in name:
        base = cwd or ("/" if service.rootfs else os.getcwd())
        candidates = [os.path.join(base, name)]
    else:
        search = env.get("PATH", os.defpath)
        candidates = [os.path.join(d, name) for d in search.split(os.pathsep) if d.startswith("/")]
    denied = unknown = False
    for candidate in candidates:
        host = host_path(service, candidate)
        if host is None:
            unknown = True
        elif os.path.isfile(host):
            if os.access(host, os.X_OK):
                return None
            denied = True
    if unknown:
        return None
    if denied:
        return f"{name!r} is not executable{_where(service)}"
    if "/" in name:
        return f"{name!r} does not exist{_where(service)}"
    return f"{name!r} is not on the PATH ({search}){_where(service)}"


def _check_commands(find: _Finder, name: str, service: Service) -> None:
    env = {**os.environ, **service.env}
    commands: list[tuple[str, Sequence[str], Mapping[str, str], str | None]] = [
        (find.key_of(name, "command"), service.command, env, service.cwd)
    ]
    for field in ("ready", "health"):
        probe = getattr(service, field)
        if probe is not None and probe.exec is not None:
            # An exec probe joins the service's namespaces with nsup's own environment.
            commands.append((f"{find.key_of(name, field)}.exec", probe.exec, os.environ, None))
    for key, argv, environ, cwd in commands:
        problem = _command_problem(service, argv, environ, cwd)
        if problem is not None:
            find.error(key, f"{key!r} cannot run: {problem}")


def _check_paths(find: _Finder, name: str, service: Service) -> None:
    if service.cwd is not None:
        host = host_path(service, service.cwd)
        if host is not None and not os.path.isdir(host):
            key = find.key_of(name, "cwd")
            find.error(
                key, f"{key!r} is {service.cwd!r}, which is not a directory{_where(service)}"
            )
    mounts_key = find.key_of(name, "mounts")
    for index, mount in enumerate(service.mounts):
        key = f"{mounts_key}[{index}]"
        if mount.type == "bind" and mount.source and not os.path.exists(mount.source):
            find.error(f"{key}.source", f"'{key}.source' is {mount.source!r}, which does not exist")
        if service.rootfs:
            continue  # nsup makes missing mount points inside a rootfs
        host = host_path(service, mount.target, service.mounts[:index])
        if host is not None and not os.path.lexists(host):
            find.error(
                f"{key}.target",
                f"'{key}.target' is {mount.target!r}, which does not exist; nsup makes "
                "mount points only inside a 'rootfs' or on a tmpfs mounted earlier in "
                "'mounts': create it first, or use a rootfs",
            )


def _check_notify(find: _Finder, name: str, service: Service) -> None:
    if service.ready is None or service.ready.kind != "notify":
        return
    base = os.path.normpath(runtime_base())
    if host_path(service, base) == base:
        return
    key = f"{find.key_of(name, 'ready')}.notify"
    if service.rootfs:
        why = f"'rootfs' {service.rootfs!r} hides it"
    else:
        target = next(m.target for m in reversed(service.mounts) if _under(base, m.target))
        why = f"the mount on {target!r} hides it"
    find.error(
        key,
        f"{key!r} cannot work: nsup puts the notify socket under {base!r} and {why}; "
        f'bind it in (a mount with type = "bind", source = {base!r} and target = {base!r}) '
        "or use a 'tcp', 'exec' or 'log' probe",
    )


def preflight(policy: Policy) -> Preflight:
    """Check *policy* against this host and this user; see the module docstring.

    Args:
        policy: a valid policy; its ``source`` file, when there is one, is read
            again to name each finding's key and line.

    Returns:
        The errors and warnings found, each service's in the order checked.

    """
    find = _Finder(policy.source)
    privileged = _can_make_namespaces()
    for name, service in policy.services.items():
        _check_namespaces(find, name, service, privileged=privileged)
        _check_commands(find, name, service)
        _check_paths(find, name, service)
        _check_notify(find, name, service)
    return Preflight(tuple(find.errors), tuple(find.warnings))
