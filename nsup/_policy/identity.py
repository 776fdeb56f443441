"""Who a service runs as: ``user``, ``group`` and ``groups`` names turned into ids.

Names are looked up where the service will run.  Without a ``rootfs`` that is
the host's user database, through the C library (``getpwnam``, so NSS sources
such as LDAP count, as they do for systemd).  With a ``rootfs`` it is that
tree's own ``/etc/passwd`` and ``/etc/group``, which nsup reads itself: the
host's name service knows nothing of the image, and an image's ``www-data``
is often not the host's.

The rules are those of systemd, Docker and supervisord:

* ``user`` alone also sets the group to the user's primary group, and the
  supplementary groups to every group that lists the user as a member, plus
  the primary one (what ``initgroups`` does);
* ``group`` overrides the primary group; ``groups`` replaces the
  supplementary list (``[]`` for none);
* a number is taken as is; a number that the database does not know leaves
  the group unchanged and the supplementary list empty (``docker --user``);
* without ``user``, ``group`` alone makes the supplementary list just that
  group.

The result is plain numbers for :class:`nsup.ProcessSpec`.  A name that is
not found raises :class:`Unresolved`, which names the key.
"""

from __future__ import annotations

import grp
import os
import pwd
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .model import Service

__all__ = ["Identity", "Unresolved", "identity_problems", "needs_lookup", "resolve_identity"]


class Unresolved(Exception):  # noqa: N818 - internal; callers turn it into a PolicyIssue or SpawnError
    """A key of a service could not be resolved on this host; ``key`` and ``message`` say which."""

    def __init__(self, key: str, message: str, errno: int = 2) -> None:
        super().__init__(key, message)
        self.key = key
        self.message = message
        self.errno = errno

    def __str__(self) -> str:
        return self.message


@attrs.frozen
class Identity:
    """The resolved ids, and the passwd entry's name and home for ``USER`` and ``HOME``.

    Attributes:
        uid: the uid, or ``None`` to leave it unchanged.
        gid: the gid, or ``None`` to leave it unchanged.
        groups: the supplementary gids, or ``None`` for the process layer's default.
        name: the user's name, when ``user`` was found in the database.
        home: the user's home directory, likewise.

    """

    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] | None = None
    name: str | None = None
    home: str | None = None


@attrs.frozen
class _User:
    name: str
    uid: int
    gid: int
    home: str


@attrs.frozen
class _Group:
    name: str
    gid: int
    members: tuple[str, ...]


def _fields(path: str, count: int) -> list[list[str]]:
    """Return the colon-separated rows of *path* with at least *count* fields."""
    with open(path, encoding="utf-8", errors="surrogateescape") as file:
        rows = []
        for line in file:
            if not line.strip() or line.startswith(("#", "+", "-")):
                continue  # blanks, comments and NIS compat entries
            fields = line.rstrip("\n").split(":")
            if len(fields) >= count and fields[2].isdigit():
                rows.append(fields)
        return rows


class _FileDatabase:
    """The user database of a root file system, read from its files."""

    def __init__(self, root: str) -> None:
        self.where = root.rstrip("/") + "/etc/passwd"
        self.group_where = root.rstrip("/") + "/etc/group"
        self._users: list[_User] | None = None
        self._groups: list[_Group] | None = None

    def _read(self, which: str) -> list[list[str]]:
        path = self.where if which == "passwd" else self.group_where
        try:
            return _fields(path, 7 if which == "passwd" else 4)
        except FileNotFoundError:
            return []

    def users(self) -> list[_User]:
        if self._users is None:
            self._users = [
                _User(f[0], int(f[2]), int(f[3]) if f[3].isdigit() else -1, f[5])
                for f in self._read("passwd")
            ]
        return self._users

    def groups(self) -> list[_Group]:
        if self._groups is None:
            self._groups = [
                _Group(f[0], int(f[2]), tuple(m for m in f[3].split(",") if m))
                for f in self._read("group")
            ]
        return self._groups

    def user(self, key: int | str) -> _User | None:
        return next((u for u in self.users() if key in (u.name, u.uid)), None)

    def group(self, key: int | str) -> _Group | None:
        return next((g for g in self.groups() if key in (g.name, g.gid)), None)

    def grouplist(self, name: str, gid: int) -> tuple[int, ...]:
        return _unique([gid, *(g.gid for g in self.groups() if name in g.members)])


