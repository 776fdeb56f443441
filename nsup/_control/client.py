"""The control socket's path rules and a small blocking client for it.

This module is what ``nsup status`` and friends import, so it stays cheap: a
plain :mod:`socket`, no trio, and no policy validation (``--policy FILE`` only
reads ``[supervisor] control`` with :mod:`tomllib`).  ``nsup run`` imports the
same path rules, so both sides agree on the default path.

The protocol itself is described in ``docs/control.md`` and served by
``server.py``: one JSON object per line each way; a request is
``{"v": 1, "cmd": ...}`` and each reply carries ``"ok"``.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from typing import TYPE_CHECKING, Any, Self

from .._errors import NsupError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "PROTOCOL_VERSION",
    "ControlClient",
    "ControlError",
    "ControlUnavailableError",
    "default_control_path",
    "find_control_path",
    "policy_control_path",
]

PROTOCOL_VERSION = 1
MAX_REPLY = 16 * 1024 * 1024  # a status of thousands of services still fits


def default_control_path(policy_file: str) -> str:
    """Return the socket ``nsup run POLICY`` listens on when the policy names none.

    ``$XDG_RUNTIME_DIR/nsup/<stem>.sock`` when that variable is set, else
    ``/run/nsup/<stem>.sock`` for root, else ``/tmp/nsup-<uid>/<stem>.sock``,
    where *stem* is the policy's file name without its suffix.
    """
    stem = os.path.splitext(os.path.basename(policy_file))[0] or "nsup"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "nsup", f"{stem}.sock")
    if os.geteuid() == 0:
        return f"/run/nsup/{stem}.sock"
    return f"/tmp/nsup-{os.geteuid()}/{stem}.sock"  # noqa: S108 - a private 0700 directory, checked before use


def resolve_control_path(control: str | None, policy_file: str) -> str:
    """Return the socket path for a policy whose ``[supervisor] control`` is *control*.

    A relative *control* is taken relative to the policy file's directory, so
    ``nsup run`` and ``nsup status --policy`` agree whatever their working
    directories.
    """
    if control is None:
        return default_control_path(policy_file)
    return os.path.join(os.path.dirname(os.path.abspath(policy_file)), control)


def policy_control_path(policy_file: str) -> str:
    """Return the socket path of the ``nsup run`` for *policy_file* (``--policy FILE``).

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not TOML, or ``[supervisor] control`` is not a string.

    """
    import tomllib  # noqa: PLC0415 - only --policy needs it; `nsup status` stays quick

    with open(policy_file, "rb") as f:
        try:
            document = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{policy_file}: not a valid TOML file: {exc}") from None
    table = document.get("supervisor", {})
    control = table.get("control") if isinstance(table, dict) else None
    if control is not None and not isinstance(control, str):
        raise ValueError(f"{policy_file}: 'supervisor.control' must be a string (got {control!r})")
    return resolve_control_path(control, policy_file)


def find_control_path(control: str | None, policy_file: str | None) -> str:
    """Pick the socket from ``--control``, ``--policy``, ``$NSUP_CONTROL`` or the default directory.

    Without any of the first three, the default directory must hold exactly
    one socket.

    Raises:
        ControlUnavailableError: no socket could be found.
        ValueError: several candidates, or an unreadable ``--policy``.
        OSError: the policy file cannot be read.

    """
    if control:
        return control
    if policy_file:
        return policy_control_path(policy_file)
    if os.environ.get("NSUP_CONTROL"):
        return os.environ["NSUP_CONTROL"]
    directory = os.path.dirname(default_control_path("x"))
    try:
        found = sorted(e.path for e in os.scandir(directory) if e.name.endswith(".sock"))
    except OSError:
        found = []
    if len(found) == 1:
        return found[0]
    if not found:
        raise ControlUnavailableError(directory, "no control socket there")
    raise ValueError(
        f"several supervisors have sockets in {directory} ({', '.join(found)}); "
        "choose one with --control PATH or --policy FILE"
    )


class ControlUnavailableError(NsupError, ConnectionError):
    """Nothing answers on the control socket; ``path`` says which one was tried."""

    def __init__(self, path: str, reason: str) -> None:
        """Say which *path* failed and why."""
        self.path = path
        super().__init__(
            f"cannot reach a supervisor at {path}: {reason}; "
            "is `nsup run` running? point at another socket with --control PATH or --policy FILE"
        )


class ControlError(NsupError, RuntimeError):
    """The supervisor answered with an error: ``code`` and ``reply`` carry the details."""

    def __init__(self, reply: dict[str, Any]) -> None:
        """Keep the error reply."""
        error = reply.get("error") or {}
        self.reply = reply
        self.code = str(error.get("code", "error"))
        super().__init__(str(error.get("message", "the supervisor refused the request")))


def _reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such socket"
    if isinstance(exc, ConnectionRefusedError):
        return "nothing listening (a stale socket left by an nsup that is gone)"
    if isinstance(exc, PermissionError):
        return "permission denied (only the user running nsup and root may use its control socket)"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if exc.errno == errno.ENOTSOCK:
        return "not a socket"
    return exc.strerror or str(exc)


class ControlClient:
    """A blocking connection to one supervisor's control socket.

    Example::

        with ControlClient("/run/nsup/app.sock") as client:
            print(client.request("status")["services"])

    Every method raises :class:`ControlUnavailableError` when the socket
    cannot be reached or goes quiet, and :class:`ControlError` for an error
    reply.
    """

    def __init__(self, path: str, timeout: float | None = 10.0) -> None:
        """Connect to *path*; *timeout* bounds the connect and each reply (None: wait for ever)."""
        self.path = path
        self.timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except OSError as exc:
            self._sock.close()
            raise ControlUnavailableError(path, _reason(exc)) from None
        self._file = self._sock.makefile("rb")

    def __enter__(self) -> Self:
        """Return the client itself."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the connection."""
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._file.close()
        self._sock.close()

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError as exc:
            # A refused peer is told why before the connection closes: show that.
            try:
                refusal = self._receive()
            except ControlUnavailableError:
                refusal = None
            if refusal is not None and refusal.get("ok") is False:
                raise ControlError(refusal) from None
            raise ControlUnavailableError(self.path, _reason(exc)) from None

    def _receive(self) -> dict[str, Any] | None:
        try:
            line = self._file.readline(MAX_REPLY)
        except OSError as exc:
            raise ControlUnavailableError(self.path, _reason(exc)) from None
        if not line:
            return None
        try:
            reply = json.loads(line)
        except ValueError:
            raise ControlUnavailableError(self.path, "the answer was not JSON") from None
        if not isinstance(reply, dict):
            raise ControlUnavailableError(self.path, "the answer was not a JSON object")
        return reply

    def request(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return its reply (``ok`` is true).

        Raises:
            ControlError: the supervisor answered with an error.
            ControlUnavailableError: no answer.

        """
        self._send({"v": PROTOCOL_VERSION, "cmd": cmd, **fields})
        reply = self._receive()
        if reply is None:
            raise ControlUnavailableError(self.path, "the supervisor closed the connection")
        if not reply.get("ok"):
            raise ControlError(reply)
        return reply

    def events(self) -> Iterator[dict[str, Any]]:
        """Subscribe, then yield each event as a dict until the supervisor stops.

        Raises:
            ControlError: the supervisor refused, or dropped a subscriber that fell behind.
            ControlUnavailableError: no answer.

        """
        self.request("events")
        self._sock.settimeout(None)
        while (message := self._receive()) is not None:
            if message.get("ok") is False:
                raise ControlError(message)
            yield message
