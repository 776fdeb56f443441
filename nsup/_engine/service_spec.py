"""Turn a policy's service instance into the ``ProcessSpec`` that starts it.

The one place where policy keys meet spawn options.  Output: every target
but ``null`` goes through nsup: each stream that does gets a pipe of its
own, which the runner reads line by line and routes (see ``routes.py``), so
stderr stays apart from stdout end to end and the child needs no access to
a log file; ``null`` is /dev/null.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .._spec import ProcessSpec
from .routes import through_nsup

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._policy import ServiceInstance
    from .._policy.model import OutputFile
    from .._spec import StdioMode
    from .prepare import Prepared

__all__ = ["spec_for"]


def spec_for(
    instance: ServiceInstance,
    notify_path: str | None,
    prepared: Prepared,
    listen_fds: Sequence[tuple[str, int]] = (),
) -> tuple[dict[str, int], ProcessSpec, list[int]]:
    """Build the spec for one start of *instance*, with its *prepared* identity and environment.

    *listen_fds* are the service's bound sockets (socket activation), as
    ``(name, fd)`` pairs; the caller keeps them open.  The process whose
    namespaces a ``namespaces_from`` service enters is passed to the spawn
    call, not kept in the spec.

    Returns:
        ``(read_fds, spec, close_after)``: the read end of the output pipe
        of each stream that goes through nsup (``{"stdout": fd, ...}``), the
        spec, and the descriptors the caller closes once the child has them.
    """
    service = instance.spec
    read_fds: dict[str, int] = {}
    close_after: list[int] = []

    def target(stream: str, mode: str | OutputFile) -> StdioMode:
        if not through_nsup(mode):
            return "null"
        read_fds[stream], pipe_w = os.pipe()
        close_after.append(pipe_w)
        return pipe_w

    env = dict(prepared.env)
    for name in ("LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID"):
        env.pop(name, None)  # nsup's own socket activation, if any, is not the service's
    env["NSUP_SERVICE"] = instance.name
    env["NSUP_INSTANCE"] = str(instance.index)
    if notify_path is not None:
        env["NOTIFY_SOCKET"] = notify_path
    else:
        env.pop("NOTIFY_SOCKET", None)
    try:
        spec = ProcessSpec(
            argv=service.command,
            env=env,
            cwd=service.cwd,
            namespaces=service.namespaces,
            hostname=service.hostname,
            init=service.init,
            uid_map=service.uid_map or None,
            gid_map=service.gid_map or None,
            stdin="null",
            stdout=target("stdout", service.stdout),
            stderr=target("stderr", service.stderr),
            mounts=service.mounts,
            new_session=True,
            stop_signal=service.stop.signal,
            stop_timeout=service.stop.timeout,
            limits=service.limits,
            rootfs=service.rootfs,
            user=prepared.identity.uid,
            group=prepared.identity.gid,
            groups=prepared.identity.groups,
            umask=service.umask,
            capabilities=service.capabilities,
            no_new_privs=service.no_new_privs,
            listen_fds=listen_fds,
        )
    except BaseException:
        for fd in [*read_fds.values(), *close_after]:
            os.close(fd)
        raise
    return read_fds, spec, close_after
