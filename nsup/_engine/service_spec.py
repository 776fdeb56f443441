"""Turn a policy's service instance into the ``ProcessSpec`` that starts it.

The one place where policy keys meet spawn options.  Output: ``inherit``
means "through nsup": stdout and stderr share one pipe that the runner reads
and prints as ``NAME | line`` (one pipe, not two, keeps a thousand services
within the descriptor limit); ``null`` is /dev/null; a path is opened for
appending by nsup, so the child needs no access to it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .._spec import ProcessSpec

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._policy import ServiceInstance
    from .._process import Process
    from .._spec import StdioMode

__all__ = ["spec_for"]


def spec_for(
    instance: ServiceInstance,
    notify_path: str | None,
    listen_fds: Sequence[tuple[str, int]] = (),
    *,
    join: Process | None = None,
) -> tuple[int, ProcessSpec, list[int]]:
    """Build the spec for one start of *instance*.

    *listen_fds* are the service's bound sockets (socket activation), as
    ``(name, fd)`` pairs; the caller keeps them open.  *join* is the running
    process whose namespaces it enters (``namespaces_from``).

    Returns:
        ``(read_fd, spec, close_after)``: the read end of the output pipe (or
        -1 when nothing goes through nsup), the spec, and the descriptors the
        caller closes once the child has them.
    """
    service = instance.spec
    read_fd = -1
    close_after: list[int] = []
    pipe_w = -1

    def target(mode: str) -> StdioMode:
        nonlocal read_fd, pipe_w
        if mode == "inherit":
            if pipe_w < 0:
                read_fd, pipe_w = os.pipe()
                close_after.append(pipe_w)
            return pipe_w
        if mode == "null":
            return "null"
        fd = os.open(mode, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        close_after.append(fd)
        return fd

    env = dict(os.environ)
    for name in ("LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID"):
        env.pop(name, None)  # nsup's own socket activation, if any, is not the service's
    env.update(service.env)
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
            stdout=target(service.stdout),
            stderr=target(service.stderr),
            mounts=service.mounts,
            new_session=True,
            stop_signal=service.stop.signal,
            stop_timeout=service.stop.timeout,
            limits=service.limits,
            rootfs=service.rootfs,
            user=service.user,
            group=service.group,
            capabilities=service.capabilities,
            no_new_privs=service.no_new_privs,
            listen_fds=listen_fds,
            join=join,
        )
    except BaseException:
        for fd in [read_fd, *close_after]:
            if fd >= 0:
                os.close(fd)
        raise
    return read_fd, spec, close_after