class _HostDatabase:
    """The host's user database, through the C library's name service."""

    where = "the host's user database"
    group_where = "the host's group database"

    @staticmethod
    def user(key: int | str) -> _User | None:
        try:
            entry = pwd.getpwuid(key) if isinstance(key, int) else pwd.getpwnam(key)
        except KeyError:
            return None
        return _User(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    @staticmethod
    def group(key: int | str) -> _Group | None:
        try:
            entry = grp.getgrgid(key) if isinstance(key, int) else grp.getgrnam(key)
        except KeyError:
            return None
        return _Group(entry.gr_name, entry.gr_gid, tuple(entry.gr_mem))

    @staticmethod
    def grouplist(name: str, gid: int) -> tuple[int, ...]:
        return _unique(os.getgrouplist(name, gid))


def _unique(ids: Iterable[int]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(ids))


def needs_lookup(service: Service) -> bool:
    """Return True when *service* names a user or groups that a database must resolve."""
    return service.user is not None or service.group is not None or service.groups is not None


def resolve_identity(service: Service, key: str) -> Identity:
    """Resolve *service*'s ``user``, ``group`` and ``groups`` where it will run.

    Args:
        service: the service's settings.
        key: the dotted key of the service, ``"services.web"``, for messages.

    Returns:
        The ids to run as (all ``None`` when the service sets none of the keys).

    Raises:
        Unresolved: a name is not in the database; the key and the name are given.

    """
    if not needs_lookup(service):
        return Identity()
    db: _FileDatabase | _HostDatabase = (
        _FileDatabase(service.rootfs) if service.rootfs else _HostDatabase()
    )
    try:
        return _resolve(db, service, key)
    except OSError as exc:
        field = "user" if service.user is not None else "group"
        raise Unresolved(
            f"{key}.{field}",
            f"'{key}.{field}' cannot be resolved: {exc.filename}: {exc.strerror}",
            exc.errno or 5,
        ) from None


def _resolve(db: _FileDatabase | _HostDatabase, service: Service, key: str) -> Identity:
    uid = gid = None
    groups: tuple[int, ...] | None = None
    name = home = None
    if service.user is not None:
        user = db.user(service.user)
        if user is None and isinstance(service.user, str):
            raise Unresolved(
                f"{key}.user",
                f"'{key}.user' names {service.user!r}, which is not a user in {db.where}",
            )
        if user is None:
            uid, groups = int(service.user), ()
        else:
            uid, name, home = user.uid, user.name, user.home
            if user.gid >= 0:
                gid = user.gid
    if service.group is not None:
        gid = _group_id(db, service.group, f"{key}.group")
    if service.groups is not None:
        groups = tuple(
            _group_id(db, item, f"{key}.groups[{i}]") for i, item in enumerate(service.groups)
        )
    elif name is not None and gid is not None:
        groups = db.grouplist(name, gid)
    elif service.user is None and gid is not None:
        groups = (gid,)
    return Identity(uid, gid, groups, name, home)


def _group_id(db: _FileDatabase | _HostDatabase, value: int | str, key: str) -> int:
    if isinstance(value, int):
        return value
    group = db.group(value)
    if group is None:
        raise Unresolved(key, f"{key!r} names {value!r}, which is not a group in {db.group_where}")
    return group.gid


def identity_problems(service: Service, key: str) -> list[Unresolved]:
    """Return every name in *service*'s ``user``, ``group`` and ``groups`` that does not resolve.

    Unlike :func:`resolve_identity`, which stops at the first, this checks
    each key on its own, for ``nsup check``.
    """
    checks: list[Service] = []
    if service.user is not None:
        checks.append(attrs.evolve(service, group=None, groups=None))
    if service.group is not None:
        checks.append(attrs.evolve(service, user=None, groups=None))
    if service.groups is not None:
        checks.append(attrs.evolve(service, user=None, group=None))
    problems = []
    for check in checks:
        try:
            resolve_identity(check, key)
        except Unresolved as exc:
            problems.append(exc)
    return problems
