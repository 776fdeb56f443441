"""What a service's start needs from the host: its user's ids, its environment, its log directories.

Looking up a user name may ask a network name service (NSS with LDAP or
sssd), and an env file may sit on a slow file system, so neither is done on
the trio thread: :func:`prepare` runs them in a worker thread with a
deadline, and a lookup that does not answer in time fails that start, as a
spawn failure naming the key, instead of stalling the supervisor.  A service
that names no user, group or env file needs no I/O, and is prepared inline.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

import attrs
import trio

from .._errors import SpawnError
from .._policy.environ import service_environment
from .._policy.hostcheck import log_dir_problems
from .._policy.identity import Identity, Unresolved, needs_lookup, resolve_identity
from .._policy.model import OutputFile
from .._policy.validate import key_join

if TYPE_CHECKING:
    from .._policy import ServiceInstance
    from .._policy.model import Service

__all__ = ["LOOKUP_TIMEOUT", "Prepared", "prepare"]

# Seconds a name service or an env file may take before the start fails.
LOOKUP_TIMEOUT = 5.0


@attrs.frozen
class Prepared:
    """A service's resolved identity and its environment (before nsup's own variables)."""

    identity: Identity
    env: dict[str, str]


def _prepare(instance: ServiceInstance) -> Prepared:
    key = key_join("services", instance.service)
    try:
        if problems := log_dir_problems(instance.spec, key):
            raise problems[0]
        identity = resolve_identity(instance.spec, key)
        env = service_environment(instance.spec, identity, key, os.environ)
    except Unresolved as exc:
        raise SpawnError(exc.errno, exc.message, exc.key.rpartition(".")[2]) from None
    return Prepared(identity, env)


def _has_files(service: Service) -> bool:
    return isinstance(service.stdout, OutputFile) or isinstance(service.stderr, OutputFile)


async def prepare(instance: ServiceInstance) -> Prepared:
    """Resolve *instance*'s user and groups and read its env files, within :data:`LOOKUP_TIMEOUT`.

    Raises:
        nsup.SpawnError: a name is unknown, an env file cannot be read or
            parsed, or the lookup took longer than :data:`LOOKUP_TIMEOUT`; the message
            names the key.

    """
    service = instance.spec
    if not needs_lookup(service) and not service.env_file and not _has_files(service):
        return _prepare(instance)
    with trio.move_on_after(LOOKUP_TIMEOUT):
        return await trio.to_thread.run_sync(_prepare, instance, abandon_on_cancel=True)
    key = key_join("services", instance.service)
    raise SpawnError(
        errno.ETIMEDOUT,
        f"looking up the user, groups and env files of {key!r} took more than {LOOKUP_TIMEOUT:g}s; "
        "is the name service (NSS) or the file system answering?",
        "user",
    )
