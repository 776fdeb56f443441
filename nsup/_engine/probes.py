"""Readiness and health probes: tcp, exec and log (notify lives in ``notify.py``).

``tcp`` connects inside the service's network namespace.  A socket belongs to
the network namespace it was created in, so a short-lived thread enters the
service's namespace (``setns`` on the child's pidfd), creates the socket and
exits; trio then connects it as usual.  The thread is a fresh one, never one
of trio's cached workers, because a rootless supervisor cannot ``setns`` back
into the host's namespace, and a cached thread would stay in the wrong one.

The kernel gives no event for "a port is now listening", so readiness by tcp
retries the connect at a short interval until its timeout; that is the one
place nsup polls, and only while a service is starting.
"""

from __future__ import annotations

import socket
import threading
from typing import TYPE_CHECKING

import trio

from .._clone import syscalls as _sys
from .._clone.namespaces import CLONE_FLAGS

if TYPE_CHECKING:
    from .._process import Process

__all__ = ["exec_probe", "tcp_once", "tcp_until"]

RETRY_INTERVAL = 0.05


def _socket_in_netns(pidfd: int, family: int) -> socket.socket:
    result: list[socket.socket | BaseException] = []

    def enter_and_create() -> None:
        try:
            _sys.setns(pidfd, CLONE_FLAGS["net"])
            result.append(socket.socket(family, socket.SOCK_STREAM))
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
            result.append(exc)

    thread = threading.Thread(target=enter_and_create, name="nsup-netns", daemon=True)
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


async def tcp_once(host: str, port: int, proc: Process | None, limit: float) -> bool:
    """Try one connect to *host*:*port*, in *proc*'s network namespace when it has one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with trio.move_on_after(limit):
        if proc is not None and "net" in proc.spec.namespaces:
            raw = await trio.to_thread.run_sync(_socket_in_netns, proc.pidfd, family)
            sock = trio.socket.from_stdlib_socket(raw)
        else:
            sock = trio.socket.socket(family, socket.SOCK_STREAM)
        with sock:
            try:
                await sock.connect((host, port))
            except OSError:
                return False
            return True
    return False


async def tcp_until(host: str, port: int, proc: Process | None, limit: float) -> bool:
    """Retry :func:`tcp_once` until it succeeds or *limit* passes."""
    with trio.move_on_after(limit):
        while not await tcp_once(host, port, proc, limit):  # noqa: ASYNC110 - no event exists for "port listening"
            await trio.sleep(RETRY_INTERVAL)
        return True
    return False


async def exec_probe(argv: tuple[str, ...], proc: Process, limit: float) -> bool:
    """Run *argv* inside *proc*'s namespaces; True if it exits 0 within *limit*."""
    from .._process import spawn  # noqa: PLC0415 - _process imports nothing of ours back
    from .._spec import ProcessSpec  # noqa: PLC0415

    spec = ProcessSpec(
        argv=argv,
        namespaces=(),
        stdout="null",
        stderr="null",
        stdin="null",
        stop_timeout=1.0,
    )
    with trio.move_on_after(limit):
        async with spawn(spec, join=proc) as probe:
            return (await probe.wait()).success
    return False
